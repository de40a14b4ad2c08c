"""How much does the DiT's prediction follow one prompt word? A weight-free probe of a trained demo model.

For each held-out scene and each attribute (colour, shape, motion), the scene is rendered again with that attribute
changed (same geometry otherwise) and both clips are encoded: d = z(changed) - z(true) is what the word should
change in the latent. The true latent is noised to sigma s (seeded), and the DiT predicts x0 twice from the same
noisy latent, once with the true caption and once with the changed one. The word-response ratio is the projection
of the change in prediction onto d:

    ratio(s) = <x0_hat(changed word) - x0_hat(true word), d> / |d|^2

1 means the DiT moves its prediction all the way to the other clip when only the word changes; 0 means the word is
ignored. Also printed: where the true-caption prediction lies between the changed clip (0) and the true one (1),

    position(s) = <x0_hat(true word) - z(changed), z(true) - z(changed)> / |d|^2
                = 1 - <x0_hat(true word) - z, d> / |d|^2

(the model before the mask code, shapes: 0.66 at sigma 0.9, near the half-way blob a DiT unsure of the shape
predicts), with |d|^2 (how big the attribute is in the latent) and the DiT's x0 error |x0_hat - z|^2:

    python -m wan_core.demo.word_response --seeds 2
"""
from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass, replace

import torch

from ..latent_format import normalize_latents
from .captions import caption
from .evaluate import Case, encode_scene, held_out_cases
from .world import MOTIONS, OBJECT_COLOURS, SHAPES

SIGMAS = (0.3, 0.5, 0.7, 0.9)
ATTRIBUTES = ("colour", "shape", "motion")


@dataclass(frozen=True)
class WordResponse:
    """Per attribute: median |d|^2, mean ratio and mean position per sigma; median x0 error per sigma (true
    caption)."""

    size: dict[str, float]
    ratio: dict[str, dict[float, float]]
    x0_error: dict[float, float]
    position: dict[str, dict[float, float]]


def _changed(case: Case, attribute: str, rng: random.Random):
    """The case's scene with `attribute` of its object set to another value (never the background's colour)."""
    scene = case.scene
    obj = scene.objects[0]
    options = {"colour": [c for c in sorted(OBJECT_COLOURS) if c not in (obj.colour, scene.background)],
               "shape": [s for s in SHAPES if s != obj.shape],
               "motion": [m for m in MOTIONS if m != obj.motion]}[attribute]
    return replace(scene, objects=(replace(obj, **{attribute: rng.choice(options)}),))


@torch.no_grad()
def word_response(dit, vae, encode_prompt, cases: list[Case], sigmas=SIGMAS, *, seed: int = 0) -> WordResponse:
    """`encode_prompt(text)` -> context [1, L, text_dim]; `vae.encode` takes [1, 3, T, H, W] in -1..1; the DiT
    predicts velocity (x0 = x_s - s * v). Deterministic for a given seed."""
    rng = random.Random(seed)
    dtype = next(dit.parameters()).dtype

    def latent(scene) -> torch.Tensor:
        return normalize_latents(encode_scene(vae, scene)).float()

    def x0_hat(xs: torch.Tensor, s: float, context: torch.Tensor) -> torch.Tensor:
        t = torch.full((1,), s * 1000.0)
        return xs - s * dit(xs.to(dtype), t, context).float()

    sizes = {a: [] for a in ATTRIBUTES}
    ratios = {a: {s: [] for s in sigmas} for a in ATTRIBUTES}
    positions = {a: {s: [] for s in sigmas} for a in ATTRIBUTES}
    errors = {s: [] for s in sigmas}
    for i, case in enumerate(cases):
        z = latent(case.scene)
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed * 100_003 + i))
        context = encode_prompt(caption(case.scene, "en", variant=i))
        for attribute in ATTRIBUTES:
            other = _changed(case, attribute, rng)
            d = latent(other) - z
            norm = d.pow(2).sum().item()
            sizes[attribute].append(norm)
            other_context = encode_prompt(caption(other, "en", variant=i))
            for s in sigmas:
                xs = (1 - s) * z + s * noise
                base = x0_hat(xs, s, context)
                moved = x0_hat(xs, s, other_context) - base
                ratios[attribute][s].append((moved * d).sum().item() / max(norm, 1e-12))
                positions[attribute][s].append(1 - ((base - z) * d).sum().item() / max(norm, 1e-12))
                if attribute == ATTRIBUTES[0]:
                    errors[s].append((base - z).pow(2).sum().item())
    return WordResponse(size={a: statistics.median(v) for a, v in sizes.items()},
                        ratio={a: {s: statistics.fmean(v) for s, v in r.items()} for a, r in ratios.items()},
                        x0_error={s: statistics.median(v) for s, v in errors.items()},
                        position={a: {s: statistics.fmean(v) for s, v in r.items()} for a, r in positions.items()})


def format_response(r: WordResponse) -> str:
    sigmas = list(r.x0_error)
    lines = [f"{'attribute':<10}{'|d|^2':>9}   word-response ratio at sigma " + "  ".join(f"{s:>6}" for s in sigmas)]
    for a in r.size:
        lines.append(f"{a:<10}{r.size[a]:>9.1f}   {'':>29}" + "  ".join(f"{r.ratio[a][s]:>+6.3f}" for s in sigmas))
    for a in r.size:
        lines.append(f"{a:<10}{'':>9}   {'position (0 changed, 1 true)':<29}"
                     + "  ".join(f"{r.position[a][s]:>6.3f}" for s in sigmas))
    lines.append(f"{'x0 error':<10}{'':>9}   {'|x0_hat - z|^2, true caption':<29}"
                 + "  ".join(f"{r.x0_error[s]:>6.0f}" for s in sigmas))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wan_core.demo.word_response", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2, help="seeds per held-out triple (24 scenes at 2)")
    ap.add_argument("--models", default=None, help="pack root holding models/ (default: this pack)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    from . import load_demo_pipeline

    pipe = load_demo_pipeline(args.models)
    result = word_response(pipe.dit, pipe.vae, lambda text: pipe.encode_prompt(text)[0], held_out_cases(args.seeds))
    print(format_response(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
