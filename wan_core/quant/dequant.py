# Block layouts follow the `gguf` package's NumPy reference (ggml-org/llama.cpp gguf-py/gguf/quants.py, MIT), read for
# behaviour and re-written in torch. Parity: tests/test_gguf_dequant.py (bit-exact against gguf.quants.dequantize).
"""GGUF block dequantization in torch: packed uint8 blocks -> float tensors on the input's device, no NumPy.

A quantized GGUF row of `n` values is `n / block_size` blocks of `type_size` bytes. Every function here takes the
packed bytes as a uint8 tensor [rows, row_bytes] (any device) and returns fp32 values computed with the same operation
order as the reference, so results are bit-identical to `gguf.quants.dequantize`; `dequantize` converts rows in chunks
into a preallocated output of the requested dtype, so the temporaries stay small next to the layer.
"""
from __future__ import annotations

from typing import Callable

import torch

QK_K = 256  # super-block size of the K-quants
# type name -> (values per block, bytes per block), as gguf.GGML_QUANT_SIZES
BLOCK_SIZES: dict[str, tuple[int, int]] = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2),
    "Q8_0": (32, 34), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q4_0": (32, 18), "Q4_1": (32, 20),
    "Q6_K": (QK_K, 210), "Q5_K": (QK_K, 176), "Q4_K": (QK_K, 144), "Q3_K": (QK_K, 110), "Q2_K": (QK_K, 84),
}
FLOAT_TYPES = ("F32", "F16", "BF16")
CHUNK_ELEMENTS = 1 << 22  # output values converted per step (16 MiB of fp32 temporaries)


def _f16(b: torch.Tensor) -> torch.Tensor:
    """Bytes [n, 2] -> fp32 [n, 1] (little-endian fp16)."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor, groups: int) -> torch.Tensor:
    """[n, groups * w] bytes -> [n, groups, 2, w]: per group the low nibbles first, then the high ones."""
    n = qs.shape[0]
    qs = qs.reshape(n, groups, 1, -1)  # [n, g, 1, w]
    return torch.cat([qs & 0x0F, qs >> 4], dim=2)  # [n, g, 2, w]


def _crumbs(qs: torch.Tensor, groups: int, w: int = 32) -> torch.Tensor:
    """2-bit fields: [n, groups * w] -> [n, groups, 4, w] with shifts 0, 2, 4, 6."""
    n = qs.shape[0]
    qs = qs.reshape(n, groups, 1, w)  # [n, g, 1, w]
    return torch.cat([(qs >> s) & 3 for s in (0, 2, 4, 6)], dim=2)  # [n, g, 4, w]


def _bits(b: torch.Tensor, w: int) -> torch.Tensor:
    """Bit planes: [n, w] bytes -> [n, 8, w], plane i = bit i of every byte."""
    return torch.stack([(b >> i) & 1 for i in range(8)], dim=1)  # [n, 8, w]


def _bits32(qh: torch.Tensor) -> torch.Tensor:
    """Four bytes = one little-endian uint32 per block -> its 32 bits in order [n, 32]."""
    return torch.cat([(qh >> i) & 1 for i in range(8)], dim=1).reshape(-1, 8, 4).transpose(1, 2).reshape(-1, 32)


def _q8_0(b):
    return b[:, 2:].contiguous().view(torch.int8).float() * _f16(b[:, :2])


def _q4_0(b):
    q = _nibbles(b[:, 2:], 1).reshape(b.shape[0], -1).to(torch.int8) - 8  # [n, 32]
    return _f16(b[:, :2]) * q.float()


def _q4_1(b):
    q = _nibbles(b[:, 4:], 1).reshape(b.shape[0], -1).float()  # [n, 32]
    return _f16(b[:, :2]) * q + _f16(b[:, 2:4])


def _q5(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """5-bit values [n, 32] (uint8) from 4 high-bit bytes and 16 nibble bytes."""
    ql = _nibbles(qs, 1).reshape(qs.shape[0], -1)  # [n, 32]
    return ql | (_bits32(qh) << 4)


def _q5_0(b):
    q = _q5(b[:, 2:6], b[:, 6:]).to(torch.int8) - 16
    return _f16(b[:, :2]) * q.float()


def _q5_1(b):
    q = _q5(b[:, 4:8], b[:, 8:]).float()
    return _f16(b[:, :2]) * q + _f16(b[:, 2:4])


def _q2_k(b):
    n = b.shape[0]
    scales, qs = b[:, :16], b[:, 16:80]
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = (d * (scales & 0x0F).float()).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).reshape(n, 16, 1)
    q = _crumbs(qs, 2).reshape(n, 16, 16).float()  # [n, 16 sub-blocks, 16]
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k(b):
    n = b.shape[0]
    hmask, qs, scales, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    low = torch.cat([scales[:, :8] & 0x0F, scales[:, :8] >> 4], dim=1)  # [n, 16]
    high = torch.cat([(scales[:, 8:12] >> s) & 3 for s in (0, 2, 4, 6)], dim=1)  # [n, 16]
    sc = ((low | (high << 4)).to(torch.int8) - 32).float()
    dl = (d * sc).reshape(n, 16, 1)
    ql = _crumbs(qs, 2).reshape(n, 16, 16)
    qh = _bits(hmask, 32).reshape(n, 16, 16) ^ 1  # the offset is 4 where the mask bit is 0
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).float()
    return (dl * q).reshape(n, QK_K)


def _scale_min_k4(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and mins packed in 12 bytes (Q4_K, Q5_K) -> two [n, 8] uint8 tensors."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=1)
    return sc, mn


def _k4_scales(b):
    n = b.shape[0]
    sc, mn = _scale_min_k4(b[:, 4:16])
    d = (_f16(b[:, :2]) * sc.float()).reshape(n, 8, 1)
    dm = (_f16(b[:, 2:4]) * mn.float()).reshape(n, 8, 1)
    return d, dm


def _q4_k(b):
    n = b.shape[0]
    d, dm = _k4_scales(b)
    q = _nibbles(b[:, 16:], 4).reshape(n, 8, 32).float()
    return (d * q - dm).reshape(n, QK_K)


def _q5_k(b):
    n = b.shape[0]
    d, dm = _k4_scales(b)
    ql = _nibbles(b[:, 48:], 4).reshape(n, 8, 32)
    qh = _bits(b[:, 16:48], 32)  # [n, 8, 32]
    q = (ql | (qh << 4)).float()
    return (d * q - dm).reshape(n, QK_K)


def _q6_k(b):
    n = b.shape[0]
    ql, qh, scales, d = b[:, :128], b[:, 128:192], b[:, 192:208], _f16(b[:, 208:210])
    d = (d * scales.contiguous().view(torch.int8).float()).reshape(n, 16, 1)
    low = _nibbles(ql, 2).reshape(n, 8, 32)
    high = _crumbs(qh, 2).reshape(n, 8, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16).float()
    return (d * q).reshape(n, QK_K)


def _f32(b):
    return b.contiguous().view(torch.float32)


def _f16_values(b):
    return b.contiguous().view(torch.float16).float()


def _bf16(b):
    return b.contiguous().view(torch.bfloat16).float()


BLOCK_DEQUANT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "F32": _f32, "F16": _f16_values, "BF16": _bf16, "Q8_0": _q8_0, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q4_0": _q4_0,
    "Q4_1": _q4_1, "Q6_K": _q6_k, "Q5_K": _q5_k, "Q4_K": _q4_k, "Q3_K": _q3_k, "Q2_K": _q2_k,
}


def row_bytes(qtype: str, cols: int) -> int:
    """Bytes of one packed row of `cols` values; ValueError when cols does not fill whole blocks."""
    block, size = BLOCK_SIZES[qtype]
    if cols % block:
        raise ValueError(f"a {qtype} row holds whole blocks of {block} values; {cols} is not a multiple")
    return cols // block * size


def dequantize_rows(raw: torch.Tensor, qtype: str) -> torch.Tensor:
    """Packed rows uint8 [rows, row_bytes] -> fp32 [rows, cols], bit-identical to the gguf package."""
    block, size = BLOCK_SIZES[qtype]
    rows = raw.shape[0]
    out = BLOCK_DEQUANT[qtype](raw.reshape(-1, size))  # [blocks, block]
    return out.reshape(rows, -1)


def dequantize(raw: torch.Tensor, qtype: str, shape, dtype: torch.dtype = torch.float32, *,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Packed GGUF tensor (uint8, [rows, row_bytes] or flat) -> `dtype` tensor of `shape` on `device` (default: raw's).

    The bytes are moved first (packed data is what travels); values are converted a few rows at a time.
    """
    if qtype not in BLOCK_DEQUANT:
        raise ValueError(f"cannot dequantize GGUF type {qtype}; supported: {', '.join(BLOCK_DEQUANT)}")
    shape = tuple(int(s) for s in shape)
    cols = shape[-1] if shape else 1
    rows = max(1, raw.numel() // row_bytes(qtype, cols))
    raw = raw.to(device=device, non_blocking=True).reshape(rows, -1)  # [rows, row_bytes]
    out = torch.empty(rows, cols, dtype=dtype, device=raw.device)  # [rows, cols]
    step = max(1, CHUNK_ELEMENTS // max(1, cols))
    for i in range(0, rows, step):
        out[i:i + step] = dequantize_rows(raw[i:i + step], qtype)
    return out.reshape(shape)
