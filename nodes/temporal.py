"""Temporal-consistency nodes: sampler settings (flow-guided smoothing, Enhance-A-Video, correlated noise), video
metrics, frame interpolation, deflicker. Thin adapters over wan_core.temporal; all are weight-free."""
from __future__ import annotations

import json

from wan_core.temporal.options import TemporalOptions

TEMPORAL_TYPE = "WANT2V_TEMPORAL"


def _fraction(default: float, tip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": tip})


class WanT2VTemporalSettings:
    DESCRIPTION = ("Temporal-consistency options for WanT2V Sampler (plug into its 'temporal' input). Flow-guided "
                   "smoothing pulls the low spatial frequencies of the predicted clean latent towards its flow-warped "
                   "neighbour frames in the middle of the schedule; Enhance-A-Video scales self-attention by the "
                   "cross-frame attention intensity; noise_share correlates the initial noise across frames. "
                   "Training-free, no extra model evaluations; 0 turns each off.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = (TEMPORAL_TYPE,)
    RETURN_NAMES = ("temporal",)
    OUTPUT_TOOLTIPS = ("Temporal options (a frozen TemporalOptions value) for WanT2V Sampler.",)
    FUNCTION = "settings"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "flow_strength": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                                        "Blend of the predicted clean latent's low frequencies towards flow-warped "
                                        "neighbours (0 off; 0.8 did not help on the demo model). Decays to 0 at "
                                        "flow_end."}),
            "flow_start": _fraction(0.0, "Fraction of the steps where smoothing starts (at full strength)."),
            "flow_end": _fraction(0.8, "Fraction of the steps where smoothing has faded out; keep it before the "
                                       "last steps so fine detail is untouched."),
            "enhance": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.1, "tooltip":
                                  "Enhance-A-Video temperature (0 off; 1-4 typical; high values over-smooth and cost motion)."}),
            "enhance_start": _fraction(0.0, "Fraction of the steps where the attention gain starts."),
            "enhance_end": _fraction(0.5, "Fraction of the steps where the attention gain stops."),
        }, "optional": {
            "noise_share": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 0.95, "step": 0.05, "tooltip":
                                      "Correlation of the initial noise between latent frames (0 off). Starts every "
                                      "frame from partly the same noise: steadier video, somewhat less motion."}),
            "noise_band": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.95, "step": 0.05, "tooltip":
                                     "Share only spatial frequencies at or above this fraction of Nyquist (0: all). "
                                     "0.5 keeps the coarse layout, hence motion, free (demo model: warping error "
                                     "0.95x, motion 0.94x, no accuracy loss; sharing all frequencies cost colour)."}),
        }}

    def settings(self, flow_strength, flow_start, flow_end, enhance, enhance_start, enhance_end, noise_share=0.0,
                 noise_band=0.0):
        return (TemporalOptions(flow_strength=flow_strength, flow_start=flow_start, flow_end=flow_end,
                                enhance=enhance, enhance_start=enhance_start, enhance_end=enhance_end,
                                noise_share=noise_share, noise_band=noise_band),)


class WanT2VVideoMetrics:
    DESCRIPTION = ("Weight-free temporal metrics of a clip, as JSON: warping error (Lai et al. 2018, flow-warped "
                   "consecutive frames with an occlusion mask), flicker indices and motion magnitude. Compare settings "
                   "at similar motion: a frozen video has perfect consistency.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("json",)
    OUTPUT_TOOLTIPS = ("JSON object with warping_error, hf_warping_error, luma_flicker, hf_flicker, motion_mean, "
                       "motion_top5, valid_fraction.",)
    OUTPUT_NODE = True
    FUNCTION = "measure"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "Frames [T, H, W, 3] of one clip (at least 2)."}),
            "max_side": ("INT", {"default": 256, "min": 16, "max": 4096, "step": 16, "tooltip":
                                 "Flow and warping error are computed at this longer side (faster; motion is "
                                 "still reported in input pixels)."}),
        }}

    def measure(self, frames, max_side):
        from wan_core.temporal.metrics import video_metrics

        text = json.dumps({k: round(v, 6) for k, v in video_metrics(frames.float(), max_side=max_side).items()})
        return {"ui": {"text": (text,)}, "result": (text,)}


class WanT2VFrameInterpolate:
    DESCRIPTION = ("Raises the frame rate with weight-free optical-flow interpolation (bidirectional flow, "
                   "occlusion-aware blending of both warps, hole filling). Falls back to plain blending at scene "
                   "cuts, where warping explains little, and for a whole clip when predicting some of its own "
                   "frames shows that motion compensation does not beat blending. "
                   "Outputs the new frames and the new fps for the save node.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("frames", "fps")
    OUTPUT_TOOLTIPS = ("Interpolated frames [T', H, W, 3].", "Frame rate of the output (connect to the save node).")
    FUNCTION = "interpolate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "Frames [T, H, W, 3] of one clip."}),
            "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 1.0,
                              "tooltip": "Frame rate of the input (TI2V-5B: 24)."}),
            "multiplier": ("INT", {"default": 2, "min": 1, "max": 4, "tooltip":
                                   "Frames per input interval: 2 doubles the rate (24 -> 48 fps)."}),
            "target_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 1.0, "tooltip":
                                     "If > 0, resample to exactly this rate instead of using the multiplier."}),
        }}

    def interpolate(self, frames, fps, multiplier, target_fps):
        from wan_core.temporal.interpolate import interpolate_frames, interpolate_to_fps

        if target_fps > 0:
            return interpolate_to_fps(frames.float(), fps, target_fps)
        return interpolate_frames(frames.float(), multiplier), float(fps * multiplier)


class WanT2VDeflicker:
    DESCRIPTION = ("Motion-compensated deflicker of decoded frames: each frame is averaged with its flow-warped "
                   "neighbours where the flow's forward-backward check and a strict colour check agree (four passes along "
                   "the same flows), so occluded or mismatched pixels and motion stay. Weight-free; place it after "
                   "VAE Decode.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Deflickered frames, same count and size.",)
    FUNCTION = "deflicker"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "Frames [T, H, W, 3] of one clip."}),
            "strength": _fraction(1.0, "Weight of each agreeing neighbour against the frame itself: 0 off, 1 each "
                                       "counts as much as the frame."),
        }, "optional": {
            "flow_size": ("INT", {"default": 96, "min": 16, "max": 2048, "step": 16, "tooltip":
                                  "Longer side (pixels) the flow is estimated at. 96 is enough for the demo; raise it "
                                  "for large frames with small moving parts (costs time, little on a GPU)."}),
        }}

    def deflicker(self, frames, strength, flow_size=96):
        from wan_core.temporal.deflicker import DeflickerConfig, deflicker

        return (deflicker(frames.float(), strength, DeflickerConfig(flow_max_side=flow_size)),)
