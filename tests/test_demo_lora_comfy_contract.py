"""The shipped demo LoRA workflow in a real ComfyUI server (headless, CPU; needs COMFYUI_PATH, skipped visibly
otherwise): queued as shipped through workflows/client.py, with the pack's own demo model and LoRA, the video has the
golden background; the same graph at strength 0 (the base model through the same nodes) does not."""
import sys

import pytest
import torch

from tests.comfy_server import COMFY, ROOT, SKIP_REASON, comfy_server, make_base

pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not COMFY, reason=SKIP_REASON)]
sys.path.insert(0, str(ROOT / "workflows"))
import client  # noqa: E402

API = ROOT / "workflows" / "api" / "wan22_tiny_demo_lora.json"


def test_demo_lora_workflow_as_shipped_draws_the_golden_background(tmp_path):
    from wan_core.demo.evaluate_concept import shows_concept
    from wan_core.video import read_video

    base = tmp_path / "base"
    make_base(base)
    golden = {}
    with comfy_server(base) as url:
        for strength in ("1.0", "0.0"):
            out = tmp_path / f"out_{strength}"
            code = client.main([str(API), "--server", url, "--out", str(out), "--set", f"strength={strength}"])
            assert code == 0
            (mp4,) = out.glob("*.mp4")
            frames, _ = read_video(mp4)
            assert frames.shape == (25, 128, 128, 3)
            golden[strength] = shows_concept(torch.from_numpy(frames).float() / 255.0)
    assert golden == {"1.0": True, "0.0": False}
