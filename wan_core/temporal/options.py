"""Temporal-consistency sampling options: one frozen value, one `build` that turns it into sampler plug-ins.

    opts = TemporalOptions(flow_strength=0.4, enhance=2.0)            # or TemporalOptions.parse("flow=0.4,enhance=2")
    wrappers, hooks = build(opts)                                      # all off by default -> ((), None)
    sample_latents(..., model_wrappers=wrappers, hooks=hooks)

Three training-free, weight-free options, all off by default (0):
- flow-guided smoothing of the predicted clean latent (wan_core.temporal.guided.flow_smoothed), a model_fn wrapper
  active between fractions flow_start and flow_end of the steps, decaying to 0 at flow_end;
- the Enhance-A-Video cross-frame attention gain (wan_core.temporal.enhance), a DiT self-attention hook, active
  between fractions enhance_start and enhance_end of the steps;
- a temporally correlated initial noise (wan_core.temporal.noise_prior): `noise_transform(opts)` gives the function
  sample_latents applies to the seeded noise, so any two latent frames start correlated by noise_share.
All-zero options build to ((), None) and no noise transform, so sampling is bit-identical to the plain sampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable, Optional

import torch

from ..model import DiTHooks
from .enhance import enhance_a_video

__all__ = ["TemporalOptions", "build", "noise_transform", "combine_hooks", "PRESETS"]

ModelWrapper = Callable[[Callable, torch.Tensor], Callable]

_ALIASES = {"flow": "flow_strength", "enhance_weight": "enhance", "noise": "noise_share", "band": "noise_band"}


@dataclass(frozen=True)
class TemporalOptions:
    """Per-run temporal-consistency settings (fractions count sampling steps, 0 = first step, 1 = after the last)."""

    flow_strength: float = 0.0  # x0 low-frequency blend towards flow-warped neighbours, 0..1 (0 off)
    flow_start: float = 0.1  # smoothing starts at this fraction of the steps, at full strength ...
    flow_end: float = 0.6  # ... and has decayed linearly to 0 here (never in the last steps)
    enhance: float = 0.0  # Enhance-A-Video temperature, >= 0 (0 off; 1-4 typical)
    enhance_start: float = 0.0  # the attention gain is applied from this fraction of the steps ...
    enhance_end: float = 1.0  # ... up to this one
    noise_share: float = 0.0  # correlation of the initial noise between any two latent frames, 0..1 (0 off)
    noise_band: float = 0.0  # share only spatial frequencies >= this fraction of Nyquist (0: all), 0..1

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"TemporalOptions.{f.name} must be a finite number (got {v!r})")
        if not 0.0 <= self.flow_strength <= 1.0:
            raise ValueError(f"TemporalOptions.flow_strength must be in [0, 1] (got {self.flow_strength}); "
                             "0 disables, 0.3-0.5 is typical")
        if not 0.0 <= self.noise_share < 1.0:
            raise ValueError(f"TemporalOptions.noise_share must be in [0, 1) (got {self.noise_share}); 0 disables, "
                             "0.2-0.5 is typical, 1 would give every frame the same noise")
        if not 0.0 <= self.noise_band < 1.0:
            raise ValueError(f"TemporalOptions.noise_band must be in [0, 1) (got {self.noise_band}); 0 shares the "
                             "noise at every spatial frequency, 0.5 only its finer half")
        if self.enhance < 0.0:
            raise ValueError(f"TemporalOptions.enhance must be >= 0 (got {self.enhance}); 0 disables, 1-4 is typical")
        for name in ("flow", "enhance"):
            start, end = getattr(self, f"{name}_start"), getattr(self, f"{name}_end")
            if not 0.0 <= start < end <= 1.0:
                raise ValueError(f"TemporalOptions needs 0 <= {name}_start < {name}_end <= 1 (got {start}, {end}); "
                                 "they are fractions of the sampling steps")

    @property
    def enabled(self) -> bool:
        """True when any option changes sampling."""
        return self.flow_strength > 0.0 or self.enhance > 0.0 or self.noise_share > 0.0

    @classmethod
    def parse(cls, spec: str) -> "TemporalOptions":
        """From text: a preset name ("off", "on", ...) and/or comma-separated key=value pairs, e.g.
        "on", "flow=0.4,enhance=2", "on,enhance=0" (keys: field names, or "flow" for flow_strength)."""
        opts, names = cls(), {f.name for f in fields(cls)}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if "=" not in part:
                if part not in PRESETS:
                    raise ValueError(f"unknown temporal preset {part!r} in {spec!r}; use one of {sorted(PRESETS)} "
                                     f"or key=value pairs with keys {sorted(names | set(_ALIASES))}")
                opts = PRESETS[part]
                continue
            key, _, value = (s.strip() for s in part.partition("="))
            key = _ALIASES.get(key, key)
            if key not in names:
                raise ValueError(f"unknown temporal option {key!r} in {spec!r}; keys: {sorted(names | set(_ALIASES))}")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"temporal option {key}={value!r} is not a number (in {spec!r})") from None
            opts = replace(opts, **{key: number})
        return opts

    def describe(self) -> str:
        """Compact text form accepted by parse (only fields that differ from the defaults)."""
        base = TemporalOptions()
        parts = [f"{f.name}={getattr(self, f.name):g}" for f in fields(self)
                 if getattr(self, f.name) != getattr(base, f.name)]
        return ",".join(parts) or "off"


PRESETS = {
    "off": TemporalOptions(),
    # "on" is what benchmarks/bench_temporal.py measured best on the demo model (v3, 24 videos): the noise prior on the
    # finer half of the spatial frequencies (warping error 0.95x, motion 0.94x, accuracy unchanged); sharing every
    # frequency (0.98x) cost 12 pt of colour accuracy there. Flow smoothing + attention gain: 1.22x on the v2 model.
    "on": TemporalOptions(flow_start=0.0, flow_end=0.8, enhance_end=0.5, noise_share=0.3, noise_band=0.5),  # node
    "noise": TemporalOptions(noise_share=0.3),
    "flow": TemporalOptions(flow_strength=0.8, flow_start=0.0, flow_end=0.8),
    "enhance": TemporalOptions(enhance=1.0, enhance_end=0.5),
    "flow+enhance": TemporalOptions(flow_strength=0.8, flow_start=0.0, flow_end=0.8, enhance=1.0, enhance_end=0.5),
}


def noise_transform(options: Optional[TemporalOptions]) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The initial-noise transform for sample_latents(noise_transform=...), or None when noise_share is 0."""
    if options is None or options.noise_share <= 0.0:
        return None
    from .noise_prior import shared_frame_noise

    share, band = options.noise_share, options.noise_band
    return lambda noise: shared_frame_noise(noise, share, band)


def combine_hooks(*hooks: Optional[DiTHooks]) -> Optional[DiTHooks]:
    """One DiTHooks running the given ones in order (None entries skipped); None when nothing is left."""
    hooks = tuple(h for h in hooks if h is not None)
    if len(hooks) <= 1:
        return hooks[0] if hooks else None
    blocks = [h.block for h in hooks if h.block is not None]
    attns = [h.self_attn for h in hooks if h.self_attn is not None]

    def block(i, blk, x, ctx):
        for fn in blocks:
            x = fn(i, blk, x, ctx)
        return x

    def self_attn(i, q, k, v, out, grid):
        for fn in attns:
            out = fn(i, q, k, v, out, grid)
        return out

    single = {}  # attention backend and block runner (wan_core.attention / wan_core.compile): at most one each
    for field in ("attention", "run_block"):
        found = [getattr(h, field) for h in hooks if getattr(h, field) is not None]
        if len(found) > 1:
            raise ValueError(f"{len(found)} DiTHooks set {field}; only one attention backend / block runner can run")
        single[field] = found[0] if found else None
    return DiTHooks(block=block if blocks else None, self_attn=self_attn if attns else None, **single)


def build(options: Optional[TemporalOptions], sigmas: Optional[torch.Tensor] = None
          ) -> tuple[tuple[ModelWrapper, ...], Optional[DiTHooks]]:
    """(model_wrappers, hooks) for sample_latents / WanT2VPipeline; ((), None) when options is None or all off.

    Build once per sampling run: the enhance step window pairs a wrapper with its hook. With `sigmas` (the run's
    schedule) the step windows are checked now instead of when sampling starts.
    """
    if options is not None and not isinstance(options, TemporalOptions):
        raise TypeError(f"options must be a TemporalOptions or None (got {type(options).__name__}); build one with "
                        "TemporalOptions(...) or TemporalOptions.parse(text)")
    if options is None or not options.enabled:
        return (), None
    enhance_wrap, hooks = enhance_a_video(options.enhance, start=options.enhance_start, end=options.enhance_end)
    # sample_latents applies wrappers in order, so the first is innermost: the enhance gate sits right around the DiT.
    wrappers: list[ModelWrapper] = [enhance_wrap] if enhance_wrap is not None else []
    if options.flow_strength > 0.0:
        from .guided import flow_smoothed  # imported lazily: flow estimation is only needed when smoothing is on

        def smooth(model_fn, run_sigmas, o=options):
            return flow_smoothed(model_fn, run_sigmas, strength=o.flow_strength, start=o.flow_start, end=o.flow_end)

        wrappers.append(smooth)
    if sigmas is not None:
        def identity(x, sigma):
            return x

        for wrap in wrappers:
            wrap(identity, sigmas)  # raises ValueError for an empty step window
    return tuple(wrappers), hooks
