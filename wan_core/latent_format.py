"""Per-channel statistics of the Wan2.2 VAE latent space (Wan-Video/Wan2.2 wan/modules/vae2_2.py, values only).

Raw VAE latents (what `WanVAE.encode` returns and ComfyUI's LATENT holds) are normalised before the DiT sees them.
"""
from __future__ import annotations

import torch

WAN22_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)


def _stats(z: torch.Tensor, mean, std):
    if z.shape[1] != len(mean):
        raise ValueError(f"latent has {z.shape[1]} channels but the latent statistics have {len(mean)}; "
                         "is this latent from a different VAE (Wan2.1 uses 16 channels, Wan2.2 48)?")
    shape = (1, len(mean)) + (1,) * (z.ndim - 2)
    m = torch.tensor(mean, dtype=torch.float32, device=z.device).view(shape)
    inv_std = 1.0 / torch.tensor(std, dtype=torch.float32, device=z.device).view(shape)
    return m, inv_std


def normalize_latents(z: torch.Tensor, mean=WAN22_MEAN, std=WAN22_STD) -> torch.Tensor:
    """Raw VAE latent [B, C, T, H, W] -> model space: (z - mean) * (1 / std), computed in fp32."""
    m, inv_std = _stats(z, mean, std)
    return ((z.float() - m) * inv_std).to(z.dtype)


def denormalize_latents(z: torch.Tensor, mean=WAN22_MEAN, std=WAN22_STD) -> torch.Tensor:
    """Model space [B, C, T, H, W] -> raw VAE latent: z / (1 / std) + mean (the reference's exact order)."""
    m, inv_std = _stats(z, mean, std)
    return (z.float() / inv_std + m).to(z.dtype)
