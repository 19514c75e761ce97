"""Load the model to quantize: the bundled default, a zoo architecture, or a user's ``file.py:factory``.

Weights always load with ``torch.load(weights_only=True)``: a checkpoint is data,
never code. Every failure is a one-line :class:`ModelLoadError` that says what to do,
including what user code does that is not an ``Exception`` (``sys.exit()`` in a factory),
and a model whose tensors hold no values (meta device) or NaN/Inf is refused before any stage runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from pipeline.config import DEFAULT_MODEL, ModelConfig
from pipeline.errors import ModelLoadError, UserError
from pipeline.models.card import ModelCard, check_input_contract
from pipeline.models.registry import create_model, list_models

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED = {DEFAULT_MODEL: WEIGHTS_DIR / "fmnist_resnet20"}

# Terminal control sequences (CSI colour codes such as torch's "\x1b[1m", OSC titles, two-byte escapes) and other C0 controls.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TEXT_LIMIT = 300  # whole sentences are added while the text stays this short
_SENTENCE_MAX = 1000  # a first sentence longer than this is shortened at a word, with a visible " …"


def exception_text(exc: BaseException, limit: int = _TEXT_LIMIT) -> str:
    """An exception's message as one plain line to embed in ours: no colour codes, no line breaks, whole sentences.

    Library messages are written for a terminal: torch's weights-only refusal wraps advice in
    ANSI bold and puts the actual reason (``WeightsUnpickler error: ...``) after several lines
    of it. Cutting at a fixed width lost the reason mid-sentence; this keeps the reason and as
    many whole sentences as fit in ``limit`` characters (always the first).
    """
    text = _CONTROL.sub("", _ANSI.sub("", str(exc)).replace("\t", " "))
    reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if reason:  # the refused global or opcode; torch's advice around it is about loading unsafely, which we never do
        text = _SENTENCE_END.split(reason.group(1).strip())[0]
    text = " ".join(text.split())
    if not text:
        return type(exc).__name__
    sentences = _SENTENCE_END.split(text)
    out = sentences[0]
    for s in sentences[1:]:
        if len(out) + 1 + len(s) > limit:
            break
        out += " " + s
    if len(out) > _SENTENCE_MAX:
        out = out[:_SENTENCE_MAX].rsplit(" ", 1)[0] + " …"
    return out


def _sentence(text: str) -> str:
    """``text`` ending as a sentence, for a message that goes on after it."""
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def _raised(exc: BaseException) -> str:
    """What user code did, as a phrase: ``called sys.exit(3)`` or ``raised ValueError: ...``."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({'' if exc.code is None else repr(exc.code)})"
    return f"raised {type(exc).__name__}: {exception_text(exc)}"


def _short(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


FILE_FIX = ("save them again from a model whose tensors hold values (a model on the CPU, not on torch.device('meta'))",
            "save them again from a healthy training state (not diverged or corrupted)")
FACTORY_FIX = ("build the model with real tensors (not under torch.device('meta') or an empty-weights context), "
               "or give them values in the factory with load_state_dict(state, assign=True)",
               "check how the factory initialises or loads them, or give healthy --weights")


def check_values(tensors: Iterable[tuple[str, torch.Tensor]], what: str, fix: tuple[str, str]) -> None:
    """Refuse tensors that hold no values (meta device) or NaN/Inf: every later stage would compute garbage from them.

    ``what`` names the source in the message (a weights file, a factory's model); ``fix`` says what to do
    about meta tensors and about NaN/Inf (:data:`FILE_FIX`, :data:`FACTORY_FIX`).
    """
    tensors = list(tensors)
    meta = [k for k, t in tensors if t.is_meta]
    if meta:
        raise ModelLoadError(f"{what} has meta-device tensors (no values): {_short(meta)}; {fix[0]}")
    bad = [k for k, t in tensors if t.layout == torch.strided and (t.is_floating_point() or t.is_complex())
           and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelLoadError(f"{what} has NaN or Inf values in {_short(bad)}; {fix[1]}")


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise ModelLoadError(f"bad input shape {text!r}: give C,H,W, e.g. 3,32,32")
    return dims  # type: ignore[return-value]


def load_factory(spec: str) -> nn.Module:
    """Import ``path/to/file.py`` and call ``factory()`` from it.

    User code may raise anything, ``SystemExit`` included (a ``sys.exit()`` left in a script
    ended the run with exit code 0 and no message); only ``KeyboardInterrupt`` passes through.
    """
    file, _, fn = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} not found (expected file.py:factory)")
    mod_name = f"zsq_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"  # the same in every process
    try:
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  (user code may raise anything, SystemExit included)
        sys.modules.pop(mod_name, None)
        raise ModelLoadError(f"importing {path} failed: it {_raised(exc)}") from None
    factory = getattr(module, fn, None)
    if not callable(factory):
        names = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise ModelLoadError(f"{path} has no callable {fn!r}; callables there: {', '.join(names) or 'none'}")
    try:
        model = factory()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001
        raise ModelLoadError(f"{spec}() {_raised(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"weights file {path} not found")
    if path.is_dir():
        raise ModelLoadError(f"weights file {path} is a directory; give the checkpoint file (saved with torch.save)")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"weights file {path} is empty (0 bytes); save it again with torch.save(model.state_dict(), path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's weights-only refusal of a pickled object or of garbage bytes
        reason = _sentence(exception_text(exc))
        raise ModelLoadError(f"weights file {path} is corrupt or holds more than tensors: a safe load (weights_only=True) "
                             f"refuses it: {reason} Save the weights alone: torch.save(model.state_dict(), path)") from None
    except Exception as exc:  # noqa: BLE001  (pickle/zip errors vary)
        raise ModelLoadError(f"weights file {path} is corrupt or not a torch checkpoint of tensors ({exception_text(exc)})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ModelLoadError(f"weights file {path} holds no state dict (a mapping of parameter names to tensors)")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    check_values(state.items(), f"weights file {path}", FILE_FIX)
    return state


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)

    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if mismatched:
        problems.append("shape mismatch: " + _short([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]))
    if problems:
        raise ModelLoadError(f"weights {source} do not match the model: " + "; ".join(problems))
    try:
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001  (a module's own _load_from_state_dict may refuse a value)
        raise ModelLoadError(f"weights {source} could not be loaded into the model: {exception_text(exc)}") from None


def _card_for(cfg: ModelConfig, name: str, shape: tuple[int, int, int], num_classes: int) -> ModelCard:
    c = shape[0]
    mean = tuple(cfg.mean) if cfg.mean else (0.5,) * c
    std = tuple(cfg.std) if cfg.std else (0.25,) * c
    try:
        return ModelCard(name, shape, num_classes, mean, std, tuple(cfg.pixel_range), normalization_inside=True)
    except ValueError as exc:
        raise ModelLoadError(exception_text(exc)) from None


def _num_classes(model: nn.Module, shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        try:
            out = model.eval()(torch.zeros(2, *shape))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (user code: SystemExit included)
            raise ModelLoadError(f"model fails on an input of shape {(2, *shape)}: it {_raised(exc)}; check --input-shape") from None
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(f"model returns {type(out).__name__}, not a tensor: its forward must return the (batch, classes) "
                             "logits (wrap it in a module that returns them)")
    if out.dim() != 2:
        raise ModelLoadError(f"model output has shape {tuple(out.shape)}; expected (batch, classes) logits")
    if out.shape[1] < 2:
        raise ModelLoadError(f"model outputs {out.shape[1]} logit(s) per image; a classifier has at least 2 classes "
                             "(for a binary model with one logit z, return torch.cat([-z, z], 1))")
    if not bool(torch.isfinite(out).all()):
        raise ModelLoadError(f"model outputs NaN or Inf on an all-zero input of shape {(2, *shape)}; check its forward and weights")
    return int(out.shape[1])


def _check_num_classes(value: object) -> None:
    """``--num-classes 0`` became the zoo default of 10 and was ignored by the bundled model: refuse it for every kind."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ModelLoadError(f"--num-classes {value}: a classifier has at least 2 classes; give the number of classes "
                             "the model outputs, or leave it out to read it from the model")


def _check_bundled_request(cfg: ModelConfig, card: ModelCard) -> None:
    """The bundled model has a fixed input contract: shape, class count or statistics asked for otherwise are an error, not ignored."""
    asked = []
    if cfg.input_shape and parse_shape(cfg.input_shape) != tuple(card.input_shape):
        asked.append(f"--input-shape {cfg.input_shape}")
    if cfg.num_classes is not None and cfg.num_classes != card.num_classes:
        asked.append(f"--num-classes {cfg.num_classes}")
    for key, own in (("mean", card.mean), ("std", card.std), ("pixel_range", card.pixel_range)):
        value = getattr(cfg, key)
        if value and tuple(value) != tuple(own):
            asked.append(f"model.{key} {list(value)}")
    if asked:
        raise ModelLoadError(
            f"the bundled model {cfg.name!r} takes {card.describe_input()} (pixels {card.pixel_range[0]:g}..{card.pixel_range[1]:g}); "
            f"{' and '.join(asked)} cannot change that. To quantize another model give --model path/to/file.py:factory "
            f"(with --weights and --input-shape) or a zoo architecture ({', '.join(list_models())})")


def _build_zoo(cfg: ModelConfig, shape: tuple[int, int, int]) -> nn.Module:
    kwargs = {"in_channels": shape[0], "num_classes": cfg.num_classes or 10}
    if cfg.mean and cfg.std:
        kwargs.update(mean=cfg.mean, std=cfg.std)
    with torch.random.fork_rng():  # a zoo model without --weights is the same random model in every process and stage
        torch.manual_seed(0)
        try:
            return create_model(cfg.name, **kwargs)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001  (an architecture's own argument checks)
            raise ModelLoadError(f"building {cfg.name} with {kwargs} failed: {exception_text(exc)}") from None


def load_model(cfg: ModelConfig) -> tuple[nn.Module, ModelCard]:
    """The FP model in eval mode, and its card."""
    _check_num_classes(cfg.num_classes)
    if cfg.name in BUNDLED:
        base = BUNDLED[cfg.name]
        if not base.with_suffix(".json").exists():
            raise ModelLoadError(f"bundled model {cfg.name!r} is missing its card; run python -m benchmarks.train_default_model")
        card = ModelCard.load(base.with_suffix(".json"))
        _check_bundled_request(cfg, card)
        model = create_model(card.extra["arch"], **card.extra["arch_kwargs"])
        weights = Path(cfg.weights) if cfg.weights else base.with_suffix(".pt")
        apply_weights(model, read_state_dict(weights), str(weights))
        return model.eval(), card
    if ":" in cfg.name and cfg.name.rpartition(":")[0].endswith(".py"):
        if not cfg.input_shape:
            raise ModelLoadError("a file.py:factory model needs --input-shape C,H,W")
        shape = parse_shape(cfg.input_shape)
        _check_contract(cfg, shape)
        model = load_factory(cfg.name)
        name = Path(cfg.name.rpartition(":")[0]).stem
        source = f"the model from {cfg.name}()"
    elif cfg.name in list_models():
        shape = parse_shape(cfg.input_shape or "3,32,32")
        _check_contract(cfg, shape)
        model = _build_zoo(cfg, shape)
        name = source = cfg.name
    else:
        raise ModelLoadError(
            f"unknown model {cfg.name!r}: use the bundled {DEFAULT_MODEL!r}, a zoo architecture "
            f"({', '.join(list_models())}) or path/to/file.py:factory"
        )
    if cfg.weights:
        apply_weights(model, read_state_dict(Path(cfg.weights)), cfg.weights)
    check_values([*model.named_parameters(), *model.named_buffers()], source, FACTORY_FIX)
    model.eval()
    num_classes = _num_classes(model, shape)
    if cfg.num_classes and cfg.num_classes != num_classes:
        raise ModelLoadError(f"model outputs {num_classes} classes but --num-classes is {cfg.num_classes}")
    return model, _card_for(cfg, name, shape, num_classes)


def _check_contract(cfg: ModelConfig, shape: tuple[int, int, int]) -> None:
    """mean/std/pixel_range against the channels, before the model is built (see :func:`check_input_contract`)."""
    c = shape[0]
    try:
        check_input_contract(shape, tuple(cfg.mean or (0.5,) * c), tuple(cfg.std or (0.25,) * c), tuple(cfg.pixel_range))
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(exception_text(exc)) from None


def model_digest(model: nn.Module) -> str:
    """A digest of the model as loaded: its code, structure and every parameter and buffer.

    The run's stage keys include it, so editing anything the model is made of (a module the factory imports,
    a helper its ``forward`` calls, a weight) invalidates the cached stages, not only edits of the files named
    on the command line. Three parts: the source of every module class in the tree (what ``forward`` does),
    the torch.fx graph when the model traces (inlines module-level helpers the class source does not show),
    and ``repr`` plus the state dict (hyperparameters, shapes, values).
    """
    import hashlib
    import inspect

    h = hashlib.sha256()
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        try:
            h.update(inspect.getsource(cls).encode())
        except (OSError, TypeError):  # built in, or defined where inspect cannot find the source
            pass
    try:
        h.update(torch.fx.symbolic_trace(model).code.encode())
    except Exception:  # noqa: BLE001  (an untraceable model is judged by its classes' source)
        h.update(b"untraceable")
    h.update(repr(model).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def describe_bundled() -> dict:
    return {name: json.loads(base.with_suffix(".json").read_text()) for name, base in BUNDLED.items() if base.with_suffix(".json").exists()}
