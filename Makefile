# QMedSAM: every install and build step lives here (CI runs `.ci/run` -> `make test` on a clean clone).
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/src:$(CURDIR)
# Every Python process started here reads and writes UTF-8 whatever the locale (a C/ASCII locale on CI
# would otherwise fail on the progress bars and the typographic characters in the reports).
export PYTHONUTF8 := 1

MODELS ?= models
CKPT ?=
CALIB ?= 48
DISTILL ?= 0
OUT ?= out

.PHONY: setup weights samples demo test test-all export export-decoder export-prompts export-fp32 bench-model bench-encoder-ops clean

# PyTorch training and export on CPU: glibc keeps freed blocks instead of unmapping them and
# faulting fresh zeroed pages back in for the next tensor (quantized encoder forward+backward,
# batch 2, 2 cores: 19.9-20.8 -> 8.4-8.5 s a step).  Set only for the torch targets.
TORCH_MALLOC := MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824

setup: $(STAMP)

$(STAMP): requirements.txt requirements-train.txt requirements-cluster.txt pyproject.toml
	$(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-train.txt \
		-r requirements-cluster.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@! $(PY) -m pip list 2>/dev/null | grep -Ei '^(timm|torchvision) ' || (echo "timm/torchvision must not be installed" && false)
	touch $@

weights: $(STAMP)
	$(PY) -m tools.weights

samples: $(STAMP)
	$(PY) -m tools.make_samples

demo: $(STAMP)
	$(PY) -m qmedsam.predict -i samples/inputs -o $(OUT)/demo --overlay $(OUT)/demo-overlays
	@echo "segmentations in $(OUT)/demo, overlays in $(OUT)/demo-overlays"

# the everyday suite (a test of every behaviour); the slow-marked tests (QAT, distillation, exports)
# and the wide ones (many processes, killed runs, whole folders) run in test-all, which CI runs
test: $(STAMP) weights
	$(PY) -m pytest -q -ra -m "not slow and not wide"

test-all: $(STAMP) weights
	$(PY) -m pytest -q -ra

# the wheel in a fresh venv with the runtime's dependencies only: models' sha256, samples identical
.PHONY: test-wheel
test-wheel: $(STAMP)
	$(PY) -m tools.wheel_check

WEIGHT_BITS ?= 8
CKPT_W7 ?=
export: $(STAMP) weights
	$(TORCH_MALLOC) $(PY) -m training.export --models $(MODELS) --calib $(CALIB) --distill-steps $(DISTILL) --weight-bits $(WEIGHT_BITS) $(if $(CKPT),--ckpt $(CKPT)) $(if $(CKPT_W7),--ckpt-w7 $(CKPT_W7))

# only the runtime's float decoder graphs (decoder_image, decoder_boxes) of the int8 folder, from the
# pretrained weights, as `make export` writes them; the int8 graphs are left as they are
export-decoder: $(STAMP) weights
	$(PY) -m training.export --models $(MODELS) --runtime-decoder

# only the API's prompt decoder (points, box corners, mask input), float, into MODELS
export-prompts: $(STAMP) weights
	$(PY) -m training.export --models $(MODELS) --prompt-decoder

export-fp32: $(STAMP) weights
	$(PY) -m training.export --models $(MODELS) --fp32

$(MODELS)/fp32/decoder_boxes.xml:
	$(MAKE) export-fp32

bench-model: $(STAMP) $(MODELS)/fp32/decoder_boxes.xml
	$(PY) -m benchmarks.bench_model --models $(MODELS)

# where each encoder's time goes: per encoder group, int8 vs float kernels, each CPU setting
bench-encoder-ops: $(STAMP)
	$(PY) -m benchmarks.bench_encoder_ops --models $(MODELS)

# is the mask decoder local? a small box decoded on a window of the embedding grid vs the whole grid
.PHONY: bench-decoder-locality
bench-decoder-locality: $(STAMP) weights
	$(PY) -m benchmarks.bench_decoder_locality

clean:
	rm -rf $(OUT) .pytest_cache

# ---- evaluation: organiser metrics and timing on the bundled samples (or GT=/CASES= of your own)
GT ?= samples/gts
CASES ?= samples/inputs
PRECISION ?= int8
.PHONY: eval time-local bench-metrics
eval: $(STAMP)
	$(PY) -m qmedsam.predict -i $(CASES) -o $(OUT)/eval-$(PRECISION)/pred --precision $(PRECISION)
	$(PY) -m qmedsam_eval metrics --gt $(GT) --pred $(OUT)/eval-$(PRECISION)/pred --out $(OUT)/eval-$(PRECISION)
	$(PY) -m qmedsam_eval overlay --gt $(GT) --images $(CASES) --pred $(OUT)/eval-$(PRECISION)/pred --out $(OUT)/eval-$(PRECISION)/overlays

bench-metrics: $(STAMP)
	$(PY) -m benchmarks.bench_metrics

time-local: $(STAMP)
	$(PY) -m qmedsam_eval time --local --cases $(CASES) --out $(OUT)/time-local

# ---- quantization-aware training (three stages) ----------------------------------------
DATA ?= out/public-tree/train
QAT_OUT ?= $(OUT)/qat
NPROC ?= 1
CONFIGS ?= training/configs
EPOCHS ?=
SAMPLES ?=
TORCHRUN_ARGS ?= --standalone
.PHONY: public-tree train-all train-demo bench-index  # train-stageN is a pattern rule (never .PHONY)
public-tree: $(STAMP)
	$(PY) -m tools.make_public_tree --out out/public-tree

train-stage%: $(STAMP) weights
	$(TORCH_MALLOC) $(VENV)/bin/torchrun $(TORCHRUN_ARGS) --nproc_per_node=$(NPROC) -m training.qat.train --stage $* \
	  --data $(DATA) --out $(QAT_OUT) --config $(CONFIGS)/stage$*.json \
	  $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(SAMPLES),--samples $(SAMPLES))

bench-index: $(STAMP)
	$(PY) -m benchmarks.bench_index --files $(or $(FILES),2000)

train-all: train-stage1 train-stage2 train-stage3
	@echo "QAT checkpoint: $(QAT_OUT)/stage3/best.pt  (make export CKPT=$(QAT_OUT)/stage3/best.pt MODELS=...)"

# label-free quantization-aware distillation of the int8 encoder (hours on 2 cores; resumable:
# rerun to continue); then `make export CKPT=$(DISTILL_OUT)/best.pt`
DISTILL_OUT ?= $(OUT)/qat-distill
DISTILL_ARGS ?=
.PHONY: qat-distill
qat-distill: $(STAMP) weights
	$(TORCH_MALLOC) $(PY) -m training.qat.distill --out $(DISTILL_OUT) $(DISTILL_ARGS)

# the short CPU run of the closing note: public data, all three stages, export, held-out scores
train-demo: public-tree $(MODELS)/fp32/decoder_boxes.xml
	$(MAKE) train-all CONFIGS=training/configs/cpu-demo QAT_OUT=$(OUT)/qat-demo
	$(MAKE) export CKPT=$(OUT)/qat-demo/stage3/best.pt MODELS=$(OUT)/qat-demo/models
	$(PY) -m training.qat.compare --test out/public-tree/test --qat $(OUT)/qat-demo/models --out $(OUT)/qat-demo/compare

# OpenVINO's own quantizer on the same float encoder and calibration slices: the anchor the
# Brevitas models must beat (NNCF_ARGS=--accuracy-control for its layer-by-layer float fallback)
NNCF_OUT ?= $(OUT)/nncf
NNCF_ARGS ?=
.PHONY: nncf-anchor
nncf-anchor: $(STAMP) $(MODELS)/fp32/decoder_boxes.xml
	$(PY) -m training.nncf_anchor --models $(MODELS) --out $(NNCF_OUT) $(NNCF_ARGS)

CANDIDATE ?=
.PHONY: bench-int8 bench-guard bench-mixed
bench-int8: $(STAMP) $(MODELS)/fp32/decoder_boxes.xml
	$(PY) -m benchmarks.bench_int8_accuracy --models $(MODELS) $(if $(CANDIDATE),--candidate $(CANDIDATE)) $(if $(SETTINGS),--settings "$(SETTINGS)")

# the int8 guard's probe statistics against what int8 does to each whole 3D case, each CPU setting
bench-guard: $(STAMP) $(MODELS)/fp32/decoder_boxes.xml
	$(PY) -m benchmarks.bench_guard --models $(MODELS)

# mixed precision by measurement: each encoder group in float, ms vs agreement, the Pareto curve
bench-mixed: $(STAMP) $(MODELS)/fp32/decoder_boxes.xml
	$(PY) -m benchmarks.bench_mixed --models $(MODELS)

ONLY ?=
.PHONY: bench-predict bench-prompting bench-prompts tune-prompts
bench-predict: $(STAMP)
	$(PY) -m benchmarks.bench_predict $(if $(ONLY),--only $(ONLY)) $(if $(BASELINE),--baseline $(BASELINE)) \
	  $(if $(MATCH),--match $(MATCH)) $(if $(RUNS),--runs $(RUNS)) $(if $(VERSIONS),--versions "$(VERSIONS)")

# the successors' prompts organiser-style: the 2024 3D box, the RECIST line and six interactive rounds
# of every labelled public volume, a fresh process per run, in both CPU settings (docs/bench-prompts.*)
bench-prompts: $(STAMP)
	$(PY) -m benchmarks.bench_prompts $(if $(ONLY),--only $(ONLY))

# the measurements the RECIST and click rules' constants were chosen by (one process, float encoder)
tune-prompts: $(STAMP)
	$(PY) -m benchmarks.tune_prompts

bench-prompting: $(STAMP) $(MODELS)/fp32/decoder_boxes.xml
	$(PY) -m benchmarks.bench_prompting $(if $(ONLY),--only $(ONLY))

# the precision settings on a case set shaped like a real one (tools/case_mix.py), organiser-style,
# interleaved case by case, both CPU settings; the policy's per-CPU-class rates table
.PHONY: bench-mix bench-rates
bench-mix: $(STAMP) $(MODELS)/fp32/decoder_boxes.xml
	$(PY) -m benchmarks.bench_mix $(if $(MATCH),--match $(MATCH)) $(if $(SETTINGS),--settings "$(SETTINGS)") \
	  $(if $(VERSIONS),--versions "$(VERSIONS)") $(if $(RUNS),--runs $(RUNS)) $(if $(BASELINE),--baseline $(BASELINE))

# a change to the runtime's shape: this checkout's label maps against BASELINE's, every precision,
# 3D mode and CPU setting, on the samples and the public case mix (no timing)
.PHONY: same-maps trace-depth
same-maps: $(STAMP) $(MODELS)/fp32/decoder_boxes.xml
	$(PY) -m benchmarks.same_maps --baseline $(or $(BASELINE),HEAD) $(if $(SETTINGS),--settings "$(SETTINGS)")

# the runtime's own frames on the stack at each OpenVINO inference call of a short 3D case (at most 9)
trace-depth: $(STAMP)
	$(PY) -m tools.trace_depth

bench-rates: $(STAMP)
	$(PY) -m benchmarks.bench_rates $(if $(WRITE),--write)

# a dataset's cases per minute: the plain run vs --jobs 1..cores vs --ray on a local cluster
.PHONY: bench-throughput
bench-throughput: $(STAMP)
	$(PY) -m benchmarks.bench_throughput $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(RESUME),--resume)

# can the int8 pass alone tell where int8 departs from float? (a guard without a float pass)
.PHONY: bench-int8-signals
bench-int8-signals: $(STAMP)
	$(PY) -m benchmarks.bench_int8_signals --models $(MODELS)

# ---- the submission image -------------------------------------------------------------
IMAGE ?= qmedsam:latest
BASE ?= python:3.11-slim-bookworm
.PHONY: base-image image image-save test-image
base-image:
	docker/base_image.sh qmedsam-base:bookworm

image:
	@if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt build-ca.crt; fi
	docker build --network=host --build-arg BASE=$(BASE) -t $(IMAGE) . ; status=$$?; rm -f build-ca.crt; exit $$status

image-save:
	docker save $(IMAGE) | gzip > $(firstword $(subst :, ,$(IMAGE))).tar.gz

test-image: $(STAMP)
	$(PY) docker/test_image.py --image $(IMAGE)
