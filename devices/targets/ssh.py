"""``ssh://user@host[:port]``: a Linux board reached with OpenSSH.

Key authentication only (``BatchMode=yes``), the host key always checked against
known_hosts (``StrictHostKeyChecking=yes``), connect timeout, keep-alives, and one
retry of a refused, timed-out or dropped connection (``retries`` in devices.yaml; a host
name that does not resolve is not retried). The URL is parsed strictly: no empty host, and no
user, host or port that ``ssh`` could take for one of its options (``ssh://-oProxyCommand=...``
would run a command on this host).
The job is a gzipped tar piped into ``tar xzf -`` in a fresh ``mktemp -d`` folder:
the agent's source (``devices/``, ``runtimes/``), the artifact and its reference
files. The board runs the agent with its own Python (``python:``), the JSON result
is read back with ``cat``, and the folder is removed (kept, and named, when the result could
not be read back). Every value in a remote command is quoted with :func:`shlex.quote`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from devices.bundle import BenchJob
from devices.errors import DeviceError
from devices.targets.base import (RESULT, Log, ResultLeftOnDevice, Target, agent_failure, backoff, parse_result, result_from_stdout,
                                  run_streaming, stage, tar_bytes)

SSH_ERROR = 255  # ssh's own exit status: the connection, not the remote command, failed
# connection-level failures worth one more try; authentication and host-key failures are not
# (a name that does not resolve is no dropped connection: retrying only delays the error)
_TRANSIENT = re.compile(r"Connection (refused|timed out|reset|closed)|timed out|No route to host|Network is unreachable|"
                        r"Broken pipe|Connection to .* closed|kex_exchange_identification|banner exchange", re.I)
_UNRESOLVED = re.compile(r"Could not resolve hostname|Name or service not known|nodename nor servname|"
                         r"Temporary failure in name resolution", re.I)
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.$-]*")


@dataclass(frozen=True)
class SshAddress:
    user: str | None
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> "SshAddress":
        """``ssh://[user@]host[:port][/]``; DeviceError for anything else, and for any part ssh could read as an option."""
        def bad(why: str) -> DeviceError:
            return DeviceError(f"bad ssh URL {url!r}: {why}; use ssh://user@host[:port]")

        if any(c.isspace() or not c.isprintable() for c in url):
            raise bad("no spaces or control characters")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if parts.scheme != "ssh" or not url.startswith("ssh://"):
            raise bad("not an ssh:// URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise bad("no path, query or fragment after the host")
        userinfo, at, hostport = parts.netloc.rpartition("@")
        if at and not userinfo:
            raise bad("empty user before @")
        if ":" in userinfo:
            raise bad("no password in the URL (key authentication only: identity: in devices.yaml)")
        if userinfo.startswith("-"):
            raise bad(f"the user {userinfo!r} looks like a command-line option")
        if userinfo and not _USER.fullmatch(userinfo):
            raise bad(f"the user {userinfo!r} has characters a login name does not")
        if hostport.startswith("["):  # [IPv6]:port
            host, _, after = hostport[1:].partition("]")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise bad(f"{host!r} in brackets is not an IPv6 address") from None
            if after and not after.startswith(":"):
                raise bad(f"unexpected {after!r} after the host")
            has_port, port_text = bool(after), after[1:]
        else:
            host, colon, port_text = hostport.partition(":")
            has_port = bool(colon)
            if not host:
                raise bad("no host")
            if host.startswith("-"):
                raise bad(f"the host {host!r} looks like a command-line option")
            if not _HOST.fullmatch(host):
                raise bad(f"the host {host!r} is not a host name or an IP address")
        if has_port and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise bad(f"the port {port_text!r} is not a number from 1 to 65535")
        return cls(userinfo or None, host, int(port_text) if has_port else 22)

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


class SshTarget(Target):
    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.addr = SshAddress.parse(spec.url)

    def ssh_command(self, remote: str) -> list[str]:
        s = self.spec
        cmd = ["ssh", "-p", str(self.addr.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"ConnectTimeout={int(s.connect_timeout)}", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
               "-o", "LogLevel=ERROR"]
        if s.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={Path(s.known_hosts).expanduser()}"]
        if s.identity:
            cmd += ["-i", str(Path(s.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        for opt in s.ssh_options:
            cmd += ["-o", opt]
        return [*cmd, "--", self.addr.login, remote]  # "--": nothing after it is an ssh option

    def _explain(self, err: list[str]) -> str:
        text = " ".join(ln.strip() for ln in err if ln.strip())
        where = f"{self.spec.url}"
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return (f"{where}: host key not trusted (not in known_hosts, or changed); check the board's fingerprint, then "
                    f"ssh-keyscan -p {self.addr.port} {self.addr.host} >> {self.spec.known_hosts or '~/.ssh/known_hosts'}")
        if "Permission denied" in text:
            return f"{where}: key authentication failed for {self.addr.login} (identity: {self.spec.identity or 'ssh default keys'})"
        if _UNRESOLVED.search(text):
            return (f"{where}: the host name {self.addr.host!r} does not resolve ({text[-160:]}); "
                    "check the name in devices.yaml, or use the board's IP address")
        m = _TRANSIENT.search(text)
        reason = m.group(0) if m else (text[-200:] or "ssh failed")
        return f"{where} is unreachable ({reason}); check the host, the port and that sshd runs there"

    def _ssh(self, remote: str, log: Log, timeout: float, stdin: bytes | None = None, what: str = "") -> tuple[int, str, list[str]]:
        """Run ``remote`` on the board; retries connection failures (not failures of the remote command)."""
        last: list[str] = []
        for attempt in range(self.spec.retries + 1):
            rc, out, err = run_streaming(self.ssh_command(remote), log, timeout, stdin)
            if rc != SSH_ERROR:
                return rc, out, err
            last = err
            if not _TRANSIENT.search(" ".join(err)) or attempt == self.spec.retries:
                break
            log(f"{self.name}: {what or 'ssh'} failed ({(err or ['?'])[-1].strip()}), retrying")
            backoff(attempt)
        raise DeviceError(self._explain(last))

    def check(self) -> dict:
        py = shlex.quote(self.spec.python)
        probe = ("import sys, importlib.util as u; print(sys.version.split()[0], "
                 "*[m for m in ('numpy', 'onnxruntime', 'openvino', 'ai_edge_litert', 'tflite_runtime') if u.find_spec(m)])")
        rc, out, err = self._ssh(f"uname -srm && {py} -c {shlex.quote(probe)}", lambda m: None, self.spec.connect_timeout + 30, what="check")
        if rc != 0:
            raise DeviceError(f"{self.spec.url}: reachable, but {self.spec.python!r} does not run there ({agent_failure(err)}); "
                              "set python: in devices.yaml to a Python with requirements-device.txt installed")
        lines = out.strip().splitlines()
        return {"ok": True, "detail": f"{lines[0]}; Python {' '.join(lines[1:])}" if lines else "reachable"}

    def bench(self, job: BenchJob, agent_args: list[str], log: Log) -> dict:
        with tempfile.TemporaryDirectory(prefix="zsq-ssh-") as tmp:
            args = stage(job, Path(tmp))
            payload = tar_bytes(Path(tmp))
        base = shlex.quote(self.spec.workdir.rstrip("/") or "/")
        rc, out, err = self._ssh(f"mkdir -p {base} && d=$(mktemp -d {base}/zsq-bench.XXXXXX) && tar xzf - -C \"$d\" && echo \"$d\"",
                                 log, self.spec.connect_timeout + 120, payload, what="copy")
        remote_dir = out.strip().splitlines()[-1] if rc == 0 and out.strip() else ""
        if rc != 0 or not remote_dir.startswith("/"):
            raise DeviceError(f"{self.spec.url}: copying the job failed: {agent_failure(err)}")
        log(f"{self.name}: job copied to {remote_dir} ({len(payload) / 1e6:.2f} MB)")
        d = shlex.quote(remote_dir)
        agent = " ".join(shlex.quote(a) for a in [self.spec.python, "-m", "devices.agent", *args, *self.spec.default_agent_args(),
                                                    *agent_args, "--json_stats", RESULT, "--device_name", self.name])
        keep = False
        try:
            result = self._run_agent(remote_dir, agent, log)
        except ResultLeftOnDevice:
            keep = True  # the measurement is there: never remove it
            raise
        finally:
            if not keep:
                try:
                    self._ssh(f"rm -rf {d}", lambda m: None, self.spec.connect_timeout + 30, what="cleanup")
                except DeviceError as exc:
                    log(f"{self.name}: could not remove {remote_dir} ({exc})")
        return self.label(result)

    def _run_agent(self, remote_dir: str, agent: str, log: Log) -> dict:
        d = shlex.quote(remote_dir)
        try:
            rc, stdout, err = run_streaming(self.ssh_command(f"cd {d} && {agent}"), log, self.spec.timeout, prefix=f"{self.name}: ")
        except DeviceError:
            raise DeviceError(f"{self.spec.url}: no result within {self.spec.timeout:.0f}s (raise timeout: in devices.yaml)") from None
        if rc == SSH_ERROR:
            first = (err or ["connection lost"])[-1].strip()
            log(f"{self.name}: connection dropped during the run ({first}); reconnecting")
            try:
                rc2, out, _ = self._ssh(f"cat {shlex.quote(remote_dir + '/' + RESULT)}", log, self.spec.connect_timeout + 30,
                                        what="reconnect")
            except DeviceError as exc:
                raise DeviceError(f"{self.spec.url}: the connection dropped during the benchmark run ({first}), "
                                  f"and reconnecting failed: {exc}; the job folder {d} may be left on the board") from None
            if rc2 == 0 and out.strip():
                return parse_result(out, self.spec.url)
            log(f"{self.name}: no result after the drop, running the agent again")
            rc, stdout, err = run_streaming(self.ssh_command(f"cd {d} && {agent}"), log, self.spec.timeout, prefix=f"{self.name}: ")
            if rc == SSH_ERROR:
                raise DeviceError(f"{self.spec.url}: the connection dropped during the benchmark run, twice ({(err or ['?'])[-1].strip()})")
        salvaged = result_from_stdout(rc, stdout, err, self.spec.url, log)
        if salvaged is not None:
            return salvaged
        if rc == 127:
            raise DeviceError(f"{self.spec.url}: no Python at {self.spec.python!r} on the board; set python: in devices.yaml")
        if rc != 0:
            raise DeviceError(f"{self.spec.url}: the agent failed (exit {rc}): {agent_failure(err)}")
        left = f"the result is kept on the board at {remote_dir}/{RESULT}: copy it with scp, then remove {remote_dir}"
        try:
            rc, out, err = self._ssh(f"cat {shlex.quote(remote_dir + '/' + RESULT)}", log, self.spec.connect_timeout + 60, what="fetch")
            if rc != 0:
                raise DeviceError(agent_failure(err))
            return parse_result(out, self.spec.url)
        except DeviceError as exc:
            raise ResultLeftOnDevice(f"{self.spec.url}: the agent finished but fetching its result failed ({exc}); {left}") from None


