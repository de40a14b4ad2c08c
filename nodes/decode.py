"""VAE decode node: chunked causal decode, optional spatial tiling (automatic on out-of-memory), crop to the request."""
from __future__ import annotations

import logging

from wan_core.guard import check_finite
from wan_core.latent_init import latent_crop, video_to_images
from .host import get_host

log = logging.getLogger(__name__)


class WanT2VDecode:
    DESCRIPTION = ("Decodes a Wan2.2 latent to frames, one latent frame at a time with the causal cache. Tiling "
                   "splits each frame spatially (less memory); it switches on automatically after an out-of-memory "
                   "error. The padding added by WanT2V Latent Init is cropped off. NaN/Inf output stops with an error.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Frames [B*T, H, W, 3] in 0..1 (native IMAGE; works with CreateVideo/SaveVideo).",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("WANT2V_VAE", {"tooltip": "From the WanT2V VAE loader (48-channel Wan2.2 VAE)."}),
            "latent": ("LATENT", {"tooltip": "From the WanT2V sampler (or any native Wan2.2 latent)."}),
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 256, "step": 1,
                                  "tooltip": "Spatial tile in latent cells (x16 pixels); 0 = no tiling unless "
                                             "memory runs out."}),
        }}

    def decode(self, vae, latent, tile_size):
        host = get_host()
        model = host.activate(vae, tuple(latent["samples"].shape))
        param = next(model.parameters())
        z = latent["samples"].to(param.device, param.dtype)  # [B, 48, T', h, w] raw VAE space
        tile = (tile_size, tile_size) if tile_size else None
        progress = host.progress_callback()
        video = (model.decode(z, tile=tile, tile_overlap=min(4, tile_size // 2), callback=progress) if tile
                 else model.decode_auto(z, callback=progress))
        check_finite(video, "in the VAE decode output", "decode", param.dtype)  # NaN would save as black frames
        images = video_to_images(video, latent_crop(latent))  # [B, 3, T, H, W] -1..1 -> [B*T, h, w, 3] 0..1
        return (images.to(host.intermediate_device()),)
