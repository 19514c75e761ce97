"""Integer coverage: the share of multiply-accumulates an artifact executes in integer kernels, read from the runtime itself.

One reader per runtime, each beside its backend (torch-free, so a device measures it too):
:mod:`runtimes.onnxruntime_coverage` (ORT's profiled run), :mod:`runtimes.openvino_coverage`
(the CPU plugin's executed graph) and :mod:`runtimes.litert_coverage` (the interpreter's
tensors). :func:`read_coverage` picks the reader by the artifact's suffix. The exporters'
integer gate (``exporters.artifact.require_integer``) turns a shortfall into an export error.

Every reader denies by default. It knows three kinds of op by name: multiply-accumulate ops
(convolutions, matrix products, recurrent cells, attention, einsum), counted integer or float
with their MACs; integer kernels; and an explicit allow-list of data-movement and elementwise ops,
which do no MACs. An op on none of those lists that computes in float is *not* ignored: it counts
as a float MAC op (at least one MAC per output element, the shapes rarely say more), is named in
the gate's error as an unknown op, and its type is listed under ``unrecognised``. A model with an
LSTM is thereby never reported 100 % integer because a reader had not heard of LSTMs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import isqrt, prod
from pathlib import Path

import numpy as np

NAMED_IN_ERROR = 5  # float ops the gate's one-line error names; the rest are counted
UNKNOWN = "unknown op, counted as float"  # how a node the reader does not recognise is labelled


@dataclass
class IntegerCoverage:
    """Share of multiply-accumulates that execute in integer kernels, read from the runtime itself."""

    runtime: str
    int_macs: int
    float_macs: int
    int_kernels: dict[str, int] = field(default_factory=dict)
    float_kernels: dict[str, int] = field(default_factory=dict)
    float_nodes: list[str] = field(default_factory=list)  # names of MAC ops (and unknown ops) that stayed float
    float_node_macs: list[int] = field(default_factory=list)  # the MACs of each of float_nodes, same order
    other_float_ops: dict[str, int] = field(default_factory=dict)  # known float non-MAC ops (elementwise, resize...)
    unrecognised: dict[str, int] = field(default_factory=dict)  # op types no list of the reader names (float ones are in float_*)

    @property
    def share(self) -> float:
        total = self.int_macs + self.float_macs
        return self.int_macs / total if total else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["share"] = round(self.share, 6)
        return d

    def tally(self, kernel: str, integer: bool, macs: int = 0, node: str | None = None, other: bool = False) -> None:
        """Count one executed op: integer or float kernel (with its MACs), or, with ``other``, a float op outside the gate.

        A float kernel's ``node`` is named in :meth:`shortfall`'s error.
        """
        if other:
            self.other_float_ops[kernel] = self.other_float_ops.get(kernel, 0) + 1
        elif integer:
            self.int_macs += macs
            self.int_kernels[kernel] = self.int_kernels.get(kernel, 0) + 1
        else:
            self.float_macs += macs
            self.float_kernels[kernel] = self.float_kernels.get(kernel, 0) + 1
            if node is not None:
                self.float_nodes.append(node)
                self.float_node_macs.append(int(macs))

    def tally_unknown(self, kernel: str, floating: bool, macs: int | None, node: str) -> None:
        """Count an op the reader has no list for: listed under ``unrecognised``; one computing in float counts as a float MAC op.

        Deny by default: its MACs are the estimate given (at least 1, so a 100 % gate always fails on it)
        and its name carries :data:`UNKNOWN`, so the error says why it is there.
        """
        self.unrecognised[kernel] = self.unrecognised.get(kernel, 0) + 1
        if floating:
            self.tally(kernel, False, max(int(macs or 0), 1), f"{node} ({kernel}, {UNKNOWN})")

    def shortfall(self, artifact_name: str, min_share: float, strict_kernels: bool = False) -> str | None:
        """Why ``artifact_name`` misses the integer requirement (naming the ops that stay float), or None when it meets it.

        ``strict_kernels``: at a 100 % requirement any float kernel counted in ``float_kernels``
        also fails (LiteRT counts float ADD/MEAN/pooling there, not only MAC ops).
        """
        structural = strict_kernels and bool(self.float_kernels) and min_share >= 1.0
        if self.share + 1e-12 >= min_share and not structural:
            return None
        return (f"{artifact_name}: only {percent(self.share)} of MACs run in integer on {self.runtime} (required {min_share:.0%}); "
                f"float ops: {name_some(self.float_nodes)}")


def percent(share: float) -> str:
    """``share`` as a percentage that never reads 100.0 % when it is below 1 (one unknown op in a million MACs)."""
    text = f"{share:.1%}"
    return ">99.9%" if share < 1.0 and text == "100.0%" else text


def name_some(nodes: list[str], k: int = NAMED_IN_ERROR) -> str:
    """The first ``k`` of ``nodes`` and how many there are in all, for a one-line error."""
    if not nodes:
        return "none found"
    if len(nodes) == 1:
        return nodes[0]
    more = f" and {len(nodes) - k} more" if len(nodes) > k else ""
    return f"{', '.join(nodes[:k])}{more} ({len(nodes)} in all)"


# --- MAC estimates from shapes, shared by the readers (lists of dims; None where a shape is unknown) ---------------

def matmul_macs(a: list[int] | None, b: list[int] | None, out: list[int] | None) -> int | None:
    """A (batched) matrix product ``a @ b → out``, whatever the transposes: batch·M·N·K with K² = |a₂|·|b₂| / (M·N)."""
    if not a or not out:
        return None
    if len(a) == 1:  # a vector: K is its length
        return prod(out) * a[0]
    if b and len(b) == 1:
        return prod(out) * b[0]
    if b and len(out) >= 2 and out[-1] * out[-2]:
        k = isqrt(round(prod(a[-2:]) * prod(b[-2:]) / (out[-1] * out[-2])))
        return prod(out) * k if k else None
    return prod(out) * a[-1]  # no weight shape: assume a is [.., M, K]


def rnn_macs(x: list[int] | None, w: list[int] | None, r: list[int] | None) -> int | None:
    """A recurrent layer over ``x`` [.., I] (time and batch in the leading dims): every step multiplies by W [.., G·H, I] and R [.., G·H, H]."""
    if not x or not w or not r or w[-1] != x[-1]:
        return None
    return prod(x[:-1]) * (prod(w) + prod(r))


def rnn_macs_from_io(x: list[int] | None, hidden: int | None, gates: int, directions: int = 1) -> int | None:
    """The same when the weights' shapes are unknown: G gates of H units, each over the input and the hidden state."""
    if not x or not hidden:
        return None
    return prod(x[:-1]) * directions * gates * hidden * (x[-1] + hidden)


def attention_macs(q: list[int] | None, k: list[int] | None, out: list[int] | None, w: list[int] | None = None) -> int | None:
    """Attention: the QKV projection when the op holds its weight [hidden, 3·hidden], then Q·Kᵀ and P·V over the key length."""
    if not q:
        return None
    if w and len(w) == 2 and len(q) >= 2:  # ORT's contrib Attention: the input is projected inside the op
        rows = prod(q[:-1])
        return rows * prod(w) + 2 * rows * q[-2] * (w[-1] // 3)
    return (prod(q) + prod(out or q)) * _key_length(q, k)


def _key_length(q: list[int], k: list[int] | None) -> int:
    """How many keys each query meets: exact for [B, L, hidden] keys; for rank-4 ones ([B, N, L, h], [B, L, N, h], or
    transposed [B, N, h, L]) the layout is not known, so the largest dim, an over-estimate of float MACs, never under."""
    if k and len(k) == 3:
        return k[-2]
    if k and len(k) >= 4:
        return max(k[1:])
    return q[-2] if len(q) == 3 else max(q[1:], default=1)  # no key input: self-attention over the query


def einsum_macs(ins: list[list[int]], out: list[int] | None) -> int | None:
    """An einsum without its equation: a two-operand contraction as :func:`matmul_macs` reads it (exact without batch
    dims, an over-estimate with them); otherwise the largest operand once per output element is not known, so its size."""
    shapes = [s for s in ins if s is not None]
    if len(shapes) == 2 and out is not None:
        return max(isqrt(prod(shapes[0]) * prod(shapes[1]) * prod(out)), prod(out), 1)
    sizes = [prod(s) for s in shapes] + ([prod(out)] if out else [])
    return max(sizes) if sizes else None


def elementwise_macs(out: list[int] | None) -> int:
    """The least an unknown op costs: one MAC per output element (1 when its shape is unknown)."""
    return max(prod(out), 1) if out else 1


def _reader_module(path: str | Path):
    """The module that reads coverage for the artifact at ``path`` (by its suffix), and its reader's name."""
    import importlib

    from runtimes.formats import format_of

    module, fn = format_of(path).coverage.split(":")
    return importlib.import_module(module), fn


def read_coverage(path: str | Path, sample: np.ndarray, threads: int = 1, accelerator: str | None = None) -> IntegerCoverage:
    """The integer coverage of the artifact at ``path`` as its runtime executes ``sample`` (one input, the artifact's
    layout), on ``accelerator`` (the runtime's own name for it, :mod:`runtimes.accelerators`) or its default path."""
    module, fn = _reader_module(path)
    options = {} if accelerator is None else {"accelerator": accelerator}
    return getattr(module, fn)(Path(path), sample, threads, **options)


def accelerator_view(path: str | Path, sample: np.ndarray | None, threads: int, accelerator: str) -> dict:
    """What the artifact's reader can see of ``accelerator`` beyond op types (partitions, providers per node); ``{}``
    where its runtime shows nothing more."""
    module, _ = _reader_module(path)
    view = getattr(module, "accelerator_view", None)
    return {} if view is None else view(Path(path), sample, threads, accelerator)
