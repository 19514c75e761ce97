"""LiteRT's own op profiler, reached through the C API of the ``libLiteRt.so`` the ``ai_edge_litert`` wheel ships.

The Python ``Interpreter`` has no op profiler. The runtime library beside it has one: a ``CompiledModel``
compiled with the runtime option ``enable_profiling = true``, ``LiteRtCompiledModelGetProfiler`` and
``LiteRtGetProfileSummary``, whose text is the table ``benchmark_model --enable_op_profiling`` prints
(XNNPACK's operators by default, e.g. ``Convolution (NHWC, QC8) IGEMM``; the built-in kernels with
``litert:none``). It is called with ``ctypes`` (no native build).

A C API called through ``ctypes`` has no header to check the call signatures against: a different LiteRT
release could change them, and a wrong signature crashes the process instead of raising. So the binding is
used only with the LiteRT releases it was verified on (:data:`VERIFIED_RELEASES`, the ``ai-edge-litert``
range this project pins); any other build gets a profile with no op and ``unavailable`` saying why.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import re
from pathlib import Path

import numpy as np

from runtimes.profiling import OpProfile, OpTime, ProfilingUnavailable, _choice, _finish, _short

VERIFIED_RELEASES = ("2.3.",)  # ai-edge-litert releases whose libLiteRt.so C API this binding was checked against


def verified_release() -> str:
    """The installed ai-edge-litert release when this binding was verified on it; else ProfilingUnavailable, one line."""
    try:
        version = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        raise ProfilingUnavailable("op profiling needs the ai-edge-litert wheel (its libLiteRt.so has the profiler; "
                                   "tflite_runtime and tensorflow.lite have none): pip install ai-edge-litert") from None
    if not version.startswith(VERIFIED_RELEASES):
        raise ProfilingUnavailable(f"the LiteRT profiler binding is verified on ai-edge-litert {', '.join(v + 'x' for v in VERIFIED_RELEASES)}, "
                                   f"this host has {version}: op profiling skipped (its C API may differ)")
    return version


# XNNPACK's data-type codes in its operator names ("Convolution (NHWC, QC8) IGEMM") in the vocabulary used above
_XNN_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16", "QS8": "i8", "QU8": "u8", "QC8": "i8", "QC8W": "i8 weights",
              "QC4W": "i4 weights", "QB4W": "i4 weights", "QD8": "i8 dynamic", "QP8": "i8 packed", "S32": "i32", "X32": "32-bit",
              "X8": "8-bit", "X16": "16-bit"}
# one row of a TFLite/LiteRT profile summary table (tflite::profiling::ProfileSummaryFormatter)
_ROW = re.compile(r"^\s*(?P<type>\S.*?)\s+(?P<start>[\d.]+)\s+(?P<first>[\d.]+)\s+(?P<avg>[\d.]+)\s+(?P<pct>[\d.]+)%\s+"
                  r"(?P<cdf>[\d.]+)%\s+(?P<mem>[\d.]+)\s+(?P<calls>\d+)\s+(?P<name>\S.*?)\s*$")


def parse_profile_summary(text: str, runs: int) -> list[OpTime]:
    """The ops of a TFLite/LiteRT profile summary (``benchmark_model --enable_op_profiling``'s table; first table only).

    ``[avg ms]`` is per call, ``[times called]`` over all ``runs``: an op's time per inference is their product over
    ``runs``. Rows of a delegate's own kernels (``Delegate/<operator>``) are its internal ops as the delegate reports
    them; the row of the delegate node itself would count them twice and is left out.
    """
    ops, seen_table = [], False
    for line in text.splitlines():
        if "[node type]" in line:
            if seen_table:
                break  # the second table ("Top by Computation Time") repeats the first
            seen_table = True
            continue
        m = _ROW.match(line) if seen_table else None
        if not m:
            if seen_table and ops and not line.strip():
                break
            continue
        node_type, calls = m["type"], int(m["calls"])
        ops.append(OpTime(m["name"], node_type, float(m["avg"]) * calls / runs, 0.0, calls=calls // runs if calls != runs else None))
    if any(op.type.startswith("Delegate/") for op in ops):
        ops = [op for op in ops if op.type.startswith("Delegate/") or "delegate" not in op.type.lower()]
    for op in ops:
        if op.type.startswith("Delegate/"):
            operator = op.type.removeprefix("Delegate/")
            codes = re.search(r"\(([^)]*)\)", operator)
            words = [c.strip() for c in codes.group(1).split(",")] if codes else []
            typed = [c for c in words if c in _XNN_TYPES]
            op.type = operator.split(" (")[0]
            op.kernel = f"XNNPACK {operator}"
            op.precision = f"{_XNN_TYPES[typed[0]]} ({', '.join(typed)})" if typed else None
        else:
            op.kernel = "LiteRT built-in kernel"
    return ops


class _LiteRtC:
    """The few LiteRT C API calls a profiled CompiledModel needs, from the ``libLiteRt.so`` beside ``ai_edge_litert``."""

    NEEDED = ("LiteRtCreateEnvironment", "LiteRtCreateModelFromFile", "LiteRtCreateOptions", "LiteRtSetOptionsHardwareAccelerators",
              "LiteRtCreateOpaqueOptions", "LiteRtAddOpaqueOptions", "LiteRtCreateCompiledModel", "LiteRtCompiledModelGetProfiler",
              "LiteRtStartProfiler", "LiteRtStopProfiler", "LiteRtGetProfileSummary", "LiteRtRunCompiledModel")
    _instance: "_LiteRtC | None" = None

    def __init__(self, path: Path) -> None:
        P = ctypes.c_void_p
        self.lib = lib = ctypes.CDLL(str(path))
        missing = [name for name in self.NEEDED if not hasattr(lib, name)]
        if missing:
            raise ProfilingUnavailable(f"{path.name} has no {missing[0]}: this LiteRT build has no CompiledModel profiler")
        self.libc = ctypes.CDLL(None)
        self.libc.strdup.restype, self.libc.strdup.argtypes = P, [ctypes.c_char_p]
        self.libc.free.argtypes = [P]
        sigs = {
            "LiteRtCreateEnvironment": [ctypes.c_int, P, ctypes.POINTER(P)],
            "LiteRtCreateModelFromFile": [P, ctypes.c_char_p, ctypes.POINTER(P)],
            "LiteRtCreateOptions": [ctypes.POINTER(P)],
            "LiteRtSetOptionsHardwareAccelerators": [P, ctypes.c_int],
            "LiteRtCreateOpaqueOptions": [ctypes.c_char_p, P, P, ctypes.POINTER(P)],
            "LiteRtAddOpaqueOptions": [P, P],
            "LiteRtCreateCompiledModel": [P, P, P, ctypes.POINTER(P)],
            "LiteRtCompiledModelGetProfiler": [P, ctypes.POINTER(P)],
            "LiteRtStartProfiler": [P], "LiteRtStopProfiler": [P],
            "LiteRtGetProfileSummary": [P, P, ctypes.POINTER(P)],
            "LiteRtGetModelSignature": [P, ctypes.c_size_t, ctypes.POINTER(P)],
            "LiteRtGetNumSignatureInputs": [P, ctypes.POINTER(ctypes.c_size_t)],
            "LiteRtGetNumSignatureOutputs": [P, ctypes.POINTER(ctypes.c_size_t)],
            "LiteRtGetSignatureInputName": [P, ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p)],
            "LiteRtGetSignatureInputTensorByIndex": [P, ctypes.c_size_t, ctypes.POINTER(P)],
            "LiteRtGetSignatureOutputTensorByIndex": [P, ctypes.c_size_t, ctypes.POINTER(P)],
            "LiteRtGetRankedTensorType": [P, P],
            "LiteRtGetCompiledModelInputBufferRequirements": [P, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(P)],
            "LiteRtGetCompiledModelOutputBufferRequirements": [P, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(P)],
            "LiteRtCreateManagedTensorBufferFromRequirements": [P, P, P, ctypes.POINTER(P)],
            "LiteRtGetTensorBufferSize": [P, ctypes.POINTER(ctypes.c_size_t)],
            "LiteRtLockTensorBuffer": [P, ctypes.POINTER(P), ctypes.c_int],
            "LiteRtUnlockTensorBuffer": [P],
            "LiteRtRunCompiledModel": [P, ctypes.c_size_t, ctypes.c_size_t, P, ctypes.c_size_t, P],
        }
        for name, args in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        for name in ("LiteRtDestroyTensorBuffer", "LiteRtDestroyCompiledModel", "LiteRtDestroyOptions", "LiteRtDestroyModel"):
            getattr(lib, name).argtypes, getattr(lib, name).restype = [P], None
        self.env = P()
        self.ok(lib.LiteRtCreateEnvironment(0, None, ctypes.byref(self.env)), "LiteRtCreateEnvironment")

    @classmethod
    def get(cls) -> "_LiteRtC":
        if cls._instance is None:
            verified_release()
            spec = importlib.util.find_spec("ai_edge_litert")
            folder = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else None
            if folder is None or not (folder / "libLiteRt.so").exists():
                raise ProfilingUnavailable("the installed LiteRT has no libLiteRt.so (ai_edge_litert's runtime library, whose C API has "
                                           "the op profiler; the Python Interpreter has none): pip install ai-edge-litert")
            cls._instance = cls(folder / "libLiteRt.so")
        return cls._instance

    @staticmethod
    def ok(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"LiteRT {what} failed (LiteRtStatus {status})")

    def toml_options(self, options, identifier: str, toml: str) -> None:
        """Attach ``toml`` under ``identifier``: LiteRT's option payloads are TOML text the runtime parses and frees."""
        P = ctypes.c_void_p
        payload, opaque = self.libc.strdup(toml.encode()), P()
        self.ok(self.lib.LiteRtCreateOpaqueOptions(identifier.encode(), payload, ctypes.cast(self.libc.free, P), ctypes.byref(opaque)),
                f"options {identifier}")
        self.ok(self.lib.LiteRtAddOpaqueOptions(options, opaque), f"options {identifier}")


def _litert_buffers(c: _LiteRtC, model, compiled, signature, count: int, inputs: bool) -> list:
    P, lib = ctypes.c_void_p, c.lib
    tensor_at = lib.LiteRtGetSignatureInputTensorByIndex if inputs else lib.LiteRtGetSignatureOutputTensorByIndex
    requirements = lib.LiteRtGetCompiledModelInputBufferRequirements if inputs else lib.LiteRtGetCompiledModelOutputBufferRequirements
    buffers = []
    for i in range(count):
        tensor, req, buf = P(), P(), P()
        tensor_type = ctypes.create_string_buffer(512)  # LiteRtRankedTensorType, filled and read by the library only
        c.ok(tensor_at(signature, i, ctypes.byref(tensor)), "signature tensor")
        c.ok(lib.LiteRtGetRankedTensorType(tensor, tensor_type), "tensor type")
        c.ok(requirements(compiled, 0, i, ctypes.byref(req)), "buffer requirements")
        c.ok(lib.LiteRtCreateManagedTensorBufferFromRequirements(c.env, tensor_type, req, ctypes.byref(buf)), "tensor buffer")
        buffers.append(buf)
    return buffers


def _litert_builtin_precisions(pred) -> dict[str, str]:
    """``[Builtin]:<index>`` → the element types of that op, from the Interpreter's own op and tensor details."""
    try:
        it = pred.interpreter
        tensors = {d["index"]: np.dtype(d["dtype"]).name for d in it.get_tensor_details()}
        out = {}
        for op in it._get_ops_details():
            ins = [tensors.get(i) for i in op["inputs"] if i >= 0]
            mac = op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")
            if ins and ins[0]:
                out[f"[Builtin]:{op['index']}"] = _short(ins[0]) + (f"×{_short(ins[1])}" if mac and len(ins) > 1 and ins[1] else "")
        return out
    except Exception:  # noqa: BLE001  (a private Interpreter API: without it the precision stays unreported)
        return {}


def profile(pred, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> OpProfile:
    """LiteRT's per-op profile of ``pred``'s artifact (see the module docstring); ``runtimes.profiling.profile_ops`` calls it."""
    threads = int(getattr(pred, "threads", 1) or 1)
    choice = _choice(pred, "xnnpack" if getattr(pred, "use_xnnpack", True) else "none")
    if choice not in ("xnnpack", "none"):  # the CompiledModel's GPU/NPU accelerators: no machine here to check their profile on
        why = f"op profiling covers LiteRT's CPU paths (litert:xnnpack, litert:none); litert:{choice} is not profiled"
        return OpProfile("litert", "none: " + why, 0, 0.0, [], 0, threads, unavailable=why)
    xnnpack = choice == "xnnpack"
    source = ("LiteRT's own profiler (CompiledModel C API in libLiteRt.so, runtime option enable_profiling; the table "
              "benchmark_model --enable_op_profiling prints), " + ("XNNPACK's operators" if xnnpack else "built-in kernels"))
    try:
        c = _LiteRtC.get()
    except (ProfilingUnavailable, OSError) as exc:
        return OpProfile("litert", "none: " + str(exc).splitlines()[0], 0, 0.0, [], 0, threads, unavailable=str(exc).splitlines()[0])
    P, lib = ctypes.c_void_p, c.lib
    model, options, compiled, profiler, summary = P(), P(), P(), P(), P()
    buffers: list = []
    try:
        c.ok(lib.LiteRtCreateModelFromFile(c.env, str(pred.path).encode(), ctypes.byref(model)), "load")
        c.ok(lib.LiteRtCreateOptions(ctypes.byref(options)), "options")
        c.ok(lib.LiteRtSetOptionsHardwareAccelerators(options, 1), "options (CPU)")  # kLiteRtHwAcceleratorCpu
        c.toml_options(options, "runtime_options_string", "enable_profiling = true\n")
        c.toml_options(options, "xnnpack", f"num_threads = {threads}\n" + ("" if xnnpack else 'kernel_mode = "builtin"\n'))
        c.ok(lib.LiteRtCreateCompiledModel(c.env, model, options, ctypes.byref(compiled)), "compile")
        c.ok(lib.LiteRtCompiledModelGetProfiler(compiled, ctypes.byref(profiler)), "profiler")
        if not profiler:
            raise RuntimeError("LiteRT compiled the model without a profiler (runtime option enable_profiling not taken)")
        signature, n_in, n_out = P(), ctypes.c_size_t(), ctypes.c_size_t()
        c.ok(lib.LiteRtGetModelSignature(model, 0, ctypes.byref(signature)), "signature")
        c.ok(lib.LiteRtGetNumSignatureInputs(signature, ctypes.byref(n_in)), "signature")
        c.ok(lib.LiteRtGetNumSignatureOutputs(signature, ctypes.byref(n_out)), "signature")
        ins = _litert_buffers(c, model, compiled, signature, n_in.value, True)
        outs = _litert_buffers(c, model, compiled, signature, n_out.value, False)
        buffers = ins + outs
        for i, buf in enumerate(ins):
            name = ctypes.c_char_p()
            c.ok(lib.LiteRtGetSignatureInputName(signature, i, ctypes.byref(name)), "input name")
            x = feeds.get(name.value.decode()) if name.value else None
            x = x if x is not None else (next(iter(feeds.values())) if len(feeds) == 1 else None)
            if x is None:
                raise ValueError(f"no feed for input {name.value!r}; the feeds hold {', '.join(feeds)}")
            data = np.ascontiguousarray(x).tobytes()
            size, addr = ctypes.c_size_t(), P()
            c.ok(lib.LiteRtGetTensorBufferSize(buf, ctypes.byref(size)), "buffer size")
            if size.value != len(data):
                raise ValueError(f"input {name.value.decode()!r} takes {size.value} bytes, the feed has {len(data)} "
                                 f"(shape {tuple(np.shape(x))}): LiteRT op profiling runs the artifact's own input shape")
            c.ok(lib.LiteRtLockTensorBuffer(buf, ctypes.byref(addr), 1), "lock input")  # kLiteRtTensorBufferLockModeWrite
            ctypes.memmove(addr, data, len(data))
            c.ok(lib.LiteRtUnlockTensorBuffer(buf), "unlock input")
        in_arr, out_arr = (P * len(ins))(*ins), (P * len(outs))(*outs)

        def run() -> None:
            c.ok(lib.LiteRtRunCompiledModel(compiled, 0, len(ins), in_arr, len(outs), out_arr), "run")

        for _ in range(warmup):  # the profiler records only once started
            run()
        c.ok(lib.LiteRtStartProfiler(profiler), "start profiler")
        for _ in range(runs):
            run()
        c.ok(lib.LiteRtStopProfiler(profiler), "stop profiler")
        c.ok(lib.LiteRtGetProfileSummary(profiler, compiled, ctypes.byref(summary)), "profile summary")
        text = ctypes.cast(summary, ctypes.c_char_p).value.decode(errors="replace") if summary else ""
    finally:
        if summary:
            c.libc.free(summary)
        for buf in buffers:
            lib.LiteRtDestroyTensorBuffer(buf)
        for handle, destroy in ((compiled, lib.LiteRtDestroyCompiledModel), (options, lib.LiteRtDestroyOptions),
                                (model, lib.LiteRtDestroyModel)):
            if handle:
                destroy(handle)
    ops = parse_profile_summary(text, runs)
    if not ops:
        raise RuntimeError("LiteRT's profile summary lists no op")
    if not xnnpack:
        precisions = _litert_builtin_precisions(pred)
        for op in ops:
            op.precision = precisions.get(op.name)
    return _finish(OpProfile("litert", source, runs, 0.0, ops, warmup, threads))
