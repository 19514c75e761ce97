"""Each integer artifact of run folders checked by the bench agent on this CPU, an emulated AVX2-only x86 and emulated arm64.

    python -m benchmarks.cpu_kinds runs/full runs/safe          # run folders made with --target all
    python -m benchmarks.cpu_kinds runs/safe --keep out/        # also keep every agent JSON

For every integer artifact of every run: the agent's output check against the fake-quant
reference that travels with the artifact (``bench/``: the held-out synthetic images), its integer
coverage as the runtime reports it on that CPU, and its flags, on: this machine (native), qemu
``Haswell-v4`` (AVX2, no VNNI) and the arm64 root of ``scripts/arm64_root.sh`` with CPU models
``max`` (dot product, i8mm, SVE) and ``cortex-a72`` (no dot product). Timing is minimal and not
reported: emulated latency is never a device figure. Prints a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARM64_ROOT = Path(os.environ.get("ZSQ_ARM64_ROOT", ROOT / ".arm64-root"))


def cpus() -> dict[str, tuple[list[str], str, list[str]]]:
    """CPU name → (emulator prefix, python, extra PYTHONPATH)."""
    out = {"native": ([], sys.executable, [])}
    qemu = shutil.which("qemu-x86_64-static")
    if qemu:
        out["emulated Haswell (AVX2, no VNNI)"] = ([qemu, "-cpu", "Haswell-v4"], sys.executable, [])
    q = ARM64_ROOT / "usr" / "bin" / "qemu-aarch64"
    if q.exists():
        py, site = str(ARM64_ROOT / "usr" / "bin" / "python3"), [str(ARM64_ROOT / "opt" / "site")]
        out["emulated arm64 max (dotprod, i8mm, SVE)"] = ([str(q), "-cpu", "max", "-L", str(ARM64_ROOT)], py, site)
        out["emulated arm64 cortex-a72 (no dotprod)"] = ([str(q), "-cpu", "cortex-a72", "-L", str(ARM64_ROOT)], py, site)
    return out


def agent(artifact: Path, emulator: list[str], python: str, site: list[str], out: Path) -> dict:
    from devices.agent import CHECK_ONLY_ARGS
    from devices.bundle import job_for

    job = job_for(artifact)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*site, str(ROOT)]), "ZSQ_AGENT_EMULATOR": " ".join(emulator),
           "ORT_DISABLE_TELEMETRY": "1"}
    cmd = [*emulator, python, "-m", "devices.agent", *job.agent_args(), *CHECK_ONLY_ARGS, "--json_stats", str(out), "-q"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise SystemExit(f"agent failed on {artifact.name}: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--keep", type=Path, default=None, help="folder for every agent JSON")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        for run in args.runs:
            index = json.loads((run / "export.json").read_text())
            qat = json.loads((run / "qat" / "qat.json").read_text())
            for a in index["artifacts"]:
                if a["precision"] == "fp32":
                    continue
                path = run / a["path"]
                for cpu, (emu, py, site) in cpus().items():
                    tag = "".join(c if c.isalnum() else "_" for c in f"{run.name}_{path.name}_{cpu}")
                    r = agent(path, emu, py, site, keep / f"{tag}.json")
                    ref, cov = r["reference"] or {}, r.get("integer_coverage") or {}
                    rows.append((qat.get("weight_grid", "?"), path.name, r["artifact"]["runtime"], cpu, ref.get("max_abs_diff_lsb"),
                                 ref.get("top1_agreement"), cov.get("share"), r["environment"]["isa"].get("u8s8_saturates"),
                                 [f for f in r["flags"] if "saturate" in f or "of MACs run in integer" in f]))
                    print(f"{path.name} {cpu}: {rows[-1][4]:.1f} LSB", file=sys.stderr, flush=True)
    print("| weights | artifact | runtime | CPU | max LSB vs fake-quant | top-1 agreement | integer MACs there | agent warns |")
    print("|---|---|---|---|---|---|---|---|")
    for grid, name, rt, cpu, lsb, agree, share, _, flags in rows:
        warn = "saturation" if any("saturate" in f for f in flags) else ("float layers" if flags else "–")
        print(f"| {grid.split(' (')[0]} | {name} | {rt} | {cpu} | {lsb:.0f} | {agree * 100:.1f} % | "
              f"{'-' if share is None else f'{share * 100:.0f} %'} | {warn} |")


if __name__ == "__main__":
    main()
