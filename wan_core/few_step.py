"""Explicit few-step schedules and the presets of step-distilled TI2V-5B models (FastWan, Turbo).

Distilled models are sampled at a handful of fixed timesteps with the `lcm` sampler (wan_core.sampling): predict x0,
re-noise to the next sigma. Their configs name integer timesteps such as [1000, 757, 522] and *warp* them through
the shifted 1000-step training schedule (FastVideo / Self-Forcing `warp_denoising_step`: the table
shift_sigma(linspace(1, 0, 1001)[:-1]) * 1000 with a 0 appended, indexed at 1000 - t), which is
sigma = shift_sigma(t / 1000, shift): 757 -> 0.9397, 522 -> 0.8452 at shift 5. Without warping sigma = t / 1000.
Read from hao-ai-lab/FastVideo (fastvideo/configs/pipelines/wan.py, Apache-2.0) and the Self-Forcing pipelines that
quanhaol/Wan2.2-TI2V-5B-Turbo builds on; no code copied. Tests: tests/test_schedules_explicit.py.
Note: the DiT gets trunc(sigma * 1000) (939 for 0.9397) as for every wan_core schedule; the reference feeds the
float 939.7, a timestep difference under 1 / 1000 of the range.
FewStepRecipe / apply_recipe: a schedule with its sampler and cfg, as ComfyUI's WanT2V Few-Step Schedule hands it
to WanT2V Sampler (the recipe wins over the sampler's widgets; an explicit SIGMAS input over the recipe's schedule).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .schedules import NUM_TRAIN_TIMESTEPS, shift_sigma

log = logging.getLogger(__name__)


def _numbers(text: str, what: str) -> list[float]:
    parts = [p.strip() for p in str(text).replace(";", ",").split(",")]
    if not any(parts):
        raise ValueError(f"--{what} is empty; give comma-separated numbers, e.g. --sigmas 1,0.94,0.845 or "
                         "--timesteps 1000,757,522")
    out = []
    for p in parts:
        if not p:
            continue
        try:
            v = float(p)
        except ValueError:
            raise ValueError(f"--{what} entry {p!r} is not a number (in {text!r}); use comma-separated numbers") from None
        if not math.isfinite(v):
            raise ValueError(f"--{what} entry {p!r} is not finite (in {text!r})")
        out.append(v)
    return out


def _decreasing(vals: Sequence[float], what: str, text) -> None:
    if any(b >= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"--{what} must be strictly decreasing (got {text!r}); list the noisiest step first")


def explicit_sigmas(values) -> torch.Tensor:
    """Schedule [n + 1] from sigmas (text "1,0.94,0.845" or numbers) in (0, 1]; a final 0 is appended if missing."""
    vals = _numbers(values, "sigmas") if isinstance(values, str) else [float(v) for v in values]
    if vals and vals[-1] == 0.0:
        vals = vals[:-1]
    if not vals:
        raise ValueError(f"--sigmas {values!r} holds no step; give at least one sigma in (0, 1], e.g. 1,0.94,0.845")
    if not all(0.0 < v <= 1.0 for v in vals):
        raise ValueError(f"--sigmas entries must lie in (0, 1] (got {values!r}); flow sigmas run from 1 (pure noise) "
                         "towards 0, which is appended for you")
    _decreasing(vals, "sigmas", values)
    return torch.tensor(vals + [0.0], dtype=torch.float32)


def timestep_sigmas(timesteps, *, shift: float = 5.0, warp: bool = False) -> torch.Tensor:
    """Schedule [n + 1] from model timesteps in (0, 1000] (text "1000,757,522" or numbers), warped or not."""
    vals = _numbers(timesteps, "timesteps") if isinstance(timesteps, str) else [float(v) for v in timesteps]
    if vals and vals[-1] == 0.0:
        vals = vals[:-1]
    if not vals or not all(0.0 < v <= NUM_TRAIN_TIMESTEPS for v in vals):
        raise ValueError(f"--timesteps entries must lie in (0, {NUM_TRAIN_TIMESTEPS}] (got {timesteps!r}); "
                         "e.g. 1000,757,522 (FastWan) or 1000,750,500,250 (Turbo)")
    _decreasing(vals, "timesteps", timesteps)
    sig = torch.tensor(vals, dtype=torch.float64) / NUM_TRAIN_TIMESTEPS
    if warp:
        sig = shift_sigma(sig, shift)
    return torch.cat([sig.to(torch.float32), torch.zeros(1)])


@dataclass(frozen=True)
class FewStepPreset:
    """A distilled model's sampling recipe: warped timesteps, shift, guidance scale and sampler."""

    name: str
    timesteps: tuple[int, ...]
    shift: float = 5.0
    cfg: float = 1.0
    sampler: str = "lcm"
    warp: bool = True
    source: str = ""

    def sigmas(self, shift: Optional[float] = None) -> torch.Tensor:
        return timestep_sigmas(self.timesteps, shift=self.shift if shift is None else shift, warp=self.warp)


PRESETS = {
    "fastwan": FewStepPreset("fastwan", (1000, 757, 522), source="FastVideo FastWan2.2-TI2V-5B (DMD, 3 steps)"),
    "turbo": FewStepPreset("turbo", (1000, 750, 500, 250), source="quanhaol/Wan2.2-TI2V-5B-Turbo (4 steps)"),
}


def get_preset(name: str) -> FewStepPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} (made for the matching "
                         "distilled weights; the base TI2V-5B needs its 50-step default)") from None


def resolve_schedule(*, preset: Optional[str] = None, sigmas=None, timesteps=None, warp: bool = False,
                     shift: Optional[float] = None) -> tuple[Optional[torch.Tensor], dict]:
    """(explicit schedule or None, settings the preset fixes: sampler, guidance_scale, shift) from the options.

    Exactly one of sigmas / timesteps may be given; a preset gives its own timesteps unless one of them is given.
    shift: the user's shift (warps timesteps; None = the preset's, else 5.0).
    """
    if sigmas is not None and timesteps is not None:
        raise ValueError("give --sigmas or --timesteps, not both")
    if warp and timesteps is None and preset is None:
        raise ValueError("--warp applies to --timesteps (or a preset); with --sigmas the values are used as given")
    p = get_preset(preset) if preset is not None else None
    fixed = {} if p is None else {"sampler": p.sampler, "guidance_scale": p.cfg, "shift": p.shift}
    use_shift = shift if shift is not None else (p.shift if p is not None else 5.0)
    if sigmas is not None:
        return explicit_sigmas(sigmas), fixed
    if timesteps is not None:
        return timestep_sigmas(timesteps, shift=use_shift, warp=warp or (p is not None and p.warp)), fixed
    return (p.sigmas(use_shift) if p is not None else None), fixed


@dataclass(frozen=True)
class FewStepRecipe:
    """What a few-step schedule fixes on a sampler run: the schedule (ending in 0), the sampler, the guidance scale."""

    name: str
    sigmas: tuple[float, ...]
    sampler: str = "lcm"
    cfg: float = 1.0

    def schedule(self) -> torch.Tensor:
        return torch.tensor(self.sigmas, dtype=torch.float32)


def few_step_recipe(preset: str = "custom", *, timesteps=None, shift: float = 5.0, warp: bool = True) -> FewStepRecipe:
    """A preset's recipe (its timesteps warped at `shift`), or "custom": `timesteps` with lcm and cfg 1."""
    if preset == "custom":
        sig = resolve_schedule(timesteps=timesteps, warp=warp, shift=shift)[0]
        return FewStepRecipe("custom", tuple(sig.tolist()))
    p = get_preset(preset)
    return FewStepRecipe(p.name, tuple(p.sigmas(shift).tolist()), p.sampler, p.cfg)


def apply_recipe(recipe: Optional[FewStepRecipe], *, sampler: str, cfg: float, sigmas=None):
    """(sampler, cfg, sigmas) for a run: the recipe replaces the sampler and cfg given with it and, unless an
    explicit schedule `sigmas` is given (that one wins), supplies the schedule. Logs one line naming what it replaced.
    recipe None: the arguments unchanged."""
    if recipe is None:
        return sampler, cfg, sigmas
    replaced = [f"{k}={v}" for k, v, new in (("sampler", sampler, recipe.sampler), ("cfg", cfg, recipe.cfg))
                if v != new]
    if sigmas is None:
        sigmas, where = recipe.schedule(), f"{len(recipe.sigmas) - 1} steps"
        replaced.append("steps/shift/denoise")
    else:
        where = "the schedule from the sigmas input (it wins over the recipe's)"
    log.info("few-step recipe %s: sampler %s, cfg %s, %s%s", recipe.name, recipe.sampler, recipe.cfg, where,
             f" (replaces {', '.join(replaced)})" if replaced else "")
    return recipe.sampler, recipe.cfg, sigmas
