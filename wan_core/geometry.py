"""Video/latent geometry of the Wan2.2 TI2V-5B family, named once, plus request validation."""
from __future__ import annotations

from dataclasses import dataclass

TEXT_LEN = 512  # umT5 context length the DiT sees (zero-padded)
T_STRIDE = 4  # causal VAE: 1 + 4k frames -> 1 + k latent frames


@dataclass(frozen=True)
class VaeGeometry:
    """Compression of one VAE family."""

    channels: int  # latent channels
    stride: tuple[int, int, int]  # (t, h, w) pixel frames / pixels per latent cell


WAN22_VAE = VaeGeometry(channels=48, stride=(4, 16, 16))  # TI2V-5B
WAN21_VAE = VaeGeometry(channels=16, stride=(4, 8, 8))  # Wan2.1, Wan2.2 A14B

MAX_SIDE = 4096  # pixels; far beyond what any Wan model was trained for, still below the RoPE limit
MAX_FRAMES = 1021  # 4k+1, keeps latent frames (256) well inside the 1024-entry RoPE table


def latent_frames(frames: int, t_stride: int = T_STRIDE) -> int:
    """Latent frames of a 4k+1-frame video: (frames - 1) // 4 + 1."""
    return (frames - 1) // t_stride + 1


def pixel_frames(latent_t: int, t_stride: int = T_STRIDE) -> int:
    """Pixel frames decoded from latent_t latent frames: 4 (t - 1) + 1."""
    return (latent_t - 1) * t_stride + 1


def latent_shape(frames: int, height: int, width: int, vae: VaeGeometry = WAN22_VAE, batch: int = 1):
    """[B, C, T', H', W'] of the latent of a video."""
    _, sh, sw = vae.stride
    return (batch, vae.channels, latent_frames(frames, vae.stride[0]), height // sh, width // sw)


def seq_len(frames: int, height: int, width: int, vae: VaeGeometry = WAN22_VAE,
            patch: tuple[int, int, int] = (1, 2, 2)) -> int:
    """Number of DiT tokens for a video: T'/pt * H'/ph * W'/pw."""
    _, _, t, h, w = latent_shape(frames, height, width, vae)
    return (t // patch[0]) * (h // patch[1]) * (w // patch[2])


def size_multiple(vae: VaeGeometry = WAN22_VAE, patch: tuple[int, int, int] = (1, 2, 2)) -> int:
    """Pixel multiple width/height must have: VAE stride x DiT patch (32 for TI2V-5B)."""
    return vae.stride[1] * patch[1]


def nearest_frames(frames: int) -> int:
    """Nearest valid 4k+1 frame count (ties go up), at least 1."""
    k = max(0, round((frames - 1) / T_STRIDE + 1e-9))
    return k * T_STRIDE + 1


def nearest_multiple(value: int, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def validate_request(width: int, height: int, frames: int, vae: VaeGeometry = WAN22_VAE,
                     patch: tuple[int, int, int] = (1, 2, 2)) -> None:
    """Raise ValueError naming the value, the rule and the nearest valid value for a bad size or length."""
    m = size_multiple(vae, patch)
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{name} must be an integer number of pixels (got {v!r})")
        if v < m or v > MAX_SIDE:
            raise ValueError(f"{name} must be between {m} and {MAX_SIDE} pixels (got {v}); "
                             f"try {min(max(v, m), MAX_SIDE) // m * m}")
        if v % m:
            raise ValueError(f"{name} must be a multiple of {m} for this model (VAE stride {vae.stride[1]} x "
                             f"patch {patch[1]}) (got {v}); try {nearest_multiple(v, m)}, or pad with the "
                             "node pack's latent init which crops back to the exact size")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"frames must be a positive integer of the form 4k+1 (got {frames!r}); try 81 or 121")
    if frames > MAX_FRAMES:
        raise ValueError(f"frames must be at most {MAX_FRAMES} (got {frames}); try {MAX_FRAMES}")
    if (frames - 1) % T_STRIDE:
        raise ValueError(f"frames must be 4k+1 (got {frames}); try {nearest_frames(frames)}")
