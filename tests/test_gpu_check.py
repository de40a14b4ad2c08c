"""benchmarks/gpu_check.py runs end to end (--smoke: tiny shapes on the CPU) and prints every section's row;
with COMFYUI_PATH (and COMFYUI_PYTHON, a Python that lacks diffusers) also ComfyUI's WanModel, proving the script
needs only torch, safetensors and einops besides the repository."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

ROWS = ["DiT forward, plain", "DiT forward, cfg-batched", "DiT forward, sage attention",
        "DiT forward, flash attention", "DiT forward, compiled", "diffusers", "ComfyUI WanModel forward",
        "VAE decode, untiled", "VAE decode, tiled", "write DiT safetensors", "load 0.0 GB, load_dit (wan_core)",
        "load 0.0 GB, safetensors load_file"]


def test_smoke_run_prints_every_section(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    assert gpu_check.main(["--smoke", "--compile-backend", "aot_eager", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for row in ROWS:
        assert f"| {row}" in out, row
    assert re.search(r"\| DiT forward, plain \| \d+\.\d{3} s \|", out)
    assert re.search(r"\| DiT forward, compiled \(aot_eager, regional\) \| \d+\.\d{3} s \| .*compile", out)
    assert "runs on CUDA GPUs only" in out  # sage / flash say why they did not run on the CPU
    assert list(tmp_path.iterdir()) == []  # the test file was removed


def test_budget_skips_later_sections(tmp_path, capsys):
    assert gpu_check.main(["--smoke", "--budget", "0", "--workdir", str(tmp_path), "--skip", "reference"]) == 0
    out = capsys.readouterr().out
    assert "| DiT forward, plain" in out and "| DiT forward, compiled" not in out
    assert "| VAE decode, untiled | not run | time budget |" in out


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="COMFYUI_PATH not set (a ComfyUI checkout)")
def test_smoke_with_comfyui_python(tmp_path):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    out = subprocess.run([python, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--compile-backend",
                          "aot_eager", "--workdir", str(tmp_path), "--comfyui", os.environ["COMFYUI_PATH"]],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"\| ComfyUI WanModel forward \| \d+\.\d{3} s \|", out.stdout), out.stdout
