# Which tensors stay unquantized and the file metadata follow city96/ComfyUI-GGUF tools/convert.py (ModelWan: arch
# "wan", 1-D and <= 1024-value tensors and `.modulation` kept F32; Apache-2.0), re-written. Quantization itself is the
# `gguf` package's (gguf.quants.quantize). Tests: tests/test_gguf_quantize.py.
"""`python -m wan_core quantize IN.safetensors OUT.gguf --type Q8_0`: a Wan DiT -> a GGUF file.

The output has GGUF architecture "wan" and official tensor names (what ComfyUI-GGUF and wan_core read). Linear and
other >= 2-D weights are quantized to the chosen type; 1-D tensors (biases, norms), tiny tensors, modulation tables and
the 5-D patch embedding stay F32. A row length that does not fill whole blocks falls back to BF16. Tensors are
quantized and written one at a time, to a temporary file renamed at the end (never a half-written OUT).
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

QUANT_TYPES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "BF16")  # the types gguf.quants can write
KEEP_F32_MIN = 1024  # tensors of at most this many values stay F32 (as ComfyUI-GGUF's converter)
KEEP_F32_NAMES = ("modulation", "norm")  # modulation tables and norms stay F32
MAX_QUANT_DIMS = 4  # GGML tensors have at most 4 dims; the 5-D patch embedding stays F32


def tensor_type(name: str, shape: tuple[int, ...], qtype: str) -> str:
    """The GGUF type one tensor is written as, given the requested file type."""
    from .quant.dequant import BLOCK_SIZES

    if len(shape) <= 1 or math.prod(shape) <= KEEP_F32_MIN or len(shape) > MAX_QUANT_DIMS:
        return "F32"
    if any(part in KEEP_F32_NAMES for part in name.replace(".", " ").replace("_", " ").split()):
        return "F32"
    if shape[-1] % BLOCK_SIZES[qtype][0]:
        return "BF16"
    return qtype


def _load_dit(src: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    """Official-named DiT state dict (memory-mapped), the fp8 `scale_weight` per weight key, the file's metadata."""
    from .convert import convert, strip_prefix
    from .loading import (EXPECTED, FOUND, NON_WEIGHT_KEYS, WrongModelKindError, _describe_unknown, detect_format,
                          detect_kind, read_state_dict)

    sd, info = read_state_dict(src)
    sd, _ = strip_prefix(sd)
    kind = detect_kind(sd)
    if kind != "dit":
        raise WrongModelKindError(f"quantize reads {EXPECTED['dit']}, but {src} is "
                                  f"{FOUND.get(kind) or _describe_unknown(sd)}")
    fmt = detect_format(sd, kind)
    scales = {k: sd[k.removesuffix("weight") + "scale_weight"] for k in sd
              if k.endswith(".weight") and k.removesuffix("weight") + "scale_weight" in sd}
    sd = {k: v for k, v in sd.items() if k not in NON_WEIGHT_KEYS and not k.endswith((".scale_weight", ".scale_input"))}
    return convert(sd, "dit", fmt)[0], convert(scales, "dit", fmt)[0], info.metadata


def quantize_array(value: torch.Tensor, gtype: str, scale: torch.Tensor | None = None):
    """One tensor (times its fp8 scale) -> the NumPy array the gguf package writes for GGUF type `gtype`."""
    import gguf

    data = value.detach().to(torch.float32)
    if scale is not None:  # one value, or one per output row
        data = data * scale.float().reshape(-1, *[1] * (data.ndim - 1))
    return gguf.quants.quantize(data.contiguous().numpy(), gguf.GGMLQuantizationType[gtype])


def quantize_file(src, dst, qtype: str = "Q8_0", *, overwrite: bool = False) -> dict[str, int]:
    """Write the DiT at `src` (safetensors, any naming, fp8 included) as a GGUF of `qtype` at `dst`.

    Returns {GGUF type: tensor count}. Raises ValueError for an unknown type or an existing dst (unless overwrite).
    """
    import gguf
    import numpy as np

    from .gguf_file import WAN_ARCH, _gguf

    _gguf()
    if qtype not in QUANT_TYPES:
        raise ValueError(f"--type {qtype!r} is not one of {', '.join(QUANT_TYPES)} (K-quants are read, not written)")
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise ValueError(f"{dst} exists; pass --overwrite or another output path")
    sd, scales, meta = _load_dit(src)
    plan = {k: tensor_type(k, tuple(v.shape), qtype) for k, v in sd.items()}
    writer = gguf.GGUFWriter(path=None, arch=WAN_ARCH)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(int(gguf.LlamaFileType[f"MOSTLY_{qtype}"]))
    for key, value in meta.items():  # e.g. wan_core.sampling_defaults travels with the weights
        writer.add_string(key, str(value))
    for key, value in sd.items():
        g = gguf.GGMLQuantizationType[plan[key]]
        block, size = gguf.GGML_QUANT_SIZES[g]
        writer.add_tensor_info(key, tuple(value.shape), np.dtype(np.float32), value.numel() // block * size, g)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer.write_header_to_file(path=Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for key, value in sd.items():  # one tensor in memory at a time
            writer.write_tensor_data(quantize_array(value, plan[key], scales.get(key)))
        writer.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the result gets the usual permissions
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    counts: dict[str, int] = {}
    for g in plan.values():
        counts[g] = counts.get(g, 0) + 1
    logger.info("wrote %s: %s", dst, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def add_quantize_parser(sub) -> None:
    """The `quantize` subcommand (registered by wan_core/cli.py)."""
    p = sub.add_parser("quantize", help="write a DiT .safetensors as a GGUF file (Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, BF16) "
                                        "that wan_core and ComfyUI-GGUF load")
    p.add_argument("src", help="DiT .safetensors (official, ComfyUI or diffusers names; fp8 files are dequantized)")
    p.add_argument("dst", help="output .gguf")
    p.add_argument("--type", dest="qtype", default="Q8_0", choices=QUANT_TYPES,
                   help="quantization of the >= 2-D weights (default Q8_0); 1-D tensors, norms and modulation stay F32")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args) -> int:
    counts = quantize_file(args.src, args.dst, args.qtype, overwrite=args.overwrite)
    size = Path(args.dst).stat().st_size
    print(f"wrote {args.dst} ({size / 2**20:.1f} MiB; tensors: {', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0
