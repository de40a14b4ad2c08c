"""Every node driven directly through the standalone host with tiny random models (no ComfyUI needed)."""
import json
import shutil

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodes import NODE_CLASS_MAPPINGS
from nodes.host import StandaloneHost, set_host
from nodes.text import to_conditioning
from tests.tiny_models import TINY_DIT, write_comfy_layout
from wan_core.latent_init import CROP_KEY
from wan_core.loading import WrongModelKindError
from wan_core.video import read_video

N = {name: cls() for name, cls in NODE_CLASS_MAPPINGS.items()}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = write_comfy_layout(tmp_path_factory.mktemp("models"))
    shutil.copy(root / "vae" / "tiny_vae.safetensors", root / "diffusion_models" / "not_a_dit.safetensors")
    wan21_vae = {"decoder.middle.0.residual.0.gamma": torch.ones(4, 1, 1, 1), "conv2.weight": torch.zeros(16, 16, 1, 1, 1)}
    save_file(wan21_vae, str(root / "vae" / "wan_2.1_vae.safetensors"))  # the 16-channel VAE users often pick
    return root


@pytest.fixture
def host(models_dir, tmp_path):
    h = StandaloneHost(models_dir, tmp_path / "output", device="cpu", previews=True)
    previous = set_host(h)
    yield h
    set_host(previous)


@pytest.fixture
def loaded(host):
    dit = N["WanT2VModelLoader"].load("tiny_dit.safetensors", "auto", True)[0]
    te = N["WanT2VTextEncoderLoader"].load("tiny_umt5.safetensors", "auto", True)[0]
    vae = N["WanT2VVAELoader"].load("tiny_vae.safetensors", "auto", True)[0]
    return dit, te, vae


def _latent(width=100, height=60, frames=9):
    return N["WanT2VLatentInit"].init("16:9", "custom", width, height, "frames", frames, 1.0, 24.0, 1)["result"][0]


def _sample(dit, pos, neg, latent, seed=3, steps=3, sampler="unipc", cfg=5.0, denoise=1.0):
    return N["WanT2VSampler"].sample(dit, pos, neg, latent, seed, steps, cfg, 5.0, sampler, denoise)[0]


def test_node_definitions_are_complete():
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert name.startswith("WanT2V") and cls.CATEGORY == "WanT2V" and len(cls.DESCRIPTION) > 40
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        assert callable(getattr(cls, cls.FUNCTION))
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for inp, (kind, opts) in spec.get(section, {}).items():
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"


def test_loader_dropdowns_list_model_files(host):
    from wan_core.demo import DEMO_FILES, PACK_ROOT

    shipped = Path(PACK_ROOT, DEMO_FILES["dit"])  # the pack's own models/ folder is listed too
    expected = ["not_a_dit.safetensors", "tiny_dit.safetensors"] + ([shipped.name] if shipped.is_file() else [])
    assert N["WanT2VModelLoader"].INPUT_TYPES()["required"]["model_name"][0] == expected


def test_loader_refuses_wrong_kind_and_missing_file(host):
    with pytest.raises(WrongModelKindError, match="not_a_dit.safetensors"):
        N["WanT2VModelLoader"].load("not_a_dit.safetensors", "auto", True)
    with pytest.raises(WrongModelKindError, match="Wan2.1 VAE.*16 channels"):
        N["WanT2VVAELoader"].load("wan_2.1_vae.safetensors", "auto", True)
    with pytest.raises(FileNotFoundError, match="tiny_dit.safetensors"):
        N["WanT2VModelLoader"].load("missing.safetensors", "auto", True)
    with pytest.raises(ValueError, match="weight_dtype"):
        N["WanT2VModelLoader"].load("tiny_dit.safetensors", "fp4", True)


def test_text_encode_native_layout_english_and_chinese(host, loaded):
    _, te, _ = loaded
    pos, neg = N["WanT2VTextEncode"].encode(te, "a red circle moving to the left", "")
    zh, _ = N["WanT2VTextEncode"].encode(te, "蓝色背景上，一个红色的圆形向左移动", "")
    for cond in (pos, neg, zh):
        tensor, extra = cond[0]
        assert tensor.shape == (1, 512, TINY_DIT.text_dim) and extra == {"pooled_output": None}
        assert tensor[0, -1].abs().sum() == 0 and tensor[0, 0].abs().sum() > 0
    assert not torch.equal(pos[0][0], zh[0][0])


def test_latent_init_pads_snaps_and_reports():
    out = N["WanT2VLatentInit"].init("16:9", "custom", 100, 60, "frames", 10, 1.0, 24.0, 2)
    latent, w, h, frames, note = out["result"]
    assert latent["samples"].shape == (2, 48, 3, 4, 8) and latent[CROP_KEY] == (2, 14, 60, 100)
    assert (w, h, frames) == (100, 60, 9) and "frames 10 -> 9" in note and out["ui"]["text"] == [note]
    latent, w, h, frames, _ = N["WanT2VLatentInit"].init("9:16", "720p", 0, 0, "seconds", 1, 2.0, 16.0, 1)["result"]
    assert (w, h, frames) == (704, 1280, 33) and latent["samples"].shape == (1, 48, 9, 80, 44)
    assert N["WanT2VLatentInit"].VALIDATE_INPUTS("seconds", 60.0, 120.0).startswith("seconds x fps")
    assert "above the maximum" in N["WanT2VLatentInit"].VALIDATE_INPUTS("frames", 5.0, 500.0)


def test_sampler_reproducible_previews_and_native_conditioning(host, loaded):
    dit, te, _ = loaded
    pos, neg = N["WanT2VTextEncode"].encode(te, "a green square moving up", "")
    latent = _latent()
    a = _sample(dit, pos, neg, latent)
    b = _sample(dit, pos, neg, latent)
    c = _sample(dit, pos, neg, latent, seed=4, sampler="euler")
    assert torch.equal(a["samples"], b["samples"]) and not torch.equal(a["samples"], c["samples"])
    assert a[CROP_KEY] == latent[CROP_KEY] and a["samples"].shape == latent["samples"].shape
    assert host.last_preview is not None and host.last_preview.shape == (4, 8, 3)
    native = [[torch.randn(1, 512, TINY_DIT.text_dim), {"pooled_output": None}]]  # as CLIPTextEncode makes it
    out = _sample(dit, native, to_conditioning(torch.zeros(3, TINY_DIT.text_dim)), latent, sampler="dpm++2m")
    assert torch.isfinite(out["samples"]).all()
    assert N["WanT2VSampler"].VALIDATE_INPUTS(steps=2, denoise=0.1).startswith("steps x denoise")
    assert N["WanT2VSampler"].VALIDATE_INPUTS(steps=5000, denoise=1.0) == "steps=5000 is above the maximum 1000"
    assert N["WanT2VSampler"].VALIDATE_INPUTS(steps=20, denoise=1.0) is True


def test_sampler_denoise_cfg1_and_errors(host, loaded):
    dit, te, _ = loaded
    pos, neg = N["WanT2VTextEncode"].encode(te, "a small triangle", "")
    start = {"samples": torch.randn(1, 48, 2, 4, 4)}
    out = _sample(dit, pos, neg, start, denoise=0.5, cfg=1.0, steps=4)
    assert out["samples"].shape == start["samples"].shape
    end_frame = torch.ones(1, 1, 2, 4, 4)
    end_frame[:, :, -1] = 0  # keeps the last frame: an end image, which TI2V-5B does not support
    with pytest.raises(ValueError, match="noise_mask keeps a latent frame after a sampled one"):
        _sample(dit, pos, neg, {**start, "noise_mask": end_frame})
    with pytest.raises(ValueError, match="CONDITIONING"):
        _sample(dit, "not conditioning", neg, start)


def test_sampler_honours_interrupts(host, loaded):
    dit, te, _ = loaded
    pos, neg = N["WanT2VTextEncode"].encode(te, "x", "")
    calls = []

    class Interrupted(Exception):
        pass

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted

    host.check_interrupt = check
    with pytest.raises(Interrupted):
        _sample(dit, pos, neg, _latent(), steps=10)
    assert len(calls) == 2  # stopped at the second step, not at the end


def test_decode_crops_to_request_and_tiles(host, loaded):
    dit, te, vae = loaded
    latent = _latent(50, 30, 5)
    latent = {**latent, "samples": torch.randn_like(latent["samples"]) * 0.5}
    images = N["WanT2VDecode"].decode(vae, latent, 0)[0]
    assert images.shape == (5, 30, 50, 3) and images.min() >= 0 and images.max() <= 1
    native = N["WanT2VDecode"].decode(vae, {"samples": latent["samples"]}, 0)[0]  # no crop recorded: full canvas
    assert native.shape == (5, 32, 64, 3) and torch.equal(native[:, 1:31, 7:57], images)
    tiled = N["WanT2VDecode"].decode(vae, latent, 3)[0]  # tile accuracy itself is tested in test_vae.py
    assert tiled.shape == images.shape and not torch.equal(tiled, images)


def test_save_video_writes_mp4_with_comfy_metadata(host):
    frames = torch.rand(9, 60, 100, 3)
    prompt = {"1": {"class_type": "WanT2VSampler", "inputs": {"seed": 7, "model": ["2", 0]}},
              "2": {"class_type": "KSampler", "inputs": {"seed": 1}}}
    workflow = {"nodes": [], "links": [], "version": 0.4}
    out = N["WanT2VSaveVideo"].save(frames, 24.0, 19, "clips/test", prompt=prompt, extra_pnginfo={"workflow": workflow})
    path = out["result"][0]
    assert out["ui"]["images"][0]["filename"] == "test_00001_.mp4" and out["ui"]["animated"] == (True,)
    assert out["ui"]["images"][0]["subfolder"] == "clips"
    video, meta = read_video(path)
    assert video.shape == (9, 60, 100, 3)
    assert json.loads(meta["prompt"]) == prompt and json.loads(meta["workflow"]) == workflow
    assert json.loads(meta["parameters"]) == {"1": {"class_type": "WanT2VSampler", "seed": 7}}
    second = N["WanT2VSaveVideo"].save(frames[:1], 24.0, 19, "clips/test")
    assert second["ui"]["images"][0]["filename"] == "test_00002_.mp4"
    with pytest.raises(ValueError, match="outside the output folder"):
        N["WanT2VSaveVideo"].save(frames[:1], 24.0, 19, "../escape")


def test_fp8_storage_dit_samples(host, loaded):
    _, te, _ = loaded
    dit8 = N["WanT2VModelLoader"].load("tiny_dit.safetensors", "fp8 storage", False)[0]
    assert dit8.model.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    pos, neg = N["WanT2VTextEncode"].encode(te, "x", "")
    out = _sample(dit8, pos, neg, _latent(64, 64, 5), steps=2)
    assert torch.isfinite(out["samples"]).all()
