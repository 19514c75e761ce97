"""``pipeline``: checkpoint in, verified integer artifacts and a report out, without the training data.

    pipeline run                                   # bundled Fashion-MNIST ResNet-20, ONNX target
    pipeline run --model mynet.py:build --weights mynet.pt --input-shape 3,32,32 --bits w4a4 --out runs/mynet
    pipeline run --config zsq.yaml --set qat.steps=2000
    pipeline qat --out runs/x                      # run the stages up to qat (cached ones are skipped)
    pipeline run --from qat                        # redo from a stage
    pipeline report runs/x                         # print a run's summary, write runs/x/report.html
    pipeline report runs/a runs/b --html cmp.html  # compare runs in one page
    pipeline models                                # the model zoo
    pipeline bench --artifact runs/x/model.w8a8.onnx --device pi5    # the bench protocol on a device
    pipeline run --device local                    # ... and bench every artifact of the run there
    pipeline devices list|check                    # the devices file (devices.yaml) and whether each is reachable
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from pipeline.errors import USER_ERRORS, UserError


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


def _cli_overrides(args: argparse.Namespace) -> dict:
    targets = args.target.split(",") if args.target is not None else None  # "all" and aliases resolve in ExportConfig
    cli = {
        "model.name": args.model, "model.weights": args.weights, "model.input_shape": args.input_shape,
        "model.num_classes": args.num_classes, "qat.bits": args.bits, "qat.profile": args.profile, "qat.overflow_fix": args.overflow_fix, "synthesis.method": args.method,
        "export.targets": targets, "check.eval_data": args.eval_data, "out": args.out, "synthesis.calib_data": args.calib_data,
        "host.accelerator": args.accelerator, "host.precision": args.precision,
    }
    if getattr(args, "compile", False):
        cli["host.compile"] = True
    if args.seed is not None:
        cli.update({"synthesis.seed": args.seed, "qat.seed": args.seed, "synthesis.holdout_seed": args.seed + 1000})
    if args.no_bench:
        cli["check.bench"] = False
    if args.tflite_calibrate:
        cli["export.tflite_calibrate"] = True
    return cli


def _run(args: argparse.Namespace, until: str | None) -> int:
    from pipeline.config import build_config
    from pipeline.runfolder import check_out
    from pipeline.runner import RunContext
    from pipeline.train import distributed
    from pipeline.train.placement import Placement

    cfg = build_config(args.budget, args.config, _cli_overrides(args), args.set)
    rank, world, local = distributed.env_ranks()  # under torchrun: this process's place among the ranks
    run_dir = check_out(cfg.out, args.force) if rank == 0 else Path(cfg.out)  # rank 0 alone writes the folder
    placement = Placement.resolve(cfg.host.accelerator, cfg.host.precision, rank, world, local, cfg.host.channels_last)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if placement.is_main else (lambda m: None)
    ctx = RunContext(cfg, run_dir, log=log, placement=placement)
    spec = _preflight(args, until, ctx)
    if args.dry_run:
        return _dry_run(args, until, ctx)
    distributed.init(placement.device)
    if placement.device.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
    try:
        if not placement.is_main:
            return _run_stages(args, until, ctx, spec)
        from pipeline.runfolder import RunLock
        from runtimes.atomic import sweep

        with RunLock(run_dir, " ".join(["pipeline", *sys.argv[1:]])[:300]):
            for p in sweep(run_dir):
                log(f"removed {p.relative_to(run_dir)}: a temporary file an interrupted run left")
            return _run_stages(args, until, ctx, spec)
    finally:
        distributed.shutdown()


def _preflight(args: argparse.Namespace, until: str | None, ctx):
    """Everything that can be checked before the first stage runs, so bad input fails in seconds, not after hours.

    The config's ranges and the method's options, the model (loads, traces with torch.fx, has BatchNorm, every op
    has a route on each requested target), the real data read in full, ``--bench-args`` and that ``--device``
    answers. Returns the device spec for ``--device`` (or None). ``--dry-run`` runs it too.
    """
    from pipeline.preflight import preflight

    model, card = ctx.teacher()
    for warning in preflight(ctx.cfg, model, card):
        ctx.log(f"warning: {warning}")
    # Real data is read in full now (labels against the classes, pixels against the input contract), not after QAT.
    if ctx.cfg.check.eval_data and until in (None, "check", "report"):
        ctx.real_data("eval")
    if ctx.cfg.synthesis.calib_data:
        ctx.real_data("calib")
    device = getattr(args, "device", None)
    if not (device and until in (None, "report")):
        return None
    import shlex

    from devices import inventory
    from devices.agent import validate_bench_args
    from devices.errors import DeviceError
    from devices.session import check_devices

    try:
        args.bench_flags = validate_bench_args(shlex.split(args.bench_args))
    except ValueError as exc:
        raise UserError(f"--bench-args {args.bench_args!r}: {exc} (give the flags with '=': --bench-args='--num_threads 1')") from None
    spec = inventory.resolve(device, args.devices_file)
    for _, ok, detail in check_devices([spec] if ctx.placement.is_main else []):  # reachable now, not after hours
        if not ok:
            raise DeviceError(f"device {spec.name} is not reachable: {detail} (check it with: pipeline devices check {spec.name})")
    return spec


def _dry_run(args: argparse.Namespace, until: str | None, ctx) -> int:
    """Print the resolved config and, per stage, whether a run would redo it or use the cached result (and why)."""
    import yaml

    from pipeline.runner import Runner
    from pipeline.stages import STAGES

    print(f"# resolved config (budget {args.budget}); run folder {ctx.run_dir}")
    print(yaml.safe_dump(ctx.cfg.to_dict().get("_data", ctx.cfg.to_dict()), sort_keys=False).rstrip())
    print("# stages")
    for name, why in Runner(STAGES, ctx, force=args.force).plan(until=until, redo_from=args.redo_from):
        print(f"{name:<8}{why}")
    print("dry run: nothing was run or written")
    return 0


def _run_stages(args: argparse.Namespace, until: str | None, ctx, spec=None) -> int:
    from pipeline.runner import Runner
    from pipeline.stages import STAGES

    run_dir = ctx.run_dir
    if spec is not None:
        Runner(STAGES, ctx, force=args.force).run(until="check", redo_from=args.redo_from)
        if ctx.placement.is_main:
            _bench_run(run_dir, spec, args.bench_flags, ctx.log)
        Runner(STAGES, ctx).run(until="report")
    else:
        Runner(STAGES, ctx, force=args.force).run(until=until, redo_from=args.redo_from)
    if not ctx.placement.is_main:
        return 0
    if until in (None, "report"):
        from pipeline.stages.report import build_report, summary

        print(summary(build_report(run_dir)))
    else:
        print(f"stages up to {until} done in {run_dir}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.reporting import write_html
    from pipeline.stages.report import summary, write_outputs

    from pipeline.layout import RunLayout

    from pipeline.runfolder import RunLock

    reports = []
    for run in args.runs:
        if not RunLayout(Path(run)).is_run():
            raise UserError(f"{run} is not a run folder (no manifest.json); give the --out of a pipeline run")
        with RunLock(Path(run), "pipeline report"):
            report = write_outputs(Path(run))
        reports.append(report)
        print(summary(report))
        print(f"report: {RunLayout(Path(run)).report_html}")
    if len(reports) > 1 or args.html:
        out = Path(args.html or "report-compare.html")
        write_html(out, reports)
        print(f"comparison: {out}")
    return 0


def _bench_run(run_dir: Path, spec, agent_args: list[str], log) -> None:
    """Bench every artifact of a run on ``spec``; results land in ``<run>/bench/results/<device>/``."""
    import json

    from devices.session import bench_artifacts, table

    from pipeline.layout import RunLayout

    index = RunLayout(run_dir).export_index
    if not index.exists():
        raise UserError(f"{run_dir} has no export.json: run the export stage first")
    arts = [run_dir / a["path"] for a in json.loads(index.read_text())["artifacts"]]
    done = bench_artifacts(arts, spec, agent_args, None, log)
    print(table([r for _, r in done]), file=sys.stderr)


def _bench(args: argparse.Namespace) -> int:
    from devices import inventory
    from devices.agent import bench_args
    from devices.session import bench_artifacts, table

    spec = inventory.resolve(args.device, args.devices_file)
    defaults = build_parser().parse_args(["bench", "--artifact", "x"])
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    done = bench_artifacts([Path(a) for a in args.artifact], spec, bench_args(args, defaults), args.out, log)
    print(table([r for _, r in done]))
    for path, _ in done:
        print(f"result: {path}")
    from pipeline.layout import RunLayout

    runs = {RunLayout(p.parent.parent.parent.parent) for p, _ in done if p.parent.parent.name == "results"}
    for run in runs:
        if run.is_run():
            from pipeline.stages.report import write_outputs

            write_outputs(run.root)
            print(f"report: {run.report_html}")
    return 1 if any(r["status"] != "ok" for _, r in done) else 0


def _devices(args: argparse.Namespace) -> int:
    from devices import inventory
    from devices.session import check_devices

    specs = inventory.load(args.devices_file)
    if args.action == "list":
        for spec in specs.values():
            print(f"{spec.name:<16}{spec.url:<40}{spec.description}")
        return 0
    if args.action == "adb":
        from devices.targets.adb import list_devices

        attached = list_devices()
        for d in attached:
            print(f"{d['serial']:<24}{d['state']:<14}{d.get('model', '')}")
        if not attached:
            print("no Android device attached (adb devices lists none)")
        return 0
    chosen = [specs[n] if n in specs else inventory.resolve(n, args.devices_file) for n in args.names] if args.names else list(specs.values())
    bad = 0
    for spec, ok, detail in check_devices(chosen):
        print(f"{spec.name:<16}{'ok' if ok else 'FAIL':<6}{detail}")
        bad += not ok
    return 1 if bad else 0


def _models(_: argparse.Namespace) -> int:
    import pipeline.models  # noqa: F401  (registration)
    from pipeline.models.loading import describe_bundled
    from pipeline.models.registry import list_models

    for name, card in describe_bundled().items():
        print(f"{name:<18} bundled  {card['extra']['arch']} {tuple(card['input_shape'])} {card['num_classes']} classes, "
              f"FP top-1 {card['fp_top1'] * 100:.2f}% on {card['eval_dataset']}")
    for name in list_models():
        print(f"{name:<18} zoo      architecture (random init unless --weights)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pipeline.stages import STAGE_NAMES

    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="every stage: synth → qat → export → check → report")
    _add_run_options(p)
    p.set_defaults(func=lambda a: _run(a, None))
    for name in STAGE_NAMES[:-1]:
        p = sub.add_parser(name, help=f"run the stages up to {name} (cached stages are skipped)")
        _add_run_options(p)
        p.set_defaults(func=lambda a, n=name: _run(a, n))
    p = sub.add_parser("report", help="write report.json + report.html of run folders and print their summaries; compare several")
    p.add_argument("runs", nargs="+")
    p.add_argument("--html", help="also write one comparison page here (default report-compare.html when several runs are given)")
    p.set_defaults(func=_report)
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
    p.set_defaults(func=_bench)
    p = sub.add_parser("devices", help="list the devices file, check that devices are reachable, list attached adb devices")
    p.add_argument("action", choices=["list", "check", "adb"])
    p.add_argument("names", nargs="*", help="check only these devices")
    p.add_argument("--devices-file", type=Path, help="devices file (default ./devices.yaml)")
    p.set_defaults(func=_devices)
    p = sub.add_parser("models", help="list the bundled models and the zoo")
    p.set_defaults(func=_models)
    return parser


# What the filesystem can refuse a run, and what to do about it: a one-line error, never a traceback.
_OS_ADVICE = {
    errno.EACCES: "give an --out you can write to", errno.EPERM: "give an --out you can write to",
    errno.EROFS: "the filesystem is read-only: give an --out on a writable one",
    errno.ENOSPC: "the disk is full: free space or give an --out on another disk (finished stages are kept)",
    errno.EDQUOT: "the disk quota is exceeded: free space or give an --out on another disk (finished stages are kept)",
    errno.ENOTDIR: "a path component is a file, not a folder", errno.EISDIR: "a folder is where a file was expected",
    errno.ELOOP: "a symlink was found where the run writes a file: remove it",
    errno.ENAMETOOLONG: "the path is too long",
}


def _os_error(exc: OSError) -> str | None:
    """The one-line message for a filesystem error the user can fix, or None for anything else (a bug: traceback)."""
    advice = _OS_ADVICE.get(exc.errno or -1)
    if advice is None:
        return None
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}; {advice}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = _os_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        from devices.errors import DeviceError

        if not isinstance(exc, DeviceError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
