"""Cheap RGB previews of latents during sampling (no VAE).

With a host-supplied linear projection (`factors` [C, 3], `bias` [3], e.g. the ones a host application ships for the
Wan2.2 latent space) the preview is x @ factors + bias. Without one, the three principal components of the latent
frame itself are shown, which needs no data about the VAE and works for any latent width (tiny demo VAEs too).
"""
from __future__ import annotations

import torch
from einops import rearrange


def latent_to_rgb(latent: torch.Tensor, factors: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                  *, frame: int = 0) -> torch.Tensor:
    """One preview frame of latent [B, C, T, h, w] (first sample) -> RGB [h, w, 3] float in 0..1 on the latent's device."""
    if latent.ndim != 5:
        raise ValueError(f"expected a latent [B, C, T, h, w], got shape {tuple(latent.shape)}")
    x = rearrange(latent[0, :, frame].float(), "c h w -> h w c")
    if factors is not None:
        factors = factors.to(device=x.device, dtype=x.dtype)
        if factors.shape != (x.shape[-1], 3):
            raise ValueError(f"preview factors must be [{x.shape[-1]}, 3] for this latent, got {tuple(factors.shape)}")
        rgb = x @ factors
        if bias is not None:
            rgb = rgb + bias.to(device=x.device, dtype=x.dtype)
        return ((rgb + 1.0) * 0.5).clamp(0.0, 1.0)
    return _pca_rgb(x)


def _pca_rgb(x: torch.Tensor) -> torch.Tensor:
    """Project [h, w, C] onto its top-3 principal components, each stretched to 0..1."""
    h, w, c = x.shape
    flat = rearrange(x, "h w c -> (h w) c")
    flat = flat - flat.mean(dim=0, keepdim=True)
    if flat.shape[0] < 2 or c < 1:
        return torch.full((h, w, 3), 0.5, device=x.device)
    q = min(3, c)
    cov = flat.T @ flat  # [C, C]; eigh is deterministic (pca_lowrank would draw from the global RNG)
    _, vecs = torch.linalg.eigh(cov.double())  # ascending eigenvalues
    v = vecs[:, -q:].flip(-1).to(flat.dtype)  # [C, q], largest first
    proj = flat @ v  # [(h w), q]
    if q < 3:
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], 3 - q)], dim=1)
    lo, hi = proj.amin(dim=0, keepdim=True), proj.amax(dim=0, keepdim=True)
    proj = (proj - lo) / (hi - lo).clamp_min(1e-6)
    return rearrange(proj, "(h w) c -> h w c", h=h, w=w)


def rgb_to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """[h, w, 3] float 0..1 -> uint8 on the CPU (for image encoders)."""
    return (rgb.clamp(0.0, 1.0) * 255.0).round().to(device="cpu", dtype=torch.uint8)
