"""LoRA key tables (wan_core.lora.keys): every table row round-trips, and the tables cover the real models' modules."""
from __future__ import annotations

import pytest
import torch

from wan_core.lora import keys as K
from tests.tiny_models import tiny_dit_state_dict


def _examples():
    for t in K.MODULES:
        for i in (0, 13):
            yield t.format(i=i, j=2) if "{j}" in t else t.format(i=i)


@pytest.mark.parametrize("module", sorted(set(_examples())))
def test_kohya_round_trip(module):
    assert K.from_kohya(K.kohya_name(module)) == module


def test_every_module_of_the_dit_has_a_kohya_row_and_a_param_name():
    sd = tiny_dit_state_dict()
    modules = {k.removesuffix(".weight") for k in sd if k.endswith(".weight")} | {k for k in sd if "modulation" in k}
    for m in modules:
        assert K.from_kohya(K.kohya_name(m)) == m
        assert K.param_name(m, "down") in sd
    assert K.param_name("blocks.3.modulation", "diff") == "blocks.3.modulation"
    assert K.param_name("blocks.3.norm3", "diff_b") == "blocks.3.norm3.bias"


def test_kohya_rejects_names_of_other_models():
    assert K.from_kohya("down_blocks_0_attentions_0_proj_in") is None
    assert K.from_kohya("blocks_0_self_attn_qkv") is None


def test_diffusers_round_trip_on_every_weight_of_a_diffusers_model():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        ref = diffusers.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
                                              in_channels=8, out_channels=8, text_dim=16, freq_dim=32, ffn_dim=48,
                                              num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads")
    ours = tiny_dit_state_dict()
    names = [n.removesuffix(".weight") for n, _ in ref.named_parameters() if n.endswith(".weight")]
    assert len(names) > 20
    for name in names:
        official = K.from_diffusers(name)
        assert official is not None, name
        assert K.to_diffusers(official) == name
        assert K.param_name(official, "down") in ours, (name, official)


@pytest.mark.parametrize("role", sorted(K.ROLE_SUFFIX))
def test_written_keys_split_back(role):
    key = K.lora_key("blocks.4.cross_attn.o", role)
    assert key.startswith("diffusion_model.")
    assert K.split_suffix(key.removeprefix("diffusion_model.")) == ("blocks.4.cross_attn.o", role)


def test_lora_a_b_and_unknown_suffixes():
    assert K.split_suffix("blocks.0.ffn.0.lora_A.weight") == ("blocks.0.ffn.0", "down")
    assert K.split_suffix("blocks.0.ffn.0.lora_B.weight") == ("blocks.0.ffn.0", "up")
    assert K.split_suffix("blocks.0.ffn.0.lora_mid.weight")[1] is None
