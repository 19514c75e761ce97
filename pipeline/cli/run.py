"""``pipeline run`` and the stage subcommands: config, run folder, preflight, the stages, ``--device`` benches."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import UserError


def _cli_overrides(args: argparse.Namespace) -> dict:
    targets = args.target.split(",") if args.target is not None else None  # "all" and aliases resolve in ExportConfig
    cli = {
        "model.name": args.model, "model.weights": args.weights, "model.input_shape": args.input_shape,
        "model.num_classes": args.num_classes, "qat.bits": args.bits, "qat.profile": args.profile, "qat.overflow_fix": args.overflow_fix, "synthesis.method": args.method,
        "export.targets": targets, "check.eval_data": args.eval_data, "out": args.out, "synthesis.calib_data": args.calib_data,
        "host.accelerator": args.accelerator, "host.precision": args.precision,
        "check.min_agreement": args.min_agreement, "check.max_accuracy_drop": args.max_accuracy_drop,
        "check.eval_transform": args.eval_transform, "check.accelerators": args.runtime_accelerator,
    }
    if getattr(args, "compile", False):
        cli["host.compile"] = True
    if args.seed is not None:
        cli.update({"synthesis.seed": args.seed, "qat.seed": args.seed, "synthesis.holdout_seed": args.seed + 1000})
    if args.no_bench:
        cli["check.bench"] = False
    if args.tflite_calibrate:
        cli["export.tflite_calibrate"] = True
    if getattr(args, "layer_bits", None):
        from pipeline.quant.scheme import layer_bits_option

        cli["qat.layer_bits"] = layer_bits_option(args.layer_bits)
    if getattr(args, "float_layer", None):
        cli["qat.float_layers"] = args.float_layer
    return cli


def run(args: argparse.Namespace, until: str | None) -> int:
    from pipeline.config import build_config
    from pipeline.runfolder import check_out
    from pipeline.runner import RunContext
    from pipeline.train import distributed
    from pipeline.train.placement import Placement

    cfg = build_config(args.budget, args.config, _cli_overrides(args), args.set)
    rank, world, local = distributed.env_ranks()  # under torchrun: this process's place among the ranks
    run_dir = check_out(cfg.out, args.force) if rank == 0 else Path(cfg.out)  # rank 0 alone writes the folder
    placement = Placement.resolve(cfg.host.accelerator, cfg.host.precision, rank, world, local, cfg.host.channels_last)
    from pipeline.cli import output

    log = output.info if placement.is_main else (lambda m: None)
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

    from devices.agent import validate_bench_args
    from devices.errors import DeviceError
    from devices.session import check_devices

    from pipeline.cli.commands import resolve_device

    try:
        # the run's --runtime-accelerator choices travel to the device's agent as well (two for one runtime: refused here)
        choices = [w for c in ctx.cfg.check.accelerators for w in ("--runtime_accelerator", c)]
        args.bench_flags = validate_bench_args(shlex.split(args.bench_args) + choices)
    except (ValueError, DeviceError) as exc:  # a flag of the user's, not the device: input (exit 3)
        raise UserError(f"{exc} (give the flags with '=': --bench-args='--num_threads 1')") from None
    spec = resolve_device(device, args.devices_file)
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
    """Run the stages (and the ``--device`` benches); the exit status is the gates' (:mod:`pipeline.gates`): every
    artifact, result and the report are written first, then the summary, then one line per failed rule."""
    from pipeline import gates
    from pipeline.cli import exits
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
        return exits.OK
    if until in (None, "report"):
        from pipeline.stages.report import build_report, summary

        report = build_report(run_dir)  # its "gates" block: the check's rules and one per current device result
        print(summary(report))
        verdict = report["gates"]
    elif until == "check":  # the check stage judged its gates: `pipeline check` fails on them as `pipeline run` does
        import json

        print(f"stages up to {until} done in {run_dir}")
        check = json.loads(ctx.layout.check_result.read_text())
        verdict = gates.report_gates({"check": check})
    else:
        print(f"stages up to {until} done in {run_dir}")
        return exits.OK
    return exits.conclude(verdict["rules"])


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
