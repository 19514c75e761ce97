"""The ``pipeline`` command line: every subcommand, its options and their help."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import commands, run


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="bundled name, zoo architecture or path/to/file.py:factory (default: fmnist_resnet20)")
    g.add_argument("--weights", help="state dict file, loaded with torch.load(weights_only=True)")
    g.add_argument("--input-shape", help="C,H,W, e.g. 3,32,32")
    g.add_argument("--num-classes", type=int)
    g = p.add_argument_group("run")
    g.add_argument("--config", type=Path, help="YAML config (sections model, synthesis, qat, export, check)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, wins over everything: qat.steps=2000")
    g.add_argument("--budget", default="default",
                   help="preset budget: default, tiny (smoke run), or per method: fast (minutes on a 2-core CPU) / paper (published schedule, GPU)")
    g.add_argument("--bits", help="w8a8 (default), w4a4, w3a3, any wXaY")
    g.add_argument("--overflow-fix", choices=["auto", "on", "off"],
                   help="8-bit weights on ±63 so x86 int8 kernels without VNNI cannot saturate (default auto: on for onnx/openvino)")
    g.add_argument("--profile", choices=["deploy", "paper"], help="deploy (integer runtime) or paper (GDFQ protocol)")
    g.add_argument("--method", help="synthesis method: bn-inversion (default), zeroq, gdfq, hast, lrq, zaq, fdda")
    g.add_argument("--calib-data", help="real images for fdda (not data-free), >= 1 per class: ImageFolder dir or .npz (images, labels)")
    g.add_argument("--target", help="onnx (default), openvino, tflite, a comma list (onnx,tflite) or all")
    g.add_argument("--tflite-calibrate", action="store_true",
                   help="tflite: calibrate the teacher on the held-out synthetic set (PT2E PTQ) instead of keeping the QAT scales")
    g.add_argument("--eval-data", help="real labelled data for accuracy: ImageFolder dir or .npz (images, labels)")
    g.add_argument("--seed", type=int, help="seed for synthesis and QAT")
    g.add_argument("--accelerator", choices=["auto", "cpu", "cuda"],
                   help="where synthesis and QAT run (default auto: CUDA when this torch build sees a GPU)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the FP model for synthesis (faster after a minute of compilation; long budgets)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast for synthesis and QAT (default auto: bf16 on a GPU that has it, else fp16; fp32 on the CPU); "
                        "fake-quant rounding, scales and losses stay fp32")
    g.add_argument("--out", help="run folder (default runs/default)")
    g.add_argument("--force", action="store_true",
                   help="write into a non-empty folder that is not a run folder, or redo every stage of one whose manifest is corrupt")
    g.add_argument("--dry-run", action="store_true",
                   help="validate everything, print the resolved config and which stages would run or are cached; run nothing")
    g.add_argument("--from", dest="redo_from", metavar="STAGE", help="redo this stage and every later one")
    g.add_argument("--no-bench", action="store_true", help="skip latency measurement in the check stage")
    g.add_argument("--device", help="after the run, bench every artifact on this device (name in the devices file, or a URL)")
    g.add_argument("--devices-file", type=Path, help="devices file (default ./devices.yaml)")
    g.add_argument("--bench-args", default="", metavar="FLAGS",
                   help="agent flags for --device, given with '=': --bench-args='--num_threads 1 --trials 5' (default: the full protocol)")


def build_parser() -> argparse.ArgumentParser:
    from pipeline.stages import STAGE_NAMES

    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="every stage: synth → qat → export → check → report")
    _add_run_options(p)
    p.set_defaults(func=lambda a: run.run(a, None))
    for name in STAGE_NAMES[:-1]:
        p = sub.add_parser(name, help=f"run the stages up to {name} (cached stages are skipped)")
        _add_run_options(p)
        p.set_defaults(func=lambda a, n=name: run.run(a, n))
    p = sub.add_parser("report", help="write report.json + report.html of run folders and print their summaries; compare several")
    p.add_argument("runs", nargs="+")
    p.add_argument("--html", help="also write one comparison page here (default report-compare.html when several runs are given)")
    p.set_defaults(func=commands.report)
    from devices.agent import add_bench_flags

    p = sub.add_parser("bench", help="the bench protocol for artifacts on a device (local, ssh://, adb://, docker:)",
                       description="Flags follow TFLite's benchmark_model; defaults: warm-up 10 runs + 1 s, then 200 runs + 10 s, "
                                   "3 trials, 5 cold starts, threads 1 and N pinned to the big cores.")
    p.add_argument("--artifact", action="append", required=True, help="artifact file (repeat for several)")
    p.add_argument("--device", default="local", help="device name in the devices file, or a URL (default local)")
    p.add_argument("--devices-file", type=Path, help="devices file (default ./devices.yaml)")
    p.add_argument("--out", type=Path, help="results folder (default <run>/bench/results/<device>/)")
    p.add_argument("--quiet", action="store_true")
    add_bench_flags(p)
    p.set_defaults(func=commands.bench)
    p = sub.add_parser("devices", help="list the devices file, check that devices are reachable, list attached adb devices")
    p.add_argument("action", choices=["list", "check", "adb"])
    p.add_argument("names", nargs="*", help="check only these devices")
    p.add_argument("--devices-file", type=Path, help="devices file (default ./devices.yaml)")
    p.set_defaults(func=commands.devices)
    p = sub.add_parser("models", help="list the bundled models and the zoo")
    p.set_defaults(func=commands.models)
    return parser
