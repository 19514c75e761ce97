# zsq-edge device image: the bench agent (devices/) and the runtime wrappers (runtimes/) in a venv, with numpy and
# the integer runtimes from requirements-device.txt: the device set, pyproject.toml's base dependencies at the
# versions of constraints.txt (outside Docker: `pip install -c constraints.txt .` in a checkout). No torch, no
# tensorflow.
#
#   docker build -t zsq-device .                                                  # public base, this machine's arch
#   scripts/docker_image.sh [amd64|arm64] [RUNTIMES]                               # offline base from Debian packages
#   docker build --build-arg RUNTIMES=litert -t zsq-device:litert .                # only LiteRT (smaller, for a board)
#   docker run --rm --init --network none --user "$(id -u):$(id -g)" -v "$PWD/runs/default:/job" zsq-device \
#       --graph model.w8a8.onnx --inputs bench/inputs.npy --expected bench/expected.fake_quant.npy --json_stats result.json
#
# The entrypoint is `python -m devices.agent`; `pipeline bench --device docker:zsq-device` does the above.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Which runtimes to install: any of onnxruntime, openvino, litert (numpy always).
ARG RUNTIMES="onnxruntime openvino litert"
ARG VERSION=0.1.0
ARG SOURCE=""
LABEL org.opencontainers.image.title="zsq-device" \
      org.opencontainers.image.description="zsq-edge bench agent with integer runtimes (no torch)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      io.zsq.runtimes="${RUNTIMES}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/zsq \
    PATH=/opt/venv/bin:$PATH

WORKDIR /opt/zsq
COPY requirements-device.txt .
# A venv: Debian's python3 is marked EXTERNALLY-MANAGED. The check reads the installed packages' metadata and
# locates their modules without importing them: importing onnxruntime under qemu (an arm64 build on an x86 host)
# crashes on the host's /proc/cpuinfo, so an import here would fail every emulated build.
SHELL ["/bin/sh", "-eu", "-c"]
RUN python3 -m venv /opt/venv; \
    : > /tmp/req.txt; \
    for r in numpy ${RUNTIMES}; do \
        case "$r" in litert) pkg=ai-edge-litert ;; *) pkg="$r" ;; esac; \
        grep -E "^${pkg}==" requirements-device.txt >> /tmp/req.txt || { echo "unknown runtime: $r" >&2; exit 1; }; \
    done; \
    pip install --no-cache-dir -r /tmp/req.txt; \
    rm -f /tmp/req.txt; \
    pip check; \
    python -c "import importlib.util as u, sys; m = {'numpy': 'numpy', 'onnxruntime': 'onnxruntime', 'openvino': 'openvino', 'litert': 'ai_edge_litert'}; missing = [x for x in ['numpy', *sys.argv[1:]] if u.find_spec(m[x]) is None]; sys.exit(f'missing: {missing}' if missing else 0)" ${RUNTIMES}; \
    find /opt/venv -name __pycache__ -prune -exec rm -rf {} +; \
    useradd --create-home --uid 10001 zsq

COPY runtimes/ runtimes/
COPY devices/ devices/

# Not root. A mounted host folder must be writable by the container's user: run with --user "$(id -u):$(id -g)"
# (pipeline bench does); the agent says so before measuring when its result folder is not writable.
USER 10001
WORKDIR /job
ENTRYPOINT ["python", "-m", "devices.agent"]
CMD ["--help"]
