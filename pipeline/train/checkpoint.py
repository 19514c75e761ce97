"""Checkpoints inside a long stage, so a killed run resumes at its last checkpoint instead of at step 0.

A stage that loops for hours (the QAT loop, a generator's warm-up, batches of image inversion) asks a
:class:`Checkpointer` at the start whether a checkpoint of *this* stage key exists (``resume``), and
offers it its state every step (``maybe_save``). The state is everything the loop carries, so the
resumed run computes bit-for-bit what the uninterrupted one would have on the CPU: model, optimisers,
schedulers, every random stream it draws from (torch CPU/CUDA global, numpy, python ``random``, the
loop's ``torch.Generator`` objects), the step and the losses so far.

* Files: ``checkpoints/<stage>.pt`` (the QAT loop) or ``checkpoints/<stage>.<phase>.pt`` for a stage with
  several loops (synth: ``inversion``, ``warmup``, ``holdout.inversion``). Each records the stage key; a
  checkpoint of another key (the config, inputs or placement changed) is stale and deleted.
* Written atomically (:func:`runtimes.atomic.atomic_path`), loaded with ``weights_only=True``: only
  tensors, numbers, strings, lists, dicts (numpy and python RNG states are converted).
* Ranks: only rank 0 writes and reads; the state every rank shares (model, optimisers) is rank 0's, the
  per-rank part (random streams) is gathered from every rank at a save and handed back to each on resume.
* When: every ``every`` steps (``host.checkpoint_every``, ``host.warmup_checkpoint_every``; 0 disables),
  but never sooner than ``min_interval_s`` (``host.checkpoint_min_s``) after the last one, nor sooner than
  :data:`COST_FACTOR` times the last save's own duration: a save costs at most ~1 % of the run whatever the
  model's size, and a kill loses at most ``max(every steps, the interval)`` of work. Rank 0 decides (the
  clock is not the same on every rank) and tells the others, at the candidate steps only.
  ``min_interval_s`` 0 switches both time rules off: exactly every ``every`` steps (the tests use it).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.train import distributed
from pipeline.train.placement import CPU, Placement

COST_FACTOR = 100  # the time between two saves is at least this many times the last save's duration (<= ~1 % cost)
FORMAT = 1  # bumped when the layout of the file changes: an older file is ignored

State = dict[str, Any]


# --- random streams, in a form torch.load(weights_only=True) accepts -----------------------------------------

def global_rng_state() -> State:
    """The process-wide random streams: torch CPU (and CUDA when it is in use), numpy's legacy global, python's."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    out: State = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.tensor(np.asarray(keys, dtype=np.int64), device="cpu"), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64, device="cpu"), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = list(torch.cuda.get_rng_state_all())
    return out


def set_global_rng_state(s: State) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def generators_state(gens: dict[str, torch.Generator | None]) -> State:
    """The states of a loop's own ``torch.Generator`` objects (CPU byte tensors, whatever their device)."""
    return {name: g.get_state() for name, g in gens.items() if g is not None}


def set_generators_state(gens: dict[str, torch.Generator | None], state: State) -> None:
    for name, g in gens.items():
        if g is not None and name in state:
            g.set_state(state[name])


def rank_state(gens: dict[str, torch.Generator | None] | None = None) -> State:
    """What differs between ranks: the global streams and the loop's generators."""
    return {"global": global_rng_state(), "generators": generators_state(gens or {})}


def set_rank_state(state: State, gens: dict[str, torch.Generator | None] | None = None) -> None:
    set_global_rng_state(state["global"])
    set_generators_state(gens or {}, state["generators"])


# --- the checkpointer -----------------------------------------------------------------------------------------

@dataclass
class Resumed:
    """A checkpoint to continue from: ``step`` steps are done; ``state`` is shared by all ranks, ``rank`` is this rank's."""

    step: int
    state: State
    rank: State


@dataclass
class Checkpointer:
    """One loop's checkpoint file: ``resume()`` once before the loop, ``maybe_save(done, ...)`` after every step.

    ``path`` None (or a disabled one, :meth:`off`) never reads or writes. ``every`` 0 disables saving; a valid
    checkpoint already there is still resumed from (it is the same computation).
    """

    path: Path | None
    key: str | None
    every: int = 0
    total: int = 0  # the loop's length in steps, for the log line and the final save
    what: str = "qat"  # the loop's name in the log line
    unit: str = "step"  # what a step is, in the log line ("batch" for image inversion)
    min_interval_s: float = 60.0
    save_at_end: bool = False  # also save after the last step (a later loop of the same stage may be killed)
    placement: Placement = CPU
    log: Callable[[str], None] = print
    root: Path | None = None  # the run folder, to log paths relative to it
    _last: float = field(default=0.0, init=False)  # when the last save ended (or the loop started)
    _cost: float = field(default=0.0, init=False)  # how long the last save took

    @classmethod
    def off(cls) -> "Checkpointer":
        return cls(None, None)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _rel(self) -> str:
        if self.path is None:
            return "-"
        return str(self.path.relative_to(self.root)) if self.root and self.path.is_relative_to(self.root) else str(self.path)

    def _collective(self) -> bool:
        return self.placement.world_size > 1

    def _read(self) -> dict | None:
        """Rank 0: the file's content when it is a usable checkpoint of this loop; a stale or broken file goes."""
        p = self.path
        if p is None or not p.exists():
            return None
        try:
            data = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001  (a truncated or foreign file: start over, do not fail the run)
            self.log(f"  ignoring unreadable checkpoint {self._rel()} ({type(exc).__name__}); starting {self.what} from step 0")
            p.unlink(missing_ok=True)
            return None
        expect = {"format": FORMAT, "key": self.key, "what": self.what, "total": self.total,
                  "world_size": self.placement.world_size}
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in expect.items()):
            self.log(f"  removing stale checkpoint {self._rel()} (another stage key or loop); starting {self.what} from step 0")
            p.unlink(missing_ok=True)
            return None
        return data

    def resume(self) -> Resumed | None:
        """The checkpoint to continue from, on every rank (rank 0 reads it and hands it out), or None."""
        self._last = time.monotonic()
        if not self.enabled:
            return None
        place = self.placement
        data = self._read() if place.is_main else None
        if self._collective():
            data = distributed.broadcast(data)
        if data is None:
            return None
        self.log(f"  resumed {self.what} at {self.unit} {data['step']}/{self.total} from {self._rel()}")
        return Resumed(int(data["step"]), data["state"], data["ranks"][place.rank])

    def due(self, done: int) -> bool:
        """Whether a save is due after ``done`` steps (the same answer on every rank)."""
        if not self.enabled or not self.every:
            return False
        if done >= self.total:
            return self.save_at_end
        if done % self.every:
            return False
        wait = max(self.min_interval_s, COST_FACTOR * self._cost) if self.min_interval_s > 0 else 0.0  # 0: steps alone
        go = time.monotonic() - self._last >= wait if self.placement.is_main else None
        return bool(distributed.broadcast(go) if self._collective() else go)

    def maybe_save(self, done: int, state_fn: Callable[[], State], rank_fn: Callable[[], State]) -> bool:
        """Save after ``done`` steps if one is due; ``state_fn`` (rank 0's, shared by all) and ``rank_fn`` (every
        rank's own part) are called only then. Every rank must call this at every step (a save gathers)."""
        if not self.due(done):
            return False
        self.save(done, state_fn, rank_fn)
        return True

    def save(self, done: int, state_fn: Callable[[], State], rank_fn: Callable[[], State]) -> None:
        from runtimes.atomic import atomic_path

        t0 = time.monotonic()
        ranks = distributed.gather(rank_fn()) if self._collective() else [rank_fn()]
        if self.placement.is_main:
            data = {"format": FORMAT, "key": self.key, "what": self.what, "total": self.total,
                    "world_size": self.placement.world_size, "step": int(done), "state": state_fn(), "ranks": ranks}
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(self.path) as tmp, open(tmp, "wb") as f:
                    torch.save(data, f)
            except (OSError, RuntimeError) as exc:  # a full disk (torch's zip writer reports it as a RuntimeError): a
                # checkpoint only saves time, so the loop goes on; the stage's own result write reports a full disk
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                self.log(f"  could not write checkpoint {self._rel()} ({why}); {self.what} goes on without it")
        self._last = time.monotonic()
        self._cost = self._last - t0

    def clear(self) -> None:
        if self.path is not None and self.placement.is_main:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Checkpoints:
    """A stage's checkpoint plan: where its loops' files go and how often they save; hands out a :class:`Checkpointer`
    per loop. ``phase(None)`` is the stage's own file (``checkpoints/qat.pt``); a named phase gets
    ``checkpoints/<stage>.<phase>.pt``. The default instance is disabled (no run folder, e.g. a method called alone).
    """

    folder: Path | None = None  # run/checkpoints; None: disabled
    stage: str = ""
    key: str | None = None
    every: int = 0  # QAT steps; image inversion saves after every finished batch when this is > 0
    warmup_every: int = 0  # generator warm-up steps
    min_interval_s: float = 60.0
    placement: Placement = CPU
    log: Callable[[str], None] = print
    root: Path | None = None
    prefix: str = ""  # phases of a sub-task (the synth stage's held-out set: "holdout.")

    def scoped(self, prefix: str, placement: Placement | None = None) -> "Checkpoints":
        """The same plan for a sub-task with phase names of its own (and, e.g., rank 0 alone)."""
        return replace(self, prefix=f"{self.prefix}{prefix}.", placement=placement or self.placement)

    def phase(self, name: str | None, total: int, every: int, unit: str = "step", save_at_end: bool = False) -> Checkpointer:
        if self.folder is None:
            return Checkpointer.off()
        full = f"{self.prefix}{name}" if name else self.prefix.rstrip(".")
        file = f"{self.stage}.{full}.pt" if full else f"{self.stage}.pt"
        return Checkpointer(self.folder / file, self.key, every=every, total=total, what=f"{self.stage} {full}" if full else self.stage,
                            unit=unit, min_interval_s=self.min_interval_s, save_at_end=save_at_end, placement=self.placement,
                            log=self.log, root=self.root)

    def clear(self) -> None:
        """Remove this stage's files (rank 0, once the stage's result is written)."""
        if self.folder is None or not self.placement.is_main or not self.folder.is_dir():
            return
        for p in [self.folder / f"{self.stage}.pt", *self.folder.glob(f"{self.stage}.*.pt")]:
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the folder too once it is empty (another stage's file keeps it)
            self.folder.rmdir()


NO_CHECKPOINTS = Checkpoints()


def for_stage(ctx: Any, stage: str) -> Checkpoints:
    """The plan of ``stage`` in a run context (``pipeline.runner.RunContext``): its folder, the running stage's key,
    the ``host`` section's intervals. Disabled when no stage key is set (a stage function called outside the runner)."""
    if ctx.stage_key is None:
        return NO_CHECKPOINTS
    h = ctx.cfg.host
    return Checkpoints(ctx.layout.checkpoint(stage).parent, stage, ctx.stage_key, h.checkpoint_every, h.warmup_checkpoint_every,
                       h.checkpoint_min_s, ctx.placement, ctx.log, ctx.run_dir)
