"""The device agent: ``python -m devices.agent --graph model.w8a8.onnx [flags]`` measures one artifact here.

Flag names follow TFLite's benchmark_model (``--graph --num_threads --warmup_runs
--warmup_min_secs --num_runs --min_secs --max_secs --run_delay``), with the same meanings
(``--num_threads`` also takes a list: 1,4); both ``--num_threads`` and ``--num-threads``
spellings work. ``--json_stats PATH`` is this agent's own: where the result JSON goes (``-``:
stdout); OpenVINO benchmark_app's ``-json_stats`` is a switch for its ``-report_folder`` instead.
Letters other tools use with other meanings are refused with the flag to use (:data:`DROPPED`):
``-m`` (benchmark_app: the model; onnxruntime_perf_test: the test mode), ``-o`` (perf_test: the
optimisation level), ``-x`` (perf_test: one intra-op thread count, 0 = its default), ``-r``
(perf_test: exact repetitions in its ``times`` mode) and ``--pin`` (benchmark_app: YES/NO pinning).

    python -m devices.agent --graph model.w8a8.onnx                      # protocol defaults, JSON on stdout
    python -m devices.agent --graph model.w8a8.onnx --full --json_stats out.json
    python -m devices.agent --graph m.onnx --inputs inputs.npy --expected expected.npy --min_agreement 0.98
    python -m devices.agent --graph m.onnx --num_threads 1 --num_runs 5 --min_secs 0 --trials 2 --cold_starts 1

Defaults: warm-up ≥ 10 runs and 1 s, then ≥ 200 runs and 10 s (``--full``: 1024 runs and
60 s), 3 trials, 5 cold starts, threads 1 and N pinned to the big cores (``--cpu_mask``), then the
per-op profile of the runtime's own profiler at the first thread count (``--enable_op_profiling
false`` skips it; benchmark_model has the flag off by default because its profile shares the timed
runs, here it runs in its own process afterwards: docs/profiling.md).
Exit status: 0 with a result (its ``status`` says ``ok``, ``mismatch``, or ``unchecked`` when no
``--inputs``/``--expected`` were given, so nothing was compared), 2 on bad input
or a failed measurement (one line on stderr), 3 when the result was measured but could not be
written to ``--json_stats`` (disk full): it is on stdout instead, and the one line says so.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from devices.errors import DeviceError


def _flag(p: argparse.ArgumentParser, name: str, *aliases: str, **kw) -> None:
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else []) + list(aliases)
    p.add_argument(*names, dest=name, **kw)


# Flags this agent once borrowed from other tools with another meaning than theirs: refused, naming the flag to use,
# so a command line written for benchmark_app or onnxruntime_perf_test fails at once instead of measuring something else.
DROPPED = {
    "-m": ("--graph", "-m is the model in benchmark_app but the test mode in onnxruntime_perf_test"),
    "-o": ("--json_stats", "-o is the graph optimisation level in onnxruntime_perf_test"),
    "-x": ("--num_threads", "-x is one intra-op thread count in onnxruntime_perf_test, 0 meaning its default"),
    "-r": ("--num_runs", "-r is an exact repetition count in onnxruntime_perf_test's 'times' mode; --num_runs is a minimum, "
                         "with --min_secs"),
    "--pin": ("--cpu_mask", "benchmark_app's -pin is YES/NO thread pinning; --cpu_mask takes big, none, a hex mask or a core list"),
}


class _Dropped(argparse.Action):
    """A flag in :data:`DROPPED`: parsing it is an error that names the flag to use instead."""

    def __init__(self, option_strings: list[str], dest: str, **kw) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        instead, why = DROPPED[self.option_strings[0]]
        raise argparse.ArgumentError(self, f"use {instead} instead ({why})")


def _dropped(p: argparse.ArgumentParser, *flags: str) -> None:
    for flag in flags:
        p.add_argument(flag, action=_Dropped)


def _result_path(text: str) -> str:
    """``--json_stats``'s value: a file (or ``-``), never benchmark_app's boolean."""
    if text.lower() in ("true", "false", "yes", "no"):
        raise argparse.ArgumentTypeError(f"takes the result file's path (- for stdout), not {text!r}: unlike benchmark_app's "
                                         "-json_stats switch it names where the JSON goes (the result is always JSON)")
    return text


def _on_off(text: str) -> bool:
    """A benchmark_model-style boolean value: true/false (also 1/0, yes/no, on/off)."""
    word = str(text).strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"takes true or false, not {text!r}")


def add_bench_flags(p: argparse.ArgumentParser) -> None:
    """The measurement flags, shared with ``pipeline bench`` (which passes them on to the agent on the device)."""
    from runtimes.benchmark import BenchSettings

    d = BenchSettings()
    _flag(p, "num_threads", default=None,
          help="thread counts, comma list (default: 1 and the number of pinned cores)")
    _flag(p, "cpu_mask", default="big", help="big (default: highest-frequency cores), none, hex mask f0 or list 4-7")
    _flag(p, "warmup_runs", type=int, default=d.warmup_runs, help="warm-up runs at least (default %(default)s)")
    _flag(p, "warmup_min_secs", type=float, default=d.warmup_min_secs, help="warm-up seconds at least (default %(default)s)")
    _flag(p, "num_runs", type=int, default=None, help=f"timed runs at least (default {d.num_runs}; --full 1024)")
    _flag(p, "min_secs", type=float, default=None, help=f"timed seconds at least (default {d.min_secs:g}; --full 60)")
    _flag(p, "max_secs", type=float, default=None, help=f"cap on the timed seconds (default {d.max_secs:g}; --full 600)")
    _flag(p, "run_delay", type=float, default=0.0, help="seconds between timed runs (default %(default)s)")
    _flag(p, "full", action="store_true", help="MLPerf-sized: at least 1024 runs and 60 s per trial")
    _flag(p, "trials", type=int, default=3,
          help="repeated measurements; the spread of their p50s is flagged above 5%% (default %(default)s)")
    _flag(p, "cold_starts", type=int, default=5, help="fresh processes timing load and first inference (default %(default)s)")
    _flag(p, "cooldown_secs", type=float, default=2.0,
          help="pause between trials, longer while the CPU is > 2 °C above the start (default %(default)s)")
    _flag(p, "max_cooldown_secs", type=float, default=60.0, help="the longest such pause (default %(default)s)")
    _flag(p, "enable_op_profiling", type=_on_off, nargs="?", const=True, default=True, metavar="true|false",
          help="per-op latency from the runtime's own profiler, in a fresh process after the timed runs, so it never "
               "perturbs them (benchmark_model's flag; on by default here: about a second per artifact)")
    _flag(p, "runtime_accelerator", action="append", default=None, metavar="RUNTIME:CHOICE",
          help="run the artifact on CHOICE in its runtime's own words: openvino:AUTO, litert:none, onnxruntime:<Provider> "
               "(repeat for artifacts of other runtimes; default: each runtime's default path; docs/accelerators.md)")
    _dropped(p, "-x", "-r", "--pin")


# The fewest timed runs the protocol accepts: for an output check where latency is not the point (an emulated CPU)
CHECK_ONLY_ARGS = ["--num_threads", "1", "--cpu_mask", "none", "--cold_starts", "0", "--trials", "1", "--warmup_runs", "1",
                   "--warmup_min_secs", "0", "--num_runs", "2", "--min_secs", "0", "--cooldown_secs", "0",
                   "--enable_op_profiling", "false"]

BENCH_FLAGS = ("num_threads", "cpu_mask", "warmup_runs", "warmup_min_secs", "num_runs", "min_secs", "max_secs", "run_delay", "full",
               "trials", "cold_starts", "cooldown_secs", "max_cooldown_secs", "enable_op_profiling",
               "runtime_accelerator")


def bench_args(args: argparse.Namespace, defaults: argparse.Namespace) -> list[str]:
    """The bench flags the user set (differing from the defaults), as agent command-line arguments."""
    out: list[str] = []
    for name in BENCH_FLAGS:
        value = getattr(args, name, None)
        if value == getattr(defaults, name, None) or value is None:
            continue
        if isinstance(value, bool):
            out += [f"--{name}"] if value else [f"--{name}", "false"]  # a switch that is on by default, turned off
        elif isinstance(value, list):  # a repeatable flag: once per value
            out += [w for v in value for w in (f"--{name}", str(v))]
        else:
            out += [f"--{name}", str(value)]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devices.agent", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _flag(p, "graph", "--artifact", required=True, type=Path, help="artifact: .onnx, .xml (OpenVINO IR) or .tflite")
    add_bench_flags(p)
    _flag(p, "inputs", type=Path, help="reference inputs (.npy, N×C×H×W float32); the first one is also the timed input")
    _flag(p, "expected", type=Path, help="expected outputs on --inputs (.npy)")
    _flag(p, "min_agreement", type=float, default=None, help="lowest top-1 agreement with --expected that passes (default 0.98)")
    _flag(p, "max_abs_diff", type=float, default=None, help="flag a max |output - expected| above this")
    _flag(p, "output_scale", type=float, default=None, help="output LSB of an integer artifact (diffs in LSBs)")
    _flag(p, "weight_qmax", type=int, default=None,
          help="largest |integer weight| of the artifact (127 full range, 63 overflow-safe): flags a CPU whose int8 kernels saturate on it")
    _flag(p, "integer_share", type=float, default=None,
          help="share of MACs the artifact runs in integer by design (below 1 with declared float layers); default 1")
    _flag(p, "json_stats", "--output", default="-", type=_result_path, metavar="PATH",
          help="the file the result JSON is written to (default - : stdout); this agent's own flag, not benchmark_app's switch")
    _flag(p, "device_name", default=None, help="label recorded in the result")
    _flag(p, "report_peak_memory_footprint", action="store_true", help="accepted for benchmark_model compatibility (always on)")
    _flag(p, "quiet", "-q", action="store_true", help="no progress on stderr")
    _dropped(p, "-m", "-o")
    return p


def _bench_settings(args: argparse.Namespace) -> dict:
    """The timing-loop settings of ``args`` (``--full`` raises the defaults), checked: DeviceError when they cannot run."""
    from runtimes.benchmark import FULL, BenchSettings

    base = FULL if args.full else BenchSettings()
    bench = {"warmup_runs": args.warmup_runs, "warmup_min_secs": args.warmup_min_secs,
             "num_runs": args.num_runs if args.num_runs is not None else base.num_runs,
             "min_secs": args.min_secs if args.min_secs is not None else base.min_secs,
             "max_secs": args.max_secs if args.max_secs is not None else base.max_secs, "run_delay": args.run_delay}
    try:
        BenchSettings(**bench)
    except ValueError as exc:
        raise DeviceError(f"bad benchmark settings: {exc}") from None
    return bench


def _threads(text: str) -> tuple[int, ...]:
    try:
        threads = tuple(int(t) for t in str(text).split(",") if t.strip())
    except ValueError:
        threads = ()
    if not threads:
        raise DeviceError(f"bad --num_threads {text!r}: give a count or a comma list such as 1,4")
    return threads


def settings_from_args(args: argparse.Namespace):
    from devices.protocol import ProtocolSettings, parse_cpu_mask

    bench = _bench_settings(args)
    cpus = parse_cpu_mask(args.cpu_mask)
    if args.num_threads:
        threads = _threads(args.num_threads)
    else:
        n = len(cpus) if cpus else (os.cpu_count() or 1)
        threads = (1, n) if n > 1 else (1,)
    return ProtocolSettings(bench=bench, threads=threads, cpus=cpus, trials=args.trials, cold_starts=args.cold_starts,
                            cooldown_secs=args.cooldown_secs, max_cooldown_secs=args.max_cooldown_secs, full=args.full,
                            op_profiling=args.enable_op_profiling)


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises DeviceError instead of printing usage and exiting: for checking flags inside another program."""

    def error(self, message: str):  # type: ignore[override]
        raise DeviceError(message)


def _check_cpu_mask_syntax(text: str) -> None:
    """The ``--cpu_mask`` forms, without asking which cores are online (that is the device's business, not the host's)."""
    from devices.environment import parse_cpu_list

    if text.lower() in ("big", "none", "no", "all"):
        return
    try:
        if "-" in text or "," in text:
            cpus = parse_cpu_list(text)
        else:
            bits = int(text, 16)
            cpus = [i for i in range(bits.bit_length()) if bits >> i & 1]
    except ValueError:
        cpus = []
    if not cpus:
        raise DeviceError(f"bad cpu mask {text!r}: give big, none, a hex mask like f0 or a list like 4-7")


def validate_bench_args(flags: list[str]) -> list[str]:
    """``flags`` (e.g. ``pipeline run --bench-args``) checked as the agent will parse them; the same flags, canonically spelled.

    Called before any stage runs, so a typo fails in a second, not after hours of training. Only the
    measurement flags are accepted (the run sets ``--graph``, ``--json_stats`` and the reference itself),
    and abbreviations are not: one unique among the bench flags can mean another flag to the agent.
    Raises DeviceError (one line naming the bad flag, with close matches) otherwise.
    """
    import difflib

    from devices.protocol import ProtocolSettings

    p = _RaisingParser(prog="--bench-args", add_help=False, allow_abbrev=False)
    add_bench_flags(p)
    bench_opts = [o for a in p._actions if not isinstance(a, _Dropped) for o in a.option_strings]
    run_opts = {o for a in build_parser()._actions if not isinstance(a, _Dropped) for o in a.option_strings} - set(bench_opts)
    try:
        args, extra = p.parse_known_args(list(flags))
    except DeviceError as exc:
        raise DeviceError(f"--bench-args: {exc}") from None
    for word in extra:
        flag = word.split("=", 1)[0]
        if flag in run_opts:
            raise DeviceError(f"--bench-args: {flag!r} is not a bench flag (the run passes the artifact, reference and output "
                              f"flags itself); bench flags: {', '.join(_long(bench_opts))}")
        if flag.startswith("-"):
            spelled = "--" + flag.lstrip("-").replace("-", "_")  # --num-run and --num_run alike
            close = difflib.get_close_matches(spelled, _long(bench_opts), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"bench flags: {', '.join(_long(bench_opts))}"
            raise DeviceError(f"--bench-args: unknown bench flag {flag!r}; {hint}")
        raise DeviceError(f"--bench-args: {word!r} is not a flag or a flag's value (quote values with spaces)")
    try:
        _bench_settings(args)
        if args.cpu_mask:
            _check_cpu_mask_syntax(args.cpu_mask)
        _check_accelerator_words(args.runtime_accelerator)
        threads = _threads(args.num_threads) if args.num_threads else (1,)
        ProtocolSettings(bench={}, threads=threads, cpus=None, trials=args.trials, cold_starts=args.cold_starts)
    except DeviceError as exc:
        raise DeviceError(f"--bench-args {' '.join(flags)}: {exc}") from None
    return bench_args(args, p.parse_args([]))


def _check_accelerator_words(choices: list[str] | None) -> None:
    """``--runtime_accelerator`` values in their runtime's vocabulary, on the host (whether the device has one is the
    device's to say: :func:`artifact_accelerator`)."""
    from runtimes.accelerators import UnknownAccelerator, parse, split

    seen: dict[str, str] = {}
    for text in choices or []:
        try:
            runtime = parse(text).runtime
            if runtime in seen:  # the agent measures an artifact on one choice
                raise UnknownAccelerator(f"{seen[runtime]} and {text} are both for {runtime}: one choice per runtime per bench")
            seen[runtime] = text
        except UnknownAccelerator as exc:
            raise DeviceError(f"--runtime_accelerator: {exc}") from None
        except ImportError:  # no such runtime on this host: the syntax is what can be checked here
            try:
                split(text)
            except UnknownAccelerator as exc:
                raise DeviceError(f"--runtime_accelerator: {exc}") from None


def artifact_accelerator(graph: Path, choices: list[str] | None) -> str | None:
    """The ``--runtime_accelerator`` choice for ``graph``'s runtime, checked available on this machine (None: its default
    path). A choice this machine lacks is a DeviceError whose one line names what it has: the agent exits 2 before
    measuring, and ``pipeline`` 6 (docs/accelerators.md: the device answers but cannot run what was asked)."""
    from runtimes.accelerators import AcceleratorUnavailable, for_artifact

    try:
        choice = for_artifact(graph, choices)
    except (ValueError, AcceleratorUnavailable) as exc:
        raise DeviceError(str(exc)) from None
    return None if choice is None else str(choice)


def _long(options: list[str]) -> list[str]:
    return [o for o in options if o.startswith("--") and "-" not in o[2:]]


def write_atomic(path: Path, text: str) -> None:
    from runtimes.atomic import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)


def run(args: argparse.Namespace) -> dict:
    from devices.protocol import Reference, measure
    from devices.reference import DEFAULT_MIN_AGREEMENT, Tolerance

    if bool(args.inputs) != bool(args.expected) and args.expected:
        raise DeviceError("--expected needs --inputs (the reference inputs the expected outputs were computed on)")
    import dataclasses

    settings = dataclasses.replace(settings_from_args(args), accelerator=artifact_accelerator(args.graph, args.runtime_accelerator))
    tol = Tolerance(args.min_agreement if args.min_agreement is not None else DEFAULT_MIN_AGREEMENT, args.max_abs_diff, args.output_scale)
    log = (lambda m: None) if args.quiet else (lambda m: print(f"agent: {m}", file=sys.stderr, flush=True))
    result = measure(args.graph, settings, Reference(args.inputs, args.expected, tol, args.weight_qmax, args.integer_share), log)
    if args.device_name:
        result["device"] = {"name": args.device_name}
    return result


def summary_line(result: dict) -> str:
    parts = [f"{result['artifact']['name']} on {result['artifact']['runtime']} {result['artifact']['runtime_version']}:"]
    for r in result["runs"]:
        s = r["steady"]
        parts.append(f"{r['threads']}T p50 {s['p50_ms']:.3f} ms p90 {s['p90_ms']:.3f} ms (spread {s['spread']:.1%})")
    ref = result.get("reference")
    if ref and "top1_agreement" in ref:
        parts.append(f"agreement {ref['top1_agreement']:.1%} [{ref['status']}]")
    return " ".join(parts)


def check_output(out: str) -> None:
    """Fail before measuring, not after, when the result cannot be written where ``--json_stats`` says: a folder, a
    path under a file, a folder this user cannot write (a container user that does not own a mounted folder), a
    read-only filesystem. Probed with a real file, so root and read-only mounts are judged right too."""
    if out == "-":
        return
    from devices.results import check_writable

    path = Path(out)
    if path.is_dir():
        raise DeviceError(f"--json_stats {out} is a folder: name a file in it, e.g. {path / 'result.json'}")
    if path.exists() and not path.is_file():  # /dev/stdout, a fifo: written into, not replaced
        if not os.access(path, os.W_OK):
            raise DeviceError(f"cannot write the result into {out}: it is not writable by uid {os.getuid()}")
        return
    why = check_writable(path.parent)
    if why:
        if why.endswith("is not a folder"):
            raise DeviceError(f"cannot write the result to {out}: {why}")
        hint = " (in a container: docker run --user \"$(id -u):$(id -g)\" ...)" if Path("/.dockerenv").exists() else ""
        raise DeviceError(f"cannot write the result into {path.parent.resolve()}: {why}{hint}")


def deliver(text: str, out: str) -> str | None:
    """Put the result where ``--json_stats`` says; None when it went there, else the one-line error saying where it went.

    The measurement is never lost to a late failure (disk full, the folder removed meanwhile): the JSON goes
    to stdout instead (what the hosts' targets read back), and to a file in the temp folder if even that fails.
    """
    from devices.results import keep

    if out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    path = Path(out)
    try:
        if path.exists() and not path.is_file():
            with open(path, "w") as f:
                f.write(text)
        else:
            write_atomic(path, text)
        return None
    except OSError as exc:
        why = exc.strerror or str(exc)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
        went = "stdout"
    except OSError:
        kept = keep(text, path.name)
        went = str(kept) if kept else "nowhere (no writable place left): run again with --json_stats -"
    return f"could not write the result to {out} ({why}); the result JSON went to {went} instead"


def main(argv: list[str] | None = None) -> int:
    from devices.results import RESULT_ON_STDOUT, dumps

    args = build_parser().parse_args(argv)
    try:
        check_output(args.json_stats)
        result = run(args)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    failed = deliver(dumps(result), args.json_stats)
    if not args.quiet:
        print(f"agent: {summary_line(result)}", file=sys.stderr)
        for f in result["flags"]:
            print(f"agent: flag: {f}", file=sys.stderr)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return RESULT_ON_STDOUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
