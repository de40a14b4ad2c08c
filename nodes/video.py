"""Save video node: H.264 mp4 in the output folder, atomically, with ComfyUI's prompt/workflow metadata tags."""
from __future__ import annotations

import json

from wan_core.video import write_mp4

from .host import get_host

PREFIX = "WanT2V"  # node ids of this pack start with it


def generation_parameters(prompt: dict | None) -> dict:
    """Widget values of this pack's nodes in an API-format prompt: {node id: {"class_type", inputs without links}}."""
    params = {}
    for node_id, node in (prompt or {}).items():
        if str(node.get("class_type", "")).startswith(PREFIX):
            inputs = {k: v for k, v in node.get("inputs", {}).items() if not isinstance(v, list)}
            params[node_id] = {"class_type": node["class_type"], **inputs}
    return params


class WanT2VSaveVideo:
    DESCRIPTION = ("Saves frames as an H.264 mp4 (yuv420p, BT.709) in the output folder. The workflow and prompt "
                   "are embedded like ComfyUI's SaveVideo does, so dropping the mp4 into ComfyUI reloads the graph.")
    CATEGORY = "WanT2V"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written mp4.",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "Frames [T, H, W, 3] (e.g. from WanT2V VAE Decode)."}),
            "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 1.0,
                              "tooltip": "Playback rate (TI2V-5B makes 24 fps video)."}),
            "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": "H.264 quality: 0 lossless, 18-20 "
                                                                          "visually lossless, 23 x264 default."}),
            "filename_prefix": ("STRING", {"default": "WanT2V/video", "tooltip": "Output path prefix (may contain "
                                           "a subfolder, %date% style variables work inside ComfyUI)."}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, frames, fps, crf, filename_prefix, prompt=None, extra_pnginfo=None):
        host = get_host()
        path, filename, subfolder = host.save_path(filename_prefix, "mp4", frames.shape[2], frames.shape[1])
        metadata = {}
        if host.metadata_enabled():
            metadata = {key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()}
            if prompt is not None:
                metadata["prompt"] = json.dumps(prompt)
                metadata["parameters"] = json.dumps(generation_parameters(prompt))
        write_mp4(frames, path, fps=fps, crf=crf, metadata=metadata)
        result = {"filename": filename, "subfolder": subfolder, "type": "output"}
        return {"ui": {"images": [result], "animated": (True,)}, "result": (str(path),)}
