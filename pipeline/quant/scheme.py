"""Bit-width presets: ``w8a8`` (default), ``w4a4``, ``w3a3``, any ``wXaY``, first/last overrides.

A scheme is data, not behaviour (torchao's habit): the quantizer placement code
asks it "how many bits for this layer?" and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import ConfigError

_BITS_RE = re.compile(r"^w(\d+)a(\d+)$")
DEPLOYED_ACT_BITS = 8


@dataclass(frozen=True)
class BitScheme:
    w_bits: int = 8
    a_bits: int = 8
    first_last_bits: int | None = None  # e.g. 8: first conv and last linear at W8A8 ("F8L8")
    overflow_safe: bool = False  # 8-bit weights on ±63 (pipeline.quant.overflow): exact on x86 without VNNI

    def __post_init__(self) -> None:
        for name, b in (("weight", self.w_bits), ("activation", self.a_bits)):
            if not 2 <= b <= 8:
                raise ConfigError(f"{name} bits must be between 2 and 8, got {b}")
        if self.first_last_bits is not None and not 2 <= self.first_last_bits <= 8:
            raise ConfigError(f"first_last_bits must be between 2 and 8, got {self.first_last_bits}")

    @classmethod
    def parse(cls, text: str, first_last_bits: int | None = None, overflow_safe: bool = False) -> "BitScheme":
        m = _BITS_RE.match(text.strip().lower())
        if not m:
            raise ConfigError(f"bad bit preset {text!r}: use wXaY, e.g. w8a8, w4a4, w3a3, w4a8")
        return cls(int(m.group(1)), int(m.group(2)), first_last_bits, overflow_safe)

    @property
    def name(self) -> str:
        return f"w{self.w_bits}a{self.a_bits}"

    def weight_bits(self, is_first: bool, is_last: bool) -> int:
        return self.first_last_bits if (is_first or is_last) and self.first_last_bits else self.w_bits

    @property
    def has_8bit_weights(self) -> bool:
        """Whether any layer keeps 8-bit weights (the only width whose u8×s8 pair sums can saturate int16)."""
        return self.w_bits == 8 or self.first_last_bits == 8

    def weight_qmax(self, bits: int) -> int:
        """Largest integer magnitude of a ``bits``-bit symmetric weight grid under this scheme."""
        from pipeline.quant.overflow import OVERFLOW_SAFE_QMAX

        full = 2 ** (bits - 1) - 1
        return min(full, OVERFLOW_SAFE_QMAX) if self.overflow_safe else full

    @property
    def weight_grid(self) -> str:
        """The integer weight grid in words, as the report states it."""
        if self.overflow_safe and self.has_8bit_weights:
            return "8-bit weights on ±63 (7-bit range, overflow-safe for u8×s8 kernels without VNNI)"
        return "full range (±127 at 8 bits)" if self.has_8bit_weights else f"±{2 ** (self.w_bits - 1) - 1} ({self.w_bits}-bit)"

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
