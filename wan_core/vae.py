# Ported from Wan-Video/Wan2.2@42bf4cf wan/modules/vae2_2.py (Apache-2.0), rewritten; chunking as in the official
# WanVAE_.encode/decode and diffusers@58eb52c AutoencoderKLWan._encode/_decode. Tiled decode is our own (blended tiles).
# Parity: tests/test_vae_parity.py (encode and decode vs diffusers AutoencoderKLWan, fp32).
"""Wan2.2 VAE (48 latent channels, 4x16x16 compression): config inference, loading, chunked encode/decode, tiling.

Latents in and out are RAW (`wan_core.latent_format.normalize_latents` maps them to the DiT's space).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from einops import rearrange
from torch import nn

from .vae_blocks import Decoder, Encoder, Layers

log = logging.getLogger(__name__)

WAN22_HINT = "a 48-channel Wan2.2 VAE (e.g. wan2.2_vae.safetensors or Wan2.2_VAE.pth, official key names)"


@dataclass(frozen=True)
class VAEConfig:
    """Wan2.2 VAE architecture (official `Wan2_2_VAE` / `WanVAE_` arguments)."""

    base_dim: int = 160  # encoder width of the first level (dims = base_dim * [1, *dim_mult])
    decoder_base_dim: int = 256  # decoder width (dims = decoder_base_dim * [dim_mult[-1], *reversed(dim_mult)])
    z_dim: int = 48  # latent channels
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2  # per encoder level; the decoder uses num_res_blocks + 1
    temporal_downsample: tuple[bool, ...] = (False, True, True)  # per down level (len(dim_mult) - 1 entries)
    patch_size: int = 2  # pixel (un)shuffle before/after the network: 3 -> 3 * patch^2 channels

    def __post_init__(self):
        for name in ("base_dim", "decoder_base_dim", "z_dim", "num_res_blocks", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"VAEConfig.{name} must be >= 1 (got {getattr(self, name)})")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(f"VAEConfig.temporal_downsample needs len(dim_mult) - 1 = {len(self.dim_mult) - 1} "
                             f"entries (got {self.temporal_downsample}); one per downsampling level")
        dims = self.encoder_dims
        for i, temporal in enumerate(self.temporal_downsample):  # the avg_down shortcut regroups channels
            if dims[i] * (8 if temporal else 4) % dims[i + 1]:
                raise ValueError(f"encoder level {i}: {dims[i]} channels x {8 if temporal else 4} must be divisible "
                                 f"by {dims[i + 1]}; choose dim_mult so each level at most doubles the width")

    @property
    def encoder_dims(self) -> list[int]:
        return [self.base_dim * m for m in (1, *self.dim_mult)]

    @property
    def decoder_dims(self) -> list[int]:
        return [self.decoder_base_dim * m for m in (self.dim_mult[-1], *reversed(self.dim_mult))]

    @property
    def stride(self) -> tuple[int, int, int]:
        """(t, h, w): pixel frames / pixels per latent cell."""
        s = self.patch_size * 2 ** (len(self.dim_mult) - 1)
        return 2 ** sum(self.temporal_downsample), s, s


def _count(sd: Mapping, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_vae_config(sd: Mapping[str, torch.Tensor]) -> VAEConfig:
    """Read a Wan2.2-family VAE's architecture from official key names and tensor shapes."""
    if "decoder.upsamples.0.upsamples.0.residual.2.weight" not in sd:
        if "encoder.conv_in.weight" in sd:
            found = ("diffusers AutoencoderKLWan key names; convert with "
                     "wan_core.convert.convert(sd, 'vae', 'diffusers')")
        elif "decoder.upsamples.0.residual.2.weight" in sd or "conv2.weight" in sd:
            z = sd["conv2.weight"].shape[0] if "conv2.weight" in sd else "?"
            found = f"a Wan2.1-style VAE ({z} latent channels, no patchify), as used by Wan2.1 and Wan2.2 A14B"
        else:
            found = f"no VAE keys ({len(sd)} keys, e.g. {sorted(sd)[:3]})"
        raise ValueError(f"expected {WAN22_HINT}; found {found}")
    base_dim, cin = sd["encoder.conv1.weight"].shape[:2]
    patch = round((cin / 3) ** 0.5)
    if 3 * patch * patch != cin:
        raise ValueError(f"expected {WAN22_HINT}; encoder.conv1 takes {cin} input channels, not 3 * patch^2")
    levels = _count(sd, r"encoder\.downsamples\.(\d+)\.")
    dim_mult = tuple(sd[f"encoder.downsamples.{i}.downsamples.0.residual.2.weight"].shape[0] // base_dim
                     for i in range(levels))
    num_res = _count(sd, r"encoder\.downsamples\.0\.downsamples\.(\d+)\.residual\.")
    temporal = tuple(f"encoder.downsamples.{i}.downsamples.{num_res}.time_conv.weight" in sd for i in range(levels - 1))
    dec_dim = sd["decoder.head.2.weight"].shape[1] // dim_mult[0]
    cfg = VAEConfig(base_dim=base_dim, decoder_base_dim=dec_dim, z_dim=sd["conv2.weight"].shape[0],
                    dim_mult=dim_mult, num_res_blocks=num_res, temporal_downsample=temporal, patch_size=patch)
    if cfg.z_dim != 48:
        log.warning("VAE has %d latent channels; the Wan2.2 TI2V-5B DiT and latent statistics expect 48", cfg.z_dim)
    return cfg


class WanVAE(nn.Module):
    """Wan2.2 VAE with official key names (`encoder.*`, `conv1`, `conv2`, `decoder.*`); layers from `ops`."""

    def __init__(self, cfg: VAEConfig, *, ops=nn, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        L = Layers(ops, device, dtype)
        pix = 3 * cfg.patch_size**2
        z2 = cfg.z_dim * 2
        self.encoder = Encoder(pix, cfg.encoder_dims, z2, cfg.num_res_blocks, cfg.temporal_downsample, L)
        self.conv1 = L.point(z2, z2)  # quant conv -> (mu, log_var)
        self.conv2 = L.point(cfg.z_dim, cfg.z_dim)  # post-quant conv
        self.decoder = Decoder(cfg.z_dim, cfg.decoder_dims, pix, cfg.num_res_blocks,
                               tuple(reversed(cfg.temporal_downsample)), L)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], cfg: VAEConfig | None = None, *, ops=nn, device=None,
                        dtype=None, strict: bool = True) -> "WanVAE":
        """Build on the meta device and load `sd` (official names) with assign=True; one ValueError lists every missing,
        unexpected (strict only) and wrong-shape key. `device`/`dtype`, if given, move/cast the loaded weights."""
        cfg = cfg or infer_vae_config(sd)
        model = cls(cfg, ops=ops, device="meta")
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected)) if strict else []
        shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {s}" for k, s in expected.items()
                  if k in sd and tuple(sd[k].shape) != s]
        if missing or unexpected or shapes:
            parts = [f"{name} ({len(keys)}): {keys[:8]}{' ...' if len(keys) > 8 else ''}"
                     for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
                     if keys]
            raise ValueError(f"state dict does not fit WanVAE({cfg}); " + "; ".join(parts)
                             + f". Expected {WAN22_HINT}")
        model.load_state_dict({k: sd[k] for k in expected}, strict=True, assign=True)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        log.info("loaded Wan2.2 VAE: %s, %d tensors", cfg, len(expected))
        return model.eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    # --- encode ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in -1..1, T = 4k+1, H and W multiples of 16 -> raw mu [B, z, 1 + k, H/16, W/16].

        Chunked like the reference: frame 0 alone, then 4 frames at a time, with the causal feature cache."""
        st, sh, sw = self.cfg.stride
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W] (got shape {tuple(video.shape)})")
        t, h, w = video.shape[2:]
        if (t - 1) % st:
            k = max(0, round((t - 1) / st))
            raise ValueError(f"video frame count must be {st}k+1 (got {t}); try {k * st + 1} frames")
        if h % sh or w % sw or h == 0 or w == 0:
            raise ValueError(f"video height and width must be positive multiples of {sh} (got {h}x{w}); "
                             f"crop or resize to {max(sh, h // sh * sh)}x{max(sw, w // sw * sw)}")
        p = self.cfg.patch_size
        x = rearrange(video.to(self.dtype), "b c f (h q) (w r) -> b (c r q) f h w", q=p, r=p)
        cache: dict = {}
        mus = []
        for start in range(0, t, st):
            chunk = x[:, :, :1] if start == 0 else x[:, :, start - st + 1:start + 1]
            mus.append(self.conv1(self.encoder(chunk, cache))[:, :self.cfg.z_dim])
        return torch.cat(mus, dim=2)

    # --- decode ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z_raw: torch.Tensor, *, tile: tuple[int, int] | None = None, tile_overlap: int = 4,
               callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Raw latent [B, z, T', h, w] -> video [B, 3, 1 + 4 (T' - 1), 16 h, 16 w], fp32, clamped to -1..1.

        One latent frame at a time with the causal feature cache. `tile` = (tile_h, tile_w) in latent cells: decode
        spatial tiles overlapping by `tile_overlap` cells, each with its own cache over all frames, blended linearly.
        `callback(done, total)` is called after every decoded latent frame (of every tile)."""
        if z_raw.ndim != 5 or z_raw.shape[1] != self.cfg.z_dim:
            raise ValueError(f"latent must be [B, {self.cfg.z_dim}, T, h, w] (got shape {tuple(z_raw.shape)}); "
                             "is it from a different VAE (Wan2.1 latents have 16 channels)?")
        b, _, t, h, w = z_raw.shape
        st, sh, sw = self.cfg.stride
        ys, xs = _tile_starts(h, tile, tile_overlap, 0), _tile_starts(w, tile, tile_overlap, 1)
        alloc = torch.empty if len(ys) == len(xs) == 1 else torch.zeros  # tiles accumulate
        out = alloc(b, 3, 1 + st * (t - 1), h * sh, w * sw, dtype=torch.float32, device=z_raw.device)
        total, done = t * len(ys) * len(xs), 0
        if len(ys) == len(xs) == 1:
            for _ in self._decode_frames(z_raw, out):
                done += 1
                if callback is not None:
                    callback(done, total)
            return out.clamp_(-1.0, 1.0)
        weight = torch.zeros(h * sh, w * sw, dtype=torch.float32, device=z_raw.device)  # sum of blend weights
        for y0, y1 in ys:
            for x0, x1 in xs:
                ramp = _ramp(ys, (y0, y1), sh, z_raw)[:, None] * _ramp(xs, (x0, x1), sw, z_raw)[None, :]
                target = out[..., y0 * sh:y1 * sh, x0 * sw:x1 * sw]
                for _ in self._decode_frames(z_raw[..., y0:y1, x0:x1], target, ramp):
                    done += 1
                    if callback is not None:
                        callback(done, total)
                weight[y0 * sh:y1 * sh, x0 * sw:x1 * sw] += ramp
        return out.div_(weight).clamp_(-1.0, 1.0)

    def decode_auto(self, z_raw: torch.Tensor, *, tile: tuple[int, int] = (32, 32), tile_overlap: int = 4,
                    min_tile: int = 8, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """`decode(z_raw)`; on torch.OutOfMemoryError retry tiled with `tile` (latent cells), halving it on every
        further OOM down to `min_tile` cells, after which the error propagates."""
        try:
            return self.decode(z_raw, callback=callback)
        except torch.OutOfMemoryError:
            log.warning("VAE decode ran out of memory for latent %s; retrying with %s tiles", tuple(z_raw.shape), tile)
        while True:
            _free(z_raw)
            try:
                return self.decode(z_raw, tile=tile, tile_overlap=min(tile_overlap, min(tile) - 1), callback=callback)
            except torch.OutOfMemoryError:
                if min(tile) <= min_tile:
                    raise
                tile = (max(min_tile, tile[0] // 2), max(min_tile, tile[1] // 2))
                log.warning("tiled VAE decode ran out of memory; retrying with %s tiles", tile)

    def _decode_frames(self, z: torch.Tensor, out: torch.Tensor, ramp: torch.Tensor | None = None):
        """Decode z [B, z, T', h, w] frame by frame into out [B, 3, T, H, W] (written, or accumulated x ramp [H, W])."""
        st = self.cfg.stride[0]
        p = self.cfg.patch_size
        cache: dict = {}
        z = z.to(self.dtype)
        for i in range(z.shape[2]):
            y = self.decoder(self.conv2(z[:, :, i:i + 1]), cache, first=i == 0)  # [B, 3 p^2, f, H/p, W/p]
            y = rearrange(y, "b (c r q) f h w -> b c f (h q) (w r)", q=p, r=p)
            t0 = 0 if i == 0 else 1 + st * (i - 1)
            dst = out[:, :, t0:t0 + y.shape[2]]
            if ramp is None:
                dst.copy_(y)
            else:
                dst.addcmul_(y.float(), ramp)
            del y
            yield i


def _tile_starts(n: int, tile: tuple[int, int] | None, overlap: int, axis: int) -> list[tuple[int, int]]:
    """[(start, end)] latent ranges covering 0..n with full-size tiles overlapping by at least `overlap` cells."""
    if tile is None:
        return [(0, n)]
    size = tile[axis]
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"tile sizes must be positive integers in latent cells (got {tile})")
    if size >= n:
        return [(0, n)]
    if not 0 <= overlap < size:
        raise ValueError(f"tile_overlap must be >= 0 and smaller than the tile size {tile} (got {overlap})")
    starts = list(range(0, n - size, size - overlap)) + [n - size]
    return [(s, s + size) for s in starts]


def _ramp(spans: list[tuple[int, int]], span: tuple[int, int], scale: int, like: torch.Tensor) -> torch.Tensor:
    """1-D blend weight in pixels for one tile: linear ramps over the overlaps with its neighbours, 1 elsewhere."""
    i = spans.index(span)
    n = (span[1] - span[0]) * scale
    w = torch.ones(n, dtype=torch.float32, device=like.device)
    if i > 0:
        k = (spans[i - 1][1] - span[0]) * scale
        w[:k] = (torch.arange(k, dtype=torch.float32, device=like.device) + 0.5) / k
    if i + 1 < len(spans):
        k = (span[1] - spans[i + 1][0]) * scale
        down = (torch.arange(k, 0, -1, dtype=torch.float32, device=like.device) - 0.5) / k
        w[n - k:] = torch.minimum(w[n - k:], down)
    return w


def _free(like: torch.Tensor) -> None:
    if like.device.type == "cuda":
        torch.cuda.empty_cache()
