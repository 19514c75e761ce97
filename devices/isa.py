"""The CPU features that decide how int8 kernels compute, and whether this process runs under emulation.

Why a device records them: the same integer artifact computes slightly different numbers on
different CPU kinds. x86 CPUs without VNNI run u8×s8 products through ``VPMADDUBSW``, whose
pair sums saturate at int16 (see ``pipeline/quant/overflow.py``); VNNI (``avx512_vnni``,
``avx_vnni``) and AMX accumulate in int32. ARM's dot-product (``asimddp``) and ``i8mm``
instructions accumulate in int32 too, and the older ARM kernels widen to int16 products
before pairwise adds, so neither saturates. The bench result says which case it measured.

Emulation: ``qemu-user`` passes the *host's* ``/proc/cpuinfo`` through (before qemu 8.2
even to an arm64 guest), so a Haswell emulated on a VNNI host would claim VNNI. The features
here therefore come from the CPU the process actually sees: on x86 numpy's runtime dispatch
table (CPUID as the process sees it), on ARM the auxiliary vector's HWCAP bits, and
``/proc/cpuinfo`` only where neither answers. Emulation is recognised from the mismatch
between the two and from qemu's own traces (see :func:`emulation`). Latency measured under
emulation is not a device figure.
Nothing here imports more than numpy, which every device has.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

X86_INT8 = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_INT8 = ("asimd", "asimddp", "i8mm", "sve", "sve2")
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")
# numpy's dispatch names → the kernel's /proc/cpuinfo names (what a reader of the report knows)
_NUMPY_X86 = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni"}
# features both numpy and /proc/cpuinfo name: one that the host lists but this process lacks means a smaller emulated CPU
_NUMPY_X86_PROBES = {**_NUMPY_X86, "VAES": "vaes", "VPCLMULQDQ": "vpclmulqdq", "GFNI": "gfni", "FMA3": "fma", "F16C": "f16c",
                     "MOVBE": "movbe", "BMI2": "bmi2"}
_NUMPY_ARM = {"ASIMD": "asimd", "ASIMDDP": "asimddp", "I8MM": "i8mm", "SVE": "sve", "SVE2": "sve2"}


def arch() -> str:
    """``x86_64`` or ``aarch64`` (as the process sees it; under qemu-user, the emulated one)."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def cpuinfo_features(text: str | None = None) -> set[str]:
    """The feature words of ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``) of the first CPU."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    m = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


# aarch64 HWCAP / HWCAP2 bits (linux/arch/arm64/include/uapi/asm/hwcap.h): the kernel, or qemu-user for an
# emulated CPU, fills them from the CPU the process runs on; numpy has no I8MM or SVE2 names
_ARM_HWCAP = {"asimd": (16, 1), "asimddp": (16, 20), "sve": (16, 22), "sve2": (26, 1), "i8mm": (26, 13)}


def auxv(text: bytes | None = None) -> dict[int, int]:
    """The auxiliary vector of this process (``AT_*`` type → value), from ``/proc/self/auxv`` (64-bit little-endian)."""
    import struct

    if text is None:
        try:
            text = Path("/proc/self/auxv").read_bytes()
        except OSError:
            return {}
    out = {}
    for i in range(0, len(text) - 15, 16):
        key, value = struct.unpack_from("<QQ", text, i)
        if key == 0:
            break
        out[key] = value
    return out


def arm_hwcap_features(vector: dict[int, int] | None = None) -> dict[str, bool] | None:
    """ARM int8 features from AT_HWCAP/AT_HWCAP2, or None where the vector has no HWCAP."""
    vector = auxv() if vector is None else vector
    if 16 not in vector:
        return None
    return {name: bool(vector.get(at, 0) >> bit & 1) for name, (at, bit) in _ARM_HWCAP.items()}


def numpy_features() -> dict[str, bool] | None:
    """numpy's runtime CPU dispatch table (what CPUID/HWCAP says to this process), or None without numpy."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats  # numpy >= 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats  # numpy 1.x
        except ImportError:
            return None
    return dict(feats)


def process_features(machine: str | None = None, cpuinfo: set[str] | None = None, np_feats: dict[str, bool] | None = None,
                     emulated: str | None = "detect") -> dict[str, bool]:
    """The int8-relevant features this process can use: numpy's view where it knows the feature, /proc/cpuinfo otherwise.

    ``avx_vnni`` (the VEX form on Alder Lake/Zen 5 clients) has no numpy name: it comes from
    /proc/cpuinfo, except when emulation is detected, where the host's word cannot be trusted.
    """
    machine = machine or arch()
    cpuinfo = cpuinfo_features() if cpuinfo is None else cpuinfo
    np_feats = numpy_features() if np_feats is None else np_feats
    names, table = (X86_INT8, _NUMPY_X86) if machine == "x86_64" else (ARM_INT8, _NUMPY_ARM) if machine == "aarch64" else ((), {})
    if (emulation(machine) if emulated == "detect" else emulated) is not None:
        cpuinfo = set()  # the host's words, not this CPU's: only what the process itself sees counts
    out = {n: n in cpuinfo for n in names}
    if machine == "aarch64":
        hw = arm_hwcap_features()
        if hw is not None:
            return hw
    if np_feats:
        for np_name, name in table.items():
            if np_name in np_feats:
                out[name] = bool(np_feats[np_name])
    return out


def _kernel_arch() -> str | None:
    try:
        return Path("/proc/sys/kernel/arch").read_text().strip()  # the host kernel's, never rewritten by qemu-user
    except OSError:
        return None


def emulation(machine: str | None = None, cpuinfo_text: str | None = None, np_feats: dict[str, bool] | None = None,
              kernel_arch: str | None = "read", comm: str | None = "read") -> str | None:
    """How this process is emulated (``"qemu-user (aarch64 on x86_64 host)"``...), or None when it runs natively.

    Signals, any of which is enough: the kernel's name for this process is qemu's
    (``/proc/self/comm``: qemu-user rewrites ``/proc/self/exe``, ``cmdline`` and ``stat`` but
    not ``comm``); /proc/cpuinfo describes another architecture than the process runs
    (qemu-user shows the host's file); numpy sees fewer x86 features than /proc/cpuinfo lists
    (a smaller CPU model emulated on the host).
    """
    machine = machine or arch()
    if comm == "read":
        comm = None
        try:
            comm = Path("/proc/self/comm").read_text().strip()
            if not comm.startswith("qemu-"):  # qemu-user rewrites /proc/self/exe, not the per-thread link
                comm = os.path.basename(os.readlink("/proc/thread-self/exe"))
        except OSError:
            pass
    if kernel_arch == "read":
        kernel_arch = _kernel_arch()
    if kernel_arch and machine in ("x86_64", "aarch64") and kernel_arch in ("x86_64", "aarch64") and kernel_arch != machine:
        return f"qemu-user ({machine} on {kernel_arch} host)"
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo_text = ""
    host = None
    if re.search(r"^vendor_id\s*:", cpuinfo_text, re.M) or re.search(r"^flags\s*:", cpuinfo_text, re.M):
        host = "x86_64"
    elif re.search(r"^(CPU implementer|Features)\s*:", cpuinfo_text, re.M):
        host = "aarch64"
    if host and machine in ("x86_64", "aarch64") and host != machine:
        return f"qemu-user ({machine} on {host} host)"
    if machine == "x86_64" and host == "x86_64":
        np_feats = numpy_features() if np_feats is None else np_feats
        listed = cpuinfo_features(cpuinfo_text)
        if np_feats:
            missing = [name for np_name, name in _NUMPY_X86_PROBES.items() if name in listed and np_feats.get(np_name) is False]
            if missing:
                return f"qemu-user (x86_64 CPU model without the host's {', '.join(missing)})"
    if comm and comm.startswith("qemu-"):
        return f"qemu-user ({machine} CPU model, {comm})"
    return None


def u8s8_saturates(machine: str | None = None, features: dict[str, bool] | None = None) -> bool:
    """Whether u8×s8 int8 kernels (ONNX Runtime, OpenVINO on x86) saturate their int16 pair sums on this CPU."""
    machine = machine or arch()
    if machine != "x86_64":
        return False
    features = process_features(machine) if features is None else features
    return not any(features.get(f) for f in _VNNI)


def capture() -> dict:
    """The ISA record of a measurement (JSON-ready)."""
    machine = arch()
    emu = emulation(machine)
    feats = process_features(machine, emulated=emu)
    if machine == "aarch64" and arm_hwcap_features() is not None:
        source = "auxv HWCAP"
    elif machine == "x86_64" and numpy_features() is not None:
        source = "numpy runtime dispatch (CPUID)" + ("" if emu else " + /proc/cpuinfo")
    else:
        source = "/proc/cpuinfo"
    return {"arch": machine, "int8_features": feats, "u8s8_saturates": u8s8_saturates(machine, feats), "emulated": emu, "source": source}
