# Behaviour follows Wan-Video/Wan2.2 wan/modules/tokenizers.py (padding/truncation, EOS appended) and ComfyUI
# comfy/text_encoders/spiece_tokenizer.py (tokenizer read from a uint8 `spiece_model` tensor), both Apache-2.0 / GPL-3.0
# read for behaviour only; re-written. Tests: tests/test_tokenizer.py.
"""umT5 SentencePiece tokenizer built from model bytes, a uint8 tensor or a tokenizer folder (no network)."""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterable, Sequence

import torch

logger = logging.getLogger(__name__)

PAD_ID = 0  # T5 convention: padding id, masked out of attention
EOS_ID = 1  # T5 convention: appended after every prompt
UNK_ID = 2
_FOLDER_FILES = ("spiece.model", "tokenizer.json")
_SUBFOLDERS = (".", "tokenizer", "google/umt5-xxl")  # a tokenizer folder, a diffusers repo, an official Wan repo


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the umT5 tokenizer needs sentencepiece: `pip install sentencepiece`") from e
    return sentencepiece


class _SpmBackend:
    """sentencepiece.SentencePieceProcessor over serialized model bytes."""

    def __init__(self, model_bytes: bytes):
        spm = _sentencepiece()
        self.proc = spm.SentencePieceProcessor()
        try:
            self.proc.LoadFromSerializedProto(model_bytes)
        except (RuntimeError, OSError) as e:
            raise ValueError(f"invalid sentencepiece model ({len(model_bytes)} bytes): {e}; expected the bytes of "
                             "a spiece.model file or a checkpoint's `spiece_model` tensor") from e
        self.model_bytes = model_bytes
        self.vocab_size = self.proc.GetPieceSize()
        self.eos_id = self.proc.eos_id()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.proc.EncodeAsIds(texts)

    def decode(self, ids: list[int]) -> str:
        return self.proc.DecodeIds(ids)


class _JsonBackend:
    """A `tokenizers` tokenizer.json (fast tokenizer file), used only when a folder has no spiece.model."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.proc = Tokenizer.from_file(str(path))
        self.model_bytes = None  # cannot be embedded as `spiece_model`
        self.vocab_size = self.proc.get_vocab_size()
        eos = self.proc.token_to_id("</s>")
        self.eos_id = -1 if eos is None else eos

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.proc.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.proc.decode(ids, skip_special_tokens=True)


class SpieceTokenizer:
    """umT5 tokenizer: sentencepiece pieces + EOS (id 1), right-padded with id 0.

    Build it with `from_bytes`, `from_tensor` (ComfyUI's embedded `spiece_model`) or `from_folder`. Calling it
    does not clean prompts; `wan_core.prompts.clean_prompt` does (WanTextEncoder.encode calls both).
    """

    def __init__(self, backend: _SpmBackend | _JsonBackend, source: str):
        if backend.eos_id != EOS_ID:
            raise ValueError(f"tokenizer from {source} has EOS id {backend.eos_id}, but umT5 uses EOS id {EOS_ID} "
                             f"(pad {PAD_ID}, unk {UNK_ID}); train it with pad_id=0, eos_id=1, unk_id=2, bos_id=-1 "
                             "(see wan_core.tokenizer.train_tokenizer)")
        self._backend = backend
        self.source = source

    @classmethod
    def from_bytes(cls, model_bytes: bytes) -> "SpieceTokenizer":
        """From the serialized bytes of a sentencepiece model (the content of spiece.model)."""
        if not isinstance(model_bytes, (bytes, bytearray)) or not model_bytes:
            raise ValueError(f"expected non-empty sentencepiece model bytes, got {type(model_bytes).__name__}"
                             f"{'' if not isinstance(model_bytes, (bytes, bytearray)) else ' of length 0'}")
        return cls(_SpmBackend(bytes(model_bytes)), f"{len(model_bytes)} model bytes")

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> "SpieceTokenizer":
        """From a 1-D uint8 tensor holding sentencepiece model bytes (a checkpoint's `spiece_model` entry)."""
        if not torch.is_tensor(tensor) or tensor.dtype != torch.uint8 or tensor.dim() != 1:
            desc = f"{tensor.dtype} tensor of shape {tuple(tensor.shape)}" if torch.is_tensor(tensor) else \
                type(tensor).__name__
            raise ValueError(f"spiece_model must be a 1-D uint8 tensor of sentencepiece bytes, got {desc}; "
                             "build it with wan_core.tokenizer.tokenizer_to_tensor")
        if tensor.is_meta:
            raise ValueError("spiece_model is on the meta device (no data); load the checkpoint with real tensors")
        return cls.from_bytes(tensor.detach().cpu().contiguous().numpy().tobytes())

    @classmethod
    def from_folder(cls, folder: str | Path) -> "SpieceTokenizer":
        """From a tokenizer folder: `spiece.model` (preferred) or `tokenizer.json`, no network access.

        Also accepts a diffusers repo root (uses `tokenizer/`) or an official Wan repo root (`google/umt5-xxl/`).
        """
        root = Path(folder)
        for sub in _SUBFOLDERS:
            d = root / sub
            if (d / "spiece.model").is_file():
                return cls.from_bytes((d / "spiece.model").read_bytes())
            if (d / "tokenizer.json").is_file():
                return cls(_JsonBackend(d / "tokenizer.json"), str(d / "tokenizer.json"))
        raise FileNotFoundError(f"no tokenizer in {root}: looked for {' or '.join(_FOLDER_FILES)} in "
                                f"{', '.join(repr(s) for s in _SUBFOLDERS)}; pass the folder that holds spiece.model "
                                "(e.g. the `tokenizer/` folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers)")

    @property
    def vocab_size(self) -> int:
        return self._backend.vocab_size

    @property
    def model_bytes(self) -> bytes | None:
        """The sentencepiece model bytes (None for a tokenizer.json tokenizer); embed with tokenizer_to_tensor."""
        return self._backend.model_bytes

    def __call__(self, texts: Sequence[str], max_length: int = 512, *,
                 pad_to_max_length: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize a batch: returns (ids [B, L] int64, mask [B, L] int64), 1 on real tokens incl. EOS.

        L is the longest row (or `max_length` with `pad_to_max_length=True`, as the official pipeline pads).
        Rows longer than `max_length` keep their first `max_length - 1` pieces plus EOS; a warning names how
        many tokens were dropped.
        """
        if isinstance(texts, str):
            raise TypeError("pass a list of prompts, not a single str (wrap it: [prompt])")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1 (got {max_length})")
        rows = []
        for i, pieces in enumerate(self._backend.encode(list(texts))):
            row = list(pieces) + [EOS_ID]
            if len(row) > max_length:
                logger.warning("prompt %d has %d tokens (incl. EOS); dropped %d tokens beyond max_length=%d",
                               i, len(row), len(row) - max_length, max_length)
                row = row[:max_length - 1] + [EOS_ID]
            rows.append(row)
        width = max_length if pad_to_max_length else max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), width), PAD_ID, dtype=torch.int64)  # [B, L]
        mask = torch.zeros((len(rows), width), dtype=torch.int64)  # [B, L]
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
            mask[i, :len(row)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one row of ids, stopping at the first EOS (padding and EOS are not part of the text)."""
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        if EOS_ID in ids:
            ids = ids[:ids.index(EOS_ID)]
        return self._backend.decode(ids)


def tokenizer_to_tensor(model_bytes: bytes) -> torch.Tensor:
    """Sentencepiece model bytes as a 1-D uint8 tensor, to store as `spiece_model` in a safetensors file."""
    if not isinstance(model_bytes, (bytes, bytearray)) or not model_bytes:
        raise ValueError("expected non-empty sentencepiece model bytes (e.g. Path('spiece.model').read_bytes())")
    return torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8)  # [n_bytes], owns a writable copy


def train_tokenizer(sentences: Iterable[str], *, vocab_size: int, **options) -> bytes:
    """Train a small umT5-convention sentencepiece model (pad 0, EOS 1, unk 2, no BOS) and return its bytes.

    For tiny demo/test models. `options` go to sentencepiece.SentencePieceTrainer.train (e.g. model_type).
    """
    spm = _sentencepiece()
    sink = io.BytesIO()
    settings = dict(vocab_size=vocab_size, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
                    character_coverage=1.0, model_type="unigram", minloglevel=2)
    settings.update(options)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=sink, **settings)
    return sink.getvalue()
