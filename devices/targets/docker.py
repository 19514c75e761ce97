"""``docker:IMAGE``: the agent inside the device image (``Dockerfile`` at the repository root).

The image's entrypoint is the agent; the job folder (artifact + reference files) is
mounted read-write at ``/job`` and the result is written there. No network inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devices.bundle import BenchJob
from devices.errors import DeviceError
from devices.targets.base import RESULT, Log, Target, agent_failure, parse_result, result_from_stdout, run_streaming, stage


class DockerTarget(Target):
    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.image = spec.url.split(":", 1)[1].removeprefix("//")
        if not self.image:
            raise DeviceError(f"bad docker URL {spec.url!r}: use docker:IMAGE[:TAG]")
        if self.image.startswith("-"):  # docker run would take it as one of its own options (--privileged, -v /:/host)
            raise DeviceError(f"bad docker URL {spec.url!r}: the image {self.image!r} looks like a command-line option; use docker:IMAGE[:TAG]")
        if any(c.isspace() or not c.isprintable() for c in self.image):
            raise DeviceError(f"bad docker URL {spec.url!r}: an image name has no spaces or control characters; use docker:IMAGE[:TAG]")

    def _docker(self) -> str:
        exe = shutil.which("docker")
        if exe is None:
            raise DeviceError("docker: the docker CLI is not installed on this host")
        return exe

    def check(self) -> dict:
        try:
            res = subprocess.run([self._docker(), "image", "inspect", "--format", "{{.Architecture}} {{.Os}} {{.Size}}", self.image],
                                 capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise DeviceError("docker: the Docker engine did not answer within 30s") from None
        err = res.stderr.strip()
        if res.returncode != 0:
            if "Cannot connect to the Docker daemon" in err or "docker daemon" in err.lower() or "connect:" in err:
                raise DeviceError(f"docker: no Docker engine reachable from this host ({err.splitlines()[0] if err else 'no answer'})")
            raise DeviceError(f"docker: image {self.image!r} not found locally; build it: docker build -t {self.image} . "
                              f"({err.splitlines()[0] if err else ''})")
        arch, os_, size = res.stdout.split()
        return {"ok": True, "detail": f"image {self.image}: {os_}/{arch}, {int(size) / 1e6:.0f} MB"}

    def bench(self, job: BenchJob, agent_args: list[str], log: Log) -> dict:
        self.check()
        with tempfile.TemporaryDirectory(prefix="zsq-docker-") as tmp:
            args = stage(job, Path(tmp), with_agent=False)
            cmd = [self._docker(), "run", "--rm", "--init", "--network", "none", "-v", f"{tmp}:/job", "-w", "/job",
                   "--user", f"{os.getuid()}:{os.getgid()}"]  # the result is written into this host's temp folder
            if self.spec.platform:
                cmd += ["--platform", self.spec.platform]
            cmd += [*self.spec.docker_args, self.image, *args, *self.spec.default_agent_args(), *agent_args,
                    "--json_stats", f"/job/{RESULT}", "--device_name", self.name]
            rc, stdout, err = run_streaming(cmd, log, self.spec.timeout, prefix=f"{self.name}: ")
            salvaged = result_from_stdout(rc, stdout, err, self.spec.url, log)
            if salvaged is not None:
                return self.label(salvaged)
            out = Path(tmp) / RESULT
            if rc != 0 or not out.exists():
                raise DeviceError(f"docker:{self.image}: the agent failed (exit {rc}): {agent_failure(err)}")
            return self.label(parse_result(out.read_text(), self.spec.url))
