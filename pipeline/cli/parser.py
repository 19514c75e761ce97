"""The ``pipeline`` command line: every subcommand, its options and their help (docs/cli.md is the same, in prose).

``--help`` shows each run option's *resolved* default: argparse's default is None for most of them because the
config supplies the value (defaults < ``--budget`` < ``--config`` < flags < ``--set``), so the text comes from the
config's dataclasses (:data:`CONFIG_KEYS`), never "None".
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pipeline.cli import commands, run

# The subcommands that run the stages up to one (pipeline.stages.STAGE_NAMES without report), named here so that
# `pipeline --help` and `--version` do not import torch to build the parser; tests/test_cli.py checks they agree.
STAGE_COMMANDS = ("synth", "qat", "export", "check")

# The config key each run option sets (pipeline/cli/run.py maps the values; tests/test_cli.py checks both agree),
# for the default --help shows and the key it names.
CONFIG_KEYS = {
    "model": "model.name", "weights": "model.weights", "input_shape": "model.input_shape", "num_classes": "model.num_classes",
    "method": "synthesis.method", "calib_data": "synthesis.calib_data", "seed": "synthesis.seed",
    "bits": "qat.bits", "profile": "qat.profile", "overflow_fix": "qat.overflow_fix",
    "target": "export.targets", "eval_data": "check.eval_data", "eval_transform": "check.eval_transform",
    "min_agreement": "check.min_agreement", "max_accuracy_drop": "check.max_accuracy_drop",
    "accelerator": "host.accelerator", "precision": "host.precision", "out": "out",
    "runtime_accelerator": "check.accelerators",
    "layer_bits": "qat.layer_bits", "float_layer": "qat.float_layers",
}
# What an unset (None) config default means, where "none" would not say it.
UNSET = {
    "model.weights": "the bundled model's own; random init for a zoo architecture",
    "model.input_shape": "the model's own; required for file.py:factory", "model.num_classes": "read from the model's output",
    "synthesis.calib_data": "none: data-free", "check.eval_data": "none: no real-data accuracy",
    "check.min_agreement": "not gated", "check.max_accuracy_drop": "not gated",
    "check.accelerators": "each runtime's default path only",
    "qat.layer_bits": "none: every layer at --bits", "qat.float_layers": "none: every conv/linear layer quantized",
}
# Defaults of the options that are not config keys, in words.
OTHER_DEFAULTS = {"budget": "default", "devices_file": "./devices.yaml", "bench_args": "the full protocol", "config": "none"}
GROUPS = ("model", "synthesis", "quantization", "export", "evaluation", "device", "run folder & host")


def version() -> str:
    """zsq-edge's version: the installed distribution's metadata, else the source tree's pyproject.toml (a checkout
    used with PYTHONPATH and no install)."""
    from importlib import metadata

    try:
        return metadata.version("zsq-edge")
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        return str(tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "unknown"


def config_default(key: str) -> object:
    """The config's default of ``section.field`` (or a top-level field), read from the dataclasses without building a
    section (building SynthesisConfig checks the method registry, which imports torch)."""
    from pipeline.config import RunConfig

    cls, name = RunConfig, key
    if "." in key:
        section, name = key.split(".", 1)
        cls = next(f.default_factory for f in dataclasses.fields(RunConfig) if f.name == section)  # type: ignore[assignment]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def _shown(dest: str) -> str | None:
    if dest in OTHER_DEFAULTS:
        return OTHER_DEFAULTS[dest]
    key = CONFIG_KEYS.get(dest)
    if key is None:
        return None
    value = config_default(key)
    text = UNSET.get(key, "none") if value in (None, [], {}) else ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"{text}; {key}"


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Append ``(default: VALUE; config.key)`` to the help of every option that takes a value."""
    for action in p._actions:
        shown = _shown(action.dest)
        if shown is None or action.nargs == 0 or action.help in (None, argparse.SUPPRESS):
            continue
        action.help = f"{action.help} (default: {shown.replace('%', '%%')})"


def _add_output_options(p: argparse.ArgumentParser, top: bool) -> None:
    """-q/-v/--log-file on the main parser and on every subcommand, so they work before and after it. A subcommand's
    copy has no default (SUPPRESS), so it never overwrites what was given before the subcommand."""
    unset = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", default=unset(False),
                   help="errors, warnings and the final summary only: no progress, no info lines")
    g.add_argument("-v", "--verbose", action="store_true", default=unset(False),
                   help="also what libraries print (TensorFlow/absl, LiteRT, torch, torchao, onnxscript), hidden otherwise")
    g.add_argument("--log-file", type=Path, metavar="PATH", default=unset(None),
                   help="append everything to PATH, whatever -q/-v say: messages, library output, progress one line at a time")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    model, synthesis, quantization, export, evaluation, device, host = (p.add_argument_group(t) for t in GROUPS)
    g = model
    g.add_argument("--model", help="bundled name, zoo architecture or path/to/file.py:factory")
    g.add_argument("--weights", help="state dict file, loaded with torch.load(weights_only=True)")
    g.add_argument("--input-shape", metavar="C,H,W", help="the model's input, e.g. 3,32,32")
    g.add_argument("--num-classes", type=int, metavar="N", help="the model's classes")
    g = synthesis
    g.add_argument("--method", help="synthesis method: bn-inversion, zeroq, gdfq, hast, lrq, zaq, fdda")
    g.add_argument("--calib-data", metavar="PATH",
                   help="real images for fdda (not data-free), >= 1 per class: ImageFolder dir or .npz (images, labels)")
    g.add_argument("--seed", type=int, help="seed for synthesis and QAT (the held-out set: seed + 1000)")
    g = quantization
    g.add_argument("--bits", help="w8a8, w4a4, w3a3, any wXaY")
    g.add_argument("--profile", choices=["deploy", "paper"],
                   help="deploy (what an integer runtime executes) or paper (the GDFQ-lineage quantizer, EMA ranges and the "
                        "method's published optimisers; no integer artifact)")
    g.add_argument("--overflow-fix", choices=["auto", "on", "off"],
                   help="8-bit weights on ±63 so x86 int8 kernels without VNNI cannot saturate (auto: on for onnx/openvino)")
    g.add_argument("--layer-bits", action="append", metavar="PATTERN=BITS",
                   help="bits of the matching conv/linear layers, repeatable: PATTERN an fnmatch glob over layer names "
                        "('layers.8.*') or re:<regex>, BITS wXaY or N (= wNaN); the last matching one wins, over "
                        "qat.first_last_bits (docs/mixed-precision.md)")
    g.add_argument("--float-layer", action="append", metavar="PATTERN",
                   help="keep the matching conv/linear layers in float, repeatable: a float op with Q/DQ around it in every "
                        "artifact; the integer gate then requires export.min_integer_coverage of the other MACs")
    g = export
    g.add_argument("--target", help="onnx, openvino, tflite, a comma list (onnx,tflite) or all")
    g.add_argument("--tflite-calibrate", action="store_true",
                   help="tflite: calibrate the teacher on the held-out synthetic set (PT2E PTQ) instead of keeping the QAT scales")
    g = host
    g.add_argument("--config", type=Path, help="YAML config (sections model, synthesis, qat, export, check, host)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, wins over everything: qat.steps=2000")
    g.add_argument("--budget", default="default",
                   help="preset budget: default, tiny (smoke run), or per method: fast (minutes on a 2-core CPU) / paper "
                        "(published schedule, GPU)")
    g.add_argument("--out", help="run folder")
    g.add_argument("--force", action="store_true",
                   help="write into a non-empty folder that is not a run folder, or redo every stage of one whose manifest is corrupt")
    g.add_argument("--dry-run", action="store_true",
                   help="validate everything, print the resolved config and which stages would run or are cached; run nothing")
    g.add_argument("--from", dest="redo_from", metavar="STAGE", help="redo this stage and every later one")
    g.add_argument("--accelerator", choices=["auto", "cpu", "cuda"],
                   help="where synthesis and QAT run (auto: CUDA when this torch build sees a GPU)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the FP model for synthesis (faster after a minute of compilation; long budgets)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast for synthesis and QAT (auto: bf16 on a GPU that has it, else fp16; fp32 on the CPU); "
                        "fake-quant rounding, scales and losses stay fp32")
    g = evaluation
    g.add_argument("--eval-data", metavar="PATH", help="real labelled data for accuracy: ImageFolder dir or .npz (images, labels)")
    g.add_argument("--eval-transform", metavar="SPEC",
                   help="how ImageFolder images (--eval-data, --calib-data) become inputs: center-crop[:RATIO] (shorter side "
                        "to size/RATIO, centre crop), squash (resize, aspect ignored) or module:function / file.py:function")
    g.add_argument("--no-bench", action="store_true", help="skip latency measurement in the check stage")
    g.add_argument("--min-agreement", type=float, metavar="FRACTION",
                   help="quality gate (check.min_agreement): exit 5 when an integer artifact's top-1 agreement with FP is below "
                        "this, e.g. 0.98; measured on --eval-data when given, else on the held-out synthetic set")
    g.add_argument("--max-accuracy-drop", type=float, metavar="FRACTION",
                   help="quality gate (check.max_accuracy_drop): exit 5 when FP accuracy minus an integer artifact's accuracy "
                        "on --eval-data is above this (0.01 = 1 point); needs --eval-data")
    g.add_argument("--runtime-accelerator", action="append", metavar="RUNTIME:CHOICE",
                   help="also check each artifact of RUNTIME on CHOICE, in the runtime's own words (repeat for several): "
                        "openvino:AUTO|GPU|NPU, litert:none|gpu, onnxruntime:<ExecutionProvider>; parity and integer coverage "
                        "per choice; one this host lacks fails before the first stage, naming what it has (docs/accelerators.md)")
    g = device
    g.add_argument("--device", help="after the run, bench every artifact on this device (name in the devices file, or a URL)")
    g.add_argument("--devices-file", type=Path, help="devices file")
    g.add_argument("--bench-args", default="", metavar="FLAGS",
                   help="agent flags for --device, given with '=': --bench-args='--num_threads 1 --trials 5'")
    _add_output_options(p, top=False)
    _show_defaults(p)


def build_parser() -> argparse.ArgumentParser:
    import pipeline.cli

    parser = argparse.ArgumentParser(prog="pipeline", description=pipeline.cli.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit status: 0 ok, 1 bug, 2 usage, 3 input or config, 4 export gate, 5 quality gate, "
                                            "6 device unreachable, 7 device mismatch, 130 interrupted (docs/cli.md)")
    parser.add_argument("--version", action="version", version=f"pipeline (zsq-edge) {version()}")
    _add_output_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="every stage: synth → qat → export → check → report",
                       description="Every stage: synth → qat → export → check → report. Options by stage; defaults are the "
                                   "config's (--budget, --config and --set change them).")
    _add_run_options(p)
    p.set_defaults(func=lambda a: run.run(a, None))
    for name in STAGE_COMMANDS:
        p = sub.add_parser(name, help=f"run the stages up to {name} (cached stages are skipped)")
        _add_run_options(p)
        p.set_defaults(func=lambda a, n=name: run.run(a, n))
    p = sub.add_parser("report", help="write report.json + report.html of run folders and print their summaries; compare several")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (the --out of pipeline run)")
    p.add_argument("--html", help="also write one comparison page here (default report-compare.html when several runs are given)")
    p.add_argument("--format", choices=["md", "csv", "json"],
                   help="print one flat row per run × artifact on stdout instead of the summaries (md: PR comments, csv: spreadsheets)")
    _add_output_options(p, top=False)
    p.set_defaults(func=commands.report)
    from devices.agent import add_bench_flags

    p = sub.add_parser("bench", help="the bench protocol for artifacts on a device (local, ssh://, adb://, docker:)",
                       description="Flags follow TFLite's benchmark_model; defaults: warm-up 10 runs + 1 s, then 200 runs + 10 s, "
                                   "3 trials, 5 cold starts, threads 1 and N pinned to the big cores.")
    p.add_argument("--artifact", action="append", required=True, help="artifact file (repeat for several)")
    p.add_argument("--device", default="local", help="device name in the devices file, or a URL (default local)")
    p.add_argument("--devices-file", type=Path, help="devices file (default ./devices.yaml)")
    p.add_argument("--out", type=Path, help="results folder (default <run>/bench/results/<device>/)")
    add_bench_flags(p)
    _add_output_options(p, top=False)
    p.set_defaults(func=commands.bench)
    p = sub.add_parser("devices", help="list the devices file, check that devices are reachable, list attached adb devices")
    p.add_argument("action", choices=["list", "check", "adb"])
    p.add_argument("names", nargs="*", help="check only these devices")
    p.add_argument("--devices-file", type=Path, help="devices file (default ./devices.yaml)")
    _add_output_options(p, top=False)
    p.set_defaults(func=commands.devices)
    p = sub.add_parser("models", help="list the bundled models and the zoo")
    _add_output_options(p, top=False)
    p.set_defaults(func=commands.models)
    return parser
