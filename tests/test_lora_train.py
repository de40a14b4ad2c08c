"""`python -m wan_core lora train` on tiny random models: the file it writes, resume, the cache, bad data."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.tiny_models import TINY_DIT, tiny_dit_state_dict, write_comfy_layout
from wan_core.cli import main
from wan_core.lora import apply_loras, check_against, read_lora
from wan_core.lora.train import METADATA_KEY, LoRALinear, LoraTrainConfig, TrainData, lora_tensors, train_lora
from wan_core.model import WanTransformer

KEY = re.compile(r"^diffusion_model\.blocks\.\d+\.(self_attn|cross_attn)\.[qkvo]\.(lora_down\.weight|lora_up\.weight|"
                 r"alpha)$|^diffusion_model\.blocks\.\d+\.ffn\.[02]\.(lora_down\.weight|lora_up\.weight|alpha)$")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_comfy_layout(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def data_dir(tmp_path):
    from PIL import Image

    from wan_core.video import write_mp4

    d = tmp_path / "clips"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        write_mp4(rng.integers(0, 255, (5, 48, 40, 3), dtype=np.uint8), d / f"c{i}.mp4", fps=8)
        (d / f"c{i}.txt").write_text(f"a red circle moving left {i}\n蓝色背景上，一个红色的圆形\n", encoding="utf-8")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / "still.png")
    (d / "still.txt").write_text("a green square\n", encoding="utf-8")
    return d


def _train(model_dir, data_dir, out, *extra):
    return main(["lora", "train", "--data", str(data_dir), "--out", str(out), "--model-dir", str(model_dir),
                 "--rank", "4", "--steps", "3", "--width", "32", "--height", "32", "--frames", "5", "--device", "cpu",
                 "--lr", "1e-2", *extra])


def test_cli_writes_official_comfy_keys_that_load(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "my_lora.safetensors"
    assert _train(model_dir, data_dir, out, "--targets", "attn,ffn", "--alpha", "2") == 0
    with safe_open(str(out), "pt") as f:
        names, meta = list(f.keys()), f.metadata()
        alphas = {f.get_tensor(k).item() for k in names if k.endswith(".alpha")}
    assert names and all(KEY.match(k) for k in names), [k for k in names if not KEY.match(k)]
    assert len(names) == TINY_DIT.num_layers * 10 * 3  # 8 attention + 2 FFN Linears per block, 3 tensors each
    assert alphas == {2.0}
    settings = json.loads(meta[METADATA_KEY])
    assert settings["rank"] == 4 and settings["alpha"] == 2.0 and settings["steps"] == 3 and settings["clips"] == 3
    assert settings["targets"] == ["attn", "ffn"] and settings["base_model"] == "tiny_dit.safetensors"
    assert (tmp_path / "my_lora.safetensors.sha256").is_file()
    lora = read_lora(out)  # the sidecar is checked; format detected from the keys
    assert lora.format == "official"
    dit = WanTransformer.from_state_dict(tiny_dit_state_dict())
    assert len(check_against(lora, dit)) == TINY_DIT.num_layers * 10  # every entry maps onto a DiT weight
    assert any(float(lora.adapters[k].up.abs().max()) > 0 for k in lora.adapters)  # trained away from up = 0


def _tiny_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = [torch.randn(48, 2, 2, 2, generator=g) for _ in range(3)] + [torch.randn(48, 1, 2, 4, generator=g)]
    contexts = [[torch.randn(int(n), TINY_DIT.text_dim, generator=g)] for n in (3, 5, 4, 6)]
    return TrainData(latents, contexts, torch.zeros(1, TINY_DIT.text_dim))


def _fresh_dit():
    return WanTransformer.from_state_dict(tiny_dit_state_dict())


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = LoraTrainConfig(rank=4, alpha=4, steps=6, lr=1e-2, batch=2, caption_dropout=0.3, warmup=2)
    whole, _ = train_lora(_fresh_dit(), _tiny_data(), cfg)
    ckpt = tmp_path / "run.checkpoint.pt"
    train_lora(_fresh_dit(), _tiny_data(), LoraTrainConfig(**{**cfg.__dict__, "steps": 3}), checkpoint=ckpt,
               save_every=2)
    resumed, info = train_lora(_fresh_dit(), _tiny_data(), cfg, checkpoint=ckpt, save_every=2)
    assert info["resumed_at"] == 3 and info["steps"] == 6
    a, b = lora_tensors(whole), lora_tensors(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(a[k].abs().max() > 0 for k in a if k.endswith("lora_up.weight"))
    with pytest.raises(ValueError, match="belongs to another run"):
        train_lora(_fresh_dit(), _tiny_data(), LoraTrainConfig(**{**cfg.__dict__, "rank": 2}), checkpoint=ckpt)


def test_written_file_merged_equals_the_trained_layers(tmp_path):
    """The file's alpha / rank scale and key names reproduce the trained forward when merged by wan_core.lora."""
    from wan_core.lora.train import write_lora

    cfg = LoraTrainConfig(rank=4, alpha=2, steps=3, lr=5e-2, targets=("self_attn", "cross_attn", "ffn"), warmup=1)
    trained = _fresh_dit()
    layers, _ = train_lora(trained, _tiny_data(), cfg)
    path = write_lora(tmp_path / "l.safetensors", layers, {"rank": 4}, torch.float32)
    merged = _fresh_dit()
    apply_loras(merged, [(read_lora(path), 1.0)])
    g = torch.Generator().manual_seed(1)
    x, t, ctx = torch.randn(1, 48, 2, 4, 4, generator=g), torch.tensor([700.0]), torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        want, got = trained(x, t, ctx), merged(x, t, ctx)
        base = _fresh_dit()(x, t, ctx)
    assert (want - base).abs().max() > 1e-4  # the LoRA changes the output
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_lora_linear_matches_peft():
    peft = pytest.importorskip("peft", reason="peft is a test-only requirement (requirements-dev.txt)")
    base = torch.nn.Linear(12, 10)
    ours = LoRALinear(base, rank=3, alpha=6, gen=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours.up.normal_()
    model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(12, 10)),
                                peft.LoraConfig(r=3, lora_alpha=6, target_modules=["0"], init_lora_weights=False))
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.base_layer.weight.copy_(base.weight)
        layer.base_layer.bias.copy_(base.bias)
        layer.lora_A["default"].weight.copy_(ours.down)
        layer.lora_B["default"].weight.copy_(ours.up)
    x = torch.randn(4, 12)
    torch.testing.assert_close(ours(x), model(x), rtol=1e-5, atol=1e-6)


def test_cache_is_reused_and_models_not_reloaded(model_dir, data_dir, tmp_path, capsys, monkeypatch):
    assert _train(model_dir, data_dir, tmp_path / "a.safetensors", "--cache-dir", str(tmp_path / "cache")) == 0
    assert "0 entries reused, 8 computed" in capsys.readouterr().out  # 3 latents, 4 distinct captions, the empty one

    def refuse(*a, **k):
        raise AssertionError("a cached run must not load the VAE or the text encoder")
    monkeypatch.setattr("wan_core.loading.load_vae", refuse)
    monkeypatch.setattr("wan_core.loading.load_text_encoder", refuse)
    assert _train(model_dir, data_dir, tmp_path / "b.safetensors", "--cache-dir", str(tmp_path / "cache"),
                  "--seed", "1") == 0
    assert "8 entries reused, 0 computed" in capsys.readouterr().out


def test_bad_data_folders_are_named(model_dir, tmp_path, capsys):
    assert _train(model_dir, tmp_path / "nope", tmp_path / "x.safetensors") == 2
    assert "is not a folder" in capsys.readouterr().err
    d = tmp_path / "d"
    d.mkdir()
    assert _train(model_dir, d, tmp_path / "x.safetensors") == 2
    assert "holds no clip or image" in capsys.readouterr().err
    (d / "a.png").write_bytes(b"")
    (d / "b.png").write_bytes(b"")
    (d / "b.txt").write_text("caption")
    assert _train(model_dir, d, tmp_path / "x.safetensors") == 2
    err = capsys.readouterr().err
    assert "1 of 2 files" in err and "a.png" in err and "a.txt" in err
    (d / "a.txt").write_text("\n  \n")
    assert _train(model_dir, d, tmp_path / "x.safetensors") == 2
    assert "a.txt" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()


def test_gradient_checkpointing_and_bf16_paths():
    """Checkpointing recomputes each block in backward (inside the compact-text forward): the same LoRA as without.
    bf16 autocast (the GPU default) gives the loss of fp32 to bf16 precision, and trains."""
    cfg = LoraTrainConfig(rank=4, alpha=4, steps=3, lr=1e-2, batch=2, warmup=1)
    losses = {"fp32": [], "bf16": []}
    plain = lora_tensors(train_lora(_fresh_dit(), _tiny_data(), cfg, on_step=lambda s, v: losses["fp32"].append(v))[0])
    ckpt = lora_tensors(train_lora(_fresh_dit(), _tiny_data(), LoraTrainConfig(**{**cfg.__dict__,
                                                                                 "checkpointing": True}))[0])
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-6)
    half = lora_tensors(train_lora(_fresh_dit(), _tiny_data(), LoraTrainConfig(**{**cfg.__dict__, "bf16": True}),
                                   on_step=lambda s, v: losses["bf16"].append(v))[0])
    assert abs(losses["bf16"][0] - losses["fp32"][0]) < 0.02 * losses["fp32"][0]  # step 0: same weights, same batch
    assert all(torch.isfinite(v).all() for v in half.values()) and max(v.abs().max() for k, v in half.items()
                                                                       if k.endswith("lora_up.weight")) > 0
