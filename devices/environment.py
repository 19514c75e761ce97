"""What the machine looked like while it was measured: CPU, frequencies, governor, temperatures, throttling, load.

Everything is read from ``/proc`` and ``/sys`` where the OS exposes it (Linux, Android)
and left out where it does not; nothing here needs a third-party package. The
big cores are the online cores with the highest ``cpuinfo_max_freq`` (all cores
on a machine without cpufreq).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from devices import isa

CPU_SYS = Path("/sys/devices/system/cpu")
THERMAL_SYS = Path("/sys/class/thermal")
# distributions whose version goes into the record (the runtime of an artifact and what it stands on)
PACKAGES = ("numpy", "onnxruntime", "openvino", "ai-edge-litert", "tflite-runtime")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,6"`` → ``[0, 1, 2, 3, 6]`` (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-")
            cpus += range(int(a), int(b) + 1)
        else:
            cpus.append(int(part))
    return cpus


def cpu_model() -> str:
    info = _read(Path("/proc/cpuinfo")) or ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def online_cpus() -> list[int]:
    text = _read(CPU_SYS / "online")
    return parse_cpu_list(text) if text else list(range(os.cpu_count() or 1))


def max_freqs_khz() -> dict[int, int]:
    out = {}
    for cpu in online_cpus():
        v = _read(CPU_SYS / f"cpu{cpu}" / "cpufreq" / "cpuinfo_max_freq")
        if v and v.isdigit():
            out[cpu] = int(v)
    return out


def big_cores() -> list[int]:
    """Online cores with the highest max frequency (big.LITTLE: the big cluster); all online cores without cpufreq."""
    freqs = max_freqs_khz()
    if not freqs:
        return online_cpus()
    top = max(freqs.values())
    return sorted(c for c, f in freqs.items() if f == top)


def governors() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for cpu in online_cpus():
        g = _read(CPU_SYS / f"cpu{cpu}" / "cpufreq" / "scaling_governor")
        if g:
            out.setdefault(g, []).append(cpu)
    return out


def temperatures() -> dict[str, float]:
    """``{zone type: °C}`` from ``/sys/class/thermal`` (empty where the OS exposes none, e.g. most VMs)."""
    out: dict[str, float] = {}
    for zone in sorted(THERMAL_SYS.glob("thermal_zone*")):
        t = _read(zone / "temp")
        if t and t.lstrip("-").isdigit():
            name = _read(zone / "type") or zone.name
            key = name if name not in out else f"{name}.{zone.name}"
            out[key] = int(t) / 1000.0
    return out


def max_temperature() -> float | None:
    t = temperatures()
    return max(t.values()) if t else None


def throttling() -> dict[str, object]:
    """Throttle evidence: Raspberry Pi ``vcgencmd get_throttled`` and x86 ``thermal_throttle`` counters."""
    out: dict[str, object] = {}
    if shutil.which("vcgencmd"):
        try:
            res = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5)
            m = re.search(r"throttled=(0x[0-9a-fA-F]+)", res.stdout)
            if m:
                bits = int(m.group(1), 16)
                out["vcgencmd_throttled"] = m.group(1)
                out["undervoltage_now"] = bool(bits & 0x1)
                out["throttled_now"] = bool(bits & 0x4)
                out["throttled_since_boot"] = bool(bits & 0x40000)
        except (OSError, subprocess.SubprocessError):
            pass
    counts = {}
    for cpu in online_cpus():
        for kind in ("core_throttle_count", "package_throttle_count"):
            v = _read(CPU_SYS / f"cpu{cpu}" / "thermal_throttle" / kind)
            if v and v.isdigit():
                counts[kind] = counts.get(kind, 0) + int(v)
    out.update(counts)
    return out


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def memory_total_kb() -> int | None:
    m = re.search(r"^MemTotal:\s+(\d+)", _read(Path("/proc/meminfo")) or "", re.M)
    return int(m.group(1)) if m else None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def affinity() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def capture() -> dict:
    """The environment record of a measurement (JSON-ready)."""
    uname = platform.uname()
    freqs = max_freqs_khz()
    return {
        "hostname": uname.node,
        "os": f"{uname.system} {uname.release}",
        "machine": uname.machine,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "online_cpus": online_cpus(),
        "big_cores": big_cores(),
        "max_freq_mhz": {str(c): f // 1000 for c, f in freqs.items()},
        "governor": governors(),
        "temperatures_c": temperatures(),
        "throttling": throttling(),
        "load_average": load_average(),
        "memory_total_kb": memory_total_kb(),
        "affinity": affinity(),
        "versions": package_versions(),
        "isa": isa.capture(),
        "python_executable": sys.executable,
    }
