"""LoRA file formats: detection from the keys, identical adapters from every naming, diff/diff_b, DoRA refused."""
from __future__ import annotations

import pytest
import torch

from tests._lora_synth import diffusers_sd, kohya_sd, lowrank_entries, official_sd
from tests.tiny_models import tiny_dit_state_dict, write
from wan_core.lora import Diff, LoraError, LowRank, detect_format, parse_lora, read_lora


@pytest.fixture(scope="module")
def entries():
    return lowrank_entries(tiny_dit_state_dict(), rank=4, seed=3)


FORMATS = {
    "official": (lambda e: official_sd(e, alpha=2.0), "official"),
    "official_model_prefix": (lambda e: official_sd(e, alpha=2.0, prefix="model.diffusion_model."), "official"),
    "official_bare": (lambda e: official_sd(e, alpha=2.0, prefix=""), "official"),
    "official_lora_A_B": (lambda e: official_sd(e, alpha=2.0, ab=True), "official"),
    "kohya": (lambda e: kohya_sd(e, alpha=2.0), "kohya"),
    "kohya_wan_fun": (lambda e: {k.replace("lora_unet_", "lora_unet__"): v for k, v in kohya_sd(e, alpha=2.0).items()},
                      "kohya"),
    "diffusers": (lambda e: diffusers_sd(e), "diffusers"),
    "diffusers_no_prefix": (lambda e: diffusers_sd(e, prefix=""), "diffusers"),
    "peft_base_model": (lambda e: diffusers_sd(e, prefix="base_model.model."), "diffusers"),
}


@pytest.mark.parametrize("case", sorted(FORMATS))
def test_every_format_gives_the_same_adapters(case, entries):
    build, fmt = FORMATS[case]
    sd = build(entries)
    assert detect_format(sd) == fmt
    lora = parse_lora(sd, case)
    assert lora.unmatched == ()
    assert sorted(lora.adapters) == sorted(f"{m}.weight" for m in entries)
    has_alpha = fmt != "diffusers"
    for module, (up, down) in entries.items():
        a = lora.adapters[f"{module}.weight"]
        assert isinstance(a, LowRank) and torch.equal(a.up, up) and torch.equal(a.down, down)
        assert a.scale == (2.0 / 4 if has_alpha else 1.0)


def test_diff_and_diff_b_on_norms_modulation_and_biases():
    g = torch.Generator().manual_seed(0)
    sd = {"diffusion_model.blocks.0.norm3.diff": torch.randn(128, generator=g),
          "diffusion_model.blocks.0.norm3.diff_b": torch.randn(128, generator=g),
          "diffusion_model.blocks.1.modulation.diff": torch.randn(1, 6, 128, generator=g),
          "diffusion_model.head.modulation.diff": torch.randn(1, 2, 128, generator=g),
          "diffusion_model.blocks.0.self_attn.q.diff_b": torch.randn(128, generator=g),
          "diffusion_model.time_projection.1.diff": torch.randn(768, 128, generator=g)}
    lora = parse_lora(sd)
    assert set(lora.adapters) == {"blocks.0.norm3.weight", "blocks.0.norm3.bias", "blocks.1.modulation",
                                  "head.modulation", "blocks.0.self_attn.q.bias", "time_projection.1.weight"}
    assert all(isinstance(a, Diff) for a in lora.adapters.values())
    d = lora.adapters["blocks.1.modulation"].delta((1, 6, 128), "cpu", 0.5)
    assert torch.equal(d, 0.5 * sd["diffusion_model.blocks.1.modulation.diff"])


def test_dora_is_refused_by_name(entries):
    sd = official_sd(entries)
    sd["diffusion_model.blocks.0.self_attn.q.dora_scale"] = torch.ones(128, 1)
    with pytest.raises(LoraError, match=r"DoRA.*dora_scale.*blocks\.0\.self_attn\.q\.dora_scale.*not supported"):
        parse_lora(sd)


def test_incomplete_pair_names_the_key(entries):
    sd = official_sd(entries)
    del sd["diffusion_model.blocks.1.ffn.0.lora_up.weight"]
    with pytest.raises(LoraError, match=r"'diffusion_model\.blocks\.1\.ffn\.0\.lora_down\.weight' has no matching up"):
        parse_lora(sd, "x.safetensors")


def test_rank_mismatch_between_up_and_down(entries):
    sd = official_sd(entries)
    sd["diffusion_model.blocks.0.ffn.0.lora_up.weight"] = torch.zeros(128, 3)
    with pytest.raises(LoraError, match="do not share a rank"):
        parse_lora(sd)


def test_unknown_keys_are_kept_for_the_warning(entries):
    sd = official_sd(entries, alpha=1.0)
    sd["diffusion_model.blocks.0.ffn.0.lora_mid.weight"] = torch.zeros(4, 4)
    sd["diffusion_model.blocks.0.cross_attn.v.alpha"] = torch.tensor(1.0)  # an alpha without a pair
    lora = parse_lora(sd)
    assert set(lora.unmatched) == {"diffusion_model.blocks.0.ffn.0.lora_mid.weight",
                                   "diffusion_model.blocks.0.cross_attn.v.alpha"}


def test_read_lora_checks_the_sidecar_and_refuses_pickles(tmp_path, entries):
    from wan_core.integrity import IntegrityError
    from wan_core.loading import CheckpointError

    path = write(official_sd(entries, alpha=4.0), tmp_path / "style.safetensors")
    lora = read_lora(path)
    assert lora.name == "style.safetensors" and lora.format == "official" and len(lora.adapters) == len(entries)
    (tmp_path / "style.safetensors.sha256").write_text("0" * 64 + "  style.safetensors\n")
    with pytest.raises(IntegrityError):
        read_lora(path)
    assert read_lora(path, verify=False).adapters.keys() == lora.adapters.keys()
    torch.save(official_sd(entries), tmp_path / "style.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        read_lora(tmp_path / "style.pt")


def test_a_file_with_no_lora_entries(tmp_path):
    path = write({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
                  "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)},
                 tmp_path / "sd15.safetensors", sidecar=False)
    with pytest.raises(LoraError, match="holds no LoRA entries this loader understands"):
        read_lora(path)
