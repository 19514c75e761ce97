"""LiteRT (TFLite interpreter, XNNPACK applied by default) for ``.tflite`` artifacts.

The interpreter comes from ``ai_edge_litert`` (what this project pins), else the
legacy ``tflite_runtime`` wheel, else ``tensorflow.lite``; the first two never
import TensorFlow, and this module imports none of them until a model is loaded.

Edges are read from the model's ``serving_default`` signature, so the specs carry
the exporter's names (``input`` / ``logits``), not the converter's tensor names.
An integer edge reports its scale and zero point; ``runtimes.run_single``
quantizes/dequantizes there. The exporter writes NHWC inputs (the layout LiteRT
kernels use, no TRANSPOSE in the graph); the spec says ``NHWC`` and
``runtimes.run_single`` transposes NCHW images on the way in.

The batch dimension is fixed at 1 as converted; ``run`` resizes the input for
other batch sizes (XNNPACK re-plans once per new shape).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from runtimes.base import RuntimeUnavailable, TensorSpec

# interpreter modules in order of preference: (module, attribute holding the Interpreter class)
_INTERPRETERS = (("ai_edge_litert.interpreter", "Interpreter"), ("tflite_runtime.interpreter", "Interpreter"),
                 ("tensorflow.lite", "Interpreter"))


def _interpreter_module():
    for name, _ in _INTERPRETERS:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise RuntimeUnavailable("no TFLite interpreter installed: pip install ai-edge-litert")


def interpreter_class():
    return _interpreter_module().Interpreter


def no_delegate_kwargs() -> dict:
    """Interpreter options that keep the model's own op list (no default XNNPACK delegate), for inspection."""
    mod = _interpreter_module()
    resolver = getattr(mod, "OpResolverType", None) or getattr(getattr(mod, "experimental", None), "OpResolverType", None)
    return {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if resolver else {}


def version() -> str:
    for name in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        return f"{name} {getattr(mod, '__version__', '?')}"
    return "unavailable"


def edge_spec(name: str, detail: dict, layout: str) -> TensorSpec:
    """The spec of one edge tensor as the interpreter reports it; scale and zero point only where the edge is integer."""
    dtype = np.dtype(detail["dtype"]).name
    scale, zp = detail.get("quantization", (0.0, 0))
    integer = np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale > 0
    return TensorSpec(name, tuple(int(d) for d in detail["shape"]), dtype, layout=layout,
                      scale=float(scale) if integer else None, zero_point=int(zp) if integer else None)


class LiteRTPredictor:
    runtime = "litert"

    def __init__(self, path: Path, threads: int = 1, use_xnnpack: bool = True, accelerator: str | None = None) -> None:
        mod = _interpreter_module()
        self.path = Path(path)
        self.threads = threads
        self.use_xnnpack = use_xnnpack if accelerator is None else accelerator != "none"  # xnnpack | none (runtimes/accelerators.py)
        self.accelerator = f"litert:{'xnnpack' if self.use_xnnpack else 'none'}"
        kwargs = {} if self.use_xnnpack else no_delegate_kwargs()
        self.interpreter = mod.Interpreter(model_path=str(self.path), num_threads=threads, **kwargs)
        self.interpreter.allocate_tensors()
        # what executes: the delegate nodes the interpreter holds now (XNNPACK may take nothing), or built-in kernels
        ops = getattr(self.interpreter, "_get_ops_details", None)
        if not self.use_xnnpack:
            self.executes_on = ["built-in kernels"]
        elif ops is None:  # an older interpreter that does not list its nodes
            self.executes_on = ["XNNPACK delegate (partitions not reported)"]
        else:
            n = sum(o["op_name"] == "DELEGATE" for o in ops())
            self.executes_on = [f"XNNPACK delegate ({n} partition{'s' if n > 1 else ''})" if n else "built-in kernels"]
        ins, outs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        sig = self._signature()
        by_index = {d["index"]: d for d in ins + outs}
        if sig:  # names from the signature, tensors by index
            self._in = [(n, by_index[i]) for n, i in sig["inputs"].items()]
            self._out = [(n, by_index[i]) for n, i in sig["outputs"].items()]
        else:
            self._in = [(d["name"], d) for d in ins]
            self._out = [(d["name"], d) for d in outs]
        self._shapes = {d["index"]: tuple(int(v) for v in d["shape"]) for _, d in self._in}
        self.inputs = [edge_spec(n, d, "NHWC" if len(d["shape"]) == 4 else "NC") for n, d in self._in]
        self.outputs = [edge_spec(n, d, "NC" if len(d["shape"]) == 2 else "NHWC") for n, d in self._out]
        self.version = version()

    def kernels(self) -> dict[str, object]:
        """LiteRT's int8 kernels: the XNNPACK delegate (default) or the interpreter's built-in ones."""
        return {"reported_by": "interpreter options", "delegate": "XNNPACK" if self.use_xnnpack else "none (built-in kernels)",
                "accelerator": self.accelerator, "executes_on": self.executes_on}

    def _signature(self) -> dict | None:
        get = getattr(self.interpreter, "_get_full_signature_list", None)
        sigs = get() if get else {}
        if not sigs:
            return None
        return sigs.get("serving_default") or next(iter(sigs.values()))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self.interpreter
        for name, detail in self._in:
            if name not in feeds:
                raise KeyError(f"missing input {name!r}; {self.path.name} takes {', '.join(n for n, _ in self._in)}")
            x = np.ascontiguousarray(feeds[name], dtype=detail["dtype"])
            if x.shape != self._shapes[detail["index"]]:  # another batch size: re-plan once for it
                it.resize_tensor_input(detail["index"], list(x.shape))
                it.allocate_tensors()
                self._shapes[detail["index"]] = x.shape
            it.set_tensor(detail["index"], x)
        it.invoke()
        return {name: it.get_tensor(detail["index"]).copy() for name, detail in self._out}


def load(path: Path, threads: int = 1, **options: object) -> LiteRTPredictor:
    if options.get("accelerator") in ("gpu", "npu"):  # LiteRT's CompiledModel accelerators (runtimes/litert_compiled.py)
        from runtimes.litert_compiled import CompiledPredictor

        return CompiledPredictor(path, threads=threads, accelerator=str(options["accelerator"]))  # type: ignore[return-value]
    return LiteRTPredictor(path, threads=threads, **options)  # type: ignore[arg-type]
