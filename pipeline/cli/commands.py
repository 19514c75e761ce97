"""``pipeline report``, ``bench``, ``devices`` and ``models``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli import exits
from pipeline.errors import UserError


def report(args: argparse.Namespace) -> int:
    """Write each run's report.json + report.html and print its summary (or, with ``--format``, only the flat rows on
    stdout); several runs also get one comparison page. Exits with the worst status the runs' gates imply
    (:func:`pipeline.gates.exit_status` over all their rules: 5 quality gate, else 7 device mismatch, else 0)."""
    from pipeline.layout import RunLayout
    from pipeline.reporting import write_html
    from pipeline.reporting.compare import format_rows, rows
    from pipeline.runfolder import RunLock
    from pipeline.stages.report import summary, write_outputs

    fmt = getattr(args, "format", None)
    say = (lambda m: print(m, file=sys.stderr)) if fmt else print  # with --format, stdout holds the rows alone
    for run in args.runs:
        if not RunLayout(Path(run)).is_run():
            raise UserError(f"{run} is not a run folder (no manifest.json); give the --out of a pipeline run")
    reports = []
    for run in args.runs:
        with RunLock(Path(run), "pipeline report"):
            report = write_outputs(Path(run), command="pipeline report")
        reports.append(report)
        if not fmt:
            print(summary(report))
        say(f"report: {RunLayout(Path(run)).report_html}")
    if len(reports) > 1 or args.html:
        out = Path(args.html or "report-compare.html")
        write_html(out, reports, command="pipeline report " + " ".join(map(str, args.runs)))
        say(f"comparison: {out}")
    if fmt:
        print(format_rows(rows(reports), fmt))
    return exits.conclude([r for rep in reports for r in rep["gates"]["rules"]])


def resolve_device(name: str, devices_file: Path | None):
    """The device named (or the URL given) from the devices file; a name, URL or file that does not resolve is the
    user's config (exit 3), unlike a device that does not answer (exit 6)."""
    from devices import inventory
    from devices.errors import DeviceError

    from pipeline.errors import ConfigError

    try:
        return inventory.resolve(name, devices_file)
    except DeviceError as exc:
        raise ConfigError(str(exc)) from None


def bench(args: argparse.Namespace) -> int:
    """Bench each artifact; every result and the run's report are written, then the exit status: 7 when a device's outputs
    differ from the reference (one line per mismatch), else 0 (``unchecked`` is no failure; :mod:`pipeline.gates`)."""
    from devices.agent import bench_args, validate_bench_args
    from devices.errors import DeviceError
    from devices.session import bench_artifacts, table

    from pipeline import gates

    missing = [a for a in args.artifact if not Path(a).exists()]
    if missing:
        raise UserError(f"artifact {missing[0]} does not exist" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    spec = resolve_device(args.device, args.devices_file)
    from pipeline.cli.parser import build_parser

    defaults = build_parser().parse_args(["bench", "--artifact", "x"])
    try:
        flags = validate_bench_args(bench_args(args, defaults))  # a bad flag value fails here, not on the device
    except DeviceError as exc:
        raise UserError(str(exc).removeprefix("--bench-args ")) from None
    from pipeline.cli import output

    log = (lambda m: None) if args.quiet else output.info
    done = bench_artifacts([Path(a) for a in args.artifact], spec, flags, args.out, log)
    print(table([r for _, r in done]))
    for path, _ in done:
        print(f"result: {path}")
    from pipeline.layout import RunLayout

    runs = {RunLayout(p.parent.parent.parent.parent) for p, _ in done if p.parent.parent.name == "results"}
    for run in runs:
        if run.is_run():
            from pipeline.stages.report import write_outputs

            write_outputs(run.root, command="pipeline bench")
            print(f"report: {run.report_html}")
    return exits.conclude([gates.device_rule(r) for _, r in done])


def devices(args: argparse.Namespace) -> int:
    """``list`` / ``adb`` / ``check``; ``check`` exits 6 when a device it checks does not answer."""
    from devices import inventory
    from devices.errors import DeviceError
    from devices.session import check_devices

    from pipeline.errors import ConfigError

    try:
        specs = inventory.load(args.devices_file)
    except DeviceError as exc:  # the devices file is the user's config
        raise ConfigError(str(exc)) from None
    if args.action == "list":
        for spec in specs.values():
            print(f"{spec.name:<16}{spec.url:<40}{spec.description}")
        return exits.OK
    if args.action == "adb":
        from devices.targets.adb import list_devices

        attached = list_devices()
        for d in attached:
            print(f"{d['serial']:<24}{d['state']:<14}{d.get('model', '')}")
        if not attached:
            print("no Android device attached (adb devices lists none)")
        return exits.OK
    chosen = [specs[n] if n in specs else resolve_device(n, args.devices_file) for n in args.names] if args.names else list(specs.values())
    bad = 0
    for spec, ok, detail in check_devices(chosen):
        print(f"{spec.name:<16}{'ok' if ok else 'FAIL':<6}{detail}")
        bad += not ok
    return exits.DEVICE if bad else exits.OK


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
