"""Latent init padding/crop math and the preview projection (wan_core.latent_init, wan_core.preview)."""
import pytest
import torch

from wan_core.latent_init import (ASPECTS, CROP_KEY, TIERS, frames_from_seconds, init_latent, latent_crop, plan_latent,
                                  preset_size, video_to_images)
from wan_core.preview import latent_to_rgb, rgb_to_uint8


def test_official_sizes_from_presets():
    assert preset_size("16:9", "720p") == (1280, 704)
    assert preset_size("9:16", "720p") == (704, 1280)
    assert preset_size("16:9", "480p") == (832, 480)


@pytest.mark.parametrize("aspect", list(ASPECTS))
@pytest.mark.parametrize("tier", list(TIERS))
def test_every_preset_is_on_grid_and_close_to_aspect(aspect, tier):
    w, h = preset_size(aspect, tier)
    assert w % 32 == 0 and h % 32 == 0
    assert abs(w / h - ASPECTS[aspect]) / ASPECTS[aspect] < 0.06
    assert abs(w * h - TIERS[tier]) / TIERS[tier] < 0.08


def test_unknown_preset_names_choices():
    with pytest.raises(ValueError, match="16:9"):
        preset_size("5:4", "720p")
    with pytest.raises(ValueError, match="480p"):
        preset_size("16:9", "1080p")


def test_plan_pads_to_grid_and_centres_crop():
    plan = plan_latent(1000, 500, 50)
    assert (plan.padded_width, plan.padded_height) == (1024, 512)
    assert plan.frames == 49
    assert plan.crop == (6, 12, 500, 1000)
    assert "frames 50 -> 49" in plan.note and "1024x512" in plan.note


def test_plan_on_grid_has_no_note():
    plan = plan_latent(1280, 704, 121)
    assert plan.note == "" and plan.crop == (0, 0, 704, 1280)


@pytest.mark.parametrize("bad", [0, -32, 32.5, True])
def test_plan_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="width must be a positive integer"):
        plan_latent(bad, 64, 9)


def test_plan_rejects_huge_values():
    with pytest.raises(ValueError, match="at most"):
        plan_latent(5000, 64, 9)
    with pytest.raises(ValueError, match="frames must be at most"):
        plan_latent(64, 64, 5000)


def test_frames_from_seconds():
    assert frames_from_seconds(5, 24) == 121
    assert frames_from_seconds(2, 16) == 33
    with pytest.raises(ValueError, match="positive"):
        frames_from_seconds(0, 24)


def test_init_latent_shape_and_crop_round_trip():
    plan = plan_latent(100, 60, 9)
    lat = init_latent(plan, batch_size=2)
    assert lat["samples"].shape == (2, 48, 3, 64 // 16, 128 // 16)
    assert not lat["samples"].any()
    assert latent_crop(lat) == plan.crop == (2, 14, 60, 100)
    video = torch.rand(2, 3, 9, 64, 128) * 2 - 1
    images = video_to_images(video, latent_crop(lat))
    assert images.shape == (18, 60, 100, 3)
    assert torch.allclose(images[9], (video[1, :, 0, 2:62, 14:114].permute(1, 2, 0) + 1) / 2)
    with pytest.raises(ValueError, match="batch_size"):
        init_latent(plan, batch_size=0)


def test_native_latent_without_crop_keeps_full_size():
    lat = {"samples": torch.zeros(1, 48, 2, 4, 6)}
    assert latent_crop(lat) == (0, 0, 64, 96)


def test_bad_crop_is_reported():
    lat = {"samples": torch.zeros(1, 48, 2, 4, 6), CROP_KEY: (0, 0, 80, 96)}
    with pytest.raises(ValueError, match="does not fit"):
        latent_crop(lat)


def test_video_to_images_rejects_wrong_layout():
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        video_to_images(torch.zeros(1, 9, 3, 8, 8))


def test_preview_with_factors_and_pca():
    z = torch.randn(1, 48, 2, 5, 7)
    factors = torch.zeros(48, 3)
    factors[0, 0] = 1.0
    rgb = latent_to_rgb(z, factors, torch.zeros(3))
    assert rgb.shape == (5, 7, 3)
    assert torch.allclose(rgb[..., 0], ((z[0, 0, 0] + 1) / 2).clamp(0, 1))
    state = torch.get_rng_state()
    pca = latent_to_rgb(z)
    assert torch.equal(state, torch.get_rng_state())  # previews never touch the global RNG
    assert pca.shape == (5, 7, 3) and pca.min() >= 0 and pca.max() <= 1 and pca.std() > 0.1
    assert rgb_to_uint8(pca).dtype == torch.uint8
    with pytest.raises(ValueError, match=r"\[48, 3\]"):
        latent_to_rgb(z, torch.zeros(16, 3))
