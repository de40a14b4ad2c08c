"""Enhance-A-Video gain: the closed form matches an explicit per-position computation; weight 0 is bit-identical
sampling; weight > 0 changes the output of a tiny random DiT without changing shapes; the step window gates it."""
import pytest
import torch

from tests._temporal_synth import one_thread
from tests.tiny_models import tiny_dit_state_dict
from wan_core.model import DiTHooks, WanTransformer
from wan_core.pipeline import sample_latents
from wan_core.temporal import enhance
from wan_core.temporal.enhance import (cross_frame_intensity, enhance_a_video, enhance_gain, enhance_hook,
                                       step_window)

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)  # small kernels: no OpenMP contention


def explicit_cfi(q, k, grid):
    """Reference: build every F x F temporal map, zero the diagonal, average the off-diagonal entries."""
    f, h, w = grid
    b, _, n, d = q.shape
    out = []
    for bi in range(b):
        vals = []
        for s in range(h * w):
            for hd in range(n):
                qs = q[bi, s::h * w, hd].double()  # [F, D] the positions of one spatial token over frames
                ks = k[bi, s::h * w, hd].double()
                a = torch.softmax(qs @ ks.T / d ** 0.5, dim=-1)  # [F, F]
                vals.append((a.sum() - a.diagonal().sum()) / (f * f - f))
        out.append(torch.stack(vals).mean())
    return torch.stack(out)


def qk(b=2, grid=(4, 3, 5), n=2, d=16, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    length = grid[0] * grid[1] * grid[2]
    return (scale * torch.randn(b, length, n, d, generator=g), scale * torch.randn(b, length, n, d, generator=g))


def test_intensity_matches_explicit_maps_and_is_per_sample():
    q, k = qk(scale=2.0)
    ours = cross_frame_intensity(q, k, (4, 3, 5))
    ref = explicit_cfi(q, k, (4, 3, 5))
    assert ours.shape == (2,) and ours.dtype == torch.float32
    assert torch.allclose(ours.double(), ref, atol=1e-6), (ours, ref)
    assert not torch.allclose(ours[0], ours[1])  # each sample gets its own intensity


def test_chunking_does_not_change_the_result(monkeypatch):
    q, k = qk(grid=(3, 4, 4))
    full = cross_frame_intensity(q, k, (3, 4, 4))
    monkeypatch.setattr(enhance, "CHUNK_ELEMENTS", 5 * 2 * 2 * 3 * 16)  # 16 positions -> chunks of 5, 5, 5, 1
    assert torch.allclose(cross_frame_intensity(q, k, (3, 4, 4)), full, atol=1e-7)


def test_gain_closed_forms():
    f = 4
    q = torch.zeros(1, f * 6, 2, 8)  # zero queries: uniform temporal attention, CFI = 1/F
    k = torch.randn(1, f * 6, 2, 8)
    assert torch.allclose(cross_frame_intensity(q, k, (f, 2, 3)), torch.tensor([1 / f]))
    assert torch.allclose(enhance_gain(q, k, (f, 2, 3), 2.0), torch.tensor([1 + 2.0 / f]))
    # each frame attends only to itself (orthogonal per-frame keys, large queries): CFI ~ 0, gain clamped to 1
    basis = torch.eye(8)[:f].repeat_interleave(6, dim=0)  # [F*6, 8] frame f -> unit vector e_f
    own = (50 * basis)[None, :, None].expand(1, f * 6, 2, 8)
    assert cross_frame_intensity(own, own, (f, 2, 3)).item() < 1e-6
    assert torch.equal(enhance_gain(own, own, (f, 2, 3), 3.0), torch.ones(1))
    # a single latent frame: no temporal map, gain 1
    assert torch.equal(enhance_gain(q[:, :6], k[:, :6], (1, 2, 3), 2.0), torch.ones(1))


def test_hook_scales_the_attention_output_per_sample():
    q, k = qk(scale=0.1)
    out = torch.randn(2, 60, 2, 16, dtype=torch.bfloat16)
    got = enhance_hook(2.0)(0, q, k, k, out, (4, 3, 5))
    gain = enhance_gain(q, k, (4, 3, 5), 2.0)
    assert got.shape == out.shape and got.dtype == out.dtype
    assert (gain > 1).all()
    assert torch.equal(got, out * gain.to(out.dtype).view(-1, 1, 1, 1))
    assert enhance_hook(0.0)(0, q, k, k, out, (4, 3, 5)) is out


@pytest.fixture(scope="module")
def dit():
    return WanTransformer.from_state_dict(tiny_dit_state_dict())


def _run(dit, **kw):
    g = torch.Generator().manual_seed(5)
    cond, uncond = torch.randn(1, 4, 32, generator=g), torch.randn(1, 4, 32, generator=g)
    latent = torch.zeros(1, 48, 3, 8, 8)  # grid (3, 4, 4)
    return sample_latents(dit, cond, uncond, latent, seed=3, steps=4, cfg=4.0, shift=3.0, sampler="euler", **kw)


def test_weight_zero_is_bit_identical_and_positive_weight_changes_the_sample(dit):
    assert enhance_a_video(0.0) == (None, None)
    plain = _run(dit)
    wrap, hooks = enhance_a_video(0.0, start=0.2, end=0.5)
    assert torch.equal(_run(dit, hooks=hooks, model_wrappers=()), plain)
    wrap, hooks = enhance_a_video(4.0)
    assert wrap is None and isinstance(hooks, DiTHooks)
    boosted = _run(dit, hooks=hooks)
    assert boosted.shape == plain.shape and torch.isfinite(boosted).all()
    assert not torch.allclose(boosted, plain, atol=1e-4)


def test_step_window_gates_the_hook(dit):
    calls = []
    wrap, hooks = enhance_a_video(4.0, start=0.25, end=0.75)
    inner = hooks.self_attn

    def spy(i, q, k, v, out, grid):
        new = inner(i, q, k, v, out, grid)
        calls.append(new is not out)
        return new

    windowed = _run(dit, hooks=DiTHooks(self_attn=spy), model_wrappers=(wrap,))
    # 4 steps x (cond + uncond) x 2 blocks = 16 hook calls; steps 1 and 2 (of 0..3) are inside [0.25, 0.75)
    assert calls == [False] * 4 + [True] * 8 + [False] * 4
    assert not torch.allclose(windowed, _run(dit), atol=1e-5)
    q, k = qk(b=1, grid=(2, 1, 1))
    out = torch.ones(1, 2, 2, 16)
    assert hooks.self_attn(0, q, k, k, out, (2, 1, 1)) is out  # outside a wrapped model call the gate is off


def test_validation():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="enhance weight"):
            enhance_a_video(bad)
    with pytest.raises(ValueError, match="start < end"):
        enhance_a_video(1.0, start=0.5, end=0.5)
    with pytest.raises(ValueError, match="holds no step"):
        step_window(torch.linspace(1, 0, 3), 0.1, 0.2)  # 2 steps: both fractions round to step 0
    assert step_window(torch.linspace(1, 0, 5), 0.25, 0.75) == (0.75, 0.25)
    with pytest.raises(ValueError, match="at least 2 latent frames"):
        cross_frame_intensity(*qk(b=1, grid=(1, 2, 2)), (1, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        cross_frame_intensity(torch.zeros(1, 8, 1, 4), torch.zeros(1, 6, 1, 4), (2, 2, 2))
