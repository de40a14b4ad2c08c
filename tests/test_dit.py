"""Unit tests of the Wan DiT on tiny random models (CPU, seeded CPU generators, no weights fetched)."""
from __future__ import annotations

import types

import pytest
import torch

from wan_core.config import PRESETS, WanConfig, infer_config
from wan_core.model import KEEP_FP32, DiTHooks, WanTransformer, keep_fp32
from wan_core.rope import Rope3D, apply_rope, axis_pairs

CFG = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=48, out_dim=48, text_dim=64)


def random_state_dict(cfg: WanConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Official-named random weights (norm weights near 1, others ~ fan_in^-1/2) from a seeded CPU generator."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in WanTransformer(cfg, device="meta").state_dict().items():
        w = torch.randn(v.shape, generator=g)
        if ".norm" in k:
            w = 1 + 0.1 * w
        elif v.ndim >= 2 and "modulation" not in k:
            w = w * v[0].numel() ** -0.5
        else:
            w = w * 0.1
        sd[k] = w
    return sd


def inputs(cfg: WanConfig = CFG, b: int = 1, f: int = 2, h: int = 8, w: int = 8, lc: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.in_dim, f, h, w, generator=g)
    ctx = torch.randn(b, lc, cfg.text_dim, generator=g)
    t = torch.full((b,), 731.0)
    return x, t, ctx


@pytest.fixture(scope="module")
def model():
    return WanTransformer.from_state_dict(random_state_dict(CFG), CFG).eval()


def test_output_shape_dtype_and_determinism(model):
    x, t, ctx = inputs(b=2)
    with torch.no_grad():
        a, b = model(x, t, ctx), model(x, t, ctx)
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.abs().max() > 0
    assert torch.equal(a, b)
    assert torch.equal(x, inputs(b=2)[0]), "forward must not modify its input"


def test_per_token_shared_t_equals_scalar_t(model):
    x, t, ctx = inputs()
    L = 2 * 4 * 4
    with torch.no_grad():
        ref = model(x, t, ctx)
        tok = model(x, t[:, None].expand(1, L).clone(), ctx)
        other = model(x, torch.full((1,), 200.0), ctx)
        varying = t[:, None].repeat(1, L)
        varying[:, :16] = 0.0  # first latent frame clean, as image-to-video does
        mixed = model(x, varying, ctx)
    assert torch.equal(ref, tok)
    assert (ref - other).abs().max() > 1e-3
    assert torch.isfinite(mixed).all() and (mixed - ref).abs().max() > 1e-3


def test_time_embedding_computed_once_for_shared_t(model):
    x, t, ctx = inputs()
    lengths = []
    hooks = DiTHooks(block=lambda i, block, h, c: lengths.append(c.e0.shape[1]) or h)
    varying = t[:, None].repeat(1, 32)
    varying[:, 0] = 0.0
    with torch.no_grad():
        for tt in (t, t[:, None].expand(1, 32), varying):
            model(x, tt, ctx, hooks=hooks)
    assert lengths == [1, 1, 1, 1, 32, 32]  # two blocks per call; per-token rows only when t really varies


def test_short_context_is_zero_padded(model):
    x, t, ctx = inputs(lc=7)
    padded = torch.nn.functional.pad(ctx, (0, 0, 0, CFG.text_len - 7))
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx), model(x, t, padded))
    with pytest.raises(ValueError, match="text_len"):
        model(x, t, torch.zeros(1, CFG.text_len + 1, CFG.text_dim))


@pytest.mark.parametrize("shape", [(1, 48, 2, 7, 8), (1, 48, 2, 8, 9)])
def test_bad_height_width_raises(model, shape):
    _, t, ctx = inputs()
    with pytest.raises(ValueError, match=r"divisible by the DiT patch \(1, 2, 2\)"):
        model(torch.zeros(shape), t, ctx)


def test_bad_inputs_raise(model):
    x, t, ctx = inputs()
    with pytest.raises(ValueError, match="latent"):
        model(torch.zeros(1, 16, 2, 8, 8), t, ctx)
    with pytest.raises(ValueError, match="context"):
        model(x, t, torch.zeros(1, 7, 65))
    with pytest.raises(ValueError, match=r"t must be \[B\] or \[B, L\]"):
        model(x, torch.zeros(1, 5), ctx)


def test_infer_config_round_trip(model):
    assert infer_config(model.state_dict()) == CFG
    assert all(not k.startswith("rope") for k in model.state_dict()), "RoPE tables must be non-persistent"


def test_official_parameter_names_and_5b_count():
    meta = WanTransformer(PRESETS["ti2v-5B"], device="meta")
    names = set(meta.state_dict())
    for k in ("patch_embedding.weight", "text_embedding.0.weight", "text_embedding.2.bias", "time_embedding.0.weight",
              "time_embedding.2.weight", "time_projection.1.weight", "blocks.29.self_attn.norm_q.weight",
              "blocks.0.norm3.bias", "blocks.0.cross_attn.o.weight", "blocks.0.ffn.2.weight",
              "blocks.0.modulation", "head.head.weight", "head.modulation"):
        assert k in names, k
    assert sum(p.numel() for p in meta.parameters()) == 4_999_787_712  # spec 1.2
    assert all(p.device.type == "meta" for p in meta.parameters())


def test_meta_build_and_assign_load_share_storage():
    sd = random_state_dict(CFG)
    rng = torch.get_rng_state()
    m = WanTransformer.from_state_dict(sd)
    assert torch.equal(rng, torch.get_rng_state()), "loading must not draw random numbers"
    params = dict(m.named_parameters())
    assert all(params[k].data_ptr() == v.data_ptr() for k, v in sd.items()), "assign=True must not copy fp32 weights"
    assert m.rope.cos.device.type == "cpu" and torch.isfinite(m.rope.cos).all()


def test_load_errors_are_reported_together():
    sd = random_state_dict(CFG)
    sd.pop("blocks.1.ffn.0.bias")
    sd["blocks.0.extra.weight"] = torch.zeros(1)
    sd["head.head.bias"] = torch.zeros(5)
    with pytest.raises(ValueError) as err:
        WanTransformer.from_state_dict(sd, CFG)
    msg = str(err.value)
    assert "blocks.1.ffn.0.bias" in msg and "blocks.0.extra.weight" in msg and "head.head.bias" in msg
    with pytest.raises(ValueError, match="wrong-shape"):
        WanTransformer.from_state_dict(sd, CFG, strict=False)


def test_bf16_keeps_fp32_parts(model):
    m16 = WanTransformer.from_state_dict(random_state_dict(CFG), CFG, dtype=torch.bfloat16)
    for name, p in m16.named_parameters():
        assert p.dtype == (torch.float32 if keep_fp32(name) else torch.bfloat16), name
    assert {"head.head.weight", "blocks.0.modulation", "time_projection.1.weight"} <= {
        n for n, p in m16.named_parameters() if p.dtype == torch.float32}
    assert "modulation" in KEEP_FP32 and m16.compute_dtype == torch.bfloat16
    x, t, ctx = inputs()
    with torch.no_grad():
        ref, out = model(x, t, ctx), m16(x, t, ctx)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel < 0.05, f"bf16 relative error {rel:.3g}"


def test_whole_model_cast_keeps_fp32_parts(model):
    m = WanTransformer.from_state_dict(random_state_dict(CFG), CFG).to(torch.bfloat16)
    assert m.compute_dtype == torch.bfloat16
    assert m.head.head.weight.dtype == torch.float32 and m.blocks[1].modulation.dtype == torch.float32
    assert m.blocks[1].ffn[2].weight.dtype == torch.bfloat16 and m.rope.cos.dtype == torch.float32
    x, t, ctx = inputs()
    with torch.no_grad():
        ref, out = model(x, t, ctx), m(x, t, ctx)
    assert (out - ref).abs().max() / ref.abs().max() < 0.05


def test_hooks_called_with_documented_shapes(model):
    x, t, ctx = inputs(b=2)
    seen = {"block": [], "attn": []}

    def block_hook(i, block, h, c):
        seen["block"].append((i, block is model.blocks[i], tuple(h.shape), h.dtype, c.grid))
        return h

    def attn_hook(i, q, k, v, out, grid):
        seen["attn"].append((i, tuple(q.shape), tuple(k.shape), tuple(v.shape), tuple(out.shape), grid))
        return out

    with torch.no_grad():
        plain = model(x, t, ctx)
        hooked = model(x, t, ctx, hooks=DiTHooks(block=block_hook, self_attn=attn_hook))
        zeroed = model(x, t, ctx, hooks=DiTHooks(self_attn=lambda i, q, k, v, out, grid: out * 0))
    assert torch.equal(plain, hooked)
    assert not torch.allclose(plain, zeroed), "the self_attn hook's return value must be used"
    grid, L = (2, 4, 4), 32
    assert seen["block"] == [(i, True, (2, L, CFG.dim), torch.float32, grid) for i in range(CFG.num_layers)]
    qkv = (2, L, CFG.num_heads, CFG.head_dim)
    assert seen["attn"] == [(i, qkv, qkv, qkv, qkv, grid) for i in range(CFG.num_layers)]


def test_grad_mode_matches_no_grad(model):
    x, t, ctx = inputs()
    with torch.no_grad():
        ref = model(x, t, ctx)
    x = x.clone().requires_grad_(True)
    out = model(x, t, ctx)
    out.square().mean().backward()
    assert torch.allclose(out.detach(), ref, atol=1e-6)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    model.zero_grad(set_to_none=True)


def test_chunked_ffn_matches_whole(model, monkeypatch):
    import wan_core.model as wm

    x, t, ctx = inputs()
    varying = t[:, None].repeat(1, 32)
    varying[:, :16] = 10.0
    with torch.no_grad():
        whole = [model(x, t, ctx), model(x, varying, ctx)]
        monkeypatch.setattr(wm, "FFN_CHUNK_ELEMENTS", 5 * CFG.ffn_dim)  # 5-token chunks: 7 chunks for 32 tokens
        chunked = [model(x, t, ctx), model(x, varying, ctx)]
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_injected_ops_namespace_builds_every_layer():
    made = []

    def counting(cls):
        class Counted(cls):
            def __init__(self, *a, **kw):
                made.append(cls.__name__)
                super().__init__(*a, **kw)
        return Counted

    ops = types.SimpleNamespace(Linear=counting(torch.nn.Linear), Conv3d=counting(torch.nn.Conv3d),
                                LayerNorm=counting(torch.nn.LayerNorm))
    m = WanTransformer(CFG, ops=ops, device="meta")
    n_linear = 2 + 2 + 1 + CFG.num_layers * 10 + 1
    assert made.count("Linear") == n_linear and made.count("Conv3d") == 1
    assert made.count("LayerNorm") == CFG.num_layers
    assert isinstance(m.blocks[0].ffn[0], ops.Linear)


class _CastOps:
    """A stand-in for comfy.ops.manual_cast: weights stay in their storage dtype and are cast to the input's."""

    class Linear(torch.nn.Linear):
        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    class Conv3d(torch.nn.Conv3d):
        def forward(self, x):
            return self._conv_forward(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    class LayerNorm(torch.nn.LayerNorm):
        def forward(self, x):
            return torch.nn.functional.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype),
                                                  self.bias.to(x.dtype), self.eps)


def test_manual_cast_style_ops_with_bf16_storage_and_fp32_compute(model):
    m = WanTransformer.from_state_dict(random_state_dict(CFG), CFG, ops=_CastOps, dtype=torch.bfloat16,
                                       compute_dtype=torch.float32)
    assert m.compute_dtype == torch.float32 and m.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    assert isinstance(m.blocks[0].ffn[0], _CastOps.Linear)
    x, t, ctx = inputs()
    with torch.no_grad():
        ref, out = model(x, t, ctx), m(x, t, ctx)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() / ref.abs().max() < 0.05


def test_rope_matches_complex_reference():
    d = 128
    assert axis_pairs(d) == (22, 21, 21)
    rope = Rope3D(d, max_len=16)
    grid = (3, 4, 5)
    table = rope(grid, torch.device("cpu"))
    assert table.shape == (60, 1, 64)
    # token (f=2, h=1, w=3), pair 0 (frame axis), pair 22 (height axis), pair 43 (width axis)
    tok = (2 * 4 + 1) * 5 + 3
    for pair, pos, n, i in ((0, 2, 22, 0), (22, 1, 21, 0), (43, 3, 21, 0), (5, 2, 22, 5), (30, 1, 21, 8)):
        angle = pos * 10000.0 ** (-i / n)
        want = complex(torch.tensor(angle, dtype=torch.float64).cos(), torch.tensor(angle, dtype=torch.float64).sin())
        assert abs(complex(table[tok, 0, pair]) - want) < 1e-6
    x = torch.randn(1, 60, 2, d, generator=torch.Generator().manual_seed(0))
    y = apply_rope(x, table)
    assert y.shape == x.shape and torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    with pytest.raises(ValueError, match="RoPE table"):
        rope((17, 1, 1), torch.device("cpu"))
