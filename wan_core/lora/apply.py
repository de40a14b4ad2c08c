"""Applying LoRAs to a WanTransformer: per-parameter fp32 deltas, an undoable in-place merge, and patch callables.

`lora_deltas` is the shared primitive: {official parameter name: DeltaPatch}, each patch(w) returning the fp32 delta
(strength * alpha / rank * up @ down, summed over LoRAs) on w's device, with w's shape. `apply_loras` merges them: for
each parameter w_new = (w.float() + delta).to(w.dtype), the original tensor kept (on the CPU) so that `remove_loras`
restores it bit for bit. Packed wan_core.quant layers (GGUF, scaled fp8) are not merged: the patch is appended to the
layer's `patches` and added to the dequantized weight at each call.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .formats import Adapter, Lora
from .validate import check_against

log = logging.getLogger(__name__)

STATE_ATTR = "lora_state"  # attribute of a model holding its LoraState once a LoRA was applied


@dataclass(frozen=True)
class DeltaPatch:
    """patch(w) -> fp32 delta of w's shape on w's device: the sum of strength * adapter delta over its terms."""

    terms: tuple[tuple[Adapter, float], ...]

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        delta = None
        for adapter, strength in self.terms:
            d = adapter.delta(w.shape, w.device, strength)
            delta = d if delta is None else delta.add_(d)
        return delta


@dataclass
class LoraState:
    """What apply_loras changed on one model: original tensors (CPU) and the patches added to packed layers."""

    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    patched: list[tuple[torch.nn.Module, DeltaPatch]] = field(default_factory=list)
    applied: list[tuple[Lora, float]] = field(default_factory=list)  # (LoRA, strength), in order


def lora_deltas(model: torch.nn.Module, loras: Sequence[tuple[Lora, float]]) -> dict[str, DeltaPatch]:
    """{official parameter name: DeltaPatch} for `loras` [(Lora, strength), ...] on `model` (validated first)."""
    terms: dict[str, list[tuple[Adapter, float]]] = {}
    for lora, strength in loras:
        for name, adapter in check_against(lora, model).items():
            terms.setdefault(name, []).append((adapter, float(strength)))
    return {name: DeltaPatch(tuple(t)) for name, t in terms.items()}


def _packed_layer(model: torch.nn.Module, name: str):
    """The packed QuantLinear owning parameter `name` (its `.weight`), else None."""
    if not name.endswith(".weight"):
        return None
    module = model.get_submodule(name[: -len(".weight")])
    return module if getattr(module, "qtype", None) is not None else None


@torch.no_grad()
def apply_loras(model: torch.nn.Module, loras: Sequence[tuple[Lora, float]]) -> LoraState:
    """Merge `loras` into `model` in place (fp32 math, stored in each parameter's dtype); undo with remove_loras.

    Applying again stacks on top of what is there; the originals kept are always the pre-LoRA weights."""
    deltas = lora_deltas(model, loras)  # validates every LoRA before any weight changes
    state: LoraState = getattr(model, STATE_ATTR, None) or LoraState()
    params = dict(model.named_parameters())
    for name, patch in deltas.items():
        layer = _packed_layer(model, name)
        if layer is not None:
            layer.patches.append(patch)
            state.patched.append((layer, patch))
            continue
        p = params[name]
        if name not in state.originals:
            state.originals[name] = p.data.to("cpu")  # same tensor (no copy) when the model is on the CPU
        w = p.data.to(torch.float32, copy=True)  # [*weight shape]
        w += patch(w)
        p.data = w.to(p.dtype)
    state.applied += [(lora, float(s)) for lora, s in loras]
    setattr(model, STATE_ATTR, state)
    log.info("applied LoRA %s to %d parameters (%d packed layers patched)",
             ", ".join(f"{lo.name}:{s:g}" for lo, s in state.applied), len(state.originals), len(state.patched))
    return state


@torch.no_grad()
def remove_loras(model: torch.nn.Module) -> list[tuple[str, float]]:
    """Restore the pre-LoRA weights bit for bit and drop packed-layer patches -> the (name, strength) list removed."""
    state: LoraState | None = getattr(model, STATE_ATTR, None)
    if state is None:
        return []
    params = dict(model.named_parameters())
    for name, original in state.originals.items():
        p = params[name]
        p.data = original.to(p.device)
    for layer, patch in state.patched:
        layer.patches = [q for q in layer.patches if q is not patch]
    setattr(model, STATE_ATTR, None)
    return [(lora.name, s) for lora, s in state.applied]


def applied_loras(model: torch.nn.Module) -> list[tuple[str, float]]:
    """(LoRA name, strength) currently merged into `model`, in order."""
    state = getattr(model, STATE_ATTR, None)
    return [(lora.name, s) for lora, s in state.applied] if state else []


def set_loras(model: torch.nn.Module, loras: Sequence[tuple[Lora, float]]) -> None:
    """Make exactly `loras` applied to `model` (hosts that share one base model between graph branches)."""
    state = getattr(model, STATE_ATTR, None)
    have = [(id(lora), s) for lora, s in state.applied] if state else []
    if have == [(id(lora), float(s)) for lora, s in loras]:
        return
    remove_loras(model)
    if loras:
        apply_loras(model, loras)
