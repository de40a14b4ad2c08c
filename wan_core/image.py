"""Start images for image-to-video: read, convert to RGB, resize and centre-crop to the video size, VAE-encode.

Resampling follows the official TI2V-5B `i2v` (Wan-Video/Wan2.2@42bf4cf wan/textimage2video.py, Apache-2.0; read,
not copied): scale = max(W / w, H / h) so the image covers the frame, Pillow LANCZOS resize to (round(w * scale),
round(h * scale)), centre crop, then pixels (x / 255 - 0.5) / 0.5. LANCZOS because it is what the released weights
saw at inference in the official code (and it keeps edges sharp on downscaling); ComfyUI's native
Wan22ImageToVideoLatent uses bilinear instead. A float image (ComfyUI IMAGE) is rounded to 8 bits before resampling;
LoadImage's values are k / 255, so that is lossless for them. An image already at the video size is not resampled.
Pillow is imported lazily (only image files and resizing need it).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SEVERAL_FRAMES = ("several start frames ({n}) are not supported: the released TI2V-5B weights were trained with one "
                  "clean first latent frame; pass one image")
END_IMAGE = ("an end image is not supported: the released TI2V-5B weights condition on the first frame only "
             "(first-last-frame needs a model trained for it, e.g. Wan2.1 FLF2V); drop the end image")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("image-to-video needs Pillow to read and resize images: pip install Pillow") from None
    return Image


def load_image(path: str | os.PathLike):
    """Open an image file as a Pillow image (any mode; `to_rgb` converts it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"start image {str(path)!r} not found; give the path of a PNG/JPEG/WebP file")
    Image = _pil()
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:  # Pillow's UnidentifiedImageError is an OSError
        raise ValueError(f"start image {str(path)!r} is not a readable image ({e}); give a PNG, JPEG or WebP file") \
            from None
    return img


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (recorded in the video's metadata)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _array(image) -> tuple[np.ndarray, list[str]]:
    """Any supported image -> ([H, W, 3] uint8 or float32 in 0..1, notes on conversions)."""
    notes = []
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a Pillow image
        if image.mode != "RGB":
            kind = "greyscale" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else image.mode
            extra = ", alpha ignored" if "A" in image.getbands() or "transparency" in image.info else ""
            notes.append(f"{kind} image converted to RGB{extra}")
            if image.mode in ("I", "I;16", "F"):  # 16/32-bit greyscale: to floats in 0..1
                arr = np.asarray(image, dtype=np.float32)
                top = 65535.0 if image.mode != "F" and arr.max() > 255 else (1.0 if image.mode == "F" else 255.0)
                return np.repeat(np.clip(arr / top, 0, 1)[..., None], 3, axis=-1), notes
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8), notes
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image if image.dtype == torch.uint8 else image.float()).numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"start image must be a Pillow image, an [H, W, 3] array or tensor, or a file path "
                         f"(got {type(image).__name__})")
    arr = image
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(SEVERAL_FRAMES.format(n=arr.shape[0]))
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"start image array must be [H, W], [H, W, 1|3|4] or [1, H, W, C] with channels last "
                         f"(got shape {tuple(image.shape)}); for a [3, H, W] tensor use tensor.permute(1, 2, 0)")
    if arr.shape[-1] == 1:
        notes.append("greyscale image converted to RGB")
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        notes.append("RGBA image converted to RGB, alpha ignored")
        arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr), notes
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"a float start image must hold values in 0..1 (got {arr.min():.3g}..{arr.max():.3g}); "
                         "divide 8-bit values by 255")
    return arr, notes


def fit_box(src_w: int, src_h: int, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized w, h), (left, top)): cover the width x height frame keeping the aspect, then centre-crop."""
    scale = max(width / src_w, height / src_h)
    rw, rh = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    return (rw, rh), ((rw - width) // 2, (rh - height) // 2)


def prepare_image(image, width: int, height: int) -> tuple[torch.Tensor, str]:
    """Start image -> (pixels [1, 3, 1, height, width] float32 in -1..1, note; empty when nothing was adjusted).

    image: a Pillow image (any mode), an [H, W], [H, W, C] or [1, H, W, C] uint8 array/tensor or float one in 0..1
    (ComfyUI IMAGE), or a file path. Greyscale is replicated to RGB, alpha dropped (as the official
    `Image.convert("RGB")`), another aspect ratio centre-cropped; each adjustment is named in the note.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    arr, notes = _array(image)
    h, w = arr.shape[:2]
    if (w, h) != (width, height):
        if abs(w / h - width / height) > 0.01 * width / height:
            (rw, rh), _ = fit_box(w, h, width, height)
            kept_w, kept_h = round(width * w / rw), round(height * h / rh)
            notes.append(f"start image {w}x{h} has another aspect ratio than the {width}x{height} video: its centre "
                         f"{kept_w}x{kept_h} is used (give an image of the video's aspect to keep all of it)")
        arr = _resize_crop(arr, width, height)
    pixels = torch.from_numpy(np.array(arr)).float()  # a copy: Pillow's arrays are read-only
    if arr.dtype == np.uint8:
        pixels = pixels / 255.0
    pixels = (pixels - 0.5) / 0.5  # [H, W, 3] in -1..1, the official normalisation
    note = "; ".join(notes)
    if note:
        log.warning("start image: %s", note)
    return pixels.permute(2, 0, 1)[None, :, None].contiguous(), note  # [1, 3, 1, H, W]


def _resize_crop(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    Image = _pil()
    if arr.dtype != np.uint8:
        arr = (arr * 255.0).round().astype(np.uint8)
    h, w = arr.shape[:2]
    (rw, rh), (left, top) = fit_box(w, h, width, height)
    img = Image.fromarray(arr, mode="RGB").resize((rw, rh), Image.LANCZOS)
    return np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8)


def check_vae_family(vae) -> None:
    """Image-to-video with TI2V-5B needs the Wan2.2 VAE (48 channels, 4x16x16); raise naming what was given."""
    cfg = getattr(vae, "cfg", None)
    z, stride = getattr(cfg, "z_dim", None), getattr(cfg, "stride", None)
    if z != 48 or tuple(stride or ()) != (4, 16, 16):
        raise ValueError(f"the VAE has {z} latent channels and stride {stride}; image-to-video with TI2V-5B needs "
                         "the Wan2.2 VAE (48 channels, stride 4x16x16): load wan2.2_vae.safetensors (not the "
                         "16-channel Wan2.1 VAE)")


@torch.no_grad()
def encode_image(vae, pixels: torch.Tensor) -> torch.Tensor:
    """pixels [B, 3, 1, H, W] in -1..1 -> raw image latent [B, 48, 1, H/16, W/16] (the VAE's mean, fp32)."""
    check_vae_family(vae)
    param = next(vae.parameters())
    return vae.encode(pixels.to(param.device, param.dtype)).float()


def pad_to_canvas(pixels: torch.Tensor, crop: tuple[int, int, int, int], canvas_hw: tuple[int, int]) -> torch.Tensor:
    """Place pixels [B, 3, T, h, w] at crop (top, left, h, w) of an (H, W) canvas, edges replicated outwards."""
    top, left, h, w = crop
    H, W = canvas_hw
    if (top, left, h, w) == (0, 0, H, W):
        return pixels
    b, c, t = pixels.shape[:3]
    flat = pixels.reshape(b, c * t, h, w)  # [B, 3T, h, w]: replicate padding works on 4-D input
    flat = torch.nn.functional.pad(flat, (left, W - w - left, top, H - h - top), mode="replicate")
    return flat.reshape(b, c, t, H, W)
