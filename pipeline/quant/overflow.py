"""The overflow-safe weight grid: 8-bit weights trained and deployed on ±63 instead of ±127.

Why it exists. On x86 CPUs without VNNI (AVX2 only: AMD before Zen 4, Intel before
Cascade Lake / Ice Lake) ONNX Runtime's and OpenVINO's int8 convolutions multiply uint8
activations by int8 weights with ``VPMADDUBSW``, which adds each *pair* of u8·s8 products
into a **saturating int16**. With full-range operands a pair reaches 2·255·127 = 64770,
twice what int16 holds, so the integer artifact stops computing what was trained (measured:
up to 15 output steps on a ResNet-20 with random weights, see ``benchmarks/RESULTS.md``).
With |w| ≤ 63 the worst pair is 2·255·63 = 32130 < 32767: no saturation on any CPU.
VNNI (``VPDPBUSD``) accumulates in int32 and never saturates; neither do ARM's ``SDOT`` /
``UDOT`` or XNNPACK's int8 kernels (LiteRT), which widen to int16 before multiplying.

This is the same fix as NNCF's ``overflow_fix`` and ONNX Runtime's ``reduce_range``, but
the narrower grid is *trained* (QAT learns the scales on ±63), not applied after training.

Modes (``qat.overflow_fix``, ``--overflow-fix``):

* ``auto`` (default): on when the run deploys 8-bit weights to a target whose x86 kernels
  are u8×s8 (``onnx``, ``openvino``); off for a ``tflite``-only run and for weights of 7
  bits or fewer (already inside ±63) and for the ``paper`` profile (no artifact). A run
  whose weights are 8-bit in some layers only (``qat.first_last_bits=8``, or a
  ``qat.layer_bits`` entry with 8-bit weights in a W4A4 run) has 8-bit weights: those
  layers train on ±63 exactly as a W8 run's do; the others keep their own grid (±7 at 4 bits).
* ``on``: always train 8-bit weights on ±63.
* ``off``: full ±127 range (bit-exact only on VNNI x86, ARM and LiteRT).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

from pipeline.errors import ConfigError
from runtimes.formats import FORMATS

OVERFLOW_SAFE_QMAX = 63
OverflowMode = Literal["auto", "on", "off"]  # the type of qat.overflow_fix
MODES: tuple[str, ...] = get_args(OverflowMode)
# Targets whose integer artifact runs u8 activations × s8 weights through VPMADDUBSW on x86 without VNNI.
U8S8_TARGETS = frozenset(f.name for f in FORMATS if f.u8s8_kernels)


def resolve(mode: str, w_bits: int, first_last_bits: int | None, targets: Iterable[str], profile: str = "deploy",
            layer_bits: Iterable[tuple[str, str]] = ()) -> bool:
    """Whether 8-bit weights train on the overflow-safe grid for this run (``layer_bits``: ``qat.layer_bits`` as
    (PATTERN, BITS) pairs; one with 8-bit weights gives the run 8-bit weights)."""
    from pipeline.quant.scheme import any_8bit_weights

    if mode not in MODES:
        raise ConfigError(f"qat.overflow_fix must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    has_8bit = any_8bit_weights(w_bits, first_last_bits, layer_bits)
    return profile == "deploy" and has_8bit and bool(U8S8_TARGETS & set(targets))
