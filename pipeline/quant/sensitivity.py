"""Isolated per-layer quantization sensitivity: which layers lose the most when quantized alone.

The accumulated SQNR line of the check stage (:func:`pipeline.stages.check.layer_sqnr`) says where the error
*is* along the network, not which layer *causes* it: every layer's figure carries the error of all the layers
before it. Here each layer is quantized on its own (AIMET's QuantAnalyzer per-layer analysis, the spirit of
NNCF's HAWQ ranking), everything else in float, and the effect is read on the network's output:

* the **weights** row quantizes only that layer's weights (its :class:`~pipeline.quant.quantizers.WeightQuantizer`);
* the **activations** row quantizes only the activation quantizer(s) that feed the layer's input. The
  quantizer is a property of the tensor, so where that tensor also feeds another op (the residual add beside a
  block's first conv) it is quantized there too, as it is in the integer artifact. The model's 8-bit output
  quantizer stays off in every row.

Each row's effect is the mean KL(FP ‖ quantized) of the softmax outputs and the top-1 agreement with the FP
model (:func:`devices.reference.metrics`, the project's one comparison); a layer's score is the larger of its
two KLs, rank 1 the most sensitive. The fake-quant model is built and calibrated the way the QAT stage does
before training (:func:`pipeline.quant.calibrate.calibrate` on synthetic images), so the table reads "what each
layer costs as QAT starts", from synthetic data only.

Isolated sensitivities do not add up (two layers quantized together can cost more or less than the sum), and a
KL is not an accuracy: the table ranks layers, it does not predict what a run will reach (docs/sensitivity.md).
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import fx, nn

from devices.reference import metrics
from pipeline.quant.modules import QConv2d, QLinear
from pipeline.quant.quantizers import ActQuantizer

SUGGEST_TOP = 3
"""How many of the most sensitive layers the check suggests keeping at 8 bits: the issue's example ("keep the 3 most
sensitive at 8 bits"), a small change to a run; every layer stays listed, so a reader can keep more by hand."""
SUGGEST_BITS = "w8a8"  # what a suggested layer is kept at (`--layer-bits 'LAYER=8'`: wNaN)
MAX_IMAGES = 128  # held-out images per row: 2 × layers forward passes of at most this many images
CALIB_BATCH = 64  # the batch the QAT stage calibrates with (pipeline.synthesis.base.Strategy.calibrate)


@dataclass(frozen=True)
class Effect:
    """What quantizing one part of one layer does to the network's output, against the FP model."""

    kl: float  # mean KL(FP ‖ quantized) of the softmax outputs
    top1_agreement: float


@dataclass(frozen=True)
class LayerSensitivity:
    """One row of the table; ``weights`` is None for a layer kept in float, ``activations`` None when no activation
    quantizer feeds the layer's input directly (then nothing of its own input is quantized to measure)."""

    name: str
    index: int  # position in network order (the SQNR rows' index)
    kind: str  # "conv" | "linear"
    macs: int  # multiply-accumulates for one image
    weight_bits: int | None  # None: float layer
    act_bits: int | None  # bits of the activation grid feeding its input; None: none feeds it
    weights: Effect | None
    activations: Effect | None
    score: float  # the larger KL of the two rows
    rank: int  # 1 = most sensitive

    @property
    def is_float(self) -> bool:
        return self.weight_bits is None

    @property
    def at_8_bits(self) -> bool:
        """Already what a suggestion would make it (8-bit weights and input), or float: nothing to raise."""
        return self.is_float or (self.weight_bits >= 8 and (self.act_bits is None or self.act_bits >= 8))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["float"] = self.is_float
        return d


def layer_names(model: fx.GraphModule) -> list[str]:
    """The conv/linear layers in network order: the quantized model's ``zsq_meta["layers"]`` when it has them (the
    shared layer names of the check and ``qat.layer_bits``), else its graph order."""
    named = dict(model.named_modules())
    meta = getattr(model, "zsq_meta", {}).get("layers")
    if meta:
        return [n for n in meta if n in named]
    seen: list[str] = []
    for node in model.graph.nodes:
        layer = node.op == "call_module" and isinstance(named[node.target], (QConv2d, QLinear, nn.Conv2d, nn.Linear))
        if layer and node.target not in seen:
            seen.append(node.target)
    return seen


def input_quantizers(model: fx.GraphModule, layer: str) -> list[str]:
    """Names of the activation quantizers whose output is the layer's input (every call site of the layer).

    The deploy profile puts a quantizer call right before every conv/linear (:mod:`pipeline.quant.prepare` calls an
    upstream quantizer again rather than leave a pass-through op between), so the input node is the quantizer."""
    named = dict(model.named_modules())
    out: list[str] = []
    for node in model.graph.nodes:
        if node.op == "call_module" and node.target == layer and node.args:
            src = node.args[0]
            if isinstance(src, fx.Node) and src.op == "call_module" and isinstance(named.get(src.target), ActQuantizer):
                if src.target not in out:
                    out.append(src.target)
    return out


def _macs(mod: nn.Module, out: torch.Tensor) -> int:
    if isinstance(mod, (QConv2d, nn.Conv2d)):
        kh, kw = mod.kernel_size
        return int(out[0].numel() * (mod.in_channels // mod.groups) * kh * kw)
    return int(out[0].numel() * mod.in_features)


@torch.no_grad()
def layer_macs(model: nn.Module, names: list[str], image: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates of each named conv/linear for one image, from the shapes a forward pass produces."""
    named = dict(model.named_modules())
    found: dict[str, int] = {}
    hooks = [named[n].register_forward_hook(lambda m, _i, out, n=n: found.__setitem__(n, found.get(n, 0) + _macs(m, out)))
             for n in names]
    try:
        model.eval()(image[:1])
    finally:
        for h in hooks:
            h.remove()
    return {n: found.get(n, 0) for n in names}


def _copy(model: fx.GraphModule) -> fx.GraphModule:
    """A deep copy that keeps ``zsq_meta`` (a GraphModule's deepcopy drops attributes set after construction)."""
    out = copy.deepcopy(model)
    if hasattr(model, "zsq_meta"):
        out.zsq_meta = copy.deepcopy(model.zsq_meta)
    return out


def set_quantizers(model: nn.Module, on: bool) -> None:
    """Switch every weight and activation quantizer of ``model`` on or off (off: that tensor stays float)."""
    for m in model.modules():
        if isinstance(m, (QConv2d, QLinear)):
            m.wq.enabled = on
        elif isinstance(m, ActQuantizer):
            m.enabled = on


class _Replay:
    """Runs the model with every quantizer off once, then each row from the first node its quantizer changes.

    Everything before that node computes exactly what the all-float pass computed, so a row reuses those values
    (only the ones a later node reads are kept) and interprets the rest of the graph (:class:`torch.fx.Interpreter`
    with a pre-filled environment): on a ResNet about half the work of a full forward pass per row.
    """

    def __init__(self, model: fx.GraphModule, images: torch.Tensor, changed: list[set[str]]) -> None:
        self.model, self.images = model, images
        self.nodes = list(model.graph.nodes)
        self.starts = [self.start(c) for c in changed]
        position = {n: i for i, n in enumerate(self.nodes)}
        keep = {n for s in set(self.starts) for n in self.nodes[:s] if any(position[u] >= s for u in n.users)}
        self.kept: dict[fx.Node, torch.Tensor] = {}
        kept = self.kept

        class Keep(fx.Interpreter):
            def run_node(self, n: fx.Node):
                value = super().run_node(n)
                if n in keep:
                    kept[n] = value
                return value

        Keep(model).run(images)

    def start(self, changed: set[str]) -> int:
        return min(i for i, n in enumerate(self.nodes) if n.op == "call_module" and n.target in changed)

    def run(self, changed: set[str]) -> torch.Tensor:
        s = self.start(changed)
        env = {n: self.kept.get(n) for n in self.nodes[:s]}  # a value no later node reads stays None: never read
        return fx.Interpreter(self.model).run(self.images, initial_env=env)


def _effect(out: torch.Tensor, reference: np.ndarray) -> Effect:
    m = metrics(out.float().numpy(), reference)
    return Effect(kl=max(0.0, m["kl"]), top1_agreement=m["top1_agreement"])


@torch.no_grad()
def measure(model: fx.GraphModule, images: torch.Tensor, reference: np.ndarray | torch.Tensor) -> list[LayerSensitivity]:
    """Every conv/linear layer of a calibrated fake-quant ``model``, quantized alone (weights, then input activations),
    against ``reference`` (the FP model's logits on ``images``); rows in network order, ranked by score.

    ``model`` is not changed: the switching happens on a copy.
    """
    ref = reference.numpy() if isinstance(reference, torch.Tensor) else np.asarray(reference)
    if len(ref) != len(images):
        raise ValueError(f"{len(images)} images but {len(ref)} reference outputs")
    work = _copy(model).eval()
    names = layer_names(work)
    named = dict(work.named_modules())
    macs = layer_macs(work, names, images)
    set_quantizers(work, False)
    feeds = {n: input_quantizers(work, n) for n in names}
    quantized = {n for n in names if isinstance(named[n], (QConv2d, QLinear))}
    # the nodes each row changes: the layer itself (its weight quantizer lives inside it), or its input quantizer's calls
    changed = [{n} for n in names if n in quantized] + [set(feeds[n]) for n in names if feeds[n]]
    replay = _Replay(work, images, changed)
    rows = []
    for i, name in enumerate(names):
        layer = named[name]
        w_effect = a_effect = None
        if name in quantized:
            layer.wq.enabled = True
            w_effect = _effect(replay.run({name}), ref)
            layer.wq.enabled = False
        if feeds[name]:
            for q in feeds[name]:
                named[q].enabled = True
            a_effect = _effect(replay.run(set(feeds[name])), ref)
            for q in feeds[name]:
                named[q].enabled = False
        effects = [e.kl for e in (w_effect, a_effect) if e is not None]
        rows.append(LayerSensitivity(name, i, "linear" if isinstance(layer, (QLinear, nn.Linear)) else "conv", macs[name],
                                     int(layer.wq.bits) if name in quantized else None,
                                     min((int(named[q].bits) for q in feeds[name]), default=None),
                                     w_effect, a_effect, max(effects, default=0.0), 0))
    order = sorted(rows, key=lambda r: (-r.score, r.index))
    rank = {r.name: k + 1 for k, r in enumerate(order)}
    return [dataclasses.replace(r, rank=rank[r.name]) for r in rows]


def suggest(rows: list[LayerSensitivity], top: int = SUGGEST_TOP) -> list[LayerSensitivity]:
    """The ``top`` most sensitive layers a suggestion can raise: neither float nor already at 8 bits, score above 0."""
    return [r for r in sorted(rows, key=lambda r: r.rank) if not r.at_8_bits and r.score > 0][:top]


def cli_flags(layers: list[str]) -> str:
    """``--layer-bits 'LAYER=8'`` per layer, quoted for a POSIX shell; a layer name with glob characters is escaped
    (``[*]``) so the pattern matches that layer alone."""

    def quote(text: str) -> str:
        return f"'{text}'" if "'" not in text else shlex.quote(text)

    bits = SUGGEST_BITS.removeprefix("w").split("a")[0]
    return " ".join(f"--layer-bits {quote(glob.escape(n) + '=' + bits)}" for n in layers)


def block(rows: list[LayerSensitivity], scheme: str, images: int, calib_images: int, act_init: str, seconds: float) -> dict:
    """The ``sensitivity`` block of check.json (the contract the report and the summary read)."""
    picked = suggest(rows)
    return {
        "scheme": scheme,
        "measured_on": f"held-out synthetic set, {images} images",
        "calibrated_on": f"synthetic train set, {calib_images} images, activation ranges by {act_init} (as the QAT stage starts)",
        "metric": "each layer quantized alone (weights, then its input activations), everything else float: mean KL(FP ‖ quantized) "
                  "of the softmax outputs and top-1 agreement with FP; score = the larger KL",
        "seconds": round(seconds, 2),  # calibration and every row: what the measurement adds to the check stage
        "passes": sum((r.weights is not None) + (r.activations is not None) for r in rows),
        "total_macs": sum(r.macs for r in rows),
        "layers": [r.to_dict() for r in rows],
        "suggested_layer_bits": {r.name: SUGGEST_BITS for r in picked},
        "suggested_cli": cli_flags([r.name for r in picked]),
    }


def skipped(scheme: str, reason: str) -> dict:
    """The block of a run that is not measured, with the reason (a ``paper`` profile run has no integer layers to act on)."""
    return {"scheme": scheme, "skipped": reason, "layers": [], "suggested_layer_bits": {}, "suggested_cli": ""}


def calibrated(fresh: fx.GraphModule, calib: torch.Tensor, act_init: str = "mse", seed: int = 0) -> fx.GraphModule:
    """A copy of ``fresh`` (ranges not initialised) with its ranges set as the QAT stage sets them before training:
    :func:`~pipeline.quant.calibrate.calibrate` on ``calib`` in batches of 64, the random draws (each quantizer observes
    a sample of at most 20,000 values per batch) from ``seed`` as the QAT stage seeds them (``qat.seed``); the caller's
    random state is left as it was."""
    from pipeline.quant.calibrate import calibrate

    model = _copy(fresh)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        calibrate(model, [calib[i : i + CALIB_BATCH] for i in range(0, len(calib), CALIB_BATCH)], act_init=act_init)
    return model


def for_student(fresh: fx.GraphModule, teacher: nn.Module, calib: torch.Tensor, holdout: torch.Tensor, act_init: str = "mse",
                seed: int = 0, reference: np.ndarray | torch.Tensor | None = None, log: Callable[[str], None] = lambda _m: None) -> dict:
    """The whole measurement of a run: ``fresh`` is the run's fake-quant model as the QAT stage builds it (ranges not yet
    initialised), calibrated by :func:`calibrated` on ``calib``, measured on at most :data:`MAX_IMAGES` of ``holdout``
    against ``reference`` (the teacher's logits on ``holdout``; computed when None). ``log`` gets one line: the cost and
    the three worst layers."""
    from pipeline.quant.qat import predict

    t0 = time.perf_counter()
    model = calibrated(fresh, calib, act_init, seed)
    x = holdout[:MAX_IMAGES]
    ref = predict(teacher, x) if reference is None else reference[: len(x)]
    rows = measure(model, x, ref)
    out = block(rows, getattr(model, "zsq_meta", {}).get("bits", "?"), len(x), len(calib), act_init, time.perf_counter() - t0)
    worst = sorted(rows, key=lambda r: r.rank)[:3]
    log(f"  per-layer sensitivity ({len(rows)} layers, {out['passes']} passes over {len(x)} held-out images, {out['seconds']:.1f} s): "
        f"worst {', '.join(f'{r.name} (KL {r.score:.3g})' for r in worst)}"
        + (f"; to keep them at 8 bits: {out['suggested_cli']}" if out["suggested_cli"] else ""))
    return out
