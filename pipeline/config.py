"""Run configuration: frozen dataclasses, one per concern, parsed once at the CLI edge.

Precedence: defaults < ``budget`` preset < YAML file (``--config``) < CLI flags
< ``--set section.key=value``. Unknown keys fail with the closest valid name;
values are converted to the field's type. The resolved config is written into
the run folder and the report as ``{_type, _version, _data}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

CONFIG_VERSION = 1
TARGETS = ("onnx", "openvino", "tflite")
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


@dataclass(frozen=True)
class QATConfig:
    bits: str = "w8a8"
    profile: str = "deploy"
    first_last_bits: int | None = None
    # auto | on | off: 8-bit weights on ±63 so that u8×s8 int8 kernels of x86 CPUs without VNNI cannot saturate
    # (pipeline/quant/overflow.py); auto = on when an onnx or openvino artifact gets 8-bit weights
    overflow_fix: str = "auto"
    act_range: str = "learned"  # learned | ema
    act_init: str = "mse"  # mse | minmax | percentile
    calib_images: int = 256
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-5
    quant_lr: float = 1e-4
    temperature: float = 1.0
    ce_weight: float = 0.0
    ema_freeze_step: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        from pipeline.quant.prepare import PROFILES
        from pipeline.quant.scheme import BitScheme

        BitScheme.parse(self.bits, self.first_last_bits)
        if self.profile not in PROFILES:
            raise ConfigError(f"qat.profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        from pipeline.quant.overflow import MODES

        if self.overflow_fix not in MODES:
            close = difflib.get_close_matches(str(self.overflow_fix), MODES, n=1)
            raise ConfigError(f"qat.overflow_fix must be one of {', '.join(MODES)}, got {self.overflow_fix!r}"
                              + (f"; did you mean {close[0]!r}?" if close else ""))
        if self.act_range not in ("learned", "ema"):
            raise ConfigError("qat.act_range must be 'learned' or 'ema'")
        if self.act_init not in ("mse", "minmax", "percentile"):
            raise ConfigError("qat.act_init must be one of mse, minmax, percentile")
        if self.steps < 0 or self.batch_size < 1 or self.calib_images < 1:
            raise ConfigError("qat.steps must be >= 0, qat.batch_size and qat.calib_images >= 1")


@dataclass(frozen=True)
class ExportConfig:
    targets: list[str] = field(default_factory=lambda: ["onnx"])
    min_integer_coverage: float = 1.0
    tflite_io: str = "int8"  # edges of the integer .tflite: int8 (scale/zero point in export.json) or float
    tflite_calibrate: bool = False  # fallback: PT2E calibration on the held-out synthetic set instead of the QAT scales

    def __post_init__(self) -> None:
        if "all" in self.targets:  # the alias works wherever targets are given: --target, --set, YAML
            object.__setattr__(self, "targets", list(TARGETS))
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise ConfigError(f"unknown target(s) {', '.join(bad) or '(none)'}; available: {', '.join(TARGETS)} or all")
        if not 0.0 <= self.min_integer_coverage <= 1.0:
            raise ConfigError("export.min_integer_coverage must be in [0, 1]")
        if self.tflite_io not in ("int8", "float"):
            raise ConfigError(f"export.tflite_io must be int8 or float, got {self.tflite_io!r}")


@dataclass(frozen=True)
class CheckConfig:
    eval_data: str | None = None  # ImageFolder directory or .npz with images+labels
    eval_limit: int | None = None
    bench: bool = True
    threads: int = 1
    warmup_runs: int = 10
    warmup_min_secs: float = 0.5
    num_runs: int = 100
    min_secs: float = 2.0
    max_secs: float = 30.0


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    out: str = "runs/default"

    def to_dict(self) -> dict:
        return {"_type": "zsq.RunConfig", "_version": CONFIG_VERSION, "_data": dataclasses.asdict(self)}

    def section(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, name))


# Budgets: named presets over the same fields (a preset file overrides only what differs).
BUDGETS: dict[str, dict[str, Any]] = {
    "default": {},
    # a smoke run that checks the whole path in about a minute on 2 cores
    "tiny": {
        "synthesis.num_images": 64, "synthesis.holdout_images": 64, "synthesis.options": {"batch_size": 64, "iterations": 40},
        "synthesis.holdout_options": {"batch_size": 64, "iterations": 40},
        "qat.steps": 20, "qat.calib_images": 64, "check.num_runs": 20, "check.min_secs": 0.2, "check.warmup_min_secs": 0.1,
    },
}

# Per-method budgets: ``--budget fast`` / ``--budget paper`` pick the preset of the run's method
# (``--method``, YAML or --set). ``fast`` fits a 2-core CPU in minutes on the bundled model, with the
# same budget for every method (equal budgets for comparisons): a 128-image pool, 200 synthesis steps
# (inversion iterations per image batch, or generator warm-up steps) and 200 Q steps of batch 32.
# 200 synthesis steps because at 40 the inverted images do not match the BN statistics yet and every
# method that trains on them loses accuracy (10 pt at W4A4 for plain inversion, benchmarks/RESULTS.md).
# ``paper`` is the published CIFAR schedule (docs/methods.md §3), meant for a GPU host.
_FAST_SYNTH_STEPS = 200
_FAST_COMMON: dict[str, Any] = {
    "synthesis.num_images": 128, "synthesis.holdout_images": 64,
    "synthesis.holdout_options": {"batch_size": 64, "iterations": _FAST_SYNTH_STEPS},
    "qat.steps": 200, "qat.batch_size": 32, "qat.calib_images": 128,
    "check.num_runs": 20, "check.min_secs": 0.2, "check.warmup_min_secs": 0.1,
}
_INV_FAST = {"batch_size": 64, "iterations": _FAST_SYNTH_STEPS}
_GEN_FAST = {"warmup_steps": _FAST_SYNTH_STEPS, "gen_batch_size": 32, "gen_width": 64}
METHOD_BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "fast": {
        "bn-inversion": {**_FAST_COMMON, "synthesis.options": dict(_INV_FAST)},
        "zeroq": {**_FAST_COMMON, "synthesis.options": dict(_INV_FAST), "qat.steps": 0},
        "gdfq": {**_FAST_COMMON, "synthesis.options": dict(_GEN_FAST)},
        "lrq": {**_FAST_COMMON, "synthesis.options": dict(_GEN_FAST)},
        "fdda": {**_FAST_COMMON, "synthesis.options": {**_GEN_FAST, "gen_batch_size": 16}},
        "zaq": {**_FAST_COMMON, "synthesis.options": {"gen_width": 64}},
        "hast": {**_FAST_COMMON, "synthesis.options": {**_INV_FAST, "gen_warmup_steps": _FAST_SYNTH_STEPS,
                                                        "gen_batch_size": 16, "gen_width": 64}},
    },
    "paper": {  # CIFAR schedules: epochs × 200 iterations; ranges frozen after 4 epochs (GDFQ protocol)
        "bn-inversion": {"synthesis.num_images": 5120, "synthesis.options": {"batch_size": 256, "iterations": 1000},
                         "qat.steps": 30200, "qat.batch_size": 64, "qat.ema_freeze_step": 800},
        "zeroq": {"synthesis.num_images": 32, "synthesis.options": {"batch_size": 32, "iterations": 500}, "qat.steps": 0,
                  "qat.calib_images": 32},
        "gdfq": {"synthesis.options": {"warmup_steps": 800, "gen_batch_size": 200}, "qat.steps": 79200,
                 "qat.batch_size": 200, "qat.ema_freeze_step": 1},
        "lrq": {"synthesis.options": {"warmup_steps": 800, "gen_batch_size": 200}, "qat.steps": 79200,
                "qat.batch_size": 200, "qat.ema_freeze_step": 1},
        "fdda": {"synthesis.options": {"warmup_steps": 10000, "gen_batch_size": 16}, "qat.steps": 70000,
                 "qat.batch_size": 32, "qat.ema_freeze_step": 1},
        "zaq": {"qat.steps": 90000, "qat.batch_size": 256},
        "hast": {"synthesis.num_images": 5120, "synthesis.options": {"batch_size": 256, "iterations": 1000, "gen_warmup_steps": 800},
                 "qat.steps": 30200, "qat.batch_size": 64, "qat.ema_freeze_step": 1},
    },
}


def budget_preset(budget: str, method: str) -> dict[str, Any]:
    """The overrides of a named budget: generic (``default``, ``tiny``) or per method (``fast``, ``paper``)."""
    if budget in BUDGETS:
        return BUDGETS[budget]
    if budget not in METHOD_BUDGETS:
        choices = [*BUDGETS, *METHOD_BUDGETS]
        close = difflib.get_close_matches(budget, choices, n=1)
        raise ConfigError(f"unknown budget {budget!r}" + (f"; did you mean {close[0]!r}?" if close else "") + f"; choose one of {', '.join(choices)}")
    presets = METHOD_BUDGETS[budget]
    if method not in presets:
        raise ConfigError(f"budget {budget!r} has no preset for method {method!r}; methods with one: {', '.join(sorted(presets))}")
    return presets[method]


def _type_of(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
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

    method = resolve({}).synthesis.method  # a per-method budget: the method may come from any layer
    if budget in BUDGETS:
        preset = dict(BUDGETS[budget])
        if method != DEFAULT_METHOD:  # generic budgets' options are bn-inversion's: use the method's fast ones
            preset["synthesis.options"] = dict(METHOD_BUDGETS["fast"].get(method, {}).get("synthesis.options", {}))
    else:
        preset = budget_preset(budget, method)
    user = _user_options(layers)
    if user is not None:  # options given by the user extend the preset's instead of replacing them
        preset = {**preset, "synthesis.options": {**preset.get("synthesis.options", {}), **user}}
        layers[:] = [{k: v for k, v in layer.items() if not k.startswith("synthesis.options")} for layer in layers]
    return resolve(preset)
