"""Per-op latency from each runtime's own profiler: the "slowest ops" of an artifact.

What benchmark tools print with ``benchmark_model --enable_op_profiling``, ``benchmark_app -pc`` and
``onnxruntime_perf_test -p``, read through each runtime's Python or C API, never timed from outside:

* onnxruntime: session profiling (``SessionOptions.enable_profiling``); the ``Node`` events of the JSON
  trace (``<node>_kernel_time``: the kernel's wall time), with the op type and the execution provider.
  The trace is read by :func:`runtimes.onnxruntime_coverage.trace_kernels`, the same reader the
  integer-coverage check uses.
* openvino: performance counters (``PERF_COUNT: True``); ``InferRequest.get_profiling_info()`` after each
  inference (the counters describe the last one): ``real_time`` of every ``EXECUTED`` node, its
  ``node_type`` and ``exec_type`` (the CPU plugin's primitive, e.g. ``jit_avx2_I8``).
* litert: the Python ``Interpreter`` has no op profiler; the C API of the runtime library the
  ``ai_edge_litert`` wheel ships has one (:mod:`runtimes.litert_profiler`, through ``ctypes``, only on the
  LiteRT releases that binding was verified on). Elsewhere (another release, the legacy ``tflite_runtime``
  wheel, ``tensorflow.lite``) the profile says so and holds no op.

The profile never touches the caller's session: it opens a second one on ``pred.path`` with the same
threads, graph optimisation, device or kernel choice, warms it up (``warmup`` runs, not counted) and runs
``runs`` profiled inferences on ``feeds``. ``ms`` is an op's mean time per inference over those runs;
``total_ms`` is the sum over ops (what the profiler attributes to ops: not the wall latency, which also
holds the framework's own overhead, and with several threads a parallel runtime's op times can add up to
more than the wall time); ``share`` is ``ms / total_ms``. Profiling itself costs time, so the shares matter
more than the absolute figures. Torch-free: this runs on devices.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_WARMUP = 2  # inferences before profiling starts (first-run allocations, XNNPACK/oneDNN set-up)
DEFAULT_RUNS = 10  # profiled inferences averaged: a few milliseconds each on the bundled model


class ProfilingUnavailable(RuntimeError):
    """This predictor's runtime has no op profiler here; the message is one line saying why and what to do."""


@dataclass
class OpTime:
    """One op (node, kernel) of a profile: its mean time per inference and what executed it."""

    name: str  # the node as the runtime names it in its executed graph
    type: str  # op type in the runtime's vocabulary (QLinearConv, Convolution, CONV_2D)
    ms: float  # mean per inference over the profiled runs
    share: float  # of the profile's total_ms
    kernel: str | None = None  # what ran it: ORT provider, OpenVINO exec_type, LiteRT/XNNPACK operator
    precision: str | None = None  # element types it computed in (u8×i8, f32, i8 (QC8)); None when not reported
    calls: int | None = None  # executions per inference where not 1


@dataclass
class OpProfile:
    """An artifact's per-op latency as its runtime's own profiler reports it (``to_dict`` is what results store)."""

    runtime: str
    source: str  # the profiler, in words
    runs: int  # profiled inferences averaged
    total_ms: float  # sum of the ops' ms (not the wall latency)
    ops: list[OpTime] = field(default_factory=list)  # slowest first
    warmup_runs: int = 0
    threads: int | None = None
    unavailable: str | None = None  # why there are no ops (the runtime build has no profiler); None when profiled
    not_run: int = 0  # nodes the profiler listed as not executed (fused into a neighbour, constant-folded)

    def by_type(self) -> list[dict]:
        """Time per op type, slowest first (benchmark_model's "Summary by node type")."""
        agg: dict[str, list[float]] = {}
        for op in self.ops:
            agg.setdefault(op.type, []).append(op.ms)
        rows = [{"type": t, "count": len(v), "ms": sum(v), "share": sum(v) / self.total_ms if self.total_ms else 0.0}
                for t, v in agg.items()]
        return sorted(rows, key=lambda r: -r["ms"])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ops"] = [{k: v for k, v in op.items() if v is not None or k in ("kernel", "precision")} for op in d["ops"]]
        d["by_type"] = self.by_type()
        return d


def _finish(profile: OpProfile) -> OpProfile:
    """Shares and the slowest-first order, from the ops' mean times."""
    profile.ops = sorted((op for op in profile.ops if op.ms >= 0), key=lambda op: -op.ms)
    profile.total_ms = float(sum(op.ms for op in profile.ops))
    for op in profile.ops:
        op.share = op.ms / profile.total_ms if profile.total_ms > 0 else 0.0
    return profile


def _choice(pred, default: str) -> str:
    """The accelerator the predictor was loaded with, in its runtime's words (``openvino:AUTO`` → ``AUTO``), else ``default``."""
    acc = getattr(pred, "accelerator", None)
    return acc.split(":", 1)[1] if isinstance(acc, str) and ":" in acc else default


def _check_counts(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise ValueError(f"op profiling needs runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")


# ---- onnxruntime ---------------------------------------------------------------------------------------------

_SHORT = {"uint8": "u8", "int8": "i8", "float": "f32", "float32": "f32", "float16": "f16", "double": "f64", "bfloat16": "bf16",
          "int32": "i32", "int64": "i64", "int16": "i16", "uint16": "u16", "bool": "bool"}


def _short(dtype: str) -> str:
    return _SHORT.get(dtype.lower(), dtype.lower())


def _ort_precision(op: str, inputs: list[tuple[str, list[int]]]) -> str | None:
    """The element types an ORT kernel computed in, from the types its trace records: activation × weight for an integer
    multiply-accumulate op, else its first input's.

    A weight ORT pre-packed at load time is missing from the record (the profiled session keeps pre-packing on: it
    is what runs); its type is then its zero point's (ONNX gives both one type): the first 8-bit input after the
    weight's position for the QLinear ops (x, x_scale, x_zp, [w], w_scale, w_zp, ...), the last one for
    ConvInteger/MatMulInteger (x, [w], x_zp, w_zp).
    """
    from runtimes.onnxruntime_coverage import INT_MAC_OPS

    if not inputs:
        return None
    act = _short(inputs[0][0])
    w = INT_MAC_OPS.get(op)
    if w is None:
        return act
    if len(inputs) > w and len(inputs[w][1]) >= 2 and inputs[w][0] in ("int8", "uint8"):
        return f"{act}×{_short(inputs[w][0])}"
    eight_bit = [d for d, _ in inputs[w:] if d in ("int8", "uint8")]
    weight = (eight_bit[0] if w >= 3 else eight_bit[-1]) if eight_bit else None
    return f"{act}×{_short(weight)}" if weight else act


def _onnxruntime(pred, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> OpProfile:
    import onnxruntime as ort

    from runtimes.onnxruntime_backend import session_options
    from runtimes.onnxruntime_coverage import trace_kernels, trace_runs

    providers = pred.session.get_providers()
    with tempfile.TemporaryDirectory(prefix="zsq-ort-profile-") as tmp:
        # a session of its own, set up like the caller's: profiling switched on in the caller's SessionOptions would
        # change its session, and its optimized_model_filepath would make this one rewrite the saved proof graph
        so = session_options(**pred.options, profile_prefix=os.path.join(tmp, "ort"))
        try:
            opts = pred.session.get_provider_options()
            session = ort.InferenceSession(str(pred.path), so, providers=providers, provider_options=[opts.get(p, {}) for p in providers])
        except (TypeError, ValueError):  # an EP whose reported options it does not take back: its defaults
            session = ort.InferenceSession(str(pred.path), so, providers=providers)
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    windows = trace_runs(events)[warmup:]
    if len(windows) != runs:
        raise RuntimeError(f"onnxruntime's profile holds {len(windows) + warmup} runs, {warmup + runs} were made")
    ops: dict[str, OpTime] = {}
    for k in trace_kernels(events):
        if not any(start <= k.ts_us <= end for start, end in windows):
            continue  # a warm-up run
        op = ops.get(k.node)
        if op is None:
            op = ops[k.node] = OpTime(k.node, k.op, 0.0, 0.0, k.provider, _ort_precision(k.op, k.inputs), 0)
        op.ms += k.dur_us / 1000.0 / runs
        op.calls += 1
    for op in ops.values():
        op.calls = op.calls // runs if op.calls != runs else None
    threads = so.intra_op_num_threads or None
    return _finish(OpProfile("onnxruntime", "onnxruntime session profiling (SessionOptions.enable_profiling): the kernel_time "
                             f"of every Node event in the trace, {', '.join(providers)}", runs, 0.0, list(ops.values()),
                             warmup, threads))


# ---- OpenVINO ------------------------------------------------------------------------------------------------

_OV_PRECISION = re.compile(r"_(I8|U8|I4|U4|I16|I32|FP32|F32|FP16|F16|BF16|BOOL)$", re.IGNORECASE)


def _openvino(pred, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> OpProfile:
    from runtimes.openvino_backend import DEFAULT_PRECISION_HINT, compile_config, core

    device = _choice(pred, "CPU")
    threads = getattr(pred, "threads", 1)
    config = {**compile_config(threads, getattr(pred, "precision_hint", DEFAULT_PRECISION_HINT)), "PERF_COUNT": True}
    compiled = core().compile_model(str(pred.path), device, config)
    precisions = {}
    for node in compiled.get_runtime_model().get_ordered_ops():
        rt = node.get_rt_info()
        if "runtimePrecision" in rt:
            precisions[node.get_friendly_name()] = rt["runtimePrecision"].astype(str)
    request = compiled.create_infer_request()
    for _ in range(warmup):
        request.infer(feeds)
    ops: dict[str, OpTime] = {}
    cpu_us: dict[str, float] = {}
    not_run: set[str] = set()
    for _ in range(runs):
        request.infer(feeds)
        for info in request.get_profiling_info():  # the counters of this inference
            if info.status != info.Status.EXECUTED:
                not_run.add(info.node_name)
                continue
            op = ops.get(info.node_name)
            if op is None:
                suffix = _OV_PRECISION.search(info.exec_type or "")
                precision = precisions.get(info.node_name) or (suffix.group(1).lower() if suffix else None)
                op = ops[info.node_name] = OpTime(info.node_name, info.node_type, 0.0, 0.0, info.exec_type or None, precision)
            op.ms += info.real_time.total_seconds() * 1000.0 / runs
            cpu_us[info.node_name] = cpu_us.get(info.node_name, 0.0) + info.cpu_time.total_seconds() * 1e6 / runs
    return _finish(OpProfile("openvino", f"OpenVINO performance counters (PERF_COUNT, InferRequest.get_profiling_info) on {device}: "
                             "real_time of every EXECUTED node, averaged over the runs", runs, 0.0, list(ops.values()), warmup,
                             threads, not_run=len(not_run - set(ops))))


def _litert(pred, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> OpProfile:
    from runtimes.litert_profiler import profile  # ctypes into libLiteRt.so: loaded only for a LiteRT artifact

    return profile(pred, feeds, runs, warmup)


# ---- entry points --------------------------------------------------------------------------------------------

PROFILERS = {"onnxruntime": _onnxruntime, "openvino": _openvino, "litert": _litert}


def profile_ops(pred, feeds: dict[str, np.ndarray], runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP) -> OpProfile:
    """Per-op latency of ``pred``'s artifact on ``feeds`` (prepared as for ``pred.run``) from its runtime's own profiler.

    Opens a second, profiled instance of the artifact (the caller's is left alone), runs ``warmup`` inferences, then
    ``runs`` profiled ones. A LiteRT build without the profiler gives a profile with no op and ``unavailable`` set;
    a runtime this module has no profiler for raises :class:`ProfilingUnavailable`.
    """
    _check_counts(runs, warmup)
    profiler = PROFILERS.get(getattr(pred, "runtime", None))
    if profiler is None:
        raise ProfilingUnavailable(f"no op profiler for runtime {getattr(pred, 'runtime', None)!r}: "
                                   f"op profiles come from {', '.join(PROFILERS)}")
    return profiler(pred, feeds, runs, warmup)


def op_profile(pred, feeds: dict[str, np.ndarray], runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP) -> dict:
    """:func:`profile_ops` as the dict a check or device result stores; a profile that failed is recorded, not raised.

    The op profile is an extra: it must never cost a check or a device result its other figures. A failure is a
    profile with no op whose ``unavailable`` says why in one line.
    """
    _check_counts(runs, warmup)  # a wrong count is the caller's error, not the runtime's
    try:
        return profile_ops(pred, feeds, runs, warmup).to_dict()
    except ProfilingUnavailable as exc:
        return OpProfile(str(getattr(pred, "runtime", None)), "none", 0, 0.0, [], 0, None, unavailable=str(exc)).to_dict()
    except Exception as exc:  # noqa: BLE001  (any runtime error: recorded in one line, the rest of the result stands)
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
        runtime = getattr(pred, "runtime", None)
        return OpProfile(str(runtime), "none: the profiler failed", 0, 0.0, [], 0, None, unavailable=why).to_dict()


def profile_line(profile: dict | None, top: int = 3) -> str:
    """One line for a log: the op types' shares and the slowest ops (or why there is no profile)."""
    if not profile:
        return "no op profile"
    if not profile.get("ops"):
        return f"no op profile: {profile.get('unavailable') or 'the profiler listed no op'}"
    types = ", ".join(f"{r['type']} {r['share']:.0%}" for r in (profile.get("by_type") or [])[:top])
    slowest = ", ".join(f"{op['name']} ({op['type']}) {op['share']:.0%}" for op in profile["ops"][:top])
    return (f"op profile ({profile['runtime']}, {profile['runs']} runs, {profile['total_ms']:.3f} ms in ops): {types}; "
            f"slowest {slowest}")
