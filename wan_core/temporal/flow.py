# Own implementation of classical variational optical flow (no upstream code copied). Method: Horn & Schunck (1981)
# with incremental warping in a Gaussian pyramid, a Charbonnier-weighted data term and a median filter after each
# warp (Sun, Roth & Black, "Secrets of optical flow estimation", CVPR 2010); forward-backward occlusion test with
# the thresholds of Sundaram et al. (ECCV 2010) / Ruder et al. (GCPR 2016). Checked by tests/test_flow.py
# (end-point error on synthetic motions with known ground truth).
"""Dense optical flow in pure torch: backward warping, coarse-to-fine Horn-Schunck, occlusion masks.

Conventions used throughout ``wan_core.temporal``:

* images are ``[N, C, H, W]`` float tensors (any C; 0..1 intensities are assumed by the default parameters);
* a flow ``f_ab`` is ``[N, 2, H, W]`` in pixels, channel 0 = x (right), channel 1 = y (down), defined on the pixel
  grid of image ``a``: ``a(p) ~ b(p + f_ab(p))``;
* ``warp(b, f_ab)`` samples ``b`` at ``p + f_ab(p)`` and therefore returns an estimate of ``a``.

Everything follows the device and dtype of the input; nothing here picks a device.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = [
    "FlowConfig",
    "warp",
    "pixel_grid",
    "estimate_flow",
    "bidirectional_flow",
    "consecutive_flows",
    "occlusion_mask",
    "endpoint_error",
]


@dataclass(frozen=True)
class FlowConfig:
    """Parameters of the coarse-to-fine Horn-Schunck solver (defaults tuned on 0..1 intensities)."""

    alpha: float = 0.05  # smoothness weight; larger = smoother flow (HS lambda = alpha**2)
    warps: int = 3  # re-linearisations (warps) per pyramid level
    iterations: int = 30  # Jacobi sweeps per warp
    scale: float = 0.5  # pyramid downscale factor between levels
    min_size: int = 8  # coarsest level's shorter side, in pixels
    median: int = 5  # separable median window (1 = off, 3, 5) applied to the flow after each warp
    charbonnier_eps: float = 0.02  # robust data term: weight eps / sqrt(r^2 + eps^2); 0 = quadratic
    reweight_every: int = 5  # Jacobi sweeps between updates of the robust weights

    def __post_init__(self):
        if not self.alpha > 0:
            raise ValueError(f"FlowConfig.alpha must be > 0 (got {self.alpha}); try 0.05 for 0..1 images")
        if self.warps < 1 or self.iterations < 1:
            raise ValueError(
                f"FlowConfig.warps and .iterations must be >= 1 (got {self.warps}, {self.iterations}); try 3 and 30"
            )
        if not 0.3 <= self.scale <= 0.9:
            raise ValueError(f"FlowConfig.scale must be in [0.3, 0.9] (got {self.scale}); try 0.5")
        if self.min_size < 4:
            raise ValueError(f"FlowConfig.min_size must be >= 4 pixels (got {self.min_size}); try 8")
        if self.median not in (1, 3, 5):
            raise ValueError(f"FlowConfig.median must be 1 (off), 3 or 5 (got {self.median}); try 5")
        if self.reweight_every < 1:
            raise ValueError(f"FlowConfig.reweight_every must be >= 1 (got {self.reweight_every}); try 5")
        if self.charbonnier_eps < 0:
            raise ValueError(f"FlowConfig.charbonnier_eps must be >= 0 (got {self.charbonnier_eps}); try 0.02")


def _check_image(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be [N, C, H, W] (got shape {tuple(x.shape)}); add a batch axis with x[None]")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels (got {tuple(x.shape[-2:])})")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (got {x.dtype}); convert with x.float() / 255")


def pixel_grid(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates [N, 2, H, W] (x, y) on like's device/dtype."""
    ys = torch.arange(h, device=like.device, dtype=like.dtype)
    xs = torch.arange(w, device=like.device, dtype=like.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
    return torch.stack((gx, gy), dim=0).expand(n, 2, h, w)  # [N, 2, H, W]


def warp(img: torch.Tensor, flow: torch.Tensor, *, padding: str = "border") -> torch.Tensor:
    """Backward warp: out(p) = img(p + flow(p)), bilinear, pixel-centre convention (align_corners=True).

    img [N, C, H, W], flow [N, 2, H, W] in pixels (x, y). ``padding`` is a grid_sample padding mode
    ("border" repeats edge pixels, "zeros" returns 0 outside, "reflection").
    """
    _check_image(img, "img")
    if flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[-2:] != img.shape[-2:] or flow.shape[0] != img.shape[0]:
        raise ValueError(
            f"flow must be [N, 2, H, W] matching img {tuple(img.shape)} (got {tuple(flow.shape)})"
        )
    n, _, h, w = img.shape
    pos = pixel_grid(n, h, w, flow) + flow  # [N, 2, H, W] absolute sample positions
    gx = pos[:, 0] * (2.0 / (w - 1)) - 1.0  # [N, H, W] in -1..1
    gy = pos[:, 1] * (2.0 / (h - 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(img.dtype)  # [N, H, W, 2] as grid_sample wants
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def _inside(flow: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """[N, 1, H, W] bool: p + flow(p) lands inside the image (shrunk by margin pixels)."""
    n, _, h, w = flow.shape
    pos = pixel_grid(n, h, w, flow) + flow  # [N, 2, H, W]
    ok_x = (pos[:, 0] >= -margin) & (pos[:, 0] <= w - 1 + margin)
    ok_y = (pos[:, 1] >= -margin) & (pos[:, 1] <= h - 1 + margin)
    return (ok_x & ok_y)[:, None]  # [N, 1, H, W]


def _gradients(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Five-point central differences (d/dx, d/dy) with replicated borders, each [N, C, H, W].

    (f(x-2) - 8 f(x-1) + 8 f(x+1) - f(x+2)) / 12 as shifted slices of the padded image (on CPU several times faster
    than a depthwise conv2d)."""
    h, w = img.shape[-2:]
    p = F.pad(img, (2, 2, 0, 0), mode="replicate")
    gx = (p[..., 3:w + 3] - p[..., 1:w + 1]).mul_(8.0).add_(p[..., :w]).sub_(p[..., 4:w + 4]).div_(12.0)
    p = F.pad(img, (0, 0, 2, 2), mode="replicate")
    gy = (p[..., 3:h + 3, :] - p[..., 1:h + 1, :]).mul_(8.0).add_(p[..., :h, :]).sub_(p[..., 4:h + 4, :]).div_(12.0)
    return gx, gy


def _neighbour_mean(flow: torch.Tensor) -> torch.Tensor:
    """Horn-Schunck neighbourhood average (weights 1/6 edge, 1/12 corner), replicated borders; [N, 2, H, W].

    The kernel [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is the separable [1, 2, 1] x [1, 2, 1] minus 4x the centre,
    done with shifted slices (much faster on CPU than a depthwise conv).
    """
    p = F.pad(flow, (1, 1, 1, 1), mode="replicate")  # [N, 2, H+2, W+2]
    rows = (p[..., :, :-2] + p[..., :, 2:]).add_(p[..., :, 1:-1], alpha=2)  # [N, 2, H+2, W]
    both = (rows[..., :-2, :] + rows[..., 2:, :]).add_(rows[..., 1:-1, :], alpha=2)  # [N, 2, H, W]
    return both.sub_(flow, alpha=4).div_(12.0)


def _median3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def _median_1d(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Median over a window of 3 or 5 along dim (-1 or -2) with replicated borders, by min/max networks."""
    r = size // 2
    pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
    p = F.pad(x, pad, mode="replicate")
    n = x.shape[dim]
    v = [p.narrow(dim, k, n) for k in range(size)]  # shifted views, each shaped like x
    if size == 3:
        return _median3(*v)
    a, b, c, d, e = v  # median of 5 = median3(e, max(min(a,b), min(c,d)), min(max(a,b), max(c,d)))
    lo = torch.maximum(torch.minimum(a, b), torch.minimum(c, d))
    hi = torch.minimum(torch.maximum(a, b), torch.maximum(c, d))
    return _median3(e, lo, hi)


def _median(flow: torch.Tensor, size: int) -> torch.Tensor:
    """Separable size x size median (rows, then columns) of each flow component; [N, 2, H, W].

    A cheap stand-in for the full 2-D window median with the same role: removing isolated outliers after each
    warp while keeping motion edges.
    """
    if size <= 1:
        return flow
    return _median_1d(_median_1d(flow, size, -1), size, -2)


def _pyramid_sizes(h: int, w: int, cfg: FlowConfig) -> list[tuple[int, int]]:
    """Level sizes, finest first, down to a shorter side of about cfg.min_size."""
    sizes = [(h, w)]
    while min(sizes[-1]) * cfg.scale >= cfg.min_size:
        ph, pw = sizes[-1]
        sizes.append((max(2, round(ph * cfg.scale)), max(2, round(pw * cfg.scale))))
    return sizes


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    shrinking = size[0] < x.shape[-2]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def _resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample a flow field to size and rescale its vectors to the new pixel units."""
    h0, w0 = flow.shape[-2:]
    out = _resize(flow, size)
    sx = (size[1] - 1) / max(w0 - 1, 1)
    sy = (size[0] - 1) / max(h0 - 1, 1)
    return out * torch.tensor([sx, sy], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)


def _refine_level(i0: torch.Tensor, i1: torch.Tensor, flow: torch.Tensor, cfg: FlowConfig) -> torch.Tensor:
    """Warped Horn-Schunck at one pyramid level; i0, i1 [N, C, H, W], flow [N, 2, H, W] -> refined flow."""
    a2 = cfg.alpha**2
    g0x, g0y = _gradients(i0)
    for _ in range(cfg.warps):
        flow0 = flow
        i1w = warp(i1, flow0)
        g1x, g1y = _gradients(i1w)
        ix, iy = 0.5 * (g0x + g1x), 0.5 * (g0y + g1y)  # averaged derivatives, [N, C, H, W]
        it = i1w - i0
        inside = _inside(flow0).to(i0.dtype)  # [N, 1, H, W]: samples off the image carry no data
        du0, dv0 = flow0[:, :1], flow0[:, 1:]
        ixx, ixy, iyy, ixt, iyt = ix * ix, ix * iy, iy * iy, ix * it, iy * it  # [N, C, H, W] each
        for sweep in range(cfg.iterations):
            if sweep % cfg.reweight_every == 0:  # robust weights and the per-pixel 2x2 system, held for a few sweeps
                if cfg.charbonnier_eps > 0:
                    d = flow - flow0  # increment [N, 2, H, W]
                    r = it + ix * d[:, :1] + iy * d[:, 1:]  # linearised residual per channel
                    wgt = cfg.charbonnier_eps * torch.rsqrt(r * r + cfg.charbonnier_eps**2) * inside
                else:
                    wgt = inside
                j11 = (wgt * ixx).sum(1, keepdim=True) + a2  # (J + a2 I) entries [N, 1, H, W]
                j12 = (wgt * ixy).sum(1, keepdim=True)
                j22 = (wgt * iyy).sum(1, keepdim=True) + a2
                b1 = (wgt * ixt).sum(1, keepdim=True) + a2 * du0
                b2 = (wgt * iyt).sum(1, keepdim=True) + a2 * dv0
                inv = 1.0 / (j11 * j22 - j12 * j12)
                p11, p12, p22 = j22 * inv, j12 * inv, j11 * inv  # inverse of the 2x2 system
            # Solve (J + a2 I) (w - w0) = a2 (avg - w0) - b per pixel for the full flow w.
            r = _neighbour_mean(flow).mul_(a2)
            r1, r2 = r[:, :1].sub_(b1), r[:, 1:].sub_(b2)  # views of r
            step = torch.cat((p11 * r1, p22 * r2), dim=1)
            step[:, :1].addcmul_(p12, r2, value=-1.0)
            step[:, 1:].addcmul_(p12, r1, value=-1.0)
            flow = step.add_(flow0)
        flow = _median(flow, cfg.median)
    return flow


def estimate_flow(
    img0: torch.Tensor, img1: torch.Tensor, cfg: FlowConfig = FlowConfig(), *, init: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense flow f01 [N, 2, H, W] in pixels such that img0(p) ~ img1(p + f01(p)).

    img0, img1 [N, C, H, W] float (0..1 intensities for the default parameters). ``init`` is an optional starting
    flow [N, 2, H, W] (e.g. the previous pair's), applied at the coarsest level.
    """
    _check_image(img0, "img0")
    _check_image(img1, "img1")
    if img0.shape != img1.shape:
        raise ValueError(f"img0 and img1 must have the same shape (got {tuple(img0.shape)} and {tuple(img1.shape)})")
    n, _, h, w = img0.shape
    work = img0.dtype if img0.dtype in (torch.float32, torch.float64) else torch.float32  # fp16 is too coarse
    i0, i1 = img0.to(work), img1.to(work)
    sizes = _pyramid_sizes(h, w, cfg)
    coarse = sizes[-1]
    if init is None:
        flow = torch.zeros(n, 2, *coarse, device=img0.device, dtype=work)
    else:
        flow = _resize_flow(init.to(work), coarse)
    for size in reversed(sizes):
        flow = _resize_flow(flow, size)
        flow = _refine_level(_resize(i0, size), _resize(i1, size), flow, cfg)
    return flow.to(img0.dtype)


def bidirectional_flow(
    img0: torch.Tensor, img1: torch.Tensor, cfg: FlowConfig = FlowConfig(), *, max_side: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f01, f10), each [N, 2, H, W], estimated in one batched solve.

    With max_side, frames whose longer side exceeds it are solved at that size (antialiased) and the flows are
    upsampled and rescaled to full-size pixels."""
    h, w = img0.shape[-2:]
    if max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        size = (max(2, round(h * s)), max(2, round(w * s)))
        small = lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)  # noqa: E731
        f01, f10 = bidirectional_flow(small(img0), small(img1), cfg)
        scale = torch.tensor([(w - 1) / (size[1] - 1), (h - 1) / (size[0] - 1)], device=img0.device, dtype=f01.dtype)
        up = lambda f: F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False) * scale.view(1, 2, 1, 1)  # noqa: E731
        return up(f01), up(f10)
    both = estimate_flow(torch.cat((img0, img1)), torch.cat((img1, img0)), cfg)  # [2N, 2, H, W]
    n = img0.shape[0]
    return both[:n], both[n:]


def consecutive_flows(frames: torch.Tensor, cfg: FlowConfig = FlowConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward f_{t->t+1} and backward f_{t+1->t} flows of a clip frames [T, C, H, W]; each [T-1, 2, H, W]."""
    _check_image(frames, "frames")
    if frames.shape[0] < 2:
        raise ValueError(f"need at least 2 frames for flow (got {frames.shape[0]})")
    return bidirectional_flow(frames[:-1], frames[1:], cfg)


def occlusion_mask(
    flow_ab: torch.Tensor, flow_ba: torch.Tensor, *, motion_boundaries: bool = False
) -> torch.Tensor:
    """Forward-backward consistency on the grid of frame a: [N, 1, H, W] float, 1 = reliable, 0 = occluded.

    A pixel is occluded (Sundaram 2010, Ruder 2016) when |f_ab + f_ba(p + f_ab)|^2 > 0.01 (|f_ab|^2 +
    |f_ba(p + f_ab)|^2) + 0.5, or when p + f_ab leaves the image. With motion_boundaries=True pixels where
    |grad f_ab|^2 > 0.01 |f_ab|^2 + 0.002 are also marked (as Lai et al. 2018 do for the warping error).
    """
    if flow_ab.shape != flow_ba.shape or flow_ab.ndim != 4 or flow_ab.shape[1] != 2:
        raise ValueError(
            f"flows must both be [N, 2, H, W] (got {tuple(flow_ab.shape)} and {tuple(flow_ba.shape)})"
        )
    back = warp(flow_ba, flow_ab)  # f_ba sampled at p + f_ab(p), [N, 2, H, W]
    mag = lambda f: (f * f).sum(1, keepdim=True)  # noqa: E731  squared length [N, 1, H, W]
    bad = mag(flow_ab + back) > 0.01 * (mag(flow_ab) + mag(back)) + 0.5
    bad = bad | ~_inside(flow_ab)
    if motion_boundaries:
        gx, gy = _gradients(flow_ab)  # [N, 2, H, W] each
        bad = bad | ((gx * gx + gy * gy).sum(1, keepdim=True) > 0.01 * mag(flow_ab) + 0.002)
    return (~bad).to(flow_ab.dtype)


def endpoint_error(flow: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean end-point error |flow - reference| in pixels (scalar), optionally over mask [N, 1, H, W] > 0."""
    if flow.shape != reference.shape:
        raise ValueError(f"flow and reference must match (got {tuple(flow.shape)} and {tuple(reference.shape)})")
    err = (flow - reference).pow(2).sum(1, keepdim=True).sqrt()  # [N, 1, H, W]
    if mask is None:
        return err.mean()
    m = (mask > 0).to(err.dtype).expand_as(err)
    if m.sum() == 0:
        raise ValueError("endpoint_error mask selects no pixel; pass mask=None or a non-empty mask")
    return (err * m).sum() / m.sum()
