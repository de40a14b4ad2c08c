"""Latent init node ("aspect tokens"): aspect preset x size tier or exact size, frames or seconds x fps, batch."""
from __future__ import annotations

import copy
import logging

from wan_core.geometry import MAX_FRAMES, MAX_SIDE
from wan_core.latent_init import (ASPECTS, TIERS, frames_from_seconds, init_image_latent, init_latent, plan_latent,
                                   preset_size)

from .common import declared_range_error
from .host import get_host

log = logging.getLogger(__name__)
SIZES = (*TIERS, "custom")


def _frames(length_unit: str, frames: int, seconds: float, fps: float) -> int:
    return frames if length_unit == "frames" else frames_from_seconds(seconds, fps)


_INPUTS = {"required": {
    "aspect": (list(ASPECTS), {"default": "16:9", "tooltip": "Aspect ratio preset (ignored when size is custom)."}),
    "size": (list(SIZES), {"default": "720p", "tooltip": "720p = 1280x704 at 16:9 (official), 480p = 832x480; "
                           "custom uses width and height."}),
    "width": ("INT", {"default": 1280, "min": 16, "max": MAX_SIDE, "step": 1, "tooltip": "Custom width in pixels."}),
    "height": ("INT", {"default": 704, "min": 16, "max": MAX_SIDE, "step": 1, "tooltip": "Custom height in pixels."}),
    "length_unit": (["frames", "seconds"], {"default": "frames", "tooltip": "Give the length as frames or "
                                                                           "as seconds x fps."}),
    "frames": ("INT", {"default": 121, "min": 1, "max": MAX_FRAMES, "step": 4, "tooltip": "Frame count "
                       "(4k+1; others snap to the nearest)."}),
    "seconds": ("FLOAT", {"default": 5.0, "min": 0.05, "max": 60.0, "step": 0.05, "tooltip": "Duration when "
                          "length_unit is seconds."}),
    "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "Frames per second "
                      "used to turn seconds into frames (TI2V-5B is trained at 24)."}),
    "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos generated at once."}),
}, "optional": {
    "start_image": ("IMAGE", {"tooltip": "Image-to-video: the video starts from this image (resized and "
                              "centre-cropped to the size; one image). Needs the vae input."}),
    "vae": ("WANT2V_VAE", {"tooltip": "Encodes the start image (the Wan2.2 VAE from WanT2V VAE Loader)."}),
}}


class WanT2VLatentInit:
    DESCRIPTION = ("Makes a Wan2.2 video latent (native LATENT, 48 channels, /16). Any size works: it is "
                   "padded up to the model grid (32 px) and decode crops back to exactly the requested size. "
                   "Frame counts snap to 4k+1; the info output says what was adjusted. With a start image and "
                   "the VAE it is image-to-video: the first latent frame holds the image and a noise_mask keeps it "
                   "(ComfyUI's convention: the WanT2V sampler and native KSampler both honour it).")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("LATENT", "INT", "INT", "INT", "STRING")
    RETURN_NAMES = ("latent", "width", "height", "frames", "info")
    OUTPUT_TOOLTIPS = ("Latent [B, 48, (frames-1)/4+1, H/16, W/16] with the crop recorded (+ image and noise_mask).",
                       "Final picture width.", "Final picture height.", "Final frame count (4k+1).",
                       "What was adjusted (frame snapping, padding).")
    FUNCTION = "init"

    @classmethod
    def INPUT_TYPES(cls):
        return copy.deepcopy(_INPUTS)  # callers may edit what they get

    @classmethod
    def VALIDATE_INPUTS(cls, length_unit="frames", seconds=5.0, fps=24.0):
        if error := declared_range_error(cls, seconds=seconds, fps=fps):
            return error
        if length_unit == "seconds" and seconds * fps + 1 > MAX_FRAMES:
            return f"seconds x fps = {seconds * fps:g} frames is above the maximum {MAX_FRAMES}; shorten the video"
        return True

    def init(self, aspect, size, width, height, length_unit, frames, seconds, fps, batch_size, start_image=None,
             vae=None):
        w, h = (width, height) if size == "custom" else preset_size(aspect, size)
        plan = plan_latent(w, h, _frames(length_unit, frames, seconds, fps))
        if plan.note:
            log.warning("WanT2V latent init: %s", plan.note)
        latent, note = init_latent(plan, batch_size), plan.note
        if start_image is not None:
            if vae is None:
                raise ValueError("start_image is connected but vae is not: connect the WanT2V VAE Loader to the vae "
                                 "input (it encodes the image), or disconnect start_image for text-to-video")
            model = get_host().activate(vae, tuple(latent["samples"].shape))
            latent, image_note = init_image_latent(plan, batch_size, start_image, model)
            note = "; ".join(filter(None, (note, image_note)))
        return {"ui": {"text": [note or f"{w}x{h}, {plan.frames} frames"]},
                "result": (latent, w, h, plan.frames, note)}
