"""`python -m wan_core batch` in this process: jobs-file validation by line, the atomic manifest and skip-on-rerun,
failures and Ctrl-C, and the same frames as `generate` (demo model, tiny sizes). Ray: tests/test_batch_ray.py."""
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from wan_core.batch.jobs import parse_jobs
from wan_core.batch.local import ModelSpec, Renderer, run_local
from wan_core.batch.manifest import Manifest, write_atomic
from wan_core.cli import main
from wan_core.video import read_video

ROOT = Path(__file__).resolve().parents[1]
TINY = {"width": 64, "height": 64, "frames": 5, "steps": 2}
MODEL = ModelSpec(device="cpu")


def _jobs_file(tmp_path, lines, name="jobs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_bad_lines_are_reported_by_number_and_good_ones_kept(tmp_path):
    path = _jobs_file(tmp_path, [
        {"output": "a.mp4", "prompt": "ok"},
        '{"output": "b.mp4", "prompt": ',
        "",
        {"output": "c.mp4", "prompt": "x", "stpes": 3},
        {"output": "d.mp4"},
        {"output": "e.mp4", "prompt": "x", "seed": "7"},
        {"output": "../f.mp4", "prompt": "x"},
        {"output": "a.mp4", "prompt": "again"},
        {"output": "g.mp4", "prompt": "x", "image": "missing.png"},
        {"output": "h.mp4", "prompt": "x", "sampler": "ddim"},
        {"output": "sub/i.mp4", "prompt": "x", "seed": 3, "cfg": 1},
    ])
    jobs, errors = parse_jobs(path)
    assert [j.output for j in jobs] == ["a.mp4", "sub/i.mp4"] and [j.line for j in jobs] == [1, 11]
    got = {e.line: e.message for e in errors}
    assert sorted(got) == [2, 4, 5, 6, 7, 8, 9, 10]
    assert "not valid JSON" in got[2] and "stpes" in got[4] and "missing 'prompt'" in got[5]
    assert "seed must be an integer (got '7')" in got[6] and "no '..'" in got[7]
    assert "already the output of line 1" in got[8] and "missing.png" in got[9] and "ddim" in got[10]
    assert str(errors[0]).startswith("line 2: ")


def test_manifest_skip_rules(tmp_path):
    m = Manifest(tmp_path)
    entry = m.record("x.mp4", "k1", b"video", seconds=1.23456, worker="w")
    assert (tmp_path / "x.mp4").read_bytes() == b"video" and entry["seconds"] == 1.235
    assert set(entry) == {"job", "file", "sha256", "seconds", "worker", "key"}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.mp4").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"job": "half')  # an interrupted line is ignored on load
    m = Manifest(tmp_path)
    assert m.is_done("x.mp4", "k1") and not m.is_done("x.mp4", "k2") and not m.is_done("y.mp4", "k1")
    (tmp_path / "x.mp4").write_bytes(b"changed")
    assert not m.is_done("x.mp4", "k1")
    (tmp_path / "x.mp4").unlink()
    assert not m.is_done("x.mp4", "k1")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "v.mp4", object())
    assert list(tmp_path.iterdir()) == []


def test_local_batch_renders_skips_and_rerenders_edited_jobs(tmp_path):
    lines = [{"output": "a.mp4", "prompt": "a red circle", "seed": 1, **TINY},
             {"output": "clips/b.mp4", "prompt": "a blue square", "seed": 2, **TINY},
             {"output": "bad.mp4", "prompt": "x", **TINY, "frames": 8}]
    jobs, _ = parse_jobs(_jobs_file(tmp_path, lines))
    out = tmp_path / "out"
    first = run_local(jobs, Manifest(out), MODEL)
    assert first.rendered == ["a.mp4", "clips/b.mp4"]
    assert first.failed == [("bad.mp4", "ValueError: frames must be 4k+1 (got 8); try 9")]
    frames, meta = read_video(out / "clips" / "b.mp4")
    assert frames.shape == (5, 64, 64, 3) and json.loads(meta["wan_t2v_parameters"])["seed"] == 2
    assert not list(out.rglob("*.part"))

    def no_model(model):
        raise AssertionError("nothing is left to render, so no model may load")

    jobs = [j for j in jobs if j.output != "bad.mp4"]
    again = run_local(jobs, Manifest(out), MODEL, make_renderer=no_model)
    assert sorted(again.skipped) == ["a.mp4", "clips/b.mp4"] and not again.rendered
    lines[1]["seed"] = 3  # an edited job renders again; the other is still skipped
    jobs, _ = parse_jobs(_jobs_file(tmp_path, lines[:2]))
    third = run_local(jobs, Manifest(out), MODEL)
    assert third.rendered == ["clips/b.mp4"] and third.skipped == ["a.mp4"]
    entries = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e["job"] for e in entries] == ["a.mp4", "clips/b.mp4", "bad.mp4", "clips/b.mp4"]
    assert "error" in entries[2] and entries[3]["sha256"] != entries[1]["sha256"]


def test_batch_frames_equal_generate(tmp_path, monkeypatch):
    import wan_core.video

    real, seen = wan_core.video.write_mp4, []

    def spy(frames, path, **kw):  # the frames each front end hands to the encoder
        seen.append(wan_core.video.to_uint8(frames))
        return real(frames, path, **kw)

    monkeypatch.setattr(wan_core.video, "write_mp4", spy)
    assert main(["generate", "a green ball bouncing", "-o", str(tmp_path / "gen.mp4"), "--width", "64", "--height",
                 "64", "--frames", "5", "--steps", "2", "--seed", "4", "--device", "cpu"]) == 0
    jobs, _ = parse_jobs(_jobs_file(tmp_path, [{"output": "b.mp4", "prompt": "a green ball bouncing", "seed": 4,
                                                **TINY}]))
    assert run_local(jobs, Manifest(tmp_path / "out"), MODEL).rendered == ["b.mp4"]
    assert len(seen) == 2 and seen[0].shape == (5, 64, 64, 3) and np.array_equal(seen[0], seen[1])
    entry = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert entry["frames_sha256"] == hashlib.sha256(seen[0].tobytes()).hexdigest()


def test_image_job_and_ctrl_c_keeps_finished_outputs(tmp_path):
    shutil.copy(ROOT / "workflows" / "wan22_tiny_demo_start.png", tmp_path / "start.png")
    jobs, errors = parse_jobs(_jobs_file(tmp_path, [
        {"output": "i2v.mp4", "prompt": "a red circle", "image": "start.png", **TINY},
        {"output": "never.mp4", "prompt": "x", **TINY}]))
    assert not errors

    class StopsSecond(Renderer):
        def render(self, job, image=None):
            if job.output == "never.mp4":
                raise KeyboardInterrupt
            return super().render(job, image)

    summary = run_local(jobs, Manifest(tmp_path / "out"), MODEL, make_renderer=StopsSecond)
    assert summary.interrupted and summary.rendered == ["i2v.mp4"]
    meta = json.loads(read_video(tmp_path / "out" / "i2v.mp4")[1]["wan_t2v_parameters"])
    assert meta["image"] == "start.png" and len(meta["image_sha256"]) == 64
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["i2v.mp4", "manifest.jsonl"]


def test_cli_reports_bad_line_and_runs_the_rest(tmp_path, capsys):
    path = _jobs_file(tmp_path, [{"output": "a.mp4", "prompt": "a red circle", **TINY}, "not json"])
    assert main(["batch", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "line 2: not valid JSON" in captured.err and "1 rendered, 0 skipped" in captured.out
    assert (tmp_path / "out" / "a.mp4").is_file()


def test_cli_without_ray_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    path = _jobs_file(tmp_path, [{"output": "a.mp4", "prompt": "x", **TINY}])
    assert main(["batch", str(path), "--out", str(tmp_path / "out"), "--ray", "local"]) == 2
    assert "pip install -r requirements-ray.txt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_wan_core_batch_does_not_import_ray():
    import subprocess

    code = ("import sys; from wan_core.cli import build_parser; import wan_core.batch.command, wan_core.batch.local;"
            " build_parser(); assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
