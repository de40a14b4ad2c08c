"""Command line: `python -m wan_core generate|info|verify|convert`.

This front end is the one place in wan_core that picks a device for the user (`--device auto`: CUDA when available).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .config import SamplingConfig
from .geometry import validate_request
from .runtime_cli import add_runtime_args, runtime_options
from .speed_cli import add_speed_args, apply_speed_args, finish_speed
from .quantize import add_quantize_parser
from .lora.cli_train import add_lora_parser
from .distributed.launch import add_distributed_args, start_session
from .batch.command import add_batch_parser

log = logging.getLogger("wan_core")


def _add_generate(sub):
    p = sub.add_parser("generate", help="text (+ start image) -> mp4 (the embedded tiny demo model unless model files "
                                        "are given)")
    p.add_argument("prompt", help="the prompt, English or Simplified Chinese")
    p.add_argument("-o", "--output", default="out.mp4", help="mp4 path (default: out.mp4)")
    p.add_argument("--image", action="append", default=None, metavar="PNG",
                   help="image-to-video: the video starts from this image (resized and centre-cropped to the video "
                        "size; its name and sha256 go into the mp4's metadata)")
    p.add_argument("--end-image", default=None, metavar="PNG", help=argparse.SUPPRESS)  # refused with a message
    p.add_argument("--negative-prompt", default=None, help="default: the official Wan negative prompt")
    for name, kind, hint in (("width", int, "multiple of 32"), ("height", int, "multiple of 32"),
                             ("frames", int, "4k+1"), ("fps", float, ""), ("steps", int, ""),
                             ("cfg", float, "guidance scale; 1 disables CFG"), ("shift", float, "flow shift")):
        p.add_argument(f"--{name}", type=kind, default=None,
                       help=f"{hint + '; ' if hint else ''}default: the DiT file's own (its metadata), else the "
                            f"official {_official_default(name)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None, choices=["unipc", "euler", "dpm++2m", "lcm"],
                   help=f"default: the DiT file's own, else the official {SamplingConfig.sampler}")
    p.add_argument("--schedule", default=None, choices=["official", "diffusers"],
                   help=f"default: the DiT file's own, else {SamplingConfig.schedule}")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps ...")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                   help="DiT/text-encoder weight dtype (default: as stored on GPUs, fp32 on the CPU; the VAE runs "
                        "in fp32 on the CPU, as stored elsewhere)")
    p.add_argument("--offload", nargs="?", const="models", default=None, choices=["models", "blocks"],
                   help="models (the default when given alone): keep models on the CPU, move each to the device only "
                        "while it runs; blocks: also stream the DiT's blocks to the device one at a time (about one "
                        "block + activations on the GPU; not with --compile)")
    p.add_argument("--model-dir", help="ComfyUI models folder, diffusers folder or official Wan2.2 folder (auto-detected)")
    p.add_argument("--dit", help="DiT .safetensors (file, sharded index or folder)")
    p.add_argument("--vae", help="Wan2.2 VAE .safetensors")
    p.add_argument("--text-encoder", help="umT5 .safetensors")
    p.add_argument("--tokenizer", help="tokenizer folder (when the text encoder file has no embedded spiece_model)")
    p.add_argument("--no-verify", action="store_true", help="skip SHA256 checks against .sha256 sidecars")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="apply a LoRA .safetensors (official/ComfyUI, kohya/musubi or diffusers names) at STRENGTH "
                        "(default 1.0); repeat for several (wan_core.lora)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0..51 (default 18)")
    p.add_argument("--temporal", default=None, metavar="SPEC",
                   help='temporal-consistency sampling: a preset (off, on, noise, flow, enhance, flow+enhance) '
                        'and/or key=value pairs, e.g. "on" or "flow=0.4,enhance=2,noise=0.3" (keys: flow, enhance, '
                        'noise = noise_share, band = noise_band, and the *_start/*_end step fractions; default: off)')
    p.add_argument("--interpolate", type=int, default=1, choices=[1, 2, 3, 4],
                   help="optical-flow frame interpolation multiplier; the fps is multiplied too (default 1: off)")
    p.add_argument("--deflicker", type=_unit_float, default=0.0, metavar="S",
                   help="motion-compensated deflicker of the decoded frames, strength 0..1 (default 0: off; 1 is "
                        "what the README measures)")
    add_speed_args(p)  # --preset, --sigmas, --timesteps, --warp, --cache (wan_core.speed_cli)
    add_runtime_args(p)  # --cfg-batch, --compile, --attention (wan_core.runtime_cli)
    add_distributed_args(p)  # --ulysses, --cfg-parallel under torchrun (wan_core.distributed.launch)
    p.set_defaults(func=cmd_generate)


FLAG_FIELDS = {"width": "width", "height": "height", "frames": "num_frames", "fps": "fps", "steps": "steps",
               "cfg": "guidance_scale", "shift": "shift", "sampler": "sampler", "schedule": "schedule"}
EXIT_USAGE, EXIT_NONFINITE = 2, 3  # a bad request or file; NaN/Inf while sampling or decoding


def _official_default(name):
    return getattr(SamplingConfig, FLAG_FIELDS[name])


def resolve_settings(args, defaults: SamplingConfig, source: str) -> tuple[SamplingConfig, str]:
    """The model's defaults overridden by the given flags -> (settings, the one line saying where they came from)."""
    given = {flag: getattr(args, flag) for flag in FLAG_FIELDS if getattr(args, flag) is not None}
    settings = defaults.merged(**{FLAG_FIELDS[flag]: v for flag, v in given.items()})
    override = f"; overridden by {', '.join('--' + f for f in given)}" if given else "; flags override"
    return settings, f"defaults: {defaults.summary()} ({source}){override}"


def _unit_float(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a strength in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is outside [0, 1]; 0 is off, 1 the default strength")
    return value


def pick_device(name: str):
    import torch

    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cmd_generate(args) -> int:
    import torch
    from tqdm import tqdm

    from .guard import NonFiniteError
    from .pipeline import WanT2VPipeline
    from .video import write_mp4

    from .loading import sampling_defaults
    from .model_files import resolve_inputs

    start = time.perf_counter()
    use_demo = not (args.model_dir or args.dit or args.vae or args.text_encoder)
    files = resolve_inputs(args.model_dir, dit=args.dit, vae=args.vae, text_encoder=args.text_encoder,
                           tokenizer=args.tokenizer)
    s, line = resolve_settings(args, *sampling_defaults(files.dit))
    settings = dict(width=s.width, height=s.height, num_frames=s.num_frames, num_inference_steps=s.steps,
                    guidance_scale=s.guidance_scale, shift=s.shift, sampler=s.sampler, schedule=s.schedule,
                    seed=args.seed)
    settings, speed = apply_speed_args(args, settings, files.dit)
    fps = s.fps
    temporal = None
    if args.temporal:
        from .temporal.options import TemporalOptions

        temporal = TemporalOptions.parse(args.temporal)
    validate_request(s.width, s.height, s.num_frames)  # fail before loading models
    image, image_meta = _start_image(args, s)
    print(line, flush=True)
    session = start_session(args)  # torchrun + --ulysses/--cfg-parallel: process group and this rank's device
    device = session.device if session else pick_device(args.device)
    runtime = runtime_options(args, device)  # a missing attention package fails here, before any model loads
    if args.offload == "blocks" and args.compile:
        raise ValueError("--offload blocks streams each block's weights per call, which --compile cannot trace; "
                         "drop one of the two")
    dtype = {None: None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    on_cpu = device.type == "cpu"
    if dtype is None and (use_demo or on_cpu):
        dtype = torch.float32  # half-precision matmuls and convs are slow (or missing) on CPUs
    load = session.load_pipeline if session else WanT2VPipeline.from_pretrained  # distributed: umT5 on rank 0
    pipe = load(dit=files.dit, vae=files.vae, text_encoder=files.text_encoder,
                tokenizer=files.tokenizer, device=device, dtype=dtype,
                vae_dtype=torch.float32 if on_cpu else None, offload=args.offload,
                verify=not args.no_verify)
    from .lora import load_cli_loras

    loras = load_cli_loras(pipe, args.lora, verify=not args.no_verify)  # --lora FILE[:STRENGTH], applied in order
    bar = tqdm(total=settings["num_inference_steps"], desc="sampling", unit="step", disable=None)
    try:
        frames, info = pipe(args.prompt, args.negative_prompt, callback=lambda d: bar.update(1), temporal=temporal,
                            deflicker=args.deflicker, image=image, return_info=True, **settings, **speed,
                            speed=runtime)
    except NonFiniteError as e:
        raise NonFiniteError(f"{e} No file was written. The files used: DiT {files.dit}, VAE {files.vae}.") from None
    finally:
        bar.close()
    if session is not None and not session.writes_output:
        return 0  # sampling done on every rank; rank 0 decodes and writes the mp4
    for speed_line in finish_speed(args, info, files.dit):
        print(speed_line, flush=True)
    if args.interpolate > 1:
        from .temporal.interpolate import interpolate_frames

        frames, fps = interpolate_frames(frames, args.interpolate), fps * args.interpolate
    params = dict(prompt=args.prompt, negative_prompt=args.negative_prompt, fps=fps, interpolate=args.interpolate,
                  temporal=temporal.describe() if temporal else "off", deflicker=args.deflicker,
                  preset=args.preset, cache=info["cache"], dit_calls=info["dit_calls"], loras=loras,
                  sigmas=None if speed["sigmas"] is None else [round(v, 6) for v in speed["sigmas"].tolist()],
                  model="demo" if use_demo else {k: getattr(args, k) for k in ("model_dir", "dit", "vae", "text_encoder")},
                  **settings, **image_meta)
    out = write_mp4(frames, args.output, fps=fps, crf=args.crf,
                    metadata={"comment": "made with wan_core", "wan_t2v_parameters": json.dumps(params, ensure_ascii=False)})
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}, {fps:g} fps) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _start_image(args, s: SamplingConfig):
    """(the loaded start image or None, its metadata entries) for --image; refuses --end-image and several images."""
    from .image import END_IMAGE, SEVERAL_FRAMES, file_sha256, load_image

    if args.end_image:
        raise ValueError(f"--end-image {args.end_image}: {END_IMAGE}")
    if not args.image:
        return None, {}
    if len(args.image) > 1:
        raise ValueError(f"--image given {len(args.image)} times: " + SEVERAL_FRAMES.format(n=len(args.image)))
    path = args.image[0]
    image = load_image(path)  # a missing or unreadable file fails before any model loads
    return image, {"image": Path(path).name, "image_sha256": file_sha256(path), "image_size": list(image.size)}


def cmd_info(args) -> int:
    from .tools import describe

    print(json.dumps(describe(args.file), indent=2, default=str, ensure_ascii=False))
    return 0


def cmd_verify(args) -> int:
    from .integrity import IntegrityError
    from .tools import scan_report, verify

    if not args.scan:
        print(f"{verify(args.file, args.sha256)}  {args.file}: OK")
        return 0
    code = 0
    try:  # with --scan a missing sidecar is no error, and a mismatch does not stop the scan
        digest = verify(args.file, args.sha256, require=False)
        print(f"{digest}  {args.file}: OK" if digest else f"{args.file}: no .sha256 sidecar or --sha256, hash not checked")
    except IntegrityError as e:
        print(f"error: {e}", file=sys.stderr)
        code = EXIT_USAGE
    lines, bad = scan_report(args.file)
    print("\n".join(lines))
    return EXIT_NONFINITE if bad else code


def cmd_convert(args) -> int:
    from .tools import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, component=args.component)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wan_core", description="Wan2.2 TI2V-5B text-to-video engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages (model loads, timings)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    p = sub.add_parser("info", help="kind, format, config, dtypes and parameter count of a model file")
    p.add_argument("file")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("verify", help="check a file against its .sha256 sidecar or a given hash; --scan: NaN/Inf")
    p.add_argument("file")
    p.add_argument("--sha256", default=None, help="expected hex digest (default: the <file>.sha256 sidecar)")
    p.add_argument("--scan", action="store_true",
                   help="also read every tensor and list those holding NaN/Inf (exit code 3 if any); without a "
                        "sidecar the hash check is skipped")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("convert", help="convert a pickled checkpoint (.pth/.pt/.ckpt/.bin) to .safetensors")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--component", choices=["dit", "vae", "t5"], default=None, help="default: detected")
    p.set_defaults(func=cmd_convert)
    add_quantize_parser(sub)  # python -m wan_core quantize IN OUT --type Q8_0 (wan_core.quantize)
    add_lora_parser(sub)  # python -m wan_core lora train --data DIR --out my_lora.safetensors (wan_core.lora)
    add_batch_parser(sub)  # python -m wan_core batch jobs.jsonl --out DIR [--ray auto] (wan_core.batch)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .guard import NonFiniteError  # imports torch: after parsing, so --help stays fast

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError, ImportError, NonFiniteError) as e:  # user-facing: message only, no traceback
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NONFINITE if isinstance(e, NonFiniteError) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
