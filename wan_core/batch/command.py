"""`python -m wan_core batch jobs.jsonl --out DIR [--ray ADDRESS|auto|local] [--workers N] [--gpus-per-worker G]`."""
from __future__ import annotations

import sys

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def add_batch_parser(sub) -> None:
    p = sub.add_parser("batch", help="render every job of a jobs.jsonl file (one JSON object per line) into a folder, "
                                     "here one after another or on a Ray cluster; re-runs skip finished jobs")
    p.add_argument("jobs", help='jobs file, one job per line, e.g. {"output": "fox.mp4", "prompt": "a red fox", '
                                '"seed": 7}; keys: output, prompt, negative_prompt, image, seed, width, height, '
                                'frames, fps, steps, cfg, shift, sampler, schedule')
    p.add_argument("--out", required=True, help="output folder (videos + manifest.jsonl)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="render on Ray actors: auto (the running cluster), local (start Ray here) or the cluster "
                        "address (host:6379, ray://host:10001); default: no Ray, this process")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers (each loads the model once; default: as many as the cluster fits)")
    p.add_argument("--gpus-per-worker", type=float, default=1.0, help="GPUs per Ray worker (0: CPU workers)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per Ray worker (default 1)")
    p.add_argument("--retries", type=int, default=2,
                   help="times a job is retried when its worker dies, before it is reported failed (default 2)")
    for name, text in (("--model-dir", "model folder (as generate)"), ("--dit", "DiT file"), ("--vae", "VAE file"),
                       ("--text-encoder", "umT5 file"), ("--tokenizer", "tokenizer folder")):
        p.add_argument(name, default=None, help=f"{text}; none of these: the embedded demo model")
    p.add_argument("--device", default="auto", help="in each worker: auto (its GPU if any, else cpu), cpu, cuda ...")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="as generate")
    p.add_argument("--no-verify", action="store_true", help="skip SHA256 checks against .sha256 sidecars")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0..51 (default 18)")
    p.set_defaults(func=cmd_batch)


def cmd_batch(args) -> int:
    from .jobs import parse_jobs
    from .local import ModelSpec, run_local
    from .manifest import Manifest

    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0 (got {args.retries})")
    if args.workers is not None and args.ray is None:
        raise ValueError("--workers sets the number of Ray workers; add --ray auto (a running cluster) or --ray local, "
                         "or drop --workers to render in this process")
    jobs, errors = parse_jobs(args.jobs)  # a missing file raises; bad lines are reported and skipped
    for e in errors:
        print(f"error: {args.jobs} {e}", file=sys.stderr)
    model = ModelSpec(model_dir=args.model_dir, dit=args.dit, vae=args.vae, text_encoder=args.text_encoder,
                      tokenizer=args.tokenizer, device=args.device, dtype=args.dtype, verify=not args.no_verify,
                      crf=args.crf)
    manifest = Manifest(args.out)
    if args.ray is None:
        summary = run_local(jobs, manifest, model)
    else:
        from .ray_runner import connect, import_ray, run_ray

        started = connect(args.ray)
        try:
            summary = run_ray(jobs, manifest, model, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                              cpus_per_worker=args.cpus_per_worker, retries=args.retries)
        finally:
            if started:
                import_ray().shutdown()
    for job, error in summary.failed:
        print(f"error: job {job}: {error}", file=sys.stderr)
    print(f"{len(summary.rendered)} rendered, {len(summary.skipped)} skipped (already done), {len(summary.failed)} "
          f"failed, {len(errors)} bad line(s); manifest: {manifest.path}" + (" — interrupted" if summary.interrupted
                                                                             else ""))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.failed or errors else 0
