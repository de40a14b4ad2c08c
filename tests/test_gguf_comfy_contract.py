"""ComfyUI-GGUF's own reader (city96/ComfyUI-GGUF loader.gguf_sd_loader + dequantize_tensor) loads the GGUF files
`python -m wan_core quantize` writes, with the same values wan_core reads. Needs COMFYUI_PATH (a ComfyUI checkout) and
COMFYUI_GGUF_PATH (a ComfyUI-GGUF checkout); COMFYUI_PYTHON optional (default: this interpreter). Skipped visibly
otherwise. The `gguf` package is lent to that interpreter through a folder holding only it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is a runtime requirement (pip install gguf)")

COMFY, NODE = os.environ.get("COMFYUI_PATH"), os.environ.get("COMFYUI_GGUF_PATH")
pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not (COMFY and NODE), reason="set COMFYUI_PATH and "
                                                      "COMFYUI_GGUF_PATH to run the ComfyUI-GGUF reader contract")]

SCRIPT = """
import importlib, json, sys, types
sys.argv = ["contract", "--cpu"]
sys.path.insert(0, {comfy!r})
import comfy.options; comfy.options.enable_args_parsing()  # honour --cpu (no GPU needed)
pkg = types.ModuleType("comfyui_gguf"); pkg.__path__ = [{node!r}]; sys.modules["comfyui_gguf"] = pkg
loader = importlib.import_module("comfyui_gguf.loader")
from comfyui_gguf.dequant import dequantize_tensor
import torch
sd, arch = loader.gguf_sd_loader({path!r}, return_arch=True)
torch.save({{k: dequantize_tensor(v, dtype=torch.float32).as_subclass(torch.Tensor).reshape(v.tensor_shape).clone()
            for k, v in sd.items()}},
           {out!r})
print(json.dumps({{"arch": arch, "types": {{k: getattr(v.tensor_type, "name", str(v.tensor_type)) for k, v in sd.items()}}}}))
"""


def test_comfyui_gguf_reads_quantize_output(tmp_path):
    from tests.tiny_models import tiny_dit_state_dict, write
    from wan_core.gguf_file import read_gguf
    from wan_core.quant.linear import PackedWeight
    from wan_core.quantize import quantize_file

    src = write(tiny_dit_state_dict(), tmp_path / "dit.safetensors", sidecar=False)
    lend = tmp_path / "lend"
    lend.mkdir()
    (lend / "gguf").symlink_to(Path(gguf.__file__).parent)
    for qtype in ("Q8_0", "Q4_0", "Q5_1"):
        path, out = tmp_path / f"dit_{qtype}.gguf", tmp_path / f"comfy_{qtype}.pt"
        quantize_file(src, path, qtype)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lend), os.environ.get("PYTHONPATH", "")])}
        code = SCRIPT.format(comfy=COMFY, node=NODE, path=str(path), out=str(out))
        res = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), "-c", code], cwd=COMFY, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        info = json.loads(res.stdout.strip().splitlines()[-1])
        assert info["arch"] == "wan" and qtype in info["types"].values()
        theirs = torch.load(out, weights_only=True)
        ours, _ = read_gguf(path)
        assert set(theirs) == set(ours)
        for k, v in ours.items():
            dense = v.dequantize(torch.float32) if isinstance(v, PackedWeight) else v.float()
            # ComfyUI-GGUF computes in the scale's fp16 (two roundings); wan_core in fp32, bit-exact with gguf
            assert theirs[k].shape == dense.shape and torch.allclose(theirs[k], dense, rtol=2 ** -9, atol=2 ** -14), \
                (qtype, k, (theirs[k] - dense).abs().max())
