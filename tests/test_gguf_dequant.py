"""Torch GGUF dequantization is bit-exact against the gguf package's NumPy reference, for every supported type."""
import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is a runtime requirement (pip install gguf)")

from tests._gguf_synth import K_TYPES, random_k_blocks  # noqa: E402
from wan_core.quant import dequant  # noqa: E402
from wan_core.quant.dequant import BLOCK_SIZES, dequantize  # noqa: E402

WRITABLE = ("F32", "F16", "BF16", "Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1")  # gguf.quants can quantize these


def _torch_raw(q: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(q).view(np.uint8))


@pytest.mark.parametrize("qtype", WRITABLE)
def test_bit_exact_on_gguf_quantized(qtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((24, 320)) * rng.uniform(0.01, 3, (24, 1))).astype(np.float32)
    x[3, :32] = 0  # an all-zero block (scale 0)
    q = gguf.quants.quantize(x, gguf.GGMLQuantizationType[qtype])
    ref = torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType[qtype]))
    got = dequantize(_torch_raw(q), qtype, x.shape)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


@pytest.mark.parametrize("qtype", K_TYPES)
def test_bit_exact_on_random_k_blocks(qtype):
    rng = np.random.default_rng(1)
    raw = random_k_blocks(qtype, 12, 3 * 256, rng)
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])
    assert np.isfinite(ref).all() and np.abs(ref).max() > 0
    got = dequantize(torch.from_numpy(raw), qtype, (12, 3 * 256))
    assert torch.equal(got, torch.from_numpy(ref))


def test_every_listed_type_is_covered():
    assert set(BLOCK_SIZES) == set(WRITABLE) | set(K_TYPES)
    for name, (block, size) in BLOCK_SIZES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == (block, size), name


def test_dtype_chunks_and_shapes(monkeypatch):
    """Output dtype = the fp32 values rounded once; row chunking does not change values; 3-D shapes work."""
    monkeypatch.setattr(dequant, "CHUNK_ELEMENTS", 64)  # many chunks of 1 row
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 64)).astype(np.float32)
    q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q4_1)
    full = torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q4_1))
    assert torch.equal(dequantize(_torch_raw(q), "Q4_1", x.shape), full)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(dequantize(_torch_raw(q), "Q4_1", x.shape, dtype), full.to(dtype))


def test_unknown_type_and_partial_blocks_refused():
    with pytest.raises(ValueError, match="cannot dequantize GGUF type IQ4_NL"):
        dequantize(torch.zeros(2, 18, dtype=torch.uint8), "IQ4_NL", (2, 32))
    with pytest.raises(ValueError, match="whole blocks of 32"):
        dequantize(torch.zeros(2, 18, dtype=torch.uint8), "Q4_0", (2, 40))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bit_exact_on_cuda():
    rng = np.random.default_rng(3)
    for qtype in K_TYPES:
        raw = random_k_blocks(qtype, 4, 512, rng)
        ref = torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype]))
        got = dequantize(torch.from_numpy(raw), qtype, (4, 512), device="cuda")
        assert got.device.type == "cuda" and torch.equal(got.cpu(), ref), qtype
