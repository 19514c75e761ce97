"""``pipeline report``, ``bench``, ``devices`` and ``models``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import UserError


def report(args: argparse.Namespace) -> int:
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


def bench(args: argparse.Namespace) -> int:
    from devices import inventory
    from devices.agent import bench_args
    from devices.session import bench_artifacts, table

    spec = inventory.resolve(args.device, args.devices_file)
    from pipeline.cli.parser import build_parser

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


def devices(args: argparse.Namespace) -> int:
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


def models(_: argparse.Namespace) -> int:
    import pipeline.models  # noqa: F401  (registration)
    from pipeline.models.loading import describe_bundled
    from pipeline.models.registry import list_models

    for name, card in describe_bundled().items():
        print(f"{name:<18} bundled  {card['extra']['arch']} {tuple(card['input_shape'])} {card['num_classes']} classes, "
              f"FP top-1 {card['fp_top1'] * 100:.2f}% on {card['eval_dataset']}")
    for name in list_models():
        print(f"{name:<18} zoo      architecture (random init unless --weights)")
    return 0
