#!/usr/bin/env bash
# Set up what zsq-edge needs on a fresh Debian machine: system packages, .venv, the project at the tested versions.
#
#   scripts/setup.sh                  make demo: .venv with the project's host side, pinned by constraints.txt
#   scripts/setup.sh test             make test and CI: also the system packages only the tests use, and the
#                                     emulated arm64 root (x86_64 hosts)
#   scripts/setup.sh --plan [test]    print every command the above would run, run none
#
# Idempotent: a second run only checks. What is already there is found by probes (a file, a command on PATH, a
# Python module); SETUP_PROBE=bare makes every probe answer "missing" and SETUP_PROBE=full "present", so
# `--plan` shows what a bare or a complete machine would get (tests/test_install.py reads it).
# Env: PYTHON (the interpreter for .venv, default python3), TORCH_INDEX_URL (another torch build, docs/install.md).
set -euo pipefail
cd "$(dirname "$0")/.."

plan=0
if [ "${1:-}" = --plan ]; then plan=1; shift; fi
mode=${1:-demo}
case "$mode" in
    demo | test) ;;
    *) echo "usage: scripts/setup.sh [--plan] [test]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
[ "$plan" = 1 ] || SETUP_PROBE=   # simulated probes are for plans only: a real setup reads the machine

# present PROBE: an absolute path that must exist, python:MODULE that $PY must find, or a command on PATH.
present() {
    case "${SETUP_PROBE:-}" in bare) return 1 ;; full) return 0 ;; esac
    case "$1" in
        /*) [ -e "$1" ] ;;
        python:*) "$PY" -c "import ${1#python:}" >/dev/null 2>&1 ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}

# step KIND COMMAND...: print "KIND: COMMAND" (under --plan that is all), else run COMMAND with its stdout hidden
# (the tools run quiet; errors still reach stderr). The plan is therefore the very list of commands setup runs.
step() {
    local kind=$1
    shift
    echo "$kind: $*"
    [ "$plan" = 1 ] || "$@" >/dev/null
}

# System packages, "debian-package probe". The demo (`pipeline run` on the bundled model) needs none but a Python
# that makes virtual environments; everything under TEST_APT is for the tests alone and never comes with make demo.
DEMO_APT=(
    "python3-venv python:ensurepip"   # Debian's python3 makes no venv without it (a Python of one's own has it)
)
TEST_APT=(
    "openssh-server /usr/sbin/sshd"   # tests/test_devices_ssh.py: a real sshd on 127.0.0.1 (brings ssh, ssh-keygen)
    "adb adb"                         # the adb:// target (and its no-phone test)
    "chromium chromium"               # tests/test_report_html.py opens report.html headless
    # tests/test_cpu_kinds.py runs the agent on an emulated AVX2-only x86 (qemu-x86_64-static -cpu Haswell-v4)
    "qemu-user-static qemu-x86_64-static"
    # real Fashion-MNIST images: the tests' real-data checks and benchmarks/ (the demo's run is data-free)
    "dataset-fashion-mnist /usr/share/datasets/fashion-mnist"
)
wanted=("${DEMO_APT[@]}")
if [ "$mode" = test ]; then wanted+=("${TEST_APT[@]}"); fi
need_apt=()
for entry in "${wanted[@]}"; do
    read -r pkg probe <<<"$entry"
    present "$probe" || need_apt+=("$pkg")
done
if [ "$plan" = 1 ]; then
    echo "plan: $mode (probes: ${SETUP_PROBE:-this machine})"
    echo "apt: ${need_apt[*]}"   # the system packages to install, space-separated (none: nothing after the colon)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
    step apt-get "${SUDO[@]}" apt-get update -qq
    step apt-get "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# .venv: the exact tested set. torch goes first and alone, at constraints.txt's pin: pip then takes a local CPU
# wheel where one lies (a range would take PyPI's newest CUDA build, several GB), or the build of TORCH_INDEX_URL.
# The project's install that follows keeps that torch (constraints pin 2.13.0 without a +cpu/+cuXXX label).
torch_pin=$(grep -E '^torch==' constraints.txt) || { echo "setup: constraints.txt has no torch== line" >&2; exit 1; }
stamp=.venv/.zsq-installed
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "${SETUP_PROBE:-}" = bare ] || [ ! -x .venv/bin/python ]; then
    step venv "$PY" -m venv .venv
    fresh=1
else
    fresh=0
fi
if [ "$fresh" = 1 ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step pip .venv/bin/pip install -q --upgrade pip
    step pip .venv/bin/pip install -q "$torch_pin" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    step pip .venv/bin/pip install -q -c constraints.txt -e ".[host,test]"
    [ "$plan" = 1 ] || echo "$want" >"$stamp"
elif [ "$plan" = 1 ]; then
    echo "pip: (.venv up to date with pyproject.toml, constraints.txt and scripts/setup.sh)"
fi
if [ "$plan" = 1 ]; then echo "stamp: $want"; fi   # what $stamp holds once the install above has run

# `scripts/setup.sh test` (make test): the emulated arm64 root of tests/test_arm64.py (about a minute the first
# time, seconds when up to date; x86_64 hosts only, an arm64 host runs the arm64 wheels natively)
if [ "$mode" = test ] && [ "$(uname -m)" = x86_64 ]; then
    if [ "$plan" = 1 ]; then
        echo "arm64: SKIP_SMOKE=1 scripts/arm64_root.sh"
    else
        SKIP_SMOKE=1 scripts/arm64_root.sh | grep -v 'up to date' || { echo "setup: scripts/arm64_root.sh failed" >&2; exit 1; }
    fi
fi
