"""Many videos on many machines: Ray actors, each holding one loaded pipeline on its GPU (or CPUs), render the jobs;
Ray places the actors across the cluster and restarts one whose process dies.

This module is the only place that imports `ray` (optional: `pip install -r requirements-ray.txt`). The driver keeps
one job in flight per actor, so a worker that dies takes at most one job with it: that job goes back to the front of
the queue and the next free worker takes it, up to `retries` times, then it is reported failed with the error.
Workers return the encoded mp4 bytes; only the driver writes files (wan_core.batch.manifest).
"""
from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import Callable

from .jobs import Job
from .local import ModelSpec, Renderer, Summary, job_error
from .manifest import Manifest

RAY_MISSING = ("--ray needs the optional package ray: pip install -r requirements-ray.txt (or pip install "
               "\"ray[default]>=2.9\"), on every machine of the cluster; without --ray the jobs run in this process")


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"{RAY_MISSING} ({e})") from None
    return ray


class RenderWorker:
    """The actor body: loads the pipeline once (on its GPU when Ray gave it one), then renders jobs."""

    def __init__(self, make_renderer: Callable[[ModelSpec], Renderer], model: ModelSpec):
        self.renderer = make_renderer(model)

    def render(self, job: Job, image: bytes | None):
        return self.renderer.render(job, image)

    def name(self) -> str:
        return self.renderer.name


def connect(address: str, **init_kwargs) -> bool:
    """ray.init for --ray ADDRESS: "local" starts a Ray on this machine, "auto" joins the running cluster (as
    `ray start` left it), anything else is the cluster's address (host:6379 or ray://host:10001). Returns True when
    this call started the connection (and so should shut it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    ray.init(address=None if address == "local" else address, **init_kwargs)
    return True


def _death_reason(e: Exception) -> str:
    """First and last line of Ray's message (the last one names the cause when the actor's __init__ raised)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def _worker_count(ray, workers: int | None, gpus: float, cpus: float, jobs: int) -> int:
    total = ray.cluster_resources()
    have_gpu, have_cpu = total.get("GPU", 0.0), total.get("CPU", 0.0)
    if gpus > 0 and have_gpu < gpus:
        raise ValueError(f"--gpus-per-worker {gpus:g}: the Ray cluster has {have_gpu:g} GPUs; add GPU machines "
                         "(ray start --address ...) or give --gpus-per-worker 0 to render on CPUs")
    fit = int(have_gpu // gpus) if gpus > 0 else int(have_cpu // cpus)
    if workers is None:
        workers = fit
    elif workers > fit:
        raise ValueError(f"--workers {workers}: the cluster fits {fit} workers of {gpus:g} GPU(s) and {cpus:g} "
                         f"CPU(s) (it has {have_gpu:g} GPUs, {have_cpu:g} CPUs); give --workers {fit} or less")
    return max(1, min(workers, jobs))


def run_ray(jobs: list[Job], manifest: Manifest, model: ModelSpec, *, workers: int | None = None,
            gpus_per_worker: float = 1.0, cpus_per_worker: float = 1.0, retries: int = 2,
            make_renderer: Callable[[ModelSpec], Renderer] = Renderer) -> Summary:
    """Render the jobs not yet done on Ray actors (Ray must be initialised: see `connect`).

    workers None = as many as the cluster's GPUs (or CPUs with gpus_per_worker 0) fit. make_renderer builds each
    actor's renderer (the default loads the model; it is sent to the actors, so it must be picklable).
    Ctrl-C kills the actors and returns; every file and manifest line written before stays complete."""
    from tqdm import tqdm

    ray = import_ray()
    from ray.exceptions import RayActorError, RayTaskError

    summary = Summary()
    key_of = {job.output: job.key(model.describe()) for job in jobs}
    todo = deque(job for job in jobs if not manifest.is_done(job.output, key_of[job.output]))
    summary.skipped = [job.output for job in jobs if job not in todo]
    if not todo:
        return summary
    n = _worker_count(ray, workers, gpus_per_worker, cpus_per_worker, len(todo))
    actor_cls = ray.remote(RenderWorker).options(num_gpus=gpus_per_worker, num_cpus=cpus_per_worker,
                                                 max_restarts=max(1, retries * len(todo)), max_task_retries=0)
    actors = [actor_cls.remote(make_renderer, model) for _ in range(n)]
    attempts = {job.output: 0 for job in todo}
    images = {}  # output -> start image bytes, read once here (the workers may be on other machines)
    inflight = {}  # ObjectRef -> (actor, job)
    recovering = {}  # ObjectRef of a ping -> an actor whose process died and that Ray is restarting
    last_death = ""  # why the last worker died (the cause in a "no worker left" failure)
    idle = list(actors)
    bar = tqdm(total=len(jobs), initial=len(summary.skipped), desc="jobs", unit="video", disable=None)

    def fail(job, error, worker=None):
        summary.failed.append((job.output, error))
        manifest.record_failure(job.output, key_of[job.output], error, attempts=attempts[job.output], worker=worker)
        bar.write(f"failed {job.output} (line {job.line}): {error}")
        bar.update(1)

    try:
        while todo or inflight:
            if todo and not (idle or inflight or recovering):
                for job in todo:
                    fail(job, f"no worker left (Ray gave up restarting them); last worker death: {last_death}")
                break
            while todo and idle:
                job, actor = todo.popleft(), idle.pop()
                if job.get("image") is not None and job.output not in images:
                    images[job.output] = Path(job.get("image")).read_bytes()
                attempts[job.output] += 1
                inflight[actor.render.remote(job, images.get(job.output))] = (actor, job)
            done, _ = ray.wait([*inflight, *recovering], num_returns=1, timeout=1.0)  # timeout: Ctrl-C responsive
            for ref in done:
                if ref in recovering:  # the restarted actor answered (its pipeline is loaded again): give it work
                    actor = recovering.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(actor)
                    except RayActorError:
                        pass  # Ray gave up restarting it
                    continue
                actor, job = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except RayActorError as e:  # the worker process died (or its machine): Ray restarts the actor
                    left = retries + 1 - attempts[job.output]
                    reason = _death_reason(e)
                    last_death = reason
                    if left > 0:
                        bar.write(f"worker died on {job.output} (attempt {attempts[job.output]}); retrying "
                                  f"({left} attempt(s) left): {reason}")
                        todo.appendleft(job)
                    else:
                        fail(job, f"worker died {attempts[job.output]} times; last: {reason}")
                    # once Ray has restarted it (a retried call waits for that), the actor takes jobs again
                    recovering[actor.name.options(max_task_retries=-1).remote()] = actor
                    continue
                except RayTaskError as e:  # the job itself raised (bad size, missing file, NaN): not retried
                    fail(job, job_error(e.cause) if e.cause is not None else str(e))
                else:
                    manifest.record(job.output, key_of[job.output], result.data, seconds=result.seconds,
                                    worker=result.worker, frames_sha256=result.frames_sha256)
                    summary.rendered.append(job.output)
                    bar.write(f"wrote {manifest.out_dir / job.output} in {result.seconds:.1f} s on {result.worker}")
                    bar.update(1)
                idle.append(actor)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        for actor in actors:  # stops in-flight renders; their bytes were never written, so nothing is half-written
            ray.kill(actor, no_restart=True)
    return summary

