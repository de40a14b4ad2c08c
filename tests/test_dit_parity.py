"""Numerical parity of wan_core's WanTransformer against diffusers' WanTransformer3DModel on a tiny 5B-like config.

Both models get the same random weights (seeded CPU generator; diffusers names converted with wan_core.convert) and
the same fp32 inputs. Tolerance: max |ours - diffusers| <= 1e-4 x max |diffusers| (spec section 9 measured ~1e-5
relative between the official code and diffusers).
"""
from __future__ import annotations

import pytest
import torch

from wan_core.config import WanConfig
from wan_core.convert import convert
from wan_core.model import WanTransformer

diffusers = pytest.importorskip("diffusers", reason="the parity reference needs diffusers (pip install diffusers)")

CFG = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=48, out_dim=48, text_dim=64, freq_dim=256)
TOL = 1e-4


def diffusers_model(cfg: WanConfig, seed: int = 0):
    """diffusers WanTransformer3DModel (5B layout) with every parameter redrawn from a seeded CPU generator."""
    with torch.device("meta"):
        ref = diffusers.WanTransformer3DModel(
            patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
            in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=cfg.eps, rope_max_seq_len=cfg.rope_max_len)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in ref.state_dict().items():  # norms near 1 (so a misplaced norm weight shows), others ~ fan_in^-1/2
        w = torch.randn(v.shape, generator=g)
        if ".norm" in k:
            w = 1 + 0.1 * w
        elif v.ndim >= 2 and "scale_shift_table" not in k:
            w = w * v[0].numel() ** -0.5
        else:
            w = w * 0.1
        sd[k] = w
    ref.load_state_dict(sd, assign=True)
    ref.rope = type(ref.rope)(cfg.head_dim, cfg.patch_size, cfg.rope_max_len)  # its RoPE buffers, off the meta device
    return ref.eval()


@pytest.fixture(scope="module")
def pair():
    ref = diffusers_model(CFG)
    sd, unmatched = convert(ref.state_dict(), "dit", "diffusers")
    assert unmatched == []
    return ref, WanTransformer.from_state_dict(sd).eval()


def make_inputs(b=2, f=3, h=8, w=12, lc=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, CFG.in_dim, f, h, w, generator=g)
    ctx = torch.randn(b, lc, CFG.text_dim, generator=g)
    t = torch.tensor([913.0, 287.0][:b])
    return x, t, ctx


def pad(ctx):
    return torch.nn.functional.pad(ctx, (0, 0, 0, CFG.text_len - ctx.shape[1]))


def run_ref(ref, x, t, ctx):
    with torch.no_grad():
        return ref(x, t, ctx, return_dict=False)[0]


def check_close(out, want):
    err = (out - want).abs().max().item()
    scale = want.abs().max().item()
    assert err <= TOL * scale, f"max abs diff {err:.3g} > {TOL} x output scale {scale:.3g}"
    return err / scale


def test_config_inferred_from_converted_diffusers_weights(pair):
    assert pair[1].cfg == CFG


def test_fp32_parity_against_diffusers(pair):
    ref, ours = pair
    x, t, ctx = make_inputs()
    L = 3 * 4 * 6
    want = run_ref(ref, x, t[:, None].expand(2, L), pad(ctx))  # the 5B pipeline's per-token path
    with torch.no_grad():
        out = ours(x, t, ctx)
    assert out.dtype == torch.float32 and out.shape == want.shape
    check_close(out, want)
    check_close(out, run_ref(ref, x, t, pad(ctx)))  # diffusers' scalar-t path too


def test_per_token_timesteps_parity(pair):
    """Image-to-video style t: first latent frame at 0, the rest at t (a truly per-token path on both sides)."""
    ref, ours = pair
    x, t, ctx = make_inputs()
    tt = t[:, None].repeat(1, 3 * 4 * 6)
    tt[:, : 4 * 6] = 0.0
    with torch.no_grad():
        out = ours(x, tt, ctx)
        shared = ours(x, t, ctx)
    check_close(out, run_ref(ref, x, tt, pad(ctx)))
    assert (out - shared).abs().max() > 1e-3


def test_padding_matters_as_in_reference(pair):
    ref, ours = pair
    x, t, ctx = make_inputs(lc=9)
    with torch.no_grad():
        out = ours(x, t, ctx)
    check_close(out, run_ref(ref, x, t, pad(ctx)))
    unpadded = run_ref(ref, x, t, ctx)
    assert (out - unpadded).abs().max() > 100 * TOL * unpadded.abs().max(), "padding must change the output"


def test_bf16_weights_close_to_fp32(pair):
    ref, ours = pair
    sd, _ = convert(ref.state_dict(), "dit", "diffusers")
    m16 = WanTransformer.from_state_dict(sd, dtype=torch.bfloat16).eval()
    x, t, ctx = make_inputs()
    with torch.no_grad():
        want = ours(x, t, ctx)
        out = m16(x, t, ctx)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    rel = ((out - want).abs().max() / want.abs().max()).item()
    assert rel < 0.05, f"bf16 relative error {rel:.3g}"
    assert m16.head.head.weight.dtype == torch.float32 and m16.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
