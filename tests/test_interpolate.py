"""Frame interpolation: dropped frames of a translating pattern come back above a PSNR bound; fallbacks hold."""
import pytest
import torch

from tests._temporal_synth import one_thread, texture, translating_clip, two_objects
from wan_core.temporal.interpolate import (InterpConfig, clip_weight, interpolate_at, interpolate_frames,
                                          interpolate_to_fps)

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def psnr(a, b):
    return (10 * torch.log10(1 / ((a - b) ** 2).mean())).item()


@pytest.fixture(scope="module")
def clip():
    return translating_clip(7, h=64, w=96, dx=3.0, dy=1.5)  # [7, 64, 96, 3], 3.35 px per frame


def test_dropped_frames_of_a_translating_pattern_come_back(clip):
    out = interpolate_frames(clip[::2], 2)  # 4 frames -> 7 frames
    assert out.shape == clip.shape
    assert torch.equal(out[::2], clip[::2])  # the kept frames pass through untouched
    for k in (1, 3, 5):
        p, p_blend = psnr(out[k], clip[k]), psnr(0.5 * (clip[k - 1] + clip[k + 1]), clip[k])
        print(f"frame {k}: {p:.2f} dB (blend {p_blend:.2f} dB)")
        assert p > 36.0  # measured ~39 dB at 64x96
        assert p > p_blend + 8.0


def test_two_objects_moving_apart_beat_blending():
    objects, _, _, _ = two_objects(h=64, w=96, step=3, frames=3)
    objects = objects.permute(0, 2, 3, 1)  # [T, 3, H, W] -> [T, H, W, 3]
    mid = interpolate_frames(objects[::2], 2)[1]
    p, p_blend = psnr(mid, objects[1]), psnr(0.5 * (objects[0] + objects[2]), objects[1])
    print(f"two objects: {p:.2f} dB (blend {p_blend:.2f} dB)")
    assert p > p_blend + 5.0  # measured ~+10 dB at 96x128


def test_multiplier_and_fps_shapes(clip):
    short = clip[:3]
    for m in (3, 4):
        out = interpolate_frames(short, m)
        assert out.shape[0] == 2 * m + 1
        assert torch.equal(out[::m], short)
    assert torch.equal(interpolate_frames(short, 1), short)
    out, fps = interpolate_to_fps(short, 16.0, 24.0)  # 2 intervals of 1/16 s -> times 0, 2/3, 4/3, 2
    assert fps == 24.0 and out.shape[0] == 4
    assert torch.equal(out[0], short[0]) and torch.equal(out[-1], short[-1])
    # a 3-way interpolation at 1/3 and 2/3 is consistent with sampling those times directly
    third = interpolate_at(short, [1 / 3, 2 / 3])
    assert torch.allclose(third, interpolate_frames(short, 3)[1:3], atol=1e-6)


def test_scene_cut_falls_back_to_blending():
    a = texture(48, 64, seed=11)[0].permute(1, 2, 0)
    b = texture(48, 64, seed=12)[0].permute(1, 2, 0)
    out = interpolate_frames(torch.stack((a, b)), 2)
    assert torch.allclose(out[1], 0.5 * (a + b), atol=1e-6)


def test_static_clip_is_unchanged():
    a = texture(32, 48, seed=13)[0].permute(1, 2, 0)
    out = interpolate_frames(torch.stack((a, a)), 4)
    assert (out - a).abs().max() < 1e-4


def test_validation():
    x = torch.rand(3, 16, 16, 3)
    with pytest.raises(ValueError, match="multiplier"):
        interpolate_frames(x, 5)
    with pytest.raises(ValueError, match="IMAGE layout"):
        interpolate_frames(x.permute(0, 3, 1, 2), 2)
    with pytest.raises(ValueError, match="times must lie"):
        interpolate_at(x, [2.5])
    with pytest.raises(ValueError, match="min_valid"):
        InterpConfig(min_valid=1.5)
    with pytest.raises(ValueError, match="local_gain"):
        InterpConfig(local_gain=(0.6, 0.3))
    with pytest.raises(ValueError, match="local_window"):
        InterpConfig(local_window=4)
    with pytest.raises(ValueError, match="validate must be"):
        InterpConfig(validate=-1)
    with pytest.raises(ValueError, match="validate_db"):
        InterpConfig(validate_db=(1.0, 1.0))


def test_local_fallback_blends_where_warping_explains_nothing():
    """The per-pixel fallback: with a band that no pixel reaches, the result is the plain blend; where the flow
    explains the change (a translation), the default band keeps the motion-compensated frame."""
    from wan_core.temporal.interpolate import _local_trust

    a, b = torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    b[..., :8] = 0.5  # the left half changes between the frames
    err = (a - b).abs().mean(1, keepdim=True)
    flicker = _local_trust(err, err, InterpConfig())  # warping leaves the whole change: blend
    assert flicker.max() == 0
    fitted = _local_trust(err, torch.zeros_like(err), InterpConfig())  # warping explains it
    assert fitted[..., :6].min() == 1 and fitted[..., 12:].max() == 0  # unchanged, far from the change: blend
    assert _local_trust(err, err, InterpConfig(local_gain=None)) is None
    clip = translating_clip(3, h=48, w=64, dx=3.0, dy=0.0)
    blend = 0.5 * (clip[0] + clip[2])
    warped = interpolate_frames(clip[::2], 2)[1]
    off = interpolate_frames(clip[::2], 2, InterpConfig(local_gain=None))[1]
    assert psnr(warped, clip[1]) > psnr(blend, clip[1]) + 8.0
    assert abs(psnr(warped, clip[1]) - psnr(off, clip[1])) < 1.0


def test_clip_check_from_the_input_frames_keeps_motion_and_blends_flicker():
    """The clip-level check predicts input frames from their neighbours: a translation keeps the motion-compensated
    frames (weight 1); texture noise that flickers in place, which no flow explains, gets the plain blend exactly."""
    moving = translating_clip(9, h=48, w=64, dx=3.0, dy=1.0)[::2]  # 5 input frames, 6.3 px apart
    assert clip_weight(moving.permute(0, 3, 1, 2)) == 1.0
    base = texture(48, 64, seed=3)[0]
    g = torch.Generator().manual_seed(0)
    noisy = torch.stack([(base + 0.08 * torch.randn(base.shape, generator=g)).clamp(0, 1) for _ in range(5)])
    assert clip_weight(noisy) == 0.0
    frames = noisy.permute(0, 2, 3, 1)
    out = interpolate_frames(frames, 2)
    assert torch.allclose(out[1::2], 0.5 * (frames[:-1] + frames[1:]), atol=1e-6)
    moving = moving.contiguous()
    strict = InterpConfig(validate_db=(40.0, 50.0))  # demand a 40 dB gain: even the translation gets weight 0
    assert torch.allclose(interpolate_frames(moving, 2, strict)[1::2], 0.5 * (moving[:-1] + moving[1:]), atol=1e-6)
    half = interpolate_frames(moving, 2, InterpConfig(validate_db=(-1e3, 1e3)))[1::2]  # weight 0.5 whatever the gain
    full = interpolate_frames(moving, 2)[1::2]
    expect = 0.5 * (full + 0.5 * (moving[:-1] + moving[1:]))
    assert (half - expect).abs().mean() < 2e-3  # equal up to the final clamp to 0..1 of the unweighted frames
    assert clip_weight(noisy[:2]) == 1.0  # two frames: nothing to check against
