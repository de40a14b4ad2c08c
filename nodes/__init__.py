"""ComfyUI node classes of the pack (classic API: defining them needs no ComfyUI import)."""
from .decode import WanT2VDecode
from .latent import WanT2VLatentInit
from .loaders import WanT2VModelLoader, WanT2VTextEncoderLoader, WanT2VVAELoader
from .lora import WanT2VLora
from .sampling import WanT2VSampler
from .speed import WanT2VSpeedOptions
from .step_cache import WanT2VFewStepSchedule, WanT2VStepCache
from .temporal import WanT2VDeflicker, WanT2VFrameInterpolate, WanT2VTemporalSettings, WanT2VVideoMetrics
from .text import WanT2VTextEncode
from .video import WanT2VSaveVideo

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    WanT2VModelLoader, WanT2VTextEncoderLoader, WanT2VVAELoader, WanT2VTextEncode, WanT2VLatentInit,
    WanT2VSampler, WanT2VDecode, WanT2VSaveVideo, WanT2VTemporalSettings, WanT2VVideoMetrics, WanT2VFrameInterpolate,
    WanT2VDeflicker, WanT2VStepCache, WanT2VFewStepSchedule, WanT2VSpeedOptions, WanT2VLora)}

NODE_DISPLAY_NAME_MAPPINGS = {
    "WanT2VModelLoader": "WanT2V Model Loader",
    "WanT2VTextEncoderLoader": "WanT2V Text Encoder Loader",
    "WanT2VVAELoader": "WanT2V VAE Loader",
    "WanT2VTextEncode": "WanT2V Text Encode",
    "WanT2VLatentInit": "WanT2V Latent Init (aspect, size, length)",
    "WanT2VSampler": "WanT2V Sampler",
    "WanT2VDecode": "WanT2V VAE Decode",
    "WanT2VSaveVideo": "WanT2V Save Video (mp4)",
    "WanT2VTemporalSettings": "WanT2V Temporal Settings",
    "WanT2VVideoMetrics": "WanT2V Video Metrics",
    "WanT2VFrameInterpolate": "WanT2V Frame Interpolate",
    "WanT2VDeflicker": "WanT2V Deflicker",
    "WanT2VStepCache": "WanT2V Step Cache",
    "WanT2VFewStepSchedule": "WanT2V Few-Step Schedule",
    "WanT2VSpeedOptions": "WanT2V Speed Options",
    "WanT2VLora": "WanT2V LoRA",
}
