"""Step caching (wan_core.step_cache): threshold 0 is the uncached run exactly, warm-up and last steps always run,
the cond branch decides and each branch reuses its own residual, MagCache reuse counts, calibration, the node."""
import math

import pytest
import torch

from tests.tiny_models import tiny_dit_state_dict
from wan_core.guidance import cfg_velocity, cfg_velocity_fn
from wan_core.magcache_ratios import MagRatios, load_ratios, save_ratios, sidecar
from wan_core.model import WanTransformer
from wan_core.noise import initial_noise
from wan_core.param import FlowParam
from wan_core.pipeline import sample_latents
from wan_core.sampling import get_sampler
from wan_core.schedules import flow_sigmas
from wan_core.step_cache import StepCacheConfig, cache_config, start_cache

SHAPE = (1, 4, 3, 4, 4)
N_STEPS = 20


def branches(log):
    """Toy cond / uncond velocities (smooth in x and sigma) that log (branch, sigma) per real call."""
    w = initial_noise(SHAPE, 5)

    def cond(x, sigma):
        log.append(("cond", float(sigma[0])))
        return torch.tanh(x) * (1 + sigma.view(-1, 1, 1, 1, 1)) + w

    def uncond(x, sigma):
        log.append(("uncond", float(sigma[0])))
        return 0.5 * x - w * sigma.view(-1, 1, 1, 1, 1)

    return cond, uncond


def run(config, sampler="euler", steps=N_STEPS, pair=False):
    log = []
    cond, uncond = branches(log)
    sigmas = flow_sigmas(steps, 3.0)
    cache = start_cache(config, sigmas)
    if pair:
        both = cache.wrap_pair(lambda x, s: (cond(x, s), uncond(x, s)))

        def velocity(x, s):
            return cfg_velocity(*both(x, s), 3.0)
    else:
        velocity = cfg_velocity_fn(*cache.wrap_branches(cond, uncond), 3.0)
    out = get_sampler(sampler)(FlowParam.wrap(velocity), initial_noise(SHAPE, 1), sigmas)
    return out, cache.report(), log, sigmas


@pytest.mark.parametrize("method", ["easycache", "magcache"])
@pytest.mark.parametrize("sampler", ["euler", "unipc"])
def test_threshold_zero_equals_uncached_exactly(method, sampler):
    plain, info, _, sigmas = run(None, sampler)
    ratios = MagRatios(tuple(sigmas[:-1].tolist()), (1.0,) * N_STEPS)
    cached, cinfo, _, _ = run(StepCacheConfig(method=method, threshold=0.0, ratios=ratios), sampler)
    assert torch.equal(cached, plain)
    assert info["dit_calls"] == cinfo["dit_calls"] == 2 * N_STEPS and cinfo["dit_skipped"] == 0


def test_easycache_warmup_last_step_and_cond_decides():
    plain, _, _, sigmas = run(None)
    out, info, log, _ = run(StepCacheConfig(method="easycache", threshold=0.5, warmup=0.2))
    computed = [s for b, s in log if b == "cond"]
    sig = sigmas[:-1].tolist()
    assert computed[:4] == pytest.approx(sig[:4]) and computed[-1] == pytest.approx(sig[-1])  # warm-up, last
    assert [s for b, s in log if b == "uncond"] == computed  # uncond runs exactly where cond runs
    assert info["dit_skipped"] > 0 and info["dit_calls"] + info["dit_skipped"] == 2 * N_STEPS
    assert info["skipped"]["cond"] == info["skipped"]["uncond"]
    assert 0 < (out - plain).abs().max() < 0.2 * plain.abs().max()  # close to, not equal to, the uncached run


def test_each_branch_reuses_its_own_residual():
    log = []
    cond, uncond = branches(log)
    sigmas = flow_sigmas(10, 3.0)
    run_ = start_cache(StepCacheConfig(method="magcache", threshold=10.0, warmup=0.0, max_skip=0,
                                       ratios=MagRatios(tuple(sigmas[:-1].tolist()), (1.0,) * 10)), sigmas)
    c, u = run_.wrap_branches(cond, uncond)
    x0 = initial_noise(SHAPE, 2)
    s0, s1 = sigmas[0].repeat(1), sigmas[1].repeat(1)
    vc, vu = c(x0, s0), u(x0, s0)  # step 0 computed
    x1 = initial_noise(SHAPE, 3)
    rc, ru = c(x1, s1), u(x1, s1)  # step 1 reused
    assert len(log) == 2
    torch.testing.assert_close(rc, x1 + (vc - x0)) and torch.testing.assert_close(ru, x1 + (vu - x0))
    assert not torch.allclose(rc, ru)


def test_magcache_reuse_counts_follow_max_skip():
    sigmas = flow_sigmas(N_STEPS, 3.0)
    ratios = MagRatios(tuple(sigmas[:-1].tolist()), (1.0,) * N_STEPS)
    _, info, _, _ = run(StepCacheConfig(method="magcache", threshold=0.1, warmup=0.2, max_skip=2, ratios=ratios))
    # steps 0-3 warm-up, then (skip, skip, compute) x 5 over steps 4-18, step 19 computed
    assert info["skipped"] == {"cond": 10, "uncond": 10} and info["calls"] == {"cond": 10, "uncond": 10}
    steep = MagRatios(ratios.sigmas, (1.0,) + (0.8,) * (N_STEPS - 1))  # |1 - R| = 0.2 > 0.1 at once: never reuse
    _, info, _, _ = run(StepCacheConfig(method="magcache", threshold=0.1, ratios=steep))
    assert info["dit_skipped"] == 0


def test_batched_pair_makes_the_same_decisions():
    config = StepCacheConfig(method="easycache", threshold=0.5)
    a, ia, _, _ = run(config)
    b, ib, _, _ = run(config, pair=True)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert ia["calls"] == ib["calls"] and ia["skipped"] == ib["skipped"]


def test_calibration_records_ratios_and_reschedules(tmp_path):
    _, info, _, sigmas = run(StepCacheConfig(method="calibrate"))
    ratios = info["magcache_ratios"]
    assert len(ratios.cond) == len(ratios.uncond) == N_STEPS and ratios.cond[0] == 1.0
    assert all(math.isfinite(r) and r > 0 for r in ratios.cond) and info["dit_skipped"] == 0
    assert ratios.for_schedule(sigmas.tolist()) == pytest.approx(list(ratios.cond), rel=1e-9)
    coarse = sigmas[:-1][::4].tolist() + [0.0]  # every 4th sigma: each coarse ratio is the product of the fine ones
    fine_products = [math.prod(ratios.cond[i + 1:i + 5]) for i in range(0, N_STEPS - 4, 4)]
    assert ratios.for_schedule(coarse)[1:] == pytest.approx(fine_products, rel=1e-9)
    path = save_ratios(ratios, sidecar(tmp_path / "dit.safetensors"))
    assert path.name == "dit.safetensors.magcache.json" and load_ratios(tmp_path / "dit.safetensors") == MagRatios(
        tuple(round(s, 7) for s in ratios.sigmas), tuple(round(r, 6) for r in ratios.cond),
        tuple(round(r, 6) for r in ratios.uncond))
    with pytest.raises(ValueError, match="--cache calibrate"):
        load_ratios(tmp_path / "other.safetensors")


def test_config_parsing_and_errors():
    assert StepCacheConfig.parse("off") is None
    assert StepCacheConfig.parse("easycache:0.2") == StepCacheConfig(method="easycache", threshold=0.2)
    assert StepCacheConfig.parse("magcache").threshold == 0.1
    with pytest.raises(ValueError, match="unknown --cache method 'teacache'"):
        StepCacheConfig.parse("teacache:0.1")
    with pytest.raises(ValueError, match="not a number"):
        StepCacheConfig.parse("easycache:fast")
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        StepCacheConfig(threshold=-1)
    with pytest.raises(ValueError, match="calibrated magnitude ratios"):
        start_cache(StepCacheConfig(method="magcache"), flow_sigmas(4, 3.0))
    with pytest.raises(ValueError, match="connect the DiT"):
        cache_config("magcache", 0.1)


def test_demo_model_ships_its_ratios():
    from wan_core.model_files import resolve_inputs

    ratios = load_ratios(resolve_inputs(None).dit)
    assert len(ratios.cond) == 50 and ratios.uncond is not None and ratios.model.startswith("wan2.2_tiny_demo")


@pytest.fixture(scope="module")
def dit():
    return WanTransformer.from_state_dict(tiny_dit_state_dict())


def test_sample_latents_info_and_i2v(dit):
    g = torch.Generator().manual_seed(5)
    cond, uncond = torch.randn(1, 4, 32, generator=g), torch.randn(1, 4, 32, generator=g)
    latent = torch.zeros(1, 48, 3, 8, 8)
    image = torch.randn(1, 48, 1, 8, 8, generator=g)
    kw = dict(seed=3, steps=8, cfg=4.0, shift=3.0, sampler="unipc", image_latent=image, return_info=True)
    plain, info = sample_latents(dit, cond, uncond, latent, **kw)
    same, _ = sample_latents(dit, cond, uncond, latent, cache=StepCacheConfig(threshold=0.0), **kw)
    fast, finfo = sample_latents(dit, cond, uncond, latent, cache=StepCacheConfig(threshold=5.0), **kw)
    assert torch.equal(same, plain) and info["dit_calls"] == 16 and info["cache"] == "off"
    assert finfo["dit_skipped"] > 0 and finfo["dit_calls"] + finfo["dit_skipped"] == 16
    assert torch.equal(fast[:, :, :1], image) and torch.isfinite(fast).all()


def test_step_cache_node_plugs_into_sampler_options():
    from nodes import NODE_CLASS_MAPPINGS as N
    from nodes.sampling import SamplerOptions

    base = SamplerOptions(model_wrappers=("w",))
    out = N["WanT2VStepCache"]().options("easycache", 0.15, 0.3, options=base)[0]
    assert out.model_wrappers == ("w",) and out.step_cache == StepCacheConfig(threshold=0.15, warmup=0.3)
    with pytest.raises(ValueError, match="connect the DiT"):
        N["WanT2VStepCache"]().options("magcache", 0.1, 0.2)
