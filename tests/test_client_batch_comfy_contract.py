"""workflows/client.py --jobs against a real ComfyUI (headless, CPU, tiny models): the same server given twice as two
--server URLs (two client threads queueing at once), real /history outputs, the manifest and skip-on-rerun.
Needs COMFYUI_PATH (see tests/comfy_server.py); skipped visibly otherwise."""
import json
import sys

import pytest

from tests.comfy_server import COMFY, ROOT, SKIP_REASON, comfy_server, make_base, place_tiny_models

pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not COMFY, reason=SKIP_REASON)]
sys.path.insert(0, str(ROOT / "workflows"))
import client  # noqa: E402

API = ROOT / "workflows" / "api" / "wan22_ti2v_5B_t2v.json"
SMALL = ["size=custom", "width=64", "height=64", "frames=5", "steps=2"]


def test_jobs_over_two_server_urls_write_mp4s_and_rerun_skips(tmp_path, capsys):
    from tests.tiny_models import write_comfy_layout
    from wan_core.video import read_video

    models = make_base(tmp_path / "base")
    place_tiny_models(models, write_comfy_layout(tmp_path / "tiny"), [API])
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps({"output": f"c{i}.mp4", "Prompt.prompt": f"a red circle {i}", "seed": i})
                              for i in range(3)) + "\n")
    with comfy_server(tmp_path / "base") as url:
        args = [str(API), "--jobs", str(jobs), "--out", str(tmp_path / "out"), "--server", url, "--server",
                url.replace("127.0.0.1", "localhost"), *sum((["--set", s] for s in SMALL), [])]
        assert client.main(args) == 0, capsys.readouterr()
        for i in range(3):
            frames, meta = read_video(tmp_path / "out" / f"c{i}.mp4")
            assert frames.shape == (5, 64, 64, 3)
            assert json.loads(meta["prompt"])["4"]["inputs"]["prompt"] == f"a red circle {i}"
        entries = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
        assert sorted(e["job"] for e in entries) == ["c0.mp4", "c1.mp4", "c2.mp4"]
        assert len({e["worker"] for e in entries}) == 2  # both client threads (server URLs) took jobs
        capsys.readouterr()
        assert client.main(args) == 0
        assert "0 rendered, 3 skipped" in capsys.readouterr().out
