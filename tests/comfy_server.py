"""A headless ComfyUI server for contract tests, with this pack symlinked into its custom_nodes.

Environment (all optional; a test module skips visibly when COMFYUI_PATH is missing):
- COMFYUI_PATH: a ComfyUI checkout whose requirements are importable by the server's Python.
- COMFYUI_PYTHON: the Python that runs the server (default: the one running pytest), e.g. ComfyUI's own venv.
- COMFYUI_EXTRA_PYTHONPATH: prepended to the server's PYTHONPATH (e.g. stand-ins for packages the machine lacks).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMFY = os.environ.get("COMFYUI_PATH")
SKIP_REASON = "COMFYUI_PATH is not set: no ComfyUI checkout to test against"
LOADER_FOLDERS = {"WanT2VModelLoader": "diffusion_models", "WanT2VTextEncoderLoader": "text_encoders",
                  "WanT2VVAELoader": "vae"}
PACK_DIR = "ComfyUI-WanT2V"


def server_python() -> str:
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 60):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def make_base(base: Path) -> Path:
    """A ComfyUI --base-directory holding custom_nodes/ComfyUI-WanT2V -> this checkout; returns its models/."""
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK_DIR).symlink_to(ROOT, target_is_directory=True)
    (base / "models").mkdir()
    return base / "models"


def place_tiny_models(models: Path, tiny: Path, api_files) -> None:
    """Copy the tiny models in tiny/<folder>/ to every file name the API-format graphs' loaders ask for."""
    for path in api_files:
        for node in json.loads(Path(path).read_text()).values():
            if (name := node["inputs"].get("model_name")) and node["class_type"] in LOADER_FOLDERS:
                folder = LOADER_FOLDERS[node["class_type"]]
                (models / folder).mkdir(parents=True, exist_ok=True)
                if not (models / folder / name).exists():
                    shutil.copy(next((tiny / folder).glob("*.safetensors")), models / folder / name)


@contextlib.contextmanager
def comfy_server(base: Path, *, frontend: bool = False, extra_args: tuple[str, ...] = (), wait_s: int = 180):
    """Start ComfyUI on a free loopback port with base as --base-directory; yields its URL, stops it on exit.

    frontend=False serves an empty web root (no comfyui-frontend-package needed); True serves the real frontend."""
    import pytest

    port = free_port()
    env = dict(os.environ)
    if extra := os.environ.get("COMFYUI_EXTRA_PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
    args = [server_python(), "main.py", "--cpu", "--listen", "127.0.0.1",
            "--port", str(port), "--disable-auto-launch", "--base-directory", str(base),
            "--database-url", "sqlite:///:memory:", "--disable-api-nodes", *extra_args]
    if not frontend:
        (base / "empty_frontend").mkdir(exist_ok=True)
        args += ["--front-end-root", str(base / "empty_frontend")]
    log_path = base / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, cwd=COMFY, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"ComfyUI exited ({proc.returncode}); log tail:\n{log_path.read_text()[-3000:]}")
                try:
                    urllib.request.urlopen(url + "/system_stats", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"ComfyUI did not answer /system_stats within {wait_s} s; log tail:\n"
                                    f"{log_path.read_text()[-3000:]}")
                    time.sleep(1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
