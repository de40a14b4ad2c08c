"""`wan_core batch` on Ray started locally (2 CPUs, 2 CPU workers) with the demo model: the same bytes as the
in-process run, a re-run skips everything, a worker killed mid-job has its job retried, a bad line is reported.
Skips visibly when ray is not installed (pip install -r requirements-ray.txt)."""
import json
import os
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason="ray is not installed (optional extra: pip install -r requirements-ray.txt)")

from wan_core.batch.jobs import parse_jobs  # noqa: E402
from wan_core.batch.local import ModelSpec, Renderer, run_local  # noqa: E402
from wan_core.batch.manifest import Manifest  # noqa: E402
from wan_core.batch.ray_runner import run_ray  # noqa: E402
from wan_core.cli import main  # noqa: E402
from wan_core.video import read_video  # noqa: E402

TINY = {"width": 64, "height": 64, "frames": 5, "steps": 2}
MODEL = ModelSpec(device="cpu")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _jobs_file(tmp_path, lines):
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def _crash_once_factory(marker):
    """A renderer factory whose renderer kills its own process the first time it sees clip1.mp4 (test-only hook,
    passed as make_renderer: nothing a user of the command line can switch on)."""

    def make(model):
        renderer = Renderer(model)
        render = renderer.render

        def render_or_die(job, image=None):
            if job.output == "clip1.mp4" and not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)  # the worker process dies mid-job
            return render(job, image)

        renderer.render = render_or_die
        return renderer

    return make


def test_ray_equals_in_process_survives_a_killed_worker_and_rerun_skips(cluster, tmp_path, capsys):
    prompts = ["a red circle moving left", "a blue square", "a green ball bouncing", "a yellow star"]
    lines = [{"output": f"clip{i}.mp4", "prompt": p, "seed": 10 + i, **TINY} for i, p in enumerate(prompts)]
    path = _jobs_file(tmp_path, [*lines[:2], '{"output": "broken.mp4", "prompt": ', *lines[2:]])
    jobs, errors = parse_jobs(path)
    assert len(jobs) == 4 and [e.line for e in errors] == [3] and "not valid JSON" in errors[0].message
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 1-CPU Ray workers (Ray sets OMP_NUM_THREADS to the actor's CPUs)
    try:
        local = run_local(jobs, Manifest(tmp_path / "local"), MODEL)
    finally:
        torch.set_num_threads(threads)
    assert len(local.rendered) == 4
    marker = str(tmp_path / "crashed")
    summary = run_ray(jobs, Manifest(tmp_path / "ray"), MODEL, workers=2, gpus_per_worker=0,
                      make_renderer=_crash_once_factory(marker))
    assert os.path.exists(marker)  # the first attempt at clip1 did kill its worker
    assert sorted(summary.rendered) == [f"clip{i}.mp4" for i in range(4)] and not summary.failed
    entries = [json.loads(line) for line in (tmp_path / "ray" / "manifest.jsonl").read_text().splitlines()]
    local_entries = [json.loads(line) for line in (tmp_path / "local" / "manifest.jsonl").read_text().splitlines()]
    # identical videos: the uint8 frames fed to the encoder are bit-equal (libx264 itself is not always
    # bit-reproducible on a loaded machine, so the mp4 bytes are not compared), and every file decodes
    frames = {e["job"]: e["frames_sha256"] for e in local_entries}
    assert {e["job"]: e["frames_sha256"] for e in entries} == frames and len(set(frames.values())) == 4
    for i in range(4):
        assert read_video(tmp_path / "ray" / f"clip{i}.mp4")[0].shape == (5, 64, 64, 3)
    dead = Path(marker).read_text()
    clip1 = next(e for e in entries if e["job"] == "clip1.mp4")
    assert clip1["worker"].split(":")[1] != dead  # retried in another worker process (the other one or a restart)
    capsys.readouterr()
    code = main(["batch", str(path), "--out", str(tmp_path / "ray"), "--ray", "auto", "--gpus-per-worker", "0",
                 "--device", "cpu"])  # the command line, on the running Ray: everything is done already
    captured = capsys.readouterr()
    assert code == 1 and "line 3: not valid JSON" in captured.err  # the bad line is still reported
    assert "0 rendered, 4 skipped" in captured.out


def test_worker_dying_every_time_fails_after_bounded_retries(cluster, tmp_path):
    def make(model):
        class Dying:
            name = "dying"

            def render(self, job, image=None):
                os._exit(1)

        return Dying()

    jobs, _ = parse_jobs(_jobs_file(tmp_path, [{"output": "x.mp4", "prompt": "p", **TINY}]))
    summary = run_ray(jobs, Manifest(tmp_path / "out"), MODEL, workers=1, gpus_per_worker=0, retries=1,
                      make_renderer=make)
    assert summary.failed and summary.failed[0][0] == "x.mp4" and "died 2 times" in summary.failed[0][1]
    assert not (tmp_path / "out" / "x.mp4").exists()
    line = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[-1])
    assert line["job"] == "x.mp4" and line["attempts"] == 2 and "error" in line


def _quick_factory():
    """A renderer factory without a model (test-only): the job's name as the 'video', after a short 'render'.
    Nested, so Ray pickles it by value (the workers cannot import this test module)."""

    def make(model):
        import time

        from wan_core.batch.local import Rendered

        class Quick:
            name = "quick"

            def render(self, job, image=None):
                time.sleep(0.2)
                return Rendered(job.output.encode(), 0.2, "quick")

        return Quick()

    return make


def test_ctrl_c_stops_cleanly_keeping_finished_outputs(cluster, tmp_path, monkeypatch):
    jobs, _ = parse_jobs(_jobs_file(tmp_path, [{"output": f"v{i}.mp4", "prompt": "p"} for i in range(6)]))
    real_wait, seen = ray.wait, []

    def wait_then_ctrl_c(refs, **kw):
        if seen:
            raise KeyboardInterrupt  # the user presses Ctrl-C once a video is done
        done, rest = real_wait(refs, **kw)
        if done:
            seen.append(done)
        return done, rest

    monkeypatch.setattr(ray, "wait", wait_then_ctrl_c)
    summary = run_ray(jobs, Manifest(tmp_path / "out"), MODEL, workers=1, gpus_per_worker=0,
                      make_renderer=_quick_factory())
    assert summary.interrupted and summary.rendered == [jobs[0].output]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["manifest.jsonl", "v0.mp4"] and (tmp_path / "out" / "v0.mp4").read_bytes() == b"v0.mp4"


def test_resources_the_cluster_lacks_are_refused(cluster, tmp_path):
    jobs, _ = parse_jobs(_jobs_file(tmp_path, [{"output": "x.mp4", "prompt": "p"}]))
    with pytest.raises(ValueError, match="has 0 GPUs; .* --gpus-per-worker 0"):
        run_ray(jobs, Manifest(tmp_path / "out"), MODEL, gpus_per_worker=1)
    with pytest.raises(ValueError, match="--workers 3: the cluster fits 2 workers"):
        run_ray(jobs, Manifest(tmp_path / "out"), MODEL, workers=3, gpus_per_worker=0)


def test_a_model_that_does_not_load_fails_the_jobs_without_hanging(cluster, tmp_path):
    def make(model):
        raise FileNotFoundError("no DiT on this machine")

    jobs, _ = parse_jobs(_jobs_file(tmp_path, [{"output": f"x{i}.mp4", "prompt": "p"} for i in range(2)]))
    summary = run_ray(jobs, Manifest(tmp_path / "out"), MODEL, workers=1, gpus_per_worker=0, make_renderer=make)
    assert sorted(j for j, _ in summary.failed) == ["x0.mp4", "x1.mp4"] and not summary.rendered
    assert all("no DiT on this machine" in error for _, error in summary.failed)
