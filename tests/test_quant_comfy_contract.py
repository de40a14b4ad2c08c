"""Quantized DiTs in a real ComfyUI (skips visibly without COMFYUI_PATH; COMFYUI_PYTHON optional, see
tests/comfy_server.py). The shipped demo DiT is quantized here to Q8_0 GGUF (`wan_core.quantize`) and to a scaled-fp8
file in Kijai's `_scaled_KJ` layout; one API graph (the tiny demo workflow's text encoder, VAE and latent) runs five
branches in a headless server: bf16, Q8_0, fp8-scaled, and a random official-format LoRA (WanT2V LoRA node) on bf16
and on Q8_0. The quantized videos must stay close to the bf16 one, and the LoRA must change GGUF output as it changes
bf16 output. Low VRAM: ComfyUI's --lowvram does nothing with --cpu, so a script in ComfyUI's Python loads the GGUF
through ComfyHost and partially loads it (ModelPatcher.patch_model(lowvram_model_memory=1), as load_models_gpu does
when the model does not fit) with the LoRA; its forward must equal the fully loaded one.
"""
from __future__ import annotations

import json
import os
import subprocess

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.comfy_server import COMFY, ROOT, SKIP_REASON, comfy_server, get_json, make_base, server_python

gguf = pytest.importorskip("gguf", reason="the gguf package is a runtime requirement (pip install gguf)")
pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not COMFY, reason=SKIP_REASON)]
DEMO = ROOT / "models" / "diffusion_models" / "wan2.2_tiny_demo_dit.safetensors"
API = ROOT / "workflows" / "api" / "wan22_tiny_demo_t2v.json"
GGUF, FP8, LORA = "demo_Q8_0.gguf", "demo_fp8_e4m3fn_scaled_KJ.safetensors", "demo_random_lora.safetensors"
E4M3_MAX = 448.0
STRENGTH = 1.0
BRANCHES = {"bf16": (DEMO.name, False), "q8": (GGUF, False), "fp8": (FP8, False), "bf16_lora": (DEMO.name, True),
            "q8_lora": (GGUF, True)}

LOWVRAM = r'''
import json, sys
root, comfy_path, models, dit_names, lora_file, out = sys.argv[1:7]
strength = float(sys.argv[7])
sys.path[:0] = [root, comfy_path]
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import torch, folder_paths, comfy.model_management
from safetensors.torch import save_file
from nodes.comfy_host import ComfyHost
from wan_core.lora import read_lora
folder_paths.add_model_folder_path("diffusion_models", models)
host = ComfyHost.__new__(ComfyHost); host._fp = folder_paths  # no pack folder registration / input copies
g = torch.Generator().manual_seed(0)
x, t, c = torch.randn(1, 48, 3, 8, 8, generator=g), torch.tensor([700.0]), torch.randn(1, 7, 128, generator=g)
def forward(patcher, **kw):
    patcher.patch_model(torch.device("cpu"), **kw)
    try:
        counts.append(sum(1 for m in patcher.model.modules() if getattr(m, "weight_function", None)))
        with torch.no_grad():
            return patcher.model(x, t, c).contiguous()
    finally:
        patcher.unpatch_model(torch.device("cpu"))
report, tensors, counts = {}, {"x": x, "t": t, "c": c}, []
for name in dit_names.split(","):
    base = host.load("dit", name, "auto", verify=False)
    handle = host.with_lora(base, read_lora(lora_file), strength)
    low = forward(handle.patcher, lowvram_model_memory=1)
    model, lowvram_layers = handle.patcher.model, counts[-1]  # layers patched per call (LowVramPatch)
    full = forward(handle.patcher)
    plain = forward(base.patcher)
    low_again = forward(handle.patcher, lowvram_model_memory=1)
    report[name] = {"qtypes": sorted({str(getattr(m, "qtype", None)) for m in model.modules() if hasattr(m, "qtype")}),
                    "object_patches": len(handle.patcher.object_patches), "weight_patches": len(handle.patcher.patches),
                    "lowvram_layers": lowvram_layers}
    tensors.update({f"{name}/low": low, f"{name}/full": full, f"{name}/plain": plain, f"{name}/low_again": low_again})
json.dump(report, open(out + "/report.json", "w"))
save_file(tensors, out + "/forwards.safetensors")
'''


def _kj_fp8(sd: dict) -> dict:
    """Kijai's `_scaled_KJ` layout: 2-D block Linear weights fp8 e4m3 with a per-layer fp32 `scale_weight`."""
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2:
            scale = (v.float().abs().max() / E4M3_MAX).reshape(())
            out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k.removesuffix("weight") + "scale_weight"] = scale
        else:
            out[k] = v
    return out


def _random_lora(sd: dict) -> dict:
    """Official / ComfyUI names on every Linear (the blocks' and the embeddings' / head's, which stay dense bf16 in
    the scaled-fp8 file): rank 4, alpha 4, strong enough to change the video visibly."""
    g = torch.Generator().manual_seed(1)
    lora = {}
    for k, w in sd.items():
        if k.endswith(".weight") and w.ndim == 2:
            m = f"diffusion_model.{k.removesuffix('.weight')}"
            lora[f"{m}.lora_up.weight"] = torch.randn(w.shape[0], 4, generator=g) * 0.15
            lora[f"{m}.lora_down.weight"] = torch.randn(4, w.shape[1], generator=g) * 0.15
            lora[f"{m}.alpha"] = torch.tensor(4.0)
    return lora


def _graph() -> dict:
    demo = json.loads(API.read_text())
    graph = {k: demo[k] for k in ("2", "3", "4", "5")}
    graph["5"]["inputs"].update(width=96, height=96, frames=9)
    for i, (tag, (dit, lora)) in enumerate(BRANCHES.items()):
        n = 10 * (i + 1)
        graph[f"{n}"] = {"class_type": "WanT2VModelLoader",
                         "inputs": {"model_name": dit, "weight_dtype": "auto", "verify_sha256": True}}
        model = [f"{n}", 0]
        if lora:
            graph[f"{n + 1}"] = {"class_type": "WanT2VLora", "inputs": {"model": model, "lora_name": LORA,
                                                                       "strength": STRENGTH}}
            model = [f"{n + 1}", 0]
        graph[f"{n + 2}"] = {"class_type": "WanT2VSampler",
                             "inputs": {**demo["6"]["inputs"], "model": model, "steps": 8}}
        graph[f"{n + 3}"] = {"class_type": "WanT2VDecode",
                             "inputs": {"vae": ["3", 0], "latent": [f"{n + 2}", 0], "tile_size": 0}}
        graph[f"{n + 4}"] = {"class_type": "WanT2VSaveVideo", "inputs": {
            "frames": [f"{n + 3}", 0], "fps": 12.0, "crf": 0, "filename_prefix": f"quant/{tag}"}}
    return graph


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def comfy_quant(tmp_path_factory):
    import sys

    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(ROOT / "workflows"))
    import client
    from wan_core.quantize import quantize_file
    from wan_core.video import read_video

    base = tmp_path_factory.mktemp("quant_base")
    models = make_base(base)
    (models / "diffusion_models").mkdir()
    (models / "loras").mkdir()
    quantize_file(DEMO, models / "diffusion_models" / GGUF, "Q8_0")
    sd = load_file(str(DEMO))
    save_file(_kj_fp8(sd), str(models / "diffusion_models" / FP8))
    save_file(_random_lora(sd), str(models / "loras" / LORA))
    lend = base / "lend"  # the pack's runtime requirement `gguf`, lent to the server's Python (folder holding only it)
    lend.mkdir()
    (lend / "gguf").symlink_to(Path(gguf.__file__).parent)
    extra = os.pathsep.join(filter(None, [str(lend), os.environ.get("COMFYUI_EXTRA_PYTHONPATH")]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMFYUI_EXTRA_PYTHONPATH", extra)
        with comfy_server(base) as url:
            listed = get_json(url + "/object_info/WanT2VModelLoader")["WanT2VModelLoader"]["input"]["required"]
            pid = client.queue_prompt(url, _graph(), "quant")
            history = client.wait_history(url, pid, 600)
    errors = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert history["status"]["status_str"] == "success", [
        (e.get("node_type"), e.get("exception_message"), "".join(e.get("traceback", []))[-2000:]) for e in errors]
    videos = {tag: read_video(next((base / "output" / "quant").glob(f"{tag}_*.mp4")))[0] for tag in BRANCHES}
    return base, models, listed["model_name"][0], videos, extra


def test_loader_lists_gguf_and_scaled_fp8(comfy_quant):
    _, _, names, *_ = comfy_quant
    assert {GGUF, FP8, DEMO.name} <= set(names)


def test_quantized_videos_close_to_bf16(comfy_quant):
    *_, videos, _ = comfy_quant
    ref = videos["bf16"]
    assert ref.shape == (9, 96, 96, 3) and ref.std() > 10  # a real picture, not a flat frame
    scores = {tag: psnr(videos[tag], ref) for tag in ("q8", "fp8")}
    print("PSNR vs bf16 (dB):", {k: round(v, 2) for k, v in scores.items()})
    assert scores["q8"] >= 30 and scores["fp8"] >= 25, scores


def test_lora_on_gguf_matches_lora_on_bf16(comfy_quant):
    *_, videos, _ = comfy_quant
    effect = psnr(videos["bf16_lora"], videos["bf16"])  # how much the LoRA changes the bf16 video
    agree = psnr(videos["q8_lora"], videos["bf16_lora"])
    q8_effect = psnr(videos["q8_lora"], videos["q8"])
    print(f"PSNR: bf16+LoRA vs bf16 {effect:.2f} dB, Q8_0+LoRA vs Q8_0 {q8_effect:.2f} dB, "
          f"Q8_0+LoRA vs bf16+LoRA {agree:.2f} dB")
    assert effect < 25 and q8_effect < 25  # the LoRA visibly changes both
    assert agree >= 30 and agree > effect + 8  # and the quantized model with it lands where bf16 with it does


@pytest.mark.parametrize("dit", [GGUF, FP8])
def test_lora_lowvram_equals_full_load(lowvram_run, comfy_quant, dit):
    from wan_core.loading import load_dit
    from wan_core.lora import apply_loras, read_lora

    report, out = lowvram_run
    models = comfy_quant[1]
    rep = report[dit]
    assert rep["object_patches"] > 0  # packed layers: the delta rides in QuantLinear.patches (object patches)
    if dit == FP8:  # its dense Linears get ModelPatcher weight patches, applied per call under lowvram
        assert rep["weight_patches"] > 0 and rep["lowvram_layers"] > 0, rep
    full, scale = out[f"{dit}/full"], out[f"{dit}/full"].abs().max()
    assert (full - out[f"{dit}/plain"]).abs().max() > 1e-2 * scale  # the LoRA is in the forward
    for key in ("low", "low_again"):
        err = (out[f"{dit}/{key}"] - full).abs().max()
        assert err <= 1e-5 * scale, f"{dit} {key}: max abs diff {err:.3g} vs output max {scale:.3g}"
    model = load_dit(models / "diffusion_models" / dit, dtype=torch.float32, verify=False)  # standalone wan_core
    apply_loras(model, [(read_lora(models / "loras" / LORA), STRENGTH)])
    with torch.no_grad():
        want = model(out["x"], out["t"], out["c"])
    assert (full - want).abs().max() <= 1e-5 * scale  # ComfyUI's patching == wan_core's LoRA on the same file


@pytest.fixture(scope="module")
def lowvram_run(comfy_quant, tmp_path_factory):
    from safetensors.torch import load_file

    _, models, _, _, extra = comfy_quant
    tmp = tmp_path_factory.mktemp("quant_lowvram")
    env = dict(os.environ, PYTHONPATH=extra)
    proc = subprocess.run([server_python(), "-c", LOWVRAM, str(ROOT), COMFY, str(models / "diffusion_models"),
                           f"{GGUF},{FP8}", str(models / "loras" / LORA), str(tmp), str(STRENGTH)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp / "report.json").read_text()), load_file(str(tmp / "forwards.safetensors"))
