"""Intermediate features of the FP teacher and the fake-quant student, at matching points.

Feature losses (HAST's channel-attention alignment, ZAQ's relation maps) need
the same tensor from both models. The student is an FX graph built from a trace
of the teacher (:mod:`pipeline.quant.prepare`), so points are named by the
teacher's trace nodes and resolved in the student: a BatchNorm folded away in
the ``deploy`` profile maps to the conv it was folded into, and a tensor
followed by an activation quantizer maps to the quantizer's output (the value
the next layer really sees).

:func:`tap` returns a GraphModule that *shares* the model's parameters and
returns ``(output, [features])``; the model itself is left untouched.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from pipeline.quant.prepare import trace
from pipeline.quant.quantizers import ActQuantizer

_ADDS = {operator.add, torch.add, operator.iadd}


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADDS and sum(isinstance(a, fx.Node) for a in node.args) == 2) or (
        node.op == "call_method" and node.target == "add")


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (nn.ReLU, nn.ReLU6))
    return node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu)


def block_bodies(gm: fx.GraphModule) -> list[str]:
    """HAST's points: the residual body output entering each add (the add's first operand, e.g. ``bn2``)."""
    return [n.args[0].name for n in gm.graph.nodes if _is_add(n)]


def stage_outputs(gm: fx.GraphModule, example: torch.Tensor) -> list[str]:
    """ZAQ's points: the last block output (post-add ReLU, or the add) at each spatial resolution."""
    ShapeProp(gm).propagate(example)
    cands = []
    for n in gm.graph.nodes:
        if _is_add(n):
            users = list(n.users)
            cands.append(users[0] if len(users) == 1 and _is_relu(gm, users[0]) else n)
    if not cands:  # plain CNN: every ReLU
        cands = [n for n in gm.graph.nodes if _is_relu(gm, n)]
    last: dict[tuple, fx.Node] = {}
    for n in cands:
        shape = n.meta.get("tensor_meta").shape
        if len(shape) == 4:
            last[tuple(shape[-2:])] = n
    return [n.name for n in sorted(last.values(), key=lambda n: list(gm.graph.nodes).index(n))]


def student_points(teacher_gm: fx.GraphModule, student: fx.GraphModule, names: list[str]) -> list[str]:
    nodes = {n.name: n for n in student.graph.nodes}
    tnodes = {n.name: n for n in teacher_gm.graph.nodes}
    out = []
    for name in names:
        node = nodes.get(name)
        if node is None:  # folded BN → its conv
            src = tnodes[name].args[0]
            node = nodes.get(src.name) if isinstance(src, fx.Node) else None
            if node is None:
                raise ValueError(f"feature point {name!r} has no counterpart in the quantized model")
        quant_users = [u for u in node.users if u.op == "call_module" and isinstance(student.get_submodule(u.target), ActQuantizer)]
        out.append(quant_users[0].name if quant_users else node.name)
    return out


def tap(gm: fx.GraphModule, names: list[str]) -> fx.GraphModule:
    """A GraphModule sharing ``gm``'s modules that returns ``(output, [feature for each name])``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
            feats = [env[next(n for n in gm.graph.nodes if n.name == name)] for name in sorted(names, key=order.get)]
            graph.output((fx.map_arg(node.args[0], lambda n: env[n]), feats))
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    out = fx.GraphModule(gm, graph)
    out.train(gm.training)
    return out


class FeaturePair:
    """Teacher and student returning logits and features at the same points (``kind``: blocks | stages)."""

    def __init__(self, teacher: nn.Module, student: fx.GraphModule, kind: str, example: torch.Tensor) -> None:
        tg = trace(teacher)
        for p in tg.parameters():
            p.requires_grad_(False)
        names = block_bodies(tg) if kind == "blocks" else stage_outputs(tg, example)
        if not names:
            raise ValueError(f"no {kind} feature points found in the model")
        self.names = names
        self.teacher = tap(tg, names).eval()
        self.student = tap(student, student_points(tg, student, names))
