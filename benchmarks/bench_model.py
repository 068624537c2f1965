"""``make bench-model``: encoder and decoder latency, int8 vs FP32, and the runtime's factored
decoder vs the plain one; every figure measured side by side in one run, twice: as this CPU
runs the models by default, and as on the organisers' kind of CPU (AVX-512 without VNNI, float
leftovers in f32; see :mod:`benchmarks.cpu`), each in a fresh process.

* encoder: ms per slice, medians of interleaved runs;
* decoder: ms per box for 1, 16, 64 and 241 boxes on one real image, decoded as the runtime does
  (blocks of at most 16; the factored decoder's per-image work included), the runtime's factored
  decoder against the plain decoder as committed before it (int8, ``models/reference/decoder.xml``) and the
  plain float decoder (``models/fp32/reference/decoder.xml``);
* the factored decoder's masks against the plain float decoder's on real slices;
* (default setting) mask agreement int8 vs FP32 end to end on the bundled sample cases, and
  per modality on the held-out public images of ``tools.modalities`` (CT, MR, ultrasound,
  photographs, microscopy), with the int8 models' float leftovers as the CPU runs them and in f32.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.cpu import SETTINGS, describe, run_setting, settings, settings_note
from qmedsam.cases.read import load_case
from qmedsam.segment.plan3d import box_xy
from qmedsam.model.windows import MARGIN, OUTSIDE, plan_windows
from qmedsam.precision.setting import FLOAT_ENCODER, choose_encoder
from benchmarks.setups import Setup
from qmedsam.image.predictor import ImagePredictor
from qmedsam.model.spec import DECODER_PLAIN, REFERENCE_FOLDER
from qmedsam.model.folder import has_graph
from qmedsam.system.memory import MAX_BLOCK
from qmedsam.segment.plan3d import middle_slice
from qmedsam.image.preprocess import Geometry, boxes_to_model, image_to_tensor
from qmedsam_eval.metrics import dice, label_dice

ROOT = Path(__file__).resolve().parents[1]
FLOAT_ROW = "float encoder (f16-stored, beside int8)"
WHOLE_ROW = "factored decoder, whole grid (no windows)"
BOX_COUNTS = (1, 16, 64, 241)


class PlainDecoder:
    """The unfactored decoder graph (embedding, boxes) -> logits, for comparison only."""

    def __init__(self, xml: Path, float_precision: str):
        import openvino as ov
        import openvino.properties.hint as hints

        config = {hints.performance_mode: hints.PerformanceMode.LATENCY}
        if float_precision != "auto":
            config[hints.inference_precision] = float_precision
        self.request = ov.Core().compile_model(str(xml), "CPU", config).create_infer_request()

    def run(self, emb: np.ndarray, boxes: np.ndarray) -> None:
        for s in range(0, len(boxes), MAX_BLOCK):
            self.request.infer(dict(zip(DECODER_PLAIN.inputs, (emb, boxes[s:s + MAX_BLOCK]))))

    def logits(self, emb, boxes):
        self.request.infer(dict(zip(DECODER_PLAIN.inputs, (emb, boxes))))
        return self.request.get_tensor(DECODER_PLAIN.outputs[0]).data.copy()


def _plain_xml(folder: Path) -> Path:
    """The plain decoder's IR in a models folder (its reference subfolder)."""
    return folder / REFERENCE_FOLDER / DECODER_PLAIN.files[0]


def _factored_run(setup: Setup, emb: np.ndarray, boxes: np.ndarray) -> None:
    """The runtime's decoding of ``boxes`` on one image (its predictor's block loop)."""
    ImagePredictor(setup.model, MAX_BLOCK).set_embedding(emb, Geometry(256, 256)).logits(boxes)


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def real_inputs(samples: Path, encoder: Setup):
    """A real embedding and 241 real-sized boxes (the nuclei sample's, repeated with jitter)."""
    case = load_case(samples / "2DBox_Microscope_0003.npz")
    x, geo = image_to_tensor(case.image)
    emb = encoder.encode(x)
    base = boxes_to_model(case.boxes, geo)
    rng = np.random.default_rng(0)
    reps = -(-max(BOX_COUNTS) // len(base))
    boxes = np.concatenate([base + (rng.integers(-3, 4, base.shape) if i else 0) for i in range(reps)])
    return emb, np.clip(boxes, 0, 255).astype(np.float32)[:max(BOX_COUNTS)]


def factored_agreement(samples: Path, encoder: Setup, factored: Setup, plain: PlainDecoder) -> dict:
    """Factored vs plain float decoder on real slices (2D samples, 3D samples' box middle slices)."""
    dices, diffs = [], []
    for path in sorted(samples.glob("*.npz")):
        case = load_case(path)
        slices = [(case.image, case.boxes)] if not case.is_3d else [
            (case.image[middle_slice(b[2], b[5])], box_xy(b[None])) for b in case.boxes]
        for image, boxes in slices:
            x, geo = image_to_tensor(image)
            emb = encoder.encode(x)
            b = boxes_to_model(boxes, Geometry(*image.shape[:2]))
            ours, ref = factored.logits(emb, b), plain.logits(emb, b)
            diffs.append(float(np.abs(ours - ref).max()))
            dices += [dice(o > 0, r > 0) for o, r in zip(ours, ref)]
    return {"masks": len(dices), "dice_mean": float(np.mean(dices)), "dice_min": float(np.min(dices)),
            "logit_max_diff": float(np.max(diffs))}


WINDOW_MARGINS = (4, 8, 16, 24)


def real_slices(samples: Path):
    """(image, boxes in its pixels) of the bundled samples: 2D images, and each 3D box's middle and
    end slices."""
    for path in sorted(samples.glob("*.npz")):
        case = load_case(path)
        if not case.is_3d:
            yield case.image, case.boxes
            continue
        for b in case.boxes:
            for z in sorted({int(b[2]), middle_slice(b[2], b[5]), int(b[5])}):
                yield case.image[z], box_xy(b[None])


def window_agreement(samples: Path, windowed: Setup, whole: Setup) -> dict:
    """Per margin: masks decoded over their windows against the whole grid's, on real slices:
    pooled and lowest Dice, the share of boxes given a window, and the largest logit difference
    inside the windows (0: the same arithmetic).  Each slice is encoded and decoded whole once."""
    acc = {m: {"both": 0, "total": 0, "lowest": 1.0, "inside": 0.0, "small": []} for m in WINDOW_MARGINS}
    for image, boxes in real_slices(samples):
        x, _ = image_to_tensor(image)
        emb = whole.encode(x)
        b = boxes_to_model(boxes, Geometry(*image.shape[:2]))
        states = whole.model.prepare(emb), windowed.model.prepare(emb)
        for s in range(0, len(b), MAX_BLOCK):
            block = b[s:s + MAX_BLOCK]
            ref = whole.model.decode(states[0], block)[0]
            for margin, a in acc.items():
                windowed.model.margin = margin
                ours = windowed.model.decode(states[1], block)[0]
                a["small"] += [size is not None for size, idx, _ in plan_windows(block, margin) for _ in idx]
                kept = ours > OUTSIDE
                a["inside"] = max(a["inside"], float(np.abs(ours[kept] - ref[kept]).max()) if kept.any() else 0.0)
                for o, r in zip(ours > 0, ref > 0):
                    i, n = int(np.logical_and(o, r).sum()), int(o.sum()) + int(r.sum())
                    a["both"], a["total"] = a["both"] + i, a["total"] + n
                    a["lowest"] = min(a["lowest"], 2 * i / n if n else 1.0)
    windowed.model.margin = MARGIN
    return {m: {"dice": 2 * a["both"] / a["total"], "lowest": a["lowest"], "windowed": float(np.mean(a["small"])),
                "inside_max_diff": a["inside"], "masks": len(a["small"])} for m, a in acc.items()}


def measure(setting: str, models: Path, samples: Path, runs: int) -> dict:
    f32 = setting != "default"                       # organiser-like: float leftovers in f32
    runtime = "f32" if f32 else "auto"
    encoders = {"fp32": Setup.open(models / "fp32", "f32"),
                "int8": Setup.open(models, runtime)}
    if not f32:
        encoders["int8 (f32 leftovers)"] = Setup.open(models, "f32")
    if has_graph(models, FLOAT_ENCODER):             # what --precision auto runs where int8 is slow
        encoders[FLOAT_ROW] = Setup.open(models, runtime, FLOAT_ENCODER)
    image = image_to_tensor(load_case(samples / "2DBox_CT_0002.npz").image)[0]
    for e in encoders.values():
        for _ in range(2):
            e.encode(image)
    enc = {k: [] for k in encoders}
    for _ in range(runs):                            # interleaved
        for k, e in encoders.items():
            enc[k].append(1000 * _seconds(lambda: e.encode(image)))

    emb, boxes = real_inputs(samples, encoders["fp32"])
    plain_fp32 = PlainDecoder(_plain_xml(models / "fp32"), "f32")
    decoders = {"committed int8 decoder (plain)": PlainDecoder(_plain_xml(models), runtime),
                "plain fp32 decoder": plain_fp32,
                "factored decoder (runtime)": encoders["int8"],
                WHOLE_ROW: Setup.open(models, runtime, windows=False)}
    if not f32:
        decoders["committed int8 decoder, f32 leftovers"] = PlainDecoder(_plain_xml(models), "f32")
        decoders["factored decoder, f32"] = encoders["int8 (f32 leftovers)"]
        decoders[WHOLE_ROW + ", f32"] = Setup.open(models, "f32", windows=False)
    dec = {k: {} for k in decoders}
    for n in BOX_COUNTS:
        b = boxes[:n]
        times = {k: [] for k in decoders}
        for rep in range(1 + max(2, runs // (3 if n <= 16 else 6))):
            for k, d in decoders.items():
                fn = (lambda: _factored_run(d, emb, b)) if isinstance(d, Setup) else (lambda: d.run(emb, b))
                t = _seconds(fn)
                if rep:                              # the first round warms up this batch size
                    times[k].append(1000 * t / n)
        for k in decoders:
            dec[k][n] = float(np.median(times[k]))
    result = {"encoder_ms": {k: float(np.median(v)) for k, v in enc.items()}, "decoder_ms_per_box": dec,
              "factored_vs_plain_float": factored_agreement(
                  samples, encoders["fp32"],
                  Setup.open(models / "fp32", "f32", windows=False), plain_fp32),
              "windows": window_agreement(samples, encoders["int8"], decoders[WHOLE_ROW])}
    if not f32:
        engines = {"fp32": encoders["fp32"], "int8": encoders["int8"],
                   "int8 (f32 leftovers)": encoders["int8 (f32 leftovers)"]}
        result["end_to_end"] = agreement(samples, engines)
        result["held_out"] = held_out_agreement(engines)
    return result


DITHERED = "fp32, input dithered"


def held_out_agreement(engines: dict) -> dict:
    """Per held-out modality: mean Dice, over every box, of each int8 engine's masks (model
    resolution, the runtime's encoder and decoder) vs the FP32 engine's; and, as the floor any
    quantized model is measured against, the FP32 engine's own masks when its input gets a
    uniform dither of +-half a grey level (below the 8-bit image's own rounding)."""
    from tools.modalities import held_out_sets

    rng = np.random.default_rng(0)
    out = {}
    for modality, pairs in held_out_sets().items():
        scores = {k: [] for k in [*engines, DITHERED] if k != "fp32"}
        for img, boxes in pairs:
            x, geo = image_to_tensor(img)
            b = boxes_to_model(boxes, geo)
            masks = {}
            for k, e in engines.items():
                masks[k] = e.logits(e.encode(x), b)[:, 0] > 0
            dithered = np.clip(x + (rng.random(x.shape, dtype=np.float32) - 0.5) / 255, 0, 1)
            fp32 = engines["fp32"]
            masks[DITHERED] = fp32.logits(fp32.encode(dithered), b)[:, 0] > 0
            for k in scores:
                scores[k] += [dice(m, r) for m, r in zip(masks[k], masks["fp32"])]
        out[modality] = {"images": len(pairs), "boxes": len(next(iter(scores.values()))),
                         **{k: float(np.mean(v)) for k, v in scores.items()}}
    return out


def agreement(samples: Path, engines: dict) -> dict:
    """Per case: mean Dice of int8 label maps vs FP32 over all labels, and over the labels FP32
    segments reliably (Dice >= 0.8 against the ground truth)."""
    gts = samples.parent / "gts"
    out = {}
    for path in sorted(samples.glob("*.npz")):
        case = load_case(path)
        segs = {k: e.segment(case)[0] for k, e in engines.items()}
        labels = range(1, len(case.boxes) + 1)
        gt = np.load(gts / path.name)["gts"] if (gts / path.name).exists() else None
        truth = label_dice(segs["fp32"], gt) if gt is not None else {}
        reliable = [lab for lab in labels if truth.get(lab, 0.0) >= 0.8] if gt is not None else list(labels)
        row = {"boxes": len(case.boxes), "reliable": len(reliable)}
        for k in engines:
            if k == "fp32":
                continue
            per = label_dice(segs[k], segs["fp32"])
            both_empty = [lab for lab in labels if not (segs[k] == lab).any() and not (segs["fp32"] == lab).any()]
            row[k] = {"all": float(np.mean([per.get(lab, 1.0 if lab in both_empty else 0.0) for lab in labels])),
                      "reliable": float(np.mean([per.get(lab, 0.0) for lab in reliable])) if reliable else None}
        out[path.name] = row
    return out


def report(results: dict) -> None:
    names = list(results)
    print("\nencoder, ms per slice (median of interleaved runs):  " + "  ".join(f"{n:>16s}" for n in names))
    for k in results["default"]["encoder_ms"]:
        print(f"  {k:48s}" + "  ".join(f"{results[n]['encoder_ms'].get(k, float('nan')):16.1f}" for n in names))
    print(f"  {'speed-up int8 over fp32':48s}" + "  ".join(
        f"{results[n]['encoder_ms']['fp32'] / results[n]['encoder_ms']['int8']:15.2f}x" for n in names))
    if FLOAT_ROW in results["default"]["encoder_ms"]:
        print(f"  {'speed-up of the float encoder over int8':48s}" + "  ".join(
            f"{results[n]['encoder_ms']['int8'] / results[n]['encoder_ms'][FLOAT_ROW]:15.2f}x" for n in names))
    print(f"  --precision auto on this CPU runs the {choose_encoder('auto')[1]}")
    for n in names:
        r = results[n]["decoder_ms_per_box"]
        print(f"\ndecoder, ms per box [{n}] (one image, blocks of {MAX_BLOCK}, per-image work included):")
        print(f"  {'boxes':46s}" + "".join(f"{c:>9d}" for c in BOX_COUNTS))
        for k, row in r.items():
            print(f"  {k:46s}" + "".join(f"{row[c]:9.2f}" for c in BOX_COUNTS))
        new = r["factored decoder (runtime)"]
        for ref in [k for k in r if k.startswith("committed")] + ["plain fp32 decoder"]:
            print(f"  {'  ' + ref + ' / factored':46s}" + "".join(f"{r[ref][c] / new[c]:8.2f}x" for c in new))
        if "factored decoder, f32" in r:
            f = r["factored decoder, f32"]
            ref = r["committed int8 decoder, f32 leftovers"]
            print(f"  {'  both f32 leftovers: committed / factored':46s}" + "".join(
                f"{ref[c] / f[c]:8.2f}x" for c in f))
        if WHOLE_ROW in r:
            print(f"  {'  whole grid / windows (runtime)':46s}" + "".join(f"{r[WHOLE_ROW][c] / new[c]:8.2f}x" for c in new))
        if WHOLE_ROW + ", f32" in r:
            f, w = r["factored decoder, f32"], r[WHOLE_ROW + ", f32"]
            print(f"  {'  f32: whole grid / windows':46s}" + "".join(f"{w[c] / f[c]:8.2f}x" for c in f))
        for margin, wa in results[n].get("windows", {}).items():
            print(f"  windows, margin {margin:>2} px{' (runtime)' if int(margin) == MARGIN else ''}: masks vs the whole grid's on "
                  f"{wa['masks']} real boxes: Dice {wa['dice']:.5f} (lowest {wa['lowest']:.4f}), "
                  f"{100 * wa['windowed']:.0f} % of boxes windowed, largest logit difference inside "
                  f"{wa['inside_max_diff']:.1e}")
        a = results[n]["factored_vs_plain_float"]
        print(f"  factored vs plain float decoder on {a['masks']} real masks: Dice mean {a['dice_mean']:.5f}, "
              f"min {a['dice_min']:.5f}; largest logit difference {a['logit_max_diff']:.2e}")
    e2e = results["default"].get("end_to_end")
    if e2e:
        print("\nmask agreement with fp32, end to end (mean Dice over labels; 'reliable': labels fp32 "
              "segments with Dice >= 0.8 against the truth):")
        kinds = [k for k in next(iter(e2e.values())) if k not in ("boxes", "reliable")]
        print(f"  {'case':28s} {'boxes':>5s} " + " ".join(f"{k + ' all':>26s} {'reliable':>9s}" for k in kinds))
        for case, row in e2e.items():
            print(f"  {case:28s} {row['boxes']:5d} " + " ".join(
                f"{row[k]['all']:26.4f} {row[k]['reliable'] if row[k]['reliable'] is not None else float('nan'):9.4f}"
                for k in kinds))
    held = results["default"].get("held_out")
    if held:
        kinds = [k for k in next(iter(held.values())) if k not in ("images", "boxes")]
        print("\nheld-out public images, mask agreement with fp32 end to end (mean Dice over every box;\n"
              f"  '{DITHERED}': the float model against itself with +-0.5 grey-level input noise, the floor):")
        print(f"  {'modality':12s} {'images':>6s} {'boxes':>5s} " + " ".join(f"{k:>22s}" for k in kinds))
        for modality, row in held.items():
            print(f"  {modality:12s} {row['images']:6d} {row['boxes']:5d} " + " ".join(f"{row[k]:22.4f}" for k in kinds))
        print(f"  {'lowest':26s}" + " ".join(f"{min(r[k] for r in held.values()):22.4f}" for k in kinds))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--samples", type=Path, default=ROOT / "samples" / "inputs")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--measure", choices=tuple(SETTINGS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.models, args.samples, args.runs)))
        return
    print(f"CPU: {describe()}")
    results = {}
    chosen = settings()
    if settings_note(chosen):
        print(settings_note(chosen))
    for setting in chosen:
        print(f"measuring: {setting} ...", flush=True)
        results[setting] = run_setting("benchmarks.bench_model", setting,
                                       ["--models", str(args.models), "--samples", str(args.samples),
                                        "--runs", str(args.runs)])
    for r in results.values():                       # JSON keys come back as strings
        r["decoder_ms_per_box"] = {k: {int(c): v for c, v in row.items()} for k, row in r["decoder_ms_per_box"].items()}
    report(results)


if __name__ == "__main__":
    main()
