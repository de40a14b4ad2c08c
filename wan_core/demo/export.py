"""Writing and reading the demo model files: official key names, safetensors, `sha256sum`-format sidecars.

The text encoder is saved with transformers key names (as ComfyUI's repackaged umT5) plus the tokenizer as the
uint8 `spiece_model` tensor; the tied `encoder.embed_tokens.weight` copy is not stored (the loader re-ties it).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import SAMPLING_DEFAULTS_KEY, sampling_defaults_json
from ..tokenizer import SpieceTokenizer, tokenizer_to_tensor
from . import DEMO_DEFAULTS

MODEL_FILES = {  # relative to a models/ folder (ComfyUI layout); the pack ships them in <pack>/models
    "dit": "diffusion_models/wan2.2_tiny_demo_dit.safetensors",
    "text_encoder": "text_encoders/wan2.2_tiny_demo_umt5.safetensors",
    "vae": "vae/wan2.2_tiny_demo_vae.safetensors",
}
_TIED = "encoder.embed_tokens.weight"


def write_sidecar(path: Path) -> str:
    """Write `<file>.sha256` as `sha256sum` does ("<hex>  <name>") and return the digest."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    Path(str(path) + ".sha256").write_text(f"{digest}  {Path(path).name}\n", encoding="utf-8")
    return digest


def _save(sd: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None, metadata: dict | None) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach()).contiguous()
           for k, v in sd.items()}
    save_file(out, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return write_sidecar(path)


def save_dit(dit: torch.nn.Module, path: Path, *, dtype=None, metadata=None, sampling_defaults=DEMO_DEFAULTS) -> str:
    """DiT state dict (official Wan names) -> safetensors + sidecar; returns the sha256.

    The file carries `sampling_defaults` (a SamplingConfig; the demo's by default) as its SAMPLING_DEFAULTS_KEY
    metadata entry, so every front end generates with them unless told otherwise.
    """
    entry = {SAMPLING_DEFAULTS_KEY: sampling_defaults_json(sampling_defaults)} if sampling_defaults is not None else {}
    return _save(dit.state_dict(), path, dtype, {**(metadata or {}), **entry})


def save_vae(vae: torch.nn.Module, path: Path, *, dtype=None, metadata=None) -> str:
    """VAE state dict (official Wan2.2 VAE names) -> safetensors + sidecar; returns the sha256."""
    return _save(vae.state_dict(), path, dtype, metadata)


def save_text_encoder(model: torch.nn.Module, tokenizer: SpieceTokenizer, path: Path, *, dtype=None,
                      metadata=None) -> str:
    """transformers UMT5EncoderModel + tokenizer -> safetensors with `spiece_model` + sidecar; returns the sha256."""
    sd = {k: v for k, v in model.state_dict().items() if k != _TIED}
    sd["spiece_model"] = tokenizer_to_tensor(tokenizer.model_bytes)
    return _save(sd, path, dtype, metadata)


def load_stage(path: Path):
    """Read back a VAE written by save_vae (sidecar verified) as a fresh, trainable fp32 module."""
    from ..loading import load_vae
    from ..vae import WanVAE

    loaded = load_vae(path, dtype=torch.float32)  # memory-mapped: copy into new parameters before training
    vae = WanVAE(loaded.cfg)
    vae.load_state_dict(loaded.state_dict())
    return vae.eval()
