"""Fine-tuning in several processes: ``torchrun --nproc-per-node N -m edgeprune finetune ...`` (DistributedDataParallel).

What a distributed run does, and why it reaches what one process reaches:

- **one global batch, sharded.** ``--batch-size`` is the effective (global)
  batch, the same as one process's. Every process draws the same seeded
  batches as a single process would and takes its own rows of each
  (:func:`edgeprune.data.dataset.shard_bounds`: rank r of N gets rows
  ``[r*B//N, (r+1)*B//N)``, with the augmentation the whole batch gets), the
  effect of a ``DistributedSampler`` whose shards together make one
  process's batch. Each rank's loss is weighted by its share of the batch so
  that DDP's gradient average is the gradient of the global batch's mean
  loss;
- **the same learning-rate rule.** Because the effective batch is unchanged,
  so are the learning rate, warm-up and cosine schedule, step count and
  epoch length: no linear scaling with N. To train with a larger batch on
  more processes, raise ``--batch-size`` and ``--lr`` yourself;
- **the teacher on every rank** (each distils its own rows); **gradients
  averaged** by DDP (gloo on CPUs, NCCL on GPUs); BatchNorm statistics are
  each rank's own rows' unless ``--sync-bn`` (SyncBatchNorm, GPUs only), and
  the running statistics are rank 0's (DDP broadcasts buffers);
- **rank 0 alone** measures, evaluates, early-stops, writes checkpoints and
  reports; the other ranks wait for its decision (a broadcast after every
  evaluation, a barrier before training and at the end);
- **resume at any process count.** ``checkpoints/last.pt`` holds the global
  step and the position in the epoch in global batches, plus the world size
  that wrote it; the same command with any ``--nproc-per-node`` continues
  from it. A rank killed or the launcher interrupted: torchrun stops the
  other ranks with SIGTERM, which rank 0 turns into a checkpoint.

Refused, in one line before any work: ``--time-budget`` (ranks would stop at
different steps), ``--sync-bn`` on CPUs (SyncBatchNorm needs GPUs), more
processes per node than GPUs with ``--device cuda``. Detectors train too:
each rank takes its rows of every global batch and their boxes
(``DetectionDataset.batches(part=...)``); their loss is normalised over the
rank's share (Ultralytics' per image, distillation per weighted anchor),
so N processes approximate one process's step rather than repeat it.

Example::

    world = world_from_env()      # RANK / WORLD_SIZE / LOCAL_RANK that torchrun sets
    check_options(world, device="cpu", time_budget=None, sync_bn=False, amp=None)
    device = start(world, "cpu")  # init_process_group("gloo")
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edgeprune.errors import DistributedError


@dataclass(frozen=True)
class World:
    """Where this process stands in the run: rank ``rank`` of ``size`` (``size`` 1: one process, no collectives)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int] | None:
        return (self.rank, self.size) if self.active else None


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process when it does not)."""
    env = os.environ
    try:
        return World(rank=int(env.get("RANK", 0)), size=int(env.get("WORLD_SIZE", 1)),
                     local_rank=int(env.get("LOCAL_RANK", 0)))
    except ValueError:
        raise DistributedError("RANK / WORLD_SIZE / LOCAL_RANK are not integers: start with torchrun") from None


def check_options(world: World, *, device: str, time_budget: float | None, sync_bn: bool, amp: str | None,
                  nproc_per_node: int | None = None) -> None:
    """Refuse, in one line, what a run of ``world.size`` processes (or ``nproc_per_node``) cannot honour."""
    size = nproc_per_node or world.size
    cuda = device.startswith("cuda")
    if amp not in (None, "bf16", "fp16"):
        raise DistributedError(f"--amp {amp}: choose bf16 or fp16")
    if amp == "fp16" and not cuda:
        raise DistributedError("--amp fp16 needs a GPU (--device cuda); on the CPU use --amp bf16")
    if size <= 1:
        return
    if time_budget:
        raise DistributedError(f"--time-budget with {size} processes: each would stop at a different step; "
                               "give --steps or --epochs")
    if sync_bn and not cuda:
        raise DistributedError("--sync-bn needs GPUs (SyncBatchNorm does not run on the CPU with gloo): "
                               "drop --sync-bn or use --device cuda")
    if cuda and torch.cuda.is_available():
        per_node = nproc_per_node or int(os.environ.get("LOCAL_WORLD_SIZE", size))
        gpus = torch.cuda.device_count()
        if per_node > gpus:
            raise DistributedError(f"{per_node} processes per node with --device cuda but {gpus} GPU(s) here "
                                   f"(NCCL needs one GPU per process): use --nproc-per-node {gpus}")


def start(world: World, device: str) -> str:
    """Join the process group (NCCL for GPUs, gloo for CPUs); returns this rank's device.

    SIGTERM (how torchrun stops the other ranks when one dies or the launcher
    is interrupted) becomes KeyboardInterrupt, so rank 0 saves its checkpoint.
    """
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{world.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=world.rank, world_size=world.size,
                                **({"device_id": torch.device(device)} if cuda else {}))
    signal.signal(signal.SIGTERM, _interrupt)
    return device


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def shield(world: World) -> None:
    """Ignore further SIGINT/SIGTERM: the process is on its way out, saving its checkpoint (several processes only)."""
    if world.active:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def peer_failure(world: World, exc: BaseException) -> bool:
    """Whether ``exc`` says another rank went away (gloo's or NCCL's error in a collective), not a bug here."""
    if not world.active:
        return False
    text = str(exc)
    return isinstance(exc, torch.distributed.DistError) or any(
        w in text for w in ("gloo", "Gloo", "NCCL", "Connection reset by peer", "Connection closed by peer"))


def stop(world: World) -> None:
    if world.active:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if dist.is_initialized():
            dist.destroy_process_group()


def backend() -> str | None:
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def broadcast(world: World, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable value)."""
    if not world.active:
        return obj

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(world: World, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.active:
        return [obj]

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def wrap(student: nn.Module, world: World, *, device: str, sync_bn: bool) -> tuple[nn.Module, list]:
    """``student`` in DistributedDataParallel (itself for one process), and what :func:`unwrap` needs.

    ``sync_bn``: every BatchNorm becomes a SyncBatchNorm for training (the
    originals are kept and get the trained values back in :func:`unwrap`, so
    the saved model keeps its own layer types).
    """
    if not world.active:
        return student, []

    swapped: list = []
    if sync_bn:
        for mod in list(student.modules()):
            for child_name, child in list(mod.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm):
                    sync = nn.SyncBatchNorm.convert_sync_batchnorm(child)
                    setattr(mod, child_name, sync)
                    swapped.append((mod, child_name, child))
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(student, device_ids=ids), swapped


def unwrap(swapped: list) -> None:
    """Put back the BatchNorm layers :func:`wrap` replaced, holding the trained weights and statistics."""
    for mod, child_name, original in swapped:
        original.load_state_dict(getattr(mod, child_name).state_dict())
        setattr(mod, child_name, original)
