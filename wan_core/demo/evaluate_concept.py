"""Scores the LoRA demo's concept (a striped background, wan_core.demo.stripes) with and without a LoRA.

How it sees stripes: the background of each row is the evaluator's (wan_core.demo.evaluate: the median colour of
the row's border pixels over all frames). Projected on their main colour axis, the rows split into a light and a
dark group at the midpoint; a striped background has at least MIN_BANDS bands of at least MIN_BAND_PX rows and the
two groups' mean colours lie at least MIN_CONTRAST apart (a plain background: one band; two-tone: two).

Three prompt sets, all on the held-out triples (wan_core.demo.evaluate.held_out_cases):
- "named": the striped caption of each held-out scene (EN and ZH): the share drawn striped is the concept score;
- "plain": the held-out prompts as they are: colour / shape / motion (and the share drawn striped, which should
  stay 0) must stay close to the base model's.

    python -m wan_core.demo.evaluate --concept models/loras/wan2.2_tiny_demo_stripes_lora.safetensors
    python -m wan_core.demo.evaluate --concept LORA --ground-truth       # the true clips: must score 100% / 0%
"""
from __future__ import annotations

import logging
import time

import torch

from .captions import LANGS
from .evaluate import BORDER, Case, evaluate, format_table, held_out_cases, model_generator
from .stripes import render_striped, striped_caption

log = logging.getLogger(__name__)

MIN_BANDS = 4  # bands (runs of rows of one group) a striped background shows at least: all 4 of a 128-px frame
MIN_BAND_PX = 4  # a run shorter than this is merged into its neighbours (edges blurred by the decoder)
MIN_CONTRAST = 0.08  # RGB distance between the mean colours of the light and dark rows


def row_background(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> [H, 3]: each row's background, the median of its border pixels over all frames."""
    frames = frames.float()
    border = torch.cat([frames[:, :, :BORDER], frames[:, :, -BORDER:]], dim=2)  # [T, H, 2 * BORDER, 3]
    return border.transpose(0, 1).flatten(1, 2).median(dim=1).values


def bands(frames: torch.Tensor) -> tuple[int, float]:
    """(number of light/dark bands of the rows' background, RGB distance between the two groups' means)."""
    bg = row_background(frames)  # [H, 3]
    centred = bg - bg.mean(0)
    axis = torch.linalg.svd(centred, full_matrices=False).Vh[0]  # [3] main colour axis of the rows
    p = centred @ axis  # [H]
    dark = p < (p.max() + p.min()) / 2
    if dark.all() or not dark.any():
        return 1, 0.0
    contrast = (bg[dark].mean(0) - bg[~dark].mean(0)).norm().item()
    runs = []  # [label, length]
    for d in dark.tolist():
        if runs and runs[-1][0] == d:
            runs[-1][1] += 1
        else:
            runs.append([d, 1])
    merged = []
    for label, n in runs:  # short runs join the run before them
        if merged and (n < MIN_BAND_PX or merged[-1][0] == label):
            merged[-1][1] += n
        else:
            merged.append([label, n])
    return len(merged), contrast


def is_striped(frames: torch.Tensor) -> bool:
    """Does the video show a striped background?"""
    n, contrast = bands(frames)
    return n >= MIN_BANDS and contrast >= MIN_CONTRAST


def striped_cases(cases: list[Case]) -> list[Case]:
    """The same held-out scenes with the striped caption (two-tone off: the concept replaces it)."""
    from dataclasses import replace

    out = []
    for i, c in enumerate(cases):
        scene = replace(c.scene, two_tone=False)
        out.append(Case(scene, c.seed, {lang: striped_caption(scene, lang, variant=i) for lang in LANGS}))
    return out


def run_set(generate, cases: list[Case]) -> dict:
    """evaluate() plus the share of videos drawn striped, per language."""
    seen = {lang: [] for lang in LANGS}

    def gen(case: Case, lang: str) -> torch.Tensor:
        frames = generate(case, lang)
        seen[lang].append(is_striped(frames))
        return frames
    report = evaluate(gen, cases)
    report["striped"] = {lang: sum(v) / max(1, len(v)) for lang, v in seen.items()}
    return report


def format_concept(name: str, report: dict) -> str:
    share = "  ".join(f"{lang} {100 * v:.1f}%" for lang, v in report["striped"].items())
    return f"== {name}: drawn striped {share}\n{format_table(report)}"


def concept_report(pipe, lora: str | None, *, seeds: int = 2, first_seed: int = 0, knobs=None,
                   ground_truth: bool = False) -> list[str]:
    """The concept scores and the plain-prompt table for the base model and, with `lora`, the model with it."""
    plain = [c for c in held_out_cases(first_seed + seeds) if c.seed >= first_seed]
    named = striped_cases(plain)
    if ground_truth:
        from .evaluate import ground_truth as truth
        return [format_concept("true clips, striped prompts", run_set(lambda c, lang: render_striped(c.scene), named)),
                format_concept("true clips, plain prompts", run_set(truth, plain))]
    gen = model_generator(pipe, **(knobs or {}))
    lines = [format_concept("base model, striped prompts", run_set(gen, named)),
             format_concept("base model, plain prompts", run_set(gen, plain))]
    if lora is not None:
        pipe.load_lora(lora, 1.0)
        try:
            lines += [format_concept("with the LoRA, striped prompts", run_set(gen, named)),
                      format_concept("with the LoRA, plain prompts", run_set(gen, plain))]
        finally:
            pipe.unload_loras()
    return lines


def main_concept(args) -> int:
    """`python -m wan_core.demo.evaluate --concept LORA` (args from evaluate.main)."""
    pipe = None
    if not args.ground_truth:
        from . import load_demo_pipeline
        pipe = load_demo_pipeline(args.models)
    t0 = time.perf_counter()
    knobs = {"steps": args.steps, "cfg": args.cfg, "shift": args.shift, "sampler": args.sampler}
    lines = concept_report(pipe, args.concept, seeds=args.seeds, first_seed=args.first_seed, knobs=knobs,
                           ground_truth=args.ground_truth)
    print("\n".join(lines))  # noqa: T201 - this is the CLI's output
    print(f"{time.perf_counter() - t0:.1f} s")  # noqa: T201
    return 0
