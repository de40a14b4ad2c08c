"""Deflicker: lowers the warping error and the brightness flicker of a flickering moving clip without removing its
motion; strength 0 is the identity; a scene cut, or content in one frame only, is left alone; a second pass over the
same flows lowers the frame-to-frame change further; bad input is refused."""
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread, texture, translating_clip
from wan_core.temporal.deflicker import DeflickerConfig, deflicker
from wan_core.temporal.metrics import video_metrics

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def flickering():
    """A translating texture whose brightness jumps from frame to frame and which carries fresh noise in each frame
    (the two kinds of flicker a causal decoder adds), [9, 48, 64, 3]."""
    clip = translating_clip(9, h=48, w=64, dx=2.0, dy=1.0)
    g = torch.Generator().manual_seed(0)
    gain = 1 + 0.08 * torch.tensor([1.0, -1.0] * 4 + [1.0]).view(9, 1, 1, 1)
    noise = 0.04 * torch.nn.functional.avg_pool2d(torch.randn(9, 3, 48, 64, generator=g), 3, 1, 1)
    return (clip * gain + noise.permute(0, 2, 3, 1)).clamp(0, 1)


def test_deflicker_lowers_warping_error_and_flicker_and_keeps_motion(flickering):
    out = deflicker(flickering, 1.0)
    assert out.shape == flickering.shape and out.dtype == flickering.dtype
    before, after = video_metrics(flickering), video_metrics(out)
    print({k: round(after[k] / before[k], 3) for k in ("warping_error", "luma_flicker", "hf_flicker", "motion_mean")})
    assert after["warping_error"] < 0.75 * before["warping_error"]
    assert after["luma_flicker"] < 0.75 * before["luma_flicker"]
    assert after["motion_mean"] > 0.9 * before["motion_mean"]
    weaker = video_metrics(deflicker(flickering, 0.3))
    assert after["warping_error"] < weaker["warping_error"] < before["warping_error"]  # strength orders the effect


def test_strength_zero_and_single_frames_are_returned_unchanged(flickering):
    assert deflicker(flickering, 0.0) is flickering
    one = flickering[:1]
    assert deflicker(one, 1.0) is one


def test_scene_cut_is_not_blended():
    a = texture(48, 64, seed=11)[0].permute(1, 2, 0)
    b = texture(48, 64, seed=12)[0].permute(1, 2, 0)
    clip = torch.stack((a, a, b, b))
    out = deflicker(clip, 1.0)
    assert (out - clip).abs().mean() < 0.01  # different content fails the colour check: each frame keeps its own


def test_static_clip_with_noise_is_averaged_towards_the_clean_frame():
    clean = texture(40, 40, seed=5)[0].permute(1, 2, 0)
    g = torch.Generator().manual_seed(1)
    noisy = (clean + 0.01 * torch.randn(5, 40, 40, 3, generator=g)).clamp(0, 1)  # within the photometric tolerance
    err = lambda x: (x[1:-1] - clean).pow(2).mean().item()  # noqa: E731  inner frames have two neighbours
    one = DeflickerConfig(passes=1, sharpness_window=1)  # plain averaging along the (zero) flow
    assert err(deflicker(noisy, 1.0, one)) < 0.6 * err(noisy)  # 3 frames averaged: ~1/3 of the noise power


def test_a_second_pass_reaches_further_but_keeps_what_does_not_line_up():
    """passes=2 averages again on the first pass's output with the same flows: the frame-to-frame change of noise
    that agrees within the tolerance falls further; content that appears in one frame only (a bright square) is
    still neither averaged away nor copied into the neighbours."""
    from wan_core.temporal.guided import low_pass

    clean = low_pass(texture(40, 40, seed=6), 2.0)[0].permute(1, 2, 0)
    g = torch.Generator().manual_seed(2)
    noisy = (clean + 0.012 * torch.randn(7, 40, 40, 3, generator=g)).clamp(0, 1)
    cfg = lambda n: DeflickerConfig(passes=n, sharpness_window=1)  # noqa: E731
    change = lambda x: (x[1:] - x[:-1]).pow(2).mean().item()  # noqa: E731
    one, two = deflicker(noisy, 1.0, cfg(1)), deflicker(noisy, 1.0, cfg(2))
    print(f"frame-to-frame change {change(noisy):.2e} -> {change(one):.2e} (1 pass) -> {change(two):.2e} (2)")
    assert change(two) < 0.7 * change(one) < 0.7 * change(noisy)
    noisy[3, 10:22, 10:22] = 1.0  # content in frame 3 only
    out = deflicker(noisy, 1.0)  # the default: four passes
    assert out[3, 12:20, 12:20].mean().item() > 0.97
    assert (out[[2, 4], 12:20, 12:20] - clean[12:20, 12:20]).abs().mean().item() < 0.02
    with pytest.raises(ValueError, match="passes"):
        DeflickerConfig(passes=0)


def test_bad_input_is_refused():
    x = torch.rand(3, 16, 16, 3)
    with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\]"):
        deflicker(x, 1.5)
    with pytest.raises(ValueError, match="IMAGE layout"):
        deflicker(x.permute(0, 3, 1, 2), 1.0)
    with pytest.raises(ValueError, match="float in 0..1"):
        deflicker((x * 255).to(torch.uint8), 1.0)
    with pytest.raises(ValueError, match="tau"):
        DeflickerConfig(tau=0)
    with pytest.raises(ValueError, match="window"):
        DeflickerConfig(window=4)
    with pytest.raises(ValueError, match="sharpness_sigma"):
        DeflickerConfig(sharpness_sigma=0)


def test_sharpness_that_pumps_between_frames_is_evened_out():
    """Frames of one still texture, alternately sharp and blurred (as a causal decoder's latent frames can be): the
    fine band's energy is evened out; with sharpness_window=1 it is not touched."""
    from wan_core.temporal.guided import low_pass
    from wan_core.temporal.metrics import flicker_index

    sharp = texture(48, 64, seed=4)  # [1, 3, H, W]
    soft = low_pass(sharp, 1.0)
    clip = torch.cat([sharp, soft] * 3 + [sharp]).permute(0, 2, 3, 1).contiguous()  # [7, H, W, 3]
    hf = lambda x: flicker_index(x.permute(0, 3, 1, 2))[1]  # noqa: E731
    even = deflicker(clip, 1.0)
    print(f"HF flicker {hf(clip):.3f} -> {hf(even):.3f}")
    assert hf(even) < 0.5 * hf(clip)
    no_average = DeflickerConfig(tau=1e-6)  # the photometric check rejects every neighbour: the sharpness step alone
    assert hf(deflicker(clip, 1.0, no_average)) < 0.5 * hf(clip)
    off = deflicker(clip, 1.0, replace(no_average, sharpness_window=1))
    assert hf(off) > 0.9 * hf(clip)  # ... which sharpness_window=1 turns off
    with pytest.raises(ValueError, match="sharpness_window"):
        DeflickerConfig(sharpness_window=4)
