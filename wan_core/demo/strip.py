"""Frame strips (PNG) of demo videos: one row per video, evenly spaced frames, for docs and eyeballing.

    python -m wan_core.demo.strip -o docs/demo_strip.png                        # the demo model on STRIP_PROMPTS
    python -m wan_core.demo.strip -o docs/temporal_strip.png --temporal on --deflicker 1
                                                        # each prompt plain, then with the options and deflicker
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

# (prompt, aspect) rows of the README strips: the README command, then three held-out colour+shape+motion triples;
# both languages, all aspects.
STRIP_PROMPTS: tuple[tuple[str, str], ...] = (
    ("a red circle moving to the right on a blue background", "1:1"),
    ("绿色背景上，一个橙色的正方形向右移动", "16:9"),
    ("a yellow circle staying still on a black background", "1:1"),
    ("灰色背景上，一个蓝色的三角形向上移动", "9:16"),
)


def strip_image(videos: list[torch.Tensor], *, frames: int = 7, gap: int = 2) -> torch.Tensor:
    """[T, H, W, 3] videos (0..1) -> uint8 image [rows * (H + gap), frames * (W + gap), 3], evenly spaced frames."""
    rows = []
    width = max(frames * (v.shape[2] + gap) for v in videos)
    for v in videos:
        idx = torch.linspace(0, v.shape[0] - 1, frames).round().long()
        tiles = [torch.nn.functional.pad(v[i].float(), (0, 0, 0, gap, 0, gap), value=1.0) for i in idx]
        row = torch.cat(tiles, dim=1)  # [H + gap, frames * (W + gap), 3]
        rows.append(torch.nn.functional.pad(row, (0, 0, 0, width - row.shape[1]), value=1.0))
    return (torch.cat(rows, dim=0).clamp(0, 1) * 255).round().to(torch.uint8)


def save_strip(videos: list[torch.Tensor], path, **kwargs) -> Path:
    """Write strip_image(videos) as a PNG (needs Pillow)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip_image(videos, **kwargs).numpy()).save(path)
    return path


def main(argv=None) -> int:
    from . import DEMO_DEFAULTS as d
    from . import load_demo_pipeline
    from .world import SIZES

    ap = argparse.ArgumentParser(prog="python -m wan_core.demo.strip", description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True, type=Path, help="PNG to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temporal", default=None,
                    help="TemporalOptions spec (e.g. 'on'): every prompt gets a plain row, then a row with them")
    ap.add_argument("--deflicker", type=float, default=0.0,
                    help="deflicker strength 0..1 for the second row of each prompt (with --temporal)")
    ap.add_argument("--models", default=None, help="pack root holding models/ (default: this pack)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    temporal = None
    if args.temporal:
        from ..temporal.options import TemporalOptions
        temporal = TemporalOptions.parse(args.temporal)
    pipe = load_demo_pipeline(args.models)
    videos = []
    for prompt, aspect in STRIP_PROMPTS:
        width, height = SIZES[aspect]
        for opts in ((None, temporal) if temporal is not None else (None,)):
            videos.append(pipe(prompt, width=width, height=height, num_frames=d.num_frames, seed=args.seed,
                               num_inference_steps=d.steps, guidance_scale=d.guidance_scale, shift=d.shift,
                               sampler=d.sampler, temporal=opts, deflicker=args.deflicker if opts else 0.0))
    print(save_strip(videos, args.output))  # noqa: T201 - the CLI's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
