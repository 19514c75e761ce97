"""Model surgery: turn an FP model into a fake-quant model under a named profile.

``deploy`` builds exactly what an integer runtime will execute: BN folded into
the conv, weights per-output-channel symmetric, and an activation quantizer at
the input and output of every conv, linear, residual add, concat and average
pool (after a directly following ReLU/ReLU6, which the runtimes fuse).

``paper`` reproduces the GDFQ protocol of docs/methods.md §1 used by the published
tables: BN kept, asymmetric per-channel min/max weights, activations quantized
only after ReLU/ReLU6 with EMA ranges and a plain STE. It is for comparing with
papers, not for export.

Per-layer choices (``qat.layer_bits``, ``qat.float_layers``) are resolved once against
the traced model's conv/linear layers (:func:`pipeline.quant.scheme.resolve_layers`):

* a layer's weight bits are its own (and its grid: 8-bit weights take the overflow-safe
  ±63 where the run has it, whatever the scheme's width);
* its activation bits go to the activation quantizer(s) feeding its input; a quantizer
  read by several ops takes the highest bits asked of it (another layer's, or the
  scheme's for an add, concat or pool, 8 for the model output);
* a float layer stays ``nn.Conv2d`` / ``nn.Linear`` (BN still folded in ``deploy``): no
  weight quantizer, no quantizer of its own at its input, and its output is quantized
  where an integer op reads it (or it is the model output), so an artifact has Q/DQ
  around the float island and nothing else in float.

Works on anything ``torch.fx.symbolic_trace`` can trace (every model in the zoo,
and most CNNs written as plain modules).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import fx, nn

from pipeline.errors import ModelLoadError
from pipeline.quant.modules import QConv2d, QLinear, fold_bn
from pipeline.quant.quantizers import ActQuantizer
from pipeline.quant.scheme import BitScheme, LayerPlan, bits_name
from pipeline.quant.settings import Profile

PROFILES: tuple[str, ...] = get_args(Profile)  # ("deploy", "paper"): the qat.profile choices

_ACT_MODULES = (nn.ReLU, nn.ReLU6)
_ACT_FUNCS = {F.relu, torch.relu, F.relu6}
_ADD_FUNCS = {operator.add, torch.add, operator.iadd}
_CAT_FUNCS = {torch.cat, torch.concat}
_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
_POOL_FUNCS = {F.adaptive_avg_pool2d, F.avg_pool2d}
# Ops that keep a quantized tensor on its grid: walking back through them finds the tensor's quantizer.
_PASS_MODULES = (nn.MaxPool2d, nn.Dropout, nn.Identity, nn.Flatten, nn.ReLU)
_PASS_FUNCS = {torch.flatten, F.max_pool2d, F.dropout, torch.reshape}
_PASS_METHODS = {"flatten", "view", "reshape", "contiguous", "relu"}


@dataclass(frozen=True)
class QuantProfile:
    """What the surgery does; two named instances, ``deploy`` and ``paper``."""

    name: str
    fold_bn: bool
    symmetric_weights: bool
    act_placement: str  # "every-input" | "after-relu"
    act_mode: str  # "learned" | "ema"
    mask_grad: bool

    @classmethod
    def named(cls, name: str, act_mode: str | None = None) -> "QuantProfile":
        """The profile ``name``; ``act_mode`` (``qat.act_range``) None or ``auto`` keeps the profile's own ranges: learned
        (LSQ+) for deploy, EMA of min/max for paper, as the GDFQ lineage does (docs/methods.md §1)."""
        mode = None if act_mode in (None, "auto") else act_mode
        if name == "deploy":
            return cls("deploy", True, True, "every-input", mode or "learned", True)
        if name == "paper":
            return cls("paper", False, False, "after-relu", mode or "ema", False)
        raise ValueError(f"unknown quantization profile {name!r}; choose one of {', '.join(PROFILES)}")


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _is(gm: fx.GraphModule, node: fx.Node, modules: tuple, funcs: set, methods: set = frozenset()) -> bool:
    if node.op == "call_module":
        return isinstance(_module(gm, node), modules)
    if node.op == "call_function":
        return node.target in funcs
    return node.op == "call_method" and node.target in methods


def _set_module(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, new)


def trace(model: nn.Module) -> fx.GraphModule:
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False  # quantizers and STE need the pre-activation tensors intact
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001  (FX raises many types)
        raise ModelLoadError(
            f"model cannot be traced by torch.fx ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "remove data-dependent control flow from forward()"
        ) from None


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d with no other user. Returns the count."""
    folded = 0
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        src = node.args[0]
        conv = _module(gm, src) if isinstance(src, fx.Node) else None
        if not isinstance(conv, nn.Conv2d) or len(src.users) != 1:
            continue
        _set_module(gm, src.target, fold_bn(conv, bn))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return folded


class _Inserter:
    def __init__(self, gm: fx.GraphModule, profile: QuantProfile) -> None:
        self.gm, self.profile, self.count = gm, profile, 0
        self.quantizer_nodes: set[fx.Node] = set()

    def after(self, node: fx.Node, bits: int) -> fx.Node:
        name = f"aq{self.count}"
        self.count += 1
        self.gm.add_submodule(name, ActQuantizer(bits, self.profile.act_mode, mask_grad=self.profile.mask_grad))
        with self.gm.graph.inserting_after(node):
            q = self.gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda user: user is not q)
        self.quantizer_nodes.add(q)
        return q

    def reuse_before(self, consumer: fx.Node, value: fx.Node, quantizer: fx.Node) -> None:
        """Call an upstream quantizer again right before ``consumer`` (same grid: exact), so exporters see DQ→op."""
        with self.gm.graph.inserting_before(consumer):
            q = self.gm.graph.call_module(quantizer.target, (value,))
        consumer.replace_input_with(value, q)
        self.quantizer_nodes.add(q)

    def upstream_quantizer(self, value: fx.Node) -> fx.Node | None:
        cur = value
        while True:
            if cur in self.quantizer_nodes:
                return cur
            if cur.op in ("call_module", "call_function", "call_method") and _is(self.gm, cur, _PASS_MODULES, _PASS_FUNCS, _PASS_METHODS):
                nxt = cur.args[0] if cur.args else None
                if isinstance(nxt, fx.Node):
                    cur = nxt
                    continue
            return None

    def ensure_input(self, consumer: fx.Node, value: fx.Node, bits: int) -> None:
        if value in self.quantizer_nodes:
            return
        up = self.upstream_quantizer(value)
        if up is not None:
            self.reuse_before(consumer, value, up)
        else:
            # Every consumer of ``value`` now reads the quantized tensor, as an integer runtime would.
            self.after(value, bits)


def _anchor_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    mod = _module(gm, node)
    if isinstance(mod, (QConv2d, QLinear)):
        return "layer"
    if node.op == "call_function" and node.target in _ADD_FUNCS:
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        return "add" if len(tensors) == 2 else None
    if node.op == "call_method" and node.target == "add":
        return "add"
    if node.op == "call_function" and node.target in _CAT_FUNCS:
        return "cat"
    if _is(gm, node, _POOL_MODULES, _POOL_FUNCS):
        return "pool"
    return None


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    if node.op == "call_function" and node.target in _CAT_FUNCS:
        seq = node.args[0] if node.args else node.kwargs.get("tensors", [])
        return [a for a in seq if isinstance(a, fx.Node)]
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCS) or (node.op == "call_method" and node.target == "add")
    return [a for a in node.args[: 2 if is_add else 1] if isinstance(a, fx.Node)]


def layer_names(gm: fx.GraphModule) -> list[str]:
    """The conv/linear layers of a traced model, network order: the names ``qat.layer_bits`` patterns match."""
    names: list[str] = []
    for n in gm.graph.nodes:
        if isinstance(_module(gm, n), (nn.Conv2d, nn.Linear)) and n.target not in names:
            names.append(n.target)
    return names


def _swap_layers(gm: fx.GraphModule, plan: LayerPlan, scheme: BitScheme, profile: QuantProfile) -> None:
    """Each planned layer becomes a QConv2d / QLinear with its own weight bits; float layers stay as they are."""
    for name in plan.bits:
        mod = gm.get_submodule(name)
        bits = plan.weight_bits(name)
        cls = QConv2d if isinstance(mod, nn.Conv2d) else QLinear
        qmax = scheme.weight_qmax(bits) if profile.symmetric_weights else None
        _set_module(gm, name, cls(mod, bits, profile.symmetric_weights, learn_scale=profile.symmetric_weights, qmax=qmax))


def _readers(gm: fx.GraphModule, q: fx.Node, quantizer_nodes: set[fx.Node]) -> set[fx.Node]:
    """The ops that read quantizer call ``q``'s output, looking through ops that keep it on its grid and repeated calls."""
    out: set[fx.Node] = set()
    todo, seen = list(q.users), set()
    while todo:
        user = todo.pop()
        if user in seen:
            continue
        seen.add(user)
        if user in quantizer_nodes or (user.op != "output" and _is(gm, user, _PASS_MODULES, _PASS_FUNCS, _PASS_METHODS)):
            todo += list(user.users)
        else:
            out.add(user)
    return out


def _apply_act_bits(gm: fx.GraphModule, plan: LayerPlan, quantizer_nodes: set[fx.Node]) -> None:
    """Give every activation quantizer the highest bits its readers ask: a quantized layer its planned activation bits,
    any other reader (add, concat, pool, the model output, a float layer) the bits the quantizer was placed with."""
    asks: dict[str, list[int]] = {}
    for q in quantizer_nodes:
        placed = gm.get_submodule(q.target).bits
        for r in _readers(gm, q, quantizer_nodes):
            layer = r.target if r.op == "call_module" and r.target in plan.bits else None
            asks.setdefault(q.target, []).append(plan.act_bits(layer) if layer else placed)
    for target, bits in asks.items():
        gm.get_submodule(target).bits = max(bits)


def _effective_bits(gm: fx.GraphModule, plan: LayerPlan, quantizer_nodes: set[fx.Node]) -> dict[str, str]:
    """Each quantized layer's weight bits and the bits of the quantizer(s) feeding it, as the model now computes."""
    feeding: dict[str, int] = {}
    for q in quantizer_nodes:
        for r in _readers(gm, q, quantizer_nodes):
            if r.op == "call_module" and r.target in plan.bits:
                feeding[r.target] = max(feeding.get(r.target, 0), gm.get_submodule(q.target).bits)
    return {n: bits_name(plan.weight_bits(n), feeding.get(n, plan.act_bits(n))) for n in plan.layers if n in plan.bits}


def quantize_model(model: nn.Module, scheme: BitScheme, profile: str | QuantProfile = "deploy") -> fx.GraphModule:
    """Return a fake-quant copy of ``model`` (a GraphModule); the original is untouched.

    Ranges are not initialised here: run :func:`pipeline.quant.calibrate.calibrate` on synthetic data.
    ``scheme``'s layer patterns are resolved against the model's layers here: a pattern that matches no layer, or a
    layer both float and given bits, is a :class:`~pipeline.errors.ConfigError` (the preflight finds it first).
    """
    prof = profile if isinstance(profile, QuantProfile) else QuantProfile.named(profile)
    gm = trace(model)
    folded = fold_batchnorm(gm) if prof.fold_bn else 0
    layers = layer_names(gm)
    if not layers:
        raise ModelLoadError("model has no Conv2d or Linear layer to quantize")
    plan = scheme.resolve(layers)
    _swap_layers(gm, plan, scheme, prof)
    floats = set(plan.float_layers)
    ins = _Inserter(gm, prof)
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    if prof.act_placement == "after-relu":
        for node in list(gm.graph.nodes):
            if _is(gm, node, _ACT_MODULES, _ACT_FUNCS):
                ins.after(node, scheme.a_bits)
    else:
        first_layer = layers[0]
        for node in list(gm.graph.nodes):
            kind = _anchor_kind(gm, node)
            island = kind is None and node.op == "call_module" and node.target in floats
            if kind is None and not island:
                continue
            is_first = node.op == "call_module" and node.target == first_layer
            if not island:  # a float layer reads whatever it is given: a quantized tensor after an integer op, else float
                for value in _tensor_inputs(node):
                    ins.ensure_input(node, value, scheme.act_bits(is_first_input=is_first))
            out = node
            users = list(out.users)
            if len(users) == 1 and _is(gm, users[0], _ACT_MODULES, _ACT_FUNCS):
                out = users[0]
            if any(u in ins.quantizer_nodes for u in out.users):
                continue
            feeds_output = output_node in out.users
            if island and not feeds_output:
                continue  # the integer op that reads a float layer's output quantizes it (ensure_input)
            # Model outputs (logits) are always quantized at 8 bits: what an int8 artifact hands back.
            ins.after(out, 8 if feeds_output else scheme.a_bits)
    _apply_act_bits(gm, plan, ins.quantizer_nodes)
    gm.graph.lint()
    gm.recompile()
    gm.zsq_meta = {"profile": prof.name, "bits": scheme.name, "first_last_bits": scheme.first_last_bits,
                   "overflow_safe": scheme.overflow_safe and prof.symmetric_weights,
                   "bn_folded": folded, "layers": layers, "act_quantizers": ins.count,
                   "layer_bits": _effective_bits(gm, plan, ins.quantizer_nodes), "float_layers": list(plan.float_layers),
                   "layer_patterns": {"layer_bits": dict(scheme.layer_bits), "float_layers": list(scheme.float_layers)}}
    return gm


def quantizers(model: nn.Module) -> list[ActQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActQuantizer)]


def quant_layers(model: nn.Module) -> list[QConv2d | QLinear]:
    return [m for m in model.modules() if isinstance(m, (QConv2d, QLinear))]
