"""Samplers, flow parameterisation, guidance and noise: parity with diffusers' schedulers on a toy flow model."""
from __future__ import annotations

import pytest
import torch

from wan_core.guidance import cfg_velocity, cfg_velocity_fn
from wan_core.noise import initial_noise
from wan_core.param import FlowParam
from wan_core.sampling import SAMPLERS, get_sampler, sample_dpmpp_2m, sample_euler, sample_unipc
from wan_core.schedules import flow_sigmas

SHAPE = (2, 4, 3, 6, 6)  # [B, C, T, H, W]


def toy_velocity_fn(seed: int = 0):
    """A fixed nonlinear velocity field v(x, sigma) [B,C,T,H,W] -> same, depending on sigma per sample."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(SHAPE[1], SHAPE[1], generator=g) / SHAPE[1] ** 0.5
    bias = torch.randn(1, SHAPE[1], 1, 1, 1, generator=g)

    def velocity(x, sigma):
        mixed = torch.einsum("oc,bcthw->bothw", w.to(x.dtype), x)
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1, 1)  # [B] -> [B,1,1,1,1]
        return torch.tanh(mixed) * (1.0 + s) + 0.5 * x - bias.to(x.dtype) * (1.0 - s)

    return velocity


def run_diffusers(scheduler, velocity, x, sigmas):
    """Drive a diffusers scheduler step by step with our sigmas (velocity output, flow_prediction)."""
    for i, t in enumerate(scheduler.timesteps):
        sigma = torch.full((x.shape[0],), float(sigmas[i]))
        x = scheduler.step(velocity(x, sigma), t, x, return_dict=False)[0]
    return x


def unipc_reference(sigmas):
    from diffusers import UniPCMultistepScheduler

    # flow_shift=1: our sigmas are already shifted and diffusers shifts custom sigmas again.
    sched = UniPCMultistepScheduler(solver_order=2, solver_type="bh2", predict_x0=True,
                                    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
                                    lower_order_final=True, final_sigmas_type="zero")
    sched.set_timesteps(sigmas=sigmas[:-1].double().numpy())
    sched.set_begin_index(0)
    assert torch.equal(sched.sigmas, sigmas), "diffusers did not take our sigmas verbatim"
    return sched


def dpm_reference(sigmas):
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                        lower_order_final=True, final_sigmas_type="zero")
    sched.set_timesteps(len(sigmas) - 1)
    sched.sigmas = sigmas.clone()  # its set_timesteps takes no custom sigmas; inject ours
    sched.set_begin_index(0)
    return sched


@pytest.mark.parametrize("kind,steps", [("official", n) for n in (1, 2, 3, 4, 10, 50)] + [("diffusers", 4),
                                                                                        ("diffusers", 50)])
def test_unipc_matches_diffusers(kind, steps):
    sigmas = flow_sigmas(steps, 5.0, kind=kind)
    velocity = toy_velocity_fn()
    x0 = initial_noise(SHAPE, 123)
    ref = run_diffusers(unipc_reference(sigmas), velocity, x0, sigmas)
    out = sample_unipc(FlowParam.wrap(velocity), x0, sigmas)
    err = (out - ref).abs().max().item()
    assert err <= 1e-6, f"UniPC vs diffusers, {steps} steps ({kind}): max abs err {err:.3g}, |x| {ref.abs().max():.2f}"


@pytest.mark.parametrize("kind,steps", [("official", n) for n in (1, 2, 4, 10, 50)] + [("official_dpm", 4),
                                                                                     ("official_dpm", 50)])
def test_dpmpp_2m_matches_diffusers(kind, steps):
    sigmas = flow_sigmas(steps, 5.0, kind=kind)
    velocity = toy_velocity_fn(1)
    x0 = initial_noise(SHAPE, 7)
    ref = run_diffusers(dpm_reference(sigmas), velocity, x0, sigmas)
    out = sample_dpmpp_2m(FlowParam.wrap(velocity), x0, sigmas)
    err = (out - ref).abs().max().item()
    assert torch.isfinite(out).all()
    assert err <= 1e-6, f"DPM++ 2M vs diffusers, {steps} steps ({kind}): max abs err {err:.3g}"


def test_unipc_from_sigma_one_is_finite_and_accurate():
    """The official DPM++ schedule starts at sigma = 1 (lambda = -inf); UniPC must stay finite there."""
    target = initial_noise(SHAPE, 3)
    out = sample_unipc(lambda x, s: target, initial_noise(SHAPE, 4), flow_sigmas(8, 5.0, kind="official_dpm"))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


def test_euler_converges_on_linear_ode():
    """Straight-line flow from noise to a fixed x0: Euler is exact; and with v = k*x it converges at first order."""
    target = initial_noise(SHAPE, 5)
    out = sample_euler(lambda x, s: target, initial_noise(SHAPE, 6), flow_sigmas(3, 5.0))
    torch.testing.assert_close(out, target, rtol=0, atol=1e-6)

    # dx/dsigma = k * x has the exact solution x(s) = x(s0) * exp(k * (s - s0)); denoised = x - s * k * x.
    k = 0.7
    x_init = initial_noise(SHAPE, 8)

    def model_fn(x, sigma):
        return FlowParam.denoised(x, sigma, k * x)

    def err(steps):
        sig = torch.linspace(1.0, 0.0, steps + 1)
        return (sample_euler(model_fn, x_init, sig) - x_init * torch.exp(torch.tensor(-k))).abs().max().item()

    e10, e20, e40 = err(10), err(20), err(40)
    assert e40 < e20 < e10 < 0.2
    assert 1.7 < e10 / e20 < 2.3 and 1.7 < e20 / e40 < 2.3, (e10, e20, e40)  # first order


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_oracle_model_recovers_x0(name):
    target = initial_noise(SHAPE, 11)
    noise = initial_noise(SHAPE, 12)
    x_init = FlowParam.noise_scaling(flow_sigmas(6, 5.0)[0].item(), noise, target)
    out = get_sampler(name)(lambda x, s: target, x_init, flow_sigmas(6, 5.0))
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_payload_and_stop(name):
    sigmas = flow_sigmas(5, 5.0)
    calls, seen = [], []

    def model_fn(x, sigma):
        calls.append(sigma)
        assert sigma.shape == (SHAPE[0],) and sigma.dtype == torch.float32
        return torch.zeros_like(x)

    get_sampler(name)(model_fn, initial_noise(SHAPE, 0), sigmas, callback=seen.append)
    assert len(seen) == len(calls) == 5
    assert all(set(p) == {"i", "x", "sigma", "denoised"} for p in seen)
    assert [p["i"] for p in seen] == list(range(5))
    assert [p["sigma"] for p in seen] == sigmas[:-1].tolist()
    assert all(p["x"].shape == SHAPE and p["denoised"].shape == SHAPE for p in seen)

    class Stop(Exception):
        pass

    def stop_at_2(payload):
        if payload["i"] == 2:
            raise Stop

    calls.clear()
    with pytest.raises(Stop):
        get_sampler(name)(model_fn, initial_noise(SHAPE, 0), sigmas, callback=stop_at_2)
    assert len(calls) == 3  # no model call after the callback raised


def test_samplers_follow_x_dtype_and_do_not_mutate_inputs():
    sigmas = flow_sigmas(4, 5.0)
    sig_copy = sigmas.clone()
    x = initial_noise(SHAPE, 1, dtype=torch.float64)
    x_copy = x.clone()
    for fn in SAMPLERS.values():
        out = fn(FlowParam.wrap(toy_velocity_fn()), x, sigmas)
        assert out.dtype == torch.float64 and out.device == x.device
    assert torch.equal(x, x_copy) and torch.equal(sigmas, sig_copy)


def test_bad_inputs_raise_clear_errors():
    x = initial_noise(SHAPE, 0)
    with pytest.raises(ValueError, match="choose one of"):
        get_sampler("heun")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_euler(lambda x, s: x, x, torch.tensor([0.5, 0.7, 0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample_euler(lambda x, s: x, x, torch.tensor([14.6, 1.0, 0.0]))
    with pytest.raises(ValueError, match="at least 2"):
        sample_unipc(lambda x, s: x, x, torch.tensor([0.0]))


def test_flow_param_round_trip():
    x0, noise = initial_noise(SHAPE, 1), initial_noise(SHAPE, 2)
    sigma = torch.tensor([0.3, 0.8])
    x = FlowParam.noise_scaling(sigma, noise, x0)
    v = noise - x0  # the flow velocity the DiT is trained to predict
    torch.testing.assert_close(FlowParam.denoised(x, sigma, v), x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(FlowParam.wrap(lambda x, s: v)(x, sigma), x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(FlowParam.inverse_noise_scaling(0.25, 0.75 * x0), x0)
    assert torch.equal(FlowParam.noise_scaling(0.0, noise, x0), x0)


def test_cfg_combines_in_fp32_and_scale_one_skips_uncond():
    x, sigma = initial_noise(SHAPE, 0), torch.tensor([0.5, 0.5])
    cond = lambda x, s: torch.full_like(x, 2.0, dtype=torch.bfloat16)  # noqa: E731
    uncond_calls = []

    def uncond(x, s):
        uncond_calls.append(1)
        return torch.full_like(x, 1.0, dtype=torch.bfloat16)

    v = cfg_velocity_fn(cond, uncond, 5.0)(x, sigma)
    assert v.dtype == torch.float32 and torch.all(v == 6.0) and len(uncond_calls) == 1
    v1 = cfg_velocity_fn(cond, uncond, 1.0)(x, sigma)
    assert len(uncond_calls) == 1 and torch.all(v1 == 2.0) and v1.dtype == torch.float32
    assert torch.all(cfg_velocity_fn(cond, None, 1)(x, sigma) == 2.0)
    assert torch.equal(cfg_velocity(torch.ones(2), torch.zeros(2), 3.0), torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="unconditional"):
        cfg_velocity_fn(cond, None, 5.0)
    with pytest.raises(ValueError, match="finite"):
        cfg_velocity_fn(cond, uncond, float("nan"))


def test_initial_noise_reproducible_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = initial_noise((1, 48, 2, 4, 4), 42)
    b = initial_noise((1, 48, 2, 4, 4), 42)
    c = initial_noise((1, 48, 2, 4, 4), 43)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(initial_noise((1, 48, 2, 4, 4), 42, dtype=torch.bfloat16), a.to(torch.bfloat16))
    assert initial_noise((3,), 2**64 - 1).shape == (3,)
    assert 0.9 < a.std().item() < 1.1
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            initial_noise((2,), bad)
    with pytest.raises(ValueError, match="shape"):
        initial_noise((2, 0), 1)
