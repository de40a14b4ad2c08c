# Own implementation (no upstream code copied). Idea: motion-compensated temporal filtering of decoded frames, the
# weight-free core of blind video temporal-consistency methods (e.g. Lai et al., ECCV 2018, whose warping error is
# what it lowers): average each frame with its flow-warped neighbours where the forward-backward check and the
# photometric check agree that they show the same content. Checked by tests/test_deflicker.py and
# benchmarks/bench_temporal.py (--temporal deflicker=1).
"""Motion-compensated deflicker of a decoded clip [T, H, W, 3] in 0..1 (the IMAGE layout).

    out = deflicker(frames, strength=1.0)

One pass turns frame t into (x_t + s * sum_k w_k warp(x_k)) / (1 + s * sum_k w_k) over its neighbours k = t-1, t+1,
with w_k the forward-backward consistency of the flow (0 where occluded or out of the frame) times
exp(-(e_k / tau)^2), e_k the local photometric error of the warped neighbour: content that appears, disappears or
really changes keeps its own frame (a global brightness shift between the two frames does not count as a change).
The tolerance is strict, so a pass only averages what already agrees closely, at every spatial frequency;
DeflickerConfig.passes repeats the pass on its own output with the same flows, so the averaging reaches further
along each trajectory and each later check, on cleaner frames, accepts more of what is aligned. Then the fine band
of each frame is scaled so its energy follows a moving mean over a few frames (DeflickerConfig.sharpness_window),
against sharpness that pumps from frame to frame. No model, no weights; the cost is one bidirectional flow per frame
pair (estimated once, at a small working size) plus a few warps per pass.
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
    # 0.71x in 3x the time; on 24 demo videos 10 sweeps gave 0.665x against 0.661x for 15, in 12% less time (all
    # measured on frames before the mp4 encode, with the pack's own metric). On the written mp4 files, scored with
    # OpenCV's Farneback flow, full-size flow with 3 warps of 30 sweeps was worse, not better (docs/temporal.md).
    # Raise flow_max_side for large frames with small moving parts (on a GPU it costs little).
    flow: FlowConfig = FlowConfig(warps=1, iterations=10)
    flow_max_side: int | None = 96  # estimate flow at most at this longer side, then upsample (None = full size)
    # Photometric tolerance (0..1 intensities, box-averaged absolute error, a global brightness shift removed) of a
    # warped neighbour. Strict on purpose: on the demo's mp4 files (tuning seeds 0-1) a lenient 0.08 in one pass
    # lowered the independent (Farneback) warping error only to 0.87x and took the Farneback motion to 0.97x (loose
    # matches blend content that does not quite line up); 0.025 in four passes gave 0.71x at 0.99x motion.
    tau: float = 0.025
    window: int = 5  # box window (pixels) of that error
    # Averaging passes over the same flows, each checking against the previous pass's output: 2 / 3 / 4 passes gave
    # 0.79x / 0.75x / 0.71x Farneback warping error at 0.99x motion on the tuning seeds; three passes missed on
    # unseen seeds (0.80x), four are the default (docs/temporal.md).
    passes: int = 4
    frames_per_batch: int = 16  # frame pairs solved together (memory vs speed)
    # Sharpness pumping: the fine band (below a Gaussian of sharpness_sigma pixels) of each frame is scaled so its luma
    # energy follows its mean over sharpness_window frames (odd; 1 = off), the gain kept in 0.5-2. A causal decoder
    # draws each latent frame's four frames with a different sharpness, and bilinear warping blurs each frame's
    # neighbours by a different amount; this evens both out without moving anything.
    sharpness_window: int = 5
    sharpness_sigma: float = 1.5

    def __post_init__(self):
        if not self.tau > 0:
            raise ValueError(f"DeflickerConfig.tau must be > 0 (got {self.tau}); try 0.025")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"DeflickerConfig.window must be an odd number of pixels >= 1 (got {self.window})")
        if self.flow_max_side is not None and self.flow_max_side < 16:
            raise ValueError(f"DeflickerConfig.flow_max_side must be >= 16 or None (got {self.flow_max_side})")
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
            raise ValueError(f"DeflickerConfig.passes must be an integer >= 1 (got {self.passes!r}); 4 is the default")
        if not self.sharpness_sigma > 0:
            raise ValueError(f"DeflickerConfig.sharpness_sigma must be > 0 (got {self.sharpness_sigma}); try 1.5")
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


def _working_size(h: int, w: int, cfg: DeflickerConfig) -> tuple[int, int]:
    """The size flow is estimated at: the frame's, or its longer side shrunk to cfg.flow_max_side."""
    if cfg.flow_max_side is None or max(h, w) <= cfg.flow_max_side:
        return h, w
    s = cfg.flow_max_side / max(h, w)
    return max(2, round(h * s)), max(2, round(w * s))


def _pair_flows(a: torch.Tensor, b: torch.Tensor, cfg: DeflickerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_ab, f_ba) of frames [N, 3, H, W] at the working size (_working_size; vectors in working pixels), on
    mean-removed frames (a brightness flicker is not motion). Kept small: every pass upsamples them again."""
    a = a - a.mean(dim=(1, 2, 3), keepdim=True) + 0.5
    b = b - b.mean(dim=(1, 2, 3), keepdim=True) + 0.5
    size = _working_size(*a.shape[-2:], cfg)
    if size != tuple(a.shape[-2:]):
        a, b = (F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True) for x in (a, b))
    return bidirectional_flow(a, b, cfg.flow)


def _full_size(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A working-size flow [N, 2, h, w] upsampled to size and rescaled to full-size pixels."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    scale = torch.tensor([(size[1] - 1) / (w - 1), (size[0] - 1) / (h - 1)], device=flow.device, dtype=flow.dtype)
    return F.interpolate(flow, size=size, mode="bilinear", align_corners=False) * scale.view(1, 2, 1, 1)


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
    fine = x - low_pass(x, cfg.sharpness_sigma)
    energy = luma(fine).pow(2).mean(dim=(1, 2, 3))  # [T] luma energy of the fine band
    half = k // 2
    padded = torch.cat((energy[:1].expand(half), energy, energy[-1:].expand(half)))
    target = padded.unfold(0, k, 1).mean(dim=-1)  # [T] moving mean, edges repeated
    gain = (target / energy.clamp_min(1e-12)).sqrt().clamp(0.5, 2.0) ** strength
    return x + (gain.view(-1, 1, 1, 1) - 1) * fine


def _pair_guides(x: torch.Tensor, cfg: DeflickerConfig) -> list:
    """For each batch of frame pairs of x [T, 3, H, W]: (first pair, f_ab, f_ba at the working size, and the
    forward-backward masks of both directions at full size, bool). Estimated once, shared by every pass."""
    guides = []
    size = tuple(x.shape[-2:])
    for start in range(0, x.shape[0] - 1, cfg.frames_per_batch):
        end = min(start + cfg.frames_per_batch, x.shape[0] - 1)
        fab, fba = _pair_flows(x[start:end], x[start + 1:end + 1], cfg)
        big_ab, big_ba = _full_size(fab, size), _full_size(fba, size)
        guides.append((start, fab, fba, occlusion_mask(big_ab, big_ba) > 0, occlusion_mask(big_ba, big_ab) > 0))
    return guides


def _average_pass(x: torch.Tensor, guides: list, strength: float, cfg: DeflickerConfig) -> torch.Tensor:
    """One pass: every frame of x [T, 3, H, W] averaged with its warped neighbours, weighted by the forward-backward
    check and the photometric check against x itself (guides from _pair_guides)."""
    size = tuple(x.shape[-2:])
    acc = x.clone()
    weight = torch.ones_like(x[:, :1])  # [T, 1, H, W]: the frame itself counts 1
    for start, fab, fba, valid_ab, valid_ba in guides:
        end = start + len(fab)
        a, b = x[start:end], x[start + 1:end + 1]  # pairs (t, t+1)
        for dst, src, flow, valid, first in ((a, b, fab, valid_ab, start), (b, a, fba, valid_ba, start + 1)):
            warped = warp(src, _full_size(flow, size))  # the neighbour seen from dst's grid
            valid = valid.to(x.dtype)  # [N, 1, H, W]
            diff = warped - dst
            # a global brightness or colour shift is flicker to average out, not a mismatch: the check ignores it
            offset = (diff * valid).sum(dim=(2, 3), keepdim=True) / valid.sum(dim=(2, 3), keepdim=True).clamp_min(1)
            err = _box_mean((diff - offset).abs().mean(1, keepdim=True), cfg.window)
            w = strength * valid * torch.exp(-(err / cfg.tau) ** 2)  # [N, 1, H, W]
            acc[first:first + len(w)].addcmul_(w, warped)
            weight[first:first + len(w)].add_(w)
    log.debug("deflicker pass: mean neighbour weight %.3f", (weight.mean().item() - 1) / 2)
    return acc.div_(weight)


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
    guides = _pair_guides(x, cfg)
    y = x
    for _ in range(cfg.passes):
        y = _average_pass(y, guides, strength, cfg)
    out = _even_sharpness(y, strength, cfg).clamp(0, 1)
    return out.permute(0, 2, 3, 1).to(frames.dtype).contiguous()
