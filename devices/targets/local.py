"""``local``: this host. The agent runs from this checkout with this interpreter."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from devices import environment
from devices.bundle import BenchJob
from devices.errors import DeviceError
from devices.protocol import AGENT_ROOT
from devices.targets.base import RESULT, Log, Target, agent_failure, parse_result, result_from_stdout, run_streaming


class LocalTarget(Target):
    def check(self) -> dict:
        env = environment.capture()
        return {"ok": True, "detail": f"{env['cpu_model']}, {env['cpu_count']} cores, Python {env['versions']['python']}, "
                f"runtimes: {', '.join(k for k in env['versions'] if k not in ('python', 'numpy')) or 'none'}", "environment": env}

    def bench(self, job: BenchJob, agent_args: list[str], log: Log) -> dict:
        with tempfile.TemporaryDirectory(prefix="zsq-bench-") as tmp:
            out = Path(tmp) / RESULT
            cmd = [sys.executable, "-m", "devices.agent", *job.agent_args(lambda p: str(Path(p).resolve())), *self.spec.default_agent_args(),
                   *agent_args, "--json_stats", str(out), "--device_name", self.name]
            env = dict(os.environ)
            env["PYTHONPATH"] = str(AGENT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            rc, stdout, err = run_streaming(cmd, log, self.spec.timeout, env=env)
            salvaged = result_from_stdout(rc, stdout, err, "local", log)
            if salvaged is not None:
                return self.label(salvaged)
            if rc != 0 or not out.exists():
                raise DeviceError(f"local: the agent failed (exit {rc}): {agent_failure(err)}")
            return self.label(parse_result(out.read_text(), "local"))
