"""Weight-free, deterministic evaluator for demo-world videos: colour, shape and motion against the prompt.

How it sees a video [T, H, W, 3] in 0..1: every background in the demo world is constant along each row, so
the background of a row is the median colour of the row's four left-most and four right-most pixels over all
frames (objects stay inside the frame and move, and a single object can be wider than half the frame), and the
foreground is whatever differs from it. Foreground
pixels are named by the nearest object colour; the object is tracked by its centroid (motion = the fitted
displacement over the clip, in 8 directions or static) and its shape comes from two bounding-box features
(how much narrower the top is than the bottom, how filled the corners are), voted over frames.

    python -m wan_core.demo.evaluate --ground-truth      # the generator itself: must score 100%
    python -m wan_core.demo.evaluate                     # the shipped demo model on the held-out prompts
    python -m wan_core.demo.evaluate --vae-only          # encode + decode of the true clips (the VAE's share)
    python -m wan_core.demo.evaluate --from-truth 0.4    # the true clip's latent re-noised (ComfyUI denoise 0.4)
                                                         # and denoised with the prompt: does the DiT keep it?
    python -m wan_core.demo.evaluate --i2v               # image-to-video from each clip's first frame
                                                         # (wan_core.demo.evaluate_i2v: + first-frame PSNR)
    python -m wan_core.demo.evaluate --concept LORA      # the LoRA demo's golden background with / without
                                                         # (wan_core.demo.evaluate_concept)
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

from .captions import LANGS, caption, parse_caption
from .world import HELD_OUT, MOTIONS, OBJECT_COLOURS, SIZES, Scene, render, sample_scene

log = logging.getLogger(__name__)

FG_THRESHOLD = 0.25  # RGB distance from the row background that makes a pixel foreground
BORDER = 4  # pixels at each end of a row that sample its background
MIN_AREA = 0.004  # fraction of the frame an object must cover to count in a frame
STATIC_TRAVEL = 0.12  # displacement (fraction of the short side) below which the object is "static"
_PALETTE_NAMES = sorted(OBJECT_COLOURS)
_DIRECTIONS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")  # by 45 deg


@dataclass(frozen=True)
class Detection:
    """What the evaluator saw for one object."""

    colour: str | None
    shape: str | None
    motion: str | None
    displacement: tuple[float, float] = (0.0, 0.0)  # (dx, dy) over the clip, fraction of the short side
    area: float = 0.0  # mean fraction of the frame covered

    @property
    def triple(self):
        return (self.colour, self.shape, self.motion)


def row_backgrounds(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> [H, 3]: each row's background, the median colour of its border pixels (BORDER each side) over
    all frames."""
    frames = frames.float()
    border = torch.cat([frames[:, :, :BORDER], frames[:, :, -BORDER:]], dim=2)  # [T, H, 2 * BORDER, 3]
    return border.transpose(0, 1).flatten(1, 2).median(dim=1).values


def foreground(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> bool [T, H, W]: pixels far (RGB distance) from their row's background (row_backgrounds).
    For whole frames of a clip."""
    return (frames.float() - row_backgrounds(frames)[None, :, None]).norm(dim=-1) > FG_THRESHOLD


def row_foreground(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> bool [T, H, W]: pixels far from their row's median colour in the same frame. For crops whose
    objects are narrower than half the crop and may touch its border (the VAE's training loss weights)."""
    frames = frames.float()
    row_bg = frames.median(dim=2, keepdim=True).values  # [T, H, 1, 3]
    return (frames - row_bg).norm(dim=-1) > FG_THRESHOLD


def colour_labels(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> long [T, H, W]: index into sorted(OBJECT_COLOURS) of the nearest object colour."""
    palette = torch.tensor([OBJECT_COLOURS[n] for n in _PALETTE_NAMES])  # [K, 3]
    dist = (frames.float()[..., None, :] - palette).norm(dim=-1)  # [T, H, W, K]
    return dist.argmin(dim=-1)


TRIANGLE_TAPER = 0.7  # top-third width / bottom-third width below this: an upward triangle (exact: 0.2, circle: 1)
SQUARE_CORNERS = 0.4  # mean fill of the four corner boxes above this: a square (exact: 1.0, circle: about 0.15)


def shape_features(mask: torch.Tensor) -> tuple[float, float] | None:
    """(taper, corner fill) of a bool [H, W] object mask in its bounding box, or None if too small.

    taper: mean width of the top third over that of the bottom third; corner fill: mean coverage of the four
    corner boxes (a fifth of the short side each). Both survive the rounding a lossy decoder gives corners, where
    template IoU calls every rounded shape a circle."""
    rows = torch.nonzero(mask.sum(dim=1) >= 2).flatten()
    cols = torch.nonzero(mask.sum(dim=0) >= 2).flatten()
    if len(rows) < 4 or len(cols) < 4:
        return None
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].float()
    h, w = box.shape
    widths = box.sum(dim=1)
    k = max(1, h // 3)
    taper = (widths[:k].mean() / widths[-k:].mean().clamp_min(1.0)).item()
    c = max(1, round(min(h, w) * 0.2))
    corners = torch.stack([box[:c, :c].mean(), box[:c, -c:].mean(), box[-c:, :c].mean(), box[-c:, -c:].mean()])
    return taper, corners.mean().item()


def classify_shape(mask: torch.Tensor) -> str | None:
    """Bool [H, W] mask of one object -> "triangle" (narrow top, the world's triangles point up), "square" (filled
    corners) or "circle"; None if too small."""
    feats = shape_features(mask)
    if feats is None:
        return None
    taper, corners = feats
    if taper < TRIANGLE_TAPER:
        return "triangle"
    return "square" if corners > SQUARE_CORNERS else "circle"


def _motion_of(centres: list[tuple[int, float, float]], frames: int, short: int):
    """Least-squares line through the centroids -> (motion name, (dx, dy) as fractions of the short side)."""
    if len(centres) < 2:
        return None, (0.0, 0.0)
    t = torch.tensor([c[0] for c in centres], dtype=torch.float64)
    xy = torch.tensor([[c[1], c[2]] for c in centres], dtype=torch.float64)  # [N, 2]
    tc = t - t.mean()
    slope = (tc[:, None] * (xy - xy.mean(0))).sum(0) / tc.pow(2).sum().clamp_min(1e-9)  # [2] px per frame
    dx, dy = (slope * (frames - 1) / short).tolist()
    if math.hypot(dx, dy) < STATIC_TRAVEL:
        return "static", (dx, dy)
    angle = math.degrees(math.atan2(-dy, dx)) % 360.0
    return _DIRECTIONS[int(round(angle / 45.0)) % 8], (dx, dy)


def _track(masks: torch.Tensor, labels: torch.Tensor | None, shape_every: int = 3) -> Detection:
    """Colour vote, shape vote (every `shape_every`-th frame) and motion fit of one object from masks [T, H, W]
    (labels: the nearest-colour index of every True pixel of masks, in masks' order)."""
    T, H, W = masks.shape
    area = masks.flatten(1).sum(dim=1)  # [T]
    ys = torch.arange(H, dtype=torch.float32)
    xs = torch.arange(W, dtype=torch.float32)
    cy = (masks.sum(dim=2).float() * ys).sum(dim=1) / area.clamp_min(1)  # [T]
    cx = (masks.sum(dim=1).float() * xs).sum(dim=1) / area.clamp_min(1)  # [T]
    keep = area >= MIN_AREA * H * W
    centres = [(i, cx[i].item(), cy[i].item()) for i in range(T) if keep[i]]
    shapes = Counter(s for i in range(0, T, shape_every) if keep[i] and (s := classify_shape(masks[i])))
    colour = None
    if labels is not None and labels.numel():
        colour = _PALETTE_NAMES[torch.bincount(labels, minlength=len(_PALETTE_NAMES)).argmax().item()]
    motion, disp = _motion_of(centres, T, min(H, W))
    shape = shapes.most_common(1)[0][0] if shapes else None
    return Detection(colour, shape, motion, disp, masks.float().mean().item())


def detect(frames: torch.Tensor, n_objects: int = 1) -> list[Detection]:
    """Detect up to n_objects objects in frames [T, H, W, 3] (0..1), largest first."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] in 0..1 (got shape {tuple(frames.shape)})")
    frames = frames.float()
    fg = foreground(frames)
    labels = colour_labels(frames[fg][None, None])[0, 0]  # [N] nearest colour of each foreground pixel
    if n_objects == 1:
        return [_track(fg, labels)]
    full = torch.full(fg.shape, -1, dtype=torch.long)
    full[fg] = labels
    counts = torch.bincount(labels, minlength=len(_PALETTE_NAMES))
    order = [k for k in counts.argsort(descending=True).tolist() if counts[k] >= MIN_AREA * fg[0].numel()]
    return [_track(full == k, labels[labels == k]) for k in order[:n_objects]]


def temporal_metrics(frames: torch.Tensor) -> dict[str, float]:
    """mean_change: mean |frame[t+1] - frame[t]|; flicker: the same over pixels that are background in both."""
    frames = frames.float()
    diff = (frames[1:] - frames[:-1]).abs().mean(dim=-1)  # [T-1, H, W]
    fg = foreground(frames)
    bg_both = ~(fg[1:] | fg[:-1])
    flicker = (diff * bg_both).sum() / bg_both.sum().clamp_min(1)
    return {"mean_change": diff.mean().item(), "flicker": flicker.item()}


def score(frames: torch.Tensor, prompt: str) -> dict:
    """Compare the first object the prompt names with what the video shows."""
    want = parse_caption(prompt).objects
    if not want:
        raise ValueError(f"prompt {prompt!r} names no shape the demo world knows; see wan_core.demo.captions")
    found = detect(frames, n_objects=len(want))
    colour, shape, motion = want[0]
    match = next((d for d in found if d.colour == colour), found[0])
    return {"colour": match.colour == colour, "shape": match.shape == shape, "motion": match.motion == motion,
            "detected": match.triple, "expected": want[0], **temporal_metrics(frames)}


@dataclass(frozen=True)
class Case:
    """One held-out evaluation scene with its prompt in each language."""

    scene: Scene
    seed: int
    prompts: dict = field(hash=False)


def held_out_cases(seeds: int = 2, *, aspects=None) -> list[Case]:
    """The evaluation set: every HELD_OUT triple x `seeds` seeds, aspect ratios cycled, single objects."""
    aspects = aspects or sorted(SIZES)
    cases = []
    for i, triple in enumerate(HELD_OUT):
        for s in range(seeds):
            scene = sample_scene(90_000 + 97 * i + s, triple=triple, n_objects=1,
                                 aspect=aspects[(i + s) % len(aspects)], exclude=())
            cases.append(Case(scene, s, {lang: caption(scene, lang, variant=i + s) for lang in LANGS}))
    return cases


def evaluate(generate: Callable[[Case, str], torch.Tensor], cases: list[Case]) -> dict:
    """Score generate(case, lang) -> frames for every case and language; returns per-language rows + agreement."""
    rows = {lang: [] for lang in LANGS}
    agree = []
    for case in cases:
        results = {lang: score(generate(case, lang), case.prompts[lang]) for lang in LANGS}
        for lang in LANGS:
            rows[lang].append(results[lang])
        agree.append(results["en"]["detected"] == results["zh"]["detected"])
    return {"rows": rows, "agreement": sum(agree) / max(1, len(agree))}


def format_table(report: dict) -> str:
    """The evaluator's table: one line per language, then the EN/ZH agreement."""
    head = f"{'lang':<5}{'n':>4}{'colour':>9}{'shape':>9}{'motion':>9}{'all3':>9}{'change':>9}{'flicker':>9}"
    lines = [head]
    for lang, rows in report["rows"].items():
        n = max(1, len(rows))

        def pct(key):
            return 100.0 * sum(r[key] for r in rows) / n
        all3 = 100.0 * sum(r["colour"] and r["shape"] and r["motion"] for r in rows) / n
        lines.append(f"{lang:<5}{len(rows):>4}{pct('colour'):>8.1f}%{pct('shape'):>8.1f}%{pct('motion'):>8.1f}%"
                     f"{all3:>8.1f}%{sum(r['mean_change'] for r in rows) / n:>9.4f}"
                     f"{sum(r['flicker'] for r in rows) / n:>9.4f}")
    lines.append(f"EN/ZH agreement (same detected colour, shape, motion): {100.0 * report['agreement']:.1f}%")
    return "\n".join(lines)


def ground_truth(case: Case, lang: str) -> torch.Tensor:
    """The generator's own rendering of the case (what a perfect model would produce)."""
    return render(case.scene)


def model_generator(pipe, *, steps=None, cfg=None, shift=None, sampler=None):
    """A `generate(case, lang)` backed by a WanT2VPipeline (seeded by the case); unset knobs use DEMO_DEFAULTS."""
    from . import DEMO_DEFAULTS as d

    def generate(case: Case, lang: str) -> torch.Tensor:
        return pipe(case.prompts[lang], width=case.scene.width, height=case.scene.height,
                    num_frames=case.scene.frames, seed=case.seed, num_inference_steps=steps or d.steps,
                    guidance_scale=d.guidance_scale if cfg is None else cfg, shift=shift or d.shift,
                    sampler=sampler or d.sampler)
    return generate


def encode_scene(vae, scene: Scene) -> torch.Tensor:
    """The raw (unnormalised) latent [1, z, T', h, w] of a rendered scene."""
    video = render(scene).permute(3, 0, 1, 2)[None] * 2 - 1  # [1, 3, T, H, W] in -1..1
    with torch.no_grad():
        return vae.encode(video.to(next(vae.parameters()).dtype))


def _decode(pipe, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        video = pipe.vae.decode(z)
    return ((video[0].float() + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0)  # [T, H, W, 3]


def vae_generator(pipe):
    """A `generate(case, lang)` that encodes and decodes the case's true clip: what the VAE alone keeps."""
    return lambda case, lang: _decode(pipe, encode_scene(pipe.vae, case.scene))


def partial_denoise_generator(pipe, denoise: float, *, steps=None, cfg=None, shift=None, sampler=None):
    """A `generate(case, lang)` that re-noises the true clip's latent to `denoise` (ComfyUI's convention: the last
    `denoise` share of the schedule) and samples the rest with the prompt. Where the whole model fails an attribute
    but this keeps it, the DiT cannot draw it from noise; where this loses it too, the DiT cannot even keep it."""
    from ..pipeline import sample_latents
    from . import DEMO_DEFAULTS as d

    if not 0 < denoise <= 1:
        raise ValueError(f"--from-truth must be in (0, 1] (got {denoise}); e.g. 0.4 re-noises to the last 40% of the "
                         "schedule")

    def generate(case: Case, lang: str) -> torch.Tensor:
        context, neg = pipe.encode_prompt(case.prompts[lang])
        guidance = d.guidance_scale if cfg is None else cfg
        z = sample_latents(pipe.dit, context, neg if guidance != 1.0 else None, encode_scene(pipe.vae, case.scene),
                           seed=case.seed, steps=steps or d.steps, cfg=guidance, shift=shift or d.shift,
                           sampler=sampler or d.sampler, denoise=denoise)
        return _decode(pipe, z)
    return generate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wan_core.demo.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--ground-truth", action="store_true", help="score the generator itself (sanity check)")
    ap.add_argument("--vae-only", action="store_true", help="score encode + decode of the true clips")
    ap.add_argument("--from-truth", type=float, default=None, metavar="DENOISE",
                    help="re-noise the true clip's latent to DENOISE (0-1, ComfyUI convention) and denoise it")
    ap.add_argument("--i2v", action="store_true",
                    help="image-to-video: start from the first frame of each held-out clip; adds first-frame PSNR, "
                         "colour+shape kept and direction (with --ground-truth: the true clips)")
    ap.add_argument("--concept", default=None, metavar="LORA",
                    help="score the LoRA demo's concept (golden background, wan_core.demo.evaluate_concept) with "
                         "and without this LoRA file, and the plain prompts with it")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per held-out triple")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="score seeds FIRST..FIRST+SEEDS-1 of each triple (e.g. 4: scenes no setting was picked on)")
    ap.add_argument("--models", default=None, help="pack root holding models/ (default: this pack)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--shift", type=float, default=None)
    ap.add_argument("--sampler", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.first_seed < 0 or args.seeds < 1:
        raise SystemExit(f"--first-seed {args.first_seed} --seeds {args.seeds}: need first seed >= 0 and seeds >= 1")
    cases = [c for c in held_out_cases(args.first_seed + args.seeds) if c.seed >= args.first_seed]
    if args.i2v and (args.vae_only or args.from_truth is not None):
        raise SystemExit("--i2v samples from the start image; it does not combine with --vae-only or --from-truth "
                         "(its output already prints the VAE's first-frame PSNR)")
    if args.concept:
        from .evaluate_concept import main_concept
        return main_concept(args)
    if args.i2v:
        return _main_i2v(args, cases)
    if args.ground_truth:
        gen = ground_truth
    else:
        from . import load_demo_pipeline
        pipe = load_demo_pipeline(args.models)
        knobs = {"steps": args.steps, "cfg": args.cfg, "shift": args.shift, "sampler": args.sampler}
        if args.vae_only:
            gen = vae_generator(pipe)
        elif args.from_truth is not None:
            gen = partial_denoise_generator(pipe, args.from_truth, **knobs)
        else:
            gen = model_generator(pipe, **knobs)
    t0 = time.perf_counter()
    report = evaluate(gen, cases)
    elapsed = time.perf_counter() - t0
    print(format_table(report))  # noqa: T201 - this is the CLI's output
    print(f"{len(cases) * len(LANGS)} videos in {elapsed:.1f} s")  # noqa: T201
    return 0


def _main_i2v(args, cases) -> int:
    from .evaluate_i2v import evaluate_i2v, format_i2v, ground_truth_i2v, i2v_generator

    vae = None
    if args.ground_truth:
        gen = ground_truth_i2v
    else:
        from . import load_demo_pipeline
        pipe = load_demo_pipeline(args.models)
        gen, vae = i2v_generator(pipe, steps=args.steps, cfg=args.cfg, shift=args.shift, sampler=args.sampler), pipe.vae
    t0 = time.perf_counter()
    report = evaluate_i2v(gen, cases, vae=vae)
    print(format_i2v(report))  # noqa: T201 - this is the CLI's output
    print(f"{len(cases) * len(LANGS)} videos in {time.perf_counter() - t0:.1f} s")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
