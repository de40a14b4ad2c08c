"""Frame strips (PNG) of demo videos: one row per video, every k-th frame, for docs and eyeballing."""
from __future__ import annotations

from pathlib import Path

import torch


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
