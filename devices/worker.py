"""One measurement in a fresh process: ``python -m devices.worker '<json spec>'`` prints one JSON line.

The agent starts a worker per cold start and per thread setting, so every cold
start really is cold and peak RSS (``ru_maxrss``) belongs to one artifact and one
setting. Affinity is set before the runtime is imported, so its thread pool inherits it.
Modes: ``cold`` (import, load/compile, first inference), ``steady`` (warm-up and
timed trials via :func:`runtimes.benchmark.benchmark`), ``check`` (outputs on the
reference inputs against the expected outputs), ``ops`` (the runtime's own per-op profile).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _rss_kb() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r // 1024) if sys.platform == "darwin" else int(r)


def _current_rss_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def make_feeds(pred, x: np.ndarray) -> dict[str, np.ndarray]:
    """Batch-1 feeds from NCHW float images: layout and integer edge as the artifact wants (prepared outside any timing)."""
    from runtimes.base import prepare_feeds

    feeds = prepare_feeds(pred, np.ascontiguousarray(x[:1]))
    spec = pred.inputs[0]
    v = feeds[spec.name]
    if spec.scale is None and str(v.dtype) != spec.dtype and spec.dtype in ("float32", "float16"):
        feeds[spec.name] = v.astype(spec.dtype)
    return feeds


def synthetic_input(pred, seed: int = 0) -> np.ndarray:
    """A seeded NCHW input of the artifact's input shape (symbolic dims → 1), for artifacts with no reference inputs."""
    spec = pred.inputs[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
    if spec.layout == "NHWC" and len(shape) == 4:
        shape = [shape[0], shape[3], shape[1], shape[2]]
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _pin(cpus: list[int] | None) -> list[int] | None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None


def cold(spec: dict) -> dict:
    t0 = time.perf_counter_ns()
    import runtimes  # noqa: PLC0415  (timed: importing the runtime is part of a cold start)

    t1 = time.perf_counter_ns()
    pred = runtimes.load(spec["artifact"], threads=spec["threads"], accelerator=spec.get("accelerator"))
    t2 = time.perf_counter_ns()
    rss_init = _rss_kb()
    x = np.load(spec["inputs"]) if spec.get("inputs") else synthetic_input(pred)
    feeds = make_feeds(pred, x)
    t3 = time.perf_counter_ns()
    pred.run(feeds)
    t4 = time.perf_counter_ns()
    return {"import_ms": (t1 - t0) / 1e6, "load_ms": (t2 - t1) / 1e6, "first_ms": (t4 - t3) / 1e6,
            "rss_init_kb": rss_init, "rss_peak_kb": _rss_kb()}


def _cooldown(start_temp: float | None, min_secs: float, max_secs: float) -> float:
    from devices.environment import max_temperature

    t0 = time.monotonic()
    time.sleep(min_secs)
    while start_temp is not None and time.monotonic() - t0 < max_secs:
        now = max_temperature()
        if now is None or now <= start_temp + 2.0:
            break
        time.sleep(1.0)
    return round(time.monotonic() - t0, 2)


def steady(spec: dict) -> dict:
    import runtimes
    from devices.environment import max_temperature
    from runtimes.benchmark import BenchSettings, benchmark

    pred = runtimes.load(spec["artifact"], threads=spec["threads"], accelerator=spec.get("accelerator"))
    rss_init = _rss_kb()
    x = np.load(spec["inputs"]) if spec.get("inputs") else synthetic_input(pred)
    feeds = make_feeds(pred, x)
    settings = BenchSettings(**spec["settings"])
    start_temp = max_temperature()
    trials = []
    for i in range(spec["trials"]):
        before = max_temperature()
        stats = benchmark(pred, feeds, settings)
        d = stats.to_dict(with_samples=True)
        d.update({"trial": i, "temp_before_c": before, "temp_after_c": max_temperature()})
        if i + 1 < spec["trials"]:
            d["cooldown_s"] = _cooldown(start_temp, spec["cooldown_secs"], spec["max_cooldown_secs"])
        trials.append(d)
        print(f"  trial {i + 1}/{spec['trials']}: p50 {stats.p50_ms:.3f} ms over {stats.n} runs", file=sys.stderr, flush=True)
    return {"trials": trials, "rss_init_kb": rss_init, "rss_peak_kb": _rss_kb(), "rss_now_kb": _current_rss_kb(),
            "runtime": pred.runtime, "runtime_version": getattr(pred, "version", None),
            "inputs": [s.to_dict() for s in pred.inputs], "outputs": [s.to_dict() for s in pred.outputs],
            "feed_shape": list(next(iter(feeds.values())).shape)}


def check(spec: dict) -> dict:
    import runtimes
    from devices.reference import Tolerance, compare

    pred = runtimes.load(spec["artifact"], threads=spec["threads"], accelerator=spec.get("accelerator"))
    x, expected = np.load(spec["inputs"]), np.load(spec["expected"])
    out = runtimes.predict_batched(pred, x)
    result = compare(out, expected, Tolerance(**spec["tolerance"]))
    kernels = getattr(pred, "kernels", None)
    if kernels is not None:
        result["kernels"] = kernels()
    # the integer proof as this machine's runtime executes the artifact (a device's kernels may differ from the host's)
    from runtimes.accelerators import coverage

    sample = next(iter(runtimes.prepare_feeds(pred, x[:1]).values()))
    result["integer_coverage"] = coverage(spec["artifact"], sample, spec["threads"], spec.get("accelerator"))  # on the choice asked for
    return result


def ops(spec: dict) -> dict:
    """The runtime's own per-op profile (:func:`runtimes.profiling.op_profile`) on the first reference input."""
    import runtimes
    from runtimes.profiling import op_profile

    pred = runtimes.load(spec["artifact"], threads=spec["threads"], accelerator=spec.get("accelerator"))
    x = np.load(spec["inputs"]) if spec.get("inputs") else synthetic_input(pred)
    return {"op_profile": op_profile(pred, make_feeds(pred, x))}


MODES = {"cold": cold, "steady": steady, "check": check, "ops": ops}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    _ = _pin(spec.get("cpus"))
    try:
        result = MODES[spec["mode"]](spec)
    except Exception as exc:  # noqa: BLE001  (reported to the agent as one line; the agent raises DeviceError)
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}))
        return 2
    result["affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
