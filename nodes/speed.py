"""Speed options node: batched guidance, regional torch.compile and the attention backend for WanT2V Sampler."""
from __future__ import annotations

from dataclasses import replace

from wan_core.attention import BACKENDS, DEFAULT_BACKEND, get_backend
from wan_core.speed import CFG_BATCH_MODES, SpeedOptions

from .sampling import OPTIONS_TYPE, SamplerOptions


class WanT2VSpeedOptions:
    DESCRIPTION = ("Speed options for WanT2V Sampler (plug into its 'options' input). cfg_batch runs the prompt and "
                   "negative prompt as one DiT forward on a batch of 2 (same result, more activation memory; auto = "
                   "on for CUDA when memory allows). compile: torch.compile of the transformer block, once for all "
                   "layers (the first step pays the compile time; eager with a warning where compiling is "
                   "unavailable). attention: sdpa (PyTorch), sage (needs sageattention) or flash (needs flash-attn), "
                   "CUDA only; a NaN/Inf step switches the rest of the run back to sdpa.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = (OPTIONS_TYPE,)
    RETURN_NAMES = ("options",)
    OUTPUT_TOOLTIPS = ("Sampler options with the speed settings (connect to WanT2V Sampler 'options').",)
    FUNCTION = "options"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cfg_batch": (list(CFG_BATCH_MODES), {"default": "auto", "tooltip": "Batch the two guidance branches: "
                          "auto (CUDA with enough free memory), on, off."}),
            "compile": ("BOOLEAN", {"default": False, "tooltip": "torch.compile the transformer block (needs a "
                        "C++ compiler on the CPU, Triton on CUDA); results match eager."}),
            "attention": (list(BACKENDS), {"default": DEFAULT_BACKEND, "tooltip": "sdpa is always available; sage "
                          "and flash need their pip packages and a CUDA GPU."}),
        }, "optional": {
            "options": (OPTIONS_TYPE, {"tooltip": "Other sampler options to combine with."}),
        }}

    def options(self, cfg_batch, compile, attention, options=None):
        if attention != DEFAULT_BACKEND:
            get_backend(attention)  # a missing package fails here, naming the pip install
        return (replace(options or SamplerOptions(), speed=SpeedOptions(cfg_batch, compile, attention)),)
