"""Everything a run can check before its first stage, so bad input fails in seconds instead of after hours.

:func:`pipeline.config.build_config` already refused what the config alone shows (unknown keys, values out of
range, unknown methods and method options). What is left needs the filesystem or the model:

* :func:`check_config`: the data files the run will read (``check.eval_data``, ``synthesis.calib_data``) exist
  and have a readable form, real calibration data goes with a method that uses it (and only then), and a
  quality gate has what it judges (``check.max_accuracy_drop`` needs ``--eval-data``; gates need integer artifacts);
* :func:`check_model`: the FP model can be synthesized for (BatchNorm2d layers), quantized (a Conv2d or
  Linear layer), traced by torch.fx, and every op in it has a route on each requested target
  (:func:`exporters.preflight.check_routes`: a fraction of a second, nothing converted); the per-layer
  patterns (``qat.layer_bits``, ``qat.float_layers``) each name a layer of it, and no layer is both float
  and given bits (:func:`check_layer_patterns`, the surgery's own resolution);
* :func:`preflight`: both, loading the model when the caller has not.

Each raises one :class:`~pipeline.errors.UserError` (``ConfigError`` / ``ModelLoadError``, exit 3) whose one-line
message lists every problem found, not only the first; a model whose only problem is an op with no route on a
target raises :class:`~exporters.errors.ExportError` instead (exit 4, as when the export stage finds it).
Warnings (ops whose MACs stay float) come back as lines for the caller to print.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from torch import nn

from pipeline.config import RunConfig
from pipeline.errors import ConfigError, ModelLoadError
from pipeline.models.card import ModelCard

# What pipeline/evaldata.py reads: an .npz with these arrays, or root/<class>/<image>.
_IMAGE_KEYS = ("images", "x", "x_test")
_LABEL_KEYS = ("labels", "y", "y_test")
_FORMS = "an .npz (arrays images and labels) or an ImageFolder directory (root/<class>/<image>)"


def _npz_header(z: np.lib.npyio.NpzFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an .npz from its header, without reading the data."""
    with z.zip.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(f)
    return shape, dtype


def _check_npz(key: str, path: Path) -> list[str]:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return [f"{key} {path} is not a readable .npz ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"]
    if not isinstance(z, np.lib.npyio.NpzFile):  # np.load reads a renamed .npy too
        return [f"{key} {path} holds a single array, not an .npz archive; give {_FORMS}"]
    with z:
        problems = []
        found = ", ".join(sorted(z.files)) or "no arrays"
        for role, keys in (("images", _IMAGE_KEYS), ("labels", _LABEL_KEYS)):
            name = next((k for k in keys if k in z.files), None)
            if name is None:
                problems.append(f"{key} {path} has no {role!r} array (found: {found})")
                continue
            try:
                shape, dtype = _npz_header(z, name)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                problems.append(f"{key} {path}: array {name!r} is unreadable ({type(exc).__name__})")
                continue
            if dtype.hasobject:
                problems.append(f"{key} {path}: array {name!r} holds Python objects; save numbers (uint8 or float32 images, int labels)")
            elif not shape or shape[0] == 0:
                problems.append(f"{key} {path}: array {name!r} is empty (shape {shape})")
    return problems


def _check_folder(key: str, path: Path) -> list[str]:
    from pipeline.evaldata import IMAGE_SUFFIXES

    try:
        classes = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]  # .ipynb_checkpoints is no class
        if not classes:
            return [f"{key} {path} has no class sub-folders (expected root/<class>/<image>)"]
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for d in classes for f in d.iterdir()):
            return [f"{key} {path} has class folders but no images in them ({', '.join(sorted(IMAGE_SUFFIXES))})"]
    except OSError as exc:
        return [f"{key} {path} cannot be read ({exc.strerror or exc})"]
    return []


def _check_data(key: str, value: str | None) -> list[str]:
    """The problems of one data path setting (none when it is fine or unset)."""
    if not value:
        return []
    path = Path(value)
    if not path.exists():
        return [f"{key} {path} does not exist"]
    if path.is_dir():
        return _check_folder(key, path)
    if path.suffix.lower() != ".npz":
        kind = f"a {path.suffix} file" if path.suffix else "a file without an extension"
        return [f"{key} {path} is {kind}; give {_FORMS}"]
    return _check_npz(key, path)


def _check_calib_pairing(cfg: RunConfig) -> list[str]:
    """Real calibration images go with a method that uses them (fdda), and such a method needs them."""
    from pipeline.synthesis import create_method

    method = cfg.synthesis.method
    needs = getattr(create_method(method, cfg.synthesis.options), "needs_calib_data", False)
    if needs and not cfg.synthesis.calib_data:
        return [f"method {method!r} is not data-free: give --calib-data (ImageFolder dir or .npz, >= 1 real image per class)"]
    if cfg.synthesis.calib_data and not needs:
        return [f"--calib-data is only used by methods that need real images (fdda); {method!r} is data-free"]
    return []


def _check_gates(cfg: RunConfig) -> list[str]:
    """A quality gate has something to judge: real labels for an accuracy drop, integer artifacts for any gate."""
    c = cfg.check
    problems = []
    if c.max_accuracy_drop is not None and not c.eval_data:
        problems.append("check.max_accuracy_drop compares accuracies on labelled images: give --eval-data (an .npz or an "
                        "ImageFolder directory), or gate on check.min_agreement, which the held-out synthetic set measures")
    gated = [f"check.{g}" for g in ("min_agreement", "max_accuracy_drop") if getattr(c, g) is not None]
    if gated and cfg.qat.profile != "deploy":
        problems.append(f"{' and '.join(gated)} judge integer artifacts, and qat.profile={cfg.qat.profile} makes none: "
                        "use --profile deploy, or drop the gate")
    return problems


def check_config(cfg: RunConfig) -> None:
    """Raise one :class:`ConfigError` listing every problem of the config's data paths and method/data pairing.

    Covers ``check.eval_data`` and ``synthesis.calib_data`` (exists; an .npz with image and label arrays that are
    numeric and not empty, read from their headers only; or a folder with class sub-folders, dot-folders not
    counted, holding images; nothing else), and ``synthesis.calib_data`` against the method. Cheap: no image is
    decoded. And the quality gates against the data and the profile (:func:`_check_gates`). Unknown methods and
    options, and numbers out of range, were refused by ``build_config`` already.
    """
    from pipeline.accelerators import preflight_problems  # check.accelerators: a target uses each, this host runs it

    problems = [*_check_data("check.eval_data", cfg.check.eval_data), *_check_data("synthesis.calib_data", cfg.synthesis.calib_data),
                *_check_calib_pairing(cfg), *_check_gates(cfg), *preflight_problems(cfg)]
    if problems:
        raise ConfigError("; ".join(problems))


def check_model(cfg: RunConfig, model: nn.Module, card: ModelCard) -> list[str]:
    """Raise one :class:`ModelLoadError` listing every reason ``model`` cannot go through this run; return warnings.

    Fatal: no BatchNorm2d (every method needs BN statistics: the held-out set is made by bn-inversion), no
    Conv2d or Linear layer (nothing to quantize), a forward torch.fx cannot trace, an op with no route on a
    requested target. Warnings (returned, one line each): ops whose multiply-accumulates stay float, which the
    integer gate weighs against ``export.min_integer_coverage`` (deploy profile only: paper writes no integer file).
    Route problems alone are an :class:`ExportError` (the artifact cannot be made, exit 4, the export stage's
    verdict found early); with a problem of the model itself (an untraceable forward is one: nothing can quantize
    it), everything is one :class:`ModelLoadError`.
    """
    from exporters.errors import ExportError
    from exporters.preflight import check_routes
    from pipeline.synthesis.base import no_batchnorm_message

    fatal: list[str] = []
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        fatal.append(no_batchnorm_message())
    if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()):
        fatal.append("model has no Conv2d or Linear layer to quantize")
    problems = check_routes(model, card.input_shape, cfg.export.targets)
    fatal += list(dict.fromkeys(p.message for p in problems if p.fatal and p.op == "torch.fx"))  # nothing can quantize it
    routes = list(dict.fromkeys(p.message for p in problems if p.fatal and p.op != "torch.fx"))
    if fatal:
        raise ModelLoadError("; ".join(fatal + routes))
    if routes:
        raise ExportError("; ".join(routes))
    check_layer_patterns(cfg, model)
    if cfg.qat.profile != "deploy":
        return []
    return [f"warning: {p.message}" for p in problems if not p.fatal]


def check_layer_patterns(cfg: RunConfig, model: nn.Module) -> None:
    """Resolve ``qat.layer_bits`` and ``qat.float_layers`` against the model's conv/linear layers as the surgery will
    (:meth:`pipeline.quant.scheme.BitScheme.resolve`), so a pattern that names no layer, or a layer both float and
    given bits, is one :class:`ConfigError` naming the layers before synthesis, not after it."""
    scheme = cfg.qat.scheme
    if not scheme.per_layer:
        return
    from pipeline.quant.prepare import layer_names, trace

    scheme.resolve(layer_names(trace(model)))  # BN folding renames nothing: the names the surgery resolves against


def preflight(cfg: RunConfig, model: nn.Module | None = None, card: ModelCard | None = None) -> list[str]:
    """:func:`check_config` then :func:`check_model` (loading the model unless given); returns the warnings."""
    check_config(cfg)
    if model is None or card is None:
        from pipeline.models.loading import load_model

        model, card = load_model(cfg.model)
    return check_model(cfg, model, card)


__all__ = ["check_config", "check_layer_patterns", "check_model", "preflight"]
