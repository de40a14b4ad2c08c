"""Building a WanTransformer whose Linears keep packed weights (GGUF blocks or scaled fp8) and dequantize per call.

Tests: tests/test_gguf_model.py, tests/test_scaled_fp8.py.
"""
from __future__ import annotations

import logging
from typing import Mapping

import torch

from .linear import FP8, PackedWeight, QuantLinear, QuantOps

logger = logging.getLogger(__name__)


def pack_scaled_fp8(sd: Mapping[str, torch.Tensor], fp8_dtypes) -> dict:
    """fp8 Linear weights with a `<layer>.scale_weight` (Kijai's `_scaled_KJ`, ComfyUI's `scaled_fp8`) -> PackedWeight;
    scale/input-scale/marker tensors dropped; everything else unchanged (plain fp8 without a scale stays a tensor)."""
    out = {}
    for key, value in sd.items():
        if key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input")):
            continue
        scale = sd.get(key.removesuffix("weight") + "scale_weight") if key.endswith(".weight") else None
        if value.dtype in fp8_dtypes and scale is not None:
            rows = value.shape[0] if value.ndim else 1
            if scale.numel() not in (1, rows):
                from ..loading import CheckpointError

                raise CheckpointError(f"fp8 scale of {key} has shape {tuple(scale.shape)}, fitting neither the whole "
                                      f"weight nor its {rows} rows (weight {tuple(value.shape)}); this fp8 layout is "
                                      "not supported")
            value = PackedWeight(value, FP8, tuple(value.shape), value.shape[-1] if value.ndim else 1, scale)
        out[key] = value
    return out


def build_quantized_dit(sd: Mapping, *, ops=torch.nn, device=None, dtype=None,
                        compute_dtype: torch.dtype = torch.bfloat16):
    """WanTransformer from an official-named state dict whose values are tensors or PackedWeights.

    Packed Linear weights go into QuantLinear layers as they are (moved to `device`); a packed tensor of another
    layer (a conv, a modulation table) is dequantized once at load. Plain floating tensors follow the safetensors
    rule: KEEP_FP32 ones fp32, others `dtype` (None: as stored). Linears compute in the input's dtype, which the model
    sets to `compute_dtype` (KEEP_FP32 layers: fp32).
    """
    from ..config import infer_config
    from ..model import WanTransformer, keep_fp32

    cfg = infer_config(sd)
    model = WanTransformer(cfg, ops=QuantOps(ops), device="meta", dtype=dtype, compute_dtype=compute_dtype)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    problems = [f"{len(x)} {what}: {x[:10]}" for x, what in ((shapes, "wrong-shape keys"), (missing, "missing keys"),
                                                              (unexpected, "unexpected keys")) if x]
    if problems:
        raise ValueError(f"state dict does not fit WanTransformer({cfg!r}): {' | '.join(problems)}")
    modules = dict(model.named_modules())
    plain, packed = {}, {}
    for k, v in sd.items():
        layer = modules.get(k.removesuffix(".weight")) if k.endswith(".weight") else None
        if isinstance(v, PackedWeight) and isinstance(layer, QuantLinear):
            packed[k] = (layer, v)
            continue
        if isinstance(v, PackedWeight):  # e.g. a quantized conv or modulation table: dense once, fp32 or dtype
            v = v.dequantize(torch.float32)
        want = torch.float32 if keep_fp32(k) else (dtype or v.dtype) if v.is_floating_point() else v.dtype
        plain[k] = v.to(device=device, dtype=want)
    model.load_state_dict(plain, strict=False, assign=True)
    for layer, v in packed.values():
        layer.set_packed(v, device=device)
    model.rope.materialize(device if device is not None else "cpu")
    return model


def quant_summary(model: torch.nn.Module) -> str:
    """e.g. "Q4_K 120, Q6_K 30, plain 32" for the model's QuantLinear layers."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, QuantLinear):
            name = m.qtype or "plain"
            counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def has_packed(sd: Mapping) -> bool:
    """True when a state dict holds PackedWeights (GGUF or scaled fp8)."""
    return any(isinstance(v, PackedWeight) for v in sd.values())


def load_gguf_dit(path, *, device=None, dtype=None, ops=torch.nn, sha256=None, verify=True):
    """Load a Wan DiT GGUF file (official/ComfyUI tensor names, e.g. QuantStack's or `python -m wan_core quantize`
    output) -> WanTransformer with QuantLinear layers. dtype: compute dtype of the Linears (default bf16; fp8 -> bf16)."""
    import time
    from pathlib import Path

    from ..convert import convert, strip_prefix
    from ..gguf_file import read_gguf, tensor_types
    from ..integrity import verify_file
    from ..loading import EXPECTED, FOUND, FP8_DTYPES, WrongModelKindError, _describe_unknown, detect_format, \
        detect_kind

    t0 = time.perf_counter()
    path = Path(path)
    digest = verify_file(path, sha256) if verify else None
    sd, _ = read_gguf(path)
    sd, prefix = strip_prefix(sd)
    kind = detect_kind(sd)
    if kind != "dit":
        found = FOUND.get(kind) or _describe_unknown(sd)
        raise WrongModelKindError(f"expected {EXPECTED['dit']} but {path} is {found}; pass the right file")
    sd, _ = convert(sd, "dit", detect_format(sd, kind))
    types = tensor_types(sd)
    if dtype is None or dtype in FP8_DTYPES:
        dtype = torch.bfloat16
    try:
        model = build_quantized_dit(sd, ops=ops, device=device, dtype=dtype, compute_dtype=dtype)
    except (ValueError, RuntimeError, KeyError) as e:
        e.args = (f"{path}: {e.args[0] if e.args else e}",) + e.args[1:]
        raise
    logger.info("loaded dit from %s: GGUF %s%s, Linears %s, compute %s, %s, %.1f s", path.name,
                ", ".join(f"{k} {v}" for k, v in types.items()), f", prefix {prefix!r}" if prefix else "",
                quant_summary(model), str(dtype).removeprefix("torch."),
                "sha256 ok" if digest else "sha256 not checked (no sidecar, or verify=False)", time.perf_counter() - t0)
    return model
