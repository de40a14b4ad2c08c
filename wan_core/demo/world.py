"""A deterministic synthetic video world for the embedded demo model: coloured shapes moving on plain backgrounds.

`sample_scene(seed)` draws the attributes (and the exact geometry) of a clip; `render(scene)` draws it as
frames [T, H, W, 3] float32 in 0..1. Both are pure functions of their arguments, so a seed always gives the
same clip. Held-out colour+shape+motion triples (`HELD_OUT`) are never drawn unless explicitly requested.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

# Object colours (RGB 0..1): saturated and far apart, so the evaluator can name them after a lossy VAE.
OBJECT_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.98, 0.92, 0.10),
    "green": (0.10, 0.78, 0.20),
    "blue": (0.15, 0.35, 1.00),
    "purple": (0.62, 0.15, 0.85),
    "white": (0.97, 0.97, 0.97),
}
# Background colours: a two-tone background darkens the lower part of the frame (`TWO_TONE_DARKEN`).
BACKGROUND_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.04, 0.04, 0.04),
    "gray": (0.50, 0.50, 0.50),
    "white": (0.95, 0.95, 0.95),
    "blue": (0.10, 0.18, 0.55),
    "green": (0.12, 0.40, 0.15),
}
TWO_TONE_DARKEN = 0.55  # lower part of a two-tone background = colour * this (black gets lifted instead)
SHAPES = ("circle", "square", "triangle")
# Motion name -> unit direction (dx, dy) in image coordinates (y grows downwards).
MOTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-math.sqrt(0.5), -math.sqrt(0.5)),
    "up-right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "down-left": (-math.sqrt(0.5), math.sqrt(0.5)),
    "down-right": (math.sqrt(0.5), math.sqrt(0.5)),
    "static": (0.0, 0.0),
}
# (width, height) per aspect ratio: multiples of 32 (VAE stride 16 x DiT patch 2), short side 128.
SIZES: dict[str, tuple[int, int]] = {"1:1": (128, 128), "16:9": (224, 128), "9:16": (128, 224)}
FRAMES = 25  # 4k+1 -> 7 latent frames
SINGLE_SPREAD = 0.3  # how far from the middle of its free range a single object may start (fraction of the range)
# Radius and path length (fractions of the short side) of a single object / of each object of a pair. World v4: a
# single object's radius is 0.24-0.27, so a square's corner (the part outside its inscribed circle) is about one
# latent pixel of the 16x VAE; at v3's 0.17-0.2 it was half of one and the DiT drew every shape as a round blob. The
# path is as long as still fits in 128 px with the object inside (0.4-0.43; v3: 0.5-0.58; v2's 0.3-0.4 with smaller
# objects moved under half a latent pixel per latent frame, and the model trained on it kept objects still).
SINGLE_SIZE, SINGLE_TRAVEL = (0.24, 0.27), (0.4, 0.43)
PAIR_SIZE, PAIR_TRAVEL = (0.12, 0.15), (0.35, 0.45)

# Colour+shape+motion triples never drawn for training; the evaluation prompts use them. Together they cover
# every colour, shape and motion, while each pair of their attributes still occurs in training.
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "triangle", "down-right"),
    ("orange", "circle", "up"),
    ("yellow", "square", "left"),
    ("green", "triangle", "right"),
    ("blue", "circle", "down-left"),
    ("purple", "square", "up-right"),
    ("white", "triangle", "static"),
    ("red", "square", "up-left"),
    ("green", "circle", "down"),
    ("blue", "triangle", "up"),
    ("orange", "square", "right"),
    ("yellow", "circle", "static"),
)


@dataclass(frozen=True)
class ObjectSpec:
    """One object: its attributes and its exact path (fractions of the short side / frame)."""

    colour: str
    shape: str
    motion: str
    size: float = 0.16  # radius (half the side) as a fraction of the short side
    x: float = 0.5  # start centre, fraction of the width
    y: float = 0.5  # start centre, fraction of the height
    travel: float = 0.45  # total path length over the clip, fraction of the short side

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.motion)


@dataclass(frozen=True)
class Scene:
    """Everything `render` needs; attributes are the caption's, geometry makes the clip exact."""

    objects: tuple[ObjectSpec, ...]
    background: str = "black"
    two_tone: bool = False
    width: int = 128
    height: int = 128
    frames: int = FRAMES

    def __post_init__(self):
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"a scene has 1 or 2 objects (got {len(self.objects)})")
        if self.background not in BACKGROUND_COLOURS:
            raise ValueError(f"background {self.background!r} is not one of {sorted(BACKGROUND_COLOURS)}")
        for o in self.objects:
            if o.colour not in OBJECT_COLOURS or o.shape not in SHAPES or o.motion not in MOTIONS:
                raise ValueError(f"object {o.triple} has an unknown attribute; colours {sorted(OBJECT_COLOURS)}, "
                                 f"shapes {SHAPES}, motions {sorted(MOTIONS)}")
            if o.colour == self.background:
                raise ValueError(f"object colour {o.colour!r} equals the background colour; choose another")


def _place(rng: random.Random, motion: str, size: float, width: int, height: int, travel: float,
           spread: float = 1.0):
    """Start centre (fractions) such that the whole object stays inside the frame for the whole path.

    spread 1 draws the start anywhere it fits; smaller values keep it near the middle of the free range, so the
    path is roughly centred in the frame (a single object: where it starts follows from its motion, which a tiny
    model learns far more easily than an arbitrary placement)."""
    short = min(width, height)
    dx, dy = MOTIONS[motion]
    r = size * short * 1.05
    path_x, path_y = dx * travel * short, dy * travel * short
    lo_x, hi_x = r + max(0.0, -path_x), width - r - max(0.0, path_x)
    lo_y, hi_y = r + max(0.0, -path_y), height - r - max(0.0, path_y)

    def pick(lo: float, hi: float) -> float:
        mid, half = (lo + hi) / 2, max(0.0, hi - lo) / 2 * spread
        return rng.uniform(mid - half, mid + half)
    return pick(lo_x, hi_x) / width, pick(lo_y, hi_y) / height


def sample_scene(seed: int, *, aspect: str | None = None, n_objects: int | None = None,
                 triple: tuple[str, str, str] | None = None, background: str | None = None,
                 two_tone: bool | None = None, exclude=HELD_OUT, frames: int = FRAMES) -> Scene:
    """Draw a scene from `seed`. Unset arguments are random; `exclude` triples are never drawn at random.

    `triple` forces the first object's (colour, shape, motion), e.g. one of HELD_OUT for evaluation.
    """
    rng = random.Random(f"wan-demo-world:{seed}")
    aspect = aspect or rng.choice(sorted(SIZES))
    if aspect not in SIZES:
        raise ValueError(f"aspect {aspect!r} is not one of {sorted(SIZES)}")
    width, height = SIZES[aspect]
    n_objects = n_objects or (2 if rng.random() < 0.2 else 1)
    excluded = set(exclude)
    bg_choices = sorted(BACKGROUND_COLOURS)
    if triple is not None:
        bg_choices = [b for b in bg_choices if b != triple[0]]
    background = background or rng.choice(bg_choices)
    two_tone = rng.random() < 0.3 if two_tone is None else two_tone
    objects: list[ObjectSpec] = []
    while len(objects) < n_objects:
        if triple is not None and not objects:
            colour, shape, motion = triple
        else:
            colour = rng.choice(sorted(OBJECT_COLOURS))
            shape = rng.choice(SHAPES)
            motion = rng.choice(list(MOTIONS))
            if ((colour, shape, motion) in excluded or colour == background
                    or any(colour == o.colour for o in objects)):
                continue
        if n_objects == 1:  # large, a long path, near the middle: readable after a 16x VAE, easy to place
            size, travel, spread = rng.uniform(*SINGLE_SIZE), rng.uniform(*SINGLE_TRAVEL), SINGLE_SPREAD
        else:
            size, travel, spread = rng.uniform(*PAIR_SIZE), rng.uniform(*PAIR_TRAVEL), 1.0
        x, y = _place(rng, motion, size, width, height, travel, spread)
        objects.append(ObjectSpec(colour, shape, motion, size=size, x=x, y=y, travel=travel))
    return Scene(tuple(objects), background, two_tone, width, height, frames)


def _shape_alpha(shape: str, xs: torch.Tensor, ys: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
                 r: float) -> torch.Tensor:
    """Anti-aliased coverage (1-pixel soft edge) of a shape centred at (cx[T], cy[T]) -> [T, H, W]."""
    px = xs[None, None, :] - cx[:, None, None]  # [T, 1, W]
    py = ys[None, :, None] - cy[:, None, None]  # [T, H, 1]
    if shape == "circle":
        sdf = torch.sqrt(px ** 2 + py ** 2) - r
    elif shape == "square":
        sdf = torch.maximum(px.abs(), py.abs()) - r
    else:  # upward equilateral triangle inscribed in the circle of radius 1.3 r, centroid at the centre
        R = r * 1.3
        side = (math.sqrt(3.0) * px.abs() - py) / 2.0 - R / 2.0  # distance to the two slanted edges
        sdf = torch.maximum(side, py - R / 2.0)
    return (0.5 - sdf).clamp(0.0, 1.0)


def _grid_and_paths(scene: Scene):
    """Pixel centres xs [W], ys [H] and, per object, its centre path (cx [T], cy [T]) in pixels."""
    T, H, W = scene.frames, scene.height, scene.width
    short = min(W, H)
    t = torch.linspace(0.0, 1.0, T)
    paths = []
    for o in scene.objects:
        dx, dy = MOTIONS[o.motion]
        paths.append((o.x * W + t * dx * o.travel * short, o.y * H + t * dy * o.travel * short))
    return torch.arange(W, dtype=torch.float32) + 0.5, torch.arange(H, dtype=torch.float32) + 0.5, paths


def background_image(scene: Scene) -> torch.Tensor:
    """[H, W, 3] background of a scene (two-tone: the lower 45% is darker, or lighter for black)."""
    base = torch.tensor(BACKGROUND_COLOURS[scene.background])
    img = base.expand(scene.height, scene.width, 3).clone()
    if scene.two_tone:
        lower = base * TWO_TONE_DARKEN if scene.background != "black" else base + 0.25
        img[int(round(scene.height * 0.55)):] = lower
    return img


def render(scene: Scene) -> torch.Tensor:
    """Draw a scene: frames [T, H, W, 3] float32 in 0..1 (objects drawn in order, later ones on top)."""
    T, H, W = scene.frames, scene.height, scene.width
    short = min(W, H)
    xs, ys, paths = _grid_and_paths(scene)
    frames = background_image(scene).expand(T, H, W, 3).clone()
    for o, (cx, cy) in zip(scene.objects, paths):
        alpha = _shape_alpha(o.shape, xs, ys, cx, cy, o.size * short)[..., None]  # [T, H, W, 1]
        colour = torch.tensor(OBJECT_COLOURS[o.colour])
        frames = frames * (1 - alpha) + colour * alpha
    return frames.clamp(0.0, 1.0)


def coverage(scene: Scene) -> torch.Tensor:
    """[T, H, W] in 0..1: how much of each pixel the scene's objects cover (their anti-aliased union), the mask
    `render` blends the colours with."""
    short = min(scene.width, scene.height)
    xs, ys, paths = _grid_and_paths(scene)
    free = torch.ones(scene.frames, scene.height, scene.width)
    for o, (cx, cy) in zip(scene.objects, paths):
        free = free * (1 - _shape_alpha(o.shape, xs, ys, cx, cy, o.size * short))
    return 1 - free


def make_clip(seed: int, **kwargs) -> tuple[torch.Tensor, Scene]:
    """`render(sample_scene(seed, **kwargs))` and the scene."""
    scene = sample_scene(seed, **kwargs)
    return render(scene), scene
