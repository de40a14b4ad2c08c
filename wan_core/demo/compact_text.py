"""Training-time speed-up for the DiT: attend to the 512-token zero padding as one weighted token.

The DiT zero-pads the text to `text_len` (512) tokens; after `text_embedding` every padding row is the same vector,
so cross-attention over n identical keys/values equals attention over one copy whose logit gets + log(n). Inside
`compact_text(dit, n_real)` the text embedding and the cross-attentions compute exactly that (the same function up
to float rounding, about half the FLOPs of the tiny demo DiT). Inference never uses this. Parity:
tests/test_demo_train.py::test_compact_text_matches_full_padding.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F


def _embed(seq: torch.nn.Module, n_keep: int):
    def forward(context: torch.Tensor) -> torch.Tensor:  # [B, text_len, D] -> [B, n_keep, C]
        return torch.nn.Sequential.forward(seq, context[:, :n_keep])
    return forward


def _cross(attn: torch.nn.Module, n_pad: int):
    def forward(x: torch.Tensor, context: torch.Tensor, attention=None) -> torch.Tensor:  # training: always SDPA
        heads = attn.num_heads
        q = attn.norm_q(attn.q(x)).unflatten(2, (heads, -1)).transpose(1, 2)  # [B, H, L, D]
        k = attn.norm_k(attn.k(context)).unflatten(2, (heads, -1)).transpose(1, 2)  # [B, H, n_keep, D]
        v = attn.v(context).unflatten(2, (heads, -1)).transpose(1, 2)  # [B, H, n_keep, D]
        bias = torch.zeros(1, context.shape[1], dtype=q.dtype, device=q.device)  # [1, n_keep], broadcast
        bias[0, -1] = math.log(n_pad)  # the last row stands for all n_pad identical padding rows
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, H, L, D]
        return attn.o(out.transpose(1, 2).flatten(2))  # [B, L, C]
    return forward


@contextlib.contextmanager
def compact_text(dit: torch.nn.Module, n_real: int):
    """While active, dit(x, t, context) with context [B, n_real, text_dim] (rows past each prompt zero) treats the
    text_len - n_real padding rows as one row weighted n times. Needs n_real < text_len."""
    n_pad = dit.cfg.text_len - n_real
    if n_pad < 1:
        raise ValueError(f"compact_text needs fewer than text_len={dit.cfg.text_len} text tokens (got {n_real})")
    patched = [(dit.text_embedding, _embed(dit.text_embedding, n_real + 1))]
    patched += [(block.cross_attn, _cross(block.cross_attn, n_pad)) for block in dit.blocks]
    for module, fn in patched:
        module.forward = fn  # instance attribute shadows the class method
    try:
        yield dit
    finally:
        for module, _ in patched:
            del module.forward
