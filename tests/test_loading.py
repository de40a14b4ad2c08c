"""Checkpoint loading (wan_core.loading) and model-folder resolution (wan_core.model_files) on tiny random models."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from tests.tiny_models import tiny_t5_state_dict, write
from wan_core import loading
from wan_core.convert import to_format
from wan_core.integrity import IntegrityError
from wan_core.loading import (CheckpointError, WrongModelKindError, detect_format, detect_kind, is_scaled_fp8,
                              load_dit, load_text_encoder, load_vae, read_header, read_state_dict)
from wan_core.model_files import ModelFiles, file_kind, resolve_model_dir


pytestmark = pytest.mark.usefixtures("hash_cache")


@pytest.fixture(scope="module")
def t5_sd():
    return tiny_t5_state_dict()


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def vae21_state_dict():
    """Key layout of a Wan2.1 VAE (flat decoder.upsamples.{i}, 16 latent channels) with tiny shapes."""
    shapes = {"encoder.conv1.weight": (8, 3, 3, 3, 3), "encoder.conv1.bias": (8,),
              "encoder.downsamples.0.residual.0.gamma": (8, 1, 1, 1), "encoder.head.2.weight": (32, 8, 3, 3, 3),
              "conv1.weight": (32, 32, 1, 1, 1), "conv2.weight": (16, 16, 1, 1, 1),
              "decoder.conv1.weight": (8, 16, 3, 3, 3), "decoder.middle.0.residual.0.gamma": (8, 1, 1, 1),
              "decoder.upsamples.0.residual.2.weight": (8, 8, 3, 3, 3), "decoder.head.2.weight": (3, 8, 3, 3, 3)}
    return {k: torch.randn(s) for k, s in shapes.items()}


# --- reading -------------------------------------------------------------------------------------------------------
def test_read_single_file_is_exact(tmp_path, dit_sd):
    sd, info = read_state_dict(write(dit_sd, tmp_path / "dit.safetensors"))
    assert_same(sd, dit_sd)
    assert info.files == (tmp_path / "dit.safetensors",) and info.nbytes == info.files[0].stat().st_size
    assert info.sha256[0] is not None and len(info.sha256[0]) == 64  # the sidecar was checked


def test_sharded_index_and_folder(tmp_path, dit_sd):
    keys = sorted(dit_sd)
    half = len(keys) // 2
    shards = {"m-00001-of-00002.safetensors": keys[:half], "m-00002-of-00002.safetensors": keys[half:]}
    for name, part in shards.items():
        save_file({k: dit_sd[k] for k in part}, str(tmp_path / name))
    index = tmp_path / "m.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    for path in (index, tmp_path):
        sd, info = read_state_dict(path)
        assert_same(sd, dit_sd)
        assert len(info.files) == 2
    assert_same(load_dit(index).state_dict(), load_dit(write(dit_sd, tmp_path / "one" / "d.safetensors")).state_dict())
    with pytest.raises(ValueError, match="2 shards"):
        read_state_dict(index, sha256="0" * 64)
    (tmp_path / "m-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"not in .*m-00002-of-00002\.safetensors"):
        read_state_dict(index)


def test_index_listing_absent_tensor(tmp_path, dit_sd):
    write({"a": torch.zeros(2)}, tmp_path / "s1.safetensors", sidecar=False)
    index = tmp_path / "x.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}))
    with pytest.raises(CheckpointError, match="no shard holds"):
        read_state_dict(index)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt", ".bin"])
def test_pickles_refused_with_convert_hint(tmp_path, suffix):
    path = tmp_path / f"Wan2.2_VAE{suffix}"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"pickle.*python -m wan_core convert Wan2\.2_VAE" + suffix):
        read_state_dict(path)


def test_pickle_disguised_as_safetensors_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="pickle"):
        read_state_dict(path, verify=False)


def test_truncated_file(tmp_path, dit_sd):
    path = write(dit_sd, tmp_path / "dit.safetensors", sidecar=False)
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    with pytest.raises(CheckpointError, match=r"dit\.safetensors is damaged or incomplete.*truncated.*|re-download"):
        read_state_dict(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="too short"):
        read_state_dict(path)
    path.write_bytes(data[:100])
    with pytest.raises(CheckpointError, match="does not fit"):
        read_state_dict(path)


def test_byte_flips(tmp_path, dit_sd):
    path = write(dit_sd, tmp_path / "dit.safetensors")  # with sidecar
    good = path.read_bytes()
    header_flip = bytearray(good)
    header_flip[9] ^= 0xFF  # inside the JSON header
    path.write_bytes(bytes(header_flip))
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        read_state_dict(path, verify=False)
    data_flip = bytearray(good)
    data_flip[-3] ^= 0x01  # inside tensor data: only the hash can tell
    path.write_bytes(bytes(data_flip))
    with pytest.raises(IntegrityError) as err:
        read_state_dict(path)
    import hashlib
    assert hashlib.sha256(good).hexdigest() in str(err.value)
    assert hashlib.sha256(bytes(data_flip)).hexdigest() in str(err.value)
    sd, info = read_state_dict(path, verify=False)  # the caller may opt out
    assert info.sha256 == (None,) and len(sd) == len(dit_sd)


def test_given_hash(tmp_path, dit_sd):
    path = write(dit_sd, tmp_path / "dit.safetensors", sidecar=False)
    import hashlib
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_state_dict(path, sha256=digest)[1].sha256 == (digest,)
    with pytest.raises(IntegrityError, match="re-download"):
        load_dit(path, sha256="1" * 64)


def test_header_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(3)}, str(path), metadata={"modelspec.title": "x"})
    header, meta = read_header(path)
    assert header["a"]["shape"] == [3] and meta == {"modelspec.title": "x"}
    assert read_state_dict(path)[1].metadata == {"modelspec.title": "x"}


# --- detection ------------------------------------------------------------------------------------------------------
def test_detect_kind_and_format(dit_sd, vae_sd, t5_sd):
    cases = [
        (dit_sd, "dit", "official"),
        ({f"model.diffusion_model.{k}": v for k, v in dit_sd.items()}, "dit", "official"),
        (to_format(dit_sd, "dit", "diffusers")[0], "dit", "diffusers"),
        (vae_sd, "vae", "official"),
        (to_format(vae_sd, "vae", "diffusers")[0], "vae", "diffusers"),
        (t5_sd, "t5", "transformers"),
        (to_format(t5_sd, "t5", "official")[0], "t5", "official"),
    ]
    for sd, kind, fmt in cases:
        assert detect_kind(sd) == kind
        assert detect_format(sd, kind) == fmt
    assert detect_kind(vae21_state_dict()) == "vae2.1"
    assert detect_kind({"lora_unet.x.lora_down.weight": torch.zeros(1)}) == "unknown"
    with pytest.raises(ValueError, match="cannot name the format"):
        detect_format({}, "unknown")


# --- loaders -------------------------------------------------------------------------------------------------------
def test_dit_every_format_same_tensors(tmp_path, dit_sd, caplog):
    files = {
        "official": write(dit_sd, tmp_path / "official.safetensors"),
        "comfy": write({f"model.diffusion_model.{k}": v for k, v in dit_sd.items()}, tmp_path / "comfy.safetensors"),
        "diffusers": write(to_format(dit_sd, "dit", "diffusers")[0], tmp_path / "transformer" / "d.safetensors"),
    }
    with caplog.at_level(logging.INFO, logger="wan_core.loading"):
        models = {name: load_dit(path) for name, path in files.items()}
    for model in models.values():
        assert_same(model.state_dict(), models["official"].state_dict())
    lines = [r.getMessage() for r in caplog.records if r.name == "wan_core.loading" and r.getMessage().startswith("loaded")]
    assert len(lines) == 3 and "diffusers" in lines[2] and "model.diffusion_model." in lines[1] and " s" in lines[0]
    ref = {k: v for k, v in dit_sd.items()}
    got = models["official"].state_dict()
    assert all(torch.equal(got[k].float(), ref[k].float()) for k in ref)
    assert load_dit(files["comfy"], dtype=torch.bfloat16).blocks[0].self_attn.q.weight.dtype == torch.bfloat16


def test_vae_formats_same_tensors(tmp_path, vae_sd):
    a = load_vae(write(vae_sd, tmp_path / "wan2.2_vae.safetensors"))
    b = load_vae(write(to_format(vae_sd, "vae", "diffusers")[0], tmp_path / "vae" / "diffusion_pytorch_model.safetensors"))
    assert_same(a.state_dict(), b.state_dict())
    assert_same(a.state_dict(), vae_sd)


def test_t5_formats_and_dtypes(tmp_path, t5_sd):
    ref = load_text_encoder(write(t5_sd, tmp_path / "umt5.safetensors"))
    official = {**to_format({k: v for k, v in t5_sd.items() if k != "spiece_model"}, "t5", "official")[0],
                "spiece_model": t5_sd["spiece_model"]}
    tied = {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v for k, v in t5_sd.items()}
    for sd in (official, tied):
        enc = load_text_encoder(write(sd, tmp_path / "x" / f"{len(sd)}.safetensors"))
        assert_same(enc.model.state_dict(), ref.model.state_dict())
    half = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in t5_sd.items()}
    enc = load_text_encoder(write(half, tmp_path / "umt5_bf16.safetensors"))
    assert enc.dtype == torch.bfloat16  # dtype=None keeps the stored dtype
    assert enc.encode(["a red circle"])[0].shape[-1] == t5_sd["shared.weight"].shape[1]


def fp8_scaled(sd: dict) -> dict:
    """ComfyUI's fp8-scaled layout: e4m3 Linear weights, a per-layer fp32 `scale_weight`, a `scaled_fp8` marker."""
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in sd.items():
        if k.startswith("encoder.block.") and v.ndim == 2 and "relative_attention_bias" not in k:
            scale = v.abs().max().float() / 448.0
            out[k] = (v / scale).to(torch.float8_e4m3fn)
            out[k.removesuffix("weight") + "scale_weight"] = scale.reshape(())
        else:
            out[k] = v
    return out


def test_fp8_scaled_t5_dequantised(tmp_path, t5_sd):
    sd = fp8_scaled(t5_sd)
    assert is_scaled_fp8(sd)
    enc = load_text_encoder(write(sd, tmp_path / "umt5_fp8_e4m3fn_scaled.safetensors"))
    assert enc.dtype == torch.bfloat16  # fp8 -> bf16 by default
    got = enc.model.state_dict()
    n_fp8 = 0
    for k, v in t5_sd.items():
        if k == "spiece_model":
            continue
        g = got[k].float()
        if sd[k].dtype == torch.float8_e4m3fn:
            n_fp8 += 1
            scale = sd[k.removesuffix("weight") + "scale_weight"]
            # e4m3: 3 mantissa bits -> relative error <= 2^-4, plus subnormal steps of 2^-9 * scale, plus bf16 rounding
            assert ((g - v).abs() <= v.abs() * (2 ** -4 + 2 ** -8) + scale * 2 ** -9).all(), k
        else:
            assert torch.allclose(g, v, rtol=2 ** -8, atol=0), k
    assert n_fp8 == 2 * 7
    enc32 = load_text_encoder(tmp_path / "umt5_fp8_e4m3fn_scaled.safetensors", dtype=torch.float32)
    assert enc32.dtype == torch.float32


def test_fp8_dit_storage(tmp_path, dit_sd, caplog):
    """Plain fp8 may stay fp8 when asked; scaled fp8 stays fp8 with its scale and computes in bf16 (per-layer
    dequantisation at compute time, wan_core.quant; more in tests/test_scaled_fp8.py)."""
    plain = {k: v.to(torch.float8_e4m3fn) if k.startswith("blocks.") and v.ndim == 2 else v for k, v in dit_sd.items()}
    path = write(plain, tmp_path / "dit_fp8.safetensors")
    q = "blocks.0.self_attn.q.weight"
    assert load_dit(path).state_dict()[q].dtype == torch.bfloat16
    kept = load_dit(path, dtype=torch.float8_e4m3fn).state_dict()[q]
    assert kept.dtype == torch.float8_e4m3fn and torch.equal(kept.float(), plain[q].float())
    scale = torch.tensor(1 / 64)
    scaled = {**plain, q: (dit_sd[q] / scale).to(torch.float8_e4m3fn), q.removesuffix("weight") + "scale_weight": scale,
              "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    model = load_dit(write(scaled, tmp_path / "dit_fp8_scaled.safetensors"), dtype=torch.float8_e4m3fn)
    layer = model.get_submodule(q.removesuffix(".weight"))
    assert layer.weight.dtype == torch.float8_e4m3fn and model.compute_dtype == torch.bfloat16
    got = layer.dense_weight(torch.float32)
    assert torch.allclose(got, dit_sd[q], rtol=2 ** -3, atol=scale * 2 ** -9)


def test_dequantize_chunks_and_scale_shapes(monkeypatch):
    monkeypatch.setattr(loading, "DEQUANT_ELEMENTS", 16)  # 2 rows of 8 per step: exercises the row chunks
    w8 = torch.randn(37, 8).to(torch.float8_e4m3fn)
    rows = torch.rand(37) + 0.5
    for scale, want in ((None, w8.float()), (torch.tensor(0.25), w8.float() * 0.25),
                        (rows, w8.float() * rows[:, None]), (rows[:, None], w8.float() * rows[:, None])):
        assert torch.equal(loading._dequantize(w8, scale, torch.float32), want)
    with pytest.raises(CheckpointError, match=r"fp8 scale of shape \(3,\)"):
        loading._dequantize(w8, torch.ones(3), torch.float32)
    sd = loading.dequantize_fp8({"l.weight": w8, "l.scale_weight": torch.tensor(2.0), "scaled_fp8": w8[:0, 0]},
                                torch.bfloat16)
    assert list(sd) == ["l.weight"] and sd["l.weight"].dtype == torch.bfloat16


def test_wrong_kind_messages(tmp_path, dit_sd, vae_sd, t5_sd):
    dit = write(dit_sd, tmp_path / "wan2.2_ti2v_5B_fp16.safetensors")
    t5 = write(t5_sd, tmp_path / "umt5.safetensors")
    vae21 = write(vae21_state_dict(), tmp_path / "wan_2.1_vae.safetensors")
    with pytest.raises(WrongModelKindError, match=r"expected a Wan2\.2 VAE \(48 latent channels.*wan_2\.1_vae"
                                                  r"\.safetensors is a Wan2\.1 VAE \(16 channels"):
        load_vae(vae21)
    with pytest.raises(WrongModelKindError, match=r"expected a Wan2\.2 TI2V-5B diffusion model.*umt5\.safetensors "
                                                  "is a umT5 text encoder"):
        load_dit(t5)
    with pytest.raises(WrongModelKindError, match=r"expected a umT5-XXL text encoder.*is a Wan diffusion model"):
        load_text_encoder(dit)
    with pytest.raises(WrongModelKindError, match="LoRA"):
        load_dit(write({"diffusion_model.blocks.0.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "l.safetensors"))


def test_key_errors_name_the_file(tmp_path, dit_sd, vae_sd):
    broken = dict(dit_sd)
    del broken["blocks.1.ffn.0.bias"]
    broken["blocks.0.extra.weight"] = torch.zeros(1)
    path = write(broken, tmp_path / "broken_dit.safetensors")
    with pytest.raises(ValueError, match=r"broken_dit\.safetensors: .*missing.*blocks\.1\.ffn\.0\.bias.*unexpected"):
        load_dit(path)
    bad_vae = {**vae_sd, "conv1.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"bad_vae\.safetensors: .*wrong shape.*conv1\.bias"):
        load_vae(write(bad_vae, tmp_path / "bad_vae.safetensors"))


# --- model folders --------------------------------------------------------------------------------------------------
def test_comfy_layout(tmp_path, dit_sd, vae_sd, t5_sd):
    root = tmp_path / "ComfyUI"
    m = root / "models"
    write(dit_sd, m / "diffusion_models" / "wan" / "tiny_dit.safetensors")
    dit16 = {**dit_sd, "patch_embedding.weight": dit_sd["patch_embedding.weight"][:, :16].contiguous()}
    write(dit16, m / "unet" / "wan2.1_14B.safetensors")  # a 16-channel DiT (Wan2.1 / A14B): ignored
    write(vae_sd, m / "vae" / "wan2.2_vae.safetensors")
    write(vae21_state_dict(), m / "vae" / "wan_2.1_vae.safetensors")
    write(t5_sd, m / "text_encoders" / "umt5.safetensors")
    files = resolve_model_dir(root)
    assert files == ModelFiles(dit=m / "diffusion_models" / "wan" / "tiny_dit.safetensors",
                               vae=m / "vae" / "wan2.2_vae.safetensors", text_encoder=m / "text_encoders" /
                               "umt5.safetensors", tokenizer=None, layout="comfyui")
    assert file_kind(m / "unet" / "wan2.1_14B.safetensors") == "dit16"
    write(t5_sd, m / "clip" / "umt5_copy.safetensors")
    with pytest.raises(CheckpointError, match=r"several umT5 text encoder files.*umt5\.safetensors.*umt5_copy"):
        resolve_model_dir(m)
    (m / "vae" / "wan2.2_vae.safetensors").unlink()
    (m / "clip" / "umt5_copy.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no Wan2\.2 VAE found.*wan_2\.1_vae\.safetensors \(Wan2\.1 VAE\)"):
        resolve_model_dir(m)


def test_flat_and_diffusers_layouts(tmp_path, dit_sd, vae_sd, t5_sd):
    flat = tmp_path / "flat"
    write(dit_sd, flat / "a.safetensors"), write(vae_sd, flat / "b.safetensors"), write(t5_sd, flat / "c.safetensors")
    assert resolve_model_dir(flat) == ModelFiles(flat / "a.safetensors", flat / "b.safetensors", flat / "c.safetensors",
                                                 layout="flat")
    repo = tmp_path / "Wan2.2-TI2V-5B-Diffusers"
    (repo / "tokenizer").mkdir(parents=True)
    (repo / "model_index.json").write_text("{}")
    write(to_format(dit_sd, "dit", "diffusers")[0], repo / "transformer" / "diffusion_pytorch_model.safetensors")
    write(to_format(vae_sd, "vae", "diffusers")[0], repo / "vae" / "diffusion_pytorch_model.safetensors")
    write(t5_sd, repo / "text_encoder" / "model.safetensors")
    files = resolve_model_dir(repo)
    assert files.layout == "diffusers" and files.tokenizer == repo / "tokenizer"
    assert files.dit == repo / "transformer" / "diffusion_pytorch_model.safetensors"
    assert_same(load_dit(files.dit).state_dict(), load_dit(flat / "a.safetensors").state_dict())


def test_official_layout_asks_for_conversion(tmp_path, dit_sd, vae_sd, t5_sd):
    root = tmp_path / "Wan2.2-TI2V-5B"
    write(dit_sd, root / "diffusion_pytorch_model-00001-of-00001.safetensors", sidecar=False)
    (root / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "diffusion_pytorch_model-00001-of-00001.safetensors" for k in dit_sd}}))
    torch.save(vae_sd, root / "Wan2.2_VAE.pth")
    with pytest.raises(CheckpointError) as err:
        resolve_model_dir(root)
    msg = str(err.value)
    assert "python -m wan_core convert" in msg and "Wan2.2_VAE.safetensors" in msg
    assert "models_t5_umt5-xxl-enc-bf16.pth" in msg

    from wan_core.tools import convert_checkpoint
    convert_checkpoint(root / "Wan2.2_VAE.pth", root / "Wan2.2_VAE.safetensors")
    torch.save(to_format({k: v for k, v in t5_sd.items() if k != "spiece_model"}, "t5", "official")[0],
               root / "models_t5_umt5-xxl-enc-bf16.pth")
    convert_checkpoint(root / "models_t5_umt5-xxl-enc-bf16.pth", root / "models_t5_umt5-xxl-enc-bf16.safetensors")
    (root / "google" / "umt5-xxl").mkdir(parents=True)
    files = resolve_model_dir(root)
    assert files == ModelFiles(dit=root / "diffusion_pytorch_model.safetensors.index.json",
                               vae=root / "Wan2.2_VAE.safetensors", text_encoder=root /
                               "models_t5_umt5-xxl-enc-bf16.safetensors", tokenizer=root / "google" / "umt5-xxl",
                               layout="official")
    assert_same(load_vae(files.vae).state_dict(), vae_sd)
    (root / "diffusion_pytorch_model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model.safetensors.index.json"):
        resolve_model_dir(root)


def test_real_diffusers_repo_layout(tmp_path):
    """A folder written by diffusers/transformers `save_pretrained` (sharded transformer) loads with the same tensors."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers writes the reference repository layout")
    transformers = pytest.importorskip("transformers", reason="transformers writes the text_encoder folder")
    from wan_core.convert import convert
    from tests.tiny_models import SENTENCES
    from wan_core.tokenizer import train_tokenizer

    torch.manual_seed(0)
    dit = diffusers.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32,
                                          in_channels=48, out_channels=48, text_dim=32, freq_dim=32, ffn_dim=96,
                                          num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads")
    vae = diffusers.AutoencoderKLWan(base_dim=8, decoder_base_dim=16, z_dim=48, dim_mult=[1, 2, 4, 4],
                                     num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True],
                                     is_residual=True, in_channels=12, out_channels=12, patch_size=2)
    te = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False))
    repo = tmp_path / "Wan2.2-TI2V-5B-Diffusers"
    dit.save_pretrained(repo / "transformer", max_shard_size="200KB")  # forces an index + shards
    vae.save_pretrained(repo / "vae")
    te.save_pretrained(repo / "text_encoder")
    (repo / "tokenizer").mkdir()
    (repo / "tokenizer" / "spiece.model").write_bytes(train_tokenizer(SENTENCES, vocab_size=64))
    (repo / "model_index.json").write_text("{}")
    files = resolve_model_dir(repo)
    assert files.dit.name.endswith(".index.json") and len(read_state_dict(files.dit)[1].files) > 1
    for loaded, ref, kind in ((load_dit(files.dit), dit, "dit"), (load_vae(files.vae), vae, "vae")):
        want = convert(ref.state_dict(), kind, "diffusers")[0]
        got = loaded.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k].float(), want[k].float()) for k in want)
    enc = load_text_encoder(files.text_encoder, tokenizer=files.tokenizer)
    want = te.state_dict()
    got = enc.model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
