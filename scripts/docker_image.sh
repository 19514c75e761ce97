#!/usr/bin/env bash
# Build the device image on this machine with no image registry: engine, offline base, image.
#
#   scripts/docker_image.sh                                   # zsq-device:latest, this machine's arch, all runtimes
#   scripts/docker_image.sh arm64                             # zsq-device:latest-arm64 (emulated build, a few minutes)
#   scripts/docker_image.sh amd64 litert zsq-device:litert    # one runtime, for a board that runs only LiteRT
#
# Prints the build time, the image's size and architecture, and what each layer costs.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(dpkg --print-architecture)
arch=${1:-$host}
runtimes=${2:-onnxruntime openvino litert}
tag=${3:-zsq-device:latest$([ "$arch" = "$host" ] || echo "-$arch")}
scripts/docker_engine.sh
scripts/docker_base.sh "$arch"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
t0=$(date +%s)
DOCKER_BUILDKIT=0 docker build -q --network host --platform "linux/$arch" \
    --build-arg BASE_IMAGE="zsq-base:bookworm-$arch" --build-arg RUNTIMES="$runtimes" --build-arg VERSION="$version" \
    -t "$tag" . >/dev/null
echo "docker-image: $tag built in $(( $(date +%s) - t0 )) s: $(docker image inspect --format '{{.Os}}/{{.Architecture}}, {{.Size}} bytes' "$tag")"
echo "docker-image: layers (size, step):"
docker history --format '  {{.Size}}\t{{.CreatedBy}}' "$tag" | grep -v '^ *0B' | cut -c1-110
echo "docker-image: what the venv holds (MB):"
docker run --rm --network none --entrypoint sh "$tag" -c \
    'du -sm /opt/venv/lib/python3*/site-packages/* | sort -rn | head -8' | sed 's/^/  /'

