# Detection markers and the fp8-scaled layout follow ComfyUI comfy/sd.py, comfy/model_detection.py and comfy/ops.py
# (GPL-3.0; read for behaviour only, re-written). Tests: tests/test_loading.py (every format -> identical tensors,
# fp8-scaled within e4m3 tolerance), tests/test_convert.py (key maps vs diffusers/transformers tiny models).
"""Checkpoint loading: safetensors only (single file, sharded with an index, or a folder), memory-mapped.

`read_state_dict` returns tensors backed by the file's memory map (no second copy in RAM), after checking the file
against its `.sha256` sidecar (or a given hash) and validating the safetensors header so that truncated or damaged
files fail with a message naming the file. `detect_kind` / `detect_format` recognise the component (DiT, Wan2.2 VAE,
Wan2.1 VAE, umT5) and its naming (official/ComfyUI, diffusers, transformers, optional wrapper prefix);
`load_dit` / `load_vae` / `load_text_encoder` convert names with `wan_core.convert` and build the module.
Pickle checkpoints (.pth .pt .ckpt .bin) are refused: `python -m wan_core convert IN.pth OUT.safetensors` converts them.
"""
from __future__ import annotations

import json
import logging
import math
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open

from .convert import convert, strip_prefix
from .integrity import verify_file

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".pickle")
INDEX_SUFFIX = ".index.json"
MAX_HEADER_BYTES = 100 << 20  # the safetensors format's own limit
DEQUANT_ELEMENTS = 16 << 20  # fp32 elements per dequantisation step (64 MiB temporary)
FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
                   if hasattr(torch, n))
ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
             "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64}
NON_WEIGHT_KEYS = ("spiece_model", "scaled_fp8")  # ComfyUI extras: embedded tokenizer bytes, fp8 marker
CONVERT_HINT = "Convert it once with `python -m wan_core convert {name} {stem}.safetensors`"


class CheckpointError(ValueError):
    """A checkpoint file cannot be read: not safetensors, damaged, incomplete or with inconsistent keys."""


class WrongModelKindError(ValueError):
    """The file holds another model component than the one requested (e.g. a Wan2.1 VAE given as the Wan2.2 VAE)."""


@dataclass(frozen=True)
class LoadInfo:
    """Where a state dict came from."""

    path: Path  # what the caller passed (file, index json or folder)
    files: tuple[Path, ...]  # the safetensors files read, in order
    nbytes: int  # total size of those files
    sha256: tuple[str | None, ...]  # verified digest per file; None = nothing to verify against (or verify=False)
    metadata: dict[str, str] = field(default_factory=dict)  # merged `__metadata__` of the headers
    seconds: float = 0.0


def _pickle_error(path: Path) -> CheckpointError:
    return CheckpointError(f"{path} is a pickle checkpoint ({path.suffix or 'pickle bytes'}); pickles can run code "
                           f"when loaded, so only safetensors are read. " + CONVERT_HINT.format(name=path.name,
                                                                                             stem=path.stem))


def read_header(file) -> tuple[dict[str, dict], dict[str, str]]:
    """Parse and validate a safetensors header -> ({name: {dtype, shape, data_offsets}}, metadata); reads no tensor data."""
    file = Path(file)
    damaged = f"{file} is damaged or incomplete (interrupted download?); re-download it"
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        # a safetensors header length can start with byte 0x80 too: only call it a pickle if that length cannot fit
        pickle_like = head[:1] == b"\x80" and (len(head) < 8 or struct.unpack("<Q", head)[0] + 8 > size)
        if head[:2] == b"PK" or pickle_like:
            raise _pickle_error(file)
        if head[:4] == b"GGUF":
            raise CheckpointError(f"{file} is a GGUF file, not safetensors; GGUF diffusion models load with "
                                  "load_dit / `python -m wan_core info` (wan_core.gguf_file)")
        if len(head) < 8:
            raise CheckpointError(f"{damaged}: {size} bytes is too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{damaged}: header length {n} does not fit in the {size}-byte file")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{damaged}: the header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{damaged}: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_bytes, end = size - 8 - n, 0
    for name, entry in header.items():
        try:
            begin, stop = entry["data_offsets"]
            itemsize = ST_DTYPES[entry["dtype"]].itemsize
            need = math.prod(entry["shape"]) * itemsize
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{damaged}: bad header entry for {name!r} ({e!r})") from e
        if stop - begin != need or begin < 0:
            raise CheckpointError(f"{damaged}: tensor {name!r} spans {stop - begin} bytes but its shape needs {need}")
        end = max(end, stop)
    if end > data_bytes:
        raise CheckpointError(f"{damaged}: the header describes {end} data bytes but only {data_bytes} are present "
                              f"(the file is truncated)")
    if end < data_bytes:
        raise CheckpointError(f"{damaged}: {data_bytes - end} unexpected bytes after the last tensor")
    return header, dict(metadata)


def _index_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index} is not a sharded-checkpoint index (expected JSON with a `weight_map` "
                              f"of tensor name -> shard file): {e!r}") from e
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index} lists shards that are not in {index.parent}: {missing}; download every shard")
    return files


def _resolve(path: Path) -> tuple[list[Path], Path | None]:
    """-> (safetensors files, the index json when sharded)."""
    if path.is_dir():
        indexes = sorted(path.glob(f"*.safetensors{INDEX_SUFFIX}"))
        singles = sorted(path.glob("*.safetensors"))
        if len(indexes) == 1:
            return _index_files(indexes[0]), indexes[0]
        if not indexes and len(singles) == 1:
            return singles, None
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not indexes and not singles and pickles:
            raise _pickle_error(path / pickles[0])
        found = [p.name for p in indexes or singles]
        raise CheckpointError(f"{path} must hold one safetensors file or one *.safetensors{INDEX_SUFFIX}; found "
                              f"{found or 'none'}; pass the file itself")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.name.endswith(INDEX_SUFFIX):
        return _index_files(path), path
    if path.suffix in PICKLE_SUFFIXES:
        raise _pickle_error(path)
    return [path], None


def resolve_files(path) -> list[Path]:
    """The safetensors file(s) behind a path: a .safetensors file, a `*.index.json`, or a folder holding either."""
    return _resolve(Path(path))[0]


def read_state_dict(path, *, sha256: str | None = None, verify: bool = True) -> tuple[dict[str, torch.Tensor],
                                                                                        LoadInfo]:
    """Memory-map a checkpoint -> ({name: CPU tensor}, LoadInfo).

    With verify, each file is checked against its `.sha256` sidecar, or against `sha256` (single files only).
    """
    t0 = time.perf_counter()
    path = Path(path)
    files, index = _resolve(path)
    if sha256 is not None and len(files) > 1:
        raise ValueError(f"sha256= names one file but {path} has {len(files)} shards; put a .sha256 sidecar next "
                         "to each shard instead")
    digests = [verify_file(f, sha256) if verify else None for f in files]
    sd: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for file in files:
        header, meta = read_header(file)
        metadata.update(meta)
        try:
            with safe_open(file, framework="pt", device="cpu") as f:  # mmap backend: tensors view the file
                for name in f.keys():
                    if name in sd:
                        raise CheckpointError(f"tensor {name!r} appears in two shards (second: {file}); the shard "
                                              "set is inconsistent, re-download it")
                    sd[name] = f.get_tensor(name)
        except SafetensorError as e:
            raise CheckpointError(f"{file} is damaged or incomplete ({e}); re-download it") from e
    if index is not None:
        expected = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        missing = sorted(set(expected) - set(sd))
        if missing:
            raise CheckpointError(f"{index} lists {len(missing)} tensors that no shard holds (e.g. {missing[:3]}); "
                                  "a shard is outdated or damaged, re-download it")
    info = LoadInfo(path=path, files=tuple(files), nbytes=sum(f.stat().st_size for f in files),
                    sha256=tuple(digests), metadata=metadata, seconds=time.perf_counter() - t0)
    return sd, info


def sampling_defaults(path) -> tuple["SamplingConfig", str]:
    """The sampling defaults a DiT file carries in its metadata (headers only) -> (config, where they came from).

    A file without the SAMPLING_DEFAULTS_KEY entry (e.g. the official TI2V-5B) gets SamplingConfig(); a bad entry
    raises ValueError naming the file.
    """
    from .config import OFFICIAL_DEFAULTS, SAMPLING_DEFAULTS_KEY, SamplingConfig, parse_sampling_defaults
    from .gguf_file import gguf_metadata, is_gguf

    name = Path(path).name
    metadata: dict[str, str] = {}
    for file in resolve_files(path):
        metadata.update(gguf_metadata(file) if is_gguf(file) else read_header(file)[1])
    if SAMPLING_DEFAULTS_KEY not in metadata:
        return SamplingConfig(), f"{OFFICIAL_DEFAULTS}: {name} has no {SAMPLING_DEFAULTS_KEY} metadata"
    return parse_sampling_defaults(metadata[SAMPLING_DEFAULTS_KEY], str(path)), f"from {name} metadata"


# --- kind and format detection (work on real, meta or any objects with a `.shape`) ----------------------------------
_T5_BLOCK = re.compile(r"^encoder\.block\.\d+\.layer\.0\.SelfAttention\.q\.weight$")
_T5_OFFICIAL = re.compile(r"^blocks\.\d+\.attn\.q\.weight$")


def _vae_channels(sd: Mapping[str, Any]) -> int | None:
    for key in ("conv2.weight", "post_quant_conv.weight"):  # [z_dim, z_dim, 1, 1, 1]
        if key in sd:
            return int(sd[key].shape[0])
    return None


def detect_kind(sd: Mapping[str, Any]) -> str:
    """"dit" | "vae" | "vae2.1" | "t5" | "unknown" from key names and shapes (a wrapper prefix is ignored)."""
    sd, _ = strip_prefix(sd)
    if "head.modulation" in sd or ("scale_shift_table" in sd and "proj_out.weight" in sd):
        return "dit"
    if any(k.startswith(("decoder.middle.", "decoder.mid_block.")) for k in sd) and (ch := _vae_channels(sd)):
        return "vae" if ch == 48 else "vae2.1" if ch == 16 else "unknown"
    if any(_T5_BLOCK.match(k) or _T5_OFFICIAL.match(k) for k in sd):
        return "t5"
    return "unknown"


def detect_format(sd: Mapping[str, Any], kind: str) -> str:
    """Key naming of a `kind` state dict, as a `wan_core.convert` format name ("official", "diffusers", "transformers")."""
    sd, _ = strip_prefix(sd)
    if kind == "dit":
        return "diffusers" if "scale_shift_table" in sd else "official"
    if kind in ("vae", "vae2.1"):
        return "diffusers" if any(k.startswith("decoder.mid_block.") for k in sd) else "official"
    if kind == "t5":
        return "official" if any(_T5_OFFICIAL.match(k) for k in sd) else "transformers"
    raise ValueError(f"cannot name the format of a {kind!r} state dict; kind must be dit, vae, vae2.1 or t5")


def is_scaled_fp8(sd: Mapping[str, Any]) -> bool:
    """ComfyUI's fp8-scaled layout: a `scaled_fp8` marker and/or `<layer>.scale_weight` tensors."""
    return "scaled_fp8" in sd or any(k.endswith(".scale_weight") for k in sd)


def _dequantize(w: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """w * scale computed in fp32, a few rows at a time (no full-size fp32 temporary), stored as dtype.

    scale: None, one value, or one value per output row ([out] or [out, 1, ...]).
    """
    rows = w.shape[0] if w.ndim else 1
    flat = w.reshape(rows, -1)  # [rows, rest]
    out = torch.empty(flat.shape, dtype=dtype, device=w.device)  # [rows, rest]
    if scale is not None:
        scale = scale.to(device=w.device, dtype=torch.float32)
        if scale.numel() not in (1, rows):
            raise CheckpointError(f"fp8 scale of shape {tuple(scale.shape)} fits neither the whole weight nor its "
                                  f"{rows} rows (weight {tuple(w.shape)}); this fp8 layout is not supported")
        scale = scale.reshape(-1, 1)  # [1 or rows, 1]
    step = max(1, DEQUANT_ELEMENTS // max(1, flat.shape[1]))
    for i in range(0, rows, step):
        part = flat[i:i + step].to(torch.float32)
        if scale is not None:
            part = part * (scale if scale.shape[0] == 1 else scale[i:i + step])
        out[i:i + step] = part.to(dtype)
    return out.reshape(w.shape)


def dequantize_fp8(sd: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """fp8 weights -> `dtype` (times their `scale_weight` when present); drops scale/marker tensors."""
    out = {}
    for key, value in sd.items():
        if key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input")):
            continue
        if isinstance(value, torch.Tensor) and value.dtype in FP8_DTYPES:  # PackedWeights stay packed
            scale = sd.get(key.removesuffix("weight") + "scale_weight") if key.endswith(".weight") else None
            value = _dequantize(value, scale, dtype)
        out[key] = value
    return out


# --- model builders ------------------------------------------------------------------------------------------------
EXPECTED = {
    "dit": "a Wan2.2 TI2V-5B diffusion model (DiT, e.g. wan2.2_ti2v_5B_fp16.safetensors from ComfyUI's "
           "diffusion_models/ folder)",
    "vae": "a Wan2.2 VAE (48 latent channels, e.g. wan2.2_vae.safetensors from ComfyUI's vae/ folder)",
    "t5": "a umT5-XXL text encoder (e.g. umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors from "
          "ComfyUI's text_encoders/ folder)",
}
FOUND = {
    "dit": "a Wan diffusion model (DiT)",
    "vae": "a Wan2.2 VAE (48 channels)",
    "vae2.1": "a Wan2.1 VAE (16 channels, used by Wan2.1 and Wan2.2 A14B, not by the TI2V-5B)",
    "t5": "a umT5 text encoder",
}


def _describe_unknown(sd: Mapping[str, Any]) -> str:
    keys = list(sd)
    if any("lora" in k.lower() for k in keys[:50]):
        return "a LoRA (apply it with a LoRA loader instead)"
    return f"not a recognised Wan component ({len(keys)} tensors, first keys {keys[:3]})"


def _prepare(path, want: str, *, sha256, verify, dtype, keep_scaled: bool = False):
    """Read, check the kind, convert names and dequantise -> (canonical sd, dtype to build with, extras, log fields).

    keep_scaled: scaled-fp8 Linear weights become wan_core.quant PackedWeights (dequantized per layer at compute time).
    """
    sd, info = read_state_dict(path, sha256=sha256, verify=verify)
    sd, prefix = strip_prefix(sd)
    kind = detect_kind(sd)
    if kind != want:
        found = FOUND.get(kind) or _describe_unknown(sd)
        raise WrongModelKindError(f"expected {EXPECTED[want]} but {info.path} is {found}; pass the right file")
    fmt = detect_format(sd, kind)
    scaled = is_scaled_fp8(sd)
    extras = {k: sd.pop(k) for k in NON_WEIGHT_KEYS if k in sd}
    fmt_note = fmt
    if any(v.dtype in FP8_DTYPES for v in sd.values()):
        fmt_note = f"{fmt}+fp8{'-scaled' if scaled else ''}"
        if scaled and keep_scaled:  # per-layer dequantization at compute time (wan_core.quant)
            from .quant.load import pack_scaled_fp8

            sd = pack_scaled_fp8(sd, FP8_DTYPES)
            dtype = torch.bfloat16 if dtype is None or dtype in FP8_DTYPES else dtype
        elif dtype in FP8_DTYPES and scaled:  # re-storing w * scale as plain fp8 would flush small weights to zero
            logger.warning("%s: scaled-fp8 weights are dequantised to bfloat16 (no scaled-fp8 layers here), not "
                           "kept as %s", info.path.name, dtype)
            dtype = torch.bfloat16
        if dtype not in FP8_DTYPES:  # plain fp8 asked to stay fp8 is left as stored
            dtype = dtype or torch.bfloat16  # fp8 is a storage format; compute in bf16 unless told otherwise
            sd = dequantize_fp8(sd, dtype)
    sd, _ = convert(sd, kind, fmt)
    note = f"{fmt_note}{f', prefix {prefix!r}' if prefix else ''}"
    return sd, dtype, extras, info, note


def _build(builder, sd, info: LoadInfo, kind: str, note: str, t0: float, **kwargs):
    try:
        model = builder(sd, **kwargs)
    except (ValueError, RuntimeError, KeyError) as e:
        e.args = (f"{info.path}: {e.args[0] if e.args else e}",) + e.args[1:]  # keep the type, name the file
        raise
    module = model if isinstance(model, torch.nn.Module) else model.model  # WanTextEncoder wraps its module
    params = sum(p.numel() for p in module.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()})
    checked = "sha256 ok" if all(info.sha256) else "sha256 not checked (no sidecar, or verify=False)"
    logger.info("loaded %s from %s: format %s, dtype %s, %.3g M params, %s, %.1f s", kind, info.path.name, note,
                "/".join(dtypes), params / 1e6, checked, time.perf_counter() - t0)
    return model


def load_dit(path, *, device=None, dtype=None, ops=torch.nn, sha256=None, verify=True, loras=()):
    """Load a Wan DiT (safetensors in official/ComfyUI/diffusers naming, or GGUF) -> WanTransformer.

    GGUF and scaled-fp8 files keep their Linear weights packed (wan_core.quant.linear.QuantLinear, dequantized to
    the compute dtype at each call); `dtype` is then the compute dtype (default bf16).
    loras: [(LoRA file, strength), ...] applied after loading (wan_core.lora.apply_lora_files: merged in fp32 and
    stored in the model's dtypes, packed layers patched; `wan_core.lora.remove_loras(model)` undoes it).
    """
    model = _load_dit_file(path, device=device, dtype=dtype, ops=ops, sha256=sha256, verify=verify)
    if loras:
        from .lora import apply_lora_files

        apply_lora_files(model, loras, verify=verify)
    return model


def _load_dit_file(path, *, device, dtype, ops, sha256, verify):
    from .model import WanTransformer

    t0 = time.perf_counter()
    from .gguf_file import is_gguf
    from .quant.load import build_quantized_dit, has_packed, load_gguf_dit

    if is_gguf(path):  # GGUF: weights stay quantized, each Linear dequantizes per call (wan_core.quant)
        return load_gguf_dit(path, device=device, dtype=dtype, ops=ops, sha256=sha256, verify=verify)
    sd, dtype, _, info, note = _prepare(path, "dit", sha256=sha256, verify=verify, dtype=dtype, keep_scaled=True)
    if has_packed(sd):  # scaled fp8: kept as stored, dequantized per layer at compute time
        return _build(build_quantized_dit, sd, info, "dit", note, t0, ops=ops, device=device, dtype=dtype,
                      compute_dtype=dtype)
    return _build(WanTransformer.from_state_dict, sd, info, "dit", note, t0, ops=ops, device=device, dtype=dtype)


def load_vae(path, *, device=None, dtype=None, ops=torch.nn, sha256=None, verify=True):
    """Load the Wan2.2 VAE (48 channels) from safetensors in official/ComfyUI/diffusers naming -> WanVAE."""
    from .vae import WanVAE

    t0 = time.perf_counter()
    sd, dtype, _, info, note = _prepare(path, "vae", sha256=sha256, verify=verify, dtype=dtype)
    return _build(WanVAE.from_state_dict, sd, info, "vae", note, t0, ops=ops, device=device, dtype=dtype)


def load_text_encoder(path, *, tokenizer=None, device=None, dtype=None, sha256=None, verify=True):
    """Load the umT5-XXL encoder (fp16/bf16/fp32, or ComfyUI fp8-scaled dequantised to bf16) -> WanTextEncoder.

    tokenizer: a SpieceTokenizer, a tokenizer folder, or None to use the `spiece_model` bytes embedded in the file.
    The tied embedding may be stored as `shared.weight` or `encoder.embed_tokens.weight`.
    """
    from .text_encoder import WanTextEncoder

    t0 = time.perf_counter()
    sd, dtype, extras, info, note = _prepare(path, "t5", sha256=sha256, verify=verify, dtype=dtype)
    if "spiece_model" in extras:
        sd["spiece_model"] = extras["spiece_model"]  # the encoder builds its tokenizer from it when none is given
    return _build(WanTextEncoder.from_state_dict, sd, info, "t5", note, t0, tokenizer=tokenizer, device=device,
                  dtype=dtype)
