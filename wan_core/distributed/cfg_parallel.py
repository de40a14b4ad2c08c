"""CFG parallelism: the prompt and negative-prompt branches of a guided step run on two rank groups at once.

The pipeline's batched guidance (wan_core.pipeline.dit_pair_fn: ONE DiT call on the batch [x; x] with the contexts
[prompt; negative]) is the unit: inside that call branch group 0 keeps the first half of the batch and group 1 the
second (wan_core.distributed.dit), and the gathered output holds both halves on every rank, so the velocities are
combined by the unchanged guidance code (wan_core.guidance.cfg_pair_velocity_fn) identically everywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..speed import SpeedOptions
from .plan import ParallelPlan

NO_GUIDANCE = ("--cfg-parallel runs the prompt and negative-prompt branches on two rank groups, but guidance is "
               "off (cfg 1, e.g. from --preset or --cfg 1): there is no second branch; drop --cfg-parallel and use "
               "all processes for --ulysses")


def check_guidance(plan: ParallelPlan, guidance_scale: float) -> None:
    """Refuse CFG parallelism without guidance (one branch only)."""
    if plan.cfg == 2 and guidance_scale == 1.0:
        raise ValueError(NO_GUIDANCE)


def branch_speed(plan: ParallelPlan, speed: Optional[SpeedOptions]) -> SpeedOptions:
    """CFG parallelism needs the batched pair path: cfg_batch forced "on" (other options kept)."""
    speed = speed or SpeedOptions()
    return dataclasses.replace(speed, cfg_batch="on") if plan.cfg == 2 else speed


def take_branch(t: torch.Tensor, plan: ParallelPlan) -> torch.Tensor:
    """This rank's half of a pair batch [2B, ...] ([B, ...]); t itself without CFG parallelism."""
    if plan.cfg == 1:
        return t
    if t.shape[0] % 2:
        raise RuntimeError(f"CFG parallelism got a DiT batch of {t.shape[0]}, not a [cond; uncond] pair; the "
                           "pipeline must batch the guidance branches (cfg_batch 'on')")
    return t.chunk(2)[plan.branch]


def join_branches(halves: list[torch.Tensor], plan: ParallelPlan) -> torch.Tensor:
    """Per-branch outputs [B, ...] in branch order -> the pair batch [2B, ...] (the input itself without CFG)."""
    return torch.cat(halves) if plan.cfg == 2 else halves[0]
