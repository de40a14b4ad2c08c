"""Synthetic clips with known motion for the temporal tests and benchmarks (generated, nothing downloaded)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def texture(h: int, w: int, *, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Multi-octave smooth random texture [1, C, H, W] in 0..1."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(1, channels, h, w)
    for cells, amp in ((4, 1.0), (8, 0.7), (16, 0.5), (32, 0.35), (64, 0.25), (128, 0.15)):
        noise = torch.rand(1, channels, cells, cells, generator=g)
        out += amp * F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    return (out - out.amin()) / (out.amax() - out.amin())


def render(tex: torch.Tensor, affine, h: int, w: int, *, supersample: int = 4) -> torch.Tensor:
    """Camera image [1, C, h, w]: pixel p shows tex at affine(p) (2x3, output-pixel units), box-filtered."""
    ss = supersample
    ys, xs = torch.meshgrid((torch.arange(h * ss) + 0.5) / ss - 0.5, (torch.arange(w * ss) + 0.5) / ss - 0.5,
                            indexing="ij")  # sample positions [h*ss, w*ss]
    (a, b, c), (d, e, f) = affine
    x, y = a * xs + b * ys + c, d * xs + e * ys + f
    # the texture spans output pixels [-0.1 w, 1.1 w] x [-0.1 h, 1.1 h]
    grid = torch.stack(((x + 0.1 * w) / (1.2 * w) * 2 - 1, (y + 0.1 * h) / (1.2 * h) * 2 - 1), dim=-1)[None]
    img = F.grid_sample(tex, grid, mode="bicubic", align_corners=False, padding_mode="reflection")
    return F.avg_pool2d(img, ss).clamp(0, 1)  # [1, C, h, w]


def motion_affine(kind: str, h: int, w: int, amount: float = 1.0):
    """2x3 affine A with frame0(p) = frame1(A p) for a named camera motion, scaled by amount."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    if kind == "translation":
        return [[1, 0, 3.4 * amount], [0, 1, -2.1 * amount]]
    if kind == "large_translation":
        return [[1, 0, 9.3 * amount], [0, 1, 5.2 * amount]]
    if kind == "zoom":
        s = 1 + 0.06 * amount
        return [[s, 0, cx * (1 - s)], [0, s, cy * (1 - s)]]
    if kind == "rotation":
        a = math.radians(4 * amount)
        co, si = math.cos(a), math.sin(a)
        return [[co, -si, cx - co * cx + si * cy], [si, co, cy - si * cx - co * cy]]
    raise ValueError(f"unknown motion {kind!r}")


def affine_flow(affine, h: int, w: int) -> torch.Tensor:
    """Ground-truth flow [1, 2, h, w] of p -> A p."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    (a, b, c), (d, e, f) = affine
    return torch.stack((a * xs + b * ys + c - xs, d * xs + e * ys + f - ys))[None]


def camera_pair(kind: str, h: int = 96, w: int = 128, noise: float = 0.01, seed: int = 1):
    """(img0, img1, f01): two renders of one texture under a known camera motion, with sensor noise."""
    tex = texture(384, 384, seed=seed)
    affine = motion_affine(kind, h, w)
    img0 = render(tex, affine, h, w)
    img1 = render(tex, [[1, 0, 0], [0, 1, 0]], h, w)
    g = torch.Generator().manual_seed(seed + 100)
    img0 = (img0 + noise * torch.randn(img0.shape, generator=g)).clamp(0, 1)
    img1 = (img1 + noise * torch.randn(img1.shape, generator=g)).clamp(0, 1)
    return img0, img1, affine_flow(affine, h, w)


def two_objects(h: int = 96, w: int = 128, step: int = 4, frames: int = 2, seed: int = 3):
    """Two textured squares moving apart (left one by -step px/frame, right one by +step) over a static background.

    Returns (clip [T, 3, h, w], f01 [1, 2, h, w] ground truth of the first pair, revealed [1, 1, h, w] = background
    pixels of frame 1 that frame 0 hid, boxes of frame 0 as (y0, y1, x0, x1)).
    """
    bg = texture(h, w, seed=seed)[0]
    obj_a = texture(32, 32, seed=seed + 1)[0]
    obj_b = texture(32, 32, seed=seed + 2)[0]
    y0, xa, xb = h // 2 - 16, w // 2 - 34, w // 2 + 2
    clip = []
    for t in range(frames):
        img = bg.clone()
        img[:, y0:y0 + 32, xa - t * step:xa - t * step + 32] = obj_a
        img[:, y0:y0 + 32, xb + t * step:xb + t * step + 32] = obj_b
        clip.append(img)
    f01 = torch.zeros(1, 2, h, w)
    f01[0, 0, y0:y0 + 32, xa:xa + 32] = -step
    f01[0, 0, y0:y0 + 32, xb:xb + 32] = step
    covered0 = torch.zeros(1, 1, h, w, dtype=torch.bool)
    covered0[..., y0:y0 + 32, xa:xa + 32] = True
    covered0[..., y0:y0 + 32, xb:xb + 32] = True
    covered1 = torch.zeros_like(covered0)
    covered1[..., y0:y0 + 32, xa - step:xa - step + 32] = True
    covered1[..., y0:y0 + 32, xb + step:xb + step + 32] = True
    revealed = covered0 & ~covered1
    return torch.stack(clip), f01, revealed, (y0, y0 + 32, xa, xb + 32)


def translating_clip(frames: int, h: int = 64, w: int = 96, dx: float = 2.0, dy: float = 1.0, seed: int = 7):
    """A textured pattern panning by (dx, dy) px per frame: clip [T, H, W, 3] in 0..1 (the IMAGE layout)."""
    tex = texture(384, 384, seed=seed)
    clip = [render(tex, [[1, 0, dx * t], [0, 1, dy * t]], h, w)[0] for t in range(frames)]
    return torch.stack(clip).permute(0, 2, 3, 1).contiguous()  # [T, C, H, W] -> [T, H, W, C]


def one_thread():
    """Generator for a module fixture: run with one intra-op thread, then restore.

    These tests run many small kernels; on a shared 2-core machine OpenMP thread contention makes them
    10-20x slower than single-threaded.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
