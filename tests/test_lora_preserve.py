"""Output preservation in LoRA training (`--preserve WORD=ALT`): prompts, the base-model target, its effect."""
import json

import pytest
import torch
from safetensors import safe_open

from tests.test_lora_train import _fresh_dit, _tiny_data, _train, data_dir, model_dir  # noqa: F401 (fixtures)
from tests.tiny_models import TINY_DIT
from wan_core.lora.cli_train import preservation_prompts, preservation_rules
from wan_core.lora.train import (METADATA_KEY, LoRALinear, LoraTrainConfig, TrainData, lora_disabled,
                                 preservation_loss, train_lora)


def test_rules_and_prompts():
    rules = preservation_rules(["golden=blue|green", "金色=蓝色"])
    assert rules == [("golden", ["blue", "green"]), ("金色", ["蓝色"])]
    assert preservation_prompts("a red box on a golden background", rules) == [
        "a red box on a blue background", "a red box on a green background"]
    assert preservation_prompts("红色方块，金色背景", rules) == ["红色方块，蓝色背景"]
    assert preservation_prompts("a red box on a gray background", rules) == ["a red box on a gray background"]
    for bad in ("golden", "=blue", "golden=", "golden=|"):
        with pytest.raises(ValueError, match="WORD=ALT"):
            preservation_rules([bad])


def test_disabled_layers_give_the_base_output():
    base = torch.nn.Linear(6, 5)
    layer = LoRALinear(base, rank=2, alpha=2, gen=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.up.normal_()
    x = torch.randn(3, 6)
    assert (layer(x) - base(x)).abs().max() > 1e-3
    with lora_disabled({"l": layer}):
        assert torch.equal(layer(x), base(x))
    assert layer.enabled


def _with_preservation(data: TrainData, seed=5) -> TrainData:
    """Each caption's preservation prompt: another random context (the 'replaced word' prompt)."""
    g = torch.Generator().manual_seed(seed)
    keep = [[[torch.randn(c.shape[0], TINY_DIT.text_dim, generator=g)] for c in row] for row in data.contexts]
    return TrainData(data.latents, data.contexts, data.empty, keep)


def _drift(layers, dit, data) -> float:
    """Mean preservation loss over the data's preservation prompts at a few fixed inputs."""
    g = torch.Generator().manual_seed(9)
    total = 0.0
    with torch.no_grad():
        for z, row in zip(data.latents, data.preserve):
            xs = torch.randn(1, *z.shape, generator=g)
            total += float(preservation_loss(dit, layers, xs, torch.tensor([500.0]), row[0][0][None]))
    return total / len(data.latents)


def test_preservation_keeps_the_model_closer_to_the_base_on_the_preserved_prompts():
    data = _with_preservation(_tiny_data())
    plain = LoraTrainConfig(rank=4, alpha=4, steps=12, lr=3e-2, batch=2, warmup=1)
    kept = LoraTrainConfig(**{**plain.__dict__, "preserve_weight": 10.0})
    dit_a, dit_b = _fresh_dit(), _fresh_dit()
    layers_a, info_a = train_lora(dit_a, data, plain)
    layers_b, info_b = train_lora(dit_b, data, kept)
    assert info_a["preserve_loss_last_50"] is None and info_b["preserve_loss_last_50"] is not None
    drift_a, drift_b = _drift(layers_a, dit_a, data), _drift(layers_b, dit_b, data)
    assert drift_a > 0 and drift_b < 0.5 * drift_a, (drift_a, drift_b)


def test_preservation_off_draws_the_same_batches():
    """Rows and captions are drawn as before preservation existed (runs without it are unchanged)."""
    data, cfg = _tiny_data(), LoraTrainConfig(rank=4, batch=3, caption_dropout=0.3)
    x0, ctx, keep = data.batch(4, cfg, "cpu")
    assert keep is None
    x1, ctx1, keep1 = _with_preservation(data).batch(4, LoraTrainConfig(**{**cfg.__dict__, "preserve_weight": 1.0}),
                                                     "cpu")
    assert torch.equal(x0, x1) and torch.equal(ctx, ctx1[:, :ctx.shape[1]]) and keep1.shape[0] == 3


def test_cli_preserve(model_dir, data_dir, tmp_path, capsys):  # noqa: F811 (pytest fixtures)
    out = tmp_path / "kept.safetensors"
    assert _train(model_dir, data_dir, out, "--preserve", "red=blue|green") == 0
    with safe_open(str(out), "pt") as f:
        settings = json.loads(f.metadata()[METADATA_KEY])
    assert settings["preserve_weight"] == 1.0 and settings["preserve"] == ["red=blue|green"]
    assert settings["preserve_loss_last_50"] is not None
    capsys.readouterr()
    assert _train(model_dir, data_dir, tmp_path / "x.safetensors", "--preserve", "golden=blue") != 0
    assert "no caption" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
