"""umT5 text encoder: parity with transformers built directly, config inference, strict loading, errors.

The reference is a tiny random transformers `UMT5EncoderModel`; `_official_encode` is a short re-implementation of the
official Wan encoder semantics (wan22-spec.md section 3.1) to measure fp32/bf16 agreement. No downloads.
"""
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from wan_core.prompts import DEFAULT_NEGATIVE_PROMPT, clean_prompt
from wan_core.text_encoder import WanTextEncoder, infer_t5_config
from wan_core.tokenizer import SpieceTokenizer, tokenizer_to_tensor, train_tokenizer

transformers = pytest.importorskip("transformers", reason="the text encoder is built on transformers UMT5")

SENTENCES = [
    "A cat walks on the grass in the sunshine.",
    "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage.",
    "The quick brown fox jumps over the lazy dog!",
    "一只猫在阳光下的草地上散步。",
    "两只穿着拳击装备的拟人化猫在聚光灯下的舞台上激烈搏斗。",
    DEFAULT_NEGATIVE_PROMPT,
] * 4
PROMPTS = ["Two cats fight on a stage &amp; the fox   watches.", "一只猫在草地上散步。", DEFAULT_NEGATIVE_PROMPT]


@pytest.fixture(scope="module")
def spm_bytes() -> bytes:
    return train_tokenizer(SENTENCES, vocab_size=200, hard_vocab_limit=False)


def _tiny_umt5(vocab: int, *, d_model=32, d_kv=8, heads=4, d_ff=48, layers=2, buckets=32, seed=0):
    cfg = transformers.UMT5Config(vocab_size=vocab, d_model=d_model, d_kv=d_kv, num_heads=heads, d_ff=d_ff,
                                  num_layers=layers, relative_attention_num_buckets=buckets,
                                  feed_forward_proj="gated-gelu", attn_implementation="eager")
    torch.manual_seed(seed)
    model = transformers.UMT5EncoderModel(cfg).eval()
    with torch.no_grad():  # norms start at exactly 1; perturb them so a swapped or skipped norm is visible
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(1.0, 0.1)
    return model


@pytest.fixture(scope="module")
def ref(spm_bytes):
    return _tiny_umt5(SpieceTokenizer.from_bytes(spm_bytes).vocab_size + 8)


@pytest.fixture(scope="module")
def sd(ref, spm_bytes):
    return {**ref.state_dict(), "spiece_model": tokenizer_to_tensor(spm_bytes)}


@pytest.fixture(scope="module")
def enc(sd):
    return WanTextEncoder.from_state_dict(sd)


def _ref_rows(ref, tok, prompts, **kw):
    ids, mask = tok([clean_prompt(p) for p in prompts], **kw)
    with torch.no_grad():
        hidden = ref(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, d_model]
    return [hidden[i, :n] for i, n in enumerate(mask.sum(1).tolist())]


def test_parity_with_transformers_fp32(ref, enc):
    out = enc.encode(PROMPTS)
    want = _ref_rows(ref, enc.tokenizer, PROMPTS)
    assert enc.device == torch.device("cpu") and enc.dtype == torch.float32
    assert enc.model.encoder.embed_tokens.weight is enc.model.shared.weight  # tied after assign-loading
    assert enc.model.config._attn_implementation == "eager"
    for o, w, p in zip(out, want, PROMPTS):
        ids, _ = enc.tokenizer([clean_prompt(p)])
        assert o.shape == (ids.shape[1], 32) and o.dtype == torch.float32
        assert torch.equal(o, w)  # bit-identical
    assert len({o.shape[0] for o in out}) == 3  # true lengths differ per prompt; no padding rows returned


def test_batch_and_padding_do_not_change_rows(ref, enc):
    batched = enc.encode(PROMPTS)
    single = [enc.encode([p])[0] for p in PROMPTS]
    padded = _ref_rows(ref, enc.tokenizer, PROMPTS, pad_to_max_length=True)  # official: each row padded to 512
    for b, s, p in zip(batched, single, padded):
        torch.testing.assert_close(b, s, rtol=0, atol=1e-5)
        torch.testing.assert_close(b, p, rtol=0, atol=1e-5)


def _bucket(rel: torch.Tensor, buckets: int = 32, max_dist: int = 128) -> torch.Tensor:
    """Bidirectional T5 bucket of rel = k_pos - q_pos (wan22-spec.md 3.1)."""
    half, exact = buckets // 2, buckets // 4
    n = rel.abs()
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_dist / exact) * (half - exact)).long()
    return half * (rel > 0).long() + torch.where(n < exact, n, large.clamp(max=half - 1))


def _rms(x, w):
    x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
    return w * (x.type_as(w) if w.dtype in (torch.float16, torch.bfloat16) else x)


def _official_encode(sd, ids, mask, heads):
    """Official wan/modules/t5.py encoder semantics: fp32 softmax, masked_fill with finfo.min, no 1/sqrt(d)."""
    x = F.embedding(ids, sd["shared.weight"])  # [B, L, C]
    b, length, _ = x.shape
    pos = torch.arange(length)
    bucket = _bucket(pos[None, :] - pos[:, None])  # [Lq, Lk]
    for i in range(sum(k.endswith("SelfAttention.q.weight") for k in sd)):
        p = f"encoder.block.{i}.layer."
        h = _rms(x, sd[p + "0.layer_norm.weight"])
        q, k, v = (F.linear(h, sd[p + f"0.SelfAttention.{n}.weight"]).unflatten(-1, (heads, -1)) for n in "qkv")
        bias = x.new_zeros(b, heads, length, length) + sd[p + "0.SelfAttention.relative_attention_bias.weight"][
            bucket].permute(2, 0, 1)[None]  # [B, H, Lq, Lk]
        bias = bias.masked_fill(mask.view(b, 1, 1, length) == 0, torch.finfo(x.dtype).min)
        attn = torch.einsum("binc,bjnc->bnij", q, k) + bias
        attn = F.softmax(attn.float(), dim=-1).type_as(attn)
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", attn, v).flatten(2), sd[p + "0.SelfAttention.o.weight"])
        h = _rms(x, sd[p + "1.layer_norm.weight"])
        g = F.linear(h, sd[p + "1.DenseReluDense.wi_0.weight"])
        gate = 0.5 * g * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * torch.pow(g, 3.0))))  # in g.dtype
        x = x + F.linear(F.linear(h, sd[p + "1.DenseReluDense.wi_1.weight"]) * gate, sd[p + "1.DenseReluDense.wo.weight"])
    return _rms(x, sd["encoder.final_layer_norm.weight"])  # [B, L, C]


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-5), (torch.bfloat16, 0.0)])
def test_official_style_reference(sd, enc, dtype, atol):
    model_sd = {k: v.to(dtype) for k, v in sd.items() if k != "spiece_model"}
    ours = WanTextEncoder.from_state_dict(sd, dtype=dtype).encode(PROMPTS)
    for p, o in zip(PROMPTS, ours):
        ids, mask = enc.tokenizer([clean_prompt(p)])  # batch 1 as official (512-padding: see the test above)
        want = _official_encode(model_sd, ids, mask, heads=4)[0, :o.shape[0]]
        torch.testing.assert_close(o, want, rtol=0, atol=atol)


def test_bf16_close_to_fp32(sd, enc):
    fp32 = enc.encode(PROMPTS)
    low = WanTextEncoder.from_state_dict(sd, dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16 and low.model.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == \
        torch.bfloat16
    for a, b in zip(fp32, low.encode(PROMPTS)):
        assert b.dtype == torch.bfloat16 and b.shape == a.shape
        assert (b.float() - a).abs().max() < 0.05 * a.abs().max()


def test_fp16_keeps_wo_fp32(sd, enc):
    half = WanTextEncoder.from_state_dict(sd, dtype=torch.float16)
    assert half.model.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert half.model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float16
    for a, b in zip(enc.encode(PROMPTS), half.encode(PROMPTS)):
        assert b.dtype == torch.float16 and torch.isfinite(b).all()
        assert (b.float() - a).abs().max() < 0.01 * a.abs().max()


def test_comfy_fp8_scaled_is_dequantized(sd, enc):
    fp8, plain = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in sd.items():
        if ".SelfAttention." in k and k.endswith(("q.weight", "o.weight")) or "DenseReluDense" in k:
            scale = v.abs().max() / 448.0
            fp8[k] = (v / scale).to(torch.float8_e4m3fn)
            fp8[k.removesuffix("weight") + "scale_weight"] = scale.reshape(())
            plain[k] = fp8[k].float() * scale
        else:
            fp8[k] = plain[k] = v
    got = WanTextEncoder.from_state_dict(fp8, dtype=torch.float32)
    want = WanTextEncoder.from_state_dict(plain)
    for a, b in zip(got.encode(PROMPTS), want.encode(PROMPTS)):
        assert torch.equal(a, b)
    assert WanTextEncoder.from_state_dict(fp8).dtype == torch.bfloat16  # fp8 files default to bf16 compute


def test_truncates_to_512_tokens(enc, caplog):
    long_prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 60)
    with caplog.at_level(logging.WARNING, logger="wan_core.tokenizer"):
        (row,) = enc.encode([long_prompt])
    assert row.shape == (512, 32) and "beyond max_length=512" in caplog.text


@pytest.mark.parametrize("shape", [
    dict(d_model=32, d_kv=8, heads=4, d_ff=48, layers=2, buckets=32),
    dict(d_model=24, d_kv=16, heads=3, d_ff=40, layers=3, buckets=16),  # d_kv * heads != d_model
])
def test_infer_config_round_trip(shape):
    model = _tiny_umt5(96, **shape)
    meta = {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}
    cfg = infer_t5_config(meta)
    for field in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers",
                  "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon",
                  "dense_act_fn", "is_gated_act"):
        assert getattr(cfg, field) == getattr(model.config, field), field
    assert cfg._attn_implementation == "eager"


def test_missing_tokenizer_error_names_the_fix(sd, spm_bytes, tmp_path):
    bare = {k: v for k, v in sd.items() if k != "spiece_model"}
    with pytest.raises(ValueError, match="no embedded tokenizer.*umt5_xxl_fp16.safetensors.*tokenizer="):
        WanTextEncoder.from_state_dict(bare)
    (tmp_path / "spiece.model").write_bytes(spm_bytes)
    from_folder = WanTextEncoder.from_state_dict(bare, tokenizer=tmp_path)
    from_object = WanTextEncoder.from_state_dict(bare, tokenizer=SpieceTokenizer.from_bytes(spm_bytes))
    assert torch.equal(from_folder.encode(PROMPTS[:1])[0], from_object.encode(PROMPTS[:1])[0])


def test_strict_report_lists_every_problem(sd):
    bad = dict(sd)
    del bad["encoder.block.1.layer.1.layer_norm.weight"]
    bad["encoder.block.0.layer.0.SelfAttention.extra.weight"] = torch.zeros(1)
    bad["encoder.final_layer_norm.weight"] = torch.zeros(31)
    with pytest.raises(ValueError) as err:
        WanTextEncoder.from_state_dict(bad)
    msg = str(err.value)
    assert "block.1.layer.1.layer_norm.weight" in msg and "SelfAttention.extra.weight" in msg
    assert "final_layer_norm.weight: checkpoint (31,) vs model (32,)" in msg


def test_accepts_only_the_tied_embedding_key(sd, enc):
    tied = {k: v for k, v in sd.items() if k != "shared.weight"}
    assert torch.equal(WanTextEncoder.from_state_dict(tied).encode(PROMPTS[:1])[0], enc.encode(PROMPTS[:1])[0])


def test_rejects_wrong_checkpoints(sd, spm_bytes):
    official = {"token_embedding.weight": torch.zeros(4, 2), "spiece_model": tokenizer_to_tensor(spm_bytes)}
    with pytest.raises(ValueError, match="official Wan .pth names.*wan_core.convert"):
        WanTextEncoder.from_state_dict(official)
    t5 = {k: v for k, v in sd.items() if not k.startswith("encoder.block.1.layer.0.SelfAttention.relative")}
    with pytest.raises(ValueError, match="T5.*not a umT5"):
        infer_t5_config(t5)
    small = _tiny_umt5(16).state_dict()
    with pytest.raises(ValueError, match="does not belong to this encoder"):
        WanTextEncoder.from_state_dict(small, tokenizer=SpieceTokenizer.from_bytes(spm_bytes))


def test_encode_input_checks(enc):
    assert enc.encode([]) == []
    with pytest.raises(TypeError, match="list of prompts"):
        enc.encode("a cat")
