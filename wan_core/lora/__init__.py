"""LoRA for the Wan DiT: read every common file format, validate it against the model, merge or patch it (undoably).

    lora = read_lora("style.safetensors")            # format detected from the keys, `.sha256` sidecar checked
    apply_loras(dit, [(lora, 0.8)])                   # merged in fp32, stored in the DiT's dtypes
    remove_loras(dit)                                 # the base weights again, bit for bit
    lora_deltas(dit, [(lora, 0.8)])                   # {parameter: patch(w) -> fp32 delta} for per-call patching

Front ends: `load_dit(path, loras=[(file, strength)])`, `WanT2VPipeline.load_lora` / `unload_loras`, CLI
`generate --lora FILE[:STRENGTH]`, the ComfyUI node `WanT2V LoRA` (ModelPatcher patches). See docs/lora.md.
"""
import os

from .apply import DeltaPatch, LoraState, apply_loras, applied_loras, lora_deltas, remove_loras, set_loras
from .formats import Diff, Lora, LoraError, LowRank, detect_format, parse_lora, read_lora
from .validate import check_against, check_lora, param_shapes


def parse_lora_arg(text: str) -> tuple[str, float]:
    """CLI `FILE[:STRENGTH]` -> (file, strength); a colon followed by a non-number stays part of the file name."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


def apply_lora_files(model, loras, *, verify: bool = True) -> LoraState:
    """apply_loras for [(file, strength), ...] (or bare file names, strength 1)."""
    pairs = [(item, 1.0) if isinstance(item, (str, bytes)) or hasattr(item, "__fspath__") else item for item in loras]
    return apply_loras(model, [(read_lora(f, verify=verify), float(s)) for f, s in pairs])


def load_cli_loras(pipe, specs, *, verify: bool = True) -> list[str]:
    """Apply `--lora FILE[:STRENGTH]` specs to a WanT2VPipeline in order -> ["name:strength", ...] for metadata."""
    done = []
    for spec in specs:
        file, strength = parse_lora_arg(spec)
        pipe.load_lora(file, strength, verify=verify)
        done.append(f"{os.path.basename(file)}:{strength:g}")
    return done


__all__ = ["DeltaPatch", "Diff", "Lora", "LoraError", "LoraState", "LowRank", "applied_loras", "apply_lora_files",
           "apply_loras", "check_against", "check_lora", "detect_format", "load_cli_loras", "lora_deltas", "param_shapes", "parse_lora",
           "parse_lora_arg", "read_lora", "remove_loras", "set_loras"]
