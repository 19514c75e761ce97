"""Fake quantizers with a straight-through estimator, and their export forms.

Two quantizers cover both profiles:

* :class:`WeightQuantizer`: per-output-channel. ``symmetric`` (deploy: narrow
  range ±(2^(b-1)-1), learned LSQ-style scale initialised by a clipping search)
  or asymmetric min/max recomputed every forward (the GDFQ ``paper`` protocol).
* :class:`ActQuantizer`: per-tensor asymmetric on an unsigned grid [0, 2^b-1].
  Its range is initialised from synthetic data (``observe`` then ``init_range``)
  and then either learned (gradients reach ``lo``/``hi`` through the STE, LSQ+
  style) or tracked by EMA and frozen after a number of steps.

On an 8-bit grid the unsigned form *is* uint8, which ONNX Runtime needs on x86
to fuse every conv and add into integer kernels (docs/conversion.md §3). The
quantizers know nothing of export formats: :mod:`pipeline.quant.deploy` reads their
numbers into the neutral deployment spec the exporters consume.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.train.placement import fp32_op


class _InitFlag:
    """``initialized`` is a buffer (it travels in the state dict), mirrored in Python so a forward pass on a GPU does
    not read it back from the device every step (a host sync per quantizer per step)."""

    _init_known: bool | None = None

    @property
    def is_initialized(self) -> bool:
        if self._init_known is None:
            self._init_known = bool(self.initialized)
        return self._init_known

    def mark_initialized(self) -> None:
        self.initialized.fill_(True)
        self._init_known = True

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # a loaded state may differ: read the buffer again
        super()._load_from_state_dict(*args, **kwargs)
        self._init_known = None


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() in the forward pass, identity in the backward pass."""
    return (x.round() - x).detach() + x


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int, mask_grad: bool = True) -> torch.Tensor:
    """(clamp(round(x/s) + zp, qmin, qmax) - zp) * s with STE.

    ``mask_grad`` True: the gradient w.r.t. x is zero outside the clipping range
    (the usual STE); False: plain STE that passes every gradient (GDFQ's).
    """
    q = round_ste(x / scale) + zp
    if mask_grad:
        q = torch.clamp(q, qmin, qmax)
    else:
        q = q + (torch.clamp(q, qmin, qmax) - q).detach()
    return (q - zp) * scale


class WeightQuantizer(_InitFlag, nn.Module):
    """Per-output-channel weight quantizer.

    ``qmax`` narrows the symmetric grid below its ``bits`` (±(2^(b-1)-1)): 8-bit weights trained on
    ±63 are the overflow-safe grid of :mod:`pipeline.quant.overflow` (u8×s8 pair sums cannot saturate
    the int16 intermediate of x86 kernels without VNNI). The stored integers are still int8.
    """

    def __init__(self, out_channels: int, bits: int, symmetric: bool = True, learn_scale: bool = True, qmax: int | None = None) -> None:
        super().__init__()
        self.bits = bits
        full = 2 ** (bits - 1) - 1
        if qmax is not None and not 1 <= qmax <= full:
            raise ValueError(f"weight qmax must be in [1, {full}] for {bits}-bit weights, got {qmax}")
        self._qmax = qmax if qmax is not None else full
        self.symmetric = symmetric
        self.learn_scale = learn_scale and symmetric
        self.scale = nn.Parameter(torch.ones(out_channels), requires_grad=self.learn_scale)
        self.register_buffer("initialized", torch.tensor(False))
        self.enabled = True

    @property
    def qmax(self) -> int:
        """Largest integer magnitude on the symmetric grid (the grid is [-qmax, qmax], zero point 0)."""
        return self._qmax

    @torch.no_grad()
    def init_scale(self, w: torch.Tensor, method: str = "mse") -> None:
        """Per-channel scale from the weights: max|w| or the clipping that minimises the MSE."""
        flat = w.detach().reshape(w.shape[0], -1)
        amax = flat.abs().amax(1).clamp_min(1e-8)
        if method == "mse":
            best_err = torch.full_like(amax, float("inf"))
            best = amax.clone()
            for ratio in torch.linspace(0.3, 1.0, 36):
                s = (amax * ratio / self.qmax)[:, None]
                err = ((torch.clamp(torch.round(flat / s), -self.qmax, self.qmax) * s - flat) ** 2).mean(1)
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best = torch.where(better, amax * ratio, best)
            amax = best
        elif method != "minmax":
            raise ValueError(f"unknown weight init {method!r}")
        self.scale.copy_(amax / self.qmax)
        self.mark_initialized()

    def channel_scale(self, w: torch.Tensor) -> torch.Tensor:
        if not self.symmetric:
            raise RuntimeError("asymmetric weights have no symmetric scale")
        if not self.is_initialized:
            self.init_scale(w)
        return self.scale.abs().clamp_min(1e-8)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        return self._quantize(w)

    @fp32_op  # rounding, clamping and the scale stay in fp32 under autocast
    def _quantize(self, w: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (w.dim() - 1)
        if not self.symmetric:  # GDFQ/ZeroQ: asymmetric per-channel min/max, recomputed every call
            flat = w.reshape(w.shape[0], -1)
            lo, hi = flat.min(1).values.detach(), flat.max(1).values.detach()
            levels = 2**self.bits - 1
            s = ((hi - lo).clamp_min(1e-8) / levels).view(shape)
            zp = torch.round(-lo.view(shape) / s) - 2 ** (self.bits - 1)
            return fake_quant(w, s, zp, -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1, mask_grad=False)
        s = self.channel_scale(w).view(shape)
        return fake_quant(w, s, torch.zeros_like(s), -self.qmax, self.qmax)

    def extra_repr(self) -> str:
        narrowed = f", qmax={self.qmax}" if self.qmax != 2 ** (self.bits - 1) - 1 else ""
        return f"bits={self.bits}{narrowed}, symmetric={self.symmetric}, learn_scale={self.learn_scale}"


class ActQuantizer(_InitFlag, nn.Module):
    """Per-tensor asymmetric activation quantizer on the unsigned grid [0, 2^bits - 1]."""

    def __init__(self, bits: int, mode: str = "learned", ema_decay: float = 0.9, mask_grad: bool = True) -> None:
        super().__init__()
        if mode not in ("learned", "ema"):
            raise ValueError(f"activation range mode must be 'learned' or 'ema', got {mode!r}")
        self.bits = bits
        self.mode = mode
        self.ema_decay = ema_decay
        self.mask_grad = mask_grad
        self.lo = nn.Parameter(torch.tensor(0.0), requires_grad=mode == "learned")
        self.hi = nn.Parameter(torch.tensor(1.0), requires_grad=mode == "learned")
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("ema_steps", torch.tensor(0))
        self.enabled = True
        self.observing = False
        self.ema_frozen = False
        self._samples: list[torch.Tensor] = []

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    def qparams(self, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and integer zero-point on the unsigned ``bits`` grid (default: training bits)."""
        lo = torch.minimum(self.lo, torch.zeros_like(self.lo))  # the range always holds 0 exactly
        hi = torch.maximum(self.hi, lo + 1e-6)
        s = (hi - lo) / self.levels
        zp = torch.clamp(round_ste(-lo / s), 0, self.levels)
        if bits is None or bits == self.bits:
            return s, zp
        # Same clipping range on a finer grid: the range the b-bit grid actually covers.
        lo_b, hi_b = -zp * s, (self.levels - zp) * s
        levels = 2**bits - 1
        s2 = (hi_b - lo_b) / levels
        return s2, torch.clamp(torch.round(-lo_b / s2), 0, levels)

    @torch.no_grad()
    def init_range(self, method: str = "mse", percentile: float = 99.99) -> None:
        """Choose the initial range from the values seen while ``observing``."""
        if not self._samples:
            raise RuntimeError("init_range() needs observed activations: run calibration batches first")
        x = torch.cat(self._samples)
        self._samples.clear()
        lo, hi = float(x.min()), float(x.max())
        if method == "percentile" and x.numel() > 100:
            q = torch.quantile(x[torch.randperm(x.numel())[:1_000_000]], torch.tensor([1 - percentile / 100, percentile / 100]))
            lo, hi = float(q[0]), float(q[1])
        elif method == "mse":
            lo, hi = self._mse_range(x, lo, hi)
        elif method != "minmax":
            raise ValueError(f"unknown activation init {method!r}")
        self.lo.fill_(min(lo, 0.0))
        self.hi.fill_(max(hi, 1e-4))
        self.mark_initialized()

    def _mse_range(self, x: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
        best, best_err = (lo, hi), float("inf")
        lo0, hi0 = min(lo, 0.0), max(hi, 1e-4)
        for ratio in torch.linspace(0.2, 1.0, 41).tolist():
            l, h = lo0 * ratio, hi0 * ratio
            s = (h - l) / self.levels
            zp = round(-l / s)
            err = float(((torch.clamp(torch.round(x / s) + zp, 0, self.levels) - zp) * s - x).pow(2).mean())
            if err < best_err:
                best, best_err = (l, h), err
        return best

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            flat = x.detach().flatten()
            pick = torch.randint(0, flat.numel(), (min(flat.numel(), 20000),), device=flat.device)
            self._samples.append(flat[pick] if flat.numel() > 20000 else flat)
            return x
        if not self.enabled:
            return x
        return self._quantize(x)

    @fp32_op  # the grid, the range and their gradients stay in fp32 under autocast
    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "ema" and self.training and not self.ema_frozen:
            self._ema_update(x)
        s, zp = self.qparams()
        if self.mask_grad and x.device.type == "cpu":
            # ATen's fused kernel: same values and STE/LSQ gradients as fake_quant(), ~1.5x faster on the CPU; on a GPU
            # it reads its scale back to the host (.item()) on every call, so there fake_quant() runs instead.
            return torch._fake_quantize_learnable_per_tensor_affine(x, s.reshape(1), zp.reshape(1), 0, self.levels, 1.0)
        return fake_quant(x, s, zp, 0, self.levels, mask_grad=self.mask_grad)

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor) -> None:
        """EMA of batch min/max (GDFQ's ranges, docs/methods.md §1).

        GDFQ's code also divides by (1 - β^t) every step, which compounds rather
        than corrects; we start the EMA at the first batch's min/max instead.
        """
        b = self.ema_decay
        mn, mx = x.min().double(), x.max().double()  # on the device: no host read per step
        if not self.is_initialized:  # the first batch starts the EMA
            self.lo.copy_(mn)
            self.hi.copy_(mx)
        else:  # in float64, then stored as float32: what Python-float arithmetic on the values did before
            self.lo.copy_(self.lo.double() * b + mn * (1 - b))
            self.hi.copy_(self.hi.double() * b + mx * (1 - b))
        self.ema_steps += 1
        self.mark_initialized()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode}, range=[{float(self.lo):.4g}, {float(self.hi):.4g}]"
