"""Synthetic GGUF files for the quantization tests: well-formed random blocks, foreign architectures, damage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wan_core.config import WanConfig
from wan_core.quant.dequant import BLOCK_SIZES

K_TYPES = ("Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K")
# byte ranges of the fp16 scale fields in each K-quant block (gguf-py quants.py layouts)
K_SCALE_BYTES = {"Q2_K": (80, 84), "Q3_K": (108, 110), "Q4_K": (0, 4), "Q5_K": (0, 4), "Q6_K": (208, 210)}
K_DIT = WanConfig(dim=256, ffn_dim=256, num_heads=2, num_layers=1, text_dim=32, freq_dim=32)  # rows fill K blocks


def random_k_blocks(qtype: str, rows: int, cols: int, rng: np.random.Generator, scale: float = 1e-3) -> np.ndarray:
    """Random packed K-quant rows [rows, row_bytes] with finite fp16 scales (|N(0, scale)|)."""
    block, size = BLOCK_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    a, b = K_SCALE_BYTES[qtype]
    raw[..., a:b] = np.abs(rng.normal(0, scale, (rows, cols // block, (b - a) // 2))).astype(np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


def write_gguf(path: Path, tensors: dict, *, arch: str | None = "wan") -> Path:
    """tensors: {name: float array (written F32) | (uint8 packed array, GGUF type name)}."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch=arch or "wan")
    if arch is None:  # sd.cpp-style file without general.architecture
        writer.kv_data[0].pop("general.architecture", None)
    for name, value in tensors.items():
        if isinstance(value, tuple):
            data, qtype = value
            writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[qtype])
        else:
            writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def k_quant_dit_file(path: Path, seed: int = 0) -> tuple[Path, dict]:
    """A K_DIT GGUF: every Linear weight whose rows fill 256-value blocks gets a K type (cycling through K_TYPES),
    the rest F32. -> (path, {name: (packed, qtype)} of the K tensors)."""
    from tests.tiny_models import tiny_dit_state_dict

    rng = np.random.default_rng(seed)
    out, packed, i = {}, {}, 0
    for name, v in tiny_dit_state_dict(K_DIT, seed).items():
        if v.ndim == 2 and v.shape[1] % 256 == 0 and "modulation" not in name:
            qtype = K_TYPES[i % len(K_TYPES)]
            i += 1
            packed[name] = out[name] = (random_k_blocks(qtype, v.shape[0], v.shape[1], rng), qtype)
        else:
            out[name] = v.numpy()
    return write_gguf(path, out), packed
