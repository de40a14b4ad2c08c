"""The lcm sampler: x0 estimate re-noised to the next sigma with fresh, seeded, device-independent noise."""
import pytest
import torch

from tests.tiny_models import tiny_dit_state_dict
from wan_core.model import WanTransformer
from wan_core.noise import initial_noise
from wan_core.pipeline import sample_latents
from wan_core.sampling import STOCHASTIC, sample_lcm, step_seed

SHAPE = (1, 4, 3, 4, 4)


def test_formula_and_last_step_returns_x0():
    sigmas = torch.tensor([1.0, 0.6, 0.3, 0.0])
    target = initial_noise(SHAPE, 1)
    seen = []
    out = sample_lcm(lambda x, s: target * (1 + s.view(-1, 1, 1, 1, 1)), initial_noise(SHAPE, 2), sigmas,
                     callback=seen.append, seed=7)
    x0_first = target * 2.0  # model output at sigma 1
    want = 0.4 * x0_first + 0.6 * initial_noise(SHAPE, step_seed(7, 0))
    torch.testing.assert_close(seen[1]["x"], want, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, target * 1.3, rtol=0, atol=1e-6)  # sigma 0.3 -> 0: the x0 estimate itself


def test_seeded_reproducible_and_global_rng_untouched():
    sigmas = torch.tensor([1.0, 0.7, 0.4, 0.0])
    x = initial_noise(SHAPE, 3)
    state = torch.random.get_rng_state()
    a = sample_lcm(lambda x, s: 0.5 * x, x, sigmas, seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, sample_lcm(lambda x, s: 0.5 * x, x, sigmas, seed=11))
    assert not torch.equal(a, sample_lcm(lambda x, s: 0.5 * x, x, sigmas, seed=12))
    seeds = {step_seed(11, i) for i in range(100)}
    assert len(seeds) == 100 and 11 not in seeds  # fresh noise every step, never the initial noise again


def test_sample_latents_passes_the_seed_and_keeps_the_start_image():
    assert "lcm" in STOCHASTIC
    dit = WanTransformer.from_state_dict(tiny_dit_state_dict())
    g = torch.Generator().manual_seed(5)
    ctx = torch.randn(1, 4, 32, generator=g)
    latent = torch.zeros(1, 48, 3, 8, 8)
    sig = torch.tensor([1.0, 0.94, 0.845, 0.0])

    def run(seed, **kw):
        return sample_latents(dit, ctx, None, latent, seed=seed, cfg=1.0, sampler="lcm", sigmas=sig, **kw)

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    image = torch.randn(1, 48, 1, 8, 8, generator=g)
    out = run(1, image_latent=image)
    assert torch.equal(out[:, :, :1], image) and not torch.equal(out[:, :, 1:], run(1)[:, :, 1:])


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5])
def test_bad_seed_is_refused(bad):
    with pytest.raises(ValueError, match="seed must be an int"):
        sample_lcm(lambda x, s: x, initial_noise(SHAPE, 0), torch.tensor([1.0, 0.5, 0.0]), seed=bad)
