# Own implementation (no upstream code copied). Idea: motion-compensated temporal filtering of decoded frames, the
# weight-free core of blind video temporal-consistency methods (e.g. Lai et al., ECCV 2018, whose warping error is
# what it lowers): average each frame with its flow-warped neighbours where the forward-backward check and the
# photometric check agree that they show the same content. Checked by tests/test_deflicker.py and
# benchmarks/bench_temporal.py (--temporal deflicker=1).
"""Motion-compensated deflicker of a decoded clip [T, H, W, 3] in 0..1 (the IMAGE layout).

    out = deflicker(frames, strength=1.0)

Frame t becomes (x_t + s * sum_k w_k warp(x_k)) / (1 + s * sum_k w_k) over its neighbours k = t-1, t+1, with w_k the
forward-backward consistency of the flow (0 where occluded or out of the frame) times exp(-(e_k / tau)^2), e_k the
local photometric error of the warped neighbour: content that appears, disappears or really changes keeps its own
frame. Only the coarse part of that change is applied (DeflickerConfig.band_sigma): brightness flicker and the
wobble of shapes along a motion trajectory are averaged out, the frame's own fine texture stays, and motion that
the flow follows is kept. Then the fine band of each frame is scaled so its energy follows a moving mean over a few
frames (DeflickerConfig.sharpness_window), against sharpness that pumps from frame to frame. No model, no weights;
the cost is one bidirectional flow per frame pair.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .flow import FlowConfig, bidirectional_flow, occlusion_mask, warp
from .guided import low_pass
from .metrics import luma

log = logging.getLogger(__name__)

__all__ = ["DeflickerConfig", "deflicker", "check_strength"]


@dataclass(frozen=True)
class DeflickerConfig:
    """Parameters of the deflicker pass (strength is the per-call argument of deflicker)."""

    # Flow is only a guide here (the photometric check rejects where it is wrong), so it is cheap: on demo clips
    # (224 px, 8 videos) one warp of 15 sweeps at 96 px gave a warping error of 0.68x, full size with 2 warps of 20
    # 0.71x in 3x the time; on 24 demo videos 10 sweeps gave 0.665x against 0.661x for 15, in 12% less time. Raise
    # flow_max_side for large frames with small moving parts (on a GPU it costs little).
    flow: FlowConfig = FlowConfig(warps=1, iterations=10)
    flow_max_side: int | None = 96  # estimate flow at most at this longer side, then upsample (None = full size)
    tau: float = 0.08  # photometric tolerance (0..1 intensities, box-averaged error) of a warped neighbour
    window: int = 5  # box window (pixels) of that error
    frames_per_batch: int = 16  # frame pairs solved together (memory vs speed)
    # Only the change's spatial frequencies below a Gaussian of this sigma (pixels) are applied; None = all. Bilinear
    # warping blurs a neighbour by a different amount in each frame, so averaging every frequency would make the
    # fine texture's energy pump from frame to frame (measured on the demo model: high-frequency flicker 1.3x with
    # every frequency, 1.05x with sigma 0.75, 0.98x with 1.5; bicubic warping did not change that).
    band_sigma: float | None = 1.5
    # Sharpness pumping: the fine band (below a Gaussian of band_sigma, 1.5 px when band_sigma is None) of each frame
    # is scaled so its luma energy follows its mean over this many frames (odd; 1 = off), the gain kept in 0.5-2.
    # A causal decoder draws each latent frame's four frames with a different sharpness; this evens that out without
    # moving or blurring anything (measured: high-frequency flicker 0.98x -> 0.56x on demo clips, nothing else moved).
    sharpness_window: int = 5

    def __post_init__(self):
        if not self.tau > 0:
            raise ValueError(f"DeflickerConfig.tau must be > 0 (got {self.tau}); try 0.08")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"DeflickerConfig.window must be an odd number of pixels >= 1 (got {self.window})")
        if self.flow_max_side is not None and self.flow_max_side < 16:
            raise ValueError(f"DeflickerConfig.flow_max_side must be >= 16 or None (got {self.flow_max_side})")
        if self.band_sigma is not None and not self.band_sigma > 0:
            raise ValueError(f"DeflickerConfig.band_sigma must be > 0 or None (got {self.band_sigma}); try 1.5")
        if isinstance(self.sharpness_window, bool) or not isinstance(self.sharpness_window, int) \
                or self.sharpness_window < 1 or self.sharpness_window % 2 == 0:
            raise ValueError(f"DeflickerConfig.sharpness_window must be an odd number of frames >= 1 (got "
                             f"{self.sharpness_window!r}); 1 turns it off, 5 is the default")
        if self.frames_per_batch < 1:
            raise ValueError(f"DeflickerConfig.frames_per_batch must be >= 1 (got {self.frames_per_batch})")


def check_strength(strength) -> None:
    """Raise ValueError unless strength is a number in [0, 1] (the deflicker's, checked before any work)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or not 0.0 <= strength <= 1.0:
        raise ValueError(f"deflicker strength must be a number in [0, 1] (got {strength!r}); 0 is off, 1 the "
                         "measured default (the Deflicker node's)")


def _pair_flows(a: torch.Tensor, b: torch.Tensor, cfg: DeflickerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_ab, f_ba) of frames [N, 3, H, W], on mean-removed frames (a brightness flicker is not motion), estimated
    at a working size of at most cfg.flow_max_side and returned at full size."""
    a = a - a.mean(dim=(1, 2, 3), keepdim=True) + 0.5
    b = b - b.mean(dim=(1, 2, 3), keepdim=True) + 0.5
    return bidirectional_flow(a, b, cfg.flow, max_side=cfg.flow_max_side)


def _box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k box average of [N, C, H, W] over the pixels inside the image (edges average fewer): the same as
    avg_pool2d(x, k, 1, k // 2, count_include_pad=False), as shifted slices (several times faster on CPU)."""
    if k == 1:
        return x
    r = k // 2
    h, w = x.shape[-2:]
    p = F.pad(x, (r, r, 0, 0))
    rows = p[..., :w].clone()
    for i in range(1, k):
        rows.add_(p[..., i:i + w])
    p = F.pad(rows, (0, 0, r, r))
    out = p[..., :h, :].clone()
    for i in range(1, k):
        out.add_(p[..., i:i + h, :])
    count = lambda n: (torch.arange(n, device=x.device).clamp(max=r) + torch.arange(n - 1, -1, -1,  # noqa: E731
                       device=x.device).clamp(max=r) + 1).to(x.dtype)  # pixels of the window inside, per position
    return out.div_(count(h).view(-1, 1) * count(w))


def _even_sharpness(x: torch.Tensor, strength: float, cfg: DeflickerConfig) -> torch.Tensor:
    """Scale the fine band of frames x [T, 3, H, W] so its luma energy follows a moving mean over
    cfg.sharpness_window frames (gain ** strength, gain in 0.5-2)."""
    k = cfg.sharpness_window
    if k == 1 or x.shape[0] < 2:
        return x
    fine = x - low_pass(x, cfg.band_sigma or 1.5)
    energy = luma(fine).pow(2).mean(dim=(1, 2, 3))  # [T] luma energy of the fine band
    half = k // 2
    padded = torch.cat((energy[:1].expand(half), energy, energy[-1:].expand(half)))
    target = padded.unfold(0, k, 1).mean(dim=-1)  # [T] moving mean, edges repeated
    gain = (target / energy.clamp_min(1e-12)).sqrt().clamp(0.5, 2.0) ** strength
    return x + (gain.view(-1, 1, 1, 1) - 1) * fine


def deflicker(frames: torch.Tensor, strength: float = 1.0, cfg: DeflickerConfig = DeflickerConfig()) -> torch.Tensor:
    """Motion-compensated temporal filter of frames [T, H, W, 3] (float, 0..1); strength in [0, 1], 0 returns the
    input unchanged (the same tensor), 1 weighs each valid neighbour as much as the frame itself."""
    check_strength(strength)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] in 0..1 (the IMAGE layout); got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be float in 0..1 (got {frames.dtype}); convert with frames.float() / 255")
    if strength == 0 or frames.shape[0] < 2:
        return frames
    x = frames.permute(0, 3, 1, 2).float().contiguous()  # [T, 3, H, W]
    t = x.shape[0]
    k = cfg.window
    acc = x.clone()
    weight = torch.ones_like(x[:, :1])  # [T, 1, H, W]: the frame itself counts 1
    for start in range(0, t - 1, cfg.frames_per_batch):
        end = min(start + cfg.frames_per_batch, t - 1)
        a, b = x[start:end], x[start + 1:end + 1]  # pairs (t, t+1)
        fab, fba = _pair_flows(a, b, cfg)
        for dst, src, flow, back, first in ((a, b, fab, fba, start), (b, a, fba, fab, start + 1)):
            warped = warp(src, flow)  # the neighbour seen from dst's grid
            err = _box_mean((warped - dst).abs().mean(1, keepdim=True), k)
            w = strength * occlusion_mask(flow, back) * torch.exp(-(err / cfg.tau) ** 2)  # [N, 1, H, W]
            acc[first:first + len(w)].addcmul_(w, warped)
            weight[first:first + len(w)].add_(w)
    change = acc / weight - x
    if cfg.band_sigma is not None:
        change = low_pass(change, cfg.band_sigma)
    out = _even_sharpness(x + change, strength, cfg).clamp(0, 1)
    log.debug("deflicker: %d frames, mean neighbour weight %.3f", t, (weight.mean().item() - 1) / 2)
    return out.permute(0, 2, 3, 1).to(frames.dtype).contiguous()
