# Own implementation of the Enhance-A-Video cross-frame attention gain (Zhao et al., "Enhance-A-Video: Better
# Generated Video for Free", arXiv 2502.07508), written from reading NUS-HPC-AI-Lab/Enhance-A-Video
# enhance_a_video/models/wan.py and its enhance_score (Apache-2.0); no code copied. Applied through
# wan_core.model.DiTHooks.self_attn (no model patching). Checked by tests/test_enhance.py.
"""Enhance-A-Video: scale each self-attention output by a gain derived from its cross-frame attention intensity.

Per layer, for every spatial token and head, the queries and keys of the F' latent frames at that spatial position
form an F' x F' temporal attention map softmax(q k^T / sqrt(d)). The cross-frame intensity (CFI) is the mean of
its off-diagonal entries, averaged over positions and heads. The attention output is multiplied by
clamp(CFI * (F' + weight), min=1): uniform temporal attention gives 1 + weight / F', attention that stays on its
own frame gives ~1 (no change). `weight` is the paper's "enhance temperature" (1-4 typical).

Two documented differences from the reference code: the gain is computed per sample (the reference averages over
the whole batch, so cond/uncond halves of a CFG batch share it; our sampler calls them separately anyway), and it
scales the attention output before the output projection (the reference scales after it; the two differ by
(gain - 1) * bias of that projection).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
from einops import rearrange

from ..model import DiTHooks
from ..schedules import step_window

log = logging.getLogger(__name__)

__all__ = ["cross_frame_intensity", "enhance_gain", "enhance_hook", "enhance_a_video", "step_window"]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ModelWrapper = Callable[[ModelFn, torch.Tensor], ModelFn]
SelfAttnHook = Callable[..., torch.Tensor]

CHUNK_ELEMENTS = 1 << 24  # fp32 elements of q per temporal-attention chunk (TI2V-5B 720p: ~180 positions, 64 MiB)


def cross_frame_intensity(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Mean off-diagonal temporal attention weight per sample: q, k [B, L, heads, D] (L = F' H' W') -> [B] fp32.

    The temporal map of one spatial position and head is softmax over frames of q_f . k_g / sqrt(D); its rows sum
    to 1, so the off-diagonal mean is (F' - trace) / (F' (F' - 1)). Needs F' >= 2.
    """
    f, h, w = grid
    if q.ndim != 4 or q.shape != k.shape or q.shape[1] != f * h * w:
        raise ValueError(f"q and k must be [B, L={f}*{h}*{w}, heads, D] with the same shape "
                         f"(got q {tuple(q.shape)}, k {tuple(k.shape)})")
    if f < 2:
        raise ValueError(f"cross-frame intensity needs at least 2 latent frames (grid {grid})")
    scale = q.shape[-1] ** -0.5
    qt = rearrange(q, "b (f s) n d -> b s n f d", f=f)  # [B, S, N, F, D]
    kt = rearrange(k, "b (f s) n d -> b s n f d", f=f)  # [B, S, N, F, D]
    trace = q.new_zeros(q.shape[0], dtype=torch.float32)  # sum over positions/heads of the diagonal mass [B]
    step = max(1, CHUNK_ELEMENTS // (q.shape[0] * q.shape[2] * f * q.shape[3]))  # spatial positions per chunk
    for s0 in range(0, qt.shape[1], step):
        qc = qt[:, s0:s0 + step].float()  # [B, S_c, N, F, D]
        kc = kt[:, s0:s0 + step].float()
        attn = torch.softmax((qc * scale) @ kc.transpose(-1, -2), dim=-1)  # [B, S_c, N, F, F]
        trace += attn.diagonal(dim1=-2, dim2=-1).sum(dim=(1, 2, 3))  # [B]
    positions = qt.shape[1] * qt.shape[2]  # S * heads temporal maps per sample
    mean_trace = trace / positions
    return (f - mean_trace) / (f * (f - 1))  # [B]


def enhance_gain(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int, int], weight: float) -> torch.Tensor:
    """The per-sample gain clamp(CFI * (F' + weight), min=1) -> [B] fp32 (all ones when F' < 2)."""
    if grid[0] < 2:
        return q.new_ones(q.shape[0], dtype=torch.float32)
    return (cross_frame_intensity(q, k, grid) * (grid[0] + weight)).clamp_min(1.0)


def enhance_hook(weight: float | Callable[[], float]) -> SelfAttnHook:
    """A DiTHooks.self_attn callable scaling each block's attention output by enhance_gain.

    weight is a number or a zero-argument callable read at every call (0 -> the output is returned untouched).
    """
    read = weight if callable(weight) else (lambda: weight)

    def hook(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             grid: tuple[int, int, int]) -> torch.Tensor:
        w = float(read())
        if w == 0.0 or grid[0] < 2:
            return out
        gain = enhance_gain(q, k, grid, w)  # [B]
        return out * gain.to(out.dtype).view(-1, 1, 1, 1)  # out [B, L, heads, D]

    return hook


class _Gate:
    """The enhance weight in force for the current model evaluation (one per built run; set by the wrapper)."""

    __slots__ = ("weight",)

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self) -> float:
        return self.weight


def enhance_a_video(weight: float, *, start: float = 0.0, end: float = 1.0
                    ) -> tuple[Optional[ModelWrapper], Optional[DiTHooks]]:
    """(model wrapper or None, DiTHooks or None) applying Enhance-A-Video between fractions start and end of the steps.

    weight 0 -> (None, None): sampling is untouched, bit for bit. Over the whole schedule (start 0, end 1) only the
    stateless hook is returned. Otherwise the wrapper (model_fn, sigmas) -> model_fn switches the hook on and off
    per model evaluation from sigma[0] (one host read per evaluation); hook and wrapper of one call belong together.
    """
    if not weight >= 0.0 or weight != weight or weight == float("inf"):
        raise ValueError(f"enhance weight must be a finite number >= 0 (got {weight}); 0 disables, 1-4 is typical")
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"need 0 <= start < end <= 1 as fractions of the schedule (got start={start}, end={end})")
    if weight == 0.0:
        return None, None
    if start == 0.0 and end == 1.0:
        return None, DiTHooks(self_attn=enhance_hook(weight))
    gate = _Gate(0.0)

    def wrap(model_fn: ModelFn, sigmas: torch.Tensor) -> ModelFn:
        hi, lo = step_window(sigmas, start, end)

        def gated(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            s = float(sigma.flatten()[0])
            gate.weight = weight if lo < s <= hi + 1e-9 else 0.0
            try:
                return model_fn(x, sigma)
            finally:
                gate.weight = 0.0

        return gated

    return wrap, DiTHooks(self_attn=enhance_hook(gate))
