"""Step caching: reuse a DiT branch's last residual on steps where its output is predicted to change little.

Two training-free criteria, both acting on the DiT output of each guidance branch (the velocity v for input x):
- "easycache" (EasyCache, Zhou et al. 2025, arXiv 2507.02860; the idea as in Comfy-Org/ComfyUI
  comfy_extras/nodes_easycache.py, GPL-3.0, read, not copied): the transformation rate k = mean|v_c - v_c'| /
  mean|x_c - x_c'| between the last two computed steps c' < c predicts the relative output change of a step,
  k * mean|x_t - x_{t-1}| / mean|v_c|; while the sum of these predictions since the last computed step stays under
  the threshold, the step reuses x_t + (v_c - x_c).
- "magcache" (MagCache, Ma et al. 2025, arXiv 2506.09045; Zehong-Ma/MagCache, Apache-2.0, read, not copied): the
  magnitude ratio r_t = mean over tokens of |d_t| / |d_{t-1}| of the residual d = v - x is nearly a fixed
  function of the model and the noise level, so it is calibrated once (`calibrate` mode, wan_core.magcache_ratios)
  and each step accumulates R *= r_t, err += |1 - R|; the step reuses x_t + d_c while err < threshold and at most
  `max_skip` steps in a row were reused. Unlike the paper (the block-stack residual inside the DiT) the residual
  here is the whole DiT's v - x, so ratios calibrated inside a DiT (MagCache's published TI2V-5B lists) do not apply.
For both: the first `warmup` fraction of the steps and the last step always run; the conditional branch decides
for the step, and each branch (cond, uncond) reuses its own cached residual. Threshold 0 never reuses, so the
result equals the uncached run exactly (tests/test_step_cache.py).

Use: `run = start_cache(config, sigmas)` once per sampling run, then `cond, uncond = run.wrap_branches(cond, uncond)`
(velocity functions (x, sigma[B]) -> v, cond called first each step, as wan_core.guidance does) or
`pair = run.wrap_pair(pair)` for a batched pair (x, sigma) -> (v_cond, v_uncond); `run.report()` after sampling.
The run object holds the per-run state (like a multistep sampler's history); it is never shared between runs.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from .magcache_ratios import MagRatios

log = logging.getLogger(__name__)

METHODS = ("easycache", "magcache", "calibrate")
DEFAULT_THRESHOLD = {"easycache": 0.1, "magcache": 0.1, "calibrate": 0.0}
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepCacheConfig:
    """What to cache: method, reuse threshold, warm-up fraction of steps, MagCache's reuse cap and ratios."""

    method: str = "easycache"  # one of METHODS; "calibrate" computes every step and records MagCache ratios
    threshold: float = DEFAULT_THRESHOLD["easycache"]  # accumulated predicted change allowed before recomputing
    warmup: float = 0.2  # fraction of the steps always computed at the start (EasyCache 10 / 50, MagCache 0.2)
    max_skip: int = 4  # magcache: at most this many reused steps in a row (the paper's K; 0 = no limit)
    ratios: Optional[MagRatios] = None  # magcache: the model's calibrated magnitude ratios

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown step cache method {self.method!r}; choose one of {METHODS}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"step cache threshold must be a finite number >= 0 (got {self.threshold!r}); 0 never "
                             f"reuses, {DEFAULT_THRESHOLD['easycache']} is the easycache default")
        if not (isinstance(self.warmup, (int, float)) and 0.0 <= self.warmup < 1.0):
            raise ValueError(f"step cache warmup must be a fraction of the steps in [0, 1) (got {self.warmup!r})")
        if isinstance(self.max_skip, bool) or not isinstance(self.max_skip, int) or self.max_skip < 0:
            raise ValueError(f"max_skip must be an int >= 0 (got {self.max_skip!r}); 0 = no limit")

    @classmethod
    def parse(cls, spec: str, **overrides) -> Optional["StepCacheConfig"]:
        """From CLI text "easycache[:THRESH]", "magcache[:THRESH]", "calibrate" or "off" (-> None)."""
        method, _, value = spec.strip().partition(":")
        method = method.strip().lower()
        if method in ("off", "none", ""):
            return None
        if method not in METHODS:
            raise ValueError(f"unknown --cache method {method!r} in {spec!r}; use easycache[:THRESH], "
                             "magcache[:THRESH], calibrate or off")
        threshold = DEFAULT_THRESHOLD[method]
        if value.strip():
            try:
                threshold = float(value)
            except ValueError:
                raise ValueError(f"--cache threshold {value!r} in {spec!r} is not a number; e.g. easycache:0.1") from None
        return cls(method=method, threshold=threshold, **overrides)

    def describe(self) -> str:
        return self.method if self.method == "calibrate" else f"{self.method}:{self.threshold:g}"

    def with_ratios(self, ratios: "MagRatios") -> "StepCacheConfig":
        return replace(self, ratios=ratios)


def _mean_abs(t: torch.Tensor) -> float:
    return t.abs().mean().item()


def _token_ratio(d: torch.Tensor, d_prev: torch.Tensor) -> float:
    """Mean over tokens (batch, frame, row, column) of |d| / |d_prev|, norms over the channels of [B, C, T, H, W]."""
    return (d.norm(dim=1) / d_prev.norm(dim=1).clamp_min(1e-12)).mean().item()


class CacheRun:
    """Per-run state of one step cache (or a pass-through counter when config is None)."""

    def __init__(self, config: Optional[StepCacheConfig], sigmas: torch.Tensor):
        self.config = config
        self.sig = [float(s) for s in sigmas.detach().to("cpu", torch.float64).flatten()]
        self.n = len(self.sig) - 1
        self.calls = {"cond": 0, "uncond": 0}
        self.skipped = {"cond": 0, "uncond": 0}
        self.delta: dict[str, torch.Tensor] = {}  # branch -> v_c - x_c of its last computed step
        self.skip_now = False
        self.x_prev = None  # cond input of the previous step (easycache)
        self.x_c = self.v_c = None  # cond input and output of the last computed step (easycache)
        self.k = None  # transformation rate (easycache)
        self.acc = 0.0  # accumulated predicted change (easycache) or error (magcache)
        self.ratio_acc, self.run_len = 1.0, 0  # magcache: product of ratios since the cached step, reuses in a row
        self.mag_step = None
        if config is not None and config.method == "magcache":
            if config.ratios is None:
                raise ValueError("magcache needs the model's calibrated magnitude ratios (StepCacheConfig.ratios); "
                                 "record them once with the 'calibrate' method (CLI: --cache calibrate) or use "
                                 "easycache, which needs no calibration")
            self.mag_step = config.ratios.for_schedule(self.sig)
        self.recorded: dict[str, list] = {"cond": [], "uncond": []}  # calibrate: (step, ratio)

    # --- decision (the conditional branch) ----------------------------------------------------------------------
    def _index(self, sigma: torch.Tensor) -> Optional[int]:
        s = float(sigma.reshape(-1)[0])
        for i, ref in enumerate(self.sig[:-1]):
            if abs(ref - s) <= 1e-6:
                return i
        return None

    def _eligible(self, i: Optional[int]) -> bool:
        cfg = self.config
        if cfg is None or cfg.method == "calibrate" or i is None or i >= self.n - 1 or not self.delta:
            return False
        return i >= math.ceil(cfg.warmup * self.n)

    def _decide(self, i: Optional[int], x: torch.Tensor) -> bool:
        """True to reuse the cache at this step; updates the accumulators."""
        cfg, x_prev = self.config, self.x_prev
        self.x_prev = x
        if not self._eligible(i):
            return False
        if cfg.method == "easycache":
            if self.k is None or x_prev is None or x_prev.shape != x.shape:
                return False
            self.acc += self.k * _mean_abs(x - x_prev) / max(_mean_abs(self.v_c), 1e-12)
            if self.acc < cfg.threshold:
                return True
            self.acc = 0.0
            return False
        self.ratio_acc *= self.mag_step[i]
        self.run_len += 1
        self.acc += abs(1.0 - self.ratio_acc)
        if self.acc < cfg.threshold and (cfg.max_skip == 0 or self.run_len <= cfg.max_skip):
            return True
        self.acc, self.ratio_acc, self.run_len = 0.0, 1.0, 0
        return False

    def _computed(self, branch: str, i: Optional[int], x: torch.Tensor, v: torch.Tensor) -> None:
        self.calls[branch] += 1
        d = v.float() - x.float()
        if self.config is not None and self.config.method == "calibrate" and branch in self.delta and i is not None:
            self.recorded[branch].append((i, _token_ratio(d, self.delta[branch])))
        if branch == "cond" and self.config is not None and self.config.method == "easycache":
            if self.x_c is not None and self.x_c.shape == x.shape:
                dx = _mean_abs(x - self.x_c)
                self.k = _mean_abs(v - self.v_c) / dx if dx > 0 else None
            self.x_c, self.v_c = x, v
        if self.config is not None:
            self.delta[branch] = d

    def _reused(self, branch: str, x: torch.Tensor) -> torch.Tensor:
        self.skipped[branch] += 1
        return x + self.delta[branch].to(x.dtype)

    # --- wrappers ---------------------------------------------------------------------------------------------
    def wrap_branches(self, cond: VelocityFn, uncond: Optional[VelocityFn]) -> tuple[VelocityFn, Optional[VelocityFn]]:
        """Cached (cond, uncond) velocity functions; cond must be called before uncond at each step."""
        def cond_fn(x, sigma):
            i = self._index(sigma)
            self.skip_now = self._decide(i, x)
            if self.skip_now:
                return self._reused("cond", x)
            v = cond(x, sigma)
            self._computed("cond", i, x, v)
            return v

        def uncond_fn(x, sigma):
            if self.skip_now and "uncond" in self.delta:
                return self._reused("uncond", x)
            v = uncond(x, sigma)
            self._computed("uncond", self._index(sigma) if self.config is not None else None, x, v)
            return v

        return cond_fn, (uncond_fn if uncond is not None else None)

    def wrap_pair(self, pair: Callable) -> Callable:
        """Cached batched pair (x, sigma) -> (v_cond, v_uncond): the cond half decides, both halves reuse their own."""
        def pair_fn(x, sigma):
            i = self._index(sigma)
            if self._decide(i, x) and "uncond" in self.delta:
                return self._reused("cond", x), self._reused("uncond", x)
            v_cond, v_uncond = pair(x, sigma)
            self._computed("cond", i, x, v_cond)
            self._computed("uncond", i, x, v_uncond)
            return v_cond, v_uncond

        return pair_fn

    # --- result -----------------------------------------------------------------------------------------------
    def report(self) -> dict:
        """{"dit_calls", "dit_skipped", "cache", per-branch counts, and "magcache_ratios" in calibrate mode}."""
        info = {"dit_calls": sum(self.calls.values()), "dit_skipped": sum(self.skipped.values()),
                "cache": self.config.describe() if self.config is not None else "off",
                "calls": dict(self.calls), "skipped": dict(self.skipped)}
        if self.config is not None and self.config.method == "calibrate":
            info["magcache_ratios"] = MagRatios.from_recorded(self.sig, self.recorded)
        return info

    def log_line(self) -> str:
        calls, skipped = sum(self.calls.values()), sum(self.skipped.values())
        total = calls + skipped
        speed = total / calls if calls else 1.0
        return (f"step cache {self.config.describe() if self.config else 'off'}: {calls} DiT calls made, "
                f"{skipped} skipped of {total} ({speed:.2f}x fewer)")


def start_cache(config: Optional[StepCacheConfig], sigmas: torch.Tensor) -> CacheRun:
    """The per-run cache state for one sampling run over `sigmas` (config None: count DiT calls only)."""
    if config is not None and not isinstance(config, StepCacheConfig):
        raise TypeError(f"cache must be a StepCacheConfig or None (got {type(config).__name__}); build one with "
                        "StepCacheConfig(...) or StepCacheConfig.parse('easycache:0.1')")
    return CacheRun(config, sigmas)



def cache_config(method: str, threshold: float, *, warmup: float = 0.2, max_skip: int = 4,
                 dit_path=None) -> StepCacheConfig:
    """A StepCacheConfig; for magcache the ratios come from `<dit_path>.magcache.json` (wan_core.magcache_ratios)."""
    config = StepCacheConfig(method=method, threshold=threshold, warmup=warmup, max_skip=max_skip)
    if method != "magcache":
        return config
    if dit_path is None:
        raise ValueError("magcache needs the model whose calibrated ratios it uses; connect the DiT (model input) or "
                         "use easycache, which needs no calibration")
    from .magcache_ratios import load_ratios

    return config.with_ratios(load_ratios(dit_path))
