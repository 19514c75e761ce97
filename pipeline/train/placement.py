"""Where training runs: the device, the numeric precision and this process's place among the ranks.

``--accelerator auto|cpu|cuda`` (auto: CUDA when available) and ``--precision auto|fp32|bf16|fp16``
(auto: bf16 on a CUDA device that supports it, fp16 with a GradScaler on one that does not, fp32 on
the CPU; bf16 on the CPU is allowed) resolve once into a :class:`Placement` that every stage uses:
models, generators, quantizer parameters, synthetic batches and random draws all live on
``placement.device``. Under ``torchrun`` the rank and world size come from its environment
(:mod:`pipeline.train.distributed`).

Reduced precision is autocast only: parameters, optimiser state, fake-quant rounding and clamping,
scales and zero points, BN-statistics losses and KL/KD stay in fp32 (each of those computes with
autocast switched off, see :func:`fp32_op`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import get_args

import torch

from pipeline.quant.settings import Accelerator, Precision

ACCELERATORS: tuple[str, ...] = get_args(Accelerator)
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class Placement:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # resolved: fp32 | bf16 | fp16
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    channels_last: bool = False  # NHWC activations and weights in the convolutions (faster here: benchmarks/RESULTS.md)

    @classmethod
    def resolve(cls, accelerator: str = "auto", precision: str = "auto", rank: int = 0, world_size: int = 1,
                local_rank: int = 0, channels_last: bool = False) -> "Placement":
        """The placement for these choices on this machine; a choice it cannot honour fails with what to do."""
        from pipeline.errors import ConfigError

        if accelerator not in ACCELERATORS:
            raise ConfigError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got {accelerator!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if accelerator == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--accelerator cuda: this torch build sees no CUDA device; install the CUDA build of torch "
                              "(README: GPU host) or use --accelerator cpu")
        use_cuda = accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available())
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if precision == "auto":
            precision = ("bf16" if _cuda_bf16() else "fp16") if use_cuda else "fp32"
        if precision == "fp16" and not use_cuda:
            raise ConfigError("--precision fp16 needs a CUDA device (it relies on a GradScaler); use bf16 or fp32 on the CPU")
        if precision == "bf16" and use_cuda and not _cuda_bf16():
            raise ConfigError("--precision bf16: this GPU has no bf16 support; use fp16 or fp32")
        return cls(device, precision, rank, world_size, local_rank, channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def model(self, m: torch.nn.Module) -> torch.nn.Module:
        """``m`` on this device, in this memory format (in place, as ``Module.to``)."""
        return m.to(self.device, memory_format=self.memory_format) if self.channels_last else m.to(self.device)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """An N×C×H×W batch on this device, in this memory format."""
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def key(self) -> dict:
        """What a stage key needs: each of these changes the numbers a stage computes."""
        return {"accelerator": self.device.type, "precision": self.precision, "world_size": self.world_size,
                "channels_last": self.channels_last}

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder."""
        return self.rank == 0

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None for fp32."""
        return _DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for a forward pass (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def generator(self, seed: int) -> torch.Generator:
        """A seeded random stream on this device: draws happen where the tensors live (no host copy per step).

        Streams differ between devices (a CPU run and a CUDA run with one seed draw different numbers), but each is
        reproducible on its own device.
        """
        return torch.Generator(device=self.device).manual_seed(seed)

    def describe(self) -> dict:
        """What the manifest records for a stage: accelerator, precision, world size, device names."""
        if self.device.type == "cuda":
            names = [torch.cuda.get_device_name(self.device)]
        else:
            from devices.environment import cpu_model

            names = [cpu_model()]
        return {"accelerator": self.device.type, "precision": self.precision, "world_size": self.world_size,
                "channels_last": self.channels_last, "devices": names}


CPU = Placement()  # the default: one process, fp32 on the CPU


def _first_tensor(obj: object) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _to_float(obj: object) -> object:
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, list):
        return [_to_float(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_to_float(o) for o in obj)
    return obj


def fp32_op(fn):
    """Decorator: run ``fn`` in fp32 with autocast off when autocast is on (losses over statistics, KL, margins).

    Outside autocast it calls ``fn`` unchanged, so fp32 runs compute exactly what they computed before.
    """
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = _first_tensor(args)
        if t is None or not torch.is_autocast_enabled(t.device.type):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=t.device.type, enabled=False):
            return fn(*_to_float(args), **{k: _to_float(v) for k, v in kwargs.items()})

    return wrapper
