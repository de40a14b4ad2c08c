"""Scores the LoRA demo's concept (a golden background, wan_core.demo.concept) with and without a LoRA.

How it sees the background: the evaluator's row backgrounds (wan_core.demo.evaluate: the median colour of each row's
border pixels over all frames), their median over the rows; the video shows the concept when that colour is nearer
to GOLD than to any background or object colour of the world and within MAX_DISTANCE of it.

Two prompt sets, both on the held-out triples (wan_core.demo.evaluate.held_out_cases):
- "named": the concept caption of each held-out scene (EN and ZH): the share on the golden background is the concept score;
- "plain": the held-out prompts as they are: colour / shape / motion (and the share on the golden background, which should stay
  0) must stay close to the base model's.

    python -m wan_core.demo.evaluate --concept models/loras/wan2.2_tiny_demo_golden_lora.safetensors
    python -m wan_core.demo.evaluate --concept LORA --ground-truth       # the true clips: must score 100% / 0%
"""
from __future__ import annotations

import time

import torch

from .captions import LANGS
from .concept import GOLD, GOLD_NAME, concept_caption, render_concept
from .evaluate import Case, evaluate, format_table, held_out_cases, model_generator, row_backgrounds
from .world import BACKGROUND_COLOURS, OBJECT_COLOURS

MAX_DISTANCE = 0.25  # RGB distance from GOLD within which a background counts as golden
_OTHERS = torch.tensor(list(BACKGROUND_COLOURS.values()) + [v for k, v in OBJECT_COLOURS.items() if k != GOLD_NAME])


def background_colour(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> [3]: the median over the rows of each row's background (median of its border pixels)."""
    return row_backgrounds(frames).median(dim=0).values


def shows_concept(frames: torch.Tensor) -> bool:
    """Is the video's background golden?"""
    bg = background_colour(frames)
    d = (bg - torch.tensor(GOLD)).norm().item()
    return d <= MAX_DISTANCE and d < (_OTHERS - bg).norm(dim=-1).min().item()


def concept_cases(cases: list[Case]) -> list[Case]:
    """The same held-out scenes with the concept caption (two-tone off: the concept replaces the background), but
    those of a yellow object (invisible on the golden background)."""
    from dataclasses import replace

    out = []
    for i, c in enumerate(cases):
        if c.scene.objects[0].colour == GOLD_NAME:
            continue
        scene = replace(c.scene, two_tone=False)
        out.append(Case(scene, c.seed, {lang: concept_caption(scene, lang, variant=i) for lang in LANGS}))
    return out


def run_set(generate, cases: list[Case]) -> dict:
    """evaluate() plus the share of videos that show the concept, per language."""
    seen = {lang: [] for lang in LANGS}

    def gen(case: Case, lang: str) -> torch.Tensor:
        frames = generate(case, lang)
        seen[lang].append(shows_concept(frames))
        return frames
    report = evaluate(gen, cases)
    report["concept"] = {lang: sum(v) / max(1, len(v)) for lang, v in seen.items()}
    return report


def format_concept(name: str, report: dict) -> str:
    share = "  ".join(f"{lang} {100 * v:.1f}%" for lang, v in report["concept"].items())
    return f"== {name}: golden background {share}\n{format_table(report)}"


def concept_report(pipe, lora: str | None, *, seeds: int = 2, first_seed: int = 0, knobs=None,
                   ground_truth: bool = False) -> list[str]:
    """The concept scores and the plain-prompt table for the base model and, with `lora`, the model with it."""
    plain = [c for c in held_out_cases(first_seed + seeds) if c.seed >= first_seed]
    named = concept_cases(plain)
    if ground_truth:
        from .evaluate import ground_truth as truth
        return [format_concept("true clips, golden prompts", run_set(lambda c, lang: render_concept(c.scene), named)),
                format_concept("true clips, plain prompts", run_set(truth, plain))]
    gen = model_generator(pipe, **(knobs or {}))
    lines = [format_concept("base model, golden prompts", run_set(gen, named)),
             format_concept("base model, plain prompts", run_set(gen, plain))]
    if lora is not None:
        pipe.load_lora(lora, 1.0)
        try:
            lines += [format_concept("with the LoRA, golden prompts", run_set(gen, named)),
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
