"""Before any stage runs: does the FP model trace, and does every op in it have a route on each requested target?

:func:`check_routes` answers in well under a second and converts nothing:

* ``torch.fx.symbolic_trace`` of the FP model: the QAT surgery rewrites that graph, so a model it cannot trace
  cannot be quantized at all (fatal for every target);
* one TorchScript trace of the FP model at batch 1, made with the ONNX exporter's own tracer, gives the op
  names (``aten::fft_rfft``) with the user's source line of each. The ONNX exporter (``dynamo=False``) is that
  tracer plus one symbolic function per op and opset, so its route table is the exporter's own registry
  (:func:`exporters.onnx.export.unsupported_ops`; on 55 probed ops it agreed with real exports on all but a
  symbolic that fails on a dynamic shape, which the export stage still reports in one line); OpenVINO converts
  that ONNX file, so it inherits the ONNX routes (:func:`exporters.openvino.export.unsupported_ops`); litert-torch
  has no table that is cheap to load (importing it takes seconds), so the TFLite routes are the ops seen to fail
  with the pinned converter (:data:`exporters.tflite.export.NO_ROUTE`);
* ops whose multiply-accumulates the neutral lowering (:mod:`exporters.spec`) cannot make integer: only
  ``nn.Conv2d`` and ``nn.Linear`` become :class:`~exporters.spec.IntConv2d` / :class:`~exporters.spec.IntLinear`,
  so a ``ConvTranspose2d``, an ``LSTM`` or a ``torch.matmul`` runs in float on every target. That is a warning
  (``fatal=False``), not an error: the integer gate measures the share and ``export.min_integer_coverage`` decides.

A format registered from outside this repository can give its own route table as a ``unsupported_ops(ops)``
method on its :class:`~exporters.format.Format` record; a format without one is not checked here (its converter
still fails with an :class:`~exporters.errors.ExportError` at the export stage).
"""

from __future__ import annotations

import contextlib
import io
import operator
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn

from exporters.errors import ExportError
from exporters.spec import IOContract

ALL_TARGETS = "every target"

# Modules and functions with multiply-accumulates that the neutral lowering leaves in float (see module docstring).
_FLOAT_MAC_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.RNNBase, nn.RNNCellBase,
    nn.MultiheadAttention, nn.Bilinear, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Transformer,
)
_FLOAT_MAC_FUNCTIONS: dict[Callable, str] = {
    F.conv1d: "F.conv1d", F.conv2d: "F.conv2d", F.conv3d: "F.conv3d", F.conv_transpose1d: "F.conv_transpose1d",
    F.conv_transpose2d: "F.conv_transpose2d", F.conv_transpose3d: "F.conv_transpose3d", F.linear: "F.linear",
    F.bilinear: "F.bilinear", F.scaled_dot_product_attention: "F.scaled_dot_product_attention",
    torch.matmul: "torch.matmul", torch.mm: "torch.mm", torch.bmm: "torch.bmm", torch.einsum: "torch.einsum",
    torch.addmm: "torch.addmm", torch.baddbmm: "torch.baddbmm", operator.matmul: "@",
}
_FLOAT_MAC_METHODS = {"matmul", "mm", "bmm", "__matmul__"}


@dataclass(frozen=True)
class Problem:
    """One op that stops (``fatal``) or weakens (not fatal) an export, with the sentence that says what to do."""

    target: str  # the format name, or ALL_TARGETS
    op: str  # aten::fft_rfft, ConvTranspose2d, torch.fx, ...
    where: str  # the user's source line, or the module path in the model
    message: str  # one line, what happened and what to do
    fatal: bool = True

    def __str__(self) -> str:
        return self.message


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _example(contract_or_input_shape: IOContract | tuple[int, ...] | list[int]) -> torch.Tensor:
    if isinstance(contract_or_input_shape, IOContract):
        return contract_or_input_shape.example()
    shape = tuple(int(d) for d in contract_or_input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ExportError(f"an input shape is C,H,W with every size >= 1, got {shape}")
    return torch.rand(1, *shape)


def _fx_graph(model: nn.Module) -> tuple[fx.GraphModule | None, Problem | None]:
    try:
        return fx.symbolic_trace(model), None
    except Exception as exc:  # noqa: BLE001  (FX raises many types)
        return None, Problem(ALL_TARGETS, "torch.fx", type(model).__name__,
                             f"the model cannot be traced by torch.fx ({_first_line(exc)}), and the QAT stage rewrites the traced "
                             "graph: remove data-dependent control flow (if/for on tensor values) from forward()")


def _float_macs(gm: fx.GraphModule, targets: list[str]) -> list[Problem]:
    """One warning per kind of op whose MACs stay float, naming where it is in the model."""
    seen: dict[str, list[str]] = {}
    for node in gm.graph.nodes:
        name = None
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, _FLOAT_MAC_MODULES):
                name = type(mod).__name__
        elif node.op == "call_function":
            name = _FLOAT_MAC_FUNCTIONS.get(node.target)
        elif node.op == "call_method" and node.target in _FLOAT_MAC_METHODS:
            name = f"Tensor.{node.target}"
        if name is not None:
            seen.setdefault(name, []).append(str(node.target) if node.op == "call_module" else node.name)
    on = ", ".join(targets)
    return [Problem(ALL_TARGETS, name, ", ".join(where),
                    f"{name} ({', '.join(where[:3])}{', ...' if len(where) > 3 else ''}) is not quantized: only Conv2d and Linear layers "
                    f"get integer weights, so its multiply-accumulates run in float on {on} and the integer gate fails unless "
                    "export.min_integer_coverage is lowered below 1 (the report shows the share)", fatal=False)
            for name, where in seen.items()]


def _trace_graph(model: nn.Module, example: torch.Tensor) -> torch._C.Graph:
    """The TorchScript graph of one traced forward, made the way the ONNX exporter makes it (no ScriptModules built)."""
    trace = getattr(torch.jit, "_get_trace_graph", None)  # private, but the TorchScript ONNX exporter's own tracer
    if trace is not None:
        graph, _ = trace(model, (example,))
        with contextlib.suppress(AttributeError, RuntimeError):
            torch._C._jit_pass_dce(graph)  # an op whose result is never used is not exported either
        return graph
    return torch.jit.trace(model, (example,), check_trace=False, strict=False).inlined_graph  # pragma: no cover


def _traced_ops(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, str], Problem | None]:
    """``{op kind: the user's source line that first calls it}`` of the trace the ONNX exporter also makes."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # batch 1: threads only add start-up cost, and stall on a busy machine
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            graph = _trace_graph(model, example)
    except Exception as exc:  # noqa: BLE001  (the tracer raises many types)
        return {}, Problem("onnx", "torch.jit", type(model).__name__,
                           f"the model cannot be traced by torch.jit ({_first_line(exc)}), and the ONNX exporter traces it the same way")
    finally:
        torch.set_num_threads(threads)
    ops: dict[str, str] = {}
    for node in graph.nodes():
        kind = node.kind()
        if not kind.startswith(("prim::", "onnx::")) and kind not in ops:
            ops[kind] = _source(node)
    return ops, None


_TORCH_DIR = Path(torch.__file__).resolve().parent


def _source(node: torch._C.Node) -> str:
    """``file.py:line`` of the innermost frame outside torch that called the op (the user's forward), or ''."""
    try:
        stack = node.sourceRange()
    except RuntimeError:  # pragma: no cover - no source recorded
        return ""
    for line in (stack or "").splitlines():
        match = _FRAME.match(line.strip())
        if match and not Path(match.group(1)).resolve().is_relative_to(_TORCH_DIR):
            return f"{Path(match.group(1)).name}:{match.group(2)}"
    return ""


_FRAME = re.compile(r"(.+)\((\d+)\): \S+$")


def _route_table(target: str) -> Callable[[dict[str, str]], dict[str, str]] | None:
    """The target's ``unsupported_ops(ops) -> {op: reason}``: built-in formats here, others on their Format record."""
    if target == "onnx":
        from exporters.onnx.export import unsupported_ops
    elif target == "openvino":
        from exporters.openvino.export import unsupported_ops
    elif target == "tflite":
        from exporters.tflite.export import unsupported_ops
    else:
        from exporters import registry

        unsupported_ops = getattr(registry.get(target), "unsupported_ops", None)
    return unsupported_ops


def check_routes(model: nn.Module, contract_or_input_shape: IOContract | tuple[int, ...] | list[int],
                 targets: Iterable[str]) -> list[Problem]:
    """Every problem the FP model will meet on ``targets`` (format names or aliases), found without converting.

    Returns fatal problems (an op a target's converter cannot handle, an untraceable forward) and warnings
    (``fatal=False``: ops whose MACs stay float); an empty list means every op has a route everywhere.
    :func:`raise_for` turns the fatal ones into one :class:`ExportError`.
    """
    from exporters import registry

    targets = registry.resolve(list(targets))
    example = _example(contract_or_input_shape)
    training = model.training
    model.eval()  # what every exporter sees (BN statistics, no dropout); the caller's mode is restored
    try:
        return _check(model, example, targets)
    finally:
        model.train(training)


def _check(model: nn.Module, example: torch.Tensor, targets: list[str]) -> list[Problem]:
    gm, problem = _fx_graph(model)
    if problem is not None:
        return [problem]
    problems = _float_macs(gm, targets)
    ops, problem = _traced_ops(model, example)
    if problem is not None:  # the ONNX exporter (and so OpenVINO) traces the model the same way
        return problems + [Problem(t, problem.op, problem.where, problem.message) for t in targets if t in ("onnx", "openvino")]
    for target in targets:
        table = _route_table(target)
        if table is None:
            continue
        for op, reason in table(ops).items():
            where = ops.get(op, "")
            problems.append(Problem(target, op, where, f"{op}{f' ({where})' if where else ''} {reason}"))
    return problems


def raise_for(problems: Iterable[Problem]) -> None:
    """One :class:`ExportError` listing every fatal problem once; warnings (``fatal=False``) pass.

    Targets that share a reason (onnx and openvino both fail on an op torch.onnx cannot export) give one entry.
    """
    messages = list(dict.fromkeys(p.message for p in problems if p.fatal))
    if messages:
        raise ExportError("; ".join(messages))


__all__ = ["ALL_TARGETS", "Problem", "check_routes", "raise_for"]
