# Ported from Wan-Video/Wan2.2@42bf4cf wan/modules/model.py (rope_params, rope_apply; Apache-2.0), cross-checked
# against huggingface/diffusers models/transformers/transformer_wan.py (WanRotaryPosEmbed; Apache-2.0).
# Parity: tests/test_dit_parity.py::test_fp32_parity_against_diffusers
"""3D rotary position embedding of the Wan DiT.

Each head's D channels form D/2 complex pairs, interleaved: (x[2i], x[2i+1]) is x[2i] + j*x[2i+1]. The pairs are
split between the frame, height and width axes as (c - 2*(c//3), c//3, c//3) with c = D/2 (22/21/21 for D = 128);
the pair i of an axis with n_axis pairs rotates by position * theta^(-i/n_axis). Positions are integer indices on
the post-patch token grid, starting at 0.
"""
from __future__ import annotations

import torch
from torch import nn


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs given to the (frame, height, width) axes: 22/21/21 for head_dim 128."""
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be even for RoPE")
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def rope_angles(head_dim: int, max_len: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles [max_len, head_dim/2] in float64: column blocks (frame | height | width), CPU."""
    blocks = []
    pos = torch.arange(max_len, dtype=torch.float64)
    for n in axis_pairs(head_dim):
        inv_freq = theta ** (-torch.arange(n, dtype=torch.float64) / n)  # = theta^(-2i / (2n))
        blocks.append(torch.outer(pos, inv_freq))  # [max_len, n]
    return torch.cat(blocks, dim=1)


class Rope3D(nn.Module):
    """Holds the per-axis cos/sin tables (non-persistent fp32 buffers) and builds the table of a token grid."""

    def __init__(self, head_dim: int, max_len: int = 1024, theta: float = 10000.0, *, device=None):
        super().__init__()
        self.head_dim, self.max_len, self.theta = head_dim, max_len, theta
        self.register_buffer("cos", torch.empty(max_len, head_dim // 2, device=device), persistent=False)
        self.register_buffer("sin", torch.empty(max_len, head_dim // 2, device=device), persistent=False)
        if self.cos.device.type != "meta":
            self.materialize(self.cos.device)

    def materialize(self, device=None) -> None:
        """(Re)compute the tables on `device` (float64 math on the CPU, stored fp32); used after a meta build."""
        angles = rope_angles(self.head_dim, self.max_len, self.theta)
        self.cos = angles.cos().float().to(device)  # [max_len, D/2]
        self.sin = angles.sin().float().to(device)

    def forward(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """Complex64 rotation table [L, 1, D/2] for a (F', H', W') token grid, row-major (f, h, w) token order."""
        f, h, w = grid
        if max(grid) > self.max_len:
            raise ValueError(f"token grid {grid} exceeds the RoPE table length {self.max_len}; "
                             "use fewer frames or a smaller resolution")
        nf, nh, nw = axis_pairs(self.head_dim)
        cos = self.cos.to(device)
        sin = self.sin.to(device)
        table = torch.complex(cos, sin)  # [max_len, D/2]
        tf, th, tw = table.split((nf, nh, nw), dim=1)
        table = torch.cat([
            tf[:f].view(f, 1, 1, nf).expand(f, h, w, nf),
            th[:h].view(1, h, 1, nh).expand(f, h, w, nh),
            tw[:w].view(1, 1, w, nw).expand(f, h, w, nw),
        ], dim=-1)  # [F', H', W', D/2]
        return table.reshape(f * h * w, 1, self.head_dim // 2)  # [L, 1, D/2]


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, L, H, D] by a complex table [L, 1, D/2] (from Rope3D); math in fp32, result in x.dtype."""
    b, l, h, d = x.shape
    if torch.compiler.is_compiling():  # inductor has no code generation for complex ops: the same product in reals
        xr = x.float().reshape(b, l, h, d // 2, 2)  # [B, L, H, D/2, (re, im)]
        tr = torch.view_as_real(table)  # [L, 1, D/2, (cos, sin)]
        re, im, c, s = xr[..., 0], xr[..., 1], tr[..., 0], tr[..., 1]
        return torch.stack([re * c - im * s, re * s + im * c], dim=-1).reshape(b, l, h, d).to(x.dtype)
    xc = torch.view_as_complex(x.float().reshape(b, l, h, d // 2, 2))  # [B, L, H, D/2] complex64
    return torch.view_as_real(xc * table).reshape(b, l, h, d).to(x.dtype)  # [B, L, H, D]
