"""The ssh target against a real OpenSSH server (Debian's openssh-server) started here on 127.0.0.1.

Host key and user key are generated per test session; the server runs as the
current user with key authentication only, and the client checks the host key
(StrictHostKeyChecking=yes). The "board" is this machine, so the remote Python is
this interpreter (``python:`` in the devices file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_devices import TINY, device_run  # noqa: F401  (the module pytest loaded, so one session-wide run for all files)

SSHD = Path("/usr/sbin/sshd")
pytestmark = pytest.mark.skipif(not SSHD.exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                                reason="OpenSSH server/client not installed (scripts/setup.sh installs openssh-server)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Sshd:
    """A real sshd on 127.0.0.1:<free port>, its keys and a devices file pointing at it."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "user_key", "other_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
        (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
        os.chmod(folder / "authorized_keys", 0o600)
        self.port = _free_port()
        (folder / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}", f"PidFile {folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", ""]))
        host_pub = " ".join((folder / "host_key.pub").read_text().split()[:2])
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        other_pub = " ".join((folder / "other_key.pub").read_text().split()[:2])
        (folder / "wrong_known_hosts").write_text(f"[127.0.0.1]:{self.port} {other_pub}\n")
        self.remote = folder / "board_tmp"
        self.remote.mkdir()
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory when run as root
        self.log = open(folder / "sshd.log", "w")
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.1)
        user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
        self.url = f"ssh://{user}@127.0.0.1:{self.port}"
        self.devices = folder / "devices.yaml"
        self.devices.write_text(
            "devices:\n"
            f"  board:\n    url: {self.url}\n    python: {sys.executable}\n    identity: {folder / 'user_key'}\n"
            f"    known_hosts: {folder / 'known_hosts'}\n    workdir: {self.remote}\n    connect_timeout: 5\n"
            f"  impostor:\n    url: {self.url}\n    python: {sys.executable}\n    identity: {folder / 'user_key'}\n"
            f"    known_hosts: {folder / 'wrong_known_hosts'}\n    connect_timeout: 5\n"
            f"  closed:\n    url: ssh://{user}@127.0.0.1:{_free_port()}\n    identity: {folder / 'user_key'}\n"
            f"    known_hosts: {folder / 'known_hosts'}\n    connect_timeout: 3\n")

    def kill(self) -> None:
        """The server and every process it started (connections, the agent running under them)."""
        for pid in [*reversed(_descendants(self.proc.pid)), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.kill()


def test_bench_over_ssh_end_to_end(sshd, device_run, capsys):  # noqa: F811
    from pipeline.cli import main

    assert main(["devices", "check", "board", "--devices-file", str(sshd.devices)]) == 0
    assert "Python 3" in capsys.readouterr().out
    out = sshd.dir / "results"
    rc = main(["bench", "--artifact", str(device_run["fp32"]), "--artifact", str(device_run["int8"]), "--device", "board",
               "--devices-file", str(sshd.devices), "--out", str(out), *TINY])
    assert rc == 0
    captured = capsys.readouterr()
    assert "board: job copied to" in captured.err and "trial 2/2" in captured.err
    for name, kind in (("model.fp32.onnx", "fp"), ("model.w8a8.onnx", "fake_quant")):
        r = json.loads((out / f"{name}.json").read_text())
        assert r["device"] == {"name": "board", "url": sshd.url, "target": "ssh", "description": ""}
        assert r["status"] == "ok" and r["reference"]["status"] == "ok" and r["reference_kind"] == kind
        assert r["artifact"]["name"] == name and len(r["runs"][0]["trials"]) == 2
        assert r["environment"]["python_executable"] == sys.executable
    assert (out / "latency_raw.csv").exists()
    assert list(sshd.remote.iterdir()) == []  # the job folder was removed from the board


def test_unreachable_host_is_one_clear_error(sshd, device_run):  # noqa: F811
    from devices.errors import DeviceError
    from devices.inventory import resolve
    from devices.session import bench_artifacts

    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"is unreachable \(Connection refused\)"):
        bench_artifacts([device_run["int8"]], resolve("closed", sshd.devices), TINY)
    assert time.monotonic() - t0 < 60


def test_host_key_is_checked(sshd, device_run):  # noqa: F811
    from devices.errors import DeviceError
    from devices.inventory import resolve
    from devices.targets import target_for

    with pytest.raises(DeviceError, match="host key not trusted"):
        target_for(resolve("impostor", sshd.devices)).check()


def test_connection_dropped_mid_run(tmp_path, device_run):  # noqa: F811
    """The server dies while the agent runs: one reconnect is tried, then a clear error naming the drop."""
    from devices.errors import DeviceError
    from devices.inventory import resolve
    from devices.session import bench_artifacts

    server = Sshd(tmp_path / "sshd")
    errors: list[BaseException] = []
    logs: list[str] = []

    def bench() -> None:
        try:
            bench_artifacts([device_run["fp32"]], resolve("board", server.devices),
                            ["--num_threads", "1", "--num_runs", "100000", "--min_secs", "60", "--max_secs", "60", "--trials", "1",
                             "--cold_starts", "0", "--warmup_runs", "1", "--warmup_min_secs", "0"], log=logs.append)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=bench)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("steady state" in m for m in logs):
            time.sleep(0.2)
        assert any("steady state" in m for m in logs), logs
        time.sleep(1.0)
    finally:
        server.kill()
    t.join(90)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], DeviceError), errors
    msg = str(errors[0])
    assert "dropped during the benchmark run" in msg and "reconnecting failed" in msg and "Connection refused" in msg
    assert any("reconnecting" in m for m in logs)
