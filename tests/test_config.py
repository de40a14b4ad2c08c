import pytest
import torch

from wan_core.config import PRESETS, WanConfig, check_preset, infer_config, preset_name


def meta_state_dict(cfg: WanConfig) -> dict:
    """Official-named DiT keys with the right shapes, on the meta device (no memory)."""
    d, pt, ph, pw = cfg.dim, *cfg.patch_size
    sd = {
        "patch_embedding.weight": (d, cfg.in_dim, pt, ph, pw), "text_embedding.0.weight": (d, cfg.text_dim),
        "time_embedding.0.weight": (d, cfg.freq_dim), "head.modulation": (1, 2, d),
        "head.head.weight": (pt * ph * pw * cfg.out_dim, d),
    }
    for i in range(cfg.num_layers):
        sd[f"blocks.{i}.ffn.0.weight"] = (cfg.ffn_dim, d)
        sd[f"blocks.{i}.modulation"] = (1, 6, d)
    return {k: torch.empty(s, device="meta") for k, s in sd.items()}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_infer_config_recovers_every_preset(name):
    cfg = infer_config(meta_state_dict(PRESETS[name]))
    assert cfg == PRESETS[name]
    assert preset_name(cfg) == name
    assert check_preset(name, cfg) is PRESETS[name]


def test_check_preset_names_each_difference():
    tiny = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2)
    with pytest.raises(ValueError, match=r"dim: preset 3072 vs checkpoint 256.*num_layers: preset 30 vs checkpoint 2"):
        check_preset("ti2v-5B", tiny)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        check_preset("nope", tiny)
    assert preset_name(tiny) is None


def test_infer_config_rejects_non_dit():
    with pytest.raises(ValueError, match="not a Wan DiT state dict"):
        infer_config({"encoder.conv1.weight": torch.empty(1, device="meta")})


def test_config_is_frozen_and_validated():
    with pytest.raises(Exception):
        PRESETS["ti2v-5B"].dim = 1
    with pytest.raises(ValueError, match="not divisible"):
        WanConfig(dim=100, num_heads=3)
