"""Flow-matching ODE samplers as pure functions of (model_fn, x, sigmas) (P3).

UniPC and DPM++ 2M are reimplemented from reading huggingface/diffusers@58eb52c
schedulers/scheduling_unipc_multistep.py and scheduling_dpmsolver_multistep.py (Apache-2.0) and Wan-Video/Wan2.2@42bf4cf
wan/utils/fm_solvers_unipc.py / fm_solvers.py (Apache-2.0, themselves ports of diffusers); the structure follows
crowsonkb/k-diffusion sampling.py (MIT). No code copied. Parity: tests/test_sampling.py::test_unipc_matches_diffusers,
::test_dpmpp_2m_matches_diffusers (fp32, <= 1e-6).

Contract (docs/architecture.md):
- `model_fn(x, sigma) -> denoised x0` with x [B, C, T, H, W] and sigma a float32 [B] tensor on x.device.
  Build it from a velocity network with `FlowParam.wrap` (param.py) and `cfg_velocity_fn` (guidance.py).
- `sigmas`: 1-D float32 CPU tensor, strictly decreasing, in [0, 1], usually ending in 0 (schedules.py).
  Scalar coefficients are computed from it on the CPU in float32 with the reference's operation order (so the
  trajectory is bit-identical to diffusers / official Wan given the same sigmas) and applied to x as Python
  floats: no device sync per step, ~0.1 ms of CPU work per step.
- The state is only `x` and locals (multistep history); device and dtype come from x. Pass fp32 latents.
- `callback(payload)` is called once per model evaluation, before the update, with exactly
  {"i": step index, "x": the tensor the model was evaluated at, "sigma": float, "denoised": model_fn's output}.
  To stop sampling, raise from the callback (e.g. ComfyUI's interrupt exception): the exception propagates
  unchanged out of the sampler, no further model call is made, and nothing needs cleaning up.

Flow notation: alpha = 1 - sigma, lambda = log(alpha / sigma) (half log-SNR; +inf at sigma = 0, -inf at sigma = 1).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .noise import SEED_LIMIT, initial_noise

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[dict], None]]


def _sigma_list(sigmas: torch.Tensor) -> list[torch.Tensor]:
    """Validate a schedule; return it as 0-dim float32 CPU tensors (one host read for the whole run)."""
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        shape = tuple(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
        raise ValueError(f"sigmas must be a 1-D tensor with at least 2 entries (got {shape}); "
                         "build one with wan_core.schedules.flow_sigmas(steps, shift)")
    sig = sigmas.detach().to("cpu", torch.float32)
    vals = sig.tolist()
    if not all(0.0 <= s <= 1.0 for s in vals):
        raise ValueError(f"flow sigmas must lie in [0, 1] (got min {min(vals)}, max {max(vals)}); "
                         "these samplers are for flow-matching models such as Wan")
    if any(b >= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"sigmas must be strictly decreasing (got {vals[:4]}...); "
                         "remove repeated entries or reverse the schedule")
    return list(sig.unbind())


def _lambda(s: torch.Tensor) -> torch.Tensor:
    """Half log-SNR log(1 - s) - log(s) of a 0-dim sigma (+inf at 0, -inf at 1), in float32 like the reference."""
    return torch.log(1 - s) - torch.log(s)


def _check_x(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise ValueError(f"x must be a floating-point tensor [B, ...] (got {getattr(x, 'dtype', type(x))})")


def _sigma_batch(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), s.item(), dtype=torch.float32, device=x.device)  # [B]; fp32 keeps trunc(s*1000)


@torch.no_grad()
def sample_euler(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, *,
                 callback: Callback = None) -> torch.Tensor:
    """Euler steps on the probability-flow ODE dx/dsigma = (x - x0) / sigma (Karras et al. 2022, Alg. 1, no churn)."""
    _check_x(x)
    sig = [s.item() for s in _sigma_list(sigmas)]
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        denoised = model_fn(x, torch.full((x.shape[0],), s, dtype=torch.float32, device=x.device))  # sigma [B]
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": denoised})
        x = x + (x - denoised) * ((s_next - s) / s)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, *,
                    callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M), data prediction, midpoint, first order at the first and last step (Lu et al. 2022, Alg. 2)."""
    _check_x(x)
    sig = _sigma_list(sigmas)
    lam = [_lambda(s) for s in sig]
    n = len(sig) - 1
    old_denoised = None
    for i in range(n):
        s, s_next = sig[i], sig[i + 1]
        denoised = model_fn(x, _sigma_batch(s, x))
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s.item(), "denoised": denoised})
        h = lam[i + 1] - lam[i]
        coef = (1 - s_next) * (torch.exp(-h) - 1.0)  # alpha_t * (exp(-h) - 1)
        x_next = (s_next / s).item() * x - coef.item() * denoised
        if old_denoised is not None and i < n - 1:  # second order: D1 = (m0 - m1) / r0, r0 = h_prev / h
            r0 = (lam[i] - lam[i - 1]) / h
            x_next = x_next - (0.5 * coef).item() * ((1.0 / r0).item() * (denoised - old_denoised))
        x, old_denoised = x_next, denoised
    return x


def _unic_rhos(h: torch.Tensor, r: Optional[torch.Tensor]) -> tuple[float, float]:
    """UniC bh2 weights (rho on the history difference D1, rho on the new difference) for order 1 or 2."""
    if r is None:  # order 1 uses the fixed 0.5
        return 0.0, 0.5
    hh = -h  # x0-prediction
    b_h = torch.expm1(hh)  # bh2: B(h) = expm1(-h) = h * phi_1
    h_phi_k = b_h / hh - 1
    b1 = h_phi_k * 1 / b_h
    b2 = (h_phi_k / hh - 0.5) * 2 / b_h
    if not torch.isfinite(r):  # sigma = 1 in the history: r = -inf, the 2x2 system degenerates to rho = (0, b1)
        return 0.0, b1.item()
    one = torch.ones((), dtype=r.dtype)
    rho = torch.linalg.solve(torch.stack([torch.stack([one, one]), torch.stack([r, one])]), torch.stack([b1, b2]))
    return rho[0].item(), rho[1].item()


@torch.no_grad()
def sample_unipc(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, *,
                 callback: Callback = None) -> torch.Tensor:
    """UniPC-2 (bh2, x0-prediction, UniC corrector, order 1 at the first and last step) (Zhao et al. 2023)."""
    _check_x(x)
    sig = _sigma_list(sigmas)
    lam = [_lambda(s) for s in sig]
    n = len(sig) - 1
    m_prev = m_prev2 = x_prev = None  # history: m_{i-1}, m_{i-2}, x_{i-1} (the predictor's input)
    order_prev = 1
    for i in range(n):
        s = sig[i]
        denoised = model_fn(x, _sigma_batch(s, x))
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s.item(), "denoised": denoised})
        if m_prev is not None:  # UniC: correct x_i with the new x0 estimate, using the previous step's order
            h = lam[i] - lam[i - 1]
            r = (lam[i - 2] - lam[i - 1]) / h if order_prev == 2 else None
            rho_d, rho_new = _unic_rhos(h, r)
            coef = ((1 - s) * torch.expm1(-h)).item()  # alpha_t * h_phi_1 == alpha_t * B(h) for bh2
            x = (s / sig[i - 1]).item() * x_prev - coef * m_prev
            corr = rho_new * (denoised - m_prev)
            if r is not None:
                corr = rho_d * ((m_prev2 - m_prev) / r.item()) + corr
            x = x - coef * corr
        order = min(2, n - i, i + 1)  # warm-up at i = 0, lower order at the last step
        s_next = sig[i + 1]
        h = lam[i + 1] - lam[i]
        coef = ((1 - s_next) * torch.expm1(-h)).item()
        x_next = (s_next / s).item() * x - coef * denoised
        if order == 2:  # UniP-2 uses the fixed rho_p = 0.5 on D1 = (m_{i-1} - m_i) / r
            r = ((lam[i - 1] - lam[i]) / h).item()
            x_next = x_next - coef * (0.5 * ((m_prev - denoised) / r))
        x_prev, m_prev2, m_prev, order_prev = x, m_prev, denoised, order
        x = x_next
    return x


_STEP_SEED_MUL = 0x9E3779B97F4A7C15  # odd: step seeds differ from the initial-noise seed and from each other


def step_seed(seed: int, i: int) -> int:
    """The seed of the fresh noise drawn after step i of a stochastic sampler run with `seed` (never `seed` itself)."""
    return (seed + _STEP_SEED_MUL * (i + 1)) % SEED_LIMIT


@torch.no_grad()
def sample_lcm(model_fn: ModelFn, x: torch.Tensor, sigmas: torch.Tensor, *,
               callback: Callback = None, seed: int = 0) -> torch.Tensor:
    """Multistep consistency sampling: x0 estimate, re-noised to the next sigma (Song et al. 2023; Luo et al. 2023 LCM).

    x = (1 - s') x0 + s' noise with fresh noise per step from wan_core.noise (seeded CPU generator, step_seed), so a
    seed gives the same result on any device; the last step (s' = 0) returns the x0 estimate. The sampling of
    step-distilled models (FastWan DMD, Wan2.2-TI2V-5B-Turbo; ComfyUI's `lcm` sampler does the same update).
    """
    _check_x(x)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an int with 0 <= seed < 2**64 (got {seed!r}); the lcm sampler draws its "
                         "per-step noise from it")
    sig = [s.item() for s in _sigma_list(sigmas)]
    for i, (s, s_next) in enumerate(zip(sig, sig[1:])):
        denoised = model_fn(x, torch.full((x.shape[0],), s, dtype=torch.float32, device=x.device))  # sigma [B]
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": denoised})
        if s_next == 0.0:
            x = denoised
        else:
            noise = initial_noise(tuple(x.shape), step_seed(seed, i), device=x.device, dtype=x.dtype)
            x = (1.0 - s_next) * denoised + s_next * noise
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "unipc": sample_unipc,
    "euler": sample_euler,
    "dpm++2m": sample_dpmpp_2m,
    "lcm": sample_lcm,
}
STOCHASTIC = frozenset({"lcm"})  # samplers that take a keyword `seed` for their per-step noise


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler function registered under `name` (one of SAMPLERS)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
