"""The stage runner: synth → qat → export → check → report, each stage's artifacts cached in the run folder.

A stage's *key* hashes the config sections it reads and the content of the files
it consumes (upstream outputs, the weights). The manifest records each finished
stage's key and output hashes; a stage whose key and outputs still match is
skipped, so a run resumes where it stopped and re-runs only what changed.
Outputs are written under temporary names and renamed; the manifest and
``config.json`` are updated only when a stage finishes, so an interrupted or failed
stage leaves the folder describing what it holds, and simply runs again.

Every stage's key also holds a digest of the model *as loaded* (its classes'
source, graph and weights: :func:`pipeline.models.loading.model_digest`), so an
edit to any module the model is made of invalidates the cache, not only an edit
of the files named on the command line.

The runner's own lines (``stage 2/5 [qat] running``, ``... done in``) are progress, through
:mod:`pipeline.cli.output` (``-q`` hides them); the ETA they and each loop's lines give comes from
the seconds this folder's manifest recorded for the stages still to run, when their config sections
are the same as then (:meth:`Runner.estimates`, :mod:`pipeline.progress`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devices.results import sha256 as sha256_file  # one file digest for stage keys and device results
from pipeline.config import RunConfig
from pipeline.errors import ConfigError, UserError
from pipeline.train import distributed
from pipeline.train.placement import Placement
from runtimes import atomic


def write_json(path: Path, data: object) -> None:
    """Atomic JSON write: :func:`runtimes.atomic.write_json` (unique temp file beside ``path``, then rename)."""
    atomic.write_json(path, data)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "numpy", "onnx", "onnxruntime", "openvino", "ai_edge_litert", "litert_torch"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                from importlib.metadata import version

                out[mod] = version(mod.replace("_", "-"))
            except Exception:  # noqa: BLE001  (not installed)
                continue
        else:
            out[mod] = getattr(m, "__version__", "?")
    return out


@dataclass
class RunContext:
    cfg: RunConfig
    run_dir: Path
    log: Callable[[str], None]
    _cache: dict | None = None
    placement: Placement | None = None  # where synthesis and QAT compute, this process's rank; default: from cfg.host
    stage_key: str | None = None  # the key of the stage now running (the runner sets it): a checkpoint of another key is stale

    def __post_init__(self) -> None:
        self._cache = {}
        if self.placement is None:
            h = self.cfg.host
            self.placement = Placement.resolve(h.accelerator, h.precision, channels_last=h.channels_last)

    def memo(self, key: str, fn: Callable[[], object]) -> object:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def teacher(self):
        """(FP model on the CPU, its card): what export and check use."""
        from pipeline.models.loading import load_model

        return self.memo("teacher", lambda: load_model(self.cfg.model))

    def teacher_on_device(self):
        """(FP model on the placement's device, its card): what synthesis and QAT use (the CPU one on a CPU run)."""
        model, card = self.teacher()
        place = self.placement
        if place.device.type == "cpu" and not place.channels_last:
            return model, card
        import copy

        return self.memo(f"teacher:{place.device}:{place.channels_last}", lambda: (place.model(copy.deepcopy(model)), card))

    def real_data(self, which: str):
        """(images, labels) of ``check.eval_data`` (``which="eval"``) or ``synthesis.calib_data`` (``"calib"``), read and
        checked once per process: the preflight reads them in full before the first stage, the stages reuse that."""
        from pipeline.evaldata import load_eval_data

        card = self.teacher()[1]
        c = self.cfg.check  # check.eval_transform: how an ImageFolder's images become inputs, for both
        if which == "eval":
            return self.memo("eval_data", lambda: load_eval_data(c.eval_data, card, c.eval_limit, transform=c.eval_transform))
        return self.memo("calib_data", lambda: load_eval_data(self.cfg.synthesis.calib_data, card, flag="--calib-data",
                                                              transform=c.eval_transform))

    def model_digest(self) -> str:
        """The digest of the FP model as loaded (:func:`pipeline.models.loading.model_digest`), once per process."""
        from pipeline.models.loading import model_digest

        return self.memo("model_digest", lambda: model_digest(self.teacher()[0]))

    @property
    def layout(self) -> "RunLayout":
        """The run folder's file names (:mod:`pipeline.layout`)."""
        from pipeline.layout import RunLayout

        return RunLayout(self.run_dir)

    def path(self, rel: str) -> Path:
        p = self.run_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]  # config sections the stage reads
    inputs: Callable[[RunContext], list[Path]]  # files it consumes
    outputs: Callable[[RunContext], list[Path]]  # files it produces
    run: Callable[[RunContext], None]
    always: bool = False  # cheap stages (report) run every time
    extra: Callable[[RunContext], dict] | None = None  # derived values the key needs beyond whole sections
    ranks: bool = False  # every rank runs it (synth, qat); otherwise rank 0 alone while the others wait


def read_manifest(path: Path, force: bool = False) -> dict:
    """The run's manifest (``{"stages": {}}`` when there is none); a corrupt one is a one-line error unless ``force``."""
    if not path.exists():
        return {"stages": {}}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            raise ValueError("no 'stages' mapping")
        return data
    except (ValueError, UnicodeDecodeError) as exc:
        if force:
            return {"stages": {}}
        raise UserError(f"{path} is corrupt ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}): "
                        "run again with --force to redo every stage in this folder, or give another --out") from None


class Runner:
    """Runs the stages in order, skipping those whose key and outputs are unchanged (the manifest records both).

    With several ranks (torchrun), rank 0 alone reads and writes the run folder: it decides which stages run
    and tells the others; a stage with ``ranks`` runs on all of them, any other on rank 0 while the rest wait.
    """

    def __init__(self, stages: list[Stage], ctx: RunContext, force: bool = False) -> None:
        self.stages, self.ctx = stages, ctx
        self.names = [s.name for s in stages]
        self.manifest_path = ctx.layout.manifest
        self.main = ctx.placement.is_main
        self.manifest = read_manifest(self.manifest_path, force) if self.main else {"stages": {}}

    def key(self, stage: Stage) -> str:
        payload = {
            "stage": stage.name,
            "model": self.ctx.model_digest(),
            "config": {s: self.ctx.cfg.section(s) for s in stage.sections},
            **({"extra": stage.extra(self.ctx)} if stage.extra else {}),
            "inputs": {str(p.relative_to(self.ctx.run_dir)) if p.is_relative_to(self.ctx.run_dir) else str(p):
                       sha256_file(p) if p.exists() else "missing" for p in stage.inputs(self.ctx)},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def fresh(self, stage: Stage, key: str) -> bool:
        rec = self.manifest["stages"].get(stage.name)
        if stage.always or not rec or rec.get("key") != key:
            return False
        for rel, digest in rec.get("outputs", {}).items():
            p = self.ctx.run_dir / rel
            if not p.exists() or sha256_file(p) != digest:
                return False
        return True

    def _span(self, until: str | None, redo_from: str | None) -> tuple[int, int]:
        for name in (until, redo_from):
            if name is not None and name not in self.names:
                raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(self.names)}")
        return (self.names.index(until) if until else len(self.stages) - 1,
                self.names.index(redo_from) if redo_from else len(self.stages))

    def plan(self, until: str | None = None, redo_from: str | None = None) -> list[tuple[str, str]]:
        """(stage, what a run would do with it and why) for each stage up to ``until``, without running anything.

        A stage after one that runs is shown as running too when it reads that stage's outputs: its key is only
        known once they exist.
        """
        last, redo = self._span(until, redo_from)
        out, upstream_runs = [], False
        for i, stage in enumerate(self.stages[: last + 1]):
            rec = self.manifest["stages"].get(stage.name)
            if stage.always:
                why = "runs (always: it is cheap)"
            elif i >= redo:
                why = f"runs (--from {self.names[redo]})"
            elif upstream_runs:
                why = "runs (an earlier stage runs, so its inputs change)"
            elif not rec:
                why = "runs (never ran in this folder)"
            elif rec.get("key") != self.key(stage):
                why = "runs (its config, model or inputs changed)"
            elif not self.fresh(stage, rec["key"]):
                why = "runs (its outputs are missing or were modified)"
            else:
                why = f"cached (finished {rec.get('finished', '?')})"
            upstream_runs |= why.startswith("runs") and not stage.always
            out.append((stage.name, why))
        return out

    def estimates(self, last: int) -> dict[str, float]:
        """Seconds each stage up to ``last`` took when it last ran in this folder, for the stages whose config sections
        are the same now as then (``config.json`` holds the config of the last run that finished a stage): a stage that
        ran with another budget says nothing about this one. What :mod:`pipeline.progress` bases a run's ETA on."""
        try:
            before = json.loads(self.ctx.layout.config.read_text()).get("_data", {})
        except (OSError, ValueError, AttributeError):
            return {}
        out = {}
        for stage in self.stages[: last + 1]:
            seconds = self.manifest["stages"].get(stage.name, {}).get("seconds")
            same = all(json.dumps(before.get(s), sort_keys=True, default=str)
                       == json.dumps(json.loads(json.dumps(self.ctx.cfg.section(s), default=str)), sort_keys=True) for s in stage.sections)
            if isinstance(seconds, (int, float)) and same:
                out[stage.name] = float(seconds)
        return out

    def run(self, until: str | None = None, redo_from: str | None = None) -> None:
        from pipeline import progress
        from pipeline.cli import output

        last, redo = self._span(until, redo_from)
        self.ctx.teacher()  # fail fast on a bad model or weights, before anything is written
        run_started, n = time.monotonic(), len(self.stages)
        estimates = self.estimates(last) if self.main else {}
        if self.main:
            self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        devices = distributed.gather(self.ctx.placement.describe()["devices"][0])  # every rank's device, for provenance
        # The ranks work together up to the last stage that uses them; after it rank 0 goes on alone (no collective
        # calls, so a long export or check cannot time out a waiting rank) and the other ranks are done.
        last_together = max((i for i, s in enumerate(self.stages[: last + 1]) if s.ranks), default=-1)
        for i, stage in enumerate(self.stages[: last + 1]):
            together = i <= last_together
            if not together and not self.main:
                break
            key = self.key(stage) if self.main else None
            fresh = i < redo and self.fresh(stage, key) if self.main else None
            label = f"stage {i + 1}/{n} [{stage.name}]"  # keeps "[synth] running": what scripts grep for
            if distributed.broadcast(fresh) if together else fresh:
                if self.main:
                    output.info(f"{label} up to date, skipped")
                continue
            now = time.monotonic()
            later = [estimates.get(s.name) for s in self.stages[i + 1: last + 1]]
            info = progress.StageInfo(i + 1, n, stage.name, run_started, now, estimates.get(stage.name),
                                      None if None in later else sum(later))  # type: ignore[arg-type]
            if self.main:
                left = info.run_left(now)
                output.info(f"{label} running · run {progress.clock(now - run_started)} elapsed"
                            + (f", about {progress.clock(left)} left by this folder's earlier timings" if left is not None else ""))
            t0 = time.time()
            self.ctx.stage_key = distributed.broadcast(key) if together else key
            if stage.ranks or self.main:
                with progress.stage(info):
                    stage.run(self.ctx)
            if together:
                distributed.barrier()  # the stage's files are written (rank 0) before any rank reads them
            if not self.main:
                continue
            outputs = {str(p.relative_to(self.ctx.run_dir)): sha256_file(p) for p in stage.outputs(self.ctx)}
            where = {**self.ctx.placement.describe(), "devices": devices} if stage.ranks else {
                **Placement().describe(), "note": "rank 0, on the CPU"}
            self.manifest["stages"][stage.name] = {"key": key, "outputs": outputs, "seconds": round(time.time() - t0, 2),
                                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "ran_on": where}
            self.manifest["versions"] = versions()
            self.manifest["seeds"] = {"synthesis": self.ctx.cfg.synthesis.seed, "holdout": self.ctx.cfg.synthesis.holdout_seed,
                                      "qat": self.ctx.cfg.qat.seed}
            write_json(self.manifest_path, self.manifest)
            # The config is written with the manifest, when a stage has finished: a run that fails (a bad method, a
            # crash) leaves the folder's config describing the artifacts it holds, not the command that failed.
            write_json(self.ctx.layout.config, self.ctx.cfg.to_dict())
            self.ctx.layout.clear_checkpoints(stage.name)  # the stage is done: its progress files are not needed
            output.info(f"{label} done in {time.time() - t0:.1f}s · run {progress.clock(time.monotonic() - run_started)} elapsed")
