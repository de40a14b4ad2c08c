"""Fast-sampling nodes: step caching options for WanT2V Sampler and few-step (distilled-model) recipes."""
from __future__ import annotations

from dataclasses import replace

from wan_core.few_step import PRESETS, few_step_recipe
from wan_core.step_cache import cache_config

from .host import get_host
from .sampling import OPTIONS_TYPE, SamplerOptions


class WanT2VStepCache:
    DESCRIPTION = ("Step caching for WanT2V Sampler (plug into its 'options' input): on steps where the DiT output "
                   "is predicted to change little, each guidance branch reuses its last residual instead of running "
                   "the DiT. easycache predicts the change at run time; magcache uses the model's calibrated "
                   "magnitude ratios (<model file>.magcache.json, shipped for the demo model; record one with the "
                   "CLI's --cache calibrate). The first steps (warmup) and the last step always run.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = (OPTIONS_TYPE,)
    RETURN_NAMES = ("options",)
    OUTPUT_TOOLTIPS = ("Sampler options with the step cache (connect to WanT2V Sampler 'options').",)
    FUNCTION = "options"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "method": (["easycache", "magcache"], {"default": "easycache", "tooltip": "easycache: no calibration "
                                                   "needed; magcache: needs the model's ratio file."}),
            "threshold": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 3.0, "step": 0.01, "tooltip":
                                    "Accumulated predicted change allowed before the DiT runs again: higher skips "
                                    "more (0 never skips). See docs/speed.md for measured settings."}),
            "warmup": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 0.95, "step": 0.05, "tooltip":
                                 "Fraction of the steps always computed at the start (the layout forms there)."}),
        }, "optional": {
            "options": (OPTIONS_TYPE, {"tooltip": "Other sampler options to combine with."}),
            "model": ("WANT2V_DIT", {"tooltip": "The DiT; needed by magcache to find its calibrated ratios."}),
        }}

    def options(self, method, threshold, warmup, options=None, model=None):
        path = get_host().model_path("diffusion_models", model.name) if model is not None else None
        config = cache_config(method, threshold, warmup=warmup, dit_path=path)
        return (replace(options or SamplerOptions(), step_cache=config),)


class WanT2VFewStepSchedule:
    DESCRIPTION = ("A step-distilled model's sampling recipe (fastwan: FastWan2.2-TI2V-5B, turbo: Wan2.2-TI2V-5B-"
                   "Turbo, or custom timesteps), warped through the shifted 1000-step schedule as those models were "
                   "trained. Connect 'options' to WanT2V Sampler's options: it sets the schedule, sampler lcm and "
                   "cfg 1, replacing the sampler's steps, shift, denoise, sampler and cfg widgets (logged). Or connect "
                   "only 'sigmas' to the sampler's sigmas input and set its sampler and cfg yourself.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("SIGMAS", OPTIONS_TYPE)
    RETURN_NAMES = ("sigmas", "options")
    OUTPUT_TOOLTIPS = ("Decreasing flow sigmas ending in 0 (native SIGMAS); alone, it replaces only the sampler's "
                       "steps, shift and denoise.",
                       "Sampler options with the whole recipe: schedule, sampler lcm, cfg 1 (these win over the "
                       "sampler's widgets; a connected sigmas input wins over the recipe's schedule).")
    FUNCTION = "schedule"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "preset": (["custom", *PRESETS], {"default": "fastwan", "tooltip": "fastwan: 1000,757,522; turbo: "
                                              "1000,750,500,250 (both warped at shift 5). custom: the timesteps below."}),
            "timesteps": ("STRING", {"default": "1000,757,522", "tooltip": "custom: model timesteps, decreasing."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 50.0, "step": 0.1, "tooltip": "Warp shift."}),
            "warp": ("BOOLEAN", {"default": True, "tooltip": "custom: warp through the shifted schedule (off: "
                                 "sigma = t/1000); presets always warp."}),
        }, "optional": {
            "options": (OPTIONS_TYPE, {"tooltip": "Other sampler options to combine with."}),
        }}

    def schedule(self, preset, timesteps, shift, warp, options=None):
        recipe = few_step_recipe(preset, timesteps=timesteps, shift=shift, warp=warp)
        return recipe.schedule(), replace(options or SamplerOptions(), few_step=recipe)
