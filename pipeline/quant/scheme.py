"""Bit-width presets: ``w8a8`` (default), ``w4a4``, ``w3a3``, any ``wXaY``, first/last overrides, per-layer bits and
float layers.

A scheme is data, not behaviour (torchao's habit): the quantizer placement code
asks it "how many bits for this layer?" and nothing else. Per-layer choices
(``qat.layer_bits``, ``qat.float_layers``) are patterns over layer names; they
become bits only against a model's layers, in :func:`resolve_layers`, the one place
that turns a scheme and a list of layer names into each layer's bits.

Layer names are the torch.fx module targets of the traced model (``conv1``,
``layers.3.shortcut.0``, ``fc``), as ``quantize_model(...).zsq_meta["layers"]``
lists them. A pattern is an fnmatch glob over those names (``layers.8.*``) or
``re:<regex>`` (a full match); when several ``layer_bits`` patterns match a layer
the last one wins. Nothing here imports torch: the config parses schemes at import time.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.errors import ConfigError

_BITS_RE = re.compile(r"^w(\d+)a(\d+)$")
DEPLOYED_ACT_BITS = 8
REGEX_PREFIX = "re:"
BITS_FORM = "wXaY (e.g. w8a8, w4a8) or one number N meaning wNaN (e.g. 8), each width 2-8"


def parse_layer_bits(text: object, where: str = "qat.layer_bits") -> tuple[int, int]:
    """``"w8a4"`` → (8, 4), ``"8"`` or ``8`` → (8, 8); anything else a one-line :class:`ConfigError` saying the form."""
    s = str(text).strip().lower() if isinstance(text, (str, int)) and not isinstance(text, bool) else ""
    m = _BITS_RE.match(s)
    w, a = (int(m.group(1)), int(m.group(2))) if m else (int(s), int(s)) if s.isdigit() else (None, None)
    if w is None or not (2 <= w <= 8 and 2 <= a <= 8):
        raise ConfigError(f"bad bits {text!r} for {where}: use {BITS_FORM}")
    return w, a


def bits_name(w: int, a: int) -> str:
    return f"w{w}a{a}"


def _check_pattern(pattern: object, key: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(f"bad layer pattern {pattern!r} in {key}: give an fnmatch glob over layer names (layers.8.*) or re:<regex>")
    pattern = pattern.strip()
    if pattern.startswith(REGEX_PREFIX):
        try:
            re.compile(pattern[len(REGEX_PREFIX):])
        except re.error as exc:
            raise ConfigError(f"bad regular expression {pattern!r} in {key}: {exc}") from None
    return pattern


def layer_matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` (fnmatch glob, case-sensitive, or ``re:<regex>``, full match) names layer ``name``."""
    if pattern.startswith(REGEX_PREFIX):
        return re.fullmatch(pattern[len(REGEX_PREFIX):], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def normalize_layer_bits(value: Mapping | Iterable | None) -> tuple[tuple[str, str], ...]:
    """``{PATTERN: BITS}`` (a mapping in the order given, or pairs) → ``((PATTERN, "wXaY"), ...)``, syntax checked."""
    if not value:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    for item in items:
        if isinstance(item, str) or len(item) != 2:
            raise ConfigError(f"bad qat.layer_bits entry {item!r}: give a mapping PATTERN: BITS, e.g. {{'layers.8.*': 8}}")
        pattern, bits = item
        pattern = _check_pattern(pattern, "qat.layer_bits")
        out.append((pattern, bits_name(*parse_layer_bits(bits, f"qat.layer_bits pattern {pattern!r}"))))
    return tuple(out)


def normalize_float_layers(value: Iterable | str | None) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        value = [value]
    return tuple(_check_pattern(p, "qat.float_layers") for p in value)


def layer_bits_option(items: Iterable[str]) -> dict[str, str]:
    """``--layer-bits PATTERN=BITS`` (repeatable) → the ``qat.layer_bits`` mapping, in the order given.

    Split at the last ``=`` (a regex may hold one, BITS never does); the bits are checked here, so a typo fails
    with the form before anything runs.
    """
    out: dict[str, str] = {}
    for item in items:
        pattern, eq, bits = str(item).rpartition("=")
        if not eq or not pattern.strip():
            raise ConfigError(f"bad --layer-bits {item!r}: use PATTERN=BITS, e.g. --layer-bits 'layers.8.*=8' or --layer-bits fc=w8a8")
        pattern = _check_pattern(pattern, "--layer-bits")
        out.pop(pattern, None)  # given again: it moves to the end, where the last match wins
        out[pattern] = bits_name(*parse_layer_bits(bits.strip(), f"--layer-bits {item!r}"))
    return out


@dataclass(frozen=True)
class LayerPlan:
    """Every conv/linear layer of one model under one scheme: its (weight bits, activation bits), or float."""

    layers: tuple[str, ...]  # every conv/linear layer, network order
    bits: dict[str, tuple[int, int]] = field(default_factory=dict)  # each quantized layer → (weight, activation) bits
    float_layers: tuple[str, ...] = ()  # kept in float (network order)

    def weight_bits(self, layer: str) -> int:
        return self.bits[layer][0]

    def act_bits(self, layer: str) -> int:
        return self.bits[layer][1]

    def meta(self) -> dict:
        """What ``zsq_meta`` records: every quantized layer's resolved bits and the float layers."""
        return {"layer_bits": {n: bits_name(*self.bits[n]) for n in self.layers if n in self.bits},
                "float_layers": list(self.float_layers)}


def _unmatched(key: str, pattern: str, layers: Sequence[str]) -> str:
    literal = not pattern.startswith(REGEX_PREFIX) and not any(c in pattern for c in "*?[")  # a misspelt name: suggest one
    close = difflib.get_close_matches(pattern, layers, n=1, cutoff=0.5) if literal else []
    return f"{key} pattern {pattern!r} matches no layer" + (f" (did you mean {close[0]!r}?)" if close else "")


def resolve_layers(layers: Sequence[str], scheme: "BitScheme") -> LayerPlan:
    """Each layer's (weight bits, activation bits) and the float set, for the conv/linear ``layers`` in network order.

    In order: the scheme's ``wXaY``; ``first_last_bits`` (first layer: its weights and its input; last layer: its
    weights, as ever); then ``layer_bits``, pattern by pattern, so the last pattern matching a layer wins and every
    pattern overrides ``first_last_bits``; ``float_layers`` take layers out of quantization. A pattern that matches no
    layer, a layer both float and given bits, or every layer float, is a one-line :class:`ConfigError` naming the layers.
    """
    layers = tuple(layers)
    if not layers:
        return LayerPlan(layers)
    bits = {n: (scheme.w_bits, scheme.a_bits) for n in layers}
    fl = scheme.first_last_bits
    if fl:
        bits[layers[-1]] = (fl, scheme.a_bits)
        bits[layers[0]] = (fl, fl)
    problems: list[str] = []
    given: dict[str, str] = {}  # layer → the last layer_bits pattern that matched it
    for pattern, text in scheme.layer_bits:
        hit = [n for n in layers if layer_matches(pattern, n)]
        if not hit:
            problems.append(_unmatched("qat.layer_bits", pattern, layers))
        for n in hit:
            bits[n] = parse_layer_bits(text)
            given[n] = pattern
    floats: list[str] = []
    for pattern in scheme.float_layers:
        hit = [n for n in layers if layer_matches(pattern, n)]
        if not hit:
            problems.append(_unmatched("qat.float_layers", pattern, layers))
        floats += [n for n in hit if n not in floats]
    if floats and len(floats) == len(layers):
        problems.append("qat.float_layers keeps every conv/linear layer in float: nothing left to quantize; narrow the patterns")
    both = [n for n in layers if n in floats and n in given]
    if both:
        problems.append(f"layer(s) {', '.join(f'{n} (qat.layer_bits {given[n]!r})' for n in both)} are also in qat.float_layers: a "
                        "float layer has no bits; narrow one of the patterns")
    if problems:
        raise ConfigError("; ".join(problems) + f"; the model's {len(layers)} conv/linear layers: {', '.join(layers)}")
    floats = [n for n in layers if n in floats]
    return LayerPlan(layers, {n: b for n, b in bits.items() if n not in floats}, tuple(floats))


def any_8bit_weights(w_bits: int, first_last_bits: int | None, layer_bits: Mapping | Iterable[tuple[str, str]] = ()) -> bool:
    """Whether a layer may get 8-bit weights: the scheme's width, ``first_last_bits`` or a ``layer_bits`` entry (the one
    home of the rule :mod:`pipeline.quant.overflow` and :attr:`BitScheme.has_8bit_weights` both apply)."""
    return w_bits == 8 or first_last_bits == 8 or any(parse_layer_bits(b)[0] == 8 for _, b in normalize_layer_bits(layer_bits))


@dataclass(frozen=True)
class BitScheme:
    w_bits: int = 8
    a_bits: int = 8
    first_last_bits: int | None = None  # e.g. 8: first conv and last linear at W8A8 ("F8L8")
    overflow_safe: bool = False  # 8-bit weights on ±63 (pipeline.quant.overflow): exact on x86 without VNNI
    # (PATTERN, "wXaY") in the order given: the last pattern matching a layer wins (a mapping is accepted and normalised)
    layer_bits: tuple[tuple[str, str], ...] = ()
    float_layers: tuple[str, ...] = ()  # patterns of layers kept in float ("float islands")

    def __post_init__(self) -> None:
        for name, b in (("weight", self.w_bits), ("activation", self.a_bits)):
            if not 2 <= b <= 8:
                raise ConfigError(f"{name} bits must be between 2 and 8, got {b}")
        if self.first_last_bits is not None and not 2 <= self.first_last_bits <= 8:
            raise ConfigError(f"first_last_bits must be between 2 and 8, got {self.first_last_bits}")
        object.__setattr__(self, "layer_bits", normalize_layer_bits(self.layer_bits))
        object.__setattr__(self, "float_layers", normalize_float_layers(self.float_layers))

    @classmethod
    def parse(cls, text: str, first_last_bits: int | None = None, overflow_safe: bool = False,
              layer_bits: Mapping | Iterable | None = None, float_layers: Iterable[str] | None = None) -> "BitScheme":
        m = _BITS_RE.match(text.strip().lower())
        if not m:
            raise ConfigError(f"bad bit preset {text!r}: use wXaY, e.g. w8a8, w4a4, w3a3, w4a8")
        return cls(int(m.group(1)), int(m.group(2)), first_last_bits, overflow_safe, layer_bits or (), float_layers or ())

    @property
    def name(self) -> str:
        return f"w{self.w_bits}a{self.a_bits}"

    @property
    def per_layer(self) -> bool:
        """Whether layers differ from the scheme's ``wXaY`` by pattern (``layer_bits`` or ``float_layers``)."""
        return bool(self.layer_bits or self.float_layers)

    def resolve(self, layers: Sequence[str]) -> LayerPlan:
        """This scheme against a model's conv/linear layers (:func:`resolve_layers`)."""
        return resolve_layers(layers, self)

    def weight_bits(self, is_first: bool, is_last: bool) -> int:
        return self.first_last_bits if (is_first or is_last) and self.first_last_bits else self.w_bits

    @property
    def has_8bit_weights(self) -> bool:
        """Whether any layer may keep 8-bit weights (the only width whose u8×s8 pair sums can saturate int16): the
        scheme's, ``first_last_bits`` or a ``layer_bits`` entry."""
        return any_8bit_weights(self.w_bits, self.first_last_bits, self.layer_bits)

    def weight_qmax(self, bits: int) -> int:
        """Largest integer magnitude of a ``bits``-bit symmetric weight grid under this scheme."""
        from pipeline.quant.overflow import OVERFLOW_SAFE_QMAX

        full = 2 ** (bits - 1) - 1
        return min(full, OVERFLOW_SAFE_QMAX) if self.overflow_safe else full

    def weight_widths(self) -> list[int]:
        """The weight widths this scheme may give a layer, widest first (before it meets a model's layers)."""
        widths = {self.w_bits, *([self.first_last_bits] if self.first_last_bits else []),
                  *(parse_layer_bits(b)[0] for _, b in self.layer_bits)}
        return sorted(widths, reverse=True)

    @property
    def weight_grid(self) -> str:
        """The integer weight grid in words, as the report states it."""
        return self.describe_weight_grid(self.weight_widths())

    def describe_weight_grid(self, widths: Iterable[int]) -> str:
        """The weight grid in words for layers of these widths (the deployed layers' own, when a model is known)."""
        widths = sorted(set(widths), reverse=True)
        if not widths:
            return "no integer weights (every layer in float)"
        if self.overflow_safe and 8 in widths:
            head = "8-bit weights on ±63 (7-bit range, overflow-safe for u8×s8 kernels without VNNI)"
        elif 8 in widths:
            head = "full range (±127 at 8 bits)"
        else:
            w = widths[0] if self.per_layer else self.w_bits
            head = f"±{2 ** (w - 1) - 1} ({w}-bit)"
        rest = [f"±{2 ** (b - 1) - 1} ({b}-bit)" for b in widths[1:]]
        # A uniform scheme and first_last_bits read as before; per-layer widths name every grid in use.
        return head + (f"; other layers {', '.join(rest)}" if rest and self.per_layer else "")

    def act_bits(self, is_first_input: bool = False) -> int:
        return self.first_last_bits if is_first_input and self.first_last_bits else self.a_bits

    @staticmethod
    def deployed_act_bits(trained_bits: int) -> int:
        """The one home of the rule "activations below 8 bits deploy at 8": integer CPU kernels are 8-bit
        (docs/conversion.md §5), so the learned clipping range is kept and filled with 256 levels."""
        return max(DEPLOYED_ACT_BITS, trained_bits)

    @property
    def deployed_name(self) -> str:
        """Name of what integer CPU runtimes execute, e.g. ``w4a8`` for a ``w4a4`` model."""
        return f"w{self.w_bits}a{self.deployed_act_bits(self.a_bits)}"
