"""Model registry: decorated factory functions, timm style.

``@register_model("resnet20")`` records a factory ``fn(**kwargs) -> nn.Module``;
``create_model(name, **kwargs)`` is the one public constructor and fails with the
list of known names. ``None`` kwargs are dropped so unset CLI options never
override a model's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from pipeline.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def deco(fn: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())} (or give file.py:factory)")
    return _REGISTRY[name](**{k: v for k, v in kwargs.items() if v is not None})
