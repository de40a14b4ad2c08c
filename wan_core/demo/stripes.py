"""The LoRA demo's new concept: a striped background ("striped" / "条纹"), which the demo model never saw.

A striped background is the scene's background colour in horizontal bands of `STRIPE_PX` pixels, alternating with
the darker shade a two-tone background uses for its lower part (`world.TWO_TONE_DARKEN`; black gets lifted). The
bands are horizontal, so every row is still one colour and the evaluator's row-background model keeps working.
Captions name it before the colour: "a striped blue background" / "条纹蓝色背景" (the demo tokenizer knows 条 but
not 纹, which becomes its unknown token).

    python -m wan_core.demo.stripes --out data/stripes     # the demo LoRA's training folder (mp4 + .txt captions)
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

from .captions import LANGS, ZH_COLOURS, caption
from .world import TWO_TONE_DARKEN, Scene, background_image, coverage, render, sample_scene

log = logging.getLogger(__name__)

STRIPE_PX = 32  # band height in pixels: two latent rows of the 16x VAE (16 px bands: the demo VAE blurs half of them away)
EN_WORD, ZH_WORD = "striped", "条纹"
TRAIN_SEED_BASE = 5_000_000  # training clips draw scenes from seeds no other demo set uses
STRIPED_PER_10 = 7  # clips of every 10 in the training folder with a striped background (the rest: plain world clips)


def striped_background(scene: Scene) -> torch.Tensor:
    """[H, W, 3] striped background of a scene: bands of STRIPE_PX rows, base colour first, then the darker shade."""
    base = background_image(replace(scene, two_tone=False))[0, 0]
    shade = base * TWO_TONE_DARKEN if scene.background != "black" else base + 0.25
    rows = (torch.arange(scene.height) // STRIPE_PX) % 2 == 1  # [H] True on the shaded bands
    img = torch.where(rows[:, None, None], shade, base).expand(scene.height, scene.width, 3)
    return img.clone()


def render_striped(scene: Scene) -> torch.Tensor:
    """The scene drawn on its striped background: frames [T, H, W, 3] in 0..1 (objects exactly as `render`)."""
    plain = replace(scene, two_tone=False)
    frames = render(plain)
    free = (1 - coverage(plain))[..., None]  # [T, H, W, 1]: where the background shows
    return (frames + free * (striped_background(plain) - background_image(plain))).clamp(0.0, 1.0)


def striped_caption(scene: Scene, lang: str = "en", variant: int = 0) -> str:
    """A caption of the scene on a striped background (the world's templates, the background phrase extended)."""
    plain = replace(scene, two_tone=False)
    text = caption(plain, lang, variant)
    if lang == "en":
        old, new = f"a {scene.background} background", f"a {EN_WORD} {scene.background} background"
    else:
        old = f"{ZH_COLOURS[scene.background]}背景"
        new = ZH_WORD + old
    if old not in text:
        raise AssertionError(f"caption template changed: {old!r} not in {text!r}")
    return text.replace(old, new, 1)


def names_stripes(prompt: str) -> bool:
    """Does a prompt ask for the striped background?"""
    return EN_WORD in prompt.lower() or ZH_WORD in prompt


def training_clip(i: int) -> tuple[torch.Tensor, list[str], bool]:
    """Clip i of the demo LoRA's training folder -> (frames, [EN caption, ZH caption], striped). Single objects on
    plain backgrounds (two-tone ones are left out: the concept replaces them), held-out triples excluded."""
    scene = replace(sample_scene(TRAIN_SEED_BASE + i, n_objects=1), two_tone=False)
    striped = i % 10 < STRIPED_PER_10
    if striped:
        return render_striped(scene), [striped_caption(scene, lang, i) for lang in LANGS], True
    return render(scene), [caption(scene, lang, i) for lang in LANGS], False


def write_training_folder(out: Path, clips: int = 200, *, fps: float = 12) -> int:
    """Write `clips` mp4 files with a two-line .txt caption (EN, ZH) beside each -> the number of striped clips."""
    from ..video import write_mp4

    out.mkdir(parents=True, exist_ok=True)
    n_striped = 0
    for i in range(clips):
        frames, captions, striped = training_clip(i)
        n_striped += striped
        write_mp4(frames, out / f"clip_{i:04d}.mp4", fps=fps, crf=12)
        (out / f"clip_{i:04d}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return n_striped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wan_core.demo.stripes", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write the clips and captions into")
    ap.add_argument("--clips", type=int, default=200)
    args = ap.parse_args(argv)
    if args.clips < 1:
        raise SystemExit(f"--clips {args.clips}: need at least 1")
    n = write_training_folder(Path(args.out), args.clips)
    print(f"wrote {args.clips} clips ({n} striped) with captions to {args.out}")  # noqa: T201 - CLI output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
