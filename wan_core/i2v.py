"""Image-to-video conditioning in latent space: the first latent frame(s) fixed to the image latent, timestep 0 there.

The method is the official TI2V-5B `i2v` loop (Wan-Video/Wan2.2@42bf4cf wan/textimage2video.py, Apache-2.0; read,
not copied; diffusers `WanImageToVideoPipeline(expand_timesteps=True)` and ComfyUI `Wan22ImageToVideoLatent` +
`WAN22.process_timestep` do the same): the latent starts as image latent on frame 0 and noise elsewhere, the DiT
gets per-token timesteps [B, L] that are 0 on the image's tokens and t on the others, and the image latent is
imposed again after every step. Samplers stay pure (P3): `image_model_fn` imposes the image on the latent every
model evaluation sees and on its x0 estimate, and `sample_latents` imposes it on the result. A sampler step is
elementwise, so the frames after the image follow exactly the trajectory of the official per-step re-imposition
(tests/test_i2v_parity.py checks it against such a loop and against diffusers).

ComfyUI convention (LATENT dict): `noise_mask` [B, 1, T, h, w], 0 on the image's latent frames and 1 elsewhere;
`samples` hold the raw image latent on those frames.
"""
from __future__ import annotations

from typing import Callable

import torch

from .image import SEVERAL_FRAMES
from .latent_format import WAN22_MEAN

NOISE_MASK = "noise_mask"  # ComfyUI's LATENT key


def impose(x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """x [B, C, T, h, w] with its first Ti frames replaced by image [1 or B, C, Ti, h, w] (a new tensor)."""
    ti = image.shape[2]
    head = image.to(x.dtype).expand(x.shape[0], -1, -1, -1, -1)
    return torch.cat([head, x[:, :, ti:]], dim=2)


def image_model_fn(model_fn: Callable, image: torch.Tensor) -> Callable:
    """model_fn(x, sigma) that sees x with the image imposed and returns an x0 estimate with the image imposed.

    image: the normalised image latent [1 or B, C, Ti, h, w] (model space)."""
    return lambda x, sigma: impose(model_fn(impose(x, image), sigma), image)


def token_timesteps(t: torch.Tensor, grid: tuple[int, int, int], image_tokens_frames: int) -> torch.Tensor:
    """Per-token timesteps [B, L] (L = F' H' W' tokens in (f h w) order): 0 on the first `image_tokens_frames`
    token frames, t [B] elsewhere (mask * t, as the official loop)."""
    f, h, w = grid
    keep = torch.ones(f, h * w, dtype=t.dtype, device=t.device)
    keep[:image_tokens_frames] = 0
    return t[:, None] * keep.reshape(1, -1)  # [B, L]


def check_image_latent(image_latent: torch.Tensor, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """Validate a raw image latent [1 or B, C, Ti, h, w] against the latent being sampled; returns it as fp32."""
    b, c, t, h, w = latent_shape
    if image_latent.ndim != 5:
        raise ValueError(f"image_latent must be a raw VAE latent [B, {c}, Ti, {h}, {w}] (got shape "
                         f"{tuple(image_latent.shape)}); encode the start image with the VAE")
    ib, ic, ti, ih, iw = image_latent.shape
    if ic != c or (ih, iw) != (h, w) or ib not in (1, b):
        raise ValueError(f"image latent {tuple(image_latent.shape)} does not fit the video latent "
                         f"{tuple(latent_shape)}: channels, height and width must match and the batch be 1 or {b}; "
                         "encode the start image at the video's size with the same VAE")
    if not 1 <= ti < t:
        raise ValueError(f"image latent has {ti} frames but the video latent {t}; the image must cover fewer latent "
                         f"frames than the video (make the video longer: frames >= 5)")
    if not torch.isfinite(image_latent).all():
        raise ValueError("image latent holds NaN/Inf; check the VAE that encoded the start image")
    return image_latent.float()


def start_latent(image_latent: torch.Tensor, frames: int, batch: int) -> torch.Tensor:
    """Raw LATENT samples [batch, C, frames, h, w]: the image latent on its frames, the latent mean (normalised 0,
    as ComfyUI's Wan22ImageToVideoLatent) on the others."""
    b, c, ti, h, w = image_latent.shape
    mean = torch.tensor(WAN22_MEAN, dtype=torch.float32).view(1, -1, 1, 1, 1) if c == len(WAN22_MEAN) else 0.0
    rest = (torch.zeros(1, c, frames - ti, h, w) + mean).expand(b, -1, -1, -1, -1)
    return torch.cat([image_latent.float().cpu(), rest], dim=2).expand(batch, -1, -1, -1, -1).contiguous()


def noise_mask(batch: int, frames: int, h: int, w: int, image_frames: int = 1) -> torch.Tensor:
    """ComfyUI noise_mask [batch, 1, frames, h, w]: 0 on the image's latent frames (kept), 1 elsewhere (sampled)."""
    mask = torch.ones(batch, 1, frames, h, w)
    mask[:, :, :image_frames] = 0.0
    return mask


def image_frames_from_mask(mask: torch.Tensor, latent_shape: tuple[int, ...]) -> int:
    """The number of leading latent frames a ComfyUI noise_mask keeps (0 = plain text-to-video).

    Accepted: a [B or 1, 1 or C, T, h', w'] mask that is 0 on whole leading latent frames and 1 on every other
    value, as Wan22ImageToVideoLatent and WanT2V Latent Init make. Anything else raises, naming what is wrong."""
    t = latent_shape[2]
    if mask.ndim != 5 or mask.shape[2] != t:
        raise ValueError(f"noise_mask of shape {tuple(mask.shape)} does not fit the video latent "
                         f"{tuple(latent_shape)}: expected [B, 1, {t}, h, w] (one value per latent frame and cell), "
                         "as Wan22ImageToVideoLatent or WanT2V Latent Init make it")
    per_frame = mask.float().transpose(0, 2).reshape(t, -1)  # [T, everything else]
    lo, hi = per_frame.amin(dim=1), per_frame.amax(dim=1)
    if not (torch.equal(lo, hi) and bool(((lo == 0) | (lo == 1)).all())):
        raise ValueError("noise_mask varies inside a latent frame or holds values other than 0 and 1: spatial "
                         "inpainting masks are not supported by the WanT2V sampler (TI2V-5B conditions on whole "
                         "start frames); use native KSampler for inpainting, or Wan22ImageToVideoLatent / WanT2V "
                         "Latent Init for image-to-video")
    keep = (lo == 0).tolist()
    ti = next((i for i, k in enumerate(keep) if not k), t)
    if any(keep[ti:]):
        raise ValueError("noise_mask keeps a latent frame after a sampled one (an end image or middle frames): "
                         "not supported by the released TI2V-5B weights, which condition on the first frame only; "
                         "condition on a start image only")
    if ti == t:
        raise ValueError("noise_mask keeps every latent frame: nothing is left to sample; connect a latent "
                         "whose noise_mask is 1 after the start frame")
    if ti > 1:
        raise ValueError(SEVERAL_FRAMES.format(n=f"{ti} latent frames"))
    return ti
