"""Sampler node: flow-matching sampling with classifier-free guidance, previews, interrupts and option hooks.

Options (temporal consistency and later features) arrive as a `SamplerOptions` value on the optional `options`
socket: model-function wrappers `(model_fn, sigmas) -> model_fn` and DiT hooks, so features never edit this node.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable

from wan_core.few_step import apply_recipe
from wan_core.i2v import NOISE_MASK, image_frames_from_mask
from wan_core.pipeline import sample_latents
from wan_core.sampling import SAMPLERS
from wan_core.schedules import denoise_sigmas, flow_sigmas
from wan_core.temporal.options import build as build_temporal, combine_hooks, noise_transform

from .common import declared_range_error
from .host import get_host
from .text import conditioning_tensor

OPTIONS_TYPE = "WANT2V_SAMPLER_OPTIONS"


@dataclass(frozen=True)
class SamplerOptions:
    """Per-run sampler extensions, combined by settings nodes (each returns a new value; nothing is mutated)."""

    model_wrappers: tuple[Callable, ...] = ()  # (model_fn, sigmas) -> model_fn, applied in order
    hooks: Any = None  # wan_core.model.DiTHooks or None
    step_cache: Any = None  # wan_core.step_cache.StepCacheConfig or None (WanT2V Step Cache)
    speed: Any = None  # wan_core.speed.SpeedOptions or None (WanT2V Speed Options)
    few_step: Any = None  # wan_core.few_step.FewStepRecipe or None (WanT2V Few-Step Schedule's options)

    def with_wrapper(self, wrapper: Callable) -> "SamplerOptions":
        return replace(self, model_wrappers=self.model_wrappers + (wrapper,))


_INPUTS = {"required": {
    "model": ("WANT2V_DIT", {"tooltip": "From the WanT2V model loader."}),
    "positive": ("CONDITIONING", {"tooltip": "Prompt embedding (WanT2V Text Encode or native CLIPTextEncode)."}),
    "negative": ("CONDITIONING", {"tooltip": "Negative prompt embedding (unused when cfg is 1)."}),
    "latent": ("LATENT", {"tooltip": "From WanT2V Latent Init (or a native Wan2.2 48-channel latent); a start "
                          "image's latent with its noise_mask (Latent Init with start_image, or native "
                          "Wan22ImageToVideoLatent) makes it image-to-video."}),
    "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                     "tooltip": "Noise seed; drawn on the CPU so a seed gives the same video on any device."}),
    "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Sampling steps (official 50)."}),
    "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                      "tooltip": "Guidance scale (official 5.0; 1.0 turns guidance off and halves the cost)."}),
    "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 50.0, "step": 0.1, "round": 0.01,
                        "tooltip": "Schedule shift; higher spends more steps at high noise (official 5.0)."}),
    "sampler": (list(SAMPLERS), {"default": "unipc", "tooltip": "unipc (official), euler, dpm++2m, or lcm (x0 then "
                                 "fresh seeded noise; for step-distilled models such as FastWan / Turbo)."}),
    "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                          "tooltip": "1.0 = from pure noise; lower keeps part of the input latent (video to video)."}),
}, "optional": {
    "options": (OPTIONS_TYPE, {"tooltip": "Extra sampler features from WanT2V option nodes. A Few-Step Schedule's "
                               "options win over the sampler and cfg widgets and over steps/shift/denoise (logged)."}),
    "temporal": ("WANT2V_TEMPORAL", {"tooltip": "Temporal-consistency options (WanT2V Temporal Settings)."}),
    "sigmas": ("SIGMAS", {"tooltip": "Native SIGMAS (BasicScheduler, ManualSigmas, WanT2V Few-Step Schedule ...): "
                          "replaces steps, shift and denoise; values in [0, 1], decreasing, usually ending in 0."}),
}}


class WanT2VSampler:
    DESCRIPTION = ("Generates the video latent: flow matching with classifier-free guidance (official defaults: "
                   "UniPC, 50 steps, cfg 5, shift 5; 20-30 steps is a faster preset). Accepts native LATENT and "
                   "CONDITIONING. Reproducible per seed on any device. Stops with an error naming the step if the latent "
                   "turns NaN/Inf (damaged weights, fp16 overflow), instead of a black video. Image-to-video when the "
                   "latent carries a start image and noise_mask: its frame stays the image, timestep 0 on it.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Denoised latent in raw Wan2.2-VAE space (decode with WanT2V VAE Decode or native VAE Decode).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return copy.deepcopy(_INPUTS)  # callers may edit what they get

    @classmethod
    def VALIDATE_INPUTS(cls, steps=50, denoise=1.0):
        if error := declared_range_error(cls, steps=steps, denoise=denoise):
            return error
        if round(steps * denoise) < 1:
            return f"steps x denoise = {steps} x {denoise} leaves no step to run; raise denoise or steps"
        return True

    def sample(self, model, positive, negative, latent, seed, steps, cfg, shift, sampler, denoise, options=None,
               temporal=None, sigmas=None):
        host, options = get_host(), options or SamplerOptions()
        sampler, cfg, sigmas = apply_recipe(options.few_step, sampler=sampler, cfg=cfg, sigmas=sigmas)
        wrappers, hooks = build_temporal(temporal)  # ((), None) when absent or all off
        shape = tuple(latent["samples"].shape)
        ti = image_frames_from_mask(latent[NOISE_MASK], shape) if NOISE_MASK in latent else 0  # image-to-video
        dit = host.activate(model, shape)
        device = next(dit.parameters()).device
        total = len(denoise_sigmas(flow_sigmas(steps, shift), denoise) if sigmas is None else sigmas) - 1
        samples = sample_latents(
            dit, conditioning_tensor(positive, "positive").to(device),
            conditioning_tensor(negative, "negative").to(device) if cfg != 1.0 else None,
            latent["samples"].to(device), seed=seed, steps=steps, cfg=cfg, shift=shift, sampler=sampler,
            denoise=denoise, callback=host.sampling_callback(total), model_wrappers=options.model_wrappers + wrappers,
            hooks=combine_hooks(options.hooks, hooks), noise_transform=noise_transform(temporal),
            image_latent=latent["samples"][:, :, :ti].to(device) if ti else None,
            sigmas=None if sigmas is None else sigmas.float().cpu(), cache=options.step_cache, speed=options.speed)
        return ({**latent, "samples": samples.to(host.intermediate_device())},)
