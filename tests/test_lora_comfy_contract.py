"""LoRA contract with a real ComfyUI checkout (skips visibly without COMFYUI_PATH; COMFYUI_PYTHON optional, see
tests/comfy_server.py). One script runs in ComfyUI's Python on tiny random weights:
- native: ComfyUI's own Wan model (UNETLoader's comfy.sd.load_diffusion_model) + the official-format LoRA file through
  what LoraLoaderModelOnly runs (comfy.utils.load_torch_file + comfy.sd.load_lora_for_models, strength_clip 0): every
  key must map (no "lora key not loaded" / "NOT LOADED" warnings) and the patched weights are saved;
- ours in ComfyUI: our DiT in a ModelPatcher, the LoRA added by ComfyHost.with_lora (what the WanT2V LoRA node does),
  patch_model() -> weights saved, unpatch_model() -> the base weights again.
- lowvram: the same with comfy.ops layers and patch_model(lowvram_model_memory=1) (per-layer LowVramPatch) -> a DiT
  forward, which must equal the forward of the model merged by apply_loras.
Both must equal wan_core.lora.apply_loras on the same file (measured: bit-identical, see docs/lora.md).
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from tests.comfy_server import COMFY, ROOT, SKIP_REASON, server_python
from tests.tiny_models import tiny_dit_state_dict, write
from wan_core.config import WanConfig
from wan_core.loading import load_dit
from wan_core.lora import apply_loras, read_lora

pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not COMFY, reason=SKIP_REASON)]
NATIVE_CFG = WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2)  # ComfyUI detects it as WAN22 (5B layout)
STRENGTH = 0.8

SCRIPT = r'''
import json, logging, sys
root, comfy_path, dit, lora_file, out = sys.argv[1:6]
strength = float(sys.argv[6])
sys.path[:0] = [root, comfy_path]
sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI's own CPU switch (parsed when comfy.cli_args is first imported)
import comfy.options
comfy.options.enable_args_parsing()
import torch
from safetensors.torch import save_file
import comfy.lora, comfy.model_patcher, comfy.sd, comfy.utils

seen = []
class Grab(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
logging.getLogger().addHandler(Grab(level=logging.WARNING))

native = comfy.sd.load_diffusion_model(dit)                      # UNETLoader
lora = comfy.utils.load_torch_file(lora_file, safe_load=True)     # LoraLoaderModelOnly.load_lora ...
patched, _ = comfy.sd.load_lora_for_models(native, None, lora, strength, 0)
patched.patch_model()
sd = patched.model.state_dict()
save_file({k[len("diffusion_model."):]: v.float().contiguous() for k, v in sd.items()
           if k.startswith("diffusion_model.")}, out + "/native.safetensors")
native_patches = len(patched.patches)
native_warnings = [m for m in seen if "lora key not loaded" in m or "NOT LOADED" in m]

from nodes.comfy_host import ComfyHost
from nodes.host import WanModel
from wan_core.loading import load_dit
from wan_core.lora import read_lora
host = ComfyHost.__new__(ComfyHost)  # no folder registration / input copies: only with_lora is exercised
model = load_dit(dit, dtype=torch.float32)
before = {k: v.clone() for k, v in model.state_dict().items()}
base = WanModel("dit", model, comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu")), "dit")
ours = host.with_lora(base, read_lora(lora_file), strength)
ours.patcher.patch_model()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out + "/ours_in_comfy.safetensors")
ours.patcher.unpatch_model()
restored = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
import comfy.ops  # lowvram: a partial load leaves the patches to per-layer LowVramPatch weight functions
lowvram = load_dit(dit, dtype=torch.float32, ops=comfy.ops.manual_cast)
low = host.with_lora(WanModel("dit", lowvram, comfy.model_patcher.ModelPatcher(lowvram, torch.device("cpu"),
                                                                              torch.device("cpu")), "dit"),
                     read_lora(lora_file), strength)
low.patcher.patch_model(torch.device("cpu"), lowvram_model_memory=1)  # as load_models_gpu does
lowvram_layers = sum(1 for m in lowvram.modules() if getattr(m, "weight_function", None))
g = torch.Generator().manual_seed(0)
x, t, c = torch.randn(1, 48, 2, 8, 8, generator=g), torch.tensor([600.0]), torch.randn(1, 5, 4096, generator=g)
with torch.no_grad():
    save_file({"out": lowvram(x, t, c).contiguous(), "x": x, "t": t, "c": c}, out + "/lowvram_forward.safetensors")
json.dump({"lowvram_layers": lowvram_layers, "native_patches": native_patches, "native_warnings": native_warnings, "our_patches": len(ours.patcher.patches),
           "our_object_patches": sorted(ours.patcher.object_patches),
           "base_patches": len(base.patcher.patches), "restored": restored, "native_dtype": str(next(iter(sd.values())).dtype)},
          open(out + "/report.json", "w"))
'''


def _official_lora(base: dict) -> dict:
    """Every Linear and the patch embedding (lora_down/up + alpha, lora_A/B without alpha), plus diff / diff_b on
    norms, biases and modulation tables: the full official / ComfyUI vocabulary."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, w in base.items():
        if not k.endswith(".weight") or w.ndim < 2:
            continue
        m, r = k.removesuffix(".weight"), 4
        up = torch.randn(w.shape[0], r, *[1] * (w.ndim - 2), generator=g) * 0.05
        down = torch.randn(r, *w.shape[1:], generator=g) * 0.05
        if ".ffn." in m:
            sd[f"diffusion_model.{m}.lora_B.weight"], sd[f"diffusion_model.{m}.lora_A.weight"] = up, down
        else:
            sd[f"diffusion_model.{m}.lora_up.weight"], sd[f"diffusion_model.{m}.lora_down.weight"] = up, down
            sd[f"diffusion_model.{m}.alpha"] = torch.tensor(2.0)
    for m, shape in (("blocks.0.norm3", (128,)), ("blocks.1.norm3", (128,))):
        sd[f"diffusion_model.{m}.diff"] = torch.randn(shape, generator=g) * 0.1
        sd[f"diffusion_model.{m}.diff_b"] = torch.randn(shape, generator=g) * 0.1
    sd["diffusion_model.blocks.0.self_attn.q.diff_b"] = torch.randn(128, generator=g) * 0.1
    sd["diffusion_model.blocks.1.modulation.diff"] = torch.randn(1, 6, 128, generator=g) * 0.1
    sd["diffusion_model.head.modulation.diff"] = torch.randn(1, 2, 128, generator=g) * 0.1
    return {k: v.contiguous() for k, v in sd.items()}


@pytest.fixture(scope="module")
def comfy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora_contract")
    base = tiny_dit_state_dict(NATIVE_CFG)
    dit = write(base, tmp / "tiny_native_wan22_dit.safetensors", sidecar=False)
    lora = write(_official_lora(base), tmp / "official_lora.safetensors", sidecar=False)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("COMFYUI_EXTRA_PYTHONPATH"),) if p))
    proc = subprocess.run([server_python(), "-c", SCRIPT, str(ROOT), COMFY, str(dit), str(lora), str(tmp),
                           str(STRENGTH)], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, dit, lora, json.loads((tmp / "report.json").read_text())


def _ours(dit, lora):
    model = load_dit(dit, dtype=torch.float32)
    apply_loras(model, [(read_lora(lora), STRENGTH)])
    return model.state_dict()


def test_native_lora_loader_maps_every_key_and_matches_our_weights(comfy_run):
    tmp, dit, lora, report = comfy_run
    assert report["native_warnings"] == []
    assert report["native_dtype"] == "torch.float32"
    parsed = read_lora(lora)
    assert report["native_patches"] == len(parsed.adapters)
    native, ours = load_file(str(tmp / "native.safetensors")), _ours(dit, lora)
    base = tiny_dit_state_dict(NATIVE_CFG)
    assert set(ours) <= set(native)
    # ComfyUI's ModelPatcher patches parameters of leaf modules only: the modulation tables (parameters of the block
    # and head modules) keep their base values there, silently. Ours apply them; every other weight must agree.
    tables = [k for k in ours if k.endswith("modulation") and k in parsed.adapters]
    assert len(tables) == 2 and all(torch.equal(native[k], base[k]) or torch.equal(native[k], ours[k]) for k in tables)
    err = max((ours[k] - native[k]).abs().max().item() for k in ours if k not in tables)
    assert err <= 1e-6, f"ours vs ComfyUI's comfy.lora: max abs difference {err:.3g}"
    changed = sum(not torch.equal(native[k], base[k]) for k in base if k not in tables)
    assert changed == len(parsed.adapters) - len(tables)


def test_our_node_path_in_comfy_patches_like_apply_loras_and_unpatches(comfy_run):
    tmp, dit, lora, report = comfy_run
    assert report["base_patches"] == 0  # the base ModelPatcher is untouched: other branches see no LoRA
    assert report["our_object_patches"] == ["blocks.1.modulation", "head.modulation"]  # non-leaf tables, replaced
    assert report["our_patches"] + 2 == len(read_lora(lora).adapters)
    assert report["restored"]
    in_comfy, ours = load_file(str(tmp / "ours_in_comfy.safetensors")), _ours(dit, lora)
    err = max((ours[k] - in_comfy[k]).abs().max().item() for k in ours)
    assert err <= 1e-6, f"ComfyHost.with_lora + patch_model vs apply_loras: max abs difference {err:.3g}"


def test_lowvram_patching_gives_the_forward_of_the_merged_model(comfy_run):
    tmp, dit, lora, report = comfy_run
    assert report["lowvram_layers"] >= 20  # most LoRA layers (29 of 32 measured) patched per call, not at load
    saved = load_file(str(tmp / "lowvram_forward.safetensors"))
    model = load_dit(dit, dtype=torch.float32)
    apply_loras(model, [(read_lora(lora), STRENGTH)])
    with torch.no_grad():
        want = model(saved["x"], saved["t"], saved["c"])
    assert (saved["out"] - want).abs().max() <= 1e-5 * want.abs().max()
