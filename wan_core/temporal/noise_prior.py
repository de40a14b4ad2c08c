# Own implementation. Idea: the "mixed" video noise prior of Ge et al., "Preserve Your Own Correlation" (ICCV 2023),
# used here training-free on the initial noise only. Checked by tests/test_temporal_noise.py.
"""Initial noise with a share of its variance common to all latent frames (a temporally correlated noise prior).

``shared_frame_noise(noise, share)`` splits i.i.d. Gaussian noise [B, C, T, H, W] into its mean over frames and the
per-frame residual (independent Gaussians) and rescales the two so that every value stays N(0, 1) while any two
frames correlate by ``share``. Deterministic: the same noise in gives the same noise out, so a seed still fixes the
video. ``share`` 0 returns the input unchanged.
"""
from __future__ import annotations

import math

import torch

__all__ = ["shared_frame_noise", "high_band"]


def high_band(noise: torch.Tensor, cutoff: float) -> torch.Tensor:
    """The part of noise [..., H, W] above spatial frequency `cutoff` (fraction of Nyquist, radial; an ideal FFT
    filter, so for white noise it is independent of the rest, noise - high_band)."""
    h, w = noise.shape[-2:]
    fy = torch.fft.fftfreq(h, device=noise.device).abs() * 2  # 0..1 of Nyquist
    fx = torch.fft.rfftfreq(w, device=noise.device) * 2
    keep = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() >= cutoff  # [H, W//2+1]
    return torch.fft.irfft2(torch.fft.rfft2(noise.float()) * keep, s=(h, w)).to(noise.dtype)


def shared_frame_noise(noise: torch.Tensor, share: float, band: float = 0.0) -> torch.Tensor:
    """noise [B, C, T, H, W], i.i.d. N(0, 1) -> same shape, each value N(0, 1), frame-to-frame correlation `share`.

    band > 0 correlates only the spatial frequencies at or above `band` (fraction of Nyquist): fine texture starts
    alike in every frame while the coarse layout, hence where objects go, keeps independent noise per frame."""
    if not 0.0 <= band < 1.0:
        raise ValueError(f"band must be in [0, 1) (got {band}); it is the spatial frequency, as a fraction of "
                         "Nyquist, above which the noise is shared; 0 shares all frequencies")
    if band > 0.0 and share > 0.0:
        high = high_band(noise, band)
        return noise - high + shared_frame_noise(high, share)  # linear mixing keeps each band's variance
    if not 0.0 <= share < 1.0:
        raise ValueError(f"share must be in [0, 1) (got {share}); 0 disables, 0.2-0.5 is typical, 1 would freeze "
                         "every frame to the same noise")
    if noise.ndim != 5:
        raise ValueError(f"noise must be [B, C, T, H, W] (got shape {tuple(noise.shape)})")
    t = noise.shape[2]
    if share == 0.0 or t < 2:
        return noise
    work = noise.float()
    mean = work.mean(dim=2, keepdim=True)  # N(0, 1/T), independent of the residual
    resid = work - mean  # each value N(0, 1 - 1/T); two frames' residuals correlate by -1/(T-1)
    # out = a * mean + b * resid has variance a^2/T + b^2 (1 - 1/T) and cross-frame covariance a^2/T - b^2/T; a
    # variance share v = a^2/T of the mean gives correlation v - (1 - v)/(T - 1), so v is solved for `share`.
    v = (share * (t - 1) + 1.0) / t
    out = mean * math.sqrt(v * t) + resid * math.sqrt((1.0 - v) / (1.0 - 1.0 / t))
    return out.to(noise.dtype)
