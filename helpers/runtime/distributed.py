"""More than one process: where this one stands in a run ``accelerate launch`` (or torchrun)
started, and running a block on the main process first.

:func:`distributed` reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and
``ACCELERATE_USE_FSDP``/``ACCELERATE_USE_DEEPSPEED``; nothing else asks torch.distributed. Only
the transformers backend trains in more than one process (Unsloth is single-GPU): each process
loads its own copy on its own GPU (DDP), or on the CPU for FSDP/DeepSpeed to shard. Nothing here
imports torch at module import.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from helpers import models


class DistributedError(RuntimeError):
    """A setting that cannot work with more than one process."""


def world_size() -> int:
    """How many processes train together (``WORLD_SIZE``, set by ``accelerate launch``/torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


@dataclass(frozen=True)
class Distributed:
    """This process's place in a multi-process run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    #: accelerate's DistributedType name: NO, MULTI_GPU, MULTI_CPU, FSDP or DEEPSPEED
    type: str = "NO"

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shards_weights(self) -> bool:
        """FSDP and DeepSpeed split the weights across processes (no process holds them all)."""
        return self.type in ("FSDP", "DEEPSPEED")


def distributed() -> Distributed:
    """Where this process stands, from the environment ``accelerate launch`` sets (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``ACCELERATE_USE_FSDP``/``ACCELERATE_USE_DEEPSPEED``)."""
    n = world_size()
    if n == 1:
        return Distributed()
    env = os.environ
    flag = lambda name: env.get(name, "").lower() in ("1", "true", "yes")  # noqa: E731
    kind = ("FSDP" if flag("ACCELERATE_USE_FSDP") else "DEEPSPEED" if flag("ACCELERATE_USE_DEEPSPEED")
            else "MULTI_GPU" if models.cuda_available() else "MULTI_CPU")
    return Distributed(world_size=n, rank=int(env.get("RANK", "0")),
                       local_rank=int(env.get("LOCAL_RANK", "0")), type=kind)


@contextlib.contextmanager
def main_process_first():
    """Run the block on the main process first, then on the others together (a no-op in one
    process): what it builds or moves on disk (a stand-in, checkpoints) is done once."""
    if world_size() == 1:
        yield
        return
    import datetime

    import torch
    from accelerate import PartialState
    # the trainer makes the same state later; the process group started here is reused
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(minutes=30))
    with state.main_process_first():
        yield


def check_engine(asked: Distributed, running) -> None:
    """Stop when accelerate set up another engine than the launch asked for (before training):
    under FSDP/DeepSpeed the processes skip answers and load 16-bit weights on the CPU, which only
    makes sense when the weights really are sharded."""
    running = getattr(running, "value", str(running))
    if not asked.shards_weights or running == asked.type:
        return
    import torch
    why = ""
    if asked.type == "FSDP" and not torch.cuda.is_available():
        # accelerate 1.15 state.py: AcceleratorState turns into FSDP only a process state of
        # MULTI_GPU/NPU/XPU/MLU/...; without CUDA it is MULTI_CPU (TrainingArguments' use_cpu),
        # or NO without cpu=True. DeepSpeed's branch only needs the Accelerator made without
        # cpu=True, as the Trainer makes it: DeepSpeed's CPU accelerator runs (over gloo).
        why = (" accelerate (1.15) turns a run into FSDP only on a GPU-type device: on a CPU "
               "its state is MULTI_CPU, so every process would train a whole copy as plain DDP. "
               "torch's FSDP2 itself runs over gloo, but accelerate does not select it on a CPU.")
    raise DistributedError(
        f"accelerate launch asked for {asked.type}, but accelerate set up {running}.{why} Run "
        f"{asked.type} on GPUs; on a CPU use accelerate/ddp_cpu.yaml (DDP) or DeepSpeed's CPU "
        "accelerator (accelerate/deepspeed_zero3.yaml --mixed_precision no, with deepspeed installed).")


_check_engine = check_engine   # its name before the move (helpers.train._check_engine)
