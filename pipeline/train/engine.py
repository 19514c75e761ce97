"""The one QAT loop: optimiser and schedule, range freezing, precision, gradient sync, loss logging.

Every method trains the quantized model through :func:`train`; what differs between methods is a
:class:`Recipe`: how a step's batch is drawn and its loss computed (``loss``), and what happens
around the Q step (GDFQ's generator step before it, ZAQ's adversarial step after every k of them).
Device placement, mixed precision and data parallelism are therefore written once, here:

* Adam (or the papers' SGD) over two groups (weights/biases at ``lr``, learned ranges and scales at
  ``quant_lr``), cosine decay over ``steps`` (or steps at milestones); EMA ranges freeze at ``ema_freeze_step``;
* the forward passes run under ``placement.autocast()``; fp16 gets a GradScaler (bf16 needs none);
* with several ranks, gradients are averaged before each optimiser step and EMA ranges after it
  (:mod:`pipeline.train.distributed`), so every rank keeps the same student;
* losses stay on the device and are read every ``log_every`` steps (no host sync per step); the
  progress bar shows the loss, steps/s and images/s;
* with a :class:`~pipeline.train.checkpoint.Checkpointer` the loop saves everything it carries every N
  steps (student, optimiser, scheduler, GradScaler, frozen ranges, losses, the recipe's own state and
  every random stream) and a rerun resumes there, computing what the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from pipeline.progress import progress
from pipeline.quant.prepare import quantizers
from pipeline.quant.quantizers import ActQuantizer, WeightQuantizer
from pipeline.quant.settings import QATSettings
from pipeline.train import distributed
from pipeline.train.checkpoint import Checkpointer, Resumed, State, rank_state, set_rank_state
from pipeline.train.placement import CPU, Placement
from runtimes import faults

Backward = Callable[[torch.Tensor], None]

# A context manager factory entered around every training and synthesis step, or None. Tests install one that
# checks every tensor a step creates lives on the placement's device (tests/test_host_training.py).
STEP_SCOPE: Callable[[], contextlib.AbstractContextManager] | None = None


def step_scope() -> contextlib.AbstractContextManager:
    return STEP_SCOPE() if STEP_SCOPE is not None else contextlib.nullcontext()


class Recipe:
    """What a method supplies to the loop. ``loss`` is required; the hooks default to nothing.

    A recipe that carries state across steps (a generator and its optimiser, a random stream) exposes it for
    checkpoints: ``state_dict``/``load_state_dict`` for what every rank shares, ``rng_streams`` for its
    ``torch.Generator`` objects (one per rank).
    """

    images_per_step: int = 0  # for the images/s readout

    def before_step(self, step: int) -> None:
        """Before the Q step (GDFQ: one generator step)."""

    def loss(self, step: int, backward: Backward) -> torch.Tensor:
        """Draw the step's batch, compute the Q loss under autocast, call ``backward`` on it (once or more);
        return the step's loss, detached: a scalar, or a vector of terms the curve adds up."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """After the Q step (ZAQ: the adversarial generator step every k Q steps)."""

    def state_dict(self) -> State:
        """What the recipe carries besides the student, the same on every rank (a generator, its optimiser)."""
        return {}

    def load_state_dict(self, state: State) -> None:
        """Restore :meth:`state_dict` (a resumed run)."""

    def rng_streams(self) -> dict[str, torch.Generator]:
        """The recipe's own random streams (each rank has its own): saved and restored with a checkpoint."""
        return {}


class OptimizerStep:
    """One step of a second optimiser (a generator's) with the loop's precision handling and gradient averaging.

    ``zero_grad → backward → average across ranks → step``, with its own GradScaler under fp16.
    """

    def __init__(self, opt: torch.optim.Optimizer, placement: Placement = CPU,
                 sched: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
        self.opt, self.sched = opt, sched
        self.params = [p for g in opt.param_groups for p in g["params"]]
        self.scaler = torch.amp.GradScaler(placement.device.type) if placement.precision == "fp16" else None

    def __call__(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        distributed.average_gradients(self.params)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        if self.sched is not None:
            self.sched.step()

    def state_dict(self) -> State:
        return {"optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "scheduler": self.sched.state_dict() if self.sched is not None else {}}

    def load_state_dict(self, state: State) -> None:
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None and state.get("scheduler"):
            self.sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])


def param_groups(model: nn.Module, s: QATSettings) -> list[dict]:
    """Weights/biases and the quantizers' learned ranges/scales, at their own learning rates."""
    quant_params, weights = [], []
    quant_ids = set()
    for m in model.modules():
        if isinstance(m, (ActQuantizer, WeightQuantizer)):
            for p in m.parameters(recurse=False):
                if p.requires_grad:
                    quant_params.append(p)
                quant_ids.add(id(p))
    for p in model.parameters():
        if id(p) not in quant_ids and p.requires_grad:
            weights.append(p)
    return [{"params": weights, "lr": s.lr, "weight_decay": s.weight_decay}, {"params": quant_params, "lr": s.quant_lr, "weight_decay": 0.0}]


def schedule_factor(step: int, schedule: str, total: int, milestones: tuple[int, ...] = (), gamma: float = 0.1) -> float:
    """The learning-rate multiplier at ``step``: cosine from 1 to 0 over ``total`` steps, ``gamma`` once per milestone
    passed (``multistep``, torch's MultiStepLR counted in steps), or 1 (``constant``)."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
    if schedule == "multistep":
        return gamma ** sum(1 for m in milestones if step >= m)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of cosine, multistep, constant")


def make_optimizer(student: nn.Module, settings: QATSettings) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The Q optimiser of every method, weights and ranges apart: Adam (the pipeline's) or SGD (the papers', with
    momentum and Nesterov as they set them), under ``settings.lr_schedule`` over ``settings.steps``."""
    s = settings
    groups = param_groups(student, s)
    if s.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov and s.momentum > 0)
    elif s.optimizer == "adam":
        opt = torch.optim.Adam(groups)
    else:
        raise ValueError(f"unknown optimizer {s.optimizer!r}; choose adam or sgd")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: schedule_factor(i, s.lr_schedule, s.steps, s.lr_milestones, s.lr_gamma))
    return opt, sched


def start_training(student: nn.Module, teacher: nn.Module) -> None:
    """Teacher and student in eval (BN frozen, GDFQ/HAST), quantizers in train mode (EMA ranges move)."""
    teacher.eval()
    student.eval()
    for q in quantizers(student):
        q.train()


def step_ranges(student: nn.Module, settings: QATSettings, step: int) -> None:
    if settings.ema_freeze_step and step == settings.ema_freeze_step:
        for q in quantizers(student):
            q.ema_frozen = True


def finish_training(student: nn.Module) -> None:
    for q in quantizers(student):
        q.eval()


def ema_ranges(student: nn.Module) -> list[torch.Tensor]:
    """The range parameters that move by EMA, not by gradients: averaged across ranks after every step."""
    return [p for q in quantizers(student) if isinstance(q, ActQuantizer) and q.mode == "ema" for p in (q.lo, q.hi)]


class LoopState:
    """Everything the loop carries from one step to the next, for a checkpoint and back (see :func:`train`)."""

    def __init__(self, student: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                 scaler: torch.amp.GradScaler | None, recipe: Recipe, losses: list[torch.Tensor]) -> None:
        self.student, self.opt, self.sched, self.scaler, self.recipe, self.losses = student, opt, sched, scaler, recipe, losses

    def state(self) -> State:
        """Rank 0's (every rank holds the same): the student, optimiser, schedule, frozen ranges, losses, the recipe's."""
        return {"student": self.student.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "ema_frozen": [bool(getattr(q, "ema_frozen", False)) for q in quantizers(self.student)],
                "losses": torch.stack([t.detach() for t in self.losses]).cpu() if self.losses else None,
                "recipe": self.recipe.state_dict()}

    def rank_state(self) -> State:
        """This rank's own: the global random streams and the recipe's."""
        return rank_state(self.recipe.rng_streams())

    def restore(self, r: Resumed, device: torch.device) -> int:
        """Load a checkpoint into the live objects; returns the number of steps it had done."""
        s = r.state
        self.student.load_state_dict(s["student"])
        for q, frozen in zip(quantizers(self.student), s["ema_frozen"]):
            if hasattr(q, "ema_frozen"):
                q.ema_frozen = frozen
        self.opt.load_state_dict(s["optimizer"])
        self.sched.load_state_dict(s["scheduler"])
        if self.scaler is not None and s["scaler"]:
            self.scaler.load_state_dict(s["scaler"])
        self.losses[:] = list(s["losses"].to(device).unbind(0)) if s["losses"] is not None else []
        self.recipe.load_state_dict(s["recipe"])
        set_rank_state(r.rank, self.recipe.rng_streams())
        return r.step


def train(student: nn.Module, teacher: nn.Module, recipe: Recipe, settings: QATSettings, placement: Placement = CPU,
          desc: str = "qat", log_every: int = 10, checkpoint: Checkpointer | None = None) -> list[float]:
    """Run ``settings.steps`` Q steps of ``recipe`` on ``student`` (already calibrated); returns the loss curve.

    With ``checkpoint`` the loop starts from its last checkpoint, if one of this stage key is there, and saves one
    every N steps (:mod:`pipeline.train.checkpoint`).
    """
    opt, sched = make_optimizer(student, settings)
    scaler = torch.amp.GradScaler(placement.device.type) if placement.precision == "fp16" else None
    params = [p for g in opt.param_groups for p in g["params"]]
    emas = ema_ranges(student)
    start_training(student, teacher)

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    losses: list[torch.Tensor] = []
    ck = checkpoint or Checkpointer.off()
    loop = LoopState(student, opt, sched, scaler, recipe, losses)
    resumed = ck.resume()
    start = loop.restore(resumed, placement.device) if resumed is not None else 0
    bar = progress(range(start, settings.steps), desc=desc, initial=start)  # a resumed loop counts from its step
    t0, logged = time.perf_counter(), start
    for step in bar:
        faults.point("qat.step")
        with step_scope():
            step_ranges(student, settings, step)
            recipe.before_step(step)
            opt.zero_grad(set_to_none=True)
            with placement.autocast():
                total = recipe.loss(step, backward)
            distributed.average_gradients(params)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            if emas:
                with torch.no_grad():
                    distributed.average_(emas)
            losses.append(total.detach())
            recipe.after_step(step)
        ck.maybe_save(step + 1, loop.state, loop.rank_state)
        if (step + 1) % log_every == 0 or step + 1 == settings.steps:  # the only host sync: every log_every steps
            dt = max(time.perf_counter() - t0, 1e-9)
            rate = (step + 1 - logged) / dt
            bar.set_postfix(loss=f"{float(losses[-1].double().sum()):.4f}", steps_s=f"{rate:.2f}",
                            img_s=f"{rate * recipe.images_per_step * placement.world_size:.0f}")
            t0, logged = time.perf_counter(), step + 1
    finish_training(student)
    return [float(v) for v in torch.stack([t.double().reshape(-1).sum() for t in losses]).cpu()] if losses else []
