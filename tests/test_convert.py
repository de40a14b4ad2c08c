"""Key maps (wan_core.convert) round trips on tiny models' keys, and the offline tools (wan_core.tools)."""
from __future__ import annotations

import json

import pytest
import torch

from tests.tiny_models import TINY_DIT, write
from wan_core.convert import KEY_MAPS, convert, strip_prefix, to_format
from wan_core.integrity import IntegrityError
from wan_core.loading import CheckpointError, WrongModelKindError, load_dit, load_vae, read_state_dict
from wan_core.tools import convert_checkpoint, describe, verify

diffusers = pytest.importorskip("diffusers", reason="diffusers models define the foreign key layouts")
transformers = pytest.importorskip("transformers", reason="transformers defines the umT5 key layout")


pytestmark = pytest.mark.usefixtures("hash_cache")


class NotATensor:
    """An arbitrary Python object: torch.load(weights_only=True) must refuse to rebuild it."""


def shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


@pytest.fixture(scope="module")
def t5_sd():
    cfg = transformers.UMT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_heads=4,
                                  feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    sd = transformers.UMT5EncoderModel(cfg).state_dict()
    return {k: v.contiguous() for k, v in sd.items() if k != "encoder.embed_tokens.weight"}


def diffusers_dit():
    c = TINY_DIT
    return diffusers.WanTransformer3DModel(
        patch_size=c.patch_size, num_attention_heads=c.num_heads, attention_head_dim=c.head_dim, in_channels=c.in_dim,
        out_channels=c.out_dim, text_dim=c.text_dim, freq_dim=c.freq_dim, ffn_dim=c.ffn_dim, num_layers=c.num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads").state_dict()


def diffusers_vae():
    return diffusers.AutoencoderKLWan(
        base_dim=8, decoder_base_dim=16, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
        temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
        patch_size=2).state_dict()


def official_t5_keys(layers: int) -> set[str]:
    """Wan-Video/Wan2.2 wan/modules/t5.py encoder names (spec section 3.2)."""
    per = ["norm1.weight", *[f"attn.{p}.weight" for p in "qkvo"], "pos_embedding.embedding.weight", "norm2.weight",
           "ffn.gate.0.weight", "ffn.fc1.weight", "ffn.fc2.weight"]
    return {"token_embedding.weight", "norm.weight"} | {f"blocks.{i}.{p}" for i in range(layers) for p in per}


# --- key maps -------------------------------------------------------------------------------------------------------
def test_every_key_map_is_covered():
    assert set(KEY_MAPS) == {("dit", "diffusers"), ("vae", "diffusers"), ("t5", "official")}


def test_dit_diffusers_round_trip(dit_sd):
    foreign, unmatched = to_format(dit_sd, "dit", "diffusers")
    assert unmatched == []
    assert shapes(foreign) == shapes(diffusers_dit())  # every key of the diffusers model is produced, same shapes
    back, unmatched = convert(foreign, "dit", "diffusers")
    assert unmatched == [] and shapes(back) == shapes(dit_sd)
    assert all(back[k] is dit_sd[k] for k in dit_sd)  # renaming only, no copies


def test_vae_diffusers_round_trip(vae_sd):
    foreign, unmatched = to_format(vae_sd, "vae", "diffusers")
    assert unmatched == []
    assert shapes(foreign) == shapes(diffusers_vae())
    back, unmatched = convert(foreign, "vae", "diffusers")
    assert unmatched == [] and shapes(back) == shapes(vae_sd)


def test_t5_official_round_trip(t5_sd):
    official, unmatched = to_format(t5_sd, "t5", "official")
    assert unmatched == [] and set(official) == official_t5_keys(3)
    back, unmatched = convert(official, "t5", "official")
    assert unmatched == [] and shapes(back) == shapes(t5_sd)


def test_canonical_formats_are_identity(dit_sd, t5_sd):
    for sd, component, fmt in ((dit_sd, "dit", "official"), (t5_sd, "t5", "transformers")):
        assert convert(sd, component, fmt) == (dict(sd), [])


def test_unmatched_keys_reported_and_prefix_stripped(dit_sd):
    sd = {f"model.diffusion_model.{k}": v for k, v in to_format(dit_sd, "dit", "diffusers")[0].items()}
    sd, prefix = strip_prefix(sd)
    assert prefix == "model.diffusion_model."
    sd["blocks.0.attn1.to_q.lora_A.weight"] = torch.zeros(1)  # foreign row not in the table
    out, unmatched = convert({**sd, "img_emb.proj.0.weight": torch.zeros(1)}, "dit", "diffusers")
    assert "img_emb.proj.0.weight" in unmatched and "img_emb.proj.0.weight" in out
    assert "blocks.0.self_attn.q.lora_A.weight" in out  # prefix rows keep the rest of the key


def test_unknown_map_names_the_choices():
    with pytest.raises(ValueError, match="no key map for component='vae' format='comfy'"):
        convert({"a": 1}, "vae", "comfy")


# --- convert_checkpoint (python -m wan_core convert) -----------------------------------------------------------------
def test_convert_pth_round_trip(tmp_path, vae_sd):
    src = tmp_path / "Wan2.2_VAE.pth"
    torch.save({"state_dict": vae_sd, "epoch": 3}, src)  # wrapper + non-tensor entries are stripped
    dst = convert_checkpoint(src, tmp_path / "Wan2.2_VAE.safetensors", component="vae")
    sd, info = read_state_dict(dst)  # sidecar written and verified
    assert info.sha256[0] is not None and (tmp_path / "Wan2.2_VAE.safetensors.sha256").is_file()
    assert sd.keys() == vae_sd.keys() and all(torch.equal(sd[k], vae_sd[k]) for k in sd)
    assert info.metadata["converted_from"] == "Wan2.2_VAE.pth" and info.metadata["wan_core_kind"] == "vae"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic: no leftovers
    assert load_vae(dst).conv2.weight.shape[0] == 48


def test_convert_official_t5_to_canonical_names(tmp_path, t5_sd):
    official = to_format(t5_sd, "t5", "official")[0]
    src = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in official.items()}, src)
    sd, _ = read_state_dict(convert_checkpoint(src, tmp_path / "t5.safetensors"))
    assert set(sd) == set(t5_sd)  # transformers names, as ComfyUI's umt5 files
    assert all(torch.equal(sd[k], t5_sd[k].to(torch.bfloat16)) for k in sd)


def test_convert_tied_and_prefixed_dit(tmp_path, dit_sd):
    sd = {f"model.diffusion_model.{k}": v for k, v in dit_sd.items()}
    sd["model.diffusion_model.head.head.weight"] = sd["model.diffusion_model.head.head.weight"][:, :]  # a view
    src = tmp_path / "dit.pt"
    torch.save({"model": sd}, src)
    dst = convert_checkpoint(src, tmp_path / "dit.safetensors")
    got = load_dit(dst).state_dict()
    assert all(torch.equal(got[k].float(), v.float()) for k, v in dit_sd.items())


def test_convert_refusals(tmp_path, dit_sd):
    src = tmp_path / "dit.pth"
    torch.save(dit_sd, src)
    with pytest.raises(WrongModelKindError, match="converted as 'vae'.*Wan diffusion model"):
        convert_checkpoint(src, tmp_path / "x.safetensors", component="vae")
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        convert_checkpoint(src, tmp_path / "x.pth")
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": NotATensor()}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_checkpoint(evil, tmp_path / "evil.safetensors")
    assert not (tmp_path / "evil.safetensors").exists()


# --- describe / verify (python -m wan_core info | verify) ------------------------------------------------------------
def test_describe(tmp_path, dit_sd, vae_sd):
    path = write({k: v.to(torch.bfloat16) for k, v in dit_sd.items()}, tmp_path / "dit.safetensors")
    d = describe(path)
    assert d["kind"] == "dit" and d["format"] == "official" and d["prefix"] is None
    assert d["parameters"] == sum(v.numel() for v in dit_sd.values())
    assert d["dtypes"] == {"bfloat16": len(dit_sd)} and d["bytes"] == path.stat().st_size
    assert d["config"]["dim"] == TINY_DIT.dim and d["config"]["num_layers"] == TINY_DIT.num_layers
    assert d["sha256"] == (tmp_path / "dit.safetensors.sha256").read_text().split()[0]
    v = describe(write(to_format(vae_sd, "vae", "diffusers")[0], tmp_path / "vae.safetensors", sidecar=False))
    assert v["kind"] == "vae" and v["format"] == "diffusers" and v["config"]["z_dim"] == 48 and v["sha256"] is None
    json.dumps(describe(path))  # the CLI prints it as JSON


def test_verify(tmp_path, dit_sd):
    path = write(dit_sd, tmp_path / "dit.safetensors")
    digest = (tmp_path / "dit.safetensors.sha256").read_text().split()[0]
    assert verify(path) == digest
    assert verify(path, digest.upper()) == digest
    with pytest.raises(IntegrityError, match=digest):
        verify(path, "0" * 64)
    (tmp_path / "dit.safetensors.sha256").unlink()
    with pytest.raises(IntegrityError, match="no hash given and no sidecar"):
        verify(path)
