"""Initial noise from a per-call seeded CPU generator (P12): the same seed gives the same video on any device.

Note: official Wan draws its noise from a CUDA generator, so a seed here does not reproduce an official video;
it reproduces ours on every device (CPU, CUDA, MPS) and never touches torch's global RNG.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

SEED_LIMIT = 2**64  # torch.Generator.manual_seed accepts 0 .. 2**64 - 1


def initial_noise(shape: Sequence[int], seed: int, *, device: Optional[torch.device | str] = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` (e.g. [B, 48, T', H/16, W/16]) drawn in fp32 on the CPU, then moved/cast."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an int with 0 <= seed < 2**64 (got {seed!r}); "
                         "map negative or random seeds into that range first (e.g. seed % 2**64)")
    shape = tuple(shape)
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"noise shape must be a non-empty sequence of positive ints (got {shape!r})")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    noise = torch.randn(shape, generator=gen, dtype=torch.float32, device="cpu")
    return noise.to(device=device, dtype=dtype)
