"""Model and sampling configuration: frozen dataclasses, presets as data, inference from checkpoints.

The checkpoint is the source of truth: `infer_config(state_dict)` reads the architecture from tensor shapes
and `check_preset` fails loudly when a named preset disagrees with it.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping

import torch

from .geometry import TEXT_LEN

# Every released Wan DiT uses 128-channel attention heads. Tensor shapes cannot tell the head count (q/k norms span all
# heads), so infer_config assumes it: models of this family, tiny ones included, must keep head_dim = 128.
HEAD_DIM = 128


@dataclass(frozen=True)
class WanConfig:
    """Wan DiT architecture (official key names; Wan-Video/Wan2.2 wan/configs)."""

    dim: int = 3072  # model width
    ffn_dim: int = 14336  # hidden width of the tanh-GELU feed-forward
    num_heads: int = 24  # dim // 128
    num_layers: int = 30  # number of WanAttentionBlocks
    in_dim: int = 48  # latent channels in (48 = Wan2.2 VAE, 16 = Wan2.1 VAE)
    out_dim: int = 48  # latent channels out
    text_dim: int = 4096  # umT5-XXL hidden size
    freq_dim: int = 256  # sinusoidal timestep embedding size
    eps: float = 1e-6  # LayerNorm / RMSNorm epsilon
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) DiT patch
    text_len: int = TEXT_LEN  # context is zero-padded to this many tokens
    rope_theta: float = 10000.0
    rope_max_len: int = 1024  # per-axis RoPE table length

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")


PRESETS: dict[str, WanConfig] = {
    "ti2v-5B": WanConfig(),
    "t2v-1.3B": WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, out_dim=16),
    "t2v-14B": WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16, out_dim=16),
}


@dataclass(frozen=True)
class SamplingConfig:
    """Official TI2V-5B text-to-video defaults (wan/configs/wan_ti2v_5B.py)."""

    width: int = 1280
    height: int = 704
    num_frames: int = 121
    fps: int = 24
    steps: int = 50
    guidance_scale: float = 5.0
    shift: float = 5.0
    sampler: str = "unipc"
    schedule: str = "official"  # or "diffusers"

    def merged(self, **given) -> "SamplingConfig":
        """A copy with every given value that is not None (explicit arguments and flags override the defaults)."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def summary(self) -> str:
        """One line, e.g. "128x128, 25 frames @ 12 fps, 20 euler steps, cfg 3, shift 3"."""
        sched = "" if self.schedule == "official" else f", {self.schedule} schedule"
        return (f"{self.width}x{self.height}, {self.num_frames} frames @ {self.fps:g} fps, {self.steps} {self.sampler} "
                f"steps, cfg {self.guidance_scale:g}, shift {self.shift:g}{sched}")


# A DiT file may carry the sampling defaults it was made for: JSON of SamplingConfig fields in this safetensors
# `__metadata__` entry (the shipped demo DiT does; wan_core.demo.export writes it). Files without it get
# SamplingConfig().
SAMPLING_DEFAULTS_KEY = "wan_core.sampling_defaults"
OFFICIAL_DEFAULTS = "official TI2V-5B defaults"
_KINDS = {"width": int, "height": int, "num_frames": int, "fps": (int, float), "steps": int,
          "guidance_scale": (int, float), "shift": (int, float), "sampler": str, "schedule": str}


def sampling_defaults_json(cfg: SamplingConfig) -> str:
    """The SAMPLING_DEFAULTS_KEY metadata value for cfg (every field, sorted keys)."""
    return json.dumps(asdict(cfg), sort_keys=True)


def parse_sampling_defaults(text: str, source: str) -> SamplingConfig:
    """SamplingConfig from the JSON of a SAMPLING_DEFAULTS_KEY entry (missing fields: official values); raises
    ValueError naming `source`, the bad field and the fix."""
    from .geometry import validate_request
    from .sampling import SAMPLERS

    fix = f"fix or delete the {SAMPLING_DEFAULTS_KEY!r} metadata entry of {source}"
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{source}: metadata entry {SAMPLING_DEFAULTS_KEY!r} is not valid JSON ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: metadata entry {SAMPLING_DEFAULTS_KEY!r} must be a JSON object of "
                         f"{sorted(_KINDS)} (got {type(data).__name__}); {fix}")
    if unknown := sorted(set(data) - set(_KINDS)):
        raise ValueError(f"{source}: unknown sampling default(s) {unknown} in {SAMPLING_DEFAULTS_KEY!r}; known: "
                         f"{sorted(_KINDS)}; {fix}")
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, _KINDS[name]):
            raise ValueError(f"{source}: sampling default {name}={value!r} has the wrong type; {fix}")
        if name != "guidance_scale" and not isinstance(value, str) and value <= 0:
            raise ValueError(f"{source}: sampling default {name}={value!r} must be positive; {fix}")
    cfg = SamplingConfig(**data)
    if cfg.guidance_scale < 0 or cfg.sampler not in SAMPLERS or cfg.schedule not in ("official", "diffusers"):
        raise ValueError(f"{source}: sampling defaults need guidance_scale >= 0, sampler in {sorted(SAMPLERS)} and "
                         f"schedule official or diffusers (got {cfg}); {fix}")
    try:
        validate_request(cfg.width, cfg.height, cfg.num_frames)
    except ValueError as e:
        raise ValueError(f"{source}: the sampling defaults in its metadata are invalid: {e}; {fix}") from None
    return cfg


_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def infer_config(sd: Mapping[str, torch.Tensor], *, head_dim: int = HEAD_DIM) -> WanConfig:
    """Read a WanConfig from an official-named DiT state dict (shapes only; works on meta tensors)."""
    required = ("head.modulation", "patch_embedding.weight", "blocks.0.ffn.0.weight", "text_embedding.0.weight",
                "time_embedding.0.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise ValueError(f"not a Wan DiT state dict: missing {missing}; expected official Wan key names "
                         "(convert diffusers/ComfyUI names with wan_core.convert first)")
    dim = sd["head.modulation"].shape[-1]
    patch = sd["patch_embedding.weight"].shape  # [dim, in_dim, pt, ph, pw]
    head = sd["head.head.weight"].shape  # [prod(patch) * out_dim, dim]
    n_patch = patch[2] * patch[3] * patch[4]
    layers = {int(m.group(1)) for k in sd if (m := _BLOCK.match(k))}
    return WanConfig(
        dim=dim,
        ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0],
        num_heads=max(1, dim // head_dim),
        num_layers=len(layers),
        in_dim=patch[1],
        out_dim=head[0] // n_patch,
        text_dim=sd["text_embedding.0.weight"].shape[1],
        freq_dim=sd["time_embedding.0.weight"].shape[1],
        patch_size=(patch[2], patch[3], patch[4]),
    )


def preset_name(cfg: WanConfig) -> str | None:
    """The preset equal to cfg, or None for custom (e.g. tiny test) models."""
    return next((name for name, p in PRESETS.items() if p == cfg), None)


def check_preset(name: str, cfg: WanConfig) -> WanConfig:
    """Return PRESETS[name] if the inferred cfg agrees with it; otherwise raise naming every difference."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    want = PRESETS[name]
    diffs = [f"{f.name}: preset {getattr(want, f.name)} vs checkpoint {getattr(cfg, f.name)}"
             for f in fields(WanConfig) if getattr(want, f.name) != getattr(cfg, f.name)]
    if diffs:
        raise ValueError(f"checkpoint does not match preset {name!r}: " + "; ".join(diffs))
    return want
