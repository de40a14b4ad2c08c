# Metadata conventions (architecture "wan", `comfy.gguf.orig_shape.<name>`, tensors named as the official/ComfyUI
# state dict) follow city96/ComfyUI-GGUF loader.py and tools/convert.py (Apache-2.0), read for behaviour only.
# Tests: tests/test_gguf_file.py, tests/test_gguf_model.py.
"""Reading GGUF diffusion-model files with the `gguf` package: validated header, memory-mapped tensors.

`read_gguf(path)` returns {name: tensor} where unquantized tensors (F32, F16, BF16: the 1-D tensors, modulation tables
and norms converters keep) are plain CPU tensors viewing the file, and quantized ones are `PackedWeight`s holding the
packed bytes (never dequantized here). Every tensor has a `.shape` in torch order, so kind detection, format detection
and config inference work on the result as on a safetensors state dict. Damaged, truncated or foreign files fail with a
CheckpointError naming the file.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .quant.dequant import BLOCK_DEQUANT, FLOAT_TYPES
from .quant.linear import PackedWeight

GGUF_MAGIC = b"GGUF"
WAN_ARCH = "wan"  # general.architecture of Wan GGUF files (ComfyUI-GGUF's convert.py, QuantStack's files)
ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."
TEXT_ARCHS = ("llama", "t5", "t5encoder", "qwen2", "qwen2vl", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "mistral")
INSTALL_HINT = "pip install gguf  (the GGUF reader; listed in requirements.txt)"


def _gguf():
    try:
        import gguf
    except ImportError as e:
        raise ImportError(f"reading GGUF files needs the `gguf` package: {INSTALL_HINT}") from e
    return gguf


def is_gguf(path) -> bool:
    """True when the file starts with the GGUF magic (or is named *.gguf)."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except (OSError, IsADirectoryError):
        return False


def _damaged(path: Path, why: str):
    from .loading import CheckpointError

    return CheckpointError(f"{path} is damaged or incomplete (interrupted download?): {why}; re-download it")


def open_reader(path):
    """A gguf.GGUFReader over the file, with its header validated -> reader (CheckpointError when damaged)."""
    from .loading import CheckpointError

    gguf = _gguf()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise CheckpointError(f"{path} is named .gguf but does not start with the GGUF magic bytes; it is not a "
                                  "GGUF file (re-download it, or rename it if it is a .safetensors file)")
    try:
        reader = gguf.GGUFReader(path)
    except ValueError as e:
        if "GGMLQuantizationType" in str(e):
            raise CheckpointError(f"{path} uses a tensor type this gguf package does not know ({e}); update it "
                                  "(pip install -U gguf) or use a Q8_0/Q5_K/Q4_K file") from e
        raise _damaged(path, f"the GGUF header does not parse ({e})") from e
    except (IndexError, OverflowError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise _damaged(path, f"the GGUF header does not parse ({type(e).__name__}: {e})") from e
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise _damaged(path, f"the header describes {end} bytes of tensor data but the file has {size} (truncated)")
    return reader


def field_value(reader, key: str):
    """A metadata value (str, number, or list), or None when absent."""
    field = reader.get_field(key)
    return None if field is None else field.contents()


def metadata(reader) -> dict[str, str]:
    """The key/value metadata as strings (arrays of more than 16 items summarised), like safetensors metadata."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key.startswith(ORIG_SHAPE_KEY):
            continue
        value = field.contents()
        if isinstance(value, list) and len(value) > 16:
            value = f"[{len(value)} items]"
        out[key] = str(value)
    return out


def check_architecture(path, reader) -> str | None:
    """general.architecture must be "wan" (or absent: then the tensor names decide); otherwise a CheckpointError."""
    from .loading import CheckpointError

    arch = field_value(reader, "general.architecture")
    if arch is None or arch == WAN_ARCH:
        return arch
    what = "a language model (llama.cpp-style GGUF)" if arch in TEXT_ARCHS else "another model family"
    raise CheckpointError(f"{path} is a GGUF of architecture {arch!r}, {what}, not a Wan diffusion model (GGUF "
                          f"architecture {WAN_ARCH!r}); pick a Wan2.2 TI2V-5B GGUF such as "
                          "Wan2.2-TI2V-5B-Q4_K_M.gguf")


def _shape(reader, tensor) -> tuple[int, ...]:
    orig = field_value(reader, ORIG_SHAPE_KEY + tensor.name)
    if orig is not None:
        return tuple(int(v) for v in orig)
    return tuple(int(v) for v in reversed(tensor.shape.tolist()))  # GGUF stores dims fastest-first


def read_gguf(path, *, architecture: bool = True) -> tuple[dict[str, torch.Tensor | PackedWeight], dict[str, str]]:
    """Memory-map a GGUF file -> ({name: tensor or PackedWeight}, metadata strings).

    With `architecture`, a file whose general.architecture is not "wan" is refused. Tensor types other than
    F32/F16/BF16 and the supported block quantizations are refused by name.
    """
    from .loading import CheckpointError

    path = Path(path)
    reader = open_reader(path)
    if architecture:
        check_architecture(path, reader)
    sd: dict[str, torch.Tensor | PackedWeight] = {}
    supported = ", ".join(BLOCK_DEQUANT)
    for t in reader.tensors:
        qtype = t.tensor_type.name
        shape = _shape(reader, t)
        if qtype not in BLOCK_DEQUANT:
            raise CheckpointError(f"{path}: tensor {t.name!r} uses GGUF type {qtype}, which is not supported "
                                  f"(supported: {supported}); use a file quantized as Q8_0, Q6_K, Q5_K_M or Q4_K_M")
        with warnings.catch_warnings():  # the memory map is read-only; tensors never write to it
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            data = torch.from_numpy(t.data)
        stored = tuple(int(v) for v in reversed(t.shape.tolist()))
        if stored and torch.Size(shape).numel() != torch.Size(stored).numel():
            raise _damaged(path, f"tensor {t.name!r} has shape {stored} but its metadata says {shape}")
        if qtype in FLOAT_TYPES:
            sd[t.name] = (data.view(torch.bfloat16) if qtype == "BF16" else data).reshape(shape)
        else:
            sd[t.name] = PackedWeight(data, qtype, shape, stored[-1] if stored else 1)
    if not sd:
        raise CheckpointError(f"{path} is a GGUF file without tensors; re-download it")
    return sd, metadata(reader)


_FLOAT_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def tensor_types(sd) -> dict[str, int]:
    """{GGUF type or dtype name: count} of a read_gguf state dict."""
    counts: dict[str, int] = {}
    for v in sd.values():
        name = v.qtype if isinstance(v, PackedWeight) else _FLOAT_NAMES.get(v.dtype, str(v.dtype))
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def gguf_metadata(path) -> dict[str, str]:
    """The metadata strings of a GGUF file (header only)."""
    return metadata(open_reader(path))


class _Shape(tuple):
    """Stands in for a tensor where only `.shape` is read (kind detection on headers)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self)


def gguf_shapes(path) -> dict[str, _Shape]:
    """{tensor name: object with the torch-order `.shape`} from the header only (no architecture check)."""
    reader = open_reader(path)
    return {t.name: _Shape(_shape(reader, t)) for t in reader.tensors}


def describe_gguf(path, config_fn) -> dict:
    """`python -m wan_core info` for a GGUF file: architecture, tensor types, kind, format and config (header only).

    config_fn(sd, kind) -> config dict (wan_core.tools._config). A foreign architecture is reported, not refused.
    """
    import math

    from .convert import strip_prefix
    from .integrity import read_sidecar
    from .loading import FOUND, detect_format, detect_kind

    path = Path(path)
    sd, meta = read_gguf(path, architecture=False)
    sd, prefix = strip_prefix(sd)
    kind = detect_kind(sd)
    out = {
        "path": str(path), "files": [path.name], "bytes": path.stat().st_size, "container": "gguf",
        "architecture": meta.get("general.architecture"), "kind": kind,
        "kind_description": FOUND.get(kind, "not a recognised Wan component"),
        "format": detect_format(sd, kind) if kind != "unknown" else None, "prefix": prefix or None,
        "tensors": len(sd), "parameters": sum(math.prod(v.shape) for v in sd.values()),
        "gguf_types": tensor_types(sd), "sha256": read_sidecar(path), "metadata": meta,
    }
    if kind != "unknown":
        try:
            out["config"] = config_fn(sd, kind)
        except (ImportError, ValueError, KeyError) as e:
            out["config"], out["config_error"] = None, f"{type(e).__name__}: {e}"
    return out
