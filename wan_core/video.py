"""Writing videos: H.264 mp4 (yuv420p, BT.709 tagged) with JSON metadata, written atomically (temp file, then rename)."""
from __future__ import annotations

import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

log = logging.getLogger(__name__)

# ITU-T H.273 code points for BT.709 (primaries, transfer, matrix) and "tv" (limited) range.
_BT709 = 1
_RANGE_TV = 1


def to_uint8(frames) -> np.ndarray:
    """[T, H, W, 3] float in 0..1 (tensor or array) or uint8 -> contiguous uint8 array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if frames.dtype != torch.uint8:
            frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3] (got {tuple(frames.shape)}); "
                         "convert [T, 3, H, W] with frames.permute(0, 2, 3, 1)")
    if frames.shape[0] == 0:
        raise ValueError("cannot write a video with 0 frames")
    return np.ascontiguousarray(frames)


def _even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: pad one replicated row/column where needed."""
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frames


def write_mp4(frames, path: str | os.PathLike, *, fps: float = 24, crf: int = 18,
              metadata: Mapping[str, str] | None = None) -> Path:
    """Encode frames [T, H, W, 3] (float 0..1 or uint8) as H.264 mp4; metadata values become mp4 tags.

    The file appears only when complete: it is written to a temporary file beside `path` and renamed.
    """
    import av  # local import: only needed when writing videos

    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be between 0 (lossless) and 51 (got {crf}); 18 is visually lossless, 23 the x264 default")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive (got {fps}); Wan2.2 TI2V-5B makes 24 fps video")
    data = _even(to_uint8(frames))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4.part", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as container:
            for key, value in (metadata or {}).items():
                container.metadata[str(key)] = str(value)
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = data.shape[2], data.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(int(crf)), "preset": "medium"}
            cc = stream.codec_context
            cc.color_primaries = cc.color_trc = cc.colorspace = _BT709
            cc.color_range = _RANGE_TV
            for rgb in data:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote %s (%d frames, %dx%d, %.3g fps)", path, data.shape[0], data.shape[2], data.shape[1], fps)
    return path


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Decode a video to ([T, H, W, 3] uint8, container metadata); used by tests and the evaluator."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        meta = dict(container.metadata)
    return np.stack(frames), meta
