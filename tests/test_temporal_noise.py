"""The correlated initial-noise prior: statistics, identity at 0, and its plumbing into the samplers."""
import pytest
import torch

from wan_core.noise import initial_noise
from wan_core.temporal.noise_prior import high_band, shared_frame_noise
from wan_core.temporal.options import TemporalOptions, noise_transform


@pytest.mark.parametrize("share", [0.2, 0.5, 0.9])
def test_frames_correlate_by_share_and_stay_unit_normal(share):
    noise = initial_noise((2, 48, 7, 24, 24), seed=0)
    out = shared_frame_noise(noise, share)
    frames = out.permute(2, 0, 1, 3, 4).reshape(7, -1)
    corr = torch.corrcoef(frames)
    off = corr[~torch.eye(7, dtype=torch.bool)]
    assert (off - share).abs().max() < 0.03
    assert abs(out.std().item() - 1.0) < 0.02 and abs(out.mean().item()) < 0.02
    assert torch.equal(shared_frame_noise(noise, share), out)  # deterministic: a seed still fixes the video


def test_band_shares_only_the_fine_frequencies():
    noise = initial_noise((4, 48, 7, 16, 16), seed=2)
    out = shared_frame_noise(noise, 0.6, band=0.5)
    assert abs(out.std().item() - 1.0) < 0.02

    def frame_corr(x):
        corr = torch.corrcoef(x.permute(2, 0, 1, 3, 4).reshape(7, -1))
        return corr[~torch.eye(7, dtype=torch.bool)]
    high = high_band(out, 0.5)
    assert (frame_corr(high) - 0.6).abs().max() < 0.04  # fine texture: correlated across frames
    assert frame_corr(out - high).abs().max() < 0.04  # coarse layout: independent per frame
    assert torch.allclose(out - high, noise - high_band(noise, 0.5), atol=1e-5)  # and untouched
    assert torch.equal(noise_transform(TemporalOptions.parse("noise=0.6,band=0.5"))(noise), out)
    with pytest.raises(ValueError, match="noise_band must be in"):
        TemporalOptions(noise_band=1.0)


def test_share_zero_is_the_identity_and_bad_values_are_refused():
    noise = initial_noise((1, 4, 5, 8, 8), seed=1)
    assert shared_frame_noise(noise, 0.0) is noise
    assert noise_transform(TemporalOptions()) is None and noise_transform(None) is None
    with pytest.raises(ValueError, match=r"share must be in \[0, 1\)"):
        shared_frame_noise(noise, 1.0)
    with pytest.raises(ValueError, match="noise_share must be in"):
        TemporalOptions(noise_share=-0.1)
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        shared_frame_noise(noise[0], 0.3)


def test_sample_latents_applies_the_transform_to_the_seeded_noise():
    from tests.tiny_models import tiny_dit_state_dict
    from wan_core.model import WanTransformer
    from wan_core.pipeline import sample_latents

    dit = WanTransformer.from_state_dict(tiny_dit_state_dict()).eval()
    ctx = torch.randn(1, 5, dit.cfg.text_dim, generator=torch.Generator().manual_seed(0))
    latent = torch.zeros(1, 48, 3, 4, 4)
    kw = dict(seed=7, steps=3, cfg=1.0, shift=3.0, sampler="euler")
    opts = TemporalOptions.parse("noise=0.5")
    via_option = sample_latents(dit, ctx, None, latent, noise_transform=noise_transform(opts), **kw)
    explicit = sample_latents(dit, ctx, None, latent, noise=shared_frame_noise(initial_noise(latent.shape, 7), 0.5), **kw)
    assert torch.equal(via_option, explicit)
    assert not torch.equal(via_option, sample_latents(dit, ctx, None, latent, **kw))
