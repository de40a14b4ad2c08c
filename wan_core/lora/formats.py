# The adapter arithmetic follows ComfyUI comfy/weight_adapter/lora.py (LoRAAdapter.calculate_weight: up @ down in fp32
# times strength * alpha / rank) and comfy/lora.py (`diff` / `diff_b` full deltas times strength); GPL-3.0, read
# for behaviour only, re-written. Parity: tests/test_lora_parity.py, tests/test_lora_comfy_contract.py.
"""LoRA files -> `Lora`: the format detected from the keys, every entry renamed to the official parameter it changes.

Formats (wan_core.lora.keys): official / ComfyUI (`diffusion_model.<module>.lora_down.weight` / `.lora_up.weight`,
`.lora_A.weight` / `.lora_B.weight`, optional `.alpha`, full deltas `.diff` and bias deltas `.diff_b`), kohya / musubi
(`lora_unet_<module with underscores>.lora_down.weight`, `.alpha`), diffusers / PEFT
(`[transformer.]blocks.0.attn1.to_q.lora_A.weight`). DoRA (`dora_scale`) is refused by name. Keys no format explains
are kept in `Lora.unmatched` (validation warns with them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from . import keys as K


class LoraError(ValueError):
    """A LoRA file cannot be used: unsupported format, incomplete pairs, or it does not fit the loaded DiT."""


@dataclass(frozen=True)
class LowRank:
    """delta = alpha / rank * up @ down (reshaped to the weight); alpha None means a scale of 1 (ComfyUI's rule)."""

    up: torch.Tensor  # [out, rank] (conv: [out, rank, 1, ...])
    down: torch.Tensor  # [rank, in] (conv: [rank, in, kf, kh, kw])
    alpha: float | None
    keys: tuple[str, ...]  # the file keys it came from, for messages

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def fits(self, shape: tuple[int, ...]) -> bool:
        return int(self.up.shape[0]) == shape[0] and self.down[0].numel() == math.prod(shape[1:])

    def delta(self, shape, device, strength: float = 1.0) -> torch.Tensor:
        """fp32 delta of the weight's `shape` on `device`, strength * alpha / rank included."""
        up = self.up.to(device=device, dtype=torch.float32).flatten(1)  # [out, rank]
        down = self.down.to(device=device, dtype=torch.float32).flatten(1)  # [rank, in]
        return ((strength * self.scale) * torch.mm(up, down)).reshape(shape)


@dataclass(frozen=True)
class Diff:
    """delta = diff (a full weight or bias delta, `.diff` / `.diff_b`)."""

    diff: torch.Tensor
    keys: tuple[str, ...]

    def fits(self, shape: tuple[int, ...]) -> bool:
        return tuple(self.diff.shape) == tuple(shape)

    def delta(self, shape, device, strength: float = 1.0) -> torch.Tensor:
        return strength * self.diff.to(device=device, dtype=torch.float32).reshape(shape)


Adapter = LowRank | Diff


@dataclass(frozen=True)
class Lora:
    """A parsed LoRA: {official parameter name: adapter}, the keys no format explains, the file's metadata."""

    name: str
    format: str  # "official" | "kohya" | "diffusers"
    adapters: dict[str, Adapter]
    unmatched: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


def detect_format(sd: Mapping[str, object]) -> str:
    """"kohya" | "diffusers" | "official" from the key names (raises LoraError for DoRA files)."""
    dora = [k for k in sd if k.endswith(".dora_scale")]
    if dora:
        raise LoraError(f"this is a DoRA (weight-decomposed LoRA: {len(dora)} `dora_scale` keys, e.g. {dora[0]!r}); "
                        "DoRA is not supported. Use a plain LoRA, or merge the DoRA into the model with the tool "
                        "that trained it")
    if any(k.startswith(K.KOHYA_PREFIXES) for k in sd):
        return "kohya"
    if any(K.DIFFUSERS_MARKERS.search(_strip(K.split_suffix(k)[0], K.DIFFUSERS_PREFIXES)) for k in sd):
        return "diffusers"
    return "official"


def _strip(name: str, prefixes) -> str:
    for p in prefixes:
        if name.startswith(p):
            return name[len(p):]
    return name


def _module(raw: str, fmt: str) -> str | None:
    """File module name -> official module name (None: the format cannot name such a module)."""
    if fmt == "kohya":
        return K.from_kohya(_strip(raw, K.KOHYA_PREFIXES)) if raw.startswith(K.KOHYA_PREFIXES) else None
    if fmt == "diffusers":
        return K.from_diffusers(_strip(raw, K.DIFFUSERS_PREFIXES))
    return _strip(raw, K.OFFICIAL_PREFIXES)


def parse_lora(sd: Mapping[str, torch.Tensor], name: str = "LoRA", metadata: Mapping[str, str] | None = None) -> Lora:
    """A LoRA state dict -> Lora (format detected; pairs checked; names official)."""
    fmt = detect_format(sd)
    groups: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unmatched = []
    for key, value in sd.items():
        raw, role = K.split_suffix(key)
        module = _module(raw, fmt) if role is not None else None
        if module is None:
            unmatched.append(key)
            continue
        groups.setdefault(module, {})[role] = (key, value)
    adapters: dict[str, Adapter] = {}
    for module, parts in groups.items():
        down, up, alpha = parts.get("down"), parts.get("up"), parts.get("alpha")
        if (down is None) != (up is None):
            have, miss = (down, "up (lora_up / lora_B)") if up is None else (up, "down (lora_down / lora_A)")
            raise LoraError(f"{name}: {have[0]!r} has no matching {miss} tensor; the file is incomplete")
        if down is not None:
            d, u = down[1], up[1]
            if d.ndim < 2 or u.ndim < 2 or u.shape[1] != d.shape[0]:
                raise LoraError(f"{name}: {up[0]!r} {tuple(u.shape)} and {down[0]!r} {tuple(d.shape)} do not share a "
                                "rank (up is [out, rank], down [rank, in]); the file is damaged")
            if "diff" in parts:
                raise LoraError(f"{name}: {module!r} has both a low-rank pair and a full `.diff`; keep one")
            a = None if alpha is None else float(alpha[1].item())
            adapters[K.param_name(module, "down")] = LowRank(u, d, a, tuple(p[0] for p in (down, up, alpha) if p))
        elif alpha is not None:
            unmatched.append(alpha[0])  # an alpha with nothing to scale
        for role in ("diff", "diff_b"):
            if role in parts:
                adapters[K.param_name(module, role)] = Diff(parts[role][1], (parts[role][0],))
    return Lora(name, fmt, adapters, tuple(unmatched), dict(metadata or {}))


def read_lora(path, *, verify: bool = True, sha256: str | None = None) -> Lora:
    """Read a LoRA .safetensors (header validated, `.sha256` sidecar checked like models) -> Lora."""
    from ..loading import read_state_dict

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    if path.is_dir():
        raise LoraError(f"{path} is a folder; pass the LoRA .safetensors file itself")
    sd, info = read_state_dict(path, sha256=sha256, verify=verify)
    try:
        lora = parse_lora(sd, path.name, info.metadata)
    except LoraError as e:
        raise LoraError(str(e) if str(e).startswith(path.name) else f"{path.name}: {e}") from None
    if not lora.adapters:
        raise LoraError(f"{path.name} holds no LoRA entries this loader understands ({len(sd)} tensors, first keys "
                        f"{list(sd)[:3]}); expected e.g. 'diffusion_model.blocks.0.self_attn.q.lora_down.weight'")
    return lora
