"""WanVAE unit tests on tiny random models: official keys, config inference, load errors, shapes, validation, tiling."""
import logging

import pytest
import torch
from torch import nn

from wan_core.vae import VAEConfig, WanVAE, infer_vae_config

TINY = VAEConfig(base_dim=8, decoder_base_dim=16)


def _tiny(cfg: VAEConfig = TINY, seed: int = 0) -> WanVAE:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = WanVAE(cfg).eval()
        with torch.no_grad():
            for name, p in vae.named_parameters():
                if name.endswith("gamma"):
                    p.copy_(1 + 0.2 * torch.randn_like(p))
    return vae


@pytest.fixture(scope="module")
def vae():
    return _tiny()


def test_released_vae_keys_and_size_on_meta():
    sd = WanVAE(VAEConfig(), device="meta").state_dict()  # spec section 2.1 / Appendix A
    assert len(sd) == 196 and sum(v.numel() for v in sd.values()) == 704_688_668
    expected = {
        "encoder.conv1.weight": (160, 12, 3, 3, 3),
        "encoder.downsamples.0.downsamples.0.residual.0.gamma": (160, 1, 1, 1),
        "encoder.downsamples.1.downsamples.0.shortcut.weight": (320, 160, 1, 1, 1),
        "encoder.downsamples.2.downsamples.2.time_conv.weight": (640, 640, 3, 1, 1),
        "encoder.downsamples.0.downsamples.2.resample.1.weight": (160, 160, 3, 3),
        "encoder.middle.1.to_qkv.weight": (1920, 640, 1, 1),
        "encoder.middle.1.norm.gamma": (640, 1, 1),
        "encoder.head.2.weight": (96, 640, 3, 3, 3),
        "conv1.weight": (96, 96, 1, 1, 1),
        "conv2.weight": (48, 48, 1, 1, 1),
        "decoder.conv1.weight": (1024, 48, 3, 3, 3),
        "decoder.upsamples.0.upsamples.3.time_conv.weight": (2048, 1024, 3, 1, 1),
        "decoder.upsamples.2.upsamples.0.shortcut.weight": (512, 1024, 1, 1, 1),
        "decoder.upsamples.3.upsamples.2.residual.6.weight": (256, 256, 3, 3, 3),
        "decoder.head.2.weight": (12, 256, 3, 3, 3),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert "decoder.upsamples.2.upsamples.3.time_conv.weight" not in sd  # third up level is spatial only
    assert infer_vae_config(sd) == VAEConfig()


@pytest.mark.parametrize("cfg", [
    TINY,
    VAEConfig(base_dim=16, decoder_base_dim=32, num_res_blocks=1),
    VAEConfig(base_dim=8, decoder_base_dim=8, dim_mult=(1, 2, 2), temporal_downsample=(False, True)),
])
def test_infer_config_round_trip(cfg):
    sd = WanVAE(cfg, device="meta").state_dict()
    assert infer_vae_config(sd) == cfg


def test_from_state_dict_loads_exactly(vae):
    sd = {k: v.clone() for k, v in vae.state_dict().items()}
    loaded = WanVAE.from_state_dict(sd, dtype=torch.float64)
    assert loaded.cfg == TINY and not any(p.is_meta for p in loaded.parameters())
    assert loaded.dtype == torch.float64
    assert all(torch.equal(loaded.state_dict()[k].float(), v) for k, v in sd.items())


def test_wan21_vae_is_refused_with_a_clear_message():
    sd = {"encoder.conv1.weight": torch.zeros(96, 3, 3, 3, 3), "conv2.weight": torch.zeros(16, 16, 1, 1, 1),
          "decoder.upsamples.0.residual.2.weight": torch.zeros(384, 384, 3, 3, 3)}
    with pytest.raises(ValueError, match=r"expected a 48-channel Wan2\.2 VAE.*wan2\.2_vae\.safetensors.*"
                                         r"found a Wan2\.1-style VAE \(16 latent channels"):
        infer_vae_config(sd)


def test_non_vae_and_diffusers_state_dicts_are_refused():
    with pytest.raises(ValueError, match=r"expected a 48-channel Wan2\.2 VAE.*found no VAE keys.*head\.modulation"):
        infer_vae_config({"head.modulation": torch.zeros(1, 2, 8), "blocks.0.norm3.weight": torch.zeros(8)})
    with pytest.raises(ValueError, match=r"diffusers AutoencoderKLWan key names; convert with wan_core\.convert"):
        infer_vae_config({"encoder.conv_in.weight": torch.zeros(8, 12, 3, 3, 3)})


def test_loading_errors_list_missing_unexpected_and_wrong_shape_keys(vae):
    sd = dict(vae.state_dict())
    del sd["decoder.head.2.bias"]
    sd["encoder.extra.weight"] = torch.zeros(1)
    sd["conv1.bias"] = torch.zeros(7)
    with pytest.raises(ValueError) as err:
        WanVAE.from_state_dict(sd, TINY)
    msg = str(err.value)
    assert "missing (1): ['decoder.head.2.bias']" in msg
    assert "unexpected (1): ['encoder.extra.weight']" in msg
    assert "conv1.bias: file (7,) vs model (96,)" in msg
    del sd["encoder.extra.weight"]
    sd["conv1.bias"] = torch.zeros(96)
    with pytest.raises(ValueError, match=r"missing \(1\)"):  # missing keys are fatal even when not strict
        WanVAE.from_state_dict({**sd, "x": torch.zeros(1)}, TINY, strict=False)


def test_encode_decode_shapes_and_range(vae):
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    mu = vae.encode(video)
    assert mu.shape == (2, 48, 2, 2, 2) and mu.dtype == torch.float32 and torch.isfinite(mu).all()
    out = vae.decode(mu * 50)  # large latents must still come out clamped
    assert out.shape == (2, 3, 5, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1 and (out.abs() == 1).any()
    single = vae.encode(video[:, :, :1])
    assert single.shape == (2, 48, 1, 2, 2)
    torch.testing.assert_close(single, mu[:, :, :1], rtol=0, atol=1e-5)  # causal: frame 0 ignores the future


def test_decode_is_causal_and_follows_input_dtype(vae):
    z = torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    full = vae.decode(z)
    torch.testing.assert_close(vae.decode(z[:, :, :2]), full[:, :, :5], rtol=0, atol=1e-5)
    bf16 = _tiny().to(torch.bfloat16)
    out = bf16.decode(z)  # latents are cast to the weights' dtype, output is fp32
    assert out.dtype == torch.float32 and (out - full).abs().mean() < 0.05


@pytest.mark.parametrize("shape,fragment", [
    ((1, 3, 8, 32, 32), r"frame count must be 4k\+1 \(got 8\); try 9 frames"),
    ((1, 3, 9, 40, 32), r"multiples of 16 \(got 40x32\); crop or resize to 32x32"),
    ((1, 4, 9, 32, 32), r"\[B, 3, T, H, W\] \(got shape \(1, 4, 9, 32, 32\)\)"),
    ((3, 9, 32, 32), r"\[B, 3, T, H, W\]"),
])
def test_encode_rejects_bad_video(vae, shape, fragment):
    with pytest.raises(ValueError, match=fragment):
        vae.encode(torch.zeros(shape))


def test_decode_rejects_wrong_latent(vae):
    with pytest.raises(ValueError, match=r"latent must be \[B, 48, T, h, w\].*Wan2\.1 latents have 16 channels"):
        vae.decode(torch.zeros(1, 16, 2, 2, 2))
    with pytest.raises(ValueError, match="tile_overlap must be >= 0 and smaller than the tile size"):
        vae.decode(torch.zeros(1, 48, 1, 4, 4), tile=(2, 2), tile_overlap=2)
    with pytest.raises(ValueError, match="tile sizes must be positive integers"):
        vae.decode(torch.zeros(1, 48, 1, 4, 4), tile=(0, 2))


class _PointwiseDecoder(nn.Module):
    """Stand-in decoder with no spatial context: tiled and untiled decoding must then agree exactly."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv3d(48, 12, 1)

    def forward(self, x, cache, first):
        y = self.proj(x).repeat_interleave(1 if first else 4, dim=2)  # [B, 12, f, h, w]
        y = y + torch.linspace(0, 1, y.shape[2]).view(1, 1, -1, 1, 1)
        return y.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)  # [B, 12, f, 8h, 8w]


def test_tiling_blends_tiles_exactly_when_tiles_do_not_interact():
    vae = _tiny()
    vae.decoder = _PointwiseDecoder()
    z = torch.randn(1, 48, 3, 9, 13, generator=torch.Generator().manual_seed(0)) * 0.1
    full = vae.decode(z)
    for tile, overlap in (((4, 4), 1), ((5, 6), 3), ((9, 4), 0), ((3, 20), 2)):
        tiled = vae.decode(z, tile=tile, tile_overlap=overlap)
        assert tiled.shape == full.shape == (1, 3, 9, 144, 208)
        torch.testing.assert_close(tiled, full, rtol=0, atol=1e-5)


def test_tiled_decode_of_real_blocks(vae):
    z = torch.randn(1, 48, 2, 6, 8, generator=torch.Generator().manual_seed(0))
    full = vae.decode(z)
    assert torch.equal(vae.decode(z, tile=(6, 8)), full)  # one tile covering everything = the untiled path
    calls = []
    tiled = vae.decode(z, tile=(6, 6), tile_overlap=3, callback=lambda done, total: calls.append((done, total)))
    assert tiled.shape == full.shape == (1, 3, 5, 96, 128)
    assert calls == [(i, 4) for i in range(1, 5)]  # 2 tiles x 2 latent frames
    # tiles see less context (the mid-block attention is global per frame), so outputs differ; measured mean abs
    # difference 0.050 on a mean |x| of 0.25 with these random weights (0.117 with 4x4 tiles)
    assert (tiled - full).abs().mean() < 0.1


def test_decode_auto_falls_back_to_tiles_on_oom(vae, caplog):
    z = torch.randn(1, 48, 1, 4, 4)
    seen = []

    def fake_decode(z_raw, *, tile=None, tile_overlap=4, callback=None):
        seen.append(tile)
        if tile is None or tile[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return WanVAE.decode(vae, z_raw, tile=tile, tile_overlap=tile_overlap, callback=callback)

    vae.decode = fake_decode
    try:
        with caplog.at_level(logging.WARNING):
            out = vae.decode_auto(z, tile=(4, 4), min_tile=2)
        assert seen == [None, (4, 4), (2, 2)] and out.shape == (1, 3, 1, 64, 64)
        assert "out of memory" in caplog.text
        seen.clear()
        with pytest.raises(torch.OutOfMemoryError):
            vae.decode_auto(z, tile=(8, 8), min_tile=4)
        assert seen == [None, (8, 8), (4, 4)]
    finally:
        del vae.decode


def test_ops_injection_builds_every_conv_from_ops():
    made = []

    class Ops:
        class Conv3d(nn.Conv3d):
            def __init__(self, *a, **k):
                made.append("3d")
                super().__init__(*a, **k)

        class Conv2d(nn.Conv2d):
            def __init__(self, *a, **k):
                made.append("2d")
                super().__init__(*a, **k)

    vae = WanVAE(TINY, ops=Ops, dtype=torch.float64)
    n3 = sum(isinstance(m, nn.Conv3d) for m in vae.modules())
    n2 = sum(isinstance(m, nn.Conv2d) for m in vae.modules())
    assert made.count("3d") == n3 and made.count("2d") == n2 and n3 > 30
    assert all(p.dtype == torch.float64 for p in vae.parameters())
    ref = _tiny()
    vae.load_state_dict(ref.state_dict())
    z = torch.randn(1, 48, 2, 2, 2)
    torch.testing.assert_close(vae.decode(z.double()), ref.decode(z), rtol=0, atol=1e-5)  # generic path = fast path


def test_config_validation_names_the_rule():
    with pytest.raises(ValueError, match=r"temporal_downsample needs len\(dim_mult\) - 1 = 3 entries"):
        VAEConfig(temporal_downsample=(True,))
    with pytest.raises(ValueError, match="base_dim must be >= 1"):
        VAEConfig(base_dim=0)
    assert VAEConfig().stride == (4, 16, 16)
