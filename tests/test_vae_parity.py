"""Parity of wan_core.vae.WanVAE with diffusers AutoencoderKLWan (Wan2.2 config, tiny widths, random weights, fp32).

The diffusers state dict is renamed to official keys by wan_core.convert and loaded strictly; encode (posterior mode)
and decode must agree to 1e-5 (max abs) on a 9-frame clip: first chunk, the zero-padded second chunk and a cached chunk.
"""
import pytest
import torch

from wan_core.convert import convert
from wan_core.latent_format import WAN22_MEAN, WAN22_STD
from wan_core.vae import WanVAE, infer_vae_config

diffusers = pytest.importorskip("diffusers", reason="parity needs diffusers (requirements-dev.txt)")

TOL = 1e-5


@pytest.fixture(scope="module")
def pair():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ref = diffusers.AutoencoderKLWan(
            base_dim=8, decoder_base_dim=16, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
            temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
            scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=list(WAN22_MEAN),
            latents_std=list(WAN22_STD)).eval()
        with torch.no_grad():  # non-trivial norm scales and biases, so every parameter matters
            for name, p in ref.named_parameters():
                if name.endswith("gamma"):
                    p.copy_(1 + 0.2 * torch.randn_like(p))
                elif name.endswith("bias"):
                    p.copy_(0.05 * torch.randn_like(p))
    sd, unmatched = convert(ref.state_dict(), "vae", "diffusers")
    assert unmatched == []
    return ref, WanVAE.from_state_dict(sd), sd


def test_state_dict_converts_and_config_is_inferred(pair):
    ref, ours, sd = pair
    cfg = infer_vae_config(sd)
    assert (cfg.base_dim, cfg.decoder_base_dim, cfg.z_dim, cfg.patch_size) == (8, 16, 48, 2)
    assert cfg.dim_mult == (1, 2, 4, 4) and cfg.temporal_downsample == (False, True, True)
    assert set(ours.state_dict()) == set(sd)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_encode_matches_diffusers(pair):
    ref, ours, _ = pair
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(video).latent_dist.mode()
    got = ours.encode(video)
    assert got.shape == expected.shape == (1, 48, 3, 2, 3)
    assert (got - expected).abs().max().item() <= TOL


def test_decode_matches_diffusers(pair):
    ref, ours, _ = pair
    z = torch.randn(1, 48, 3, 2, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref.decode(z).sample
    got = ours.decode(z)
    assert got.dtype == torch.float32 and got.shape == expected.shape == (1, 3, 9, 32, 48)
    assert expected.abs().max() > 0.05  # not a degenerate all-zero output
    assert (got - expected).abs().max().item() <= TOL


def test_decode_batch_of_two_matches_diffusers(pair):
    ref, ours, _ = pair
    z = torch.randn(2, 48, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ref.decode(z).sample
    assert (ours.decode(z) - expected).abs().max().item() <= TOL
