"""Many processes, one run: torch.distributed under ``torchrun`` (NCCL on CUDA, Gloo on the CPU).

``torchrun --nproc-per-node N -m pipeline run ...`` starts N copies of the CLI with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous in their environment; :func:`init` joins them.
What each stage does with the ranks:

* synth: each rank synthesizes its shard of the image budget (:func:`shard`) from its own seed
  stream (:func:`rank_seed`; rank 0 keeps the run's seed, so one process is the old single run);
  generators are trained data-parallel (gradients averaged, :func:`average_gradients`); rank 0
  gathers the shards (:func:`gather`) and writes the union;
* qat: data-parallel, each rank its own batch stream, gradients and EMA ranges averaged every step,
  so every rank holds the same student; rank 0 writes it;
* export, check, report: rank 0 alone; the others wait at the stage barrier.

The gradient averaging is ``all_reduce`` over one flattened bucket, which is what DDP does, done by
hand because methods run several backward passes per step (HAST's FGSM copy) and hook features out
of the student, both awkward behind a DDP wrapper.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

RANK_SEED_STRIDE = 1_000_003  # far apart: rank r's stream never replays rank 0's for any realistic seed offsets


def env_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init(device: torch.device) -> None:
    """Join the process group torchrun described (a no-op for one process)."""
    rank, world, local = env_ranks()
    if world <= 1 or dist.is_initialized():
        return
    # Ranks wait at a barrier while rank 0 alone writes the held-out set: allow an hour, not the 10-minute default.
    timeout = timedelta(hours=1)
    if device.type == "cuda":
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local), timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    return seed + rank * RANK_SEED_STRIDE


def shard(n: int, rank: int, world: int) -> int:
    """How many of ``n`` items rank ``rank`` makes: an even split, the first ``n % world`` ranks one more."""
    return n // world + (1 if rank < n % world else 0)


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (picklable objects: decisions, small arrays)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (one process: ``[obj]``)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def average_(tensors: Iterable[torch.Tensor]) -> None:
    """Average ``tensors`` across ranks in place, as one flattened all-reduce."""
    ts = [t for t in tensors if t is not None]
    if not active() or not ts:
        return
    flat = torch.cat([t.reshape(-1).float() for t in ts])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in ts:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Data parallelism: every rank steps with the mean of all ranks' gradients (DDP's rule)."""
    if not active():
        return
    # The models here are static graphs: every rank's step reaches the same parameters, so the buckets line up.
    with torch.no_grad():
        average_([p.grad for p in params if p.grad is not None])
