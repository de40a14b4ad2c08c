"""The demo model's text side in training: the tokenizer, the tiny umT5 encoder (with autograd) and the
training-only read-out of the scene's attributes from its encoding (`AttributeHeads`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...prompts import DEFAULT_NEGATIVE_PROMPT, clean_prompt
from ...tokenizer import SpieceTokenizer, train_tokenizer
from ..captions import corpus
from ..world import BACKGROUND_COLOURS, MOTIONS, OBJECT_COLOURS, SHAPES
from .config import T5Spec, TrainConfig


def train_demo_tokenizer(cfg: TrainConfig) -> SpieceTokenizer:
    """Sentencepiece (unigram, character_coverage 1.0) on cleaned EN+ZH captions (+ the default negative prompt, so
    its characters are known)."""
    sentences = [clean_prompt(c) for c in corpus(cfg.tokenizer_sentences, seed=cfg.seed)]
    sentences += [clean_prompt(DEFAULT_NEGATIVE_PROMPT)] * 20
    return SpieceTokenizer.from_bytes(train_tokenizer(sentences, vocab_size=cfg.vocab_size, input_sentence_size=0,
                                                      shuffle_input_sentence=False, num_threads=1))


def build_text_encoder(spec: T5Spec, vocab: int):
    from transformers import UMT5Config, UMT5EncoderModel

    t5 = UMT5Config(vocab_size=vocab, d_model=spec.d_model, d_kv=spec.d_kv, d_ff=spec.d_ff, num_layers=spec.num_layers,
                    num_heads=spec.num_heads, relative_attention_num_buckets=spec.buckets,
                    relative_attention_max_distance=128, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
                    dropout_rate=0.0, is_encoder_decoder=False, use_cache=False)
    t5._attn_implementation = "eager"  # as WanTextEncoder loads it
    return UMT5EncoderModel(t5)


def spec_of(model) -> T5Spec:
    """The T5Spec of a transformers UMT5EncoderModel (e.g. one read back from a shipped file)."""
    c = model.config
    return T5Spec(d_model=c.d_model, d_kv=c.d_kv, num_heads=c.num_heads, d_ff=c.d_ff, num_layers=c.num_layers,
                  buckets=c.relative_attention_num_buckets)


def encode_text_train(model, tokenizer: SpieceTokenizer, prompts: list[str], *, with_mask: bool = False):
    """What `pad_context(WanTextEncoder.encode(prompts))` computes, with autograd: [B, max L_i, d_model], rows past
    each prompt's true length (incl. EOS) are zero. `with_mask` also returns the [B, L] token mask."""
    ids, mask = tokenizer([clean_prompt(p) for p in prompts], max_length=512)  # [B, L] each
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, D]
    hidden = hidden * mask[..., None].to(hidden.dtype)
    return (hidden, mask) if with_mask else hidden


# Attributes the auxiliary text loss reads back: (name, classes); a second object's slots have a "none" class.
_ATTRIBUTES = (("colour", sorted(OBJECT_COLOURS)), ("shape", list(SHAPES)), ("motion", list(MOTIONS)))


class AttributeHeads(torch.nn.Module):
    """Training-only linear read-out of a scene's attributes from the mean-pooled text encoding: each object's
    colour/shape/motion (object 2 may be "none"), the background colour and two-tone. Its loss makes every
    attribute word, English or Chinese, land in the encoding early and in a shared place, which the DiT's
    cross-attention then finds; the heads are not part of the shipped encoder."""

    def __init__(self, d_model: int):
        super().__init__()
        sizes = [len(c) for _, c in _ATTRIBUTES]
        self.heads = torch.nn.ModuleList([torch.nn.Linear(d_model, n) for n in sizes] +
                                         [torch.nn.Linear(d_model, n + 1) for n in sizes] +
                                         [torch.nn.Linear(d_model, len(BACKGROUND_COLOURS)),
                                          torch.nn.Linear(d_model, 2)])

    @staticmethod
    def labels(scene) -> list[int]:
        out = [classes.index(getattr(scene.objects[0], name)) for name, classes in _ATTRIBUTES]
        second = scene.objects[1] if len(scene.objects) > 1 else None
        out += [len(classes) if second is None else classes.index(getattr(second, name))
                for name, classes in _ATTRIBUTES]
        return out + [sorted(BACKGROUND_COLOURS).index(scene.background), int(scene.two_tone)]

    def loss(self, context: torch.Tensor, mask: torch.Tensor, scenes: list) -> torch.Tensor:
        """Mean cross-entropy over the attributes of the captioned rows (`scenes[i]` None: a dropped caption)."""
        rows = [i for i, sc in enumerate(scenes) if sc is not None]
        if not rows:
            return context.sum() * 0
        m = mask[rows].to(context)[..., None]
        pooled = (context[rows] * m).sum(1) / m.sum(1).clamp(min=1)
        target = torch.tensor([self.labels(scenes[i]) for i in rows])  # [R, heads]
        return torch.stack([F.cross_entropy(head(pooled), target[:, k]) for k, head in enumerate(self.heads)]).mean()
