"""``adb://SERIAL``: an Android phone over adb.

The ``.tflite`` is pushed to ``/data/local/tmp/zsq-bench-<pid>``. Where the phone has
Python (``python:`` in devices.yaml, e.g. Termux's), the agent runs there as on any
board and checks the outputs. Otherwise TFLite's ``benchmark_model`` binary that the
user points to (``benchmark_model:``) is pushed and run, pinned to the big cores with
``taskset`` (mask from ``cpuinfo_max_freq``), once per trial and thread count; its
output is parsed into the same JSON (each run is a fresh process, so its Init and
first inference are the cold starts). benchmark_model feeds random inputs, so that
path cannot check outputs; the result says so.

``adb shell`` hands its command to the phone's ``sh``: every value in it (folders, the
artifact's file name, numbers) is quoted with :func:`shlex.quote` (:func:`sh_words`), and
the serial must not look like an adb option.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from devices.bundle import BenchJob
from devices.errors import DeviceError
from devices.protocol import SCHEMA, result_status, sha256
from devices.targets.base import RESULT, Log, ResultLeftOnDevice, Target, agent_failure, parse_result, result_from_stdout, stage
from runtimes.formats import BY_NAME

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_SERIAL = re.compile(r"[A-Za-z0-9_.:\[\]-]+")  # USB serials, host:port, emulator-5554, mDNS names


def sh_words(*words: object) -> str:
    """A command line for the phone's shell: every word quoted, so a file name like ``m;touch x;.tflite`` stays one word."""
    return " ".join(shlex.quote(str(w)) for w in words)


def adb_exe() -> str:
    exe = shutil.which("adb")
    if exe is None:
        raise DeviceError("adb is not installed on this host: apt-get install adb (Debian) or Android's platform-tools")
    return exe


def list_devices(timeout: float = 30) -> list[dict]:
    """``adb devices -l`` as ``[{serial, state, model...}]`` (starts the adb server if it is not running)."""
    try:
        res = subprocess.run([adb_exe(), "devices", "-l"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"adb devices did not answer within {timeout:.0f}s") from None
    if res.returncode != 0:
        raise DeviceError(f"adb devices failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    out = []
    for line in res.stdout.splitlines():
        if not line.strip() or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            extra = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
            out.append({"serial": parts[0], "state": parts[1], **extra})
    return out


def parse_benchmark_model(text: str) -> dict:
    """TFLite benchmark_model's stdout → times in ms (Init, first inference, timed-run statistics, memory)."""
    out: dict = {}
    m = re.search(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}", text)
    if not m:
        raise DeviceError("benchmark_model printed no 'Inference timings' line: " + (text.strip().splitlines() or ["no output"])[-1][:200])
    out["init_ms"], out["first_ms"], out["warmup_mean_ms"], out["mean_ms"] = (float(v) / 1000 for v in m.groups())
    stats = [ln for ln in text.splitlines() if re.search(r"\bcount=\d+", ln) and "first=" in ln]
    if stats:
        fields = dict(re.findall(rf"(\w+)={_NUM}", stats[-1]))
        out["n"] = int(float(fields["count"]))
        for key, name in (("min", "min_ms"), ("max", "max_ms"), ("avg", "mean_ms"), ("std", "std_ms"), ("p5", "p5_ms"),
                          ("median", "p50_ms"), ("p95", "p95_ms")):
            if key in fields:
                out[name] = float(fields[key]) / 1000
    mem = re.search(rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): init={_NUM} overall={_NUM}", text)
    if mem:
        out["rss_init_kb"], out["rss_peak_kb"] = (int(float(v) * 1024) for v in mem.groups())
    peak = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}", text)
    if peak:
        out["rss_peak_kb"] = int(float(peak.group(1)) * 1024)
    size = re.search(rf"The input model file size \(MB\): {_NUM}", text)
    if size:
        out["model_size_mb"] = float(size.group(1))
    return out


def big_core_mask(max_freqs_khz: dict[int, int]) -> tuple[str, list[int]]:
    """Hex taskset mask of the highest-frequency cores."""
    top = max(max_freqs_khz.values())
    cores = sorted(c for c, f in max_freqs_khz.items() if f == top)
    return format(sum(1 << c for c in cores), "x"), cores


class AdbTarget(Target):
    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.serial = spec.url.split("://", 1)[1].strip("/")
        if not self.serial:
            raise DeviceError(f"bad adb URL {spec.url!r}: use adb://SERIAL (serials: adb devices)")
        if self.serial.startswith("-"):
            raise DeviceError(f"bad adb URL {spec.url!r}: the serial {self.serial!r} looks like a command-line option; "
                              "use adb://SERIAL (serials: adb devices)")
        if not _SERIAL.fullmatch(self.serial):
            raise DeviceError(f"bad adb URL {spec.url!r}: a serial has only letters, digits and . _ : - [ ] (serials: adb devices)")

    def _adb(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([adb_exe(), "-s", self.serial, *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"adb://{self.serial}: adb {args[0]} did not finish within {timeout:.0f}s") from None

    def shell(self, command: str, timeout: float = 60) -> str:
        res = self._adb("shell", command, timeout=timeout)
        if res.returncode != 0:
            raise DeviceError(f"adb://{self.serial}: '{command[:60]}' failed: {(res.stderr or res.stdout).strip()[-200:]}")
        return res.stdout.replace("\r\n", "\n")

    def check(self) -> dict:
        attached = list_devices()
        mine = next((d for d in attached if d["serial"] == self.serial), None)
        if mine is None:
            names = ", ".join(f"{d['serial']} ({d['state']})" for d in attached) or "none"
            raise DeviceError(f"adb://{self.serial}: no such device attached (adb devices lists: {names}); "
                              "connect the phone, enable USB debugging and accept this host's key")
        if mine["state"] != "device":
            raise DeviceError(f"adb://{self.serial}: attached but {mine['state']} (unauthorized: accept the prompt on the phone)")
        model = self.shell("getprop ro.product.model").strip()
        return {"ok": True, "detail": f"{model}, Android {self.shell('getprop ro.build.version.release').strip()}"}

    def environment(self) -> dict:
        sh = self.shell
        freqs = {}
        for line in sh("for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do echo $f $(cat $f); done").splitlines():
            m = re.search(r"cpu(\d+)/cpufreq/cpuinfo_max_freq (\d+)", line)
            if m:
                freqs[int(m.group(1))] = int(m.group(2))
        temps = {}
        for line in sh("for z in /sys/class/thermal/thermal_zone*; do echo $(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null); done").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                temps[parts[0]] = int(parts[1]) / (1000.0 if abs(int(parts[1])) > 1000 else 1.0)
        battery = dict(re.findall(r"^\s*([\w ]+): (.+)$", sh("dumpsys battery"), re.M))
        return {
            "cpu_model": sh("getprop ro.soc.model").strip() or sh("getprop ro.board.platform").strip(),
            "device_model": sh("getprop ro.product.model").strip(),
            "os": f"Android {sh('getprop ro.build.version.release').strip()}",
            "machine": sh("uname -m").strip(),
            "max_freq_mhz": {str(c): f // 1000 for c, f in freqs.items()},
            "governor": sh("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || true").strip(),
            "temperatures_c": temps,
            "battery": {k.strip(): v.strip() for k, v in battery.items() if k.strip() in ("level", "temperature", "AC powered", "USB powered", "status")},
            "screen": "on" if "mScreenOn=true" in sh("dumpsys power | grep -m1 mScreenOn || true") else "unknown",
            "load_average": sh("cat /proc/loadavg").split()[:3],
            "_freqs": freqs,
        }

    def bench(self, job: BenchJob, agent_args: list[str], log: Log) -> dict:
        self.check()
        remote = f"/data/local/tmp/zsq-bench-{os.getpid()}-{int(time.time())}"
        self.shell(sh_words("mkdir", "-p", remote))
        keep = False
        try:
            if self.spec.benchmark_model:
                return self.label(self._bench_native(job, agent_args, remote, log))
            return self.label(self._bench_agent(job, agent_args, remote, log))
        except ResultLeftOnDevice:
            keep = True  # the measurement is there: never remove it
            raise
        finally:
            if not keep:
                self._adb("shell", sh_words("rm", "-rf", remote))

    def _push(self, local: Path, remote: str) -> None:
        # an absolute local path: a relative one starting with "-" would be read as an adb option
        res = self._adb("push", str(Path(local).absolute()), remote, timeout=600)
        if res.returncode != 0:
            raise DeviceError(f"adb://{self.serial}: pushing {local.name} failed: {(res.stderr or res.stdout).strip()[-200:]}")

    def _bench_agent(self, job: BenchJob, agent_args: list[str], remote: str, log: Log) -> dict:
        with tempfile.TemporaryDirectory(prefix="zsq-adb-") as tmp:
            args = stage(job, Path(tmp))
            for f in Path(tmp).iterdir():
                self._push(f, f"{remote}/")
        agent = " ".join(shlex.quote(a) for a in [self.spec.python, "-m", "devices.agent", *args, *self.spec.default_agent_args(),
                                                    *agent_args, "--json_stats", RESULT, "--device_name", self.name])
        res = self._adb("shell", f"cd {shlex.quote(remote)} && {agent}", timeout=self.spec.timeout)
        err = res.stderr.splitlines()
        salvaged = result_from_stdout(res.returncode, res.stdout, err, self.spec.url, log)
        if salvaged is not None:
            return salvaged
        if res.returncode != 0:
            raise DeviceError(f"adb://{self.serial}: the agent failed (exit {res.returncode}): {agent_failure(err)}")
        try:
            return parse_result(self.shell(sh_words("cat", f"{remote}/{RESULT}")), self.spec.url)
        except DeviceError as exc:
            raise ResultLeftOnDevice(f"adb://{self.serial}: the agent finished but fetching its result failed ({exc}); it is kept on "
                                     f"the phone: adb -s {self.serial} pull {remote}/{RESULT}, then adb shell rm -rf {remote}") from None

    def _bench_native(self, job: BenchJob, agent_args: list[str], remote: str, log: Log) -> dict:
        """TFLite's benchmark_model, pinned to the big cores; trials × thread counts, parsed into the agent's schema."""
        import argparse

        from devices.agent import add_bench_flags, settings_from_args

        if job.artifact.suffix != BY_NAME["tflite"].suffix:
            raise DeviceError(f"adb://{self.serial}: benchmark_model runs .tflite files, not {job.artifact.name}; "
                              "use python: in devices.yaml to run the agent for other runtimes")
        binary = Path(self.spec.benchmark_model).expanduser()
        if not binary.exists():
            raise DeviceError(f"benchmark_model binary {binary} does not exist (benchmark_model: in devices.yaml)")
        p = argparse.ArgumentParser()
        add_bench_flags(p)
        args = p.parse_args([*self.spec.default_agent_args(), *agent_args])
        env = self.environment()
        freqs = env.pop("_freqs")
        mask, cores = big_core_mask(freqs) if freqs else ("", [])
        args.cpu_mask = "none"  # the host's cores say nothing about the phone's: pinning is taskset's job here
        settings = settings_from_args(args)
        threads = settings.threads if args.num_threads else ((1, len(cores)) if len(cores) > 1 else (1,))
        self._push(binary, f"{remote}/benchmark_model")
        self.shell(sh_words("chmod", "755", f"{remote}/benchmark_model"))
        self._push(job.artifact, f"{remote}/{job.artifact.name}")
        b = settings.bench
        runs, flags = [], []
        for t in threads:
            trials = []
            for i in range(settings.trials):
                cmd = (f"cd {shlex.quote(remote)} && "
                       + sh_words(*(["taskset", mask] if mask else []), "./benchmark_model", f"--graph={job.artifact.name}",
                                  f"--num_threads={t}", f"--warmup_runs={b['warmup_runs']}", f"--warmup_min_secs={b['warmup_min_secs']}",
                                  f"--num_runs={b['num_runs']}", f"--min_secs={b['min_secs']}", f"--max_secs={b['max_secs']}",
                                  f"--run_delay={b['run_delay'] or -1}", "--report_peak_memory_footprint=true"))
                log(f"{self.name}: benchmark_model {t} thread(s), trial {i + 1}/{settings.trials}")
                trials.append(parse_benchmark_model(self.shell(cmd + " 2>&1", timeout=self.spec.timeout)))
                if i + 1 < settings.trials:
                    time.sleep(settings.cooldown_secs)
            key = "p50_ms" if all("p50_ms" in tr for tr in trials) else "mean_ms"
            vals = [tr[key] for tr in trials]
            med = statistics.median(vals)
            spread = (max(vals) - min(vals)) / med if med else 0.0
            if spread > 0.05:
                flags.append(f"{t} thread(s): {key[:-3]} differs by {spread:.1%} between trials (> 5%)")
            steady = {"trials": len(trials), "p50_ms": statistics.median([tr["p50_ms"] for tr in trials]) if key == "p50_ms" else None,
                      "p90_ms": None, "p99_ms": None, "mean_ms": statistics.median([tr["mean_ms"] for tr in trials]),
                      "std_ms": statistics.median([tr.get("std_ms", 0.0) for tr in trials]),
                      "min_ms": min(tr.get("min_ms", tr["mean_ms"]) for tr in trials), "max_ms": max(tr.get("max_ms", tr["mean_ms"]) for tr in trials),
                      "n": sum(tr.get("n", 0) for tr in trials), "spread": spread, "spread_limit": 0.05, "unstable": spread > 0.05,
                      "spread_of": key}
            runs.append({"threads": t, "affinity": cores or None, "taskset_mask": mask or None,
                         "cold_start": {"runs": [{"load_ms": tr["init_ms"], "first_ms": tr["first_ms"]} for tr in trials],
                                        "load_ms": {"median": statistics.median([tr["init_ms"] for tr in trials])},
                                        "first_ms": {"median": statistics.median([tr["first_ms"] for tr in trials])}},
                         "steady": steady, "trials": trials,
                         "rss_init_kb": max((tr.get("rss_init_kb", 0) for tr in trials), default=None),
                         "rss_peak_kb": max((tr.get("rss_peak_kb", 0) for tr in trials), default=None)})
        flags.append("benchmark_model feeds random inputs: outputs not checked on the device (give python: to run the agent)")
        if not any("p50_ms" in tr for r in runs for tr in r["trials"]):
            flags.append("this benchmark_model prints no percentiles: p50/p90/p99 missing, mean and std given")
        return {"schema": SCHEMA, "tool": "benchmark_model",
                "artifact": {"name": job.artifact.name, "files": [job.artifact.name], "size_bytes": job.artifact.stat().st_size,
                             "sha256": sha256(job.artifact), "files_sha256": {job.artifact.name: sha256(job.artifact)},
                             "runtime": "litert", "runtime_version": "benchmark_model"},
                "settings": {"bench": b, "threads": list(threads), "cpus": cores, "trials": settings.trials, "cold_starts": 0,
                             "cooldown_secs": settings.cooldown_secs, "full": settings.full},
                "environment": env, "runs": runs, "reference": None, "flags": flags, "status": result_status(None)}
