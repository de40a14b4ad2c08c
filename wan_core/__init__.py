"""wan_core: the Wan2.2 TI2V-5B text-to-video engine in pure PyTorch (no ComfyUI imports, never picks a device).

Public API (stable): WanT2VPipeline, load_dit, load_vae, load_text_encoder, WanConfig, PRESETS, SamplingConfig,
NonFiniteError.
Heavy modules are imported on first use, so `import wan_core` stays cheap.
"""
from __future__ import annotations

import importlib

from .config import PRESETS, SamplingConfig, WanConfig

__version__ = "0.1.0"

_LAZY = {
    "WanT2VPipeline": "pipeline",
    "sample_latents": "pipeline",
    "load_dit": "loading",
    "load_vae": "loading",
    "load_text_encoder": "loading",
    "WanTransformer": "model",
    "WanVAE": "vae",
    "WanTextEncoder": "text_encoder",
    "NonFiniteError": "guard",
}

__all__ = ["PRESETS", "SamplingConfig", "WanConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'wan_core' has no attribute {name!r}")
