"""State-dict key conversion: tables (data) + a small interpreter + strict reporting.

Canonical names inside wan_core: official Wan names for the DiT and the VAE, transformers `UMT5EncoderModel` names for the
text encoder (what ComfyUI's repackaged umT5 files use). Each table row is `(canonical, foreign)`: two key-prefix templates
whose `{name}` fields match integers. A key is renamed by the FIRST row whose template matches a whole dotted prefix of it;
the rest of the key is kept. The same rows read right-to-left give the inverse map, so round trips are exact
(tests/test_convert.py). Tables follow the rename tables of diffusers scripts/convert_wan_to_diffusers.py (Apache-2.0),
rewritten as prefix rows; see ../shared/reference/wan22-spec.md section 5.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable, Mapping

CANONICAL = {"dit": "official", "vae": "official", "t5": "transformers"}

# --- DiT: official <-> diffusers WanTransformer3DModel ------------------------------------------------------------------
_DIT_ATTN = [(f"{o}", f"to_{d}") for o, d in (("q", "q"), ("k", "k"), ("v", "v"))] + [("o", "to_out.0"),
                                                                                       ("norm_q", "norm_q"),
                                                                                       ("norm_k", "norm_k")]
DIT_DIFFUSERS = [
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("blocks.{i}.modulation", "blocks.{i}.scale_shift_table"),
    *[(f"blocks.{{i}}.self_attn.{o}", f"blocks.{{i}}.attn1.{d}") for o, d in _DIT_ATTN],
    *[(f"blocks.{{i}}.cross_attn.{o}", f"blocks.{{i}}.attn2.{d}") for o, d in _DIT_ATTN],
    ("blocks.{i}.norm3", "blocks.{i}.norm2"),  # the affine cross-attention LayerNorm: official norm3 == diffusers norm2
    ("blocks.{i}.ffn.0", "blocks.{i}.ffn.net.0.proj"),
    ("blocks.{i}.ffn.2", "blocks.{i}.ffn.net.2"),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
]

# --- VAE: official Wan2.2 VAE <-> diffusers AutoencoderKLWan (2.2 config) -------------------------------------------------
_RES = [("residual.0", "norm1"), ("residual.2", "conv1"), ("residual.3", "norm2"), ("residual.6", "conv2"),
        ("shortcut", "conv_shortcut")]
_RES_CONTAINERS = [
    ("encoder.downsamples.{b}.downsamples.{r}", "encoder.down_blocks.{b}.resnets.{r}"),
    ("decoder.upsamples.{b}.upsamples.{r}", "decoder.up_blocks.{b}.resnets.{r}"),
    *[(f"{side}.middle.{o}", f"{side}.mid_block.resnets.{d}") for side in ("encoder", "decoder")
      for o, d in (("0", "0"), ("2", "1"))],
]
VAE_DIFFUSERS = [
    ("encoder.conv1", "encoder.conv_in"),
    ("decoder.conv1", "decoder.conv_in"),
    ("conv1", "quant_conv"),
    ("conv2", "post_quant_conv"),
    # resample layers sit after the residual blocks: index num_res_blocks (2) in the encoder, num_res_blocks + 1 (3) in the
    # decoder; the released VAE and the demo VAE both use num_res_blocks = 2
    ("encoder.downsamples.{b}.downsamples.2.resample", "encoder.down_blocks.{b}.downsampler.resample"),
    ("encoder.downsamples.{b}.downsamples.2.time_conv", "encoder.down_blocks.{b}.downsampler.time_conv"),
    ("decoder.upsamples.{b}.upsamples.3.resample", "decoder.up_blocks.{b}.upsampler.resample"),
    ("decoder.upsamples.{b}.upsamples.3.time_conv", "decoder.up_blocks.{b}.upsampler.time_conv"),
    *[(f"{c}.{o}", f"{d}.{n}") for c, d in _RES_CONTAINERS for o, n in _RES],
    *[(f"{side}.middle.1", f"{side}.mid_block.attentions.0") for side in ("encoder", "decoder")],
    *[(f"{side}.head.{o}", f"{side}.{n}") for side in ("encoder", "decoder") for o, n in (("0", "norm_out"),
                                                                                           ("2", "conv_out"))],
]

# --- umT5 encoder: transformers (canonical) <-> official Wan .pth names -----------------------------------------------
_T5 = "encoder.block.{i}.layer"
T5_OFFICIAL = [
    ("shared", "token_embedding"),
    (f"{_T5}.0.layer_norm", "blocks.{i}.norm1"),
    *[(f"{_T5}.0.SelfAttention.{p}", f"blocks.{{i}}.attn.{p}") for p in "qkvo"],
    (f"{_T5}.0.SelfAttention.relative_attention_bias", "blocks.{i}.pos_embedding.embedding"),
    (f"{_T5}.1.layer_norm", "blocks.{i}.norm2"),
    (f"{_T5}.1.DenseReluDense.wi_0", "blocks.{i}.ffn.gate.0"),  # the GELU branch
    (f"{_T5}.1.DenseReluDense.wi_1", "blocks.{i}.ffn.fc1"),  # the linear branch
    (f"{_T5}.1.DenseReluDense.wo", "blocks.{i}.ffn.fc2"),
    ("encoder.final_layer_norm", "norm"),
]

KEY_MAPS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("dit", "diffusers"): DIT_DIFFUSERS,
    ("vae", "diffusers"): VAE_DIFFUSERS,
    ("t5", "official"): T5_OFFICIAL,
}

# Wrappers other tools put in front of the canonical names (ComfyUI checkpoints, diffusers single files, LoRA-era dumps).
KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "first_stage_model.", "transformer.", "vae.")


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ...
    body = "".join(re.escape(p) if j % 2 == 0 else rf"(?P<{p}>\d+)" for j, p in enumerate(parts))
    return re.compile(rf"^{body}(?=\.|$)")


@functools.cache
def _rules(component: str, fmt: str, reverse: bool) -> tuple[tuple[re.Pattern, str], ...]:
    if (component, fmt) not in KEY_MAPS:
        known = sorted({c for c, _ in KEY_MAPS} | set(CANONICAL))
        formats = sorted({f for c, f in KEY_MAPS if c == component} | {CANONICAL.get(component, "")})
        raise ValueError(f"no key map for component={component!r} format={fmt!r}; components: {known}, "
                         f"formats for {component!r}: {formats}")
    # reverse=False: foreign -> canonical (match the foreign template); reverse=True: canonical -> foreign
    return tuple((_compile(dst if not reverse else src), src if not reverse else dst)
                 for src, dst in KEY_MAPS[(component, fmt)])


def rename_key(key: str, rules) -> str | None:
    """Apply the first matching (pattern, template) row to key; None when no row matches."""
    for pattern, template in rules:
        if m := pattern.match(key):
            return template.format(**m.groupdict()) + key[m.end():]
    return None


def _apply(sd: Mapping, rules) -> tuple[dict, list[str]]:
    out, unmatched = {}, []
    for key, value in sd.items():
        new = rename_key(key, rules)
        if new is None:
            unmatched.append(key)
            new = key  # kept as is so a strict load reports it as unexpected
        if new in out:
            raise ValueError(f"two keys map to {new!r} (second: {key!r}); the file mixes naming formats")
        out[new] = value
    return out, unmatched


def convert(sd: Mapping, component: str, fmt: str) -> tuple[dict, list[str]]:
    """Rename a `fmt`-named state dict to wan_core's canonical names -> (new_sd, keys no row matched)."""
    if fmt == CANONICAL.get(component):
        return dict(sd), []
    return _apply(sd, _rules(component, fmt, False))


def to_format(sd: Mapping, component: str, fmt: str) -> tuple[dict, list[str]]:
    """Inverse of `convert`: canonical names -> `fmt` names."""
    if fmt == CANONICAL.get(component):
        return dict(sd), []
    return _apply(sd, _rules(component, fmt, True))


def strip_prefix(sd: Mapping, prefixes: Iterable[str] = KNOWN_PREFIXES) -> tuple[dict, str]:
    """Remove the first known prefix that every key carries -> (new_sd, removed prefix or "")."""
    for prefix in prefixes:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k.removeprefix(prefix): v for k, v in sd.items()}, prefix
    return dict(sd), ""
