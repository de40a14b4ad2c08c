# Key conventions read from ComfyUI comfy/lora.py (model_lora_keys_unet: `diffusion_model.` names and `lora_unet_`
# names with dots as underscores), comfy/lora_convert.py (Wan Fun's `lora_unet__`) and comfy/weight_adapter/lora.py
# (suffix pairs), and diffusers loaders/lora_conversion_utils.py (Wan names); GPL-3.0 / Apache-2.0, read for
# behaviour only. Round trips: tests/test_lora_keys.py.
"""LoRA key names as data: prefixes, suffixes (roles) and the Wan DiT modules a LoRA may target.

Inside wan_core a LoRA entry is named by the official module name ("blocks.0.self_attn.q") and a role ("down", "up",
"alpha", "diff", "diff_b"). Each file format is a prefix + a module-name style + a suffix:
  official / ComfyUI  `diffusion_model.blocks.0.self_attn.q.lora_down.weight`
  kohya / musubi      `lora_unet_blocks_0_self_attn_q.lora_down.weight` (dots as underscores, decoded by MODULES)
  diffusers / PEFT    `transformer.blocks.0.attn1.to_q.lora_A.weight` (module names via wan_core.convert.DIT_DIFFUSERS)
"""
from __future__ import annotations

import functools
import re

from ..convert import DIT_DIFFUSERS, _rules, rename_key

# (file suffix, role); the first match wins, so longer suffixes come first
SUFFIXES = (
    ("lora_down.weight", "down"), ("lora_up.weight", "up"),
    ("lora_A.weight", "down"), ("lora_B.weight", "up"),
    ("alpha", "alpha"), ("diff_b", "diff_b"), ("diff", "diff"),
    ("dora_scale", "dora_scale"),
)
ROLE_SUFFIX = {"down": "lora_down.weight", "up": "lora_up.weight", "alpha": "alpha", "diff": "diff", "diff_b": "diff_b"}

OFFICIAL_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")  # "" : bare official names
DIFFUSERS_PREFIXES = ("base_model.model.", "transformer.", "")  # PEFT's raw wrapper, diffusers' pipeline prefix
KOHYA_PREFIXES = ("lora_unet__", "lora_unet_")  # "lora_unet__": Wan Fun LoRAs (ComfyUI renames it the same way)
WRITE_PREFIX = "diffusion_model."  # what `lora_key` (and the trainer) writes: ComfyUI's native Wan LoRA names

# Module names only diffusers uses (a file with any of them is in diffusers naming)
DIFFUSERS_MARKERS = re.compile(r"(^|\.)(attn1|attn2|to_q|to_k|to_v|to_out|ffn\.net|condition_embedder|proj_out|"
                               r"scale_shift_table|norm2)(\.|$)")

# Every module / loose parameter of a Wan DiT a LoRA may name (Wan2.1/2.2, T2V/I2V, 1.3B ... 14B). The image-branch rows
# exist so kohya names of image-to-video LoRAs decode (they then report as not matching the TI2V-5B).
_ATTN = ("q", "k", "v", "o", "norm_q", "norm_k")
MODULES = (
    "patch_embedding", "text_embedding.{j}", "time_embedding.{j}", "time_projection.{j}",
    *[f"blocks.{{i}}.self_attn.{p}" for p in _ATTN],
    *[f"blocks.{{i}}.cross_attn.{p}" for p in (*_ATTN, "k_img", "v_img", "norm_k_img")],
    "blocks.{i}.norm3", "blocks.{i}.ffn.{j}", "blocks.{i}.modulation",
    "head.head", "head.modulation", "img_emb.proj.{j}",
)
LOOSE_PARAMETERS = ("modulation",)  # modules that are themselves a parameter (no `.weight`)


def _pattern(template: str, sep: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template.replace(".", sep))  # literal, name, literal, ...
    return re.compile("^" + "".join(re.escape(p) if k % 2 == 0 else rf"(?P<{p}>\d+)" for k, p in enumerate(parts))
                      + "$")


@functools.cache
def _kohya_rules() -> tuple[tuple[re.Pattern, str], ...]:
    return tuple((_pattern(t, "_"), t) for t in MODULES)


def kohya_name(module: str) -> str:
    """Official module name -> kohya name without prefix ("blocks.0.self_attn.q" -> "blocks_0_self_attn_q")."""
    return module.replace(".", "_")


def from_kohya(name: str) -> str | None:
    """kohya name (prefix removed) -> official module name; None when it names no Wan DiT module."""
    for pattern, template in _kohya_rules():
        if m := pattern.match(name):
            return template.format(**m.groupdict())
    return None


def to_diffusers(module: str) -> str | None:
    """Official module name -> diffusers module name (wan_core.convert.DIT_DIFFUSERS read right to left)."""
    return rename_key(module, _rules("dit", "diffusers", True))


def from_diffusers(module: str) -> str | None:
    """diffusers module name -> official module name; None when no DIT_DIFFUSERS row matches."""
    return rename_key(module, _rules("dit", "diffusers", False))


def split_suffix(key: str) -> tuple[str, str | None]:
    """`<module>.<suffix>` -> (module, role); role None for a suffix no LoRA format uses."""
    for suffix, role in SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], role
    return key, None


def param_name(module: str, role: str) -> str:
    """The parameter an entry changes: `<module>.weight` (`.bias` for diff_b; the module itself for modulation)."""
    if role == "diff_b":
        return f"{module}.bias"
    return module if module.rsplit(".", 1)[-1] in LOOSE_PARAMETERS else f"{module}.weight"


def lora_key(module: str, role: str) -> str:
    """The official / ComfyUI file key of an entry ("blocks.0.self_attn.q", "down" ->
    "diffusion_model.blocks.0.self_attn.q.lora_down.weight")."""
    return f"{WRITE_PREFIX}{module}.{ROLE_SUFFIX[role]}"


__all__ = ["DIFFUSERS_MARKERS", "DIFFUSERS_PREFIXES", "DIT_DIFFUSERS", "KOHYA_PREFIXES", "MODULES",
           "OFFICIAL_PREFIXES", "SUFFIXES", "from_diffusers", "from_kohya", "kohya_name", "lora_key", "param_name",
           "split_suffix", "to_diffusers"]
