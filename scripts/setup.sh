#!/usr/bin/env bash
# Set up everything zsq-edge needs on a fresh Debian machine: system packages, .venv, the project.
# Idempotent: a second run only checks. Used by `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)   # real data for tests/benchmarks only
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)   # tests/test_devices_ssh.py: a real sshd on 127.0.0.1 (brings ssh, ssh-keygen)
command -v adb >/dev/null 2>&1 || need_apt+=(adb)      # the adb:// target (and its no-phone test)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)   # tests/test_report_html.py opens report.html headless
# tests/test_cpu_kinds.py runs the agent on an emulated AVX2-only x86 (qemu-x86_64-static -cpu Haswell-v4)
command -v qemu-x86_64-static >/dev/null 2>&1 || need_apt+=(qemu-user-static)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "setup: apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "setup: creating .venv"; "$PY" -m venv .venv; }
stamp=.venv/.zsq-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing into .venv (torch first, so pip takes the local CPU wheel where one exists)"
    .venv/bin/pip install -q --upgrade pip
    # TORCH_INDEX_URL picks another torch build (e.g. https://download.pytorch.org/whl/cu126 on a GPU host)
    .venv/bin/pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    .venv/bin/pip install -q -e ".[test]"
    echo "$want" > "$stamp"
fi

# `scripts/setup.sh test` (make test): the emulated arm64 root of tests/test_arm64.py (about a minute the first
# time, seconds when up to date; x86_64 hosts only, an arm64 host runs the arm64 wheels natively)
if [ "${1:-}" = test ] && [ "$(uname -m)" = x86_64 ]; then
    SKIP_SMOKE=1 scripts/arm64_root.sh | grep -v 'up to date' || { echo "setup: scripts/arm64_root.sh failed" >&2; exit 1; }
fi
