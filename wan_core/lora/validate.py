"""Does a LoRA fit the loaded DiT? Every entry is checked against the model's parameters before anything changes.

No entry matches -> LoraError saying what model the LoRA seems to be for (width and block count read from its tensors,
e.g. "width 5120 (Wan 14B)"); some entries match no parameter -> a warning listing their keys; a shape mismatch ->
LoraError naming the key and both shapes.
"""
from __future__ import annotations

import logging
import re
from collections import Counter

import torch

from .formats import Adapter, Lora, LoraError, LowRank

log = logging.getLogger(__name__)

# DiT width -> the released models of that width
KNOWN_WIDTHS = {1536: "Wan2.1 T2V-1.3B", 3072: "Wan2.2 TI2V-5B", 5120: "Wan 14B: Wan2.1 14B or Wan2.2 A14B"}
LISTED_KEYS = 12  # unmatched keys named in a warning
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_WIDTH_PARAMS = re.compile(r"^blocks\.\d+\.(self_attn\.[qkvo]|cross_attn\.q|ffn\.0)\.weight$")  # [*, dim] inputs


def param_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """{parameter name: logical shape}; packed wan_core.quant layers report their dequantized (out, in)."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    for name, module in model.named_modules():
        if getattr(module, "qtype", None) is not None:  # wan_core.quant.linear.QuantLinear holding packed data
            shapes[f"{name}.weight"] = tuple(module.weight_shape)
    return shapes


def _width(adapters: dict[str, Adapter]) -> int | None:
    """The DiT width a LoRA was made for: the input size of its attention / FFN-in entries (most common value)."""
    seen = Counter()
    for name, a in adapters.items():
        if _WIDTH_PARAMS.match(name):
            seen[int(a.down.shape[1]) if isinstance(a, LowRank) else int(a.diff.shape[-1])] += 1
        elif name.endswith("modulation"):
            seen[int(a.diff.shape[-1]) if not isinstance(a, LowRank) else int(a.up.shape[0])] += 1
    return seen.most_common(1)[0][0] if seen else None


def _blocks(names) -> int:
    return 1 + max((int(m.group(1)) for n in names if (m := _BLOCK.match(n))), default=-1)


def _describe(width: int | None, blocks: int) -> str:
    what = f"width {width}" + (f" ({KNOWN_WIDTHS[width]})" if width in KNOWN_WIDTHS else "") if width else "unknown width"
    return what + (f", {blocks} blocks" if blocks else "")


def _keys(adapters) -> list[str]:
    return [k for a in adapters for k in a.keys]


def check_lora(lora: Lora, shapes: dict[str, tuple[int, ...]], dim: int | None = None) -> dict[str, Adapter]:
    """The entries of `lora` that apply to a model with these parameter shapes (raises LoraError / warns as above)."""
    dit_blocks = _blocks(shapes)
    matched = {n: a for n, a in lora.adapters.items() if n in shapes}
    width = _width(lora.adapters)
    ours = f"the loaded DiT has {_describe(dim, dit_blocks)}"
    if not matched or (width is not None and dim is not None and width != dim):
        if width is None and not any(_BLOCK.match(n) for n in lora.adapters):
            first = _keys(list(lora.adapters.values()))[:3]
            raise LoraError(f"{lora.name}: no key matches the Wan DiT (first keys {first}); this is not a LoRA for "
                            f"a Wan diffusion model ({lora.format} naming), or one for another component")
        raise LoraError(f"{lora.name}: this LoRA is for a model of {_describe(width, _blocks(lora.adapters))}; {ours}. "
                        "Pick a LoRA made for this model")
    for name, a in matched.items():
        if not a.fits(shapes[name]):
            got = (tuple(a.up.shape), tuple(a.down.shape)) if isinstance(a, LowRank) else tuple(a.diff.shape)
            raise LoraError(f"{lora.name}: {a.keys[0]!r} has shape {got}, which does not fit {name} "
                            f"{shapes[name]} of the loaded DiT; the LoRA is for another model variant")
    missing = [a for n, a in lora.adapters.items() if n not in shapes]
    skipped = _keys(missing) + list(lora.unmatched)
    if skipped:
        more = f" and {len(skipped) - LISTED_KEYS} more" if len(skipped) > LISTED_KEYS else ""
        log.warning("%s: %d of its %d keys match no weight of the loaded DiT and are ignored: %s%s", lora.name,
                    len(skipped), len(skipped) + len(_keys(matched.values())), skipped[:LISTED_KEYS], more)
    return matched


def check_against(lora: Lora, model: torch.nn.Module) -> dict[str, Adapter]:
    """check_lora against a live model (its parameter shapes and cfg.dim)."""
    cfg = getattr(model, "cfg", None)
    return check_lora(lora, param_shapes(model), getattr(cfg, "dim", None))
