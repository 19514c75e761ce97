"""The synthesis strategy protocol and its registry.

A method is a small config dataclass plus a class with ``synthesize``; the
registry maps names to both, so ``--set synthesis.method=hast`` needs no
if/elif anywhere. Inversion methods return a fixed pool of images; generator
methods (GDFQ, ZAQ, LRQ) also return a pool for the checks and may hand QAT a
stream through ``qat_hooks`` (later issue).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.card import ModelCard
from pipeline.synthesis.dataset import SyntheticSet


class Synthesizer(Protocol):
    name: str

    def synthesize(self, teacher: nn.Module, card: ModelCard, num_images: int, seed: int) -> SyntheticSet: ...


@dataclass(frozen=True)
class _Entry:
    config_cls: type
    factory: Callable[[Any], Synthesizer]


_METHODS: dict[str, _Entry] = {}


def register_method(name: str, config: type) -> Callable:
    def deco(cls: Callable[[Any], Synthesizer]) -> Callable[[Any], Synthesizer]:
        _METHODS[name] = _Entry(config, cls)
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_config_class(name: str) -> type:
    if name not in _METHODS:
        raise ConfigError(f"unknown synthesis method {name!r}; choose one of {', '.join(list_methods())}")
    return _METHODS[name].config_cls


def create_method(name: str, overrides: dict[str, Any] | None = None) -> Synthesizer:
    cfg_cls = method_config_class(name)
    overrides = dict(overrides or {})
    known = {f.name for f in fields(cfg_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"method {name!r} has no option(s) {', '.join(unknown)}; options: {', '.join(sorted(known))}")
    return _METHODS[name].factory(cfg_cls(**overrides))
