"""The target interface and what every target shares: staging a job, running the agent, reading its JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from devices.bundle import BenchJob
from devices.errors import DeviceError
from devices.inventory import DeviceSpec
from devices.protocol import AGENT_ROOT

Log = Callable[[str], None]
AGENT_PACKAGES = ("devices", "runtimes")  # what the agent needs on the device, besides numpy and a runtime
RESULT = "result.json"


class Target(ABC):
    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @abstractmethod
    def check(self) -> dict:
        """Reachable and usable? A short record (``ok``, ``detail`` and what is known of the device); DeviceError if not."""

    @abstractmethod
    def bench(self, job: BenchJob, agent_args: list[str], log: Log) -> dict:
        """Run the bench protocol for ``job`` on the device; the agent's JSON result."""

    def label(self, result: dict) -> dict:
        result["device"] = {"name": self.spec.name, "url": self.spec.url, "target": type(self).__name__.removesuffix("Target").lower(),
                            "description": self.spec.description}
        return result


def stage(job: BenchJob, dest: Path, with_agent: bool = True) -> list[str]:
    """Copy the artifact, its reference files (and the agent's source) into ``dest``; agent args relative to it."""
    dest.mkdir(parents=True, exist_ok=True)
    if with_agent:
        for pkg in AGENT_PACKAGES:
            src = AGENT_ROOT / pkg
            for f in src.rglob("*.py"):
                if "__pycache__" in f.parts:
                    continue
                out = dest / f.relative_to(AGENT_ROOT)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out)
    names: dict[Path, str] = {}
    (dest / "artifact").mkdir(exist_ok=True)
    for f in job.files:
        shutil.copy2(f, dest / "artifact" / f.name)
        names[f] = f"artifact/{f.name}"
    for f in (job.inputs, job.expected):
        if f is not None:
            (dest / "reference").mkdir(exist_ok=True)
            shutil.copy2(f, dest / "reference" / f.name)
            names[f] = f"reference/{f.name}"
    return job.agent_args(lambda p: names[p])


def tar_bytes(folder: Path) -> bytes:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(folder)))
    return buf.getvalue()


def run_streaming(cmd: list[str], log: Log, timeout: float, stdin: bytes | None = None, prefix: str = "",
                  env: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    """Run ``cmd``; the agent's stderr lines go to ``log`` as they come. Returns (exit code, stdout, stderr lines)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    err_lines: list[str] = []
    out_chunks: list[bytes] = []

    def pump() -> None:
        for raw in proc.stderr:  # type: ignore[union-attr]
            line = raw.decode(errors="replace").rstrip()
            err_lines.append(line)
            if line.startswith("agent:"):
                log(prefix + line.removeprefix("agent: "))

    def collect() -> None:
        out_chunks.append(proc.stdout.read())  # type: ignore[union-attr]

    def feed() -> None:
        try:
            proc.stdin.write(stdin)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            pass

    workers = [threading.Thread(target=fn, daemon=True) for fn in (pump, collect, *((feed,) if stdin is not None else ()))]
    for w in workers:
        w.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise DeviceError(f"{' '.join(cmd[:2])}...: no result within {timeout:.0f}s (raise timeout: in devices.yaml)") from None
    finally:
        for w in workers:
            w.join(5)
    out = b"".join(out_chunks)
    return proc.returncode, out.decode(errors="replace"), err_lines


def agent_failure(err_lines: list[str]) -> str:
    """The agent's one-line error (``error: ...``), or the last line it printed."""
    for line in reversed(err_lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return next((ln for ln in reversed(err_lines) if ln.strip()), "no output")


class ResultLeftOnDevice(DeviceError):
    """The agent finished but its result could not be brought back: the job folder stays on the device, and the message says where."""


def result_from_stdout(rc: int, stdout: str, err_lines: list[str], where: str, log: Log) -> dict | None:
    """The result an agent put on its stdout because it could not write ``--json_stats`` (exit RESULT_ON_STDOUT), else None."""
    from devices.results import RESULT_ON_STDOUT

    if rc != RESULT_ON_STDOUT:
        return None
    log(f"{where}: {agent_failure(err_lines)}; using that copy")
    return parse_result(stdout, where)


def parse_result(text: str, where: str) -> dict:
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        raise DeviceError(f"{where}: the agent's result is not JSON ({text[:80]!r})") from None
    if not isinstance(result, dict) or "runs" not in result:
        raise DeviceError(f"{where}: the agent's result has no runs")
    return result


def backoff(attempt: int) -> None:
    time.sleep(min(2.0 * (attempt + 1), 10.0))
