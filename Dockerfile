# syntax=docker/dockerfile:1
# zsq-edge device image: the bench agent (devices/) and the runtime wrappers (runtimes/) on a slim Python,
# with numpy, onnxruntime, ai-edge-litert and openvino from requirements-device.txt. No torch, no tensorflow.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t zsq-device:latest .    # both architectures
#   docker build -t zsq-device:latest .                                                # this machine's only
#   docker run --rm --network none -v "$PWD/runs/default:/job" zsq-device:latest \
#       --graph model.w8a8.onnx --inputs bench/inputs.npy --expected bench/expected.fake_quant.npy --json_stats result.json
#
# The entrypoint is `python -m devices.agent`; `pipeline bench --device docker:zsq-device:latest` does the above.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/zsq

WORKDIR /opt/zsq
COPY requirements-device.txt .
RUN pip install --no-cache-dir -r requirements-device.txt \
    && python -c "import numpy, onnxruntime, ai_edge_litert" \
    && useradd --create-home --uid 10001 zsq

COPY runtimes/ runtimes/
COPY devices/ devices/

USER 10001
WORKDIR /job
ENTRYPOINT ["python", "-m", "devices.agent"]
CMD ["--help"]
