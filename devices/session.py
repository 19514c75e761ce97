"""Host side of ``pipeline bench``: each artifact on one device, results kept as JSON (+ every sample as CSV).

Results go to ``<run>/bench/results/<device>/<artifact>.json`` (the run the artifact
belongs to, found through its ``bench/`` bundle), or to ``out_dir`` when given, and
``latency_raw.csv`` beside them holds every timed sample. Every results folder is
checked writable before anything is measured; a result that still cannot be written
is kept in a temporary file and the error names it (:func:`devices.results.save`).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from devices import results
from devices.bundle import BUNDLE_DIR, job_for
from devices.errors import DeviceError, HostFileError
from devices.inventory import DeviceSpec
from devices.targets import target_for
from runtimes.atomic import atomic_path

RESULTS_DIR = "results"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "device"


def results_dir(job, device: DeviceSpec, out_dir: Path | None) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    base = job.run_dir if job.run_dir is not None else job.artifact.parent
    return base / BUNDLE_DIR / RESULTS_DIR / _safe(device.name)


def write_raw_csv(folder: Path) -> Path:
    """``latency_raw.csv``: every timed sample of every valid result in ``folder`` (artifact, threads, trial, run, ms)."""
    path = folder / "latency_raw.csv"
    good, _ = results.load_folder(folder)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["device", "artifact", "runtime", "threads", "trial", "run", "latency_ms"])
            for _, r in good:
                for run in r["runs"]:
                    for trial in run.get("trials", []):
                        for i, v in enumerate(trial.get("samples_ms", [])):
                            w.writerow([r["device"]["name"], r["artifact"]["name"], r["artifact"]["runtime"], run["threads"],
                                        trial.get("trial", 0), i, v])
    return path


def bench_artifacts(artifacts: list[Path], device: DeviceSpec, agent_args: list[str], out_dir: Path | None = None,
                    log=lambda m: None) -> list[tuple[Path, dict]]:
    """Bench each artifact on ``device``; returns (result path, result) pairs."""
    target = target_for(device)
    jobs = [job_for(a) for a in artifacts]  # fail on a missing artifact before anything runs
    for folder in dict.fromkeys(results_dir(job, device, out_dir) for job in jobs):  # ... and on a folder the results cannot go to
        why = results.check_writable(folder)
        if why:
            raise HostFileError(f"cannot write device results into {folder} ({why}); nothing was measured: "
                              "free the folder or give pipeline bench --out a writable one")
    done = []
    for job in jobs:
        log(f"bench {job.artifact.name} on {device.name} ({device.url})"
            + ("" if job.inputs else " — no reference bundle beside it: outputs will not be checked"))
        result = target.bench(job, agent_args, log)
        if job.reference:
            result["reference_kind"] = job.reference
        folder = results_dir(job, device, out_dir)
        path = folder / f"{job.artifact.name}.json"
        errors = results.validate(result)
        if errors:
            kept = results.keep(results.dumps(result), path.name)
            raise DeviceError(f"{device.name}: the result for {job.artifact.name} does not follow {results.SCHEMA} ({errors[0]}); "
                              f"kept at {kept}, not in {folder}")
        results.save(path, result)
        try:
            write_raw_csv(folder)
        except OSError as exc:  # derived from the saved results: rewritten by the next bench
            log(f"latency_raw.csv in {folder} not updated ({exc.strerror or exc}); the result itself is saved at {path}")
        done.append((path, result))
    return done


def table(results: list[dict]) -> str:
    dw = max([len(r.get("device", {}).get("name", "?")) for r in results] + [6]) + 2
    aw = max([len(r["artifact"]["name"]) for r in results] + [8]) + 2
    head = f"{'device':<{dw}}{'artifact':<{aw}}{'runtime':<12}{'thr':>4}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'spread':>8}{'load ms':>9}{'RSS MB':>8}{'agree':>8}  status"
    lines = [head, "-" * len(head)]
    for r in results:
        ref = r.get("reference") or {}
        for run in r["runs"]:
            s = run["steady"]

            def f(v, fmt="{:.3f}"):
                return "-" if v is None else fmt.format(v)

            lines.append(f"{r.get('device', {}).get('name', '?'):<{dw}}{r['artifact']['name']:<{aw}}{str(r['artifact']['runtime']):<12}{run['threads']:>4}"
                         f"{f(s.get('p50_ms')):>10}{f(s.get('p90_ms')):>10}{f(s.get('p99_ms')):>10}{f(s.get('spread'), '{:.1%}'):>8}"
                         f"{f(run['cold_start'].get('load_ms', {}).get('median'), '{:.1f}'):>9}"
                         f"{f((run.get('rss_peak_kb') or 0) / 1024, '{:.1f}'):>8}{f(ref.get('top1_agreement'), '{:.1%}'):>8}  {r['status']}")
    for r in results:
        for flag in r.get("flags", []):
            lines.append(f"  flag [{r['artifact']['name']}]: {flag}")
    return "\n".join(lines)


def check_devices(specs: list[DeviceSpec]) -> list[tuple[DeviceSpec, bool, str]]:
    out = []
    for spec in specs:
        try:
            info = target_for(spec).check()
            out.append((spec, True, info.get("detail", "ok")))
        except DeviceError as exc:
            out.append((spec, False, str(exc)))
    return out
