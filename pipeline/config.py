"""Run configuration: frozen dataclasses, one per concern, parsed once at the CLI edge.

Precedence: defaults < ``budget`` preset < the method's ``PROTOCOL`` when ``qat.profile`` is ``paper``
< YAML file (``--config``) < CLI flags < ``--set section.key=value``. Unknown keys fail with the closest valid name;
values are converted to the field's type, and a closed choice (a ``Literal`` field)
fails with its valid values and the closest one. Every number is checked
in one place too: a field typed ``Annotated[int, Range(1)]`` (the aliases :data:`Count`, :data:`Steps`,
:data:`Rate`, ...) must lie in its range, every float must be finite, and a boolean never stands in for a
number (:meth:`RunConfig.__post_init__`); the method's options are checked against its own config class once
the method is known (:func:`check_method_options`). The resolved config is written into the run folder and the
report as ``{_type, _version, _data}``.

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
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pipeline.errors import ConfigError
from pipeline.quant import overflow
from pipeline.quant.overflow import OverflowMode
from pipeline.quant.scheme import BitScheme
from pipeline.quant.settings import Accelerator, ActInit, ActRange, LRSchedule, Optimizer, Precision, Profile, QATSettings
from runtimes.benchmark import HOST_CHECK, BenchSettings

CONFIG_VERSION = 1
TFLiteIO = Literal["int8", "float"]  # edges of the integer .tflite
DEFAULT_MODEL = "fmnist_resnet20"
DEFAULT_METHOD = "bn-inversion"


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric config field: ``lo`` <= value (``lo`` < value when ``open_lo``) <= ``hi``.

    Put on a field as ``Annotated[int, Range(1)]``; :meth:`RunConfig.__post_init__` checks every section's fields
    against theirs, so a range is declared once, next to the field, and never re-checked by hand.
    """

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}]"
        if self.lo is not None:
            return f"{'>' if self.open_lo else '>='} {self.lo:g}"
        return f"<= {self.hi:g}"


# The ranges the config's numbers fall in, by meaning.
Count = Annotated[int, Range(1)]  # how many images, runs, threads: at least one
Steps = Annotated[int, Range(0)]  # how many steps; 0 = none (qat.steps=0: calibration only)
Seed = Annotated[int, Range(0)]  # NumPy refuses negative seeds
Rate = Annotated[float, Range(0, open_lo=True)]  # learning rates, temperatures, scales: > 0
NonNegative = Annotated[float, Range(0)]  # loss weights, durations: >= 0
Fraction = Annotated[float, Range(0, 1)]


@dataclass(frozen=True)
class ModelConfig:
    """Which model: a bundled default, a zoo architecture, or ``file.py:factory``; weights from ``weights``."""

    name: str = DEFAULT_MODEL
    weights: str | None = None
    input_shape: str | None = None  # "C,H,W"; required for file.py:factory models
    num_classes: Count | None = None
    mean: list[float] | None = None  # pixel statistics used to initialise synthetic images
    std: list[Rate] | None = None
    pixel_range: list[float] = field(default_factory=lambda: [0.0, 1.0])

    def __post_init__(self) -> None:
        lo_hi = self.pixel_range
        if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) for v in lo_hi) or not lo_hi[0] < lo_hi[1]:
            raise ConfigError(f"model.pixel_range must be two numbers [low, high] with low < high, got {lo_hi!r}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ConfigError(f"model.mean and model.std need one value per channel each, got {len(self.mean)} and {len(self.std)}")


@dataclass(frozen=True)
class SynthesisConfig:
    method: str = DEFAULT_METHOD
    num_images: Annotated[int, Range(2)] = 256  # training set for QAT
    holdout_images: Count = 128  # disjoint set for the checks, never trained on
    seed: Seed = 0
    holdout_seed: Seed = 1000
    # 200 inversion steps, not fewer: at 60 the teacher already labels every image as its target, but the BN
    # statistics are not matched yet, and 300 KD steps on such images overfit them (W4A4 real accuracy peaks at
    # 85 % after 100 steps, then falls to 78 %); at 200 the same loop reaches 91-92 % (benchmarks/RESULTS.md).
    options: dict[str, Any] = field(default_factory=lambda: {"batch_size": 64, "iterations": 200})
    # The held-out set for the checks is always plain bn-inversion (same images whatever the method).
    holdout_options: dict[str, Any] = field(default_factory=lambda: {"batch_size": 64, "iterations": 200})
    calib_data: str | None = None  # real images, >= 1 per class: only fdda (not data-free) uses them

    def __post_init__(self) -> None:
        if self.seed == self.holdout_seed:
            raise ConfigError("synthesis.seed and synthesis.holdout_seed must differ (the holdout set must be disjoint)")
        _registry().method_config_class(self.method)  # an unknown method fails with the closest registered name


@dataclass(frozen=True)
class QATConfig:
    bits: str = "w8a8"
    profile: Profile = "deploy"
    first_last_bits: int | None = None
    # Per-layer bits {PATTERN: BITS} and layers kept in float (pipeline/quant/scheme.py, docs/mixed-precision.md): PATTERN
    # an fnmatch glob over layer names or re:<regex>, BITS wXaY or N; the last matching pattern wins, over first_last_bits
    layer_bits: dict[str, str] = field(default_factory=dict)
    float_layers: list[str] = field(default_factory=list)
    # auto | on | off: 8-bit weights on ±63 so that u8×s8 int8 kernels of x86 CPUs without VNNI cannot saturate
    # (pipeline/quant/overflow.py); auto = on when an onnx or openvino artifact gets 8-bit weights
    overflow_fix: OverflowMode = "auto"
    act_range: ActRange = "auto"  # auto: the profile's own (deploy learned, paper ema); QuantProfile.named resolves it
    act_init: ActInit = "mse"
    calib_images: Count = 256
    # The training loop's settings: defaults from QATSettings (their one source), handed back by settings().
    steps: Steps = QATSettings.steps
    batch_size: Count = QATSettings.batch_size
    lr: Rate = QATSettings.lr  # > 0: to leave the weights alone, run qat.steps=0 (calibration only)
    quant_lr: Rate = QATSettings.quant_lr
    # The Q optimiser and its schedule (QATSettings says why Adam/cosine is the default); the paper profile applies
    # the method's published ones (its PROTOCOL, pipeline/synthesis/methods/), which these keys override in turn
    optimizer: Optimizer = QATSettings.optimizer
    momentum: Fraction = QATSettings.momentum
    nesterov: bool = QATSettings.nesterov
    weight_decay: NonNegative = QATSettings.weight_decay
    lr_schedule: LRSchedule = QATSettings.lr_schedule
    lr_milestones: list[Steps] = field(default_factory=list)  # multistep: Q steps where the rates are multiplied by lr_gamma
    lr_gamma: Annotated[float, Range(0, 1, open_lo=True)] = QATSettings.lr_gamma
    temperature: Rate = QATSettings.temperature
    ce_weight: NonNegative = QATSettings.ce_weight
    ema_freeze_step: Steps = QATSettings.ema_freeze_step
    seed: Seed = 0

    def __post_init__(self) -> None:
        _ = self.scheme  # a bad bits string or layer pattern fails here, at parse time
        # the layer choices as the scheme normalised them ({"fc": 8} → {"fc": "w8a8"}): one spelling in config.json and keys
        object.__setattr__(self, "layer_bits", dict(self.scheme.layer_bits))
        object.__setattr__(self, "float_layers", list(self.scheme.float_layers))
        object.__setattr__(self, "lr_milestones", sorted(self.lr_milestones))
        if self.nesterov and self.optimizer == "sgd" and not self.momentum:
            raise ConfigError("qat.nesterov needs qat.momentum > 0 (Nesterov momentum without momentum is plain SGD): "
                              "set qat.momentum=0.9 or qat.nesterov=false")

    @functools.cached_property
    def scheme(self) -> BitScheme:
        """``bits``, ``first_last_bits``, ``layer_bits`` and ``float_layers`` parsed once into the scheme object (overflow
        grid: :attr:`RunConfig.scheme`; the layers are resolved against the model by the surgery and the preflight)."""
        return BitScheme.parse(self.bits, self.first_last_bits, layer_bits=self.layer_bits, float_layers=self.float_layers)

    def settings(self) -> QATSettings:
        """The QAT loop's settings: this section's values of every QATSettings field it has, defaults for the rest."""
        values = {name: getattr(self, name) for name in _QAT_LOOP_FIELDS}
        return QATSettings(**{**values, "lr_milestones": tuple(self.lr_milestones)})


@dataclass(frozen=True)
class ExportConfig:
    targets: list[str] = field(default_factory=lambda: ["onnx"])
    min_integer_coverage: Fraction = 1.0
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
    # Checkpoints inside the long loops, so a killed run resumes inside its stage, not at step 0
    # (pipeline/train/checkpoint.py): every checkpoint_every QAT steps and every warmup_checkpoint_every generator
    # warm-up steps (image inversion: after every finished batch; 0 disables), but never sooner than checkpoint_min_s
    # after the last one, nor sooner than 100x the last save's own duration. So a save costs <= ~1 % of the run
    # whatever the model (bundled model: 3.5 MB in ~40 ms against ~65 s for 200 QAT steps of batch 32 on this CPU,
    # 0.06 %; a 300 MB checkpoint taking 3 s is spaced >= 5 min), and a kill loses at most max(200 steps, 60 s,
    # 100x a save) of work; the step count only keeps the clock (and, with ranks, the decision) off most steps.
    # checkpoint_min_s 0 drops both time rules (a save exactly every N steps). Checkpoints never change the numbers:
    # a resumed run ends bit-for-bit where an uninterrupted one would have (CPU).
    checkpoint_every: Steps = 200
    warmup_checkpoint_every: Steps = 200
    checkpoint_min_s: NonNegative = 60.0


@dataclass(frozen=True)
class CheckConfig:
    eval_data: str | None = None  # ImageFolder directory or .npz with images+labels
    eval_limit: Count | None = None
    # How an ImageFolder's images (--eval-data, and --calib-data) become inputs: center-crop[:RATIO], squash or
    # module:function (pipeline/evaldata.py); an .npz is used as it is
    eval_transform: str = "center-crop"
    bench: bool = True
    threads: Count = 1
    # The timing protocol: defaults from runtimes.benchmark.HOST_CHECK (the host's short one), handed back by bench_settings().
    warmup_runs: Steps = HOST_CHECK.warmup_runs
    warmup_min_secs: NonNegative = HOST_CHECK.warmup_min_secs
    num_runs: Count = HOST_CHECK.num_runs
    min_secs: NonNegative = HOST_CHECK.min_secs
    max_secs: Rate = HOST_CHECK.max_secs
    # Timed trials per artifact (the protocol above each, one warm-up): their spread and the samples' CV flag noisy host figures
    trials: Count = 3
    # Quality gates (None = not gated): the run exits 5 when an integer artifact misses one (pipeline/gates.py). Not in
    # the check's measurements: changing only a threshold judges the last measurements again (pipeline/stages/check.py)
    min_agreement: Fraction | None = None  # top-1 agreement of every integer artifact with FP: --eval-data if given, else held-out set
    max_accuracy_drop: Fraction | None = None  # FP accuracy minus artifact accuracy on --eval-data (absolute: 0.01 = 1 point)
    # RUNTIME:CHOICE in each runtime's own words (openvino:AUTO, litert:none): each artifact of that runtime is also checked
    # on it, parity and integer coverage (pipeline/accelerators.py); [] = each runtime's default path only
    accelerators: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from pipeline.accelerators import parse_choices
        from pipeline.evaldata import parse_transform  # here, not at the top: the loader imports torch

        parse_transform(self.eval_transform)
        object.__setattr__(self, "accelerators", parse_choices(self.accelerators))  # canonical spelling, syntax checked
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

    def __post_init__(self) -> None:
        """Every section's numbers against their declared ranges, in one place (see :class:`Range`)."""
        for f in fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                hints = _hints(type(section))
                for g in fields(section):
                    _check_value(getattr(section, g.name), hints[g.name], f"{f.name}.{g.name}")

    @functools.cached_property
    def scheme(self) -> BitScheme:
        """The run's bit scheme, ``qat.overflow_fix`` resolved against ``export.targets``: what every stage uses."""
        q = self.qat
        safe = overflow.resolve(q.overflow_fix, q.scheme.w_bits, q.scheme.first_last_bits, self.export.targets, q.profile,
                                q.scheme.layer_bits)
        return dataclasses.replace(q.scheme, overflow_safe=safe)

    def to_dict(self) -> dict:
        return {"_type": "zsq.RunConfig", "_version": CONFIG_VERSION, "_data": dataclasses.asdict(self)}

    def section(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, name))


# The host check of the smoke budgets (tiny, and every method's fast in pipeline/synthesis/presets.py): enough
# runs to see each artifact run and time it roughly, in a fraction of HOST_CHECK's time; two trials, so a spread
# between them can flag a noisy figure (measured: +0.2 s per artifact over one trial, against +4 s at the default).
SMOKE_CHECK: dict[str, Any] = {"check.num_runs": 20, "check.min_secs": 0.2, "check.warmup_min_secs": 0.1, "check.trials": 2}

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


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A section's field types with their ``Annotated`` ranges (resolved once per class)."""
    return typing.get_type_hints(cls, include_extras=True)


def _check_value(value: Any, tp: Any, key: str, rng: Range | None = None) -> None:
    """One field's value against its type's range: numbers finite and in range, never a boolean for a number."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *meta = typing.get_args(tp)
        return _check_value(value, inner, key, next((m for m in meta if isinstance(m, Range)), rng))
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _check_value(value, next(a for a in typing.get_args(tp) if a is not type(None)), key, rng)
    if origin is list:
        (inner,) = typing.get_args(tp)
        for i, v in enumerate(value or []):
            _check_value(v, inner, f"{key}[{i}]", rng)
        return None
    if tp in (int, float) and isinstance(value, (int, float)):
        if isinstance(value, bool):
            raise ConfigError(f"bad value {value!r} for {key}: expected {tp.__name__}, got a boolean")
        if rng is not None and value not in rng:
            raise ConfigError(f"{key} must be {rng}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return None


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
    if tp in (int, float) and isinstance(value, bool):  # bool is an int subclass: int(True) would be 1 step
        raise ConfigError(f"bad value {value!r} for {key}: expected {tp.__name__}, got a boolean")
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, (bool, int, float)) or value not in (0, 1):
                raise ValueError(value)  # 3 or [1] is no boolean; 0 and 1 are
            return bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if tp is str and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
                raise ValueError(value)  # a list, a mapping or yes/no where a name or path goes
            return tp(value)
        if origin is list:
            (inner,) = typing.get_args(tp)
            if value is None:
                return []  # --set export.targets= : an empty list, refused where one is required
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
        if len(parts) > 1 and not dataclasses.is_dataclass(getattr(cfg, parts[0])):
            raise ConfigError(f"{parts[0]} is a single value, not a mapping: give {parts[0]}=<value>, not {key}")
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
            if typing.get_origin(_type_of(section_cls, parts[1])) is not dict:
                raise ConfigError(f"{parts[0]}.{parts[1]} is a single value, not a mapping: give {parts[0]}.{parts[1]}=<value>, "
                                  f"not {key}")
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
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file: give the file itself (--config path/to/zsq.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file (not UTF-8): give a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text) or {}
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


def with_protocol(preset: dict[str, Any], protocol: dict[str, Any]) -> dict[str, Any]:
    """``preset`` with a method's protocol over it: its keys win, its ``synthesis.options`` extend the preset's."""
    out = {**preset, **{k: v for k, v in protocol.items() if k != "synthesis.options"}}
    if "synthesis.options" in protocol:
        out["synthesis.options"] = {**preset.get("synthesis.options", {}), **protocol["synthesis.options"]}
    return out


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
    first = resolve({})
    method = first.synthesis.method  # a per-method budget: the method may come from any layer
    if budget in BUDGETS:
        preset = dict(BUDGETS[budget])
        if method != DEFAULT_METHOD:  # generic budgets' options are bn-inversion's: use the method's fast ones
            preset["synthesis.options"] = dict(_registry().method_presets(method).get("fast", {}).get("synthesis.options", {}))
    else:
        preset = budget_preset(budget, method)
        if method != DEFAULT_METHOD and "synthesis.options" not in preset:
            # a preset without options means the method's own defaults, not the default method's (zaq's paper)
            preset = {**preset, "synthesis.options": {}}
    if first.qat.profile == "paper":  # the method's published training protocol over the budget, under the user's layers
        preset = with_protocol(preset, _registry().method_protocol(method))
    user = _user_options(layers)
    if user is not None:  # options given by the user extend the preset's instead of replacing them
        preset = {**preset, "synthesis.options": {**preset.get("synthesis.options", {}), **user}}
        layers[:] = [{k: v for k, v in layer.items() if not k.startswith("synthesis.options")} for layer in layers]
    return check_method_options(resolve(preset))


# Ranges of method options by the end of their name: the method config classes (pipeline/synthesis/) type their
# options but keep only their own cross-field checks, so the obvious ranges are named here once for all methods.
_OPTION_RANGES: tuple[tuple[str, Range], ...] = (
    ("lr", Range(0, open_lo=True)), ("temperature", Range(0, open_lo=True)), ("weight", Range(0)), ("_p", Range(0, 1)),
    ("fraction", Range(0, 1)), ("steps", Range(0)), ("iterations", Range(1)), ("batch_size", Range(1)),
)


def _method_options(method: str, options: dict[str, Any], key: str) -> dict[str, Any]:
    """``options`` checked against ``method``'s config class: known names, typed values, ranges, its own checks."""
    registry = _registry()
    cls = registry.method_config_class(method)
    unknown = registry.unknown_options(method, options)
    if unknown:
        raise ConfigError(f"{key}: {unknown}")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for name, value in options.items():
        sub = f"{key}.{name}"
        converted = _convert(value, hints[name], sub)
        _check_value(converted, hints[name], sub, next((r for end, r in _OPTION_RANGES if name.endswith(end)), None))
        out[name] = value if value == converted else converted  # "3" becomes 3; a 1 given for a float stays 1
    try:
        cls(**out)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: method {method!r}: {exc}") from None
    return out


def check_method_options(cfg: RunConfig) -> RunConfig:
    """The method's options and the held-out set's (``bn-inversion``) checked now that the method is settled.

    Not in ``SynthesisConfig.__post_init__``: while the layers apply one by one, a new method can meet the
    previous method's options (``--method gdfq`` over the default bn-inversion ones) before its own preset lands.
    """
    s = cfg.synthesis
    options = _method_options(s.method, s.options, "synthesis.options")
    holdout = _method_options(_registry().HOLDOUT_METHOD, s.holdout_options, "synthesis.holdout_options")
    if options == s.options and holdout == s.holdout_options:
        return cfg
    return dataclasses.replace(cfg, synthesis=dataclasses.replace(s, options=options, holdout_options=holdout))
