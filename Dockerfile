# QMedSAM submission image: int8 LiteMedSAM on OpenVINO (its float encoder beside it, for CPUs where
# int8 is slow), CPU only, no torch.
# BASE may name a locally built Debian bookworm + python3 image (`make base-image`) where
# no registry serves python:3.11-slim-bookworm; the file is the same for both.
ARG BASE=python:3.11-slim-bookworm

# Stage 1: the runtime dependencies in a venv. An optional build-ca.crt in the build context
# (the host's CA bundle, when pip must trust a proxy) is seen by this stage only. The runtime
# reads OpenVINO IR on the CPU device, so the GPU/NPU/AUTO/HETERO/BATCH plugins, the C API and
# the model-format frontends (libraries and Python bindings) go, and so do C/C++ headers, test suites, type stubs,
# f2py/distutils, numpy.random (imported by none of numpy, OpenCV, OpenVINO or the predictor),
# OpenVINO's converter tools and OpenCV's Haar cascades (about 43 MB the predictor never touches).
# Compiled bytecode stays: it halves import time (0.57 -> 0.27 s), paid on every organiser run.
FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt build-ca.cr[t] /tmp/build/
RUN python3 -m venv /opt/venv \
    && if [ -s /tmp/build/build-ca.crt ]; then export PIP_CERT=/tmp/build/build-ca.crt; fi \
    && /opt/venv/bin/pip install -r /tmp/build/requirements.txt \
    && /opt/venv/bin/pip uninstall -y -q pip setuptools \
    && ov=$(echo /opt/venv/lib/python3*/site-packages/openvino/libs) \
    && for f in intel_gpu_plugin intel_npu_plugin auto_plugin auto_batch_plugin hetero_plugin c \
                onnx_frontend tensorflow_frontend tensorflow_lite_frontend paddle_frontend pytorch_frontend \
                jax_frontend gguf_frontend; do \
         rm -f "$ov"/libopenvino_"$f".so*; done \
    && rm -f "$ov"/cache.json \
    && site=$(echo /opt/venv/lib/python3*/site-packages) \
    && rm -rf "$site"/openvino/include "$site"/openvino/tools "$site"/cv2/data \
              "$site"/openvino/frontend/onnx "$site"/openvino/frontend/pytorch "$site"/openvino/frontend/tensorflow \
              "$site"/openvino/frontend/paddle "$site"/openvino/frontend/jax \
              "$site"/numpy/f2py "$site"/numpy/distutils "$site"/numpy/_core/include "$site"/numpy/random \
    && find "$site" -depth -type d -name tests -exec rm -rf {} + \
    && find "$site" -name '*.pyi' -delete

# Stage 2: the image organisers run.
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/workspace/src
COPY --from=deps /opt/venv /opt/venv
RUN useradd --create-home --uid 1000 qmedsam \
    && mkdir -p /workspace/inputs /workspace/outputs \
    && chown 1000:1000 /workspace/outputs
WORKDIR /workspace
COPY predict.sh ./
# Only the runtime package (src/qmedsam: what predict.sh runs); its models are its package data.
COPY src/qmedsam/ ./src/qmedsam/
# The runtime's models folder, copied whole (its reference/ subfolder is not in the build context).
COPY models/ ./src/qmedsam/models/
USER 1000
CMD ["/bin/bash", "-c", "sh predict.sh"]
