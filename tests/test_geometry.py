import pytest

from wan_core.geometry import (WAN21_VAE, WAN22_VAE, latent_frames, latent_shape, nearest_frames, pixel_frames,
                               seq_len, size_multiple, validate_request)


def test_official_geometry():
    assert latent_shape(121, 704, 1280) == (1, 48, 31, 44, 80)
    assert seq_len(121, 704, 1280) == 27280  # spec section 7
    assert latent_shape(81, 480, 832, WAN21_VAE) == (1, 16, 21, 60, 104)
    assert size_multiple(WAN22_VAE) == 32 and size_multiple(WAN21_VAE) == 16
    assert [latent_frames(f) for f in (1, 5, 9, 121)] == [1, 2, 3, 31]
    assert all(pixel_frames(latent_frames(f)) == f for f in (1, 5, 25, 121))


@pytest.mark.parametrize("frames,expected", [(80, 81), (82, 81), (83, 85), (1, 1), (2, 1), (120, 121)])
def test_nearest_frames(frames, expected):
    assert nearest_frames(frames) == expected


@pytest.mark.parametrize("w,h,f,fragment", [
    (1280, 704, 80, "frames must be 4k+1 (got 80); try 81"),
    (1270, 704, 121, "width must be a multiple of 32"),
    (1280, 700, 121, "try 704"),
    (0, 704, 121, "width must be between"),
    (1280, 704, 0, "positive integer"),
    (1280, 704, 5000, "at most"),
    (1280.0, 704, 121, "integer"),
])
def test_validate_request_names_value_rule_and_fix(w, h, f, fragment):
    with pytest.raises(ValueError) as e:
        validate_request(w, h, f)
    assert fragment in str(e.value)


def test_validate_request_accepts_official_sizes():
    for w, h in ((1280, 704), (704, 1280), (128, 128), (224, 128)):
        validate_request(w, h, 121)
