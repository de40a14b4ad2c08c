"""A LoRA written by `wan_core.lora.train` loads in native ComfyUI (skips visibly without COMFYUI_PATH): ComfyUI's own
Wan model (UNETLoader's comfy.sd.load_diffusion_model) + what LoraLoaderModelOnly runs (comfy.utils.load_torch_file +
comfy.sd.load_lora_for_models): every key maps (no "lora key not loaded" warning), one patch per trained layer, and
the patched weights equal wan_core.lora.apply_loras on the same file."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from tests.comfy_server import COMFY, SKIP_REASON, server_python
from tests.tiny_models import tiny_dit_state_dict, write
from wan_core.config import WanConfig
from wan_core.loading import load_dit
from wan_core.lora import apply_loras, read_lora
from wan_core.lora.train import LoraTrainConfig, TrainData, train_lora, write_lora
from wan_core.model import WanTransformer

pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not COMFY, reason=SKIP_REASON)]
NATIVE_CFG = WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2)  # ComfyUI detects it as WAN22 (5B layout)

SCRIPT = r'''
import json, logging, sys
comfy_path, dit, lora_file, out = sys.argv[1:5]
sys.path[:0] = [comfy_path]
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
from safetensors.torch import save_file
import comfy.sd, comfy.utils
seen = []
class Grab(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
logging.getLogger().addHandler(Grab(level=logging.WARNING))
native = comfy.sd.load_diffusion_model(dit)
patched, _ = comfy.sd.load_lora_for_models(native, None, comfy.utils.load_torch_file(lora_file, safe_load=True), 1.0, 0)
patched.patch_model()
sd = patched.model.state_dict()
save_file({k[len("diffusion_model."):]: v.float().contiguous() for k, v in sd.items()
           if k.startswith("diffusion_model.")}, out + "/native.safetensors")
json.dump({"patches": len(patched.patches), "warnings": [m for m in seen if "lora key not loaded" in m or "NOT LOADED" in m]},
          open(out + "/report.json", "w"))
'''


def test_trained_lora_loads_in_native_comfyui(tmp_path):
    base = tiny_dit_state_dict(NATIVE_CFG)
    dit_file = write(base, tmp_path / "tiny_native_wan22_dit.safetensors", sidecar=False)
    g = torch.Generator().manual_seed(0)
    data = TrainData([torch.randn(48, 2, 2, 2, generator=g) for _ in range(2)],
                     [[torch.randn(4, NATIVE_CFG.text_dim, generator=g)] for _ in range(2)])
    layers, _ = train_lora(WanTransformer.from_state_dict(base), data,
                           LoraTrainConfig(rank=4, alpha=2, steps=2, lr=5e-2, warmup=1))
    lora_file = write_lora(tmp_path / "trained.safetensors", layers, {"test": True}, torch.float32)
    proc = subprocess.run([server_python(), "-c", SCRIPT, COMFY, str(dit_file), str(lora_file), str(tmp_path)],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=os.environ.get("COMFYUI_EXTRA_PYTHONPATH", "")),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["warnings"] == [] and report["patches"] == len(layers) == NATIVE_CFG.num_layers * 10
    native = load_file(str(tmp_path / "native.safetensors"))
    ours = load_dit(dit_file, dtype=torch.float32, verify=False)
    apply_loras(ours, [(read_lora(lora_file, verify=False), 1.0)])
    ours_sd = ours.state_dict()
    changed = [k for k in base if not torch.equal(native[k], base[k])]
    assert len(changed) == len(layers)
    err = max((ours_sd[k] - native[k]).abs().max().item() for k in ours_sd)
    assert err <= 1e-6, f"ComfyUI's LoraLoaderModelOnly vs apply_loras: max abs difference {err:.3g}"
