"""LoRA training data: a folder of clips (mp4 ...) or images, each with a `.txt` caption beside it, and the cache
that encodes them once (VAE latents, umT5 prompt embeddings).

A caption file holds one caption per non-empty line (several lines: one is drawn at random each time the clip is
used, e.g. an English and a Chinese caption). Cache entries are safetensors files keyed by a hash of what
determines them (the clip's bytes and the VAE file and size; the caption text and the text-encoder file), written
atomically, so a re-run, or another run on the same clips, encodes nothing twice.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import validate_request

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Item:
    """One training clip or image and its captions."""

    path: Path
    captions: tuple[str, ...]

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() in IMAGE_SUFFIXES


def find_items(folder) -> list[Item]:
    """The clips / images of a data folder with their captions, sorted by name. Errors name what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {str(folder)!r} is not a folder; give a folder of clips (.mp4) or images "
                                "(.png/.jpg), each with a .txt caption of the same name beside it")
    media = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES)
    if not media:
        raise ValueError(f"--data {str(folder)!r} holds no clip or image ({', '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)});"
                         " put the training clips there, each with a .txt caption of the same name")
    missing = [p.name for p in media if not p.with_suffix(".txt").is_file()]
    if missing:
        raise ValueError(f"{len(missing)} of {len(media)} files in {str(folder)!r} have no caption: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; write e.g. "
                         f"{Path(missing[0]).with_suffix('.txt').name} (one caption per line) beside each")
    items = []
    for p in media:
        lines = [ln.strip() for ln in p.with_suffix(".txt").read_text(encoding="utf-8").splitlines()]
        captions = tuple(ln for ln in lines if ln)
        if not captions:
            raise ValueError(f"caption file {p.with_suffix('.txt').name} in {str(folder)!r} is empty; write the "
                             "clip's caption in it (one per line)")
        items.append(Item(p, captions))
    return items


def _read_frames(item: Item, frames: int | None) -> np.ndarray:
    """[T, H, W, 3] uint8 of an image (T = 1) or the first `frames` frames of a clip (None: the largest 4k+1)."""
    if item.is_image:
        from ..image import load_image

        return np.asarray(load_image(item.path).convert("RGB"), dtype=np.uint8)[None]
    import av

    want = frames
    out = []
    try:
        with av.open(str(item.path)) as container:
            for f in container.decode(video=0):
                out.append(f.to_ndarray(format="rgb24"))
                if want is not None and len(out) >= want:
                    break
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise ValueError(f"cannot decode {item.path.name} ({e}); re-encode it as H.264 mp4") from None
    if want is None:
        want = (len(out) - 1) // 4 * 4 + 1 if out else 0
    if want < 1 or len(out) < want:
        raise ValueError(f"{item.path.name} has {len(out)} frames, fewer than the {want} to train on; give a "
                         f"smaller --frames (4k+1, e.g. {max(1, (len(out) - 1) // 4 * 4 + 1)}) or a longer clip")
    return np.stack(out[:want])


def _fit(video: torch.Tensor, width: int | None, height: int | None) -> torch.Tensor:
    """[T, 3, H, W] float -> resized to cover width x height (aspect kept) and centre-cropped; None = own size
    cropped down to multiples of 32."""
    from ..image import fit_box

    h, w = video.shape[-2:]
    if width is None or height is None:
        width, height = (width or w // 32 * 32), (height or h // 32 * 32)
        if width < 32 or height < 32:
            raise ValueError(f"frames of {w}x{h} are smaller than 32 px; give --width/--height (multiples of 32)")
    (rw, rh), (left, top) = fit_box(w, h, width, height)
    if (rw, rh) != (w, h):
        video = F.interpolate(video, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    return video[..., top:top + height, left:left + width]


def load_pixels(item: Item, *, width: int | None = None, height: int | None = None,
                frames: int | None = None) -> torch.Tensor:
    """A training item as VAE input: [1, 3, T, H, W] float32 in -1..1 (T = 1 for an image)."""
    data = torch.from_numpy(np.array(_read_frames(item, None if item.is_image else frames))).float() / 255.0  # [T,H,W,3]
    video = _fit(data.permute(0, 3, 1, 2), width, height).clamp(0, 1)  # [T, 3, H, W]
    t, _, h, w = video.shape
    validate_request(w, h, t)
    return (video.permute(1, 0, 2, 3)[None] * 2 - 1).contiguous()  # [1, 3, T, H, W]


def digest(*parts) -> str:
    """Short hex key of the given strings / bytes."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (the integrity cache's, so big model files are hashed once)."""
    from ..integrity import sha256_file

    return sha256_file(path, progress=False)


def save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors write that leaves either the old file or the whole new one (temp file + rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        public(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def public(path) -> None:
    """Give a temp file (mkstemp: owner-only) the permissions a plain open() would have (umask applied)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _load_or_make(path: Path, make: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """(the cached tensor, True) or (make(), False) after writing it to `path`."""
    from safetensors.torch import load_file

    if path.is_file():
        return load_file(str(path))["x"], True
    x = make().detach().to("cpu", torch.float32).contiguous()
    save_atomic({"x": x}, path)
    return x, False


@dataclass
class CacheStats:
    """How many entries a run took from the cache and how many it computed."""

    hits: int = 0
    made: int = 0

    def count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.made += 1


def cached_latents(items: Sequence[Item], vae_fn: Callable[[torch.Tensor], torch.Tensor], vae_id: str, cache: Path,
                   *, width=None, height=None, frames=None, stats: CacheStats | None = None,
                   progress: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """Normalised latents [C, T', h, w] (fp32, CPU) of every item: vae_fn(pixels [1, 3, T, H, W]) -> [1, C, ...]
    computed once per (clip bytes, VAE, size) and kept in `cache`."""
    out = []
    for k, item in enumerate(items):
        key = digest("latent", file_digest(item.path), vae_id, width, height, None if item.is_image else frames)
        z, hit = _load_or_make(cache / f"latent-{key}.safetensors",
                               lambda: vae_fn(load_pixels(item, width=width, height=height, frames=frames))[0])
        out.append(z)
        if stats is not None:
            stats.count(hit)
        if progress is not None:
            progress(k + 1)
    return out


def cached_embeddings(texts: Sequence[str], encode_fn: Callable[[list[str]], list[torch.Tensor]], encoder_id: str,
                      cache: Path, *, stats: CacheStats | None = None) -> dict[str, torch.Tensor]:
    """{text: prompt embedding [L, D] fp32 CPU}: encode_fn(texts) -> list of [L_i, D], once per (text, encoder)."""
    out: dict[str, torch.Tensor] = {}
    todo = []
    for text in dict.fromkeys(texts):
        path = cache / f"text-{digest('text', encoder_id, text)}.safetensors"
        if path.is_file():
            out[text], _ = _load_or_make(path, lambda: torch.empty(0))
            if stats is not None:
                stats.count(True)
        else:
            todo.append((text, path))
    for start in range(0, len(todo), 16):
        chunk = todo[start:start + 16]
        for (text, path), e in zip(chunk, encode_fn([t for t, _ in chunk])):
            out[text], _ = _load_or_make(path, lambda e=e: e)
            if stats is not None:
                stats.count(False)
    return out
