"""Ulysses sequence parallelism: each rank holds 1/U of the video tokens; self-attention swaps that token split for
a head split with one `all_to_all_single` before attention and one after.

Written from the DeepSpeed-Ulysses idea as the official Wan2.2 code applies it (Wan-Video/Wan2.2@42bf4cf
wan/distributed/ulysses.py, sequence_parallel.py; read, not copied). Differences: `all_to_all_single` (gloo has it in
every torch 2.x; the list form is missing on older torch), q, k and v travel in ONE all-to-all, and the padding
tokens are cut off the gathered keys/values instead of masked, so any attention backend (SDPA, sage, flash) runs
unchanged. Inference only: the collectives here are not autograd-aware.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def valid_sizes(num_heads: int) -> list[int]:
    """Ulysses sizes usable with num_heads attention heads: its divisors (24 heads: 1 2 3 4 6 8 12 24)."""
    return [d for d in range(1, num_heads + 1) if num_heads % d == 0]


def check_ulysses(num_heads: int, size: int) -> None:
    """Raise ValueError unless `size` divides the head count (each rank attends over num_heads / size whole heads)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or num_heads % size:
        sizes = ", ".join(map(str, valid_sizes(num_heads)))
        raise ValueError(f"--ulysses {size} does not divide the DiT's {num_heads} attention heads (each rank attends "
                         f"over num_heads / U whole heads); valid sizes: {sizes}")


def padded_length(length: int, size: int) -> int:
    """length rounded up to a multiple of size (the sequence every rank's shard is cut from)."""
    return -(-length // size) * size


def shard_tokens(t: torch.Tensor, size: int, rank: int, *, dim: int = 1, fill: float | complex = 0.0) -> torch.Tensor:
    """This rank's contiguous 1/size of t along `dim`, after padding that dim with `fill` to a multiple of size."""
    n = t.shape[dim]
    pad = padded_length(n, size) - n
    if pad:
        shape = list(t.shape)
        shape[dim] = pad
        t = torch.cat([t, t.new_full(shape, fill)], dim=dim)
    return t.chunk(size, dim=dim)[rank].contiguous()


def _exchange(send: torch.Tensor, group) -> torch.Tensor:
    """all_to_all_single on dim 0 of send [U, ...]: slice j goes to rank j; returns recv [U, ...] (slice j from j)."""
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    return recv


def tokens_to_heads(t: torch.Tensor, size: int, group=None) -> torch.Tensor:
    """[*lead, L/U, H, D] (my tokens, all heads) -> [*lead, L, H/U, D] (all tokens, my heads), rank order = token
    order. Bytes sent per rank: (U-1)/U of the input."""
    *lead, local, heads, d = t.shape
    send = t.reshape(*lead, local, size, heads // size, d).movedim(-3, 0).contiguous()  # [U, *lead, L/U, H/U, D]
    recv = _exchange(send, group)  # recv[j]: rank j's tokens of my head group
    return recv.movedim(0, -4).reshape(*lead, size * local, heads // size, d)


def heads_to_tokens(t: torch.Tensor, size: int, group=None) -> torch.Tensor:
    """The inverse of tokens_to_heads: [*lead, L, H/U, D] -> [*lead, L/U, H, D]."""
    *lead, length, hs, d = t.shape
    send = t.reshape(*lead, size, length // size, hs, d).movedim(-4, 0).contiguous()  # [U, *lead, L/U, H/U, D]
    recv = _exchange(send, group)  # recv[j]: my tokens of head group j
    return recv.movedim(0, -3).reshape(*lead, length // size, size * hs, d)


def ulysses_attention(inner: AttentionFn, size: int, real_length: int, group=None) -> AttentionFn:
    """Self-attention over a sequence sharded in U contiguous pieces (the last one padded): attention(q, k, v) with
    q, k, v [B, L_pad/U, H, D] -> [B, L_pad/U, H, D], equal to `inner` on the whole unpadded sequence.

    After the all-to-all every rank holds the whole sequence for H/U heads; the padding tokens (positions >=
    real_length) are cut off queries, keys and values, so they never enter a real token's softmax (exact, no mask),
    and zero rows stand in for their outputs."""

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qkv = tokens_to_heads(torch.stack([q, k, v.to(q.dtype)]), size, group)  # [3, B, L_pad, H/U, D]
        length = qkv.shape[2]
        q, k, v = qkv[:, :, :real_length].unbind(0)  # [B, L, H/U, D] each
        out = inner(q, k, v)  # [B, L, H/U, D]
        out = F.pad(out, (0, 0, 0, 0, 0, length - real_length))  # [B, L_pad, H/U, D]
        return heads_to_tokens(out.contiguous(), size, group)  # [B, L_pad/U, H, D]

    return attention
