"""English and Simplified Chinese captions for the demo world, and a parser from caption back to attributes.

`caption(scene, lang, variant)` writes one of several templates/paraphrases; `parse_caption(text)` recovers
{objects: [(colour, shape, motion)], background, two_tone} from either language (the evaluator needs it).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .world import BACKGROUND_COLOURS, MOTIONS, OBJECT_COLOURS, SHAPES, Scene

LANGS = ("en", "zh")

EN_COLOURS = {c: c for c in set(OBJECT_COLOURS) | set(BACKGROUND_COLOURS)}
ZH_COLOURS = {"red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色", "purple": "紫色",
              "white": "白色", "black": "黑色", "gray": "灰色"}
EN_SHAPES = {"circle": ["circle", "disc", "ball"], "square": ["square", "box", "block"], "triangle": ["triangle"]}
ZH_SHAPES = {"circle": ["圆形", "圆球", "圆"], "square": ["正方形", "方块"], "triangle": ["三角形"]}
EN_MOTIONS = {
    "left": ["moving to the left", "moving left", "sliding to the left", "drifting leftward"],
    "right": ["moving to the right", "moving right", "sliding to the right", "drifting rightward"],
    "up": ["moving up", "moving upward", "rising", "floating up"],
    "down": ["moving down", "moving downward", "falling", "sinking down"],
    "up-left": ["moving to the upper left", "moving diagonally up-left", "drifting toward the top left"],
    "up-right": ["moving to the upper right", "moving diagonally up-right", "drifting toward the top right"],
    "down-left": ["moving to the lower left", "moving diagonally down-left", "drifting toward the bottom left"],
    "down-right": ["moving to the lower right", "moving diagonally down-right", "drifting toward the bottom right"],
    "static": ["staying still", "standing still", "not moving", "resting in place"],
}
ZH_MOTIONS = {
    "left": ["向左移动", "往左移动", "向左滑动"],
    "right": ["向右移动", "往右移动", "向右滑动"],
    "up": ["向上移动", "往上移动", "向上飘动"],
    "down": ["向下移动", "往下移动", "向下落"],
    "up-left": ["向左上方移动", "往左上方移动"],
    "up-right": ["向右上方移动", "往右上方移动"],
    "down-left": ["向左下方移动", "往左下方移动"],
    "down-right": ["向右下方移动", "往右下方移动"],
    "static": ["静止不动", "保持不动", "一动不动"],
}
# Templates: {objs} is the object clause(s), {bg} the background phrase.
EN_TEMPLATES = ("{objs} on {bg}", "{objs}, {bg}", "on {bg}, {objs}", "a video of {objs} on {bg}")
ZH_TEMPLATES = ("{bg}上，{objs}", "{objs}，{bg}", "画面中，{bg}上{objs}", "在{bg}上，{objs}")


@dataclass(frozen=True)
class Parsed:
    """Attributes read from a caption."""

    objects: tuple[tuple[str, str, str], ...]  # (colour, shape, motion) in caption order
    background: str | None
    two_tone: bool


def _en_object(colour: str, shape: str, motion: str, rng: random.Random) -> str:
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {rng.choice(EN_SHAPES[shape])} {rng.choice(EN_MOTIONS[motion])}"


def _zh_object(colour: str, shape: str, motion: str, rng: random.Random) -> str:
    word = rng.choice(ZH_SHAPES[shape])
    return rng.choice([f"一个{ZH_COLOURS[colour]}的{word}", f"{ZH_COLOURS[colour]}{word}"]) + \
        rng.choice(ZH_MOTIONS[motion])


def caption(scene: Scene, lang: str = "en", variant: int = 0) -> str:
    """One caption of `scene`; `variant` picks the template and paraphrases deterministically."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS} (got {lang!r})")
    rng = random.Random(f"caption:{lang}:{variant}")
    if lang == "en":
        objs = " and ".join(_en_object(*o.triple, rng) for o in scene.objects)
        bg = f"a {'two-tone ' if scene.two_tone else ''}{scene.background} background"
        return rng.choice(EN_TEMPLATES).format(objs=objs, bg=bg)
    objs = "，".join(_zh_object(*o.triple, rng) for o in scene.objects)
    bg = f"{ZH_COLOURS[scene.background]}{'双色' if scene.two_tone else ''}背景"
    return rng.choice(ZH_TEMPLATES).format(objs=objs, bg=bg)


def _alternation(words_by_key: dict[str, list[str]]):
    """Regex matching any word (longest first) and a word -> key lookup."""
    lookup = {w: k for k, words in words_by_key.items() for w in words}
    return re.compile("|".join(re.escape(w) for w in sorted(lookup, key=len, reverse=True))), lookup


_EN_BG = re.compile(r"(?:\ban?\s+)?(two-tone\s+)?(\w+)\s+(two-tone\s+)?background", re.I)
_ZH_BG = re.compile(r"(\w{1,2}色)(双色)?背景上?")
_EN_COLOUR = re.compile(r"\b(" + "|".join(sorted(OBJECT_COLOURS)) + r")\b", re.I)
_ZH_COLOUR_RE, _ZH_COLOUR = _alternation({k: [v] for k, v in ZH_COLOURS.items() if k in OBJECT_COLOURS})
_EN_SHAPE_ALT, _EN_SHAPE = _alternation({k: [w + ("es" if w.endswith("x") else "s") for w in v] + v
                                          for k, v in EN_SHAPES.items()})
_EN_SHAPE_RE = re.compile(rf"\b(?:{_EN_SHAPE_ALT.pattern})\b", re.I)
_ZH_SHAPE_RE, _ZH_SHAPE = _alternation(ZH_SHAPES)
_EN_MOTION_RE = re.compile(
    r"\b(?:(?P<ul>up(?:per)?[\s-]*(?:and\s+to\s+the\s+)?left|top\s+left)|(?P<ur>up(?:per)?[\s-]*(?:and\s+to\s+the\s+)?"
    r"right|top\s+right)|(?P<dl>(?:down|lower)[\s-]*(?:and\s+to\s+the\s+)?left|bottom\s+left)|"
    r"(?P<dr>(?:down|lower)[\s-]*(?:and\s+to\s+the\s+)?right|bottom\s+right)|(?P<l>left(?:ward)?)|"
    r"(?P<r>right(?:ward)?)|(?P<u>up(?:ward)?|rising|rises)|(?P<d>down(?:ward)?|falling|falls|sinking)|"
    r"(?P<s>still|static|not\s+moving|in\s+place|stationary|motionless))\b", re.I)
_ZH_MOTION_RE = re.compile(r"(?:[向往朝](?P<dir>左上|右上|左下|右下|左|右|上|下))|(?P<s>静止|不动)")
_EN_GROUPS = {"ul": "up-left", "ur": "up-right", "dl": "down-left", "dr": "down-right", "l": "left", "r": "right",
              "u": "up", "d": "down", "s": "static"}
_ZH_DIRS = {"左上": "up-left", "右上": "up-right", "左下": "down-left", "右下": "down-right", "左": "left",
            "右": "right", "上": "up", "下": "down"}


def _background(text: str, zh: bool):
    m = (_ZH_BG if zh else _EN_BG).search(text)
    if not m:
        return None, False, text
    if zh:
        name = {v: k for k, v in ZH_COLOURS.items()}.get(m.group(1)[-2:])
        two = bool(m.group(2))
    else:
        name = m.group(2).lower().replace("grey", "gray")
        name = name if name in BACKGROUND_COLOURS else None
        two = bool(m.group(1) or m.group(3))
    return name, two, text[:m.start()] + " " * (m.end() - m.start()) + text[m.end():]


def _motion(m: re.Match, zh: bool) -> str:
    if zh:
        return "static" if m.group("s") else _ZH_DIRS[m.group("dir")]
    return next(_EN_GROUPS[k] for k, v in m.groupdict().items() if v)


def parse_caption(text: str) -> Parsed:
    """Caption (English or Chinese) -> attributes. Each shape takes the nearest colour before it and the first
    motion after it (before the next shape). Unknown parts come back as None (never guessed)."""
    zh = bool(re.search(r"[\u4e00-\u9fff]", text))
    background, two_tone, rest = _background(text, zh)
    colour_re, colour_of = (_ZH_COLOUR_RE, _ZH_COLOUR) if zh else (_EN_COLOUR, None)
    shape_re, shape_of = (_ZH_SHAPE_RE, _ZH_SHAPE) if zh else (_EN_SHAPE_RE, _EN_SHAPE)
    colours = [(m.start(), colour_of[m.group(0)] if zh else m.group(0).lower()) for m in colour_re.finditer(rest)]
    shapes = [(m.start(), shape_of[m.group(0) if zh else m.group(0).lower()]) for m in shape_re.finditer(rest)]
    motions = [(m.start(), _motion(m, zh)) for m in (_ZH_MOTION_RE if zh else _EN_MOTION_RE).finditer(rest)]
    objects = []
    for i, (pos, shape) in enumerate(shapes):
        prev_pos = shapes[i - 1][0] if i else -1
        next_pos = shapes[i + 1][0] if i + 1 < len(shapes) else len(rest)
        colour = next((c for p, c in reversed(colours) if prev_pos < p < pos), None)
        motion = next((mo for p, mo in motions if pos < p < next_pos), None)
        if motion is None:  # "on a blue background, rising: a red circle" style: motion before the shape
            motion = next((mo for p, mo in reversed(motions) if prev_pos < p < pos), None)
        objects.append((colour, shape, motion))
    return Parsed(tuple(objects), background, two_tone)


def scene_attributes(scene: Scene) -> Parsed:
    """The attributes a caption of `scene` states (what parse_caption should return)."""
    return Parsed(tuple(o.triple for o in scene.objects), scene.background, scene.two_tone)


def corpus(n: int, *, seed: int = 0) -> list[str]:
    """n captions (alternating languages, varied templates) of training scenes; for the tokenizer."""
    from .world import sample_scene
    return [caption(sample_scene(seed * 1_000_003 + i), LANGS[i % 2], variant=i) for i in range(n)]

