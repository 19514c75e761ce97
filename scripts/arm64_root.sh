#!/usr/bin/env bash
# scripts/arm64_root.sh [ROOT]  (default ROOT: .arm64-root beside scripts/)
#
# An emulated arm64 Debian bookworm userland that runs python3.11 with numpy, onnxruntime,
# ai-edge-litert and openvino (their aarch64 wheels; no torch) under qemu user-mode emulation,
# for tests/test_arm64.py and benchmarks that check artifacts on an ARM CPU without one.
# Idempotent: each step is stamped and skipped when up to date (a rerun is seconds).
#
# Why it is built this way (each measured):
# * qemu-aarch64 >= 8.2 is needed: bookworm's 7.2 shows the guest the host's x86 /proc/cpuinfo,
#   and onnxruntime's CPU detection then segfaults; trixie's qemu-user (static binaries) is fetched.
# * no debootstrap second stage: without binfmt_misc qemu cannot run the children it starts; the
#   python3 + libstdc++6 .debs are unpacked on the host instead (seconds, ~100 MB).
# * the wheels are downloaded and installed by the host's pip for the aarch64 platform tags
#   (openvino's wheel is manylinux_2_35_aarch64), and byte-compiled by the host's python3.11.
#
# Run a snippet afterwards (no root, no chroot, no mounts; host paths stay visible):
#   ROOT/python3-arm64 -c 'import platform; print(platform.machine())'
#   QEMU_CPU=cortex-a72 ROOT/python3-arm64 script.py     # the emulated CPU (default: max)
# Emulated latency is the emulator's, never a device figure.
#
# Env knobs: ARM64_CACHE (default ROOT.cache: apt lists, debs, wheels, qemu binary),
#   DEBIAN_MIRROR, HOST_PYTHON (python3.11 used for pip; default .venv/bin/python, else python3),
#   ARM64_PKGS (pip requirement list; default: requirements-device.txt's pins), SKIP_SMOKE=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(realpath -m "${1:-$HERE/.arm64-root}")
CACHE=$(realpath -m "${ARM64_CACHE:-$ROOT.cache}")
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECMIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
if [ -z "${HOST_PYTHON:-}" ]; then [ -x "$HERE/.venv/bin/python" ] && HOST_PYTHON=$HERE/.venv/bin/python || HOST_PYTHON=python3; fi
# the device pins (requirements-device.txt), without environment markers: this root is aarch64
PKGS=${ARM64_PKGS:-$(sed -e 's/#.*//' -e 's/;.*//' "$HERE/requirements-device.txt" | tr -s ' \n' ' ')}
PYVER=3.11   # bookworm's python3
PLATFORMS=(manylinux_2_36_aarch64 manylinux_2_35_aarch64 manylinux_2_34_aarch64 manylinux_2_31_aarch64
           manylinux_2_28_aarch64 manylinux_2_27_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64)
STAMPS=$ROOT/.stamps
mkdir -p "$ROOT" "$CACHE" "$STAMPS"

T0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
is_static() { "$HOST_PYTHON" - "$1" <<'PY'
import struct, sys
b = open(sys.argv[1], 'rb').read(1 << 16)
assert b[:4] == b'\x7fELF' and b[4] == 2
phoff, = struct.unpack_from('<Q', b, 0x20); esz, n = struct.unpack_from('<HH', b, 0x36)
sys.exit(any(struct.unpack_from('<I', b, phoff + i * esz)[0] == 3 for i in range(n)))  # PT_INTERP => dynamic
PY
}
step() {  # step NAME STAMP_CONTENT FUNCTION: run FUNCTION unless stamp NAME holds STAMP_CONTENT
  local name=$1 want=$2 fn=$3 t
  if [ -f "$STAMPS/$name" ] && [ "$(cat "$STAMPS/$name")" = "$want" ]; then
    echo "[arm64-root] $name: up to date"; return 0; fi
  t=$(date +%s.%N); echo "[arm64-root] $name ..."
  "$fn"
  printf '%s' "$want" > "$STAMPS/$name"
  echo "[arm64-root] $name done in $(since "$t")s"
}

# ---- private apt configs (host apt config untouched) -------------------------------------
apt_opts() {  # apt_opts DIR ARCH
  local d=$1 arch=$2
  echo -o Dir::Etc::sourcelist="$d/sources.list" -o Dir::Etc::sourceparts=- \
       -o Dir::Etc::preferencesparts="$d/preferences.d" -o Dir::Etc::parts="$d/apt.conf.d" \
       -o Dir::State::Lists="$d/lists" -o Dir::State::status="$d/status" -o Dir::Cache="$d/cache" \
       -o APT::Architecture="$arch" -o APT::Architectures::="$arch" -o APT::Install-Recommends=false \
       -o APT::Sandbox::User=root -o Debug::NoLocking=1 -o Acquire::Retries=3
}
apt_init() {  # apt_init DIR SOURCES...
  local d=$1; shift
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/preferences.d" "$d/apt.conf.d"
  : > "$d/status"; printf '%s\n' "$@" > "$d/sources.list"
}

# ---- 1. qemu-aarch64 >= 8.2 (bookworm's 7.2 leaks the host's x86 /proc/cpuinfo to the guest,
#         which makes onnxruntime's cpuinfo segfault / spin and breaks OpenVINO) -------------
QEMU=$CACHE/qemu-aarch64
qemu_ok() { local v; v=$("$1" --version 2>/dev/null | sed -n 's/^qemu-aarch64 version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
            [ -n "$v" ] && set -- $v && { [ "$1" -gt 8 ] || { [ "$1" -eq 8 ] && [ "$2" -ge 2 ]; }; }; }
get_qemu() {
  local sys; sys=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
  if [ -n "$sys" ] && is_static "$(readlink -f "$sys")" && qemu_ok "$sys"; then
    cp -f "$sys" "$QEMU"
  else
    local d=$CACHE/apt-qemu
    apt_init "$d" "deb $MIRROR trixie main" "deb $SECMIRROR trixie-security main"
    apt-get $(apt_opts "$d" amd64) -qq update
    ( cd "$d/cache/archives" && rm -f qemu-user_*.deb && apt-get $(apt_opts "$d" amd64) -qq download qemu-user )
    local deb; deb=$(ls "$d"/cache/archives/qemu-user_*.deb)
    dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/bin/qemu-aarch64 > "$QEMU.tmp"
    chmod 755 "$QEMU.tmp"; mv -f "$QEMU.tmp" "$QEMU"; rm -f "$deb"
  fi
  qemu_ok "$QEMU" || { echo "qemu-aarch64 >= 8.2 needed" >&2; exit 1; }
  install -D -m 755 "$QEMU" "$ROOT/usr/bin/qemu-aarch64"
}
step qemu "v1" get_qemu
[ -x "$ROOT/usr/bin/qemu-aarch64" ] || { rm -f "$STAMPS/qemu"; step qemu "v1" get_qemu; }

# ---- 2. arm64 Debian userland: python3 + libstdc++6 closure, extracted without maintainer
#         scripts (no emulated dpkg/debootstrap second stage needed) -------------------------
get_base() {
  local d=$CACHE/apt-arm64
  apt_init "$d" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECMIRROR bookworm-security main"
  apt-get $(apt_opts "$d" arm64) -qq update
  rm -f "$d"/cache/archives/*.deb
  apt-get $(apt_opts "$d" arm64) -qq -y --download-only install python3 libstdc++6 >/dev/null
  mkdir -p "$ROOT/usr/bin" "$ROOT/usr/lib" "$ROOT/usr/sbin"
  for l in bin lib sbin; do [ -e "$ROOT/$l" ] || ln -s "usr/$l" "$ROOT/$l"; done   # merged /usr
  for deb in "$d"/cache/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$ROOT" --keep-directory-symlink
  done
  ls "$d"/cache/archives/*.deb | xargs -n1 basename > "$ROOT/.debs"
  rm -f "$d"/cache/archives/*.deb
  mkdir -p "$ROOT/tmp"; chmod 1777 "$ROOT/tmp"
  test -x "$ROOT/usr/bin/python$PYVER"
}
step base "v1" get_base

# ---- 3. aarch64 wheels, downloaded + installed from the host (no emulation) -------------------
get_wheels() {
  local plat=(); for p in "${PLATFORMS[@]}"; do plat+=(--platform "$p"); done
  local pipargs=(--only-binary=:all: --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" "${plat[@]}")
  mkdir -p "$CACHE/wheels"
  "$HOST_PYTHON" -m pip download -q --disable-pip-version-check -d "$CACHE/wheels" "${pipargs[@]}" $PKGS
  rm -rf "$ROOT/opt/site.new"
  "$HOST_PYTHON" -m pip install -q --disable-pip-version-check --no-index --find-links "$CACHE/wheels" \
      --target "$ROOT/opt/site.new" --no-compile "${pipargs[@]}" $PKGS
  rm -rf "$ROOT/opt/site"; mv "$ROOT/opt/site.new" "$ROOT/opt/site"
  rm -rf "$ROOT/opt/site/bin"   # console scripts with host shebangs: useless here
}
step wheels "$PKGS" get_wheels

# ---- 4. byte-compile (PYTHONDONTWRITEBYTECODE=1 or a read-only root would otherwise make every
#         run re-compile all imported modules under emulation) -------------------------------
compile_pyc() {
  local dirs=("$ROOT/usr/lib/python$PYVER" "$ROOT/opt/site")
  if "$HOST_PYTHON" -c "import sys; sys.exit(sys.version_info[:2] != ($PYVER_T))" 2>/dev/null; then
    # same minor version => same pyc magic; bytecode is architecture independent
    "$HOST_PYTHON" -m compileall -q -j0 -s "$ROOT" -p / "${dirs[@]}" >/dev/null || true
  else
    env -i PATH=/usr/bin:/bin "$ROOT/usr/bin/qemu-aarch64" -L "$ROOT" "$ROOT/usr/bin/python$PYVER" \
        -m compileall -q -j0 -s "$ROOT" -p / "${dirs[@]}" >/dev/null || true
  fi
}
PYVER_T=${PYVER/./, }
step pyc "$PKGS" compile_pyc

# ---- 5. launcher: qemu -L mode (no chroot/root/mounts; host /proc, /sys, /work... visible) ---
cat > "$ROOT/python3-arm64" <<'EOF'
#!/bin/sh
# Run the arm64 python3 of this root under qemu user emulation. QEMU_CPU picks the CPU model
# (max | cortex-a72 | cortex-a76 | neoverse-n1 | neoverse-v1 | neoverse-n2 | a64fx ...).
R=$(dirname "$(readlink -f "$0")")
export PYTHONPATH="$R/opt/site${PYTHONPATH:+:$PYTHONPATH}"
export ORT_DISABLE_TELEMETRY="${ORT_DISABLE_TELEMETRY:-1}"
unset PYTHONHOME
exec "$R/usr/bin/qemu-aarch64" -L "$R" "$R/usr/bin/python3" "$@"
EOF
chmod 755 "$ROOT/python3-arm64"

# ---- 6. smoke test: each runtime imports and reports its version on the emulated CPU -----------
smoke() {
  "$ROOT/python3-arm64" -c "import platform, numpy, onnxruntime, openvino, ai_edge_litert.interpreter
assert platform.machine() == 'aarch64', platform.machine()
print('smoke OK:', platform.machine(), 'numpy', numpy.__version__, 'onnxruntime', onnxruntime.__version__, 'openvino', openvino.__version__.split('-')[0])" \
    2>&1 | grep -v -e 'MIDR_EL1' -e 'Unknown CPU vendor'
  return "${PIPESTATUS[0]}"
}
[ "${SKIP_SMOKE:-0}" = 1 ] || { t=$(date +%s.%N); smoke; echo "[arm64-root] smoke test in $(since "$t")s"; }

echo "[arm64-root] ready: $ROOT ($(du -sh --apparent-size "$ROOT" | cut -f1)), total $(since "$T0")s"
echo "[arm64-root] run:   $ROOT/python3-arm64 -c 'import platform; print(platform.machine())'"
