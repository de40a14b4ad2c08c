"""An exponential moving average of a training run's weights (the weights diffusion models usually sample with).

`WeightEMA(modules, decay)` keeps an fp32 shadow of every parameter of `modules`; `update(modules, step)` moves it
towards the current weights after an optimizer step, and `copy_to(modules)` writes it into the modules (same order
and shapes).
The decay ramps up as min(decay, (1 + step) / (10 + step)), so the first steps of a run do not freeze the shadow at
its starting weights.
"""
from __future__ import annotations

import torch


class WeightEMA:
    def __init__(self, modules, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay} must lie strictly between 0 and 1 (e.g. 0.999: an average over about "
                             "the last 1000 steps); use 0 in the config to turn the average off")
        self.decay = decay
        self.shadow = [p.detach().float().clone() for m in modules for p in m.parameters()]

    def effective_decay(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, modules, step: int) -> None:
        params = [p.detach().float() for m in modules for p in m.parameters()]
        if len(params) != len(self.shadow):
            raise ValueError(f"EMA holds {len(self.shadow)} tensors but the modules have {len(params)}: pass the "
                             "same modules, in the same order, as when it was made")
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.effective_decay(step))

    @torch.no_grad()
    def copy_to(self, modules) -> None:
        params = [p for m in modules for p in m.parameters()]
        if len(params) != len(self.shadow) or any(p.shape != s.shape for p, s in zip(params, self.shadow)):
            raise ValueError("EMA shadow and modules differ in their parameters: pass the modules it was made from")
        for p, s in zip(params, self.shadow):
            p.copy_(s.to(p.dtype))
