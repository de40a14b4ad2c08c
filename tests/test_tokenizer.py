"""Tokenizer (sentencepiece from bytes / tensor / folder) and prompt cleaning; no downloads."""
import logging

import pytest
import torch

from wan_core.prompts import DEFAULT_NEGATIVE_PROMPT, clean_prompt
from wan_core.tokenizer import EOS_ID, PAD_ID, SpieceTokenizer, tokenizer_to_tensor, train_tokenizer

SENTENCES = [
    "A cat walks on the grass in the sunshine.",
    "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage.",
    "The quick brown fox jumps over the lazy dog!",
    "一只猫在阳光下的草地上散步。",
    "两只穿着拳击装备的拟人化猫在聚光灯下的舞台上激烈搏斗。",
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量",
] * 4
PROMPTS = ["A cat walks on the grass.", "两只猫在舞台上激烈搏斗。", "The fox jumps, 一只猫 watches."]


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return train_tokenizer(SENTENCES, vocab_size=200, hard_vocab_limit=False)


@pytest.fixture(scope="module")
def tok(model_bytes) -> SpieceTokenizer:
    return SpieceTokenizer.from_bytes(model_bytes)


def test_round_trip_english_and_chinese_with_eos(tok):
    texts = [clean_prompt(p) for p in PROMPTS]
    ids, mask = tok(texts)
    assert ids.dtype == torch.int64 and ids.shape == mask.shape and ids.shape[0] == len(texts)
    for row, m, text in zip(ids, mask, texts):
        n = int(m.sum())
        assert row[n - 1] == EOS_ID and (row[n:] == PAD_ID).all() and (m[:n] == 1).all() and (m[n:] == 0).all()
        assert EOS_ID not in row[:n - 1].tolist()
        assert tok.decode(row) == text
    assert int(mask.sum(1).max()) == ids.shape[1]  # padded to the longest row, not to max_length


def test_tensor_round_trip(model_bytes, tok):
    t = tokenizer_to_tensor(model_bytes)
    assert t.dtype == torch.uint8 and t.dim() == 1 and t.numel() == len(model_bytes)
    assert t.numpy().tobytes() == model_bytes
    other = SpieceTokenizer.from_tensor(t)
    assert torch.equal(other(PROMPTS)[0], tok(PROMPTS)[0])
    assert other.model_bytes == model_bytes


def test_truncation_keeps_eos_and_warns(tok, caplog):
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 8)
    full, _ = tok([text], max_length=10_000)
    n = full.shape[1]
    with caplog.at_level(logging.WARNING, logger="wan_core.tokenizer"):
        ids, mask = tok([text, "cat"], max_length=12)
    assert ids.shape == (2, 12) and int(mask[0].sum()) == 12
    assert torch.equal(ids[0, :11], full[0, :11]) and ids[0, 11] == EOS_ID
    assert f"dropped {n - 12} tokens" in caplog.text and "max_length=12" in caplog.text


def test_pad_to_max_length(tok):
    ids, mask = tok(["cat"], max_length=512, pad_to_max_length=True)
    assert ids.shape == (1, 512) and int(mask.sum()) == int((ids != PAD_ID).sum())


def test_from_folder_spiece_and_repo_layouts(model_bytes, tok, tmp_path):
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "spiece.model").write_bytes(model_bytes)
    for folder in (tmp_path, tmp_path / "tokenizer"):  # diffusers repo root and the tokenizer folder itself
        assert torch.equal(SpieceTokenizer.from_folder(folder)(PROMPTS)[0], tok(PROMPTS)[0])
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        SpieceTokenizer.from_folder(tmp_path / "missing")


def test_from_folder_tokenizer_json(tok, tmp_path):
    """A folder with only tokenizer.json (built offline from the sentencepiece pieces) gives the same ids."""
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is a transformers dependency")
    proc = tok._backend.proc
    vocab = [(proc.IdToPiece(i), proc.GetScore(i)) for i in range(proc.GetPieceSize())]
    fast = tokenizers.Tokenizer(tokenizers.models.Unigram(vocab, unk_id=2, byte_fallback=False))
    fast.normalizer = tokenizers.normalizers.NFKC()
    fast.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    fast.decoder = tokenizers.decoders.Metaspace()
    fast.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in ("<pad>", "</s>", "<unk>")])
    fast.save(str(tmp_path / "tokenizer.json"))
    other = SpieceTokenizer.from_folder(tmp_path)
    assert other.model_bytes is None
    texts = [clean_prompt(p) for p in PROMPTS]
    assert torch.equal(other(texts)[0], tok(texts)[0])
    assert [other.decode(r) for r in other(texts)[0]] == texts


def test_rejects_bad_inputs(tok):
    with pytest.raises(ValueError, match="invalid sentencepiece model"):
        SpieceTokenizer.from_bytes(b"not a sentencepiece model")
    with pytest.raises(ValueError, match="uint8"):
        SpieceTokenizer.from_tensor(torch.zeros(8, dtype=torch.float32))
    with pytest.raises(TypeError, match="list of prompts"):
        tok("a single string")


def test_rejects_non_t5_special_ids():
    wrong = train_tokenizer(SENTENCES, vocab_size=200, hard_vocab_limit=False, unk_id=1, eos_id=2)
    with pytest.raises(ValueError, match="EOS id 2.*eos_id=1"):
        SpieceTokenizer.from_bytes(wrong)


@pytest.mark.parametrize("raw, clean", [
    ("  a   cat\n\twalks  ", "a cat walks"),
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("&amp;lt;b&amp;gt; bold", "<b> bold"),  # html-unescaped twice
    ("âœ” done", "✔ done"),  # mojibake repaired by ftfy
    ("一只猫在阳光下的草地上散步。", "一只猫在阳光下的草地上散步。"),
    # ftfy (as in the official pipeline) turns full-width punctuation into ASCII; the hanzi are untouched
    (" 两只猫，\n 激烈搏斗！ ", "两只猫, 激烈搏斗!"),
])
def test_clean_prompt(raw, clean):
    assert clean_prompt(raw) == clean


def test_default_negative_prompt_is_clean_chinese():
    assert DEFAULT_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态") and DEFAULT_NEGATIVE_PROMPT.endswith("倒着走")
    assert "JPEG压缩残留" in DEFAULT_NEGATIVE_PROMPT and len(DEFAULT_NEGATIVE_PROMPT) == 137
    # what the official pipeline actually tokenizes: ftfy makes the full-width commas ASCII
    assert clean_prompt(DEFAULT_NEGATIVE_PROMPT) == DEFAULT_NEGATIVE_PROMPT.replace("，", ",")
    with pytest.raises(TypeError, match="str"):
        clean_prompt(None)
