"""Rendering jobs: `Renderer` loads a pipeline once and turns one job into mp4 bytes with the same functions as
`python -m wan_core generate` (settings from the model's defaults overridden by the job, WanT2VPipeline, write_mp4);
`run_local` renders the jobs one after another in this process.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from .jobs import FIELDS, Job
from .manifest import Manifest


@dataclass(frozen=True)
class ModelSpec:
    """What every worker loads: the `generate` model flags (all None = the embedded demo model)."""

    model_dir: str | None = None
    dit: str | None = None
    vae: str | None = None
    text_encoder: str | None = None
    tokenizer: str | None = None
    device: str = "auto"
    dtype: str | None = None  # fp32, bf16, fp16; None as `generate`
    verify: bool = True
    crf: int = 18

    def describe(self) -> str:
        """The part of a job's key that depends on the model (paths as given, dtype, crf)."""
        d = asdict(self)
        d.pop("device")
        d.pop("verify")
        return json.dumps(d, sort_keys=True)


@dataclass
class Rendered:
    """One finished job: the encoded mp4, render time, the worker's name and the sha256 of the uint8 frames that
    went into the encoder (the H.264 encoder is not always bit-reproducible; the frames are)."""

    data: bytes
    seconds: float
    worker: str
    frames_sha256: str | None = None


@dataclass
class Summary:
    rendered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job, error)
    interrupted: bool = False


def worker_name(device) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{device}"


class Renderer:
    """A loaded pipeline that renders jobs; built once per worker (Ray actor or this process)."""

    def __init__(self, model: ModelSpec):
        import torch

        from ..cli import pick_device
        from ..model_files import resolve_inputs
        from ..pipeline import WanT2VPipeline

        self.model = model
        self.demo = not (model.model_dir or model.dit or model.vae or model.text_encoder)
        self.files = resolve_inputs(model.model_dir, dit=model.dit, vae=model.vae, text_encoder=model.text_encoder,
                                    tokenizer=model.tokenizer)
        device = pick_device(model.device)
        dtype = {None: None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[model.dtype]
        on_cpu = device.type == "cpu"
        if dtype is None and (self.demo or on_cpu):
            dtype = torch.float32  # as `generate`: half-precision matmuls are slow or missing on CPUs
        self.pipe = WanT2VPipeline.from_pretrained(dit=self.files.dit, vae=self.files.vae,
                                                   text_encoder=self.files.text_encoder, tokenizer=self.files.tokenizer,
                                                   device=device, dtype=dtype,
                                                   vae_dtype=torch.float32 if on_cpu else None,
                                                   verify=model.verify)
        self.name = worker_name(device)

    def render(self, job: Job, image: bytes | None = None) -> Rendered:
        """The job's video as mp4 bytes. image: the start image's bytes (read by the driver, so workers on other
        machines need no copy of it); None with an `image` field reads the file here."""
        from ..cli import resolve_settings
        from ..geometry import validate_request
        from ..image import load_image
        from ..video import to_uint8, write_mp4

        start = time.perf_counter()
        flags = SimpleNamespace(**{k: job.get(k) for k in FIELDS})
        s, _ = resolve_settings(flags, self.pipe.defaults, self.pipe.defaults_source)
        validate_request(s.width, s.height, s.num_frames)
        settings = dict(width=s.width, height=s.height, num_frames=s.num_frames, num_inference_steps=s.steps,
                        guidance_scale=s.guidance_scale, shift=s.shift, sampler=s.sampler, schedule=s.schedule,
                        seed=job.get("seed", 0))
        pil, image_meta = None, {}
        if job.get("image") is not None:
            from PIL import Image

            data = image if image is not None else Path(job.get("image")).read_bytes()
            pil = Image.open(io.BytesIO(data)) if image is not None else load_image(job.get("image"))
            image_meta = {"image": Path(job.get("image")).name, "image_sha256": hashlib.sha256(data).hexdigest(),
                          "image_size": list(pil.size)}
        frames = self.pipe(job.get("prompt"), job.get("negative_prompt"), image=pil, **settings)
        params = dict(prompt=job.get("prompt"), negative_prompt=job.get("negative_prompt"), fps=s.fps,
                      model="demo" if self.demo else {k: getattr(self.model, k) for k in
                                                      ("model_dir", "dit", "vae", "text_encoder")},
                      job=job.output, **settings, **image_meta)
        with tempfile.TemporaryDirectory(prefix="wan_batch_") as tmp:
            path = write_mp4(frames, Path(tmp) / "out.mp4", fps=s.fps, crf=self.model.crf,
                             metadata={"comment": "made with wan_core",
                                       "wan_t2v_parameters": json.dumps(params, ensure_ascii=False)})
            data = path.read_bytes()
        digest = hashlib.sha256(to_uint8(frames).tobytes()).hexdigest()
        return Rendered(data, time.perf_counter() - start, self.name, digest)


def job_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def run_local(jobs: list[Job], manifest: Manifest, model: ModelSpec, *,
              make_renderer: Callable[[ModelSpec], Renderer] = Renderer) -> Summary:
    """Render the jobs not yet done one after another in this process (the model loads once, and only when a job
    is left to do; a model that does not load raises). A job that raises is recorded as failed and the next one runs;
    Ctrl-C stops after cleaning up the video being written (finished ones stay)."""
    from tqdm import tqdm

    summary = Summary()
    key_of = {job.output: job.key(model.describe()) for job in jobs}
    todo = [job for job in jobs if not manifest.is_done(job.output, key_of[job.output])]
    summary.skipped = [job.output for job in jobs if job not in todo]
    if not todo:
        return summary
    renderer = make_renderer(model)
    bar = tqdm(total=len(jobs), initial=len(summary.skipped), desc="jobs", unit="video", disable=None)
    try:
        for job in todo:
            try:
                result = renderer.render(job)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one bad job (bad size, missing file, NaN) must not stop the batch
                summary.failed.append((job.output, job_error(e)))
                manifest.record_failure(job.output, key_of[job.output], job_error(e), attempts=1,
                                        worker=renderer.name)
                bar.write(f"failed {job.output} (line {job.line}): {job_error(e)}")
            else:
                manifest.record(job.output, key_of[job.output], result.data, seconds=result.seconds,
                                worker=result.worker, frames_sha256=result.frames_sha256)
                summary.rendered.append(job.output)
                bar.write(f"wrote {manifest.out_dir / job.output} in {result.seconds:.1f} s")
            bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
    return summary
