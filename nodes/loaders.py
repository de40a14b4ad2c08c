"""Loader nodes: DiT (diffusion_models), umT5 text encoder (text_encoders), Wan2.2 VAE (vae)."""
from __future__ import annotations

from .host import WEIGHT_DTYPES, get_host

CATEGORY = "WanT2V"
_DTYPE_TIP = ("Weight dtype in memory. auto: the host's choice for this device (fp32 on CPU); fp8 storage keeps "
              "weights in float8 and computes in bf16/fp16 (half the memory, slightly lower quality).")
_VERIFY_TIP = ("Check the file against its <file>.sha256 sidecar when one exists (hashed once, then cached). "
               "A mismatch refuses the load.")


class _WanLoader:
    """Shared shape of the three loaders: a file dropdown from FOLDER, a weight dtype, a verify switch."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    KIND = FOLDER = FILE_TIP = ""
    DTYPES = tuple(WEIGHT_DTYPES)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (get_host().list_models(cls.FOLDER), {"tooltip": cls.FILE_TIP}),
            "weight_dtype": (list(cls.DTYPES), {"default": "auto", "tooltip": _DTYPE_TIP}),
            "verify_sha256": ("BOOLEAN", {"default": True, "tooltip": _VERIFY_TIP}),
        }}

    def load(self, model_name, weight_dtype, verify_sha256):
        return (get_host().load(self.KIND, model_name, weight_dtype, verify_sha256),)


class WanT2VModelLoader(_WanLoader):
    DESCRIPTION = ("Loads the Wan2.2 TI2V-5B diffusion transformer (official, ComfyUI or diffusers key names) from "
                   "the diffusion_models folder: .safetensors (bf16/fp16, fp8, Kijai/ComfyUI scaled fp8) or .gguf "
                   "(Q8_0 ... Q2_K, weights stay quantized and are dequantized per layer as they run). Refuses text "
                   "encoders, VAEs and Wan2.1 files with a clear message.")
    RETURN_TYPES = ("WANT2V_DIT",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The diffusion transformer, managed by the host (loaded to the GPU right before sampling).",)
    KIND, FOLDER, FILE_TIP = "dit", "diffusion_models", ("DiT file, e.g. wan2.2_ti2v_5B_fp16.safetensors or "
                                                         "Wan2.2-TI2V-5B-Q4_K_M.gguf")


class WanT2VTextEncoderLoader(_WanLoader):
    DESCRIPTION = ("Loads the umT5-XXL text encoder from the text_encoders folder (fp16/bf16, or ComfyUI's "
                   "fp8-scaled file). The tokenizer comes from the spiece_model tensor inside the file.")
    RETURN_TYPES = ("WANT2V_T5",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The umT5 text encoder with its embedded tokenizer.",)
    KIND, FOLDER = "t5", "text_encoders"
    FILE_TIP = ("umT5 file with an embedded tokenizer, e.g. umt5_xxl_fp16.safetensors or "
                "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    DTYPES = ("auto", "bf16", "fp16", "fp32")


class WanT2VVAELoader(_WanLoader):
    DESCRIPTION = ("Loads the 48-channel Wan2.2 VAE (wan2.2_vae.safetensors) from the vae folder. The 16-channel "
                   "Wan2.1 VAE does not fit the 5B model and is refused with a message saying so.")
    RETURN_TYPES = ("WANT2V_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The Wan2.2 VAE (4x16x16 compression, 48 latent channels).",)
    KIND, FOLDER, FILE_TIP = "vae", "vae", "Wan2.2 VAE file, e.g. wan2.2_vae.safetensors"
    DTYPES = ("auto", "bf16", "fp16", "fp32")
