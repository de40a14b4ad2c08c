"""Offline tools behind `python -m wan_core info | verify | convert`: describe, verify and convert checkpoint files."""
from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from .convert import CANONICAL, convert, strip_prefix
from .integrity import read_sidecar, verify_file, write_sidecar
from .loading import (CheckpointError, FOUND, NON_WEIGHT_KEYS, PICKLE_SUFFIXES, WrongModelKindError, detect_format,
                      detect_kind, is_scaled_fp8, read_state_dict, resolve_files)

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "ema")  # training-script wrappers around weights
COMPONENTS = ("dit", "vae", "t5")


def _config(sd: Mapping[str, torch.Tensor], kind: str) -> dict[str, Any] | None:
    """The architecture read from shapes, as a plain dict (None when no reader is available for the kind)."""
    canon, _ = convert(sd, "vae" if kind == "vae2.1" else kind, detect_format(sd, kind))
    if kind == "dit":
        from .config import infer_config, preset_name

        cfg = infer_config(canon)
        return {**dataclasses.asdict(cfg), "preset": preset_name(cfg)}
    if kind == "vae":
        from .vae import infer_vae_config

        return dataclasses.asdict(infer_vae_config(canon))
    if kind == "t5":
        from .text_encoder import infer_t5_config

        cfg = infer_t5_config(canon)
        return {k: getattr(cfg, k) for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                                             "relative_attention_num_buckets")}
    return None


def describe(path) -> dict[str, Any]:
    """Kind, format, config, dtype histogram, parameter count, bytes and sidecar hash of a checkpoint (no hashing)."""
    from .gguf_file import describe_gguf, is_gguf

    if is_gguf(path):  # GGUF: types per tensor instead of dtypes, header only
        return describe_gguf(path, _config)
    sd, info = read_state_dict(path, verify=False)  # memory-mapped: only the header and shapes are read
    sd, prefix = strip_prefix(sd)
    kind = detect_kind(sd)
    weights = {k: v for k, v in sd.items() if k not in NON_WEIGHT_KEYS and not k.endswith((".scale_weight",
                                                                                         ".scale_input"))}
    out: dict[str, Any] = {
        "path": str(info.path),
        "files": [f.name for f in info.files],
        "bytes": info.nbytes,
        "kind": kind,
        "kind_description": FOUND.get(kind, "not a recognised Wan component"),
        "format": detect_format(sd, kind) if kind != "unknown" else None,
        "prefix": prefix or None,
        "scaled_fp8": is_scaled_fp8(sd),
        "embedded_tokenizer": "spiece_model" in sd,
        "tensors": len(weights),
        "parameters": sum(v.numel() for v in weights.values()),
        "dtypes": dict(Counter(str(v.dtype).removeprefix("torch.") for v in weights.values()).most_common()),
        "sha256": [read_sidecar(f) for f in info.files] if len(info.files) > 1 else read_sidecar(info.files[0]),
        "metadata": info.metadata,
    }
    if kind != "unknown":
        try:
            out["config"] = _config(weights, kind)
        except (ImportError, ValueError, KeyError) as e:  # describe must still report what it could read
            out["config"] = None
            out["config_error"] = f"{type(e).__name__}: {e}"
    return out


def verify(path, sha256: str | None = None, *, require: bool = True) -> str | None:
    """Check a file (or every shard of a sharded checkpoint) against a given hash or `.sha256` sidecar(s).

    Returns the verified hex digest (shards: one "<hex>  <name>" line each); IntegrityError on a mismatch, and when
    there is nothing to check against if `require` (else None for that file).
    """
    path = Path(path)
    files = [path] if path.is_file() and not path.name.endswith(".index.json") else resolve_files(path)
    if sha256 is not None and len(files) > 1:
        raise ValueError(f"--sha256 names one file but {path} has {len(files)} shards; verify each shard file")
    digests = [verify_file(f, sha256, require=require) for f in files]
    if len(files) == 1:
        return digests[0]
    return "\n".join(f"{d or 'no sidecar, not checked'}  {f.name}" for d, f in zip(digests, files))


def scan_report(path) -> tuple[list[str], int]:
    """Read every tensor of a checkpoint for NaN/Inf (wan_core.guard.scan_file) -> (report lines, bad tensor count)."""
    import time

    from .guard import scan_file

    t0 = time.perf_counter()
    seen, bad = scan_file(path)
    many = len({b.file for b in bad}) > 1
    lines = [f"scanned {seen} floating-point tensors in {time.perf_counter() - t0:.1f} s: "
             + (f"{len(bad)} {'holds' if len(bad) == 1 else 'hold'} NaN/Inf" if bad else "all finite")]
    lines += [f"  {b.name}{f' ({b.file})' if many else ''} [{b.dtype}]: {b.nan} NaN, {b.inf} Inf, first at "
              f"{list(b.first)}" for b in bad]
    if bad:
        lines.append("the file is damaged (or was saved from a diverged training run): re-download it")
    return lines, len(bad)


def _torch_load(src: Path):
    try:
        return torch.load(src, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(src))
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{src} holds Python objects other than tensors, which are not loaded for safety "
                              f"(torch.load(weights_only=True) refused: {str(e).splitlines()[0]}); re-save its "
                              "state_dict() with torch.save in a trusted environment, then convert that") from e
    except (RuntimeError, EOFError) as e:
        raise CheckpointError(f"{src} is not a readable PyTorch checkpoint (damaged or incomplete?): {e}") from e


def unwrap_state_dict(obj, src: Path) -> dict[str, torch.Tensor]:
    """Strip `state_dict`/`model`/... wrappers and non-tensor entries -> {name: tensor}."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
        if not inner:
            break
        obj = obj[inner[0]]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{src} holds a {type(obj).__name__}, not a state dict of tensors")
    dropped = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if dropped:
        logger.warning("%s: ignoring %d non-tensor entries %s", src.name, len(dropped), dropped[:5])
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{src} contains no tensors (top-level keys {list(obj)[:8]})")
    return sd


def _unshare(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors stores each tensor on its own: clone views that share storage, make everything contiguous."""
    seen: set[int] = set()
    out = {}
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone().contiguous() if ptr in seen and v.numel() else v.contiguous()
        seen.add(ptr)
    return out


def convert_checkpoint(src, dst, *, component: str | None = None) -> Path:
    """Pickled checkpoint (.pth .pt .ckpt .bin) -> safetensors with wan_core's canonical names, plus a .sha256 sidecar.

    Reads with `torch.load(weights_only=True)` (no code execution), strips a `model`/`state_dict` wrapper, detects
    (or checks, with `component`) the model kind, writes atomically (temporary file, then rename).
    """
    src, dst = Path(src), Path(dst)
    if component is not None and component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS} or None (auto-detect), got {component!r}")
    if not src.is_file():
        raise FileNotFoundError(f"nothing to convert: {src} does not exist")
    if dst.suffix != ".safetensors":
        raise ValueError(f"the output must end in .safetensors (got {dst.name}); e.g. {src.stem}.safetensors")
    if src.suffix not in PICKLE_SUFFIXES and not zipfile.is_zipfile(src):
        raise ValueError(f"{src} does not look like a pickled PyTorch checkpoint (expected {PICKLE_SUFFIXES}); "
                         "safetensors files need no conversion")
    sd, prefix = strip_prefix(unwrap_state_dict(_torch_load(src), src))
    kind = detect_kind(sd)
    want = component
    if want is not None and kind != want:
        raise WrongModelKindError(f"{src} was converted as {want!r} but it holds {FOUND.get(kind, 'an unknown model')} "
                                  f"(detected kind {kind!r}); omit --component or pass the right file")
    if kind in ("dit", "vae", "t5"):
        sd, unmatched = convert(sd, kind, detect_format(sd, kind))  # canonical names: what ComfyUI files use too
        if unmatched:
            logger.warning("%s: %d keys kept unrenamed, e.g. %s", src.name, len(unmatched), unmatched[:3])
    else:
        logger.warning("%s: kind %r not recognised; writing the tensors with their original names", src.name, kind)
    metadata = {"format": "pt", "converted_from": src.name, "wan_core_kind": kind,
                "wan_core_names": CANONICAL.get("vae" if kind == "vae2.1" else kind, "original")}
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_unshare(sd), tmp, metadata=metadata)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    side = write_sidecar(dst)
    logger.info("converted %s (%s, %d tensors%s) -> %s (+ %s)", src.name, kind, len(sd),
                f", prefix {prefix!r} removed" if prefix else "", dst, side.name)
    return dst
