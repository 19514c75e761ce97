"""Latency measurement in the style of TFLite's benchmark_model: warm-up, then timed runs, percentiles.

Only ``run`` is timed (monotonic ns clock); inputs are prepared outside the
timed region. Warm-up lasts at least ``warmup_runs`` runs and ``warmup_min_secs``;
timing continues until at least ``num_runs`` runs and ``min_secs`` seconds, capped
by ``max_secs``. Every sample is kept.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from runtimes.base import Predictor


@dataclass(frozen=True)
class BenchSettings:
    warmup_runs: int = 10
    warmup_min_secs: float = 1.0
    num_runs: int = 200
    min_secs: float = 10.0
    max_secs: float = 150.0

    def __post_init__(self) -> None:
        if self.num_runs < 1 or self.warmup_runs < 0 or self.min_secs < 0 or self.max_secs <= 0:
            raise ValueError("benchmark settings must be positive")


QUICK = BenchSettings(warmup_runs=10, warmup_min_secs=0.2, num_runs=100, min_secs=1.0, max_secs=20.0)


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

    @classmethod
    def from_samples(cls, samples_ns: list[int], first_ns: int) -> "LatencyStats":
        a = np.asarray(samples_ns, dtype=np.float64) / 1e6
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(len(a), float(p50), float(p90), float(p99), float(a.mean()), float(a.std()), float(a.min()), float(a.max()),
                   first_ns / 1e6, [round(float(v), 4) for v in a])

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
    runs = 0
    while runs < settings.warmup_runs or time.monotonic() - warm_start < settings.warmup_min_secs:
        pred.run(feeds)
        runs += 1
    samples: list[int] = []
    begin = time.monotonic()
    while True:
        s = t()
        pred.run(feeds)
        samples.append(t() - s)
        elapsed = time.monotonic() - begin
        if (len(samples) >= settings.num_runs and elapsed >= settings.min_secs) or elapsed >= settings.max_secs:
            break
    return LatencyStats.from_samples(samples, first)
