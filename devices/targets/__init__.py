"""Targets: where the agent runs. One interface (:class:`~devices.targets.base.Target`), one table from URL scheme to class.

    local                    this host
    ssh://user@host[:port]   a Linux board (OpenSSH, key auth, host key checked)
    adb://SERIAL             an Android phone (agent with the phone's Python, or TFLite's benchmark_model)
    docker:IMAGE             the device image (``Dockerfile`` at the repository root)
"""

from __future__ import annotations

import importlib

from devices.errors import DeviceError
from devices.inventory import DeviceSpec, scheme_of

# URL scheme → (module, class); a new kind of target is one module and one row here.
TARGETS: dict[str, tuple[str, str]] = {
    "local": ("devices.targets.local", "LocalTarget"),
    "ssh": ("devices.targets.ssh", "SshTarget"),
    "adb": ("devices.targets.adb", "AdbTarget"),
    "docker": ("devices.targets.docker", "DockerTarget"),
}


def target_for(spec: DeviceSpec):
    scheme = scheme_of(spec.url)
    if scheme not in TARGETS:
        raise DeviceError(f"device {spec.name!r}: unknown URL scheme in {spec.url!r}; use local, ssh://user@host[:port], adb://SERIAL or docker:IMAGE")
    module, cls = TARGETS[scheme]
    return getattr(importlib.import_module(module), cls)(spec)
