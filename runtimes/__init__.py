"""Runtimes for integer artifacts. Imports neither torch nor tensorflow (it runs on devices)."""

from runtimes.base import Predictor, RuntimeUnavailable, TensorSpec, load, predict_batched, prepare_feeds, run_single, runtime_for
from runtimes.benchmark import BenchSettings, LatencyStats, benchmark

__all__ = ["BenchSettings", "LatencyStats", "Predictor", "RuntimeUnavailable", "TensorSpec", "benchmark", "load",
           "predict_batched", "prepare_feeds", "run_single", "runtime_for"]
