"""Text encode node: prompt + negative prompt -> native CONDITIONING (usable by native samplers too)."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from wan_core.geometry import TEXT_LEN
from wan_core.prompts import DEFAULT_NEGATIVE_PROMPT

from .host import get_host

log = logging.getLogger(__name__)


def to_conditioning(embedding: torch.Tensor) -> list:
    """[L, D] true-length embedding -> ComfyUI CONDITIONING [[Tensor[1, max(L, 512), D], {...}]] (zeros after L),
    the layout ComfyUI's own umT5 encoder produces."""
    padded = F.pad(embedding, (0, 0, 0, max(0, TEXT_LEN - embedding.shape[0])))  # [max(L, 512), D]
    return [[padded.unsqueeze(0), {"pooled_output": None}]]


def conditioning_tensor(conditioning, name: str) -> torch.Tensor:
    """The [1, L, D] tensor of a CONDITIONING made by this pack or by native nodes (CLIPTextEncode with a wan CLIP)."""
    if (not isinstance(conditioning, (list, tuple)) or not conditioning or not isinstance(conditioning[0], (list, tuple))
            or not torch.is_tensor(conditioning[0][0]) or conditioning[0][0].ndim != 3):
        raise ValueError(f"{name} is not a CONDITIONING ([[tensor [1, L, D], {{...}}], ...]); connect a text encode "
                         "node (WanT2V Text Encode or CLIPTextEncode with a CLIPLoader of type wan)")
    if len(conditioning) > 1:
        log.warning("%s has %d entries (combined/area conditioning is not supported); using the first", name,
                    len(conditioning))
    return conditioning[0][0]


class WanT2VTextEncode:
    DESCRIPTION = ("Encodes a prompt and a negative prompt (English or Chinese) with umT5. The outputs are native "
                   "CONDITIONING, so they also feed ComfyUI's own samplers.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The prompt's embedding [1, 512, 4096].", "The negative prompt's embedding.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("WANT2V_T5", {"tooltip": "From the WanT2V text encoder loader."}),
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the video shows (English or "
                                  "Chinese). Longer than 512 tokens is truncated with a warning."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": DEFAULT_NEGATIVE_PROMPT,
                                           "tooltip": "What to avoid; the default is the official Wan negative prompt."}),
        }}

    def encode(self, text_encoder, prompt, negative_prompt):
        host = get_host()
        encoder = host.activate(text_encoder)
        positive, negative = encoder.encode([prompt, negative_prompt])  # [L_i, D] each
        device = host.intermediate_device()
        return to_conditioning(positive.to(device)), to_conditioning(negative.to(device))
