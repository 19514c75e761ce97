#!/usr/bin/env bash
# Make the device image's base offline, from Debian's own packages: zsq-base:bookworm-<arch>.
#
#   scripts/docker_base.sh [amd64|arm64]       # default: this machine's architecture
#   docker build --build-arg BASE_IMAGE=zsq-base:bookworm-amd64 -t zsq-device .
#
# The same content as python:3.11-slim-bookworm where it matters (Debian bookworm, Python 3.11 with venv,
# CA certificates), for machines that reach Debian's mirror and PyPI but no image registry. The rootfs is made
# by debootstrap (minbase) and labelled with its architecture by a FROM-scratch build (`docker import
# --platform` is ignored by Debian's docker). This host's CA bundle replaces the image's, so pip inside the build
# trusts what this host's pip trusts. arm64 on an x86 host runs under qemu-user >= 8.2 via binfmt_misc (set up here).
# Needs root (debootstrap) and a running engine (scripts/docker_engine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-$(dpkg --print-architecture)}
tag=zsq-base:bookworm-$arch
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "docker-base: $tag is up to date"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
command -v debootstrap >/dev/null 2>&1 || $SUDO apt-get install -y -qq debootstrap >/dev/null
if [ "$arch" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
    # arm64 containers run under qemu-user through binfmt_misc. It must be qemu >= 8.2: bookworm's 7.2 shows the
    # guest the host's x86 /proc/cpuinfo (onnxruntime then dies in its CPU detection) and computed LiteRT's int8
    # kernels wrong here (9 % agreement; 100 % under qemu 10). scripts/arm64_root.sh fetches trixie's static qemu;
    # it is registered with the F flag (opened now, so it works inside containers), replacing an older one.
    SKIP_SMOKE=1 scripts/arm64_root.sh >/dev/null
    qemu=$(readlink -f "${ARM64_CACHE:-.arm64-root.cache}/qemu-aarch64")
    [ -e /proc/sys/fs/binfmt_misc/status ] || $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    reg=/proc/sys/fs/binfmt_misc/qemu-aarch64
    if [ "$(sed -n 's/^interpreter //p' "$reg" 2>/dev/null)" != "$qemu" ]; then
        [ ! -e "$reg" ] || echo -1 | $SUDO tee "$reg" >/dev/null
        magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
        mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
        echo ":qemu-aarch64:M::$magic:$mask:$qemu:FP" | $SUDO tee /proc/sys/fs/binfmt_misc/register >/dev/null
        echo "docker-base: binfmt_misc runs arm64 binaries with $($qemu --version | head -1)"
    fi
elif [ "$arch" != "$(dpkg --print-architecture)" ]; then
    echo "docker-base: building $arch images on $(dpkg --print-architecture) is not supported here (amd64 and arm64)" >&2
    exit 2
fi
work=.docker-base/$arch
$SUDO rm -rf "$work"
mkdir -p "$work"
t0=$(date +%s)
echo "docker-base: debootstrap --variant=minbase --arch $arch bookworm (a few minutes)"
$SUDO debootstrap --variant=minbase --arch "$arch" --include=python3,python3-venv,ca-certificates \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { echo "docker-base: debootstrap failed; see $work/debootstrap.log" >&2; tail -3 "$work/debootstrap.log" >&2; exit 1; }
$SUDO cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
$SUDO rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin "$work"/rootfs/usr/share/doc/* \
    "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/locale/*
$SUDO tar -C "$work/rootfs" -c . > "$work/rootfs.tar"
$SUDO rm -rf "$work/rootfs"
printf 'FROM scratch\nADD rootfs.tar /\nENV LANG=C.UTF-8\nCMD ["python3"]\n' > "$work/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q --platform "linux/$arch" --network host -t "$tag" "$work" >/dev/null
rm -f "$work/rootfs.tar"
echo "docker-base: $tag built in $(( $(date +%s) - t0 )) s: $(docker image inspect --format '{{.Os}}/{{.Architecture}}, {{.Size}} bytes' "$tag")"
