"""LoRA parity with diffusers (`load_lora_weights` + `fuse_lora`, PEFT underneath) on a tiny random
WanTransformer3DModel: the same LoRA file gives the same fused weights and the same DiT forward.

Measured (CPU, fp32): fused weights identical (max abs difference 0.0) for the diffusers/PEFT and the official/ComfyUI
(alpha, strength 0.7, `.diff_b`) files; DiT forward relative error 5.4e-6 / 5.1e-6, the level of the DiT parity
itself (tests/test_dit_parity.py, tolerance 1e-4).
"""
from __future__ import annotations

import pytest
import torch

from tests._lora_synth import diffusers_sd, lowrank_entries, official_sd
from tests.tiny_models import write
from wan_core.convert import convert
from wan_core.lora import apply_loras, read_lora
from wan_core.model import WanTransformer

diffusers = pytest.importorskip("diffusers", reason="the parity reference needs diffusers (pip install diffusers)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft (requirements-dev.txt)")
from tests.test_dit_parity import CFG, check_close, diffusers_model, make_inputs, pad, run_ref  # noqa: E402

TARGETS = ("blocks.{i}.self_attn.q", "blocks.{i}.self_attn.k", "blocks.{i}.self_attn.v", "blocks.{i}.self_attn.o",
           "blocks.{i}.cross_attn.q", "blocks.{i}.cross_attn.k", "blocks.{i}.cross_attn.v", "blocks.{i}.cross_attn.o",
           "blocks.{i}.ffn.0", "blocks.{i}.ffn.2")


def _with_diff_b(sd, entries, seed=5):
    g = torch.Generator().manual_seed(seed)
    for module, (up, _) in entries.items():  # on every LoRA layer: diffusers leaves missing lora_B biases unset
        sd[f"diffusion_model.{module}.diff_b"] = torch.randn(up.shape[0], generator=g) * 0.1
    return sd


CASES = {
    "diffusers_peft": (lambda e: diffusers_sd(e), 1.0),
    "official_alpha_diff_b": (lambda e: _with_diff_b(official_sd(e, alpha=2.0), e), 0.7),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_weights_and_forward_equal_diffusers(case, tmp_path):
    build, strength = CASES[case]
    ref = diffusers_model(CFG)
    base, _ = convert({k: v.clone() for k, v in ref.state_dict().items()}, "dit", "diffusers")
    ours = WanTransformer.from_state_dict(base).eval()
    entries = lowrank_entries(base, targets=TARGETS, rank=4, seed=0, scale=0.1)
    path = write(build(entries), tmp_path / f"{case}.safetensors")

    pipe = diffusers.WanPipeline(transformer=ref, vae=None, text_encoder=None, tokenizer=None, scheduler=None)
    pipe.load_lora_weights(str(path), adapter_name="test")
    pipe.fuse_lora(lora_scale=strength)
    pipe.unload_lora_weights()  # keeps the fused weights, drops the PEFT layers
    fused, unmatched = convert(pipe.transformer.state_dict(), "dit", "diffusers")
    assert unmatched == []

    apply_loras(ours, [(read_lora(path), strength)])
    mine = ours.state_dict()
    changed = [k for k in mine if not torch.equal(mine[k], base[k])]
    assert len(changed) >= len(entries)
    err = max((mine[k] - fused[k]).abs().max().item() for k in fused)
    assert err <= 1e-6, f"fused weights differ by {err:.3g}"

    x, t, ctx = make_inputs()
    with torch.no_grad():
        out = ours(x, t, ctx)
    check_close(out, run_ref(pipe.transformer, x, t, pad(ctx)))
