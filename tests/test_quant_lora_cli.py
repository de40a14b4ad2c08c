"""A quantized DiT with a LoRA, end to end on the CLI (the shipped demo DiT quantized to Q8_0 here), and the
low-VRAM weight functions ComfyUI's ModelPatcher puts on a QuantLinear (no ComfyUI needed for either)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.comfy_server import ROOT

pytest.importorskip("gguf", reason="the gguf package is a runtime requirement (pip install gguf)")
DEMO = ROOT / "models" / "diffusion_models" / "wan2.2_tiny_demo_dit.safetensors"
PROMPT = "a red circle moving to the right on a blue background"


def _lora(path) -> None:
    from safetensors.torch import load_file, save_file

    g, lora = torch.Generator().manual_seed(1), {}
    for k, w in load_file(str(DEMO)).items():
        if k.endswith(".weight") and w.ndim == 2:
            m = f"diffusion_model.{k.removesuffix('.weight')}"
            lora[f"{m}.lora_up.weight"] = torch.randn(w.shape[0], 4, generator=g) * 0.15
            lora[f"{m}.lora_down.weight"] = torch.randn(4, w.shape[1], generator=g) * 0.15
            lora[f"{m}.alpha"] = torch.tensor(4.0)
    save_file(lora, str(path))


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def test_generate_gguf_dit_with_lora(tmp_path):
    from wan_core.cli import main
    from wan_core.quantize import quantize_file
    from wan_core.video import read_video

    quantize_file(DEMO, tmp_path / "Q8_0.gguf", "Q8_0")
    _lora(tmp_path / "some_lora.safetensors")
    common = [PROMPT, "--model-dir", str(ROOT / "models"), "--width", "64", "--height", "64", "--frames", "9",
              "--steps", "3", "--seed", "3", "--device", "cpu", "--crf", "0"]
    runs = {"q8_lora": ["--dit", str(tmp_path / "Q8_0.gguf"), "--lora", str(tmp_path / "some_lora.safetensors")],
            "bf16_lora": ["--lora", str(tmp_path / "some_lora.safetensors")], "q8": ["--dit", str(tmp_path / "Q8_0.gguf")]}
    videos = {}
    for tag, extra in runs.items():
        assert main(["generate", *common, *extra, "-o", str(tmp_path / f"{tag}.mp4")]) == 0
        videos[tag] = read_video(tmp_path / f"{tag}.mp4")[0]
    assert videos["q8_lora"].shape == (9, 64, 64, 3)
    agree, effect = _psnr(videos["q8_lora"], videos["bf16_lora"]), _psnr(videos["q8_lora"], videos["q8"])
    assert effect < 25 and agree >= 30 and agree > effect + 8, (agree, effect)  # measured ~43 dB vs ~12.6 dB


def test_quant_linear_weight_functions_never_touch_the_stored_weight():
    """ComfyUI's LowVramPatch adds the LoRA in place; a plain QuantLinear must hand it a copy of its weight."""
    from wan_core.quant.linear import QuantLinear

    layer = QuantLinear(8, 4)
    before_w, before_b = layer.weight.detach().clone(), layer.bias.detach().clone()
    layer.weight_function = [lambda w: w.add_(1.0)]
    layer.bias_function = [lambda b: b.add_(2.0)]
    x = torch.randn(3, 8)
    with torch.no_grad():
        out = layer(x)
        want = torch.nn.functional.linear(x, before_w + 1.0, before_b + 2.0)
    assert torch.allclose(out, want, atol=1e-6)
    assert torch.equal(layer.weight, before_w) and torch.equal(layer.bias, before_b)
