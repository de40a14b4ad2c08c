"""Flow-matching noise schedules: sigma in [0, 1], x_sigma = (1 - sigma) * x0 + sigma * noise.

Reimplemented from reading Wan-Video/Wan2.2@42bf4cf wan/utils/fm_solvers_unipc.py and fm_solvers.py
(`get_sampling_sigmas`) and huggingface/diffusers@58eb52c schedulers/scheduling_unipc_multistep.py (Apache-2.0);
no code copied. Parity: tests/test_schedules.py (spec table, diffusers `set_timesteps`).

Three kinds of schedule (all end in an appended 0 and are float32 on the CPU):
- "official": Wan's UniPC schedule (the default sampler). Raw sigmas linspace(float32(0.999), 0, steps + 1)
  without the last entry, then shifted. First sigma 0.9997998 at steps=50, shift=5.
- "diffusers": diffusers' `UniPCMultistepScheduler(use_flow_sigmas=True)`. Raw sigmas linspace(1, 0.001,
  steps + 1) without the last entry, shifted, then 1e-6 subtracted from sigma0 (it would be exactly 1).
- "official_dpm": Wan's `--sample_solver dpm++` schedule, which differs from "official": raw sigmas
  linspace(1, 0, steps + 1) without the last entry, shifted, so it starts at exactly sigma = 1 (t = 1000).
  Use it with sample_dpmpp_2m to reproduce Wan's dpm++ path (all samplers handle sigma = 1, i.e. lambda = -inf).
Like upstream, the raw sigmas and the shift are computed in float64 and cast to float32 at the end.

Timesteps: upstream feeds the DiT int64(sigma64 * 1000), truncating the float64 sigma; we only have the float32
sigma at model time (`sigma_to_timestep`). Where float64 lands just below an integer (e.g. 0.7999999999 -> 799)
float32 rounds up to it (800). `flow_sigmas` therefore moves such a sigma by one float32 ulp (~6e-8) so that
trunc(float32(sigma) * 1000) reproduces upstream's integer exactly. This never happens for the "official" kind
and for "diffusers" with shift >= 3 (bit-identical to upstream there); it matters for "official_dpm" and shift 1.
"""
from __future__ import annotations

import math

import torch

KINDS = ("official", "diffusers", "official_dpm")
NUM_TRAIN_TIMESTEPS = 1000  # the DiT was trained on t = sigma * 1000
OFFICIAL_SIGMA_MAX = 0.9990000128746033  # float32(0.999): Wan's training sigmas are 1 - linspace(1, 1/1000, 1000)
DIFFUSERS_SIGMA0_EPS = 1e-6  # diffusers keeps sigma0 below 1 so log(alpha) stays finite in UniPC


def shift_sigma(s, shift: float):
    """Timestep shift of a flow sigma (float or tensor): shift * s / (1 + (shift - 1) * s); 1 is the identity."""
    if not shift > 0:
        raise ValueError(f"shift must be > 0 (got {shift}); Wan2.2 TI2V-5B uses 5.0")
    return shift * s / (1 + (shift - 1) * s)


def _linspace64(start: float, stop: float, n: int) -> torch.Tensor:
    # numpy.linspace's formula (start + i * step, last entry exactly `stop`) so values match upstream bit for bit.
    out = torch.arange(n, dtype=torch.float64) * ((stop - start) / (n - 1)) + start
    out[-1] = stop
    return out


def _raw_sigmas(steps: int, shift: float, kind: str) -> torch.Tensor:
    """Shifted float64 sigmas [steps], without the final 0."""
    if kind == "official":
        raw = _linspace64(OFFICIAL_SIGMA_MAX, 0.0, steps + 1)[:-1]
    elif kind == "diffusers":
        raw = _linspace64(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1)[:-1]
    elif kind == "official_dpm":
        raw = _linspace64(1.0, 0.0, steps + 1)[:-1]
    else:
        raise ValueError(f"unknown schedule kind {kind!r}; choose one of {KINDS}")
    sig = shift_sigma(raw, shift)
    if kind == "diffusers" and abs(float(sig[0]) - 1.0) < DIFFUSERS_SIGMA0_EPS:
        sig[0] -= DIFFUSERS_SIGMA0_EPS
    return sig


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (got {steps!r}); Wan's default is 50")


def flow_sigmas(steps: int, shift: float, *, kind: str = "official") -> torch.Tensor:
    """Shifted flow sigmas: float32 CPU tensor [steps + 1], decreasing, ending in 0 (kinds: see module doc)."""
    _check_steps(steps)
    sig64 = _raw_sigmas(steps, shift, kind)
    sig = sig64.to(torch.float32)
    t_ref = (sig64 * NUM_TRAIN_TIMESTEPS).to(torch.int64)  # what upstream feeds the model
    for _ in range(4):  # one ulp is always enough in practice; bounded anyway
        t = sigma_to_timestep(sig).to(torch.int64)
        if torch.equal(t, t_ref):
            break
        toward = torch.where(t > t_ref, torch.zeros_like(sig), torch.ones_like(sig))
        sig = torch.where(t != t_ref, torch.nextafter(sig, toward), sig)
    return torch.cat([sig, sig.new_zeros(1)])


def flow_timesteps(steps: int, shift: float, *, kind: str = "official") -> torch.Tensor:
    """The integer model timesteps upstream feeds the DiT: int64(sigma * 1000) from the float64 sigmas, [steps]."""
    _check_steps(steps)
    return (_raw_sigmas(steps, shift, kind) * NUM_TRAIN_TIMESTEPS).to(torch.int64)


def sigma_to_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """Model timestep trunc(sigma * 1000) as a float tensor of sigma's dtype (sigma in [0, 1], any shape/device).

    The product is rounded to float32 before truncation. Upstream truncates the float64 sigma instead; the two
    agree on every step of the shipped schedules (tests/test_schedules.py checks 1..100 steps, several shifts).
    """
    t = sigma.to(torch.float32) * NUM_TRAIN_TIMESTEPS
    return torch.trunc(t).to(sigma.dtype if sigma.is_floating_point() else torch.float32)


def denoise_sigmas(sigmas: torch.Tensor, denoise: float) -> torch.Tensor:
    """img2img-style partial schedule: the last round(steps * denoise) steps of `sigmas` (ComfyUI's denoise).

    `sigmas` is a full schedule [steps + 1] ending in 0; returns [round(steps * denoise) + 1], also ending in 0.
    denoise = 1 returns the schedule unchanged; a denoise so small that no step is left raises.
    """
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D schedule with at least 2 entries (got shape {tuple(sigmas.shape)})")
    if not (isinstance(denoise, (int, float)) and math.isfinite(denoise) and 0.0 < denoise <= 1.0):
        raise ValueError(f"denoise must be in (0, 1] (got {denoise!r}); use 1.0 for text-to-video from pure noise")
    steps = sigmas.numel() - 1
    keep = round(steps * denoise)
    if keep < 1:
        raise ValueError(f"denoise={denoise} keeps no step of a {steps}-step schedule; "
                         f"use denoise >= {0.5 / steps:.4g} or more steps")
    return sigmas[-(keep + 1):].clone()


def step_window(sigmas: torch.Tensor, start: float, end: float) -> tuple[float, float]:
    """(sigma_hi, sigma_lo) bounding the fractions [start, end) of a schedule: active when lo < sigma <= hi.

    sigmas is the sampler's schedule (1-D, decreasing, usually ending in 0); fractions count steps.
    """
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"need 0 <= start < end <= 1 as fractions of the schedule (got start={start}, end={end})")
    sig = sigmas.detach().to("cpu", torch.float64).flatten().tolist()
    if len(sig) < 2:
        raise ValueError(f"sigmas must hold at least 2 entries (got {len(sig)})")
    n = len(sig) - 1
    hi, lo = sig[round(start * n)], sig[round(end * n)]
    if not hi > lo:
        raise ValueError(f"the window [{start}, {end}] of this {n}-step schedule holds no step (sigma {hi} .. {lo}); "
                         "widen it or use more steps")
    return hi, lo
