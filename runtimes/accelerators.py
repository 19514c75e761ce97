"""What each runtime can run an artifact on, in the runtime's own words, and which of those this host has.

A choice is written ``RUNTIME:CHOICE``: ``onnxruntime:CPUExecutionProvider``, ``openvino:AUTO``,
``litert:none``. The runtime may be named as the format tables name it (``onnx``/``ort``,
``ov``, ``tflite``); the choice is the runtime's own vocabulary, read from the runtime where it
says it:

* ONNX Runtime: execution providers, ``onnxruntime.get_all_providers()`` (every provider ORT
  knows); available = ``get_available_providers()`` of the installed wheel, except
  ``AzureExecutionProvider``, which sends requests to a remote Azure endpoint and runs no local
  kernel (loaded alone, ORT runs the whole model on the CPU provider under it): there is nothing
  on this host to check, so it is refused as unavailable, saying why. The short spellings
  ``cpu``, ``cuda``, ``tensorrt``... (onnxruntime_perf_test's ``-e``) name the same providers.
* OpenVINO: devices ``CPU``, ``GPU``, ``NPU`` (``GPU.1``: one of several) and the virtual
  ``AUTO``; available = ``Core().available_devices`` (a device whose plugin loads and finds
  hardware), and AUTO when some device is. AUTO picks the best device at compile time and starts
  on the CPU while a slower device compiles (OpenVINO's "automatic device selection"); what it
  picked is the compiled model's ``EXECUTION_DEVICES``, which the predictor records.
  HETERO/MULTI need a device list and add nothing on one device; they are not offered.
* LiteRT: ``xnnpack`` (the interpreter's default delegate), ``none`` (the interpreter's built-in
  kernels, ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``), and the ``CompiledModel`` accelerators ``gpu``
  and ``npu``, available where the installed build has them (a GPU accelerator library beside
  LiteRT; a vendor dispatch library) and they compile: no API lists them, so a 1-op probe model is
  compiled for each, and LiteRT's own log line says why one fails. ``nnapi``, ``coreml`` and ``hexagon`` are LiteRT
  delegates of Android and Apple builds only: refused as unavailable here, saying so.

Errors are one line: an unknown runtime or a word outside the vocabulary is an
:class:`UnknownAccelerator` (a ``ValueError``, with close matches); a word in the vocabulary that
this host cannot run is :class:`AcceleratorUnavailable`, naming what is available. Nothing here
imports torch, tensorflow or ``pipeline``.
"""

from __future__ import annotations

import difflib
import functools
import glob
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runtimes.formats import FORMATS

RUNTIMES = tuple(f.runtime for f in FORMATS)  # onnxruntime, openvino, litert
# What a user may call a runtime: its name, its format's name, and the short names the CLI's aliases use.
ALIASES: dict[str, str] = {**{f.name: f.runtime for f in FORMATS}, **{r: r for r in RUNTIMES}, "ort": "onnxruntime", "ov": "openvino"}
# The path every runtime takes when nothing is asked: what export's integer gate and the default check measured.
DEFAULTS = {"onnxruntime": "CPUExecutionProvider", "openvino": "CPU", "litert": "xnnpack"}
WORD = {"onnxruntime": "execution provider", "openvino": "device", "litert": "delegate"}  # what each runtime calls a choice
EXAMPLE = "openvino:AUTO, litert:none, onnxruntime:CPUExecutionProvider"

# ONNX Runtime providers that are in the wheel but run nothing on this host.
REMOTE_PROVIDERS = {"AzureExecutionProvider": "it sends inference requests to an Azure endpoint and runs no local kernel; "
                                              "asked alone, onnxruntime runs the whole model on CPUExecutionProvider under it"}
OPENVINO_DEVICES = ("CPU", "GPU", "NPU", "AUTO")
LITERT_INTERPRETER = ("xnnpack", "none")
LITERT_COMPILED = ("gpu", "npu")  # LiteRT CompiledModel's HardwareAccelerator names, where the build has them
# LiteRT delegates that exist in other builds only: in the vocabulary, never available on this one.
LITERT_ELSEWHERE = {"nnapi": "Android's Neural Networks API delegate is in LiteRT's Android builds only",
                    "coreml": "the Core ML delegate is in LiteRT's iOS/macOS builds only",
                    "hexagon": "the Hexagon DSP delegate is in LiteRT's Android builds only (and deprecated for the NPU accelerator)"}


class UnknownAccelerator(ValueError):
    """A choice that is not ``RUNTIME:CHOICE``, names no runtime, or names something outside the runtime's vocabulary."""


class AcceleratorUnavailable(RuntimeError):
    """A choice in the runtime's vocabulary that this host cannot run; the message names what it can run."""


@dataclass(frozen=True)
class Choice:
    """One runtime's choice, in its own spelling (``openvino``, ``AUTO``)."""

    runtime: str
    name: str

    def __str__(self) -> str:
        return f"{self.runtime}:{self.name}"

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULTS[self.runtime]

    @property
    def label(self) -> str:
        """``openvino device 'AUTO'``: how a message names it."""
        return f"{self.runtime} {WORD[self.runtime]} {self.name!r}"


def _close(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6) or difflib.get_close_matches(
        word.lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if close and close[0] not in choices:  # matched in lower case: give the runtime's spelling
        close = [next(c for c in choices if c.lower() == close[0])]
    return f" (did you mean {close[0]!r}?)" if close else ""


def runtime_of(word: str) -> str:
    """The runtime a user's word names (``ov`` → ``openvino``); :class:`UnknownAccelerator` with the closest name otherwise."""
    key = word.strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    names = ", ".join(f"{r} ({', '.join(a for a, t in ALIASES.items() if t == r and a != r)})" for r in RUNTIMES)
    raise UnknownAccelerator(f"unknown runtime {word!r}{_close(key, list(ALIASES))}; runtimes: {names}")


def split(text: str) -> tuple[str, str]:
    """``RUNTIME:CHOICE`` → (runtime, the choice as written), the runtime resolved; the syntax only (no runtime imported).

    For config parsing: cheap, so a typo in a runtime's name fails when the config is read.
    """
    runtime, sep, name = str(text).strip().partition(":")
    if not sep or not runtime or not name.strip():
        raise UnknownAccelerator(f"accelerator choice {text!r} must be RUNTIME:CHOICE, e.g. {EXAMPLE}")
    return runtime_of(runtime), name.strip()


# ---- vocabulary: what each runtime can name ---------------------------------------------------------------------

def _ort():
    import onnxruntime as ort  # noqa: PLC0415  (a runtime is imported only when asked about)

    return ort


def _litert_dir() -> Path | None:
    try:
        import ai_edge_litert  # noqa: PLC0415
    except ImportError:
        return None
    return Path(ai_edge_litert.__file__).parent


def _has_compiled_model() -> bool:
    try:
        import ai_edge_litert.compiled_model  # noqa: F401, PLC0415
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


@functools.cache
def litert_build() -> dict[str, str]:
    """The CompiledModel accelerators this LiteRT build has, each with the library that provides it."""
    root = _litert_dir()
    if root is None or not _has_compiled_model():
        return {}
    found = {}
    gpu = sorted(glob.glob(str(root / "libLiteRt*Gpu*Accelerator*.so")) + glob.glob(str(root / "libLiteRt*Gpu*Accelerator*.dylib")))
    if gpu:
        found["gpu"] = Path(gpu[0]).name
    npu = sorted(glob.glob(str(root / "vendors" / "*" / "dispatch" / "*LiteRtDispatch*")))
    if npu:
        found["npu"] = ", ".join(f"{Path(p).parent.parent.name} ({Path(p).name})" for p in npu)
    return found


def vocabulary(runtime: str) -> list[str]:
    """Every choice ``runtime`` can name in this installation (some may still be unavailable on this host)."""
    runtime = runtime_of(runtime)
    if runtime == "onnxruntime":
        return list(_ort().get_all_providers())
    if runtime == "openvino":
        return list(OPENVINO_DEVICES)
    return [*LITERT_INTERPRETER, *LITERT_COMPILED, *LITERT_ELSEWHERE]


def _canonical(runtime: str, name: str) -> str | None:
    """``name`` in the runtime's own spelling, or None when it names nothing in its vocabulary."""
    words = vocabulary(runtime)
    if name in words:
        return name
    lower = {w.lower(): w for w in words}
    if runtime == "onnxruntime":
        short = {w.lower().removesuffix("executionprovider"): w for w in words}
        return lower.get(name.lower()) or short.get(name.lower())
    if runtime == "openvino":
        m = re.fullmatch(r"(GPU|NPU|CPU)\.(\d+)", name.upper())
        if m or name.upper() in openvino_devices():  # an indexed device, or one this host has that the list does not name
            return name.upper()
        return lower.get(name.lower())
    return lower.get(name.lower())


def parse(text: str, runtime: str | None = None) -> Choice:
    """A choice checked against its runtime's vocabulary, in the runtime's spelling (``ov:auto`` → ``openvino:AUTO``).

    ``runtime`` given: ``text`` may be the bare choice (``AUTO``), or ``RUNTIME:CHOICE`` for that runtime.
    """
    if runtime is not None and ":" not in str(text):
        rt, name = runtime_of(runtime), str(text).strip()
    else:
        rt, name = split(text)
        if runtime is not None and rt != runtime_of(runtime):
            raise UnknownAccelerator(f"{text!r} is a choice for {rt}, and this artifact runs on {runtime_of(runtime)}")
    canonical = _canonical(rt, name)
    if canonical is None:
        words = vocabulary(rt)
        near = words + ([w.removesuffix("ExecutionProvider").lower() for w in words] if rt == "onnxruntime" else [])
        raise UnknownAccelerator(f"{rt} has no {WORD[rt]} {name!r}{_close(name, near)}; {rt} {WORD[rt]}s: {', '.join(words)}")
    return Choice(rt, canonical)


def default(runtime: str) -> Choice:
    rt = runtime_of(runtime)
    return Choice(rt, DEFAULTS[rt])


# ---- availability on this host ----------------------------------------------------------------------------------

@functools.cache
def openvino_devices() -> tuple[str, ...]:
    """``Core().available_devices``: the devices whose plugin loads and finds hardware (``CPU``, ``GPU.0``...)."""
    from runtimes.openvino_backend import core

    return tuple(core().available_devices)


def _openvino_why(device: str) -> str | None:
    """What OpenVINO says about a device it does not list: its plugin's load error, or that it finds no hardware."""
    from runtimes.openvino_backend import core

    base = device.split(".")[0]
    try:
        found = core().get_property(base, "AVAILABLE_DEVICES")
    except Exception as exc:  # noqa: BLE001  (the plugin's own words are the reason)
        return _last_line(str(exc))
    return f"the {base} plugin loads but finds no {base}" if not found else None


def _last_line(text: str) -> str:
    lines = [ln.strip(" └") for ln in str(text).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else str(text)
    line = re.sub(r"\s*/[^\s\"]*/", " ", line.replace('"', "")).strip()  # library paths shortened to their file name
    return line[:300]


def _probe_model() -> bytes:
    """A 1-op float model (y = x + x, shape [1, 4]) built with LiteRT's own schema: what a probe compiles."""
    import flatbuffers  # noqa: PLC0415  (a dependency of ai-edge-litert)
    from ai_edge_litert import schema_py_generated as s  # noqa: PLC0415

    model = s.ModelT()
    model.version = 3
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.ADD
    code.version = 1
    model.operatorCodes = [code]
    model.buffers = [s.BufferT()]
    tensors = []
    for name in ("x", "y"):
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = [1, 4], s.TensorType.FLOAT32, 0, name
        tensors.append(t)
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 0], [1]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.AddOptions, s.AddOptionsT()
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators, graph.name = tensors, [0], [1], [op], "main"
    model.subgraphs = [graph]
    b = flatbuffers.Builder(256)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@contextmanager
def native_stderr():
    """What native code writes to file descriptor 2 meanwhile (LiteRT logs why an accelerator fails there, not in the
    exception): yields a list that holds the lines once the block ends. The lines are kept off the terminal."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().decode(errors="replace").splitlines()


# LiteRT's log lines that say why an accelerator is missing, most telling first
_LITERT_REASONS = {"gpu": (r"No adapters found", r"Couldn't load [^:]+: [^\n]+", r"Failed to initialize [^:]+"),
                   "npu": (r"NPU accelerator could not be loaded[^\n]*", r"Could not load shared library [^\n]+",
                           r"No compiler plugin found", r"Some ops are not accelerated")}


def litert_reason(name: str, log: list[str], exc: BaseException | None = None) -> str:
    """The telling part of LiteRT's log (or of the exception) for accelerator ``name`` that failed."""
    found = []
    for pattern in _LITERT_REASONS.get(name, ()):
        for line in log + ([str(exc)] if exc else []):
            m = re.search(pattern, line)
            if m:
                found.append(_last_line(m.group(0)))
                break
    return "; ".join(dict.fromkeys(found)) or (_last_line(str(exc)) if exc else "LiteRT gave no reason")


def compile_litert(source: str | bytes, name: str, threads: int = 1):
    """A LiteRT ``CompiledModel`` for ``source`` (a path or a flatbuffer) on accelerator ``name`` alone (``gpu``, ``npu``):
    the whole graph on it or an :class:`AcceleratorUnavailable` saying why, never a silent CPU fallback. ``cpu`` (LiteRT's
    CPU accelerator, XNNPACK under this API) is no user choice (``xnnpack`` is): the tests run this path with it."""
    from ai_edge_litert.compiled_model import CompiledModel  # noqa: PLC0415
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator  # noqa: PLC0415

    accel = {"gpu": HardwareAccelerator.GPU, "npu": HardwareAccelerator.NPU, "cpu": HardwareAccelerator.CPU}[name]
    with native_stderr() as log:
        try:
            model = (CompiledModel.from_buffer(source, hardware_accel=accel) if isinstance(source, bytes)
                     else CompiledModel.from_file(str(source), hardware_accel=accel))
            error = None
        except RuntimeError as exc:
            model, error = None, exc
    if model is None:
        what = "the probe model" if isinstance(source, bytes) else Path(source).name
        raise AcceleratorUnavailable(f"litert delegate {name!r} did not take {what}: {litert_reason(name, log, error)}")
    return model


@functools.cache
def _litert_probe(name: str) -> str | None:
    """None when LiteRT compiles the probe model on accelerator ``name``, else why not."""
    try:
        compile_litert(_probe_model(), name)
    except AcceleratorUnavailable as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def available(runtime: str) -> list[str]:
    """The choices of ``runtime`` this host can run, default first, as the runtime reports them."""
    rt = runtime_of(runtime)
    if rt == "onnxruntime":
        found = [p for p in _ort().get_available_providers() if p not in REMOTE_PROVIDERS]
    elif rt == "openvino":
        devices = openvino_devices()
        found = list(dict.fromkeys([d.split(".")[0] for d in devices] + list(devices)))
        found += ["AUTO"] if devices else []
    else:
        found = list(LITERT_INTERPRETER) + [n for n in litert_build() if _litert_probe(n) is None]
    return sorted(found, key=lambda n: n != DEFAULTS[rt])


def why_unavailable(choice: Choice) -> str | None:
    """None when this host can run ``choice``; else the reason, in the runtime's words where it gives them."""
    rt, name = choice.runtime, choice.name
    if name in available(rt):
        return None
    if rt == "onnxruntime":
        if name in REMOTE_PROVIDERS:
            return f"not a local accelerator: {REMOTE_PROVIDERS[name]}"
        ort = _ort()
        return f"not in this onnxruntime {ort.__version__} build, whose providers are {', '.join(ort.get_available_providers())}"
    if rt == "openvino":
        return _openvino_why(name) if name != "AUTO" else "OpenVINO finds no device for AUTO to choose from"
    if name in LITERT_ELSEWHERE:
        return LITERT_ELSEWHERE[name]
    if name not in litert_build():
        return f"this LiteRT build has no {name.upper()} accelerator library" + ("" if _has_compiled_model() else " (no CompiledModel API)")
    return _litert_probe(name) or "LiteRT gave no reason"


def unavailable_message(choice: Choice, why: str | None = None) -> str:
    why = why if why is not None else why_unavailable(choice)
    return (f"{choice.label} is not available on this host" + (f" ({why})" if why else "")
            + f"; available: {', '.join(available(choice.runtime))}")


def require(choice: Choice | str, runtime: str | None = None) -> Choice:
    """``choice`` parsed and available here; :class:`UnknownAccelerator` or :class:`AcceleratorUnavailable` (one line) otherwise."""
    c = choice if isinstance(choice, Choice) else parse(choice, runtime)
    why = why_unavailable(c)
    if why is not None:
        raise AcceleratorUnavailable(unavailable_message(c, why))
    return c


def describe() -> dict[str, dict[str, object]]:
    """Per runtime: its default, its vocabulary and what this host has (``pipeline`` prints it, the docs quote it)."""
    out = {}
    for rt in RUNTIMES:
        try:
            out[rt] = {"default": DEFAULTS[rt], "word": WORD[rt], "vocabulary": vocabulary(rt), "available": available(rt)}
        except ImportError as exc:  # the runtime is not installed here
            out[rt] = {"default": DEFAULTS[rt], "word": WORD[rt], "error": f"not installed ({exc.name})"}
    return out


def coverage(path: str | Path, sample, threads: int = 1, accelerator: Choice | str | None = None) -> dict:
    """The integer coverage of the artifact at ``path`` as its runtime executes it with ``accelerator`` (default: its
    default path), as a dict (``IntegerCoverage.to_dict()`` plus what the reader could see of the accelerator)."""
    from runtimes.coverage import accelerator_view, read_coverage
    from runtimes.formats import format_of

    runtime = format_of(path).runtime
    choice = default(runtime) if accelerator is None else require(accelerator, runtime)
    out = read_coverage(path, sample, threads, accelerator=choice.name).to_dict()
    out["accelerator"] = str(choice)
    out.update(accelerator_view(path, sample, threads, choice.name))
    return out


def for_artifact(path: str | Path, choices: list[str] | None) -> Choice | None:
    """The one choice among ``choices`` (``RUNTIME:CHOICE`` each) for the runtime of the artifact at ``path``, checked
    available here; None when none names that runtime (its default path). The bench agent's rule: one artifact is
    measured on one choice, so two for its runtime are refused (bench them in two calls)."""
    from runtimes.formats import format_of

    if not choices:
        return None
    runtime = format_of(path).runtime
    mine = [c for c in (parse(t) for t in choices or []) if c.runtime == runtime]
    if len(mine) > 1:
        raise UnknownAccelerator(f"{', '.join(map(str, mine))}: one {runtime} choice per bench ({Path(path).name} is measured on "
                                 "one); bench each in its own call")
    return require(mine[0]) if mine else None


__all__ = ["ALIASES", "AcceleratorUnavailable", "Choice", "DEFAULTS", "RUNTIMES", "UnknownAccelerator", "available", "coverage",
           "default", "describe", "for_artifact", "parse", "require", "runtime_of", "split", "vocabulary", "why_unavailable"]
