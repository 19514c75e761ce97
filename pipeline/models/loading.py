"""Load the model to quantize: the bundled default, a zoo architecture, or a user's ``file.py:factory``.

Weights always load with ``torch.load(weights_only=True)``: a checkpoint is data,
never code. Every failure is a one-line :class:`ModelLoadError` that says what to do.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
from torch import nn

from pipeline.config import DEFAULT_MODEL, ModelConfig
from pipeline.errors import ModelLoadError
from pipeline.models.card import ModelCard
from pipeline.models.registry import create_model, list_models

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED = {DEFAULT_MODEL: WEIGHTS_DIR / "fmnist_resnet20"}


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise ModelLoadError(f"bad input shape {text!r}: give C,H,W, e.g. 3,32,32")
    return dims  # type: ignore[return-value]


def load_factory(spec: str) -> nn.Module:
    """Import ``path/to/file.py`` and call ``factory()`` from it."""
    file, _, fn = spec.rpartition(":")
    path = Path(file)
    if not path.exists():
        raise ModelLoadError(f"model file {path} not found (expected file.py:factory)")
    mod_name = f"zsq_user_model_{abs(hash(str(path.resolve())))}"
    try:
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001  (user code may raise anything)
        raise ModelLoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, fn, None)
    if not callable(factory):
        names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise ModelLoadError(f"{path} has no callable {fn!r}; callables there: {', '.join(names) or 'none'}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{spec}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"weights file {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle/zip errors vary)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"weights file {path} is corrupt or not a torch checkpoint of tensors ({first[:160]})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"weights file {path} holds no state dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)

    def short(keys: list[str]) -> str:
        return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

    problems = []
    if missing:
        problems.append(f"missing keys: {short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {short(unexpected)}")
    if mismatched:
        problems.append("shape mismatch: " + short([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]))
    if problems:
        raise ModelLoadError(f"weights {source} do not match the model: " + "; ".join(problems))
    model.load_state_dict(state)


def _card_for(cfg: ModelConfig, name: str, shape: tuple[int, int, int], num_classes: int) -> ModelCard:
    c = shape[0]
    mean = tuple(cfg.mean) if cfg.mean else (0.5,) * c
    std = tuple(cfg.std) if cfg.std else (0.25,) * c
    return ModelCard(name, shape, num_classes, mean, std, tuple(cfg.pixel_range), normalization_inside=True)


def _num_classes(model: nn.Module, shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        try:
            out = model.eval()(torch.zeros(2, *shape))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"model fails on an input of shape {(2, *shape)}: {type(exc).__name__}: {exc}; check --input-shape") from None
    if out.dim() != 2:
        raise ModelLoadError(f"model output has shape {tuple(out.shape)}; expected (batch, classes) logits")
    return int(out.shape[1])


def load_model(cfg: ModelConfig) -> tuple[nn.Module, ModelCard]:
    """The FP model in eval mode, and its card."""
    if cfg.name in BUNDLED:
        base = BUNDLED[cfg.name]
        if not base.with_suffix(".json").exists():
            raise ModelLoadError(f"bundled model {cfg.name!r} is missing its card; run python -m benchmarks.train_default_model")
        card = ModelCard.load(base.with_suffix(".json"))
        model = create_model(card.extra["arch"], **card.extra["arch_kwargs"])
        weights = Path(cfg.weights) if cfg.weights else base.with_suffix(".pt")
        apply_weights(model, read_state_dict(weights), str(weights))
        return model.eval(), card
    if ":" in cfg.name and cfg.name.rpartition(":")[0].endswith(".py"):
        if not cfg.input_shape:
            raise ModelLoadError("a file.py:factory model needs --input-shape C,H,W")
        shape = parse_shape(cfg.input_shape)
        model = load_factory(cfg.name)
        name = Path(cfg.name.rpartition(":")[0]).stem
    elif cfg.name in list_models():
        shape = parse_shape(cfg.input_shape or "3,32,32")
        kwargs = {"in_channels": shape[0], "num_classes": cfg.num_classes or 10}
        if cfg.mean and cfg.std:
            kwargs.update(mean=cfg.mean, std=cfg.std)
        with torch.random.fork_rng():  # a zoo model without --weights is the same random model in every process and stage
            torch.manual_seed(0)
            model = create_model(cfg.name, **kwargs)
        name = cfg.name
    else:
        raise ModelLoadError(
            f"unknown model {cfg.name!r}: use the bundled {DEFAULT_MODEL!r}, a zoo architecture "
            f"({', '.join(list_models())}) or path/to/file.py:factory"
        )
    if cfg.weights:
        apply_weights(model, read_state_dict(Path(cfg.weights)), cfg.weights)
    model.eval()
    num_classes = _num_classes(model, shape)
    if cfg.num_classes and cfg.num_classes != num_classes:
        raise ModelLoadError(f"model outputs {num_classes} classes but --num-classes is {cfg.num_classes}")
    return model, _card_for(cfg, name, shape, num_classes)


def describe_bundled() -> dict:
    return {name: json.loads(base.with_suffix(".json").read_text()) for name, base in BUNDLED.items() if base.with_suffix(".json").exists()}
