"""Tiny random models of the real architectures, written as safetensors in the real file formats (shared by tests)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from wan_core.config import WanConfig
from wan_core.tokenizer import tokenizer_to_tensor, train_tokenizer

TINY_DIT = WanConfig(dim=128, ffn_dim=128, num_heads=1, num_layers=2, text_dim=32, freq_dim=32)
SENTENCES = [
    "a red circle moving to the left on a blue background", "a green square moving up", "a small triangle",
    "蓝色背景上，一个红色的圆形向左移动", "一个绿色的正方形向上移动", "白色背景上的三角形", "the quick brown fox jumps",
] * 4


def tiny_dit_state_dict(cfg: WanConfig = TINY_DIT, seed: int = 0) -> dict[str, torch.Tensor]:
    from wan_core.model import WanTransformer

    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in WanTransformer(cfg).state_dict().items()}


def tiny_vae_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    from wan_core.vae import VAEConfig, WanVAE

    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in WanVAE(VAEConfig(base_dim=8, decoder_base_dim=16)).state_dict().items()}


def tiny_t5_state_dict(text_dim: int = TINY_DIT.text_dim, seed: int = 0) -> dict[str, torch.Tensor]:
    import transformers

    spm = train_tokenizer(SENTENCES, vocab_size=64)
    torch.manual_seed(seed)
    cfg = transformers.UMT5Config(vocab_size=64, d_model=text_dim, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                  relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
                                  is_encoder_decoder=False, dropout_rate=0.0)
    model = transformers.UMT5EncoderModel(cfg)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    sd["spiece_model"] = tokenizer_to_tensor(spm)
    return sd


def write(sd: dict, path: Path, *, sidecar: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    if sidecar:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    return path


def write_comfy_layout(root: Path) -> Path:
    """root/{diffusion_models,vae,text_encoders}/tiny*.safetensors (+ .sha256 sidecars), as ComfyUI's models folder."""
    write(tiny_dit_state_dict(), root / "diffusion_models" / "tiny_dit.safetensors")
    write(tiny_vae_state_dict(), root / "vae" / "tiny_vae.safetensors")
    write(tiny_t5_state_dict(), root / "text_encoders" / "tiny_umt5.safetensors")
    return root
