"""MagCache magnitude ratios of one model: recorded by a `calibrate` run, stored as a small JSON next to the DiT.

A ratio r_i = mean over tokens of |d_i| / |d_{i-1}| (d = DiT output - input, wan_core.step_cache) belongs to the
step from sigma_{i-1} to sigma_i of the calibration schedule. To use a table on another schedule (other step count,
shift or sampler), the cumulative log-magnitude L(sigma) = sum of log r up to sigma is interpolated linearly in
sigma and each new step gets exp(L(sigma_i) - L(sigma_{i-1})); MagCache's own code interpolates the per-step list
by nearest index instead, which ignores that fewer steps change more per step.

File: `<dit file>.magcache.json` = {"format": "wan_core.magcache/1", "model": name, "sigmas": [...],
"cond": [...], "uncond": [...] or null}; one ratio per sigma of the schedule (the first is 1).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

FORMAT = "wan_core.magcache/1"
SUFFIX = ".magcache.json"


@dataclass(frozen=True)
class MagRatios:
    """Calibrated ratios on a schedule: sigmas [n] (without the final 0), cond [n], uncond [n] or None."""

    sigmas: tuple[float, ...]
    cond: tuple[float, ...]
    uncond: Optional[tuple[float, ...]] = None
    model: str = ""

    def __post_init__(self):
        n = len(self.sigmas)
        if n < 2 or len(self.cond) != n or (self.uncond is not None and len(self.uncond) != n):
            raise ValueError(f"magcache ratios need one ratio per sigma (got {n} sigmas, {len(self.cond)} cond, "
                             f"{None if self.uncond is None else len(self.uncond)} uncond ratios); recalibrate")
        if any(b >= a for a, b in zip(self.sigmas, self.sigmas[1:])):
            raise ValueError("magcache ratio sigmas must be strictly decreasing; recalibrate")
        if not all(math.isfinite(r) and r > 0 for r in self.cond + (self.uncond or ())):
            raise ValueError("magcache ratios must be finite and > 0; recalibrate")

    def for_schedule(self, sigmas: Sequence[float]) -> list[float]:
        """Per-step cond ratios for a schedule [steps + 1] (ending in 0): entry i is the change into step i."""
        cal = np.asarray(self.sigmas, dtype=np.float64)[::-1]  # increasing, for np.interp
        cum = np.cumsum(np.log(np.asarray(self.cond, dtype=np.float64)))[::-1]
        level = np.interp(np.asarray(sigmas[:-1], dtype=np.float64), cal, cum)  # clamped outside the range
        return [1.0] + [float(r) for r in np.exp(np.diff(level))]

    @classmethod
    def from_recorded(cls, sigmas: Sequence[float], recorded: dict, model: str = "") -> "MagRatios":
        """From a calibrate run's (step, ratio) lists per branch over `sigmas` [steps + 1]."""
        n = len(sigmas) - 1

        def table(pairs):
            out = [1.0] * n
            for i, r in pairs:
                out[i] = r
            return tuple(out)

        uncond = table(recorded["uncond"]) if recorded.get("uncond") else None
        return cls(tuple(float(s) for s in sigmas[:-1]), table(recorded["cond"]), uncond, model)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "model": self.model, "sigmas": [round(s, 7) for s in self.sigmas],
                           "cond": [round(r, 6) for r in self.cond],
                           "uncond": None if self.uncond is None else [round(r, 6) for r in self.uncond]}, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "") -> "MagRatios":
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r} is not {FORMAT!r}")
            return cls(tuple(data["sigmas"]), tuple(data["cond"]),
                       None if data.get("uncond") is None else tuple(data["uncond"]), data.get("model", ""))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{where or 'magcache ratios'}: not a valid ratio file ({e}); recalibrate with "
                             "--cache calibrate") from None


def sidecar(dit_path) -> Path:
    """`<dit file>.magcache.json` (for a folder or sharded index: next to it)."""
    p = Path(dit_path)
    return p.with_name(p.name + SUFFIX)


def load_ratios(dit_path) -> MagRatios:
    """The ratios calibrated for this DiT file; raises with the calibration command when there are none."""
    path = sidecar(dit_path)
    if not path.is_file():
        raise ValueError(f"magcache needs ratios calibrated for {Path(dit_path).name}, but {path.name} does not "
                         "exist; record them once with `python -m wan_core generate PROMPT --cache calibrate` "
                         "(same model files), or use --cache easycache, which needs no calibration")
    return MagRatios.from_json(path.read_text(encoding="utf-8"), str(path))


def save_ratios(ratios: MagRatios, path) -> Path:
    """Write atomically (temporary file + rename): a failed write leaves no half file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(ratios.to_json() + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
