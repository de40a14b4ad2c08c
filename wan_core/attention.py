"""Multi-head attention for the Wan DiT on torch's fused scaled_dot_product_attention (no mask, no dropout).

The layout is [B, L, H, D] (tokens before heads), as in Wan-Video/Wan2.2 wan/modules/attention.py; SDPA wants
[B, H, L, D], so the transposes are views and SDPA picks its fused kernel (flash / memory-efficient / CPU flash).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for q [B, Lq, H, D], k and v [B, Lk, H, D]; returns [B, Lq, H, D] in q.dtype."""
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention expects q [B, Lq, H, D] and k, v [B, Lk, H, D]; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    k = k.to(q.dtype)
    v = v.to(q.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, H, Lq, D]
    return out.transpose(1, 2)  # [B, Lq, H, D]
