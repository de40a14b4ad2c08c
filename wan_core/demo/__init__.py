"""The embedded tiny demo model: a Wan2.2-architecture text-to-video model trained on a synthetic world.

`DEMO_FILES` are the shipped files relative to the pack root; `demo_files()` resolves them to a `ModelFiles`;
`DEMO_DEFAULTS` are the sampling settings the tiny model was tuned for; export.save_dit writes them into the DiT file's
metadata, which is where every front end reads them from (wan_core.loading.sampling_defaults).
Training: `python -m wan_core.demo.train`; evaluation: `python -m wan_core.demo.evaluate`.
"""
from __future__ import annotations

from pathlib import Path

from ..config import SamplingConfig

PACK_ROOT = Path(__file__).resolve().parents[2]
DEMO_FILES = {  # relative to the pack root (ComfyUI layout under models/), mirrors export.MODEL_FILES
    "dit": "models/diffusion_models/wan2.2_tiny_demo_dit.safetensors",
    "text_encoder": "models/text_encoders/wan2.2_tiny_demo_umt5.safetensors",
    "vae": "models/vae/wan2.2_tiny_demo_vae.safetensors",
}
DEMO_DEFAULTS = SamplingConfig(width=128, height=128, num_frames=25, fps=12, steps=20, guidance_scale=3.0,
                               shift=3.0, sampler="euler")


def demo_files(root: str | Path | None = None):
    """`ModelFiles` of the shipped demo model (root: the pack folder; default this checkout)."""
    from ..model_files import ModelFiles

    base = Path(root) if root is not None else PACK_ROOT
    paths = {k: base / v for k, v in DEMO_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"demo model files missing: {missing}; they ship with the pack under models/ "
                                "(re-create them with the four `python -m wan_core.demo.train` commands "
                                "in docs/demo_model.md)")
    return ModelFiles(dit=paths["dit"], vae=paths["vae"], text_encoder=paths["text_encoder"], layout="comfyui")


def load_demo_pipeline(root: str | Path | None = None, *, device=None):
    """`WanT2VPipeline` over the demo files, computing in fp32."""
    import torch

    from ..pipeline import WanT2VPipeline

    f = demo_files(root)
    return WanT2VPipeline.from_pretrained(dit=f.dit, vae=f.vae, text_encoder=f.text_encoder, device=device,
                                          dtype=torch.float32)
