"""Tiny random LoRAs for the Wan DiT in each file format (shared by the tests/test_lora_*.py files)."""
from __future__ import annotations

import torch

from wan_core.lora import keys as K

TARGETS = ("blocks.{i}.self_attn.q", "blocks.{i}.self_attn.o", "blocks.{i}.cross_attn.k", "blocks.{i}.ffn.0",
           "blocks.{i}.ffn.2")


def lowrank_entries(model_sd, *, rank=4, seed=0, targets=TARGETS, blocks=(0, 1), scale=0.05):
    """{official module: (up [out, r], down [r, in])} for the given target templates, seeded."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in blocks:
        for t in targets:
            module = t.format(i=i)
            out_dim, in_dim = model_sd[f"{module}.weight"].shape
            out[module] = (torch.randn(out_dim, rank, generator=g) * scale, torch.randn(rank, in_dim, generator=g) * scale)
    return out


def official_sd(entries, *, alpha=None, prefix="diffusion_model.", ab=False):
    """Official / ComfyUI names: <prefix><module>.lora_down.weight / .lora_up.weight (or lora_A / lora_B), .alpha."""
    sd = {}
    for module, (up, down) in entries.items():
        sd[f"{prefix}{module}.{'lora_B' if ab else 'lora_up'}.weight"] = up.contiguous()
        sd[f"{prefix}{module}.{'lora_A' if ab else 'lora_down'}.weight"] = down.contiguous()
        if alpha is not None:
            sd[f"{prefix}{module}.alpha"] = torch.tensor(float(alpha))
    return sd


def kohya_sd(entries, *, alpha=None):
    sd = {}
    for module, (up, down) in entries.items():
        name = "lora_unet_" + K.kohya_name(module)
        sd[f"{name}.lora_up.weight"], sd[f"{name}.lora_down.weight"] = up.contiguous(), down.contiguous()
        if alpha is not None:
            sd[f"{name}.alpha"] = torch.tensor(float(alpha))
    return sd


def diffusers_sd(entries, *, prefix="transformer."):
    sd = {}
    for module, (up, down) in entries.items():
        name = prefix + K.to_diffusers(module)
        sd[f"{name}.lora_B.weight"], sd[f"{name}.lora_A.weight"] = up.contiguous(), down.contiguous()
    return sd


def merged_reference(model_sd, entries, strength=1.0, alpha=None):
    """Independent expected weights: W + strength * alpha/rank * up @ down in float64, as fp32."""
    out = {k: v.clone() for k, v in model_sd.items()}
    for module, (up, down) in entries.items():
        scale = 1.0 if alpha is None else alpha / down.shape[0]
        w = out[f"{module}.weight"]
        out[f"{module}.weight"] = (w.double() + strength * scale * (up.double() @ down.double())).to(w.dtype)
    return out
