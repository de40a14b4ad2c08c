"""Latent initialisation for text-to-video: aspect presets, size tiers, padding to the model grid and the crop back.

Any requested size works: the canvas is padded up to the model's grid (VAE stride x DiT patch = 32 px for TI2V-5B),
the crop box is recorded next to the latent, and decoded frames are cropped back to exactly the requested size.
Frame counts snap to 4k+1 (the causal VAE's rule) with a note the caller can show.

LATENT layout (ComfyUI's native dict): ``{"samples": [B, 48, T', Hp/16, Wp/16]}`` in raw Wan2.2-VAE space, plus
``CROP_KEY: (top, left, height, width)`` in pixels of the padded canvas. With a start image (image-to-video,
`init_image_latent`) the first latent frame holds the image latent and ``noise_mask`` [B, 1, T', h, w] is 0 there,
1 elsewhere: ComfyUI's own convention, so native KSampler samples it as Wan22ImageToVideoLatent's output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from .geometry import MAX_FRAMES, MAX_SIDE, WAN22_VAE, VaeGeometry, latent_shape, nearest_frames, size_multiple

CROP_KEY = "wan_crop"  # LATENT dict key holding (top, left, height, width) of the requested picture

# aspect name -> width / height
ASPECTS: dict[str, float] = {
    "16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0, "4:3": 4 / 3, "3:4": 3 / 4, "21:9": 21 / 9, "2.39:1": 2.39,
}
# tier name -> pixel area (720p is the official TI2V-5B 1280x704; 480p is Wan's 832x480)
TIERS: dict[str, int] = {"480p": 832 * 480, "720p": 1280 * 704}


@dataclass(frozen=True)
class LatentPlan:
    """A requested video and the padded canvas the model generates."""

    width: int  # requested picture
    height: int
    frames: int  # 4k+1
    padded_width: int  # canvas, multiples of the model grid
    padded_height: int
    note: str = ""  # human-readable adjustments (frame snapping, padding), empty when none

    @property
    def crop(self) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the requested picture inside the canvas (centred)."""
        return ((self.padded_height - self.height) // 2, (self.padded_width - self.width) // 2,
                self.height, self.width)


def preset_size(aspect: str, tier: str, multiple: int = 32) -> tuple[int, int]:
    """(width, height) for an aspect preset at a size tier, both multiples of `multiple`, area close to the tier's."""
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; choose one of {list(ASPECTS)}")
    if tier not in TIERS:
        raise ValueError(f"unknown size tier {tier!r}; choose one of {list(TIERS)} (or give width and height)")
    ratio = ASPECTS[aspect]
    height = math.sqrt(TIERS[tier] / ratio)
    width = height * ratio
    return (max(multiple, round(width / multiple) * multiple), max(multiple, round(height / multiple) * multiple))


def frames_from_seconds(seconds: float, fps: float) -> int:
    """Frame count for a duration: seconds * fps frames of motion plus the first frame, snapped to 4k+1."""
    if not (seconds > 0 and fps > 0):
        raise ValueError(f"seconds and fps must be positive (got seconds={seconds}, fps={fps})")
    return nearest_frames(round(seconds * fps) + 1)


def plan_latent(width: int, height: int, frames: int, *, vae: VaeGeometry = WAN22_VAE,
                patch: tuple[int, int, int] = (1, 2, 2)) -> LatentPlan:
    """Pad width/height up to the model grid and snap frames to 4k+1; the plan records both adjustments."""
    for name, v in (("width", width), ("height", height), ("frames", frames)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer (got {v!r})")
    m = size_multiple(vae, patch)
    if max(width, height) > MAX_SIDE:
        raise ValueError(f"width and height must be at most {MAX_SIDE} pixels (got {width}x{height})")
    if frames > MAX_FRAMES:
        raise ValueError(f"frames must be at most {MAX_FRAMES} (got {frames}); try {MAX_FRAMES}")
    pw, ph = -(-width // m) * m, -(-height // m) * m
    snapped = nearest_frames(frames)
    notes = []
    if snapped != frames:
        notes.append(f"frames {frames} -> {snapped} (the Wan VAE needs 4k+1 frames)")
    if (pw, ph) != (width, height):
        notes.append(f"canvas {pw}x{ph} (multiples of {m}), cropped back to {width}x{height} after decode")
    return LatentPlan(width, height, snapped, pw, ph, "; ".join(notes))


def init_latent(plan: LatentPlan, batch_size: int = 1, *, vae: VaeGeometry = WAN22_VAE) -> dict:
    """An empty (all-zero, raw VAE space) native LATENT dict for the plan, with the crop recorded."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
    shape = latent_shape(plan.frames, plan.padded_height, plan.padded_width, vae, batch=batch_size)
    return {"samples": torch.zeros(shape), CROP_KEY: plan.crop}


def init_image_latent(plan: LatentPlan, batch_size: int, image, vae, *, geometry: VaeGeometry = WAN22_VAE
                      ) -> tuple[dict, str]:
    """An image-to-video LATENT dict for the plan: the start image resized (LANCZOS) and centre-cropped to the requested
    picture, edge-padded to the canvas, VAE-encoded into the first latent frame, with noise_mask and crop recorded.

    image: one start image (ComfyUI IMAGE [1, H, W, 3] in 0..1, a Pillow image or an array; a batch of several is
    refused); vae: a WanVAE on the device to encode on. Returns (latent, note on what was adjusted or "")."""
    from .i2v import noise_mask, start_latent
    from .image import encode_image, pad_to_canvas, prepare_image

    empty = init_latent(plan, batch_size, vae=geometry)
    pixels, note = prepare_image(image, plan.width, plan.height)  # [1, 3, 1, h, w] in -1..1
    pixels = pad_to_canvas(pixels, plan.crop, (plan.padded_height, plan.padded_width))
    image_latent = encode_image(vae, pixels)  # [1, 48, 1, Hp/16, Wp/16] raw
    b, _, t, h, w = empty["samples"].shape
    latent = {"samples": start_latent(image_latent, t, b), "noise_mask": noise_mask(b, t, h, w), CROP_KEY: plan.crop}
    return latent, note


def latent_crop(latent: dict, *, vae: VaeGeometry = WAN22_VAE) -> tuple[int, int, int, int]:
    """The recorded crop of a LATENT dict; a latent without one (e.g. made by a native node) keeps its full size."""
    samples = latent["samples"]
    full = (0, 0, samples.shape[-2] * vae.stride[1], samples.shape[-1] * vae.stride[2])
    crop = latent.get(CROP_KEY, full)
    top, left, h, w = (int(v) for v in crop)
    if top < 0 or left < 0 or top + h > full[2] or left + w > full[3]:
        raise ValueError(f"LATENT crop {crop} does not fit the {full[3]}x{full[2]} canvas of its samples; "
                         "was the latent resized after the latent init node? Re-create it with the latent init node")
    return top, left, h, w


def video_to_images(video: torch.Tensor, crop: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Decoded video [B, 3, T, H, W] in -1..1 -> ComfyUI IMAGE [B*T, h, w, 3] in 0..1, cropped to (top, left, h, w)."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected a decoded video [B, 3, T, H, W], got shape {tuple(video.shape)}")
    if crop is not None:
        top, left, h, w = crop
        video = video[..., top:top + h, left:left + w]
    images = rearrange(video, "b c t h w -> (b t) h w c")
    return ((images.float() + 1.0) * 0.5).clamp(0.0, 1.0)
