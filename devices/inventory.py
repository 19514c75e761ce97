"""The devices file (``devices.yaml``): named targets, each a URL plus how to reach and use it.

    devices:
      pi5:
        url: ssh://pi@pi5.local          # ssh://user@host[:port]
        python: /home/pi/zsq/bin/python  # the board's Python with numpy + a runtime (requirements-device.txt)
        identity: ~/.ssh/id_ed25519      # key auth only (BatchMode), host key checked against known_hosts
        known_hosts: ~/.ssh/known_hosts
        cpu_mask: f0                     # default agent flags for this device
      pixel7:
        url: adb://2A0B1C3D
        benchmark_model: ~/android/benchmark_model   # TFLite's binary, pushed when the phone has no Python
      board-image:
        url: docker:zsq-device:latest
        platform: linux/arm64

``local`` (this host) is always there. A URL given where a name is expected works too
(``--device ssh://pi@10.0.0.5``). Unknown keys fail with the valid ones listed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path

from devices.errors import DeviceError

DEFAULT_FILE = Path("devices.yaml")


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    url: str
    description: str = ""
    python: str = "python3"  # ssh/adb: the interpreter on the device that runs the agent
    identity: str | None = None  # ssh: private key
    known_hosts: str | None = None  # ssh: known_hosts file (host keys are always checked)
    connect_timeout: float = 10.0  # seconds to establish a connection
    timeout: float = 3600.0  # seconds for the whole run on the device
    retries: int = 1  # reconnect attempts after a dropped or refused connection
    workdir: str = "/tmp"  # ssh/adb: where the job folder is created (removed afterwards)
    ssh_options: list[str] = field(default_factory=list)  # extra -o options, e.g. ["ProxyJump=gw"]
    benchmark_model: str | None = None  # adb: path of TFLite's benchmark_model binary on this host
    platform: str | None = None  # docker: --platform
    docker_args: list[str] = field(default_factory=list)  # docker: extra run arguments (--cpuset-cpus=4-7 ...)
    agent_args: list[str] = field(default_factory=list)  # default agent flags on this device
    cpu_mask: str | None = None
    num_threads: str | None = None

    @property
    def scheme(self) -> str:
        return scheme_of(self.url)

    def default_agent_args(self) -> list[str]:
        out = list(self.agent_args)
        if self.cpu_mask:
            out += ["--cpu_mask", str(self.cpu_mask)]
        if self.num_threads:
            out += ["--num_threads", str(self.num_threads)]
        return out


def scheme_of(url: str) -> str:
    if url == "local":
        return "local"
    if "://" in url:
        return url.split("://", 1)[0]
    if ":" in url:
        return url.split(":", 1)[0]
    return url


def _spec(name: str, data: dict, source: str) -> DeviceSpec:
    if not isinstance(data, dict) or "url" not in data:
        raise DeviceError(f"{source}: device {name!r} needs a url (local, ssh://user@host[:port], adb://SERIAL or docker:IMAGE)")
    valid = {f.name for f in fields(DeviceSpec)} - {"name"}
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            raise DeviceError(f"{source}: unknown key {key!r} for device {name!r}" +
                              (f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"))
    kw = dict(data)
    for key in ("ssh_options", "docker_args", "agent_args"):
        if key in kw and isinstance(kw[key], str):
            kw[key] = kw[key].split()
    for key in ("cpu_mask", "num_threads"):
        if key in kw and kw[key] is not None:
            kw[key] = str(kw[key])
    return DeviceSpec(name=name, **kw)


def load(path: Path | None = None) -> dict[str, DeviceSpec]:
    """Devices by name: ``local`` plus those in ``path`` (default ``./devices.yaml``; a missing default file is fine)."""
    devices = {"local": DeviceSpec("local", "local", "this host")}
    explicit = path is not None
    path = Path(path) if path else DEFAULT_FILE
    if not path.exists():
        if explicit:
            raise DeviceError(f"devices file {path} does not exist")
        return devices
    text = path.read_text()
    try:
        import yaml

        data = yaml.safe_load(text) or {}
    except ImportError:  # a device-side install may lack PyYAML: JSON is YAML too
        import json

        data = json.loads(text or "{}")
    except Exception as exc:  # noqa: BLE001  (yaml.YAMLError and friends)
        raise DeviceError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("devices", {}), dict):
        raise DeviceError(f"{path}: expected a mapping 'devices:' of name → {{url: ...}}")
    for name, entry in (data.get("devices") or {}).items():
        devices[str(name)] = _spec(str(name), entry, str(path))
    return devices


def resolve(name_or_url: str, path: Path | None = None) -> DeviceSpec:
    """The device named (or the URL given), its URL checked: a bad one fails here, before any stage runs or ssh/adb/docker starts."""
    devices = load(path)
    if name_or_url in devices:
        return check_url(devices[name_or_url])
    if "://" in name_or_url or name_or_url.startswith("docker:"):
        return check_url(DeviceSpec(name_or_url, name_or_url))
    close = difflib.get_close_matches(name_or_url, devices, n=1)
    raise DeviceError(f"unknown device {name_or_url!r}" + (f"; did you mean {close[0]!r}?" if close else "") +
                      f"; devices: {', '.join(devices)} (or a URL: ssh://user@host[:port], adb://SERIAL, docker:IMAGE)")


def check_url(spec: DeviceSpec) -> DeviceSpec:
    """``spec`` when its target accepts its URL (parsed only: nothing is contacted); DeviceError saying what is wrong otherwise."""
    from devices.targets import target_for  # the targets import this module

    target_for(spec)
    return spec
