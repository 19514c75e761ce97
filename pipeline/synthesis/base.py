"""The synthesis strategy protocol and its registry.

A method is a small config dataclass plus a class with ``synthesize``,
``calibrate`` and ``train``; the registry maps names to both, so
``--method hast`` needs no if/elif anywhere.

* ``synthesize`` (synth stage) returns the method's pool: the fixed image set
  of an inversion method (ZeroQ, HAST), or samples of the warmed-up generator
  of a generator method (GDFQ, LRQ, FDDA, ZAQ), whose weights ride along in
  ``SyntheticSet.extras`` so the qat stage can continue training it.
* ``calibrate`` (qat stage) initialises the quantizer ranges; default: on the pool.
* ``train`` (qat stage) owns the QAT loop; default (:class:`Strategy`): KD on
  the fixed pool with :func:`pipeline.quant.qat.train_qat`. Generator methods
  train their generator jointly with the quantized model here.

The held-out set for the checks is *not* the method's: the synth stage always
makes it by plain BN inversion from another seed, so every method is judged on
the same images.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.card import ModelCard
from pipeline.synthesis.dataset import SyntheticSet
from pipeline.train.checkpoint import NO_CHECKPOINTS, Checkpointer, Checkpoints
from pipeline.train.placement import CPU, Placement


@dataclass(frozen=True)
class RealData:
    """Real labelled images a data-needing method (FDDA) was given with ``--calib-data``."""

    images: np.ndarray  # float32 N×C×H×W in the card's pixel range
    labels: np.ndarray  # int64 N


@dataclass
class QATJob:
    """Everything a method's ``calibrate``/``train`` gets from the qat stage."""

    student: nn.Module  # fake-quant model (ranges not yet initialised before ``calibrate``)
    teacher: nn.Module
    card: ModelCard
    pool: SyntheticSet
    settings: Any  # pipeline.quant.qat.QATSettings
    seed: int = 0
    calib_images: int = 256
    act_init: str = "mse"
    log: Callable[[str], None] = field(default=lambda _m: None)
    checkpoint: Checkpointer | None = None  # the QAT loop's checkpoint (the qat stage's), or none


class Synthesizer(Protocol):
    name: str
    needs_calib_data: bool

    def synthesize(self, teacher: nn.Module, card: ModelCard, num_images: int, seed: int,
                   calib: RealData | None = None) -> SyntheticSet: ...

    def calibrate(self, job: QATJob) -> None: ...

    def train(self, job: QATJob) -> list[float]: ...


class Strategy:
    """Default ``calibrate`` and ``train``: ranges from the pool, then KD on the pool (the fixed-pool methods).

    ``placement`` (set by :func:`create_method`) is where the method computes: every tensor it makes lives on
    ``placement.device``, every random draw comes from ``placement.generator(...)``. ``checkpoints`` (set by the
    synth stage) is where its synthesis loops save their progress so a killed run resumes inside them.
    """

    name = "strategy"
    needs_calib_data = False
    placement: Placement = CPU
    checkpoints: Checkpoints = NO_CHECKPOINTS

    def calibrate(self, job: QATJob) -> None:
        from pipeline.quant.calibrate import calibrate

        x = torch.from_numpy(job.pool.images[: job.calib_images]).to(self.placement.device)
        calibrate(job.student, [x[i : i + 64] for i in range(0, len(x), 64)], act_init=job.act_init)

    def train(self, job: QATJob) -> list[float]:
        from pipeline.quant.qat import train_qat

        if not job.settings.steps:
            return []
        x, y = torch.from_numpy(job.pool.images), torch.from_numpy(job.pool.labels)
        return train_qat(job.student, job.teacher, x, y, job.settings, seed=job.seed, placement=self.placement,
                         checkpoint=job.checkpoint)


@dataclass(frozen=True)
class _Entry:
    config_cls: type
    factory: Callable[[Any], Synthesizer]
    presets: dict[str, dict[str, Any]]  # per-method budgets: {"fast": {dotted config key: value}, "paper": {...}}
    protocol: dict[str, Any]  # the paper profile's training settings of the method (its published optimisers), dotted keys


_METHODS: dict[str, _Entry] = {}


def register_method(name: str, config: type, presets: dict[str, dict[str, Any]] | None = None,
                    protocol: dict[str, Any] | None = None) -> Callable:
    """Register a method: its options dataclass, its budget presets (``--budget fast`` / ``paper``) and its published
    training protocol (what ``--profile paper`` applies: the Q optimiser and schedule, the method's own optimiser
    settings where they differ from its defaults), kept beside its code. A preset or protocol maps dotted run-config
    keys to values, as ``--set`` takes them (``synthesis.options`` as a mapping merged into the options)."""

    def deco(cls: Callable[[Any], Synthesizer]) -> Callable[[Any], Synthesizer]:
        _METHODS[name] = _Entry(config, cls, dict(presets or {}), dict(protocol or {}))
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def _entry(name: str) -> _Entry:
    if name not in _METHODS:
        close = difflib.get_close_matches(str(name), list_methods(), n=1)
        raise ConfigError(f"unknown synthesis method {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f"; choose one of {', '.join(list_methods())}")
    return _METHODS[name]


def method_config_class(name: str) -> type:
    return _entry(name).config_cls


def method_presets(name: str) -> dict[str, dict[str, Any]]:
    """The method's budget presets by budget name (``fast``, ``paper``)."""
    return _entry(name).presets


def method_protocol(name: str) -> dict[str, Any]:
    """The method's published training protocol (dotted keys), which the paper profile layers over the budget."""
    return _entry(name).protocol


def preset_budgets() -> list[str]:
    """Every per-method budget name some method has a preset for, in registration order."""
    return list(dict.fromkeys(b for e in _METHODS.values() for b in e.presets))


def unknown_options(name: str, options: dict[str, Any]) -> str | None:
    """One line naming the options method ``name`` does not have, with the closest valid name; None when all are known."""
    known = sorted(f.name for f in fields(method_config_class(name)))
    unknown = sorted(set(options) - set(known))
    if not unknown:
        return None
    close = difflib.get_close_matches(unknown[0], known, n=1)
    return (f"method {name!r} has no option{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}"
            + (f"; did you mean {close[0]!r}?" if close else "") + f" (its options: {', '.join(known)})")


# Methods whose own images need no BatchNorm: ZAQ's generator is trained against the quantized model's
# disagreement with the teacher, not against BN statistics. Every other one matches BN statistics.
SYNTHESIZES_WITHOUT_BN = frozenset({"zaq"})
HOLDOUT_METHOD = "bn-inversion"  # the held-out set for the checks (pipeline/stages/synth.py), whatever the method


def no_batchnorm_message() -> str:
    """What a model without BatchNorm2d gets, whatever the method: no method here can run it, so none is suggested.

    The held-out set that every run is checked on is always made by bn-inversion, which needs BN statistics; so
    even zaq, whose own images need none, cannot run on such a model.
    """
    need = [m for m in list_methods() if m not in SYNTHESIZES_WITHOUT_BN]
    free = [m for m in list_methods() if m in SYNTHESIZES_WITHOUT_BN]
    return (f"model has no BatchNorm2d layer, and no synthesis method here can run without one: "
            f"the held-out check images are always made by {HOLDOUT_METHOD}, which matches BN statistics, "
            f"and {', '.join(need)} match them for their own images too"
            + (f" ({', '.join(free)} does not, but still needs the held-out set)" if free else "")
            + "; give a model trained with BatchNorm2d layers")


def create_method(name: str, overrides: dict[str, Any] | None = None, placement: Placement = CPU) -> Synthesizer:
    """The method ``name`` with its options, computing on ``placement`` (device, precision, ranks)."""
    cfg_cls = method_config_class(name)
    overrides = dict(overrides or {})
    unknown = unknown_options(name, overrides)
    if unknown:
        raise ConfigError(unknown)
    try:
        cfg = cfg_cls(**overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method {name!r}: bad option value ({exc})") from None
    method = _entry(name).factory(cfg)
    method.placement = placement
    return method
