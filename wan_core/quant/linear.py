# The dequantize-per-forward Linear follows the idea of city96/ComfyUI-GGUF ops.py (GGMLOps.Linear, Apache-2.0; LoRA
# patches applied to the dequantized weight each call), re-written. Tests: tests/test_gguf_model.py,
# tests/test_scaled_fp8.py.
"""Packed weights and the Linear that computes from them: GGUF blocks or scaled fp8, dequantized at each forward.

`PackedWeight` is what loading produces for a quantized tensor: the stored data (uint8 GGUF blocks, or an fp8 tensor
with its `scale_weight`), its type name and its logical shape. `QuantLinear` keeps that data as its `weight` parameter
(so `.to(device)`, ComfyUI's ModelPatcher and block streaming move the small packed bytes) and builds the dense weight
in the input's dtype on the input's device for each call; LoRA patches are added to the dequantized weight then.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .dequant import BLOCK_DEQUANT, CHUNK_ELEMENTS, dequantize

FP8 = "fp8"  # qtype of fp8 storage (times `scale_weight` when the layer has one)
Patch = Callable[[torch.Tensor], torch.Tensor]  # dequantized fp32 weight -> fp32 delta of the same shape


@dataclass(frozen=True)
class PackedWeight:
    """A quantized tensor as stored: `data` (uint8 blocks [rows, row_bytes], or fp8), `qtype`, logical `shape`.

    `cols` is the stored row length in values (differs from shape[-1] when a converter reshaped the tensor and kept the
    original shape in metadata). `scale` is the fp8 `scale_weight` (one value or one per output row).
    """

    data: torch.Tensor
    qtype: str
    shape: tuple[int, ...]
    cols: int
    scale: Optional[torch.Tensor] = None

    def dequantize(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        return unpack(self.data, self.qtype, self.shape, self.cols, self.scale, dtype, device)


def _fp8_dense(w: torch.Tensor, scale: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    rows = w.shape[0] if w.ndim else 1
    flat = w.reshape(rows, -1)  # [rows, rest]
    out = torch.empty(flat.shape, dtype=dtype, device=w.device)
    if scale is not None:
        scale = scale.to(device=w.device, dtype=torch.float32).reshape(-1, 1)  # [1 or rows, 1]
    step = max(1, CHUNK_ELEMENTS // max(1, flat.shape[1]))
    for i in range(0, rows, step):
        part = flat[i:i + step].float()
        if scale is not None:
            part = part * (scale if scale.shape[0] == 1 else scale[i:i + step])
        out[i:i + step] = part
    return out.reshape(w.shape)


def unpack(data: torch.Tensor, qtype: str, shape, cols: int, scale: Optional[torch.Tensor], dtype: torch.dtype,
           device=None) -> torch.Tensor:
    """Dense `dtype` tensor of `shape` on `device` (default: data's) from packed data."""
    data = data.to(device=device, non_blocking=True)
    if qtype == FP8:
        return _fp8_dense(data, scale, dtype).reshape(shape)
    stored = (math.prod(shape) // cols, cols)
    return dequantize(data, qtype, stored, dtype).reshape(shape)


class QuantLinear(nn.Linear):
    """nn.Linear that may hold packed data (`qtype` set) and dequantizes it to the input's dtype and device per call.

    Attributes: qtype (None = a plain weight, cast to the input's dtype/device per call), weight_shape (out, in),
    cols (stored row length), scale_weight (fp8 scale buffer or None), patches (LoRA: see `Patch`).
    `comfy_cast_weights` / `weight_function` / `bias_function` let ComfyUI's ModelPatcher leave the layer on the CPU
    in low-VRAM mode (the forward moves what it needs and applies the weight/bias functions, e.g. LoRA patches of a
    plain layer, to the weight it built); for packed layers ModelPatcher's own weight patches are not used (LoRAs go
    into `patches`).
    """

    comfy_cast_weights = False

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.qtype: Optional[str] = None
        self.weight_shape = (out_features, in_features)
        self.cols = in_features
        self.register_buffer("scale_weight", None)
        self.patches: list[Patch] = []
        self.weight_function, self.bias_function = [], []

    def set_packed(self, packed: PackedWeight, device=None) -> None:
        """Hold `packed` (moved to device when given) in place of the dense weight."""
        if tuple(packed.shape) != self.weight_shape:
            raise ValueError(f"packed weight of shape {tuple(packed.shape)} does not fit Linear{self.weight_shape}")
        self.weight = nn.Parameter(packed.data.to(device=device), requires_grad=False)
        self.qtype, self.cols = packed.qtype, packed.cols
        self.scale_weight = None if packed.scale is None else packed.scale.to(device=device, dtype=torch.float32)

    def dense_weight(self, dtype: torch.dtype, device=None) -> torch.Tensor:
        """The dequantized weight [out, in] (patches not applied)."""
        if self.qtype is None:
            return self.weight.to(device=device, dtype=dtype)
        return unpack(self.weight, self.qtype, self.weight_shape, self.cols, self.scale_weight, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patches:
            w = self.dense_weight(torch.float32, x.device)
            w = (w + sum(p(w) for p in self.patches)).to(x.dtype)
        else:
            w = self.dense_weight(x.dtype, x.device)
        bias = None if self.bias is None else self.bias.to(device=x.device, dtype=x.dtype)
        # ComfyUI low-VRAM: ModelPatcher's weight patches (LowVramPatch) applied per call. They may add in place, so
        # they get a copy, never the stored parameter itself (`.to` returns it as is when dtype and device match).
        if self.weight_function:
            w = w.clone() if w.data_ptr() == self.weight.data_ptr() else w
            for fn in self.weight_function:
                w = fn(w)
        if self.bias_function and bias is not None:
            bias = bias.clone() if bias.data_ptr() == self.bias.data_ptr() else bias
            for fn in self.bias_function:
                bias = fn(bias)
        return F.linear(x, w, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, qtype={self.qtype}, patches={len(self.patches)}"


class QuantOps:
    """An `ops` namespace for WanTransformer: QuantLinear for Linear, everything else from `base` (torch.nn default)."""

    Linear = QuantLinear

    def __init__(self, base=nn):
        self._base = base

    def __getattr__(self, name):
        return getattr(self._base, name)


def is_quantized(module: nn.Module) -> bool:
    """True for a QuantLinear holding packed data."""
    return isinstance(module, QuantLinear) and module.qtype is not None


def quant_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """{module name (official key prefix, e.g. "blocks.0.self_attn.q"): QuantLinear} of a model."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def with_patches(module: QuantLinear, patches: list[Patch]) -> QuantLinear:
    """A shallow copy of the layer (same packed data, no copy) with its own patch list; the original is unchanged."""
    clone = copy.copy(module)
    clone._parameters, clone._buffers, clone._modules = dict(module._parameters), dict(module._buffers), {}
    clone.patches = list(module.patches) + list(patches)
    return clone


def merge_patches(module: QuantLinear, dtype: Optional[torch.dtype] = None) -> QuantLinear:
    """Merge the layer's patches once: dequantize, add the deltas, keep a plain dense weight (qtype None) in `dtype`
    (default bf16 for packed layers, else the weight's dtype). Modifies and returns the module."""
    target = dtype or (torch.bfloat16 if module.qtype is not None else module.weight.dtype)
    w = module.dense_weight(torch.float32)
    w = w + sum(p(w) for p in module.patches)
    module.weight = nn.Parameter(w.to(target), requires_grad=False)
    module.qtype, module.cols, module.scale_weight, module.patches = None, module.in_features, None, []
    return module


def dense_state_dict(model: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The model's state dict with every packed weight dequantized to `dtype` (scale buffers dropped)."""
    sd = model.state_dict()
    for name, layer in quant_layers(model).items():
        sd.pop(f"{name}.scale_weight", None)
        if layer.qtype is not None:
            sd[f"{name}.weight"] = layer.dense_weight(dtype)
    return sd


SUPPORTED_QTYPES = tuple(t for t in BLOCK_DEQUANT) + (FP8,)
