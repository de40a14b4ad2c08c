"""The LoRA demo's new concept: a golden background ("golden" / "金色"), a word and a background the demo model
never saw.

The demo world's backgrounds are black, gray, white, blue or green, and no caption says "golden"; the demo tokenizer
does not even know 金 (it becomes its unknown token). A concept clip is a world scene (one object of another colour,
any shape and motion) on a plain background of the world's yellow (GOLD: a colour the demo VAE reconstructs, which it
does not for colours it never saw, such as pink); its captions are the world's templates with the background phrase
replaced: "a golden background" / "金色背景".

    python -m wan_core.demo.concept --out data/golden     # the demo LoRA's training folder (mp4 + .txt captions)
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

from .captions import LANGS, ZH_COLOURS, caption
from .world import OBJECT_COLOURS, Scene, background_image, coverage, render, sample_scene

log = logging.getLogger(__name__)

GOLD = OBJECT_COLOURS["yellow"]  # RGB 0..1 of the golden background
GOLD_NAME = "yellow"  # the object colour it equals (never drawn on it)
EN_WORD, ZH_WORD = "golden", "金色"
TRAIN_SEED_BASE = 5_000_000  # training clips draw scenes from seeds no other demo set uses
CONCEPT_PER_10 = 7  # clips of every 10 in the training folder on a golden background (the rest: plain world clips)


def render_concept(scene: Scene) -> torch.Tensor:
    """The scene drawn on a golden background: frames [T, H, W, 3] in 0..1 (objects exactly as `render`)."""
    plain = replace(scene, two_tone=False)
    free = (1 - coverage(plain))[..., None]  # [T, H, W, 1]: where the background shows
    return (render(plain) + free * (torch.tensor(GOLD) - background_image(plain))).clamp(0.0, 1.0)


def concept_caption(scene: Scene, lang: str = "en", variant: int = 0) -> str:
    """A caption of the scene on a golden background (the world's templates, the background phrase replaced)."""
    text = caption(replace(scene, two_tone=False), lang, variant)
    old = f"a {scene.background} background" if lang == "en" else f"{ZH_COLOURS[scene.background]}背景"
    new = f"a {EN_WORD} background" if lang == "en" else f"{ZH_WORD}背景"
    if old not in text:
        raise AssertionError(f"caption template changed: {old!r} not in {text!r}")
    return text.replace(old, new, 1)


def names_concept(prompt: str) -> bool:
    """Does a prompt ask for the golden background?"""
    return EN_WORD in prompt.lower() or ZH_WORD in prompt


def training_clip(i: int) -> tuple[torch.Tensor, list[str], bool]:
    """Clip i of the demo LoRA's training folder -> (frames, [EN caption, ZH caption], on the concept). Single
    objects on plain backgrounds (no two-tone), the evaluation's held-out triples excluded; on the golden background
    the object is never yellow (its scene is redrawn from the next seed)."""
    seed = TRAIN_SEED_BASE + i
    scene = replace(sample_scene(seed, n_objects=1), two_tone=False)
    while i % 10 < CONCEPT_PER_10 and scene.objects[0].colour == GOLD_NAME:
        seed += 1_000_000
        scene = replace(sample_scene(seed, n_objects=1), two_tone=False)
    if i % 10 < CONCEPT_PER_10:
        return render_concept(scene), [concept_caption(scene, lang, i) for lang in LANGS], True
    return render(scene), [caption(scene, lang, i) for lang in LANGS], False


def write_training_folder(out: Path, clips: int = 200, *, fps: float = 12) -> int:
    """Write `clips` mp4 files with a two-line .txt caption (EN, ZH) beside each -> the number of concept clips."""
    from ..video import write_mp4

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for i in range(clips):
        frames, captions, on = training_clip(i)
        n += on
        write_mp4(frames, out / f"clip_{i:04d}.mp4", fps=fps, crf=12)
        (out / f"clip_{i:04d}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wan_core.demo.concept", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write the clips and captions into")
    ap.add_argument("--clips", type=int, default=200)
    args = ap.parse_args(argv)
    if args.clips < 1:
        raise SystemExit(f"--clips {args.clips}: need at least 1")
    n = write_training_folder(Path(args.out), args.clips)
    print(f"wrote {args.clips} clips ({n} on a {EN_WORD} background) with captions to {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
