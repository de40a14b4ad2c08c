"""Flow-guided x0 smoothing: strength 0 is bit-identical; inside the window it lowers temporal error of x0."""
import pytest
import torch
import torch.nn.functional as F

from tests._temporal_synth import one_thread, translating_clip
from wan_core.sampling import sample_euler
from wan_core.temporal.flow import consecutive_flows, occlusion_mask, warp
from wan_core.temporal.guided import flow_smoothed, pca_preview, smooth_x0

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def latent_clip(seed=0, flicker=0.0, t=5, c=6):
    """A 'latent' [1, C, T, 24, 32]: a panning texture projected to C channels, plus low-frequency flicker."""
    g = torch.Generator().manual_seed(seed)
    rgb = translating_clip(t, h=24, w=32, dx=1.0, dy=0.5, seed=seed).permute(3, 0, 1, 2)  # [3, T, H, W]
    mix = torch.randn(c, 3, generator=g)
    lat = torch.einsum("kc,cthw->kthw", mix, rgb)[None]  # [1, C, T, H, W]
    if flicker:
        blobs = F.interpolate(torch.randn(1, c * t, 3, 4, generator=g), size=(24, 32), mode="bicubic")
        lat = lat + flicker * blobs.view(1, c, t, 24, 32)  # smooth per-frame perturbations
    return lat


def temporal_error(lat):
    """Masked mean squared difference of consecutive latent frames after flow compensation (frames 1..T-1)."""
    x = lat[0, :, 1:].permute(1, 0, 2, 3)  # [T', C, H, W]
    fw, bw = consecutive_flows(pca_preview(lat[:, :, 1:])[0].permute(1, 0, 2, 3))
    m = occlusion_mask(fw, bw)
    return (((x[:-1] - warp(x[1:], fw)) ** 2).mean(1, keepdim=True) * m).sum() / m.sum()


def test_strength_zero_is_the_same_model_fn_and_bit_identical():
    sigmas = torch.linspace(1, 0, 6)
    target = latent_clip()
    model_fn = lambda x, s: target + 0.1 * x  # noqa: E731
    assert flow_smoothed(model_fn, sigmas, strength=0.0) is model_fn
    x = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    a = sample_euler(model_fn, x, sigmas)
    b = sample_euler(flow_smoothed(model_fn, sigmas, strength=0.0), x, sigmas)
    assert torch.equal(a, b)


def test_smoothing_lowers_temporal_error_and_keeps_high_frequencies():
    noisy = latent_clip(flicker=0.4)
    out = smooth_x0(noisy, 0.8)
    before, after = temporal_error(noisy).item(), temporal_error(out).item()
    print(f"temporal error {before:.4f} -> {after:.4f}")
    assert after < 0.75 * before
    assert torch.equal(out[:, :, 0], noisy[:, :, 0])  # latent frame 0 is left alone
    diff = (out - noisy)[0].permute(1, 0, 2, 3)  # [T, C, H, W]
    high = diff - F.avg_pool2d(F.pad(diff, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    assert high.pow(2).mean() < 0.05 * diff.pow(2).mean()  # the change is low-frequency


def test_window_and_decay_inside_a_sampler():
    sigmas = torch.linspace(1, 0, 11)  # 10 steps
    target = latent_clip(flicker=0.4)
    seen = []

    def model_fn(x, s):
        return target.clone()

    wrapped = flow_smoothed(model_fn, sigmas, strength=0.5, start=0.2, end=0.6)
    for i, s in enumerate(sigmas[:-1].tolist()):
        out = wrapped(target, torch.full((1,), s))
        seen.append(not torch.equal(out, target))
    # active for sigma in (sigma[6], sigma[2]] = steps 2..5 only, zero weight at step 6 and later
    assert seen == [False, False, True, True, True, True, False, False, False, False]
    x = torch.randn(target.shape, generator=torch.Generator().manual_seed(2))
    result = sample_euler(wrapped, x, sigmas)
    assert torch.isfinite(result).all()


def test_flow_is_estimated_every_other_step_and_reused_between(monkeypatch):
    import wan_core.temporal.guided as guided

    sigmas = torch.linspace(1, 0, 11)
    target = latent_clip(flicker=0.4)
    calls = []
    real = guided.latent_flows
    monkeypatch.setattr(guided, "latent_flows", lambda *a, **k: calls.append(1) or real(*a, **k))
    outs = {}
    for every in (1, 2):
        calls.clear()
        wrapped = flow_smoothed(lambda x, s: target.clone(), sigmas, strength=0.5, start=0.2, end=0.6, flow_every=every)
        outs[every] = [wrapped(target, torch.full((1,), s)) for s in sigmas[:-1].tolist()]
        assert len(calls) == {1: 4, 2: 2}[every]  # 4 steps in the window
    for a, b in zip(outs[1], outs[2]):  # x0 is the same at every step, so reusing its flow changes nothing
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="flow_every"):
        flow_smoothed(lambda x, s: x, sigmas, strength=0.5, flow_every=0)


def test_validation():
    f = lambda x, s: x  # noqa: E731
    with pytest.raises(ValueError, match="strength"):
        flow_smoothed(f, torch.linspace(1, 0, 5), strength=2.0)
    with pytest.raises(ValueError, match="start < end"):
        flow_smoothed(f, torch.linspace(1, 0, 5), strength=0.5, start=0.7, end=0.3)
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        smooth_x0(torch.zeros(1, 4, 8, 8), 0.5)
