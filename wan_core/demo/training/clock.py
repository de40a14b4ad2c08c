"""Step counts, time caps and the learning-rate schedule shared by the VAE phases and the DiT rounds."""
from __future__ import annotations

import logging
import math
import time

log = logging.getLogger(__name__)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


class Clock:
    """Stops a stage at its step count or its time cap, whichever comes first."""

    ESTIMATE_AT = 100

    def __init__(self, steps: int, minutes: float | None, name: str, replan: int = 0):
        self.steps, self.cap, self.name, self.t0 = steps, (minutes or 0) * 60 or None, name, time.perf_counter()
        self.replan = replan

    def plan(self, step: int) -> int:
        """Steps to schedule the learning rate over: the configured count, or fewer if the time cap allows fewer
        (estimated from the speed so far, once, at step ESTIMATE_AT; a busy machine then under-plans, so pass the
        step count explicitly, e.g. --dit-steps, when other work shares the cores)."""
        if step == self.ESTIMATE_AT and self.replan > 0:  # replaying a run whose time cap re-planned it here
            self.steps = self.replan
        elif step == self.ESTIMATE_AT and self.cap is not None:
            rate = self.elapsed / step
            fit = int(step + (self.cap - self.elapsed) / rate * 0.97)
            if fit < self.steps:
                log.warning("%s: %.2f s/step; scheduling %d steps instead of %d to fit the time cap",
                            self.name, rate, fit, self.steps)
                self.steps = fit
        return self.steps

    def done(self, step: int) -> bool:
        if step >= self.steps:
            return True
        if self.cap is not None and time.perf_counter() - self.t0 > self.cap:
            log.warning("%s: time cap reached after %d of %d steps", self.name, step, self.steps)
            return True
        return False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
