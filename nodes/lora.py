"""LoRA node: a Wan DiT in, the same DiT with a LoRA file on top out (chainable; the base model is not changed)."""
from __future__ import annotations

from .host import LORA_FOLDER, get_host

_VERIFY_TIP = "Check the file against its <file>.sha256 sidecar when one exists. A mismatch refuses the load."


class WanT2VLora:
    DESCRIPTION = ("Adds a LoRA from the loras folder to a WanT2V model: official/ComfyUI names (lora_down/lora_up "
                   "or lora_A/lora_B, alpha, diff, diff_b), kohya/musubi-tuner names and diffusers/PEFT names are "
                   "detected from the keys. Scale = strength x alpha / rank. Applied as ComfyUI weight patches, so "
                   "lowvram offload keeps working and other branches still see the model without it. A LoRA made "
                   "for another Wan model (e.g. 14B) is refused with a message saying so; keys that match nothing "
                   "are listed in the console.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("WANT2V_DIT",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the LoRA patches added (chain several LoRA nodes to stack them).",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WANT2V_DIT", {"tooltip": "From WanT2V Model Loader or another WanT2V LoRA node."}),
            "lora_name": (get_host().list_models(LORA_FOLDER), {"tooltip": "LoRA .safetensors in the loras folder."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "Multiplies the LoRA's change; 0 = off, negative = inverted."}),
        }, "optional": {
            "verify_sha256": ("BOOLEAN", {"default": True, "tooltip": _VERIFY_TIP}),
        }}

    def apply(self, model, lora_name, strength, verify_sha256=True):
        if strength == 0:
            return (model,)
        return (get_host().add_lora(model, lora_name, strength, verify_sha256),)
