"""`generate` options for fast sampling (--preset, --sigmas, --timesteps, --warp, --cache): parsing and reporting.

wan_core/cli.py declares the flags and calls `apply_speed_args` before generating and `finish_speed` after it.
"""
from __future__ import annotations

PRESET_NAMES = ("fastwan", "turbo")  # = sorted(wan_core.few_step.PRESETS); torch is imported only after parsing
FLAG_KEYS = {"cfg": "guidance_scale", "shift": "shift", "sampler": "sampler"}  # flags a preset must not override


def add_speed_args(p) -> None:
    """The fast-sampling flags of `generate`."""
    p.add_argument("--preset", default=None, choices=PRESET_NAMES,
                   help="sampling recipe of a step-distilled 5B: fastwan (FastWan2.2-TI2V-5B: lcm, timesteps "
                        "1000,757,522 warped at shift 5, cfg 1) or turbo (Wan2.2-TI2V-5B-Turbo: 1000,750,500,250); "
                        "--cfg/--shift/--sampler still override")
    p.add_argument("--sigmas", default=None, metavar="LIST",
                   help="explicit schedule, e.g. 1,0.94,0.845 (a final 0 is appended); replaces --steps")
    p.add_argument("--timesteps", default=None, metavar="LIST",
                   help="explicit schedule as model timesteps, e.g. 1000,757,522 (sigma = t/1000, or warped with "
                        "--warp); replaces --steps")
    p.add_argument("--warp", action="store_true",
                   help="warp --timesteps through the shifted 1000-step schedule (FastWan/Turbo's "
                        "warp_denoising_step; uses --shift, default 5)")
    p.add_argument("--cache", default=None, metavar="SPEC",
                   help="step caching: easycache[:THRESH] (default 0.1), magcache[:THRESH] (needs the DiT's "
                        "<file>.magcache.json), calibrate (records that file) or off; prints the DiT calls made "
                        "and skipped")


def apply_speed_args(args, settings: dict, dit_path) -> tuple[dict, dict]:
    """(settings with a preset's sampler / cfg / shift unless flagged, extra pipeline kwargs: sigmas, cache)."""
    from .few_step import resolve_schedule
    from .magcache_ratios import load_ratios
    from .step_cache import StepCacheConfig

    sigmas, fixed = resolve_schedule(preset=args.preset, sigmas=args.sigmas, timesteps=args.timesteps,
                                     warp=args.warp, shift=args.shift)
    given = {key for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None}
    settings = {**settings, **{k: v for k, v in fixed.items() if k not in given}}
    if sigmas is not None and args.steps is not None:
        raise ValueError("--steps does not apply with --preset/--sigmas/--timesteps (their list sets the steps); "
                         "drop --steps")
    if sigmas is not None:
        settings["num_inference_steps"] = len(sigmas) - 1
    cache = StepCacheConfig.parse(args.cache) if args.cache else None
    if cache is not None and cache.method == "magcache":
        cache = cache.with_ratios(load_ratios(dit_path))
    return settings, {"sigmas": sigmas, "cache": cache}


def finish_speed(args, info: dict, dit_path) -> list[str]:
    """Lines to print after a run: DiT calls made and skipped; a calibrate run writes the ratio file."""
    from .magcache_ratios import save_ratios, sidecar

    lines = []
    if args.cache:
        total = info["dit_calls"] + info["dit_skipped"]
        lines.append(f"step cache {info['cache']}: {info['dit_calls']} DiT calls made, {info['dit_skipped']} skipped "
                     f"of {total} ({total / max(info['dit_calls'], 1):.2f}x fewer)")
    if "magcache_ratios" in info:
        from dataclasses import replace
        from pathlib import Path

        ratios = replace(info["magcache_ratios"], model=Path(dit_path).name)
        lines.append(f"wrote magcache ratios {save_ratios(ratios, sidecar(dit_path))}")
    return lines
