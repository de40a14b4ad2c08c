"""Who does what: N = U x C ranks, rank = branch * U + sequence rank (C = 2 with CFG parallelism, else 1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch.distributed as dist

from .ulysses import check_ulysses


def check_world(world: int, ulysses: int, cfg_parallel: bool) -> None:
    """Raise ValueError unless the process count is U (or 2U with CFG parallelism)."""
    want = ulysses * (2 if cfg_parallel else 1)
    if world != want:
        flags = f"--ulysses {ulysses}" + (" --cfg-parallel" if cfg_parallel else "")
        hint = f"--ulysses {world // 2} --cfg-parallel" if cfg_parallel and world % 2 == 0 else f"--ulysses {world}"
        raise ValueError(f"{flags} needs {want} processes (U{' x 2' if cfg_parallel else ''}) but {world} were "
                         f"started; launch `torchrun --nproc-per-node {want} ...` or pass {hint}")


@dataclass(frozen=True)
class ParallelPlan:
    """ulysses: U ranks share one DiT forward by tokens; cfg: 2 when the prompt and negative-prompt branches run on
    two groups of U ranks at once, else 1. sp_group: the process group of this rank's U ranks (None = all ranks)."""

    ulysses: int
    cfg: int
    rank: int
    sp_group: Optional[object] = None

    @property
    def world(self) -> int:
        return self.ulysses * self.cfg

    @property
    def branch(self) -> int:
        """0: the prompt (cond) branch, 1: the negative-prompt (uncond) branch."""
        return self.rank // self.ulysses

    @property
    def sp_rank(self) -> int:
        """Which 1/U of the tokens this rank holds."""
        return self.rank % self.ulysses

    def describe(self) -> str:
        cfg = ", cfg-parallel (2 branch groups)" if self.cfg == 2 else ""
        return f"{self.world} ranks: ulysses {self.ulysses}{cfg}"


def make_plan(num_heads: int, ulysses: int, cfg_parallel: bool) -> ParallelPlan:
    """The plan of this rank in the initialised default process group. Every rank must call it (it creates the
    per-branch groups collectively, in the same order everywhere)."""
    check_ulysses(num_heads, ulysses)
    if not dist.is_initialized():
        raise RuntimeError("make_plan needs an initialised torch.distributed process group (launch with torchrun)")
    world, rank = dist.get_world_size(), dist.get_rank()
    check_world(world, ulysses, cfg_parallel)
    sp_group = None
    if cfg_parallel and ulysses > 1:
        groups = [dist.new_group(list(range(b * ulysses, (b + 1) * ulysses))) for b in range(2)]
        sp_group = groups[rank // ulysses]
    return ParallelPlan(ulysses=ulysses, cfg=2 if cfg_parallel else 1, rank=rank, sp_group=sp_group)
