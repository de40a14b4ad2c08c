"""A mask code in the demo VAE's latent: the first `channels` latent channels carry the objects' coverage.

Why: in the VAE's learned latent a shape is entangled with its colour. The latent difference between a square and a
circle of the same geometry points in a different direction for every colour (cosine 0.4-0.6 on average between
colours, down to -0.3; ad hoc measurement on the world-v4 VAE), and it is 4-8x smaller than a colour change. So what
the DiT learns about drawing a square in one colour hardly carries over to another, and the blob it draws costs
little in its loss.

With the code, latent channel q * s + r of a latent pixel holds the coverage of its sub-block (q, r) (s x s
sub-blocks of 16 / s pixels each; 16 channels: 4 px sub-blocks), averaged over the frames of the latent frame's
chunk: a low-resolution mask of the objects, the same for every colour, in normalised units
(coverage - MASK_MEAN) / MASK_STD. The encoder learns it (`mask_loss`); the decoder learns to take the objects'
outline from it by seeing, for a share of its inputs, the other channels blurred (`blur_rest`), which keeps their
colours and loses their outline.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

MASK_MEAN, MASK_STD = 0.2, 0.4  # normalised code = (coverage - MASK_MEAN) / MASK_STD: background -0.5, inside 2.0
STRIDE = 16  # the VAE's spatial stride (pixels per latent pixel)


def check_channels(channels: int, z_dim: int) -> int:
    """Sub-blocks per side for a mask code of `channels` channels; a clear error unless it is a square that tiles
    the 16-pixel latent pixel and leaves latent channels for the colours."""
    side = math.isqrt(max(channels, 0))
    if channels <= 0 or side * side != channels or STRIDE % side or channels >= z_dim:
        raise ValueError(f"vae_mask_channels={channels}: use a square number whose root divides {STRIDE} and that "
                         f"is below z_dim {z_dim}: 1, 4 (8 px sub-blocks) or 16 (4 px, the shipped VAE)")
    return side


def chunk_slices(latent_frames: int) -> list[slice]:
    """The video frames each latent frame of the causal VAE encodes: frame 0 alone, then 4k - 3 .. 4k."""
    return [slice(0, 1)] + [slice(4 * k - 3, 4 * k + 1) for k in range(1, latent_frames)]


def mask_target(alpha: torch.Tensor, channels: int) -> torch.Tensor:
    """Coverage video [B, 1, 1 + 4k, H, W] (0..1) -> the code [B, channels, 1 + k, H / 16, W / 16] (normalised).

    Latent frame 0 covers video frame 0, latent frame j the four frames 4j - 3 .. 4j (the causal VAE's chunks)."""
    side = math.isqrt(channels)
    frames = alpha.shape[2]
    if (frames - 1) % 4:
        raise ValueError(f"mask_target: {frames} frames; the causal VAE takes 1 + 4k frames")
    chunks = [alpha[:, :, s].mean(dim=2, keepdim=True) for s in chunk_slices(1 + (frames - 1) // 4)]
    per_frame = torch.cat(chunks, dim=2)  # [B, 1, T', H, W]
    sub = STRIDE // side
    blocks = F.avg_pool3d(per_frame, kernel_size=(1, sub, sub))  # [B, 1, T', H / sub, W / sub]
    code = rearrange(blocks, "b 1 t (h q) (w r) -> b (q r) t h w", q=side, r=side)
    return (code - MASK_MEAN) / MASK_STD


def mask_loss(normalised_mu: torch.Tensor, alpha: torch.Tensor, channels: int) -> torch.Tensor:
    """Mean square error of the first `channels` channels of the normalised latent against `mask_target`."""
    return (normalised_mu[:, :channels] - mask_target(alpha, channels).to(normalised_mu)).pow(2).mean()


def blur_rest(z: torch.Tensor, channels: int, share: float, gen: torch.Generator) -> torch.Tensor:
    """For a random share of the batch rows, blur latent channels `channels`.. spatially (3x3 latent pixels, i.e.
    48 px), so the decoder must take the outline from the mask code. The rows are drawn from `gen`."""
    if share <= 0:
        return z
    rows = (torch.rand(z.shape[0], generator=gen) < share).to(z.device).view(-1, 1, 1, 1, 1)
    rest = z[:, channels:]
    box = lambda x: F.avg_pool3d(F.pad(x, (1, 1, 1, 1)), kernel_size=(1, 3, 3), stride=1)  # noqa: E731
    blurred = box(rest) / box(torch.ones_like(rest[:1, :1]))  # the mean over the neighbours inside the frame
    return torch.cat([z[:, :channels], torch.where(rows, blurred, rest)], dim=1)
