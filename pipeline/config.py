"""Run configuration: frozen dataclasses, one per concern, parsed once at the CLI edge.

Precedence: defaults < ``budget`` preset < YAML file (``--config``) < CLI flags
< ``--set section.key=value``. Unknown keys fail with the closest valid name;
values are converted to the field's type, and a closed choice (a ``Literal`` field)
fails with its valid values and the closest one. The resolved config is written into
the run folder and the report as ``{_type, _version, _data}``.

Defaults that belong to another module are read from it, not retyped: the QAT loop's
from :class:`pipeline.quant.settings.QATSettings`, the host check's from
:data:`runtimes.benchmark.HOST_CHECK`, each method's budget presets from its module
(through the method registry, imported on first use: it imports torch).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError
from pipeline.quant import overflow
from pipeline.quant.overflow import OverflowMode
from pipeline.quant.scheme import BitScheme
from pipeline.quant.settings import Accelerator, ActInit, ActRange, Precision, Profile, QATSettings
from runtimes.benchmark import HOST_CHECK, BenchSettings

CONFIG_VERSION = 1
TFLiteIO = Literal["int8", "float"]  # edges of the integer .tflite
DEFAULT_MODEL = "fmnist_resnet20"
DEFAULT_METHOD = "bn-inversion"


@dataclass(frozen=True)
class ModelConfig:
    """Which model: a bundled default, a zoo architecture, or ``file.py:factory``; weights from ``weights``."""

    name: str = DEFAULT_MODEL
    weights: str | None = None
    input_shape: str | None = None  # "C,H,W"; required for file.py:factory models
    num_classes: int | None = None
    mean: list[float] | None = None  # pixel statistics used to initialise synthetic images
    std: list[float] | None = None
    pixel_range: list[float] = field(default_factory=lambda: [0.0, 1.0])


@dataclass(frozen=True)
class SynthesisConfig:
    method: str = DEFAULT_METHOD
    num_images: int = 256  # training set for QAT
    holdout_images: int = 128  # disjoint set for the checks, never trained on
    seed: int = 0
    holdout_seed: int = 1000
    # 200 inversion steps, not fewer: at 60 the teacher already labels every image as its target, but the BN
    # statistics are not matched yet, and 300 KD steps on such images overfit them (W4A4 real accuracy peaks at
    # 85 % after 100 steps, then falls to 78 %); at 200 the same loop reaches 91-92 % (benchmarks/RESULTS.md).
    options: dict[str, Any] = field(default_factory=lambda: {"batch_size": 64, "iterations": 200})
    # The held-out set for the checks is always plain bn-inversion (same images whatever the method).
    holdout_options: dict[str, Any] = field(default_factory=lambda: {"batch_size": 64, "iterations": 200})
    calib_data: str | None = None  # real images, >= 1 per class: only fdda (not data-free) uses them

    def __post_init__(self) -> None:
        if self.num_images < 2 or self.holdout_images < 1:
            raise ConfigError("synthesis.num_images must be >= 2 and synthesis.holdout_images >= 1")
        if self.seed == self.holdout_seed:
            raise ConfigError("synthesis.seed and synthesis.holdout_seed must differ (the holdout set must be disjoint)")
        _registry().method_config_class(self.method)  # an unknown method fails with the closest registered name


@dataclass(frozen=True)
class QATConfig:
    bits: str = "w8a8"
    profile: Profile = "deploy"
    first_last_bits: int | None = None
    # auto | on | off: 8-bit weights on ±63 so that u8×s8 int8 kernels of x86 CPUs without VNNI cannot saturate
    # (pipeline/quant/overflow.py); auto = on when an onnx or openvino artifact gets 8-bit weights
    overflow_fix: OverflowMode = "auto"
    act_range: ActRange = "learned"
    act_init: ActInit = "mse"
    calib_images: int = 256
    # The training loop's settings: defaults from QATSettings (their one source), handed back by settings().
    steps: int = QATSettings.steps
    batch_size: int = QATSettings.batch_size
    lr: float = QATSettings.lr
    quant_lr: float = QATSettings.quant_lr
    temperature: float = QATSettings.temperature
    ce_weight: float = QATSettings.ce_weight
    ema_freeze_step: int = QATSettings.ema_freeze_step
    seed: int = 0

    def __post_init__(self) -> None:
        _ = self.scheme  # a bad bits string fails here, at parse time
        if self.steps < 0 or self.batch_size < 1 or self.calib_images < 1:
            raise ConfigError("qat.steps must be >= 0, qat.batch_size and qat.calib_images >= 1")

    @functools.cached_property
    def scheme(self) -> BitScheme:
        """``bits`` and ``first_last_bits`` parsed once into the scheme object (overflow grid: :attr:`RunConfig.scheme`)."""
        return BitScheme.parse(self.bits, self.first_last_bits)

    def settings(self) -> QATSettings:
        """The QAT loop's settings: this section's values of every QATSettings field it has, defaults for the rest."""
        return QATSettings(**{name: getattr(self, name) for name in _QAT_LOOP_FIELDS})


@dataclass(frozen=True)
class ExportConfig:
    targets: list[str] = field(default_factory=lambda: ["onnx"])
    min_integer_coverage: float = 1.0
    tflite_io: TFLiteIO = "int8"  # edges of the integer .tflite: int8 (scale/zero point in export.json) or float
    tflite_calibrate: bool = False  # fallback: PT2E calibration on the held-out synthetic set instead of the QAT scales

    def __post_init__(self) -> None:
        # Canonical format names from the exporters' registry, parsed once here: "all" and aliases (ort, litert, ov)
        # work wherever targets are given (--target, --set, YAML); an unknown one fails with the closest name.
        from exporters import registry
        from exporters.errors import ExportError

        try:
            object.__setattr__(self, "targets", registry.resolve(self.targets))
        except ExportError as exc:
            raise ConfigError(str(exc)) from None
        if not 0.0 <= self.min_integer_coverage <= 1.0:
            raise ConfigError("export.min_integer_coverage must be in [0, 1]")


@dataclass(frozen=True)
class HostConfig:
    """Where synthesis and QAT compute (pipeline/train/placement.py): auto = CUDA when this torch sees a GPU.

    ``precision`` auto is bf16 autocast on a CUDA device with bf16 (fp16 + GradScaler without), fp32 on the CPU;
    fake-quant rounding, scales, BN statistics and KD stay in fp32 either way. Under ``torchrun`` the ranks
    split the work (README: GPU host).
    """

    accelerator: Accelerator = "auto"
    precision: Precision = "auto"
    # NHWC convolutions for synthesis and QAT: 1.59x synthesis, 1.20x QAT steps on this 2-core CPU
    # (benchmarks/RESULTS.md, "Host throughput"); the artifacts do not change layout because of it.
    channels_last: bool = True
    # torch.compile of the FP model for synthesis: 2.77x images/s after ~50 s of compilation on this CPU (worth it for
    # the fast and paper budgets, not for a smoke run); QAT keeps eager mode (its losses trace the model with fx).
    compile: bool = False


@dataclass(frozen=True)
class CheckConfig:
    eval_data: str | None = None  # ImageFolder directory or .npz with images+labels
    eval_limit: int | None = None
    bench: bool = True
    threads: int = 1
    # The timing protocol: defaults from runtimes.benchmark.HOST_CHECK (the host's short one), handed back by bench_settings().
    warmup_runs: int = HOST_CHECK.warmup_runs
    warmup_min_secs: float = HOST_CHECK.warmup_min_secs
    num_runs: int = HOST_CHECK.num_runs
    min_secs: float = HOST_CHECK.min_secs
    max_secs: float = HOST_CHECK.max_secs

    def __post_init__(self) -> None:
        try:
            self.bench_settings()
        except ValueError as exc:
            raise ConfigError(f"bad check timing ({', '.join('check.' + n for n in _BENCH_FIELDS)}): {exc}") from None

    def bench_settings(self) -> BenchSettings:
        """The check stage's timing protocol: HOST_CHECK with this section's values."""
        return dataclasses.replace(HOST_CHECK, **{name: getattr(self, name) for name in _BENCH_FIELDS})


_QAT_LOOP_FIELDS = tuple(f.name for f in fields(QATSettings) if f.name in {g.name for g in fields(QATConfig)})
_BENCH_FIELDS = tuple(f.name for f in fields(BenchSettings) if f.name in {g.name for g in fields(CheckConfig)})


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    host: HostConfig = field(default_factory=HostConfig)
    out: str = "runs/default"

    @functools.cached_property
    def scheme(self) -> BitScheme:
        """The run's bit scheme, ``qat.overflow_fix`` resolved against ``export.targets``: what every stage uses."""
        q = self.qat
        safe = overflow.resolve(q.overflow_fix, q.scheme.w_bits, q.scheme.first_last_bits, self.export.targets, q.profile)
        return dataclasses.replace(q.scheme, overflow_safe=safe)

    def to_dict(self) -> dict:
        return {"_type": "zsq.RunConfig", "_version": CONFIG_VERSION, "_data": dataclasses.asdict(self)}

    def section(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, name))


# The host check of the smoke budgets (tiny, and every method's fast in pipeline/synthesis/presets.py): enough
# runs to see each artifact run and time it roughly, in a fraction of HOST_CHECK's time.
SMOKE_CHECK: dict[str, Any] = {"check.num_runs": 20, "check.min_secs": 0.2, "check.warmup_min_secs": 0.1}

# Budgets: named presets over the same fields (a preset file overrides only what differs). These generic ones apply
# to every method; the per-method ones (``fast``, ``paper``) live beside each method's code (pipeline/synthesis/presets.py).
BUDGETS: dict[str, dict[str, Any]] = {
    "default": {},
    # a smoke run that checks the whole path in about a minute on 2 cores
    "tiny": {
        "synthesis.num_images": 64, "synthesis.holdout_images": 64, "synthesis.options": {"batch_size": 64, "iterations": 40},
        "synthesis.holdout_options": {"batch_size": 64, "iterations": 40},
        "qat.steps": 20, "qat.calib_images": 64, **SMOKE_CHECK,
    },
}


def _registry() -> types.ModuleType:
    """The synthesis method registry with every method registered. Imported on first use, not at import time: it
    imports torch, and the method modules import this one (pipeline/synthesis/presets.py)."""
    import pipeline.synthesis  # noqa: F401  (registration)
    from pipeline.synthesis import base

    return base


def budget_names() -> list[str]:
    """``default``, ``tiny``, then every per-method budget some method has a preset for (``fast``, ``paper``)."""
    return [*BUDGETS, *_registry().preset_budgets()]


def _check_budget(budget: str) -> None:
    if budget in BUDGETS:
        return
    choices = budget_names()
    if budget not in choices:
        close = difflib.get_close_matches(budget, choices, n=1)
        raise ConfigError(f"unknown budget {budget!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f"; choose one of {', '.join(choices)}")


def budget_preset(budget: str, method: str) -> dict[str, Any]:
    """The overrides of a named budget: generic (``default``, ``tiny``) or the method's own (``fast``, ``paper``)."""
    if budget in BUDGETS:
        return BUDGETS[budget]
    _check_budget(budget)
    registry = _registry()
    presets = registry.method_presets(method)
    if budget not in presets:
        having = [m for m in registry.list_methods() if budget in registry.method_presets(m)]
        close = difflib.get_close_matches(method, having, n=1)
        raise ConfigError(f"budget {budget!r} has no preset for method {method!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f"; methods with one: {', '.join(having)}")
    return presets[budget]


def _type_of(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _choice(value: Any, choices: tuple, key: str) -> Any:
    """A closed choice (a ``Literal`` field): the value, or one line naming the key, the valid values and the closest."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        # YAML 1.1 reads on/off/yes/no/true/false as booleans (--set qat.overflow_fix=off): take the choices' spelling
        spelled = [c for c in (("on", "yes", "true") if value else ("off", "no", "false")) if c in choices]
        value = spelled[0] if spelled else value
    if value in choices:
        return value
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1) or difflib.get_close_matches(str(value).lower(), names, n=1)
    raise ConfigError(f"{key} must be one of {', '.join(names)}, got {value!r}" + (f"; did you mean {close[0]!r}?" if close else ""))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _choice(value, typing.get_args(tp), key)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _convert(value, args[0], key)
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return tp(value)
        if origin is list:
            (inner,) = typing.get_args(tp)
            items = value.split(",") if isinstance(value, str) else list(value)
            return [_convert(v.strip() if isinstance(v, str) else v, inner, key) for v in items if v != ""]
        if origin is dict:
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"bad value {value!r} for {key}: expected {getattr(tp, '__name__', str(tp))}") from None
    return value


def _parse_scalar(text: str) -> Any:
    """``--set`` values arrive as text; YAML parses them so 1e-4, true and [1,2] work."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply ``{"qat.steps": 2000, "synthesis.options.iterations": 50}``; strict keys, typed values."""
    sections = {f.name: f for f in fields(RunConfig)}
    updates: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] not in sections:
            close = difflib.get_close_matches(parts[0], sections, n=1)
            raise ConfigError(f"unknown config key {key!r}" + (f"; did you mean {close[0]!r}?" if close else f"; sections: {', '.join(sections)}"))
        if len(parts) == 1:
            if dataclasses.is_dataclass(getattr(cfg, parts[0])):
                if not isinstance(value, dict):
                    raise ConfigError(f"{key} is a section: give {key}.<field>=value")
                for k, v in value.items():
                    updates.setdefault(parts[0], {})[k] = v
            else:
                top[parts[0]] = _convert(value, _type_of(RunConfig, parts[0]), key)
            continue
        section_cls = type(getattr(cfg, parts[0]))
        names = {f.name for f in fields(section_cls)}
        if parts[1] not in names:
            close = difflib.get_close_matches(parts[1], names, n=1)
            hint = f"; did you mean {parts[0]}.{close[0]}?" if close else f"; valid keys: {', '.join(sorted(names))}"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        if len(parts) > 2:  # into a dict field, e.g. synthesis.options.iterations
            current = dict(updates.get(parts[0], {}).get(parts[1], getattr(getattr(cfg, parts[0]), parts[1])) or {})
            current[".".join(parts[2:])] = value
            updates.setdefault(parts[0], {})[parts[1]] = current
        else:
            updates.setdefault(parts[0], {})[parts[1]] = value
    new_sections = {}
    for sec, vals in updates.items():
        section_cls = type(getattr(cfg, sec))
        converted = {k: _convert(v, _type_of(section_cls, k), f"{sec}.{k}") for k, v in vals.items()}
        try:
            new_sections[sec] = dataclasses.replace(getattr(cfg, sec), **converted)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad value in section {sec}: {exc}") from None
    return dataclasses.replace(cfg, **new_sections, **top)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """YAML sections → dotted keys (dict-valued fields such as ``synthesis.options`` stay whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not prefix and k in {f.name for f in fields(RunConfig)}:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, synthesis, qat, export, check)")
    data.pop("_type", None)
    data.pop("_version", None)
    return flatten(data.get("_data", data))


def _user_options(layers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The method options set in YAML/CLI/--set layers (None when none were)."""
    user: dict[str, Any] | None = None
    for layer in layers:
        for k, v in layer.items():
            if k == "synthesis.options":
                user = {**(user or {}), **_convert(v, dict[str, Any], k)}
            elif k.startswith("synthesis.options."):
                user = {**(user or {}), k[len("synthesis.options."):]: v}
    return user


def build_config(budget: str = "default", yaml_path: Path | None = None, cli: dict[str, Any] | None = None,
                 sets: list[str] | None = None) -> RunConfig:
    parsed: dict[str, Any] = {}
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"bad --set {item!r}: use section.key=value, e.g. qat.steps=2000")
        k, v = item.split("=", 1)
        parsed[k.strip()] = _parse_scalar(v)
    layers = [load_yaml(yaml_path) if yaml_path is not None else {}, {k: v for k, v in (cli or {}).items() if v is not None}, parsed]

    def resolve(preset: dict[str, Any]) -> RunConfig:
        cfg = apply_overrides(RunConfig(), preset)
        for layer in layers:
            cfg = apply_overrides(cfg, layer)
        return cfg

    _check_budget(budget)  # a misspelt budget first, whatever else is wrong
    method = resolve({}).synthesis.method  # a per-method budget: the method may come from any layer
    if budget in BUDGETS:
        preset = dict(BUDGETS[budget])
        if method != DEFAULT_METHOD:  # generic budgets' options are bn-inversion's: use the method's fast ones
            preset["synthesis.options"] = dict(_registry().method_presets(method).get("fast", {}).get("synthesis.options", {}))
    else:
        preset = budget_preset(budget, method)
    user = _user_options(layers)
    if user is not None:  # options given by the user extend the preset's instead of replacing them
        preset = {**preset, "synthesis.options": {**preset.get("synthesis.options", {}), **user}}
        layers[:] = [{k: v for k, v in layer.items() if not k.startswith("synthesis.options")} for layer in layers]
    return resolve(preset)
