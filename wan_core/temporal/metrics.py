# Own implementation of weight-free video consistency metrics. Warping error follows the definition in Lai et al.,
# "Learning Blind Video Temporal Consistency" (ECCV 2018), with flow from wan_core.temporal.flow instead of FlowNet2.
# Checked by tests/test_metrics.py (a flickering copy ranks worse; a frozen clip has no motion).
"""Temporal-consistency metrics of a clip: warping error, flicker indices, motion magnitude.

All metrics are computed from the clip itself (no learned weights). Report them together: a frozen clip scores
perfectly on every consistency metric, so a consistency gain only counts when the motion magnitude is kept.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .flow import FlowConfig, consecutive_flows, occlusion_mask, warp

log = logging.getLogger(__name__)

__all__ = ["video_metrics", "warping_error", "flicker_index", "motion_magnitude", "luma", "METRIC_KEYS"]

METRIC_KEYS = (
    "warping_error",  # masked mean squared RGB difference of frame t and flow-warped frame t+1 (0..1 units)
    "hf_warping_error",  # the same on the high-pass band of the residual ("boiling" texture)
    "luma_flicker",  # mean |second temporal difference| of mean luma (0..1 units)
    "hf_flicker",  # mean relative frame-to-frame change of high-frequency energy
    "motion_mean",  # mean flow magnitude, input pixels per frame
    "motion_top5",  # mean of the largest 5% flow magnitudes, input pixels per frame (dynamic-degree proxy)
    "valid_fraction",  # share of pixels the occlusion test kept for the warping error
)

_LUMA = (0.2126, 0.7152, 0.0722)  # BT.709


def _to_nchw(frames: torch.Tensor) -> torch.Tensor:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] in 0..1 (the IMAGE layout); got shape {tuple(frames.shape)}")
    if frames.shape[0] < 2:
        raise ValueError(f"temporal metrics need at least 2 frames (got {frames.shape[0]})")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be float in 0..1 (got {frames.dtype}); convert with frames.float() / 255")
    return frames.permute(0, 3, 1, 2).float()  # [T, H, W, 3] -> [T, 3, H, W]


def luma(frames_nchw: torch.Tensor) -> torch.Tensor:
    """BT.709 luma [T, 1, H, W] of RGB frames [T, 3, H, W]."""
    w = torch.tensor(_LUMA, device=frames_nchw.device, dtype=frames_nchw.dtype).view(1, 3, 1, 1)
    return (frames_nchw * w).sum(1, keepdim=True)


def _high_pass(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """x minus its Gaussian blur (depthwise, replicated borders); [N, C, H, W]."""
    r = max(1, int(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    kx = k.view(1, 1, 1, -1).expand(c, 1, 1, 2 * r + 1)  # [C, 1, 1, K]
    ky = k.view(1, 1, -1, 1).expand(c, 1, 2 * r + 1, 1)  # [C, 1, K, 1]
    blur = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kx, groups=c)
    blur = F.conv2d(F.pad(blur, (0, 0, r, r), mode="replicate"), ky, groups=c)
    return x - blur


def _analysis_frames(frames: torch.Tensor, max_side: int | None) -> tuple[torch.Tensor, float]:
    """[T, 3, H, W] frames downscaled so the longer side is <= max_side, and the scale factor applied."""
    x = _to_nchw(frames)
    side = max(x.shape[-2:])
    if max_side is None or side <= max_side:
        return x, 1.0
    s = max_side / side
    size = (max(2, round(x.shape[-2] * s)), max(2, round(x.shape[-1] * s)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True), s


def warping_error(
    frames_nchw: torch.Tensor, fw: torch.Tensor, bw: torch.Tensor
) -> tuple[float, float, float]:
    """(E_warp, high-pass E_warp, valid fraction) for frames [T, 3, H, W] and their consecutive flows [T-1, 2, H, W].

    E_warp = mean over pairs of sum_p M |V_t - warp(V_{t+1}, f_t->t+1)|^2 / sum_p M, with |.|^2 the mean over RGB and
    M the forward-backward and motion-boundary mask (Lai et al. 2018).
    """
    mask = occlusion_mask(fw, bw, motion_boundaries=True)  # [T-1, 1, H, W]
    resid = frames_nchw[:-1] - warp(frames_nchw[1:], fw)  # [T-1, 3, H, W]
    denom = mask.sum(dim=(1, 2, 3)).clamp_min(1.0)  # [T-1]
    e = ((resid**2).mean(1, keepdim=True) * mask).sum(dim=(1, 2, 3)) / denom
    hf = ((_high_pass(resid) ** 2).mean(1, keepdim=True) * mask).sum(dim=(1, 2, 3)) / denom
    return e.mean().item(), hf.mean().item(), mask.mean().item()


def flicker_index(frames_nchw: torch.Tensor) -> tuple[float, float]:
    """(luma flicker, high-frequency flicker) of frames [T, 3, H, W].

    Luma flicker: mean |L_{t+1} - 2 L_t + L_{t-1}| of the per-frame mean luma L (the second difference ignores
    steady fades; with 2 frames the first difference is used). HF flicker: mean |E_{t+1} - E_t| / mean E of the
    per-frame high-frequency energy E (texture that appears and disappears).
    """
    y = luma(frames_nchw)  # [T, 1, H, W]
    mean_l = y.mean(dim=(1, 2, 3))  # [T]
    d = mean_l[2:] - 2 * mean_l[1:-1] + mean_l[:-2] if mean_l.numel() >= 3 else mean_l[1:] - mean_l[:-1]
    energy = (_high_pass(y) ** 2).mean(dim=(1, 2, 3))  # [T]
    hf = (energy[1:] - energy[:-1]).abs().mean() / energy.mean().clamp_min(1e-12)
    return d.abs().mean().item(), hf.item()


def motion_magnitude(fw: torch.Tensor, scale: float = 1.0) -> tuple[float, float]:
    """(mean, mean of the top 5%) flow magnitude of flows [N, 2, H, W], divided by scale (-> input pixels)."""
    mag = fw.pow(2).sum(1).sqrt().flatten(1) / scale  # [N, H*W]
    k = max(1, int(0.05 * mag.shape[1]))
    return mag.mean().item(), mag.topk(k, dim=1).values.mean().item()


def video_metrics(
    frames: torch.Tensor, *, max_side: int | None = 256, flow_cfg: FlowConfig = FlowConfig()
) -> dict[str, float]:
    """Weight-free temporal metrics of a clip frames [T, H, W, 3] in 0..1 (see METRIC_KEYS).

    Flow and warping error are computed at a working size whose longer side is at most ``max_side`` (None = full
    size); motion is reported in input pixels per frame. Lower warping error and flicker are better at equal motion.
    """
    x, scale = _analysis_frames(frames, max_side)
    # flow on mean-removed frames, so global brightness flicker does not disturb the motion estimate
    fw, bw = consecutive_flows(x - x.mean(dim=(2, 3), keepdim=True) + 0.5, flow_cfg)
    e, e_hf, valid = warping_error(x, fw, bw)
    luma_flicker, hf_flicker = flicker_index(_to_nchw(frames))
    m_mean, m_top = motion_magnitude(fw, scale)
    out = {
        "warping_error": e,
        "hf_warping_error": e_hf,
        "luma_flicker": luma_flicker,
        "hf_flicker": hf_flicker,
        "motion_mean": m_mean,
        "motion_top5": m_top,
        "valid_fraction": valid,
    }
    log.debug("video_metrics on %s frames at %s: %s", x.shape[0], tuple(x.shape[-2:]), out)
    return out
