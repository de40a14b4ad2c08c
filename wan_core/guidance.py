"""Classifier-free guidance on the flow velocity, combined in fp32 as the official Wan loop does.

Reimplemented from reading Wan-Video/Wan2.2@42bf4cf wan/textimage2video.py (Apache-2.0; noise_pred =
uncond + g * (cond - uncond)); no code copied. Tests: tests/test_sampling.py (guidance tests),
tests/test_cfg_batch.py (batched pair).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B,C,T,H,W], sigma [B]) -> v
PairFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # -> (v_cond, v_uncond)


def cfg_velocity(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond), computed and returned in fp32 (same shape as the inputs)."""
    v_uncond = v_uncond.float()
    return v_uncond + scale * (v_cond.float() - v_uncond)


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"guidance scale must be a finite number (got {scale!r}); Wan2.2 TI2V-5B uses 5.0")
    return float(scale)


def cfg_velocity_fn(cond_fn: VelocityFn, uncond_fn: Optional[VelocityFn], scale: float) -> VelocityFn:
    """Guided velocity_fn(x, sigma[B]) -> fp32 v from the positive- and negative-prompt velocity functions.

    scale == 1.0 is plain conditional sampling: uncond_fn is never called (and may be None).
    Two separate forwards per step, like the official loop (peak memory 1x); cfg_pair_velocity_fn is the batched form.
    """
    scale = _check_scale(scale)
    if scale == 1.0:
        return lambda x, sigma: cond_fn(x, sigma).float()
    if uncond_fn is None:
        raise ValueError(f"guidance scale {scale} needs an unconditional (negative-prompt) velocity function; "
                         "pass uncond_fn or use scale 1.0")
    return lambda x, sigma: cfg_velocity(cond_fn(x, sigma), uncond_fn(x, sigma), scale)


def cfg_pair_velocity_fn(pair_fn: PairFn, scale: float) -> VelocityFn:
    """Guided velocity_fn(x, sigma[B]) -> fp32 v from a batched pair (x, sigma) -> (v_cond, v_uncond).

    The same combination as cfg_velocity_fn, for a pair computed in one forward on a batch of 2B (cfg batching,
    wan_core.pipeline.dit_pair_fn): 2x activation memory, one forward's overhead instead of two."""
    scale = _check_scale(scale)
    return lambda x, sigma: cfg_velocity(*pair_fn(x, sigma), scale)
