"""The DiT's training clips, encoded once: `cache_latents` -> per aspect ratio, a list of `CacheEntry`."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange

from ...latent_format import normalize_latents
from ...vae import WanVAE
from ..evaluate import foreground
from ..mask_code import chunk_slices
from ..world import SHAPES, SIZES, render, sample_scene
from .config import TrainConfig

log = logging.getLogger(__name__)


class CacheEntry(NamedTuple):
    latent: torch.Tensor  # normalised [C, T', h, w]
    scene: object  # the world.Scene the clip shows
    cover: torch.Tensor  # object coverage on the latent grid [T', h, w]
    other: torch.Tensor | None  # the latent of `other_shape(scene)` (shape swap); None for two objects or no swap


@torch.no_grad()
def latent_footprint(mask: torch.Tensor, latent_shape) -> torch.Tensor:
    """A per-pixel map [T, H, W] (0..1) on the latent grid [T', h, w]: the maximum over the frames of each latent
    frame (0: video frame 0; k: the 4 frames 4k-3..4k, the causal VAE's chunks), averaged over each latent pixel's
    16x16 footprint."""
    tl, h, w = latent_shape
    mask = mask.float()
    per_frame = torch.stack([mask[s].amax(dim=0) for s in chunk_slices(tl)])  # [T', H, W]
    return F.adaptive_avg_pool2d(per_frame[:, None], (h, w))[:, 0]


def object_coverage(frames: torch.Tensor, latent_shape) -> torch.Tensor:
    """Fraction of each latent pixel's footprint covered by an object: frames [T, H, W, 3] (0..1) -> [T', h, w]."""
    return latent_footprint(foreground(frames), latent_shape)


def other_shape(scene, i: int):
    """The single-object scene drawn with one of the two other shapes (picked by i), or None for two objects."""
    if len(scene.objects) != 1:
        return None
    o = scene.objects[0]
    shape = random.Random(f"shape-swap:{i}").choice([s for s in SHAPES if s != o.shape])
    return replace(scene, objects=(replace(o, shape=shape),))


@torch.no_grad()
def cache_latents(vae: WanVAE, cfg: TrainConfig, minutes: float | None = None, batch: int = 8, *,
                  swap_shapes: bool = False) -> dict[str, list[CacheEntry]]:
    """Encode cfg.clips training clips once (batched per aspect) -> {aspect: [CacheEntry]}; with swap_shapes each
    single-object entry also carries the latent of `other_shape(scene)`, for the shape swap. `minutes` caps the time
    (the clips encoded by then are kept)."""
    pools: dict[str, list] = {a: [] for a in SIZES}
    waiting: dict[str, list] = {a: [] for a in SIZES}
    t0 = time.perf_counter()

    def encode(scenes: list) -> tuple[torch.Tensor, torch.Tensor]:
        video = torch.stack([render(sc) for sc in scenes])  # [B, T, H, W, 3]
        return video, normalize_latents(vae.encode(rearrange(video, "b t h w c -> b c t h w") * 2 - 1))

    def encode_some(alts: tuple) -> list:
        """Latents of the scenes in `alts` (one batch), None where the scene is None."""
        have = [k for k, a in enumerate(alts) if a is not None]
        z_alt = [None] * len(alts)
        if have:
            for k, za in zip(have, encode([alts[k] for k in have])[1]):
                z_alt[k] = za
        return z_alt

    def flush(aspect: str) -> None:
        scenes, alts = zip(*waiting[aspect])
        video, z = encode(list(scenes))
        cover = [object_coverage(v, z.shape[2:]) for v in video]
        others = encode_some(alts) if swap_shapes else [None] * len(scenes)
        pools[aspect].extend(CacheEntry(*e) for e in zip(z, scenes, cover, others))
        waiting[aspect] = []

    for i in range(cfg.clips):
        scene = sample_scene(cfg.seed * 7_919 + i + 1_000_000)
        aspect = next(a for a, wh in SIZES.items() if wh == (scene.width, scene.height))
        waiting[aspect].append((scene, other_shape(scene, i) if swap_shapes else None))
        if len(waiting[aspect]) == batch:
            flush(aspect)
            done = sum(len(p) for p in pools.values())
            log.info("cached %d latents, %.0f s", done, time.perf_counter() - t0)
            if minutes and time.perf_counter() - t0 > minutes * 60:
                log.warning("latent cache: time cap reached after %d of %d clips", done, cfg.clips)
                break
    for aspect in SIZES:
        if waiting[aspect]:
            flush(aspect)
    return pools


def first_frames(entry: CacheEntry, k: int) -> CacheEntry:
    """A cache entry cut to its first k latent frames (latents and coverage; the scene is kept). The VAE is causal,
    so these are exactly the latents of the clip's first 1 + 4 (k - 1) video frames."""
    if k < 1:
        raise ValueError(f"frame_crop_frames={k}: keep at least 1 latent frame (1 = the clip's first frame alone)")
    cut = lambda x, dim: None if x is None else x.narrow(dim, 0, min(k, x.shape[dim]))  # noqa: E731
    return CacheEntry(cut(entry.latent, 1), entry.scene, cut(entry.cover, 0), cut(entry.other, 1))
