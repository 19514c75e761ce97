"""Latency measurement in the style of TFLite's benchmark_model: warm-up, then timed runs, percentiles.

Only ``run`` is timed (monotonic ns clock); inputs are prepared outside the
timed region. Warm-up lasts at least ``warmup_runs`` runs and ``warmup_min_secs``;
timing continues until at least ``num_runs`` runs and ``min_secs`` seconds, capped
by ``max_secs``. Every sample is kept.

The defaults are the protocol of docs/latency-protocol.md §5-§7 (warm-up
≥ 10 runs and 1 s, then ≥ 200 runs and 10 s); :data:`FULL` is the MLPerf-sized
variant (≥ 1024 runs and 60 s). :func:`summarize_trials` turns repeated
measurements into one figure and the spread between them, flagged above 5 %
(MLPerf's replicability bar).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from runtimes.base import Predictor

SPREAD_LIMIT = 0.05  # trials whose p50s differ by more than this (relative to their median) are flagged


@dataclass(frozen=True)
class BenchSettings:
    warmup_runs: int = 10
    warmup_min_secs: float = 1.0
    num_runs: int = 200
    min_secs: float = 10.0
    max_secs: float = 150.0
    run_delay: float = 0.0  # seconds slept between timed runs (TFLite --run_delay); not timed

    def __post_init__(self) -> None:
        if self.num_runs < 1 or self.warmup_runs < 0 or self.min_secs < 0 or self.max_secs <= 0 or self.run_delay < 0:
            raise ValueError("benchmark settings must be positive")
        if self.warmup_min_secs < 0:
            raise ValueError("warmup_min_secs must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


# The check stage's short protocol on the host (``pipeline run``; pipeline.config.CheckConfig defaults from it):
# host numbers never stand in for a device's (docs/latency-protocol.md §12), so a quick figure is enough there;
# the defaults above are the device protocol.
HOST_CHECK = BenchSettings(warmup_runs=10, warmup_min_secs=0.5, num_runs=100, min_secs=2.0, max_secs=30.0)
QUICK = BenchSettings(warmup_runs=10, warmup_min_secs=0.2, num_runs=100, min_secs=1.0, max_secs=20.0)
FULL = BenchSettings(warmup_runs=10, warmup_min_secs=1.0, num_runs=1024, min_secs=60.0, max_secs=600.0)


@dataclass
class LatencyStats:
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    first_ms: float
    samples_ms: list[float] = field(repr=False, default_factory=list)
    p95_ms: float | None = None
    cv: float | None = None  # std / mean
    warmup_runs: int | None = None
    warmup_mean_ms: float | None = None
    seconds: float | None = None  # wall time of the timed runs

    @classmethod
    def from_samples(cls, samples_ns: list[int], first_ns: int, warmup_ns: list[int] | None = None,
                     seconds: float | None = None) -> "LatencyStats":
        a = np.asarray(samples_ns, dtype=np.float64) / 1e6
        p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
        mean = float(a.mean())
        warm = np.asarray(warmup_ns or [], dtype=np.float64) / 1e6
        return cls(len(a), float(p50), float(p90), float(p99), mean, float(a.std()), float(a.min()), float(a.max()),
                   first_ns / 1e6, [round(float(v), 4) for v in a], p95_ms=float(p95), cv=float(a.std() / mean) if mean else None,
                   warmup_runs=len(warm) if warmup_ns is not None else None,
                   warmup_mean_ms=float(warm.mean()) if len(warm) else None, seconds=seconds)

    def to_dict(self, with_samples: bool = False) -> dict:
        d = asdict(self)
        if not with_samples:
            d.pop("samples_ms")
        return d


def benchmark(pred: Predictor, feeds: dict[str, np.ndarray], settings: BenchSettings = BenchSettings()) -> LatencyStats:
    t = time.perf_counter_ns
    start = t()
    pred.run(feeds)
    first = t() - start
    warm_start = time.monotonic()
    warm: list[int] = []
    while len(warm) < settings.warmup_runs or time.monotonic() - warm_start < settings.warmup_min_secs:
        s = t()
        pred.run(feeds)
        warm.append(t() - s)
    samples: list[int] = []
    begin = time.monotonic()
    while True:
        if settings.run_delay:
            time.sleep(settings.run_delay)
        s = t()
        pred.run(feeds)
        samples.append(t() - s)
        elapsed = time.monotonic() - begin
        if (len(samples) >= settings.num_runs and elapsed >= settings.min_secs) or elapsed >= settings.max_secs:
            break
    return LatencyStats.from_samples(samples, first, warm, round(time.monotonic() - begin, 3))


def summarize_trials(trials: list[LatencyStats], limit: float = SPREAD_LIMIT) -> dict:
    """One figure for repeated trials: the median of the trial percentiles, and the spread of the p50s.

    ``spread`` is (max p50 - min p50) / median p50; above ``limit`` the result is flagged ``unstable``.
    """
    if not trials:
        raise ValueError("no trials to summarize")
    p50s = np.asarray([t.p50_ms for t in trials])
    med = float(np.median(p50s))
    spread = float((p50s.max() - p50s.min()) / med) if med > 0 else 0.0
    everything = np.concatenate([np.asarray(t.samples_ms, dtype=np.float64) for t in trials if t.samples_ms] or [p50s])
    return {
        "trials": len(trials),
        "p50_ms": med,
        "p90_ms": float(np.median([t.p90_ms for t in trials])),
        "p99_ms": float(np.median([t.p99_ms for t in trials])),
        "mean_ms": float(everything.mean()),
        "std_ms": float(everything.std()),
        "min_ms": float(everything.min()),
        "max_ms": float(everything.max()),
        "n": int(sum(t.n for t in trials)),
        "trial_p50_ms": [float(v) for v in p50s],
        "spread": spread,
        "spread_limit": limit,
        "unstable": bool(spread > limit),
    }
