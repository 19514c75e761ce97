"""The bench protocol (docs/latency-protocol.md) for one artifact on the machine this runs on.

For each thread setting (1 and N by default), pinned to the chosen cores:
``cold_starts`` fresh processes time import, load/compile and the first inference
apart, with peak RSS after init and overall; then one fresh process warms up and
runs ``trials`` timed trials (cooldown between them, temperatures before/after),
every sample kept. Trials are summarized by :func:`runtimes.benchmark.summarize_trials`
(median p50, spread flagged above 5 %). The outputs on the reference inputs are
checked against the expected outputs once (the result's status: ``ok``, ``mismatch``, or ``unchecked``
without reference data). The environment is captured before and after. The timing loop itself is
:func:`runtimes.benchmark.benchmark`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devices import environment
from devices.errors import DeviceError
from devices.reference import Tolerance
from devices.results import SCHEMA, sha256
from runtimes.formats import BY_RUNTIME, artifact_files
AGENT_ROOT = Path(__file__).resolve().parent.parent  # the folder holding devices/ and runtimes/


@dataclass(frozen=True)
class ProtocolSettings:
    bench: dict  # runtimes.benchmark.BenchSettings fields
    threads: tuple[int, ...]
    cpus: tuple[int, ...] | None  # affinity for every measurement; None leaves it to the OS
    trials: int = 3
    cold_starts: int = 5
    cooldown_secs: float = 2.0
    max_cooldown_secs: float = 60.0
    full: bool = False
    op_profiling: bool = True  # the runtime's own per-op profile after the timed runs (runtimes/profiling.py)
    accelerator: str | None = None  # RUNTIME:CHOICE every worker loads the artifact with (runtimes/accelerators.py); None: default

    def __post_init__(self) -> None:
        if self.trials < 1 or self.cold_starts < 0 or not self.threads or min(self.threads) < 1:
            raise DeviceError("trials must be >= 1, cold_starts >= 0 and every thread count >= 1")


@dataclass(frozen=True)
class Reference:
    inputs: Path | None = None
    expected: Path | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)
    weight_qmax: int | None = None  # the artifact's largest |integer weight| (pipeline/quant/overflow.py)
    # share of MACs the artifact runs in integer by design: below 1 when float layers were declared (qat.float_layers)
    integer_share: float | None = None


def parse_cpu_mask(text: str | None) -> tuple[int, ...] | None:
    """``big`` (default: the highest-frequency cores), ``none``, a taskset hex mask (``f0``, ``0xf0``) or a list (``4-7``)."""
    if text is None or text.lower() == "big":
        return tuple(environment.big_cores())
    if text.lower() in ("none", "no", "all"):
        return None
    try:
        if "-" in text or "," in text:
            cpus = environment.parse_cpu_list(text)
        else:
            bits = int(text, 16)
            cpus = [i for i in range(bits.bit_length()) if bits >> i & 1]
    except ValueError:
        raise DeviceError(f"bad cpu mask {text!r}: give big, none, a hex mask like f0 or a list like 4-7") from None
    online = set(environment.online_cpus())
    if not cpus or not set(cpus) <= online:
        raise DeviceError(f"cpu mask {text!r} names cores {cpus}, but the online cores are {sorted(online)}")
    return tuple(cpus)


EMULATOR_ENV = "ZSQ_AGENT_EMULATOR"


def python_command() -> list[str]:
    """How to start a measurement worker: this interpreter, behind ``$ZSQ_AGENT_EMULATOR`` when set.

    qemu-user does not follow ``execve``: an agent emulated with ``qemu-x86_64-static -cpu
    Haswell-v4`` would start its workers natively, and one in an arm64 root without binfmt_misc
    could not start them at all. ``ZSQ_AGENT_EMULATOR="qemu-aarch64-static -cpu cortex-a76"``
    runs them under the same emulator. A real device never sets it.
    """
    import shlex

    return [*shlex.split(os.environ.get(EMULATOR_ENV, "")), sys.executable]


def saturation_flag(runtime: str | None, weight_qmax: int | None, isa_record: dict) -> str | None:
    """A warning when a full-range 8-bit artifact runs on u8×s8 kernels that saturate on this CPU (x86 without VNNI)."""
    info = BY_RUNTIME.get(runtime or "")
    if info is None or not info.u8s8_kernels or not weight_qmax or weight_qmax <= 63 or not isa_record.get("u8s8_saturates"):
        return None
    return (f"full-range int8 weights (|w| up to {weight_qmax}) on a CPU without VNNI: {runtime}'s u8×s8 kernels saturate "
            "int16 pair sums here, so outputs can differ from what was trained; export with --overflow-fix on (±63 weights)")


def _worker(spec: dict, timeout: float, log) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(AGENT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        res = subprocess.run([*python_command(), "-m", "devices.worker", json.dumps(spec)], capture_output=True, text=True,
                             timeout=timeout, env=env, cwd=str(AGENT_ROOT))
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{spec['mode']} measurement of {Path(spec['artifact']).name} took longer than {timeout:.0f}s") from None
    for line in res.stderr.splitlines():
        if line.startswith("  trial"):
            log(line)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"{spec['mode']} measurement of {Path(spec['artifact']).name} failed (exit {res.returncode}): {tail}")
    out = json.loads(lines[-1])
    if "error" in out:
        raise DeviceError(f"{spec['mode']} measurement of {Path(spec['artifact']).name} failed: {out['error']}")
    return out


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else {}


def result_status(check: dict | None) -> str:
    """A device result's status: ``ok`` or ``mismatch`` from its reference check, ``unchecked`` when there was none.

    ``unchecked`` (no reference inputs/expected outputs travelled, or the runtime's own tool measured) says that
    nothing was compared: a report never shows it as a pass, and ``pipeline`` never fails on it (exit 7 is mismatch).
    """
    if check is None:
        return "unchecked"
    return "ok" if check.get("status") == "ok" else "mismatch"


def _op_profile(artifact: Path, settings: ProtocolSettings, cpus: list[int] | None, inputs: str | None, flags: list[str], log) -> dict:
    """The runtime's own per-op profile in a fresh worker at the first thread count; a failure is recorded, not raised
    (the profile is an extra: it never costs the result its latency and output check)."""
    from runtimes.profiling import profile_line

    threads = settings.threads[0]
    log(f"{artifact.name}: op profile from the runtime's own profiler ({threads} thread{'s' if threads > 1 else ''})")
    try:
        spec = {"artifact": str(artifact), "threads": threads, "cpus": cpus, "inputs": inputs, "mode": "ops",
                "accelerator": settings.accelerator}  # profiled on what was measured
        prof = _worker(spec, 300, log)["op_profile"]
    except DeviceError as exc:
        prof = {"runtime": None, "source": "none: the profiler failed", "runs": 0, "total_ms": 0.0, "ops": [], "unavailable": str(exc)}
    if not prof.get("ops"):
        flags.append(f"no op profile: {prof.get('unavailable') or 'the profiler listed no op'}")
    log(f"{artifact.name}: {profile_line(prof)}")
    return prof


def measure(artifact: Path, settings: ProtocolSettings, reference: Reference = Reference(), log=lambda m: None) -> dict:
    """Run the whole protocol on ``artifact``; returns the result record (schema ``zsq.bench/1``)."""
    from runtimes.benchmark import BenchSettings, LatencyStats, summarize_trials

    artifact = Path(artifact).resolve()
    if not artifact.exists():
        raise DeviceError(f"artifact {artifact} does not exist")
    for p in (reference.inputs, reference.expected):
        if p is not None and not Path(p).exists():
            raise DeviceError(f"reference file {p} does not exist")
    try:
        bench = BenchSettings(**settings.bench)
    except (TypeError, ValueError) as exc:
        raise DeviceError(f"bad benchmark settings: {exc}") from None
    inputs = str(Path(reference.inputs).resolve()) if reference.inputs else None
    cpus = list(settings.cpus) if settings.cpus else None
    per_run = bench.max_secs + bench.warmup_min_secs + 120
    env_before = environment.capture()
    t_start = time.time()
    runs, flags = [], []
    runtime = runtime_version = None
    io: dict = {}
    for threads in settings.threads:
        base = {"artifact": str(artifact), "threads": threads, "cpus": cpus, "inputs": inputs, "accelerator": settings.accelerator}
        colds = []
        for i in range(settings.cold_starts):
            log(f"{artifact.name}: cold start {i + 1}/{settings.cold_starts} ({threads} thread{'s' if threads > 1 else ''})")
            colds.append(_worker({**base, "mode": "cold"}, 300, log))
        log(f"{artifact.name}: steady state, {settings.trials} trial(s), {threads} thread{'s' if threads > 1 else ''}, cores {cpus or 'any'}")
        st = _worker({**base, "mode": "steady", "settings": asdict(bench), "trials": settings.trials,
                      "cooldown_secs": settings.cooldown_secs, "max_cooldown_secs": settings.max_cooldown_secs},
                     per_run * settings.trials + settings.max_cooldown_secs * settings.trials, log)
        runtime, runtime_version = st["runtime"], st["runtime_version"]
        io = {"inputs": st["inputs"], "outputs": st["outputs"], "feed_shape": st["feed_shape"]}
        trials = [LatencyStats(**{k: v for k, v in t.items() if k in LatencyStats.__dataclass_fields__}) for t in st["trials"]]
        summary = summarize_trials(trials)
        if summary["unstable"]:
            flags.append(f"{threads} thread(s): p50 differs by {summary['spread']:.1%} between trials (> {summary['spread_limit']:.0%})")
        runs.append({
            "threads": threads,
            "affinity": st["affinity"],
            "cold_start": {"runs": colds, "import_ms": _spread([c["import_ms"] for c in colds]),
                           "load_ms": _spread([c["load_ms"] for c in colds]), "first_ms": _spread([c["first_ms"] for c in colds]),
                           "rss_init_kb": max((c["rss_init_kb"] for c in colds), default=None),
                           "rss_peak_kb": max((c["rss_peak_kb"] for c in colds), default=None)},
            "steady": summary,
            "trials": st["trials"],
            "rss_init_kb": st["rss_init_kb"],
            "rss_peak_kb": st["rss_peak_kb"],
        })
    op_profile = _op_profile(artifact, settings, cpus, inputs, flags, log) if settings.op_profiling else None
    check = kernels = coverage = None
    if reference.inputs and reference.expected:
        log(f"{artifact.name}: checking outputs on {Path(reference.inputs).name} against {Path(reference.expected).name}")
        check = _worker({"artifact": str(artifact), "threads": settings.threads[-1], "cpus": cpus, "mode": "check", "inputs": inputs,
                         "accelerator": settings.accelerator,
                         "expected": str(Path(reference.expected).resolve()), "tolerance": asdict(reference.tolerance)}, 600, log)
        check.pop("affinity", None)
        kernels = check.pop("kernels", None)
        coverage = check.pop("integer_coverage", None)
        if check["status"] != "ok":
            flags.append(f"outputs differ from the expected ones: top-1 agreement {check.get('top1_agreement', 0):.1%} "
                         f"< {reference.tolerance.min_top1_agreement:.1%}" if "top1_agreement" in check else check.get("reason", "mismatch"))
        elif check.get("within_abs_diff_limit") is False:
            flags.append(f"max |diff| {check['max_abs_diff']:.4g} above the limit {check['max_abs_diff_limit']:.4g} (top-1 still agrees)")
    else:
        flags.append("no reference inputs/expected outputs: accuracy on the device not checked")
    cpu = env_before["isa"]
    if cpu.get("emulated"):
        flags.append(f"measured under emulation ({cpu['emulated']}): the latencies are the emulator's, not a device figure")
    sat = saturation_flag(runtime, reference.weight_qmax, cpu)
    if sat:
        flags.append(sat)
    designed = reference.integer_share if reference.integer_share is not None else 1.0
    if coverage and reference.weight_qmax and coverage.get("share", 1.0) < designed - 1e-3:
        floats = ", ".join(f"{n} {k}" for k, n in sorted((coverage.get("float_kernels") or {}).items()))
        by_design = f", {designed:.1%} by design (declared float layers)" if designed < 1.0 else ""
        flags.append(f"only {coverage['share']:.1%} of MACs run in integer on {runtime} on this CPU{by_design} (float: {floats}): "
                     "the runtime dequantizes the rest, so outputs and latency are not the integer artifact's")
    env_after = environment.capture()
    t0, t1 = env_before.get("temperatures_c") or {}, env_after.get("temperatures_c") or {}
    if t0 and t1 and max(t1.values()) - max(t0.values()) > 5:
        flags.append(f"the device warmed up by {max(t1.values()) - max(t0.values()):.1f} °C during the measurement")
    if env_before.get("load_average") and env_before["load_average"][0] > 0.5 * (env_before.get("cpu_count") or 1):
        flags.append(f"load average {env_before['load_average'][0]} at the start: other work shared the CPU")
    files = artifact_files(artifact)
    return {
        "schema": SCHEMA,
        "artifact": {"name": artifact.name, "files": [f.name for f in files], "size_bytes": sum(f.stat().st_size for f in files),
                     "sha256": sha256(artifact), "files_sha256": {f.name: sha256(f) for f in files},  # which artifact: reports match on it
                     "runtime": runtime, "runtime_version": runtime_version, **io},
        "settings": {"bench": asdict(bench), "threads": list(settings.threads), "cpus": cpus, "trials": settings.trials,
                     "cold_starts": settings.cold_starts, "cooldown_secs": settings.cooldown_secs, "full": settings.full,
                     "op_profiling": settings.op_profiling},
        "environment": env_before,
        "environment_after": {k: env_after[k] for k in ("temperatures_c", "throttling", "load_average")},
        "runs": runs,
        # "emulated": the latencies above were measured on an emulated CPU and are no device figure
        "latency_source": "emulated" if cpu.get("emulated") else "device",
        "accelerator": settings.accelerator,  # the RUNTIME:CHOICE asked for (None: the default path); kernels say what ran
        "kernels": kernels,  # what the runtime says it chose (OpenVINO primitives, LiteRT delegate, ORT providers)
        "integer_coverage": coverage,  # share of MACs in integer kernels as this machine's runtime executes the artifact
        "op_profile": op_profile,  # per-op latency from the runtime's own profiler (None: --enable_op_profiling false)
        "reference": check,
        "flags": flags,
        "status": result_status(check),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
        "seconds": round(time.time() - t_start, 2),
    }
