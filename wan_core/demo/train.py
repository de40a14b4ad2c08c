"""Train the embedded demo model from scratch on the synthetic world (seeded; CPU; only wan_core's own classes).

    # the shipped files, in this order (the defaults are the shipped recipe):
    python -m wan_core.demo.train --out models --stage vae --budget-minutes 26
    python -m wan_core.demo.train --out models --stage dit --budget-minutes 41 --threads 2
    python -m wan_core.demo.train --out models --stage vae3 --budget-minutes 8.5 --threads 2
    python -m wan_core.demo.train --out models --stage dit2 --budget-minutes 28 --threads 2
    python -m wan_core.demo.train --out models --stage vae_i2v
    python -m wan_core.demo.train --out models --stage vae_i2v --set vae_first_frame_weight=12
    python -m wan_core.demo.train --out models --stage dit_i2v --dit-steps 300

Stages, each on the files of the previous ones in --out (wan_core.demo.training holds the code):
- vae: a tiny Wan2.2-family VAE (z_dim 48, with the mask code) in phases 0-2: 9-frame 96 px crops, whole clips, the
  decoder alone.
- dit: the tokenizer (sentencepiece on EN+ZH captions, stored in the text-encoder file), a latent cache, then
  round 1 of the DiT and a tiny umT5 encoder, jointly, with flow matching.
- vae3: VAE phase 3, the decoder alone with a temporal loss; the encoder is frozen, so the latents and the DiT stay
  valid.
- dit2: round 2 of the DiT + umT5 on the files in --out: shift 6, half the learning rate, the shape swap, the frame
  crop and a weight average.
- vae_i2v: VAE phase 4, the decoder alone (latents and DiT stay valid), phase 3's loss plus whole first frames
  decoded from their exact latents: an image-to-video video's first frame is the decoder's reading of the image.
- dit_i2v: round 3 of the DiT + umT5 with the official image-to-video masking on a share of the batches (first latent
  frame clean, timestep 0 on its tokens, no loss there), at a quarter of the learning rate.
Step counts are fixed by the config; --budget-minutes only caps them (the steps done and the steps the learning-rate
schedule was planned over are written into each file's metadata, with the config and the thread count). A DiT round
re-planned by its time cap is replayed without a budget by --set dit_replan_steps=SCHEDULED, and
--set dit_stop_steps=DONE if the cap also stopped it; the shipped files, step for step:

    python -m wan_core.demo.train --out models --stage vae
    python -m wan_core.demo.train --out models --stage dit --threads 2 --set dit_replan_steps=8825 \
        --set dit_stop_steps=8710
    python -m wan_core.demo.train --out models --stage vae3 --threads 2
    python -m wan_core.demo.train --out models --stage dit2 --threads 2 --set dit_replan_steps=5179 \
        --set dit_stop_steps=5059
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from .export import MODEL_FILES, load_stage, save_dit, save_text_encoder, save_vae
from .training.config import TrainConfig, dit_round
from .training.dit_round import resume_dit, train_dit
from .training.latent_cache import cache_latents
from .training.text import train_demo_tokenizer
from .training.vae_stage import train_vae

log = logging.getLogger(__name__)

STAGES = ("vae", "dit", "vae3", "dit2", "vae_i2v", "dit_i2v")  # in the order the shipped files were made
_VAE_PHASES = {"vae": (0, 1, 2), "vae3": (3,), "vae_i2v": (4,)}


def file_training(path: Path) -> dict:
    """The "training" record in a safetensors file's metadata ({} if none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("training", "{}"))


def _vae_stage(out: Path, cfg: TrainConfig, stage: str, budget_minutes: float | None, config: str) -> dict:
    path = out / MODEL_FILES["vae"]
    start = load_stage(path) if stage != "vae" else None
    earlier = file_training(path) if start is not None else {}
    vae, info = train_vae(cfg, budget_minutes, vae=start, phases=_VAE_PHASES[stage])
    info = {**{k: v for k, v in earlier.items() if k not in info}, **info}  # a resumed file keeps its history
    save_vae(vae, path, metadata={"training": json.dumps(info), "train_config": config})
    return {"vae": info}


def _dit_stage(out: Path, cfg: TrainConfig, stage: str, budget_minutes: float | None, config: str) -> dict:
    vae = load_stage(out / MODEL_FILES["vae"])
    t0 = time.perf_counter()
    plan = dit_round(cfg, second=stage == "dit2", i2v=stage == "dit_i2v")
    resume = resume_dit(out) if stage != "dit" else None  # later rounds continue the files in --out
    tokenizer = resume[2] if resume else train_demo_tokenizer(cfg)
    swap = plan.swap_share > 0
    ccfg = replace(cfg, clips=cfg.i2v_clips) if stage == "dit_i2v" else cfg
    pools = cache_latents(vae, ccfg, budget_minutes and budget_minutes * (0.25 if swap else 0.15), swap_shapes=swap)
    summary = {"latents": {"clips": sum(len(p) for p in pools.values()), "seconds": round(time.perf_counter() - t0)}}
    dit_minutes = budget_minutes and budget_minutes - (time.perf_counter() - t0) / 60
    dit, text_model, summary["dit"] = train_dit(cfg, pools, tokenizer, dit_minutes, plan=plan,
                                                resume=resume and resume[:2])
    earlier = file_training(out / MODEL_FILES["dit"]) if resume else {}
    if stage == "dit_i2v":  # the DiT file keeps the record of the rounds before it
        summary = {"rounds": {**earlier.get("rounds", {"round2": earlier}), "i2v": summary}}
    meta = {"training": json.dumps(summary), "round": str(plan.index), "train_config": config}
    save_dit(dit, out / MODEL_FILES["dit"], dtype=getattr(torch, cfg.dit_file_dtype), metadata=meta)
    save_text_encoder(text_model, tokenizer, out / MODEL_FILES["text_encoder"], metadata=meta)
    return summary


def run(out: Path, cfg: TrainConfig, stage: str, *, budget_minutes: float | None = None, threads: int = 1) -> dict:
    """Run one stage into `out` (ComfyUI layout: diffusion_models/, text_encoders/, vae/); returns its summary."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: use one of {STAGES}, in that order")
    torch.set_num_threads(max(1, min(2, threads)))  # OpenMP barriers stall when other jobs hold the cores
    config = json.dumps(asdict(cfg), default=str)
    step = _vae_stage if stage in _VAE_PHASES else _dit_stage
    return step(Path(out), cfg, stage, budget_minutes, config)


def _overrides(cfg: TrainConfig, items: list[str]) -> dict:
    """--set FIELD=VALUE pairs -> typed values for the scalar (bool/int/float) fields of cfg."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        current = getattr(cfg, key, None)
        if not sep or not isinstance(current, (int, float)):
            scalars = sorted(f.name for f in fields(cfg) if isinstance(getattr(cfg, f.name), (int, float)))
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {scalars}")
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {item!r}: {key} is a switch; use {key}=true or {key}=false")
            out[key] = value.lower() in ("true", "1")
            continue
        try:
            out[key] = type(current)(value)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {value!r} is not a valid {type(current).__name__}") from None
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m wan_core.demo.train", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="pack models/ folder (or any folder) to write into")
    ap.add_argument("--stage", required=True, choices=STAGES,
                    help="vae: VAE phases 0-2; dit: tokenizer + DiT round 1; vae3: VAE phase 3 (decoder only, the "
                         "latents and the DiT stay valid); dit2: DiT round 2 on the files in --out; vae_i2v: VAE "
                         "phase 4 (decoder only, first frames); dit_i2v: DiT round 3 with image-to-video masking")
    ap.add_argument("--budget-minutes", type=float, default=None, help="wall-time cap for the stage")
    ap.add_argument("--dit-steps", type=int, default=None,
                    help="steps of this stage's DiT round (the config's dit_steps for dit, dit_steps_round2 for dit2)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a scalar TrainConfig field, e.g. --set seed=1 (repeatable; recorded in the files)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 or 2; the result depends on it): 1 is several times faster than 2 "
                         "when the machine is busy")
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig()
    if args.dit_steps is not None:
        if args.stage not in ("dit", "dit2", "dit_i2v"):
            raise SystemExit(f"--dit-steps {args.dit_steps} with --stage {args.stage}: it sets the steps of a DiT "
                             "round; use it with --stage dit, dit2 or dit_i2v, or leave it out")
        field = {"dit": "dit_steps", "dit2": "dit_steps_round2", "dit_i2v": "dit_steps_i2v"}[args.stage]
        cfg = replace(cfg, **{field: args.dit_steps})
    return replace(cfg, **_overrides(cfg, args.set))


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    summary = run(args.out, config_from_args(args), args.stage, budget_minutes=args.budget_minutes,
                  threads=args.threads)
    log.info("summary: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
