# Own implementation (no upstream code copied). Idea: training-free flow-guided latent propagation as in
# Upscale-A-Video (Zhou et al., CVPR 2024) and the gradient-free reading of FlowMo (Shaulov et al., 2025), applied
# to the predicted clean latent of a flow-matching sampler. Checked by tests/test_temporal_guided.py.
"""Flow-guided smoothing of the predicted clean latent, as a pure ``model_fn`` wrapper.

``flow_smoothed(model_fn, sigmas, strength=..., start=..., end=...)`` returns a new ``model_fn`` with the sampler
contract ``model_fn(x [B, C, T, H, W], sigma [B]) -> denoised``. Inside the window of the schedule it estimates flow
between consecutive latent frames of the denoised prediction (on a cheap preview), warps both neighbours onto each
frame, and pulls only the low spatial frequencies towards them where the forward-backward check passes. The
strength decays linearly to 0 at ``end``; no extra model evaluations. Returning the modified x0 to the sampler is the
same as handing it v' = (x - x0') / sigma, so the noise component of x is kept.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from ..schedules import step_window
from .flow import FlowConfig, bidirectional_flow, occlusion_mask, warp

log = logging.getLogger(__name__)

__all__ = ["flow_smoothed", "smooth_x0", "latent_flows", "pca_preview", "GUIDE_FLOW"]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Preview = Callable[[torch.Tensor], torch.Tensor]

GUIDE_FLOW = FlowConfig(warps=2, iterations=20, min_size=6)  # latent frames are small (e.g. 44x80); keep it cheap


def pca_preview(x0: torch.Tensor) -> torch.Tensor:
    """Weight-free preview of a latent [B, C, T, H, W]: its top-3 principal components, [B, 3, T, H, W] in 0..1.

    One projection per sample, shared by all its frames, so brightness stays comparable across time.
    """
    b, c, t, h, w = x0.shape
    flat = rearrange(x0.float(), "b c t h w -> b (t h w) c")
    flat = flat - flat.mean(dim=1, keepdim=True)
    q = min(3, c)
    cov = flat.transpose(1, 2) @ flat  # [B, C, C]
    _, vecs = torch.linalg.eigh(cov.double())  # ascending; deterministic (no RNG)
    proj = flat @ vecs[..., -q:].flip(-1).to(flat.dtype)  # [B, THW, q]
    if q < 3:
        proj = torch.cat((proj, proj.new_zeros(b, proj.shape[1], 3 - q)), dim=-1)
    lo, hi = proj.amin(dim=1, keepdim=True), proj.amax(dim=1, keepdim=True)
    proj = (proj - lo) / (hi - lo).clamp_min(1e-6)
    return rearrange(proj, "b (t h w) c -> b c t h w", t=t, h=h, w=w)


def low_pass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W] with replicated borders.

    Written as a weighted sum of shifted slices of the padded tensor: on CPU that is 2.5x faster than a depthwise
    conv2d for these small kernels (measured on a 25-frame 224x128 clip, sigma 1.5: 0.023 s vs 0.058 s), with the
    same result up to float rounding."""
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).tolist()
    h, w = x.shape[-2:]
    p = F.pad(x, (r, r, 0, 0), mode="replicate")
    y = k[0] * p[..., :w]
    for i in range(1, 2 * r + 1):
        y.add_(p[..., i:i + w], alpha=k[i])
    p = F.pad(y, (0, 0, r, r), mode="replicate")
    out = k[0] * p[..., :h, :]
    for i in range(1, 2 * r + 1):
        out.add_(p[..., i:i + h, :], alpha=k[i])
    return out


Flows = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _smoothable(x0: torch.Tensor, skip_first: bool) -> bool:
    """At least two frames to pair (after the skipped first) and frames of at least 4x4."""
    return x0.shape[2] - int(skip_first) >= 2 and min(x0.shape[-2:]) >= 4


def latent_flows(x0: torch.Tensor, *, preview: Preview = pca_preview, skip_first: bool = True,
                 flow_cfg: FlowConfig = GUIDE_FLOW) -> Flows:
    """(forward flow, backward flow, forward mask, backward mask) between consecutive latent frames of x0
    [B, C, T, H, W] (from frame 1 on with skip_first), each [B (T' - 1), 2 or 1, H, W], estimated on a preview."""
    seg = x0.float()[:, :, 1 if skip_first else 0:]
    frames = rearrange(preview(seg), "b c t h w -> b t c h w")
    a = rearrange(frames[:, :-1], "b t c h w -> (b t) c h w")  # frames 0..T'-2
    nxt = rearrange(frames[:, 1:], "b t c h w -> (b t) c h w")  # frames 1..T'-1
    fw, bw = bidirectional_flow(a, nxt, flow_cfg)  # f_{t->t+1} on t's grid, f_{t+1->t} on t+1's grid
    return fw, bw, occlusion_mask(fw, bw), occlusion_mask(bw, fw)


def smooth_x0(
    x0: torch.Tensor, weight: float, *, preview: Preview = pca_preview, low_sigma: float = 1.5,
    skip_first: bool = True, flow_cfg: FlowConfig = GUIDE_FLOW, flows: Flows | None = None,
) -> torch.Tensor:
    """One smoothing pass on a clean-latent estimate x0 [B, C, T, H, W]; weight in [0, 1] is the blend at full trust.

    Low band of frame t <- (1 - weight * m) * low_t + weight * m * mean of the valid flow-warped neighbour lows,
    m = share of neighbours that pass the forward-backward test; the change itself is low-passed again, so high
    frequencies are untouched. With skip_first,
    latent frame 0 (one pixel frame of the causal VAE, unlike the others) is neither changed nor used.
    `flows`: latent_flows of this or a nearby x0, to reuse instead of estimating them again.
    """
    if x0.ndim != 5:
        raise ValueError(f"x0 must be [B, C, T, H, W] (got shape {tuple(x0.shape)})")
    first = 1 if skip_first else 0
    b, c, t, h, w = x0.shape
    if weight <= 0 or not _smoothable(x0, skip_first):
        return x0
    work = x0.float()
    seg = work[:, :, first:]  # [B, C, T', H, W]
    tp = t - first
    if flows is None or flows[0].shape[0] != b * (tp - 1) or flows[0].shape[-2:] != (h, w):
        flows = latent_flows(x0, preview=preview, skip_first=skip_first, flow_cfg=flow_cfg)
    fw, bw, m_fw, m_bw = flows
    low = low_pass(rearrange(seg, "b c t h w -> (b t) c h w"), low_sigma)
    low = rearrange(low, "(b t) c h w -> b t c h w", b=b)  # [B, T', C, H, W]
    src_next = rearrange(low[:, 1:], "b t c h w -> (b t) c h w")
    src_prev = rearrange(low[:, :-1], "b t c h w -> (b t) c h w")
    from_next = rearrange(warp(src_next, fw) * m_fw, "(b t) c h w -> b t c h w", b=b)  # onto frames 0..T'-2
    from_prev = rearrange(warp(src_prev, bw) * m_bw, "(b t) c h w -> b t c h w", b=b)  # onto frames 1..T'-1
    mf = rearrange(m_fw, "(b t) c h w -> b t c h w", b=b)
    mb = rearrange(m_bw, "(b t) c h w -> b t c h w", b=b)
    zeros_v, zeros_m = low.new_zeros(b, 1, c, h, w), mf.new_zeros(b, 1, 1, h, w)
    acc = torch.cat((from_next, zeros_v), 1) + torch.cat((zeros_v, from_prev), 1)  # [B, T', C, H, W]
    cnt = torch.cat((mf, zeros_m), 1) + torch.cat((zeros_m, mb), 1)  # valid neighbours per pixel [B, T', 1, H, W]
    target = acc / cnt.clamp_min(1.0)
    trust = weight * cnt / 2.0  # one valid neighbour = half weight
    change = rearrange(trust * (target - low) * (cnt > 0), "b t c h w -> (b t) c h w")
    change = low_pass(change, low_sigma)  # the hard mask's edges must not leak high frequencies
    delta = rearrange(change, "(b t) c h w -> b c t h w", b=b)
    out = work.clone()
    out[:, :, first:] = seg + delta
    return out.to(x0.dtype)


def flow_smoothed(
    model_fn: ModelFn, sigmas: torch.Tensor, *, strength: float, start: float = 0.1, end: float = 0.6,
    preview: Preview = pca_preview, low_sigma: float = 1.5, skip_first: bool = True,
    flow_cfg: FlowConfig = GUIDE_FLOW, flow_every: int = 2,
) -> ModelFn:
    """Wrap model_fn so its denoised prediction is flow-smoothed between fractions start and end of the schedule.

    sigmas is the sampler's schedule (1-D, decreasing). The blend weight is strength at sigmas[round(start*n)] and
    falls linearly to 0 at sigmas[round(end*n)] (n = steps); outside that window the prediction is returned as is.
    strength 0 returns model_fn itself, so sampling is bit-identical. Each wrapped call reads sigma[0] on the host
    (one device sync per model evaluation). The flow between x0's frames is estimated on every `flow_every`-th call
    in the window and reused in between (the layout of x0 changes slowly from one step to the next); the wrapper
    holds those flows, so build one per sampling run.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1] (got {strength}); 0 disables, 0.3-0.5 is a typical value")
    if not 0 <= start < end <= 1:
        raise ValueError(f"need 0 <= start < end <= 1 as fractions of the schedule (got start={start}, end={end})")
    if isinstance(flow_every, bool) or not isinstance(flow_every, int) or flow_every < 1:
        raise ValueError(f"flow_every must be an int >= 1 (got {flow_every!r}); 1 estimates flow at every step")
    if strength == 0:
        return model_fn
    s_hi, s_lo = step_window(sigmas, start, end)
    state: dict = {"calls": 0, "flows": None}

    def smoothed(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x0 = model_fn(x, sigma)
        s = float(sigma.flatten()[0])
        if not s_lo < s <= s_hi + 1e-9:
            return x0
        weight = strength * (s - s_lo) / (s_hi - s_lo)
        if state["calls"] % flow_every == 0 and weight > 0 and _smoothable(x0, skip_first):
            state["flows"] = latent_flows(x0, preview=preview, skip_first=skip_first, flow_cfg=flow_cfg)
        state["calls"] += 1
        return smooth_x0(x0, weight, preview=preview, low_sigma=low_sigma, skip_first=skip_first, flow_cfg=flow_cfg,
                         flows=state["flows"])

    return smoothed
