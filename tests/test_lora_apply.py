"""Applying LoRAs: merged weights vs an independent float64 reference, forward with LoRA == forward of the merged
model, bit-exact unload, bf16 and fp8-packed models, validation messages, load_dit / pipeline / CLI front ends."""
from __future__ import annotations

import logging

import pytest
import torch

from tests._lora_synth import kohya_sd, lowrank_entries, merged_reference, official_sd
from tests.tiny_models import TINY_DIT, tiny_dit_state_dict, write
from wan_core.lora import (LoraError, applied_loras, apply_loras, lora_deltas, parse_lora, parse_lora_arg, read_lora,
                           remove_loras, set_loras)
from wan_core.model import WanTransformer

ALL_LINEARS = ("blocks.{i}.self_attn.q", "blocks.{i}.self_attn.k", "blocks.{i}.self_attn.v", "blocks.{i}.self_attn.o",
               "blocks.{i}.cross_attn.q", "blocks.{i}.cross_attn.k", "blocks.{i}.cross_attn.v",
               "blocks.{i}.cross_attn.o", "blocks.{i}.ffn.0", "blocks.{i}.ffn.2")


@pytest.fixture(scope="module")
def base_sd():
    return tiny_dit_state_dict()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 48, 2, 8, 8, generator=g), torch.tensor([700.0]),
            torch.randn(1, 5, TINY_DIT.text_dim, generator=g))


def _forward(model):
    with torch.no_grad():
        return model(*_inputs())


def test_merge_matches_float64_reference_and_unload_is_bit_exact(base_sd):
    model = WanTransformer.from_state_dict(base_sd)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    e = lowrank_entries(base_sd, targets=ALL_LINEARS, rank=8, seed=1)
    apply_loras(model, [(parse_lora(official_sd(e, alpha=4.0)), 0.75)])
    want = merged_reference(base_sd, e, 0.75, alpha=4.0)
    err = max((model.state_dict()[k] - want[k]).abs().max().item() for k in want)
    assert err < 1e-6
    changed = [k for k in before if not torch.equal(before[k], model.state_dict()[k])]
    assert len(changed) == len(e)
    assert applied_loras(model) == [("LoRA", 0.75)]
    assert remove_loras(model) == [("LoRA", 0.75)]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert remove_loras(model) == []


def test_forward_with_lora_equals_forward_of_merged_model(base_sd):
    e = lowrank_entries(base_sd, targets=ALL_LINEARS, rank=4, seed=2, scale=0.1)
    model = WanTransformer.from_state_dict(base_sd).eval()
    base_out = _forward(model)
    apply_loras(model, [(parse_lora(kohya_sd(e, alpha=2.0)), 1.0)])
    merged = WanTransformer.from_state_dict(merged_reference(base_sd, e, 1.0, alpha=2.0)).eval()
    got, want = _forward(model), _forward(merged)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert (got - base_out).abs().max() > 1e-3 * want.abs().max()  # the LoRA does change the output


def test_two_loras_stack_and_negative_strength_cancels(base_sd):
    model = WanTransformer.from_state_dict(base_sd)
    e1 = lowrank_entries(base_sd, seed=4)
    e2 = lowrank_entries(base_sd, seed=5, targets=("blocks.{i}.ffn.0",))
    a, b = parse_lora(official_sd(e1), "a"), parse_lora(official_sd(e2, alpha=2.0), "b")
    apply_loras(model, [(a, 1.0)])
    apply_loras(model, [(b, -0.5)])
    w = model.state_dict()["blocks.1.ffn.0.weight"]
    up1, dn1 = e1["blocks.1.ffn.0"]
    up2, dn2 = e2["blocks.1.ffn.0"]
    want = base_sd["blocks.1.ffn.0.weight"].double() + up1.double() @ dn1.double() - 0.5 * 0.5 * (up2.double() @ dn2.double())
    assert (w.double() - want).abs().max() < 1e-6
    remove_loras(model)
    assert torch.equal(model.state_dict()["blocks.1.ffn.0.weight"], base_sd["blocks.1.ffn.0.weight"])


def test_bf16_model_is_patched_in_fp32_and_stored_as_bf16(base_sd):
    model = WanTransformer.from_state_dict(base_sd, dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    e = lowrank_entries(base_sd, seed=6)
    sd = official_sd(e, alpha=4.0)
    sd["diffusion_model.blocks.0.modulation.diff"] = torch.randn(1, 6, 128) * 0.01  # a KEEP_FP32 parameter
    lora = parse_lora(sd)
    apply_loras(model, [(lora, 0.6)])
    now = model.state_dict()
    for module, (up, down) in e.items():
        k = f"{module}.weight"
        want = (before[k].float() + (0.6 * 4.0 / 4) * (up @ down)).to(torch.bfloat16)
        assert now[k].dtype == torch.bfloat16 and torch.equal(now[k], want)
    mod = now["blocks.0.modulation"]
    assert mod.dtype == torch.float32
    assert torch.equal(mod, before["blocks.0.modulation"] + 0.6 * sd["diffusion_model.blocks.0.modulation.diff"])
    remove_loras(model)
    assert all(torch.equal(before[k], v) and before[k].dtype == v.dtype for k, v in model.state_dict().items())


def test_packed_fp8_layers_get_patches_not_merges(tmp_path, base_sd):
    from wan_core.loading import load_dit
    from wan_core.quant.linear import dense_state_dict

    sd = {}
    for k, v in base_sd.items():  # scaled fp8 block Linears (Kijai layout), as tests/test_scaled_fp8.py writes them
        if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2:
            scale = (v.abs().max() / 448.0).float()
            sd[k], sd[k.removesuffix("weight") + "scale_weight"] = (v / scale).to(torch.float8_e4m3fn), scale.reshape(())
        else:
            sd[k] = v
    model = load_dit(write(sd, tmp_path / "dit_fp8_scaled.safetensors", sidecar=False), dtype=torch.float32)
    q = model.get_submodule("blocks.0.self_attn.q")
    packed = q.weight.clone()
    dense = WanTransformer.from_state_dict(dense_state_dict(model)).eval()
    e = lowrank_entries(base_sd, seed=7, scale=0.1)
    lora = parse_lora(official_sd(e, alpha=4.0))
    apply_loras(model, [(lora, 1.0)])
    apply_loras(dense, [(lora, 1.0)])
    assert len(q.patches) == 1 and torch.equal(q.weight, packed)  # the packed data is untouched
    got, want = _forward(model), _forward(dense)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    remove_loras(model)
    assert q.patches == [] and torch.equal(q.weight, packed)


def test_lora_deltas_are_the_fp32_deltas(base_sd):
    e = lowrank_entries(base_sd, seed=8)
    model = WanTransformer.from_state_dict(base_sd)
    deltas = lora_deltas(model, [(parse_lora(official_sd(e, alpha=8.0)), 0.5)])
    up, down = e["blocks.0.ffn.2"]
    d = deltas["blocks.0.ffn.2.weight"](base_sd["blocks.0.ffn.2.weight"])
    assert d.dtype == torch.float32 and torch.allclose(d, 0.5 * 2.0 * (up @ down), atol=1e-7)


def _fake_14b_lora():
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(40):
        for m in ("self_attn.q", "cross_attn.k"):
            sd[f"diffusion_model.blocks.{i}.{m}.lora_down.weight"] = torch.randn(2, 5120, generator=g)
            sd[f"diffusion_model.blocks.{i}.{m}.lora_up.weight"] = torch.randn(5120, 2, generator=g)
    return sd


def test_lora_for_another_model_says_which(base_sd):
    model = WanTransformer.from_state_dict(base_sd)
    with pytest.raises(LoraError, match=r"this LoRA is for a model of width 5120 \(Wan 14B.*40 blocks; the loaded "
                                        r"DiT has width 128, 2 blocks"):
        apply_loras(model, [(parse_lora(_fake_14b_lora(), "wan14b.safetensors"), 1.0)])
    assert all(torch.equal(v, base_sd[k]) for k, v in model.state_dict().items())


def test_partial_match_warns_with_the_keys(base_sd, caplog):
    model = WanTransformer.from_state_dict(base_sd)
    sd = official_sd(lowrank_entries(base_sd, seed=9), alpha=1.0)
    sd["diffusion_model.blocks.7.self_attn.q.lora_down.weight"] = torch.zeros(4, 128)
    sd["diffusion_model.blocks.7.self_attn.q.lora_up.weight"] = torch.zeros(128, 4)
    sd["diffusion_model.img_emb.proj.1.diff"] = torch.zeros(128, 128)
    with caplog.at_level(logging.WARNING, logger="wan_core.lora"):
        apply_loras(model, [(parse_lora(sd, "partial.safetensors"), 1.0)])
    msg = caplog.text
    assert "partial.safetensors: 3 of its" in msg and "blocks.7.self_attn.q.lora_down.weight" in msg
    assert "img_emb.proj.1.diff" in msg


def test_shape_mismatch_names_the_key(base_sd):
    model = WanTransformer.from_state_dict(base_sd)
    sd = official_sd(lowrank_entries(base_sd, seed=10))
    sd["diffusion_model.blocks.1.ffn.0.lora_up.weight"] = torch.zeros(256, 4)
    with pytest.raises(LoraError, match=r"'diffusion_model\.blocks\.1\.ffn\.0\.lora_down\.weight' has shape .*"
                                        r"does not fit blocks\.1\.ffn\.0\.weight \(128, 128\)"):
        apply_loras(model, [(parse_lora(sd), 1.0)])
    assert all(torch.equal(v, base_sd[k]) for k, v in model.state_dict().items())  # nothing half-applied


def test_not_a_wan_lora():
    model = WanTransformer.from_state_dict(tiny_dit_state_dict())
    sd = {"diffusion_model.input_blocks.1.1.proj_in.lora_down.weight": torch.zeros(4, 320),
          "diffusion_model.input_blocks.1.1.proj_in.lora_up.weight": torch.zeros(320, 4)}
    with pytest.raises(LoraError, match="not a LoRA for a Wan diffusion model"):
        apply_loras(model, [(parse_lora(sd), 1.0)])


def test_set_loras_switches_between_branches(base_sd):
    model = WanTransformer.from_state_dict(base_sd)
    a = parse_lora(official_sd(lowrank_entries(base_sd, seed=11)), "a")
    set_loras(model, [(a, 1.0)])
    with_a = {k: v.clone() for k, v in model.state_dict().items()}
    set_loras(model, [])
    assert all(torch.equal(v, base_sd[k]) for k, v in model.state_dict().items())
    set_loras(model, [(a, 1.0)])
    assert all(torch.equal(v, with_a[k]) for k, v in model.state_dict().items())


def test_load_dit_and_pipeline_front_ends(tmp_path, base_sd):
    from wan_core.loading import load_dit
    from wan_core.pipeline import WanT2VPipeline

    e = lowrank_entries(base_sd, seed=12)
    lora_file = write(official_sd(e, alpha=2.0), tmp_path / "style.safetensors")
    dit_file = write(base_sd, tmp_path / "dit.safetensors")
    want = merged_reference(base_sd, e, 0.5, alpha=2.0)
    model = load_dit(dit_file, loras=[(lora_file, 0.5)])
    assert max((model.state_dict()[k] - want[k]).abs().max().item() for k in want) < 1e-6
    pipe = WanT2VPipeline(dit=load_dit(dit_file), vae=torch.nn.Linear(1, 1), text_encoder=None)
    assert pipe.load_lora(lora_file, 0.5) is pipe
    assert all(torch.equal(pipe.dit.state_dict()[k], model.state_dict()[k]) for k in want)
    assert pipe.unload_loras() == [("style.safetensors", 0.5)]
    assert all(torch.equal(pipe.dit.state_dict()[k], base_sd[k]) for k in base_sd)
    with pytest.raises(FileNotFoundError, match="LoRA file not found"):
        pipe.load_lora(tmp_path / "missing.safetensors")


def test_cli_lora_argument(tmp_path):
    from wan_core.cli import build_parser

    args = build_parser().parse_args(["generate", "p", "--lora", "a.safetensors:0.5", "--lora", "b.safetensors"])
    assert [parse_lora_arg(s) for s in args.lora] == [("a.safetensors", 0.5), ("b.safetensors", 1.0)]
    assert parse_lora_arg("C:/loras/x.safetensors") == ("C:/loras/x.safetensors", 1.0)
    assert parse_lora_arg("C:/loras/x.safetensors:-1.5") == ("C:/loras/x.safetensors", -1.5)


def test_cli_generate_with_two_loras(tmp_path, base_sd):
    import json

    from tests.tiny_models import write_comfy_layout
    from wan_core.cli import main
    from wan_core.video import read_video

    models = write_comfy_layout(tmp_path / "models")
    a = write(official_sd(lowrank_entries(base_sd, seed=13), alpha=4.0), tmp_path / "a.safetensors")
    b = write(kohya_sd(lowrank_entries(base_sd, seed=14)), tmp_path / "b.safetensors")
    common = ["--model-dir", str(models), "--width", "32", "--height", "32", "--frames", "5", "--steps", "2",
              "--device", "cpu"]
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle", "-o", str(out), *common, "--lora", f"{a}:0.8", "--lora", str(b)]) == 0
    frames, meta = read_video(out)
    assert json.loads(meta["wan_t2v_parameters"])["loras"] == ["a.safetensors:0.8", "b.safetensors:1"]
    plain = tmp_path / "plain.mp4"
    assert main(["generate", "a red circle", "-o", str(plain), *common]) == 0
    assert (read_video(plain)[0].astype(int) != frames.astype(int)).any()  # the LoRAs change the video


def test_cli_lora_for_the_wrong_model_is_a_usage_error(tmp_path, capsys):
    from tests.tiny_models import write_comfy_layout
    from wan_core.cli import main

    models = write_comfy_layout(tmp_path / "models")
    bad = write(_fake_14b_lora(), tmp_path / "wan14b.safetensors", sidecar=False)
    code = main(["generate", "x", "-o", str(tmp_path / "x.mp4"), "--model-dir", str(models), "--width", "32",
                 "--height", "32", "--frames", "5", "--steps", "1", "--device", "cpu", "--lora", str(bad)])
    assert code == 2 and "width 5120 (Wan 14B" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
