"""Non-finite guard: stop at the first NaN/Inf in a latent or decoded video, and find NaN/Inf weights in files.

A NaN anywhere in the sampler's latent spreads to every value within a step or two and ends as an all-black video
(NaN -> 0 when frames become bytes). `finite_guard` wraps a sampler callback (P3: the samplers stay pure) with one
reduction per step: the sum of the model's x0 estimate is NaN or +-Inf exactly when a value is (latents are O(1), so
a sum of finite values cannot overflow fp32), and one host read of that scalar. `check_finite` does the same for any
tensor (initial latent, final latent, VAE output). `scan_file` reads a checkpoint one tensor at a time from its
memory map and lists the tensors holding NaN/Inf (`python -m wan_core verify FILE --scan`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

SCAN_CHUNK = 1 << 24  # elements checked at a time by scan_file (a 16 MiB bool temporary)
_VERIFY = ("a damaged {} file: `python -m wan_core verify FILE --scan` lists the tensors holding NaN/Inf; "
           "re-download the file")
_HALF = "fp16 overflow (values above 65504): load the {} in bf16 (CLI --dtype bf16, a loader's weight dtype bf16)"
_ATTN = ("a non-default attention backend (e.g. ComfyUI started with --use-sage-attention, or a patched attention): "
         "retry with PyTorch's default SDPA")
CAUSES = {  # what was being checked -> likely causes, most likely first
    "sampling": (_VERIFY.format("DiT"), _HALF.format("DiT"), _ATTN),
    "decode": (_VERIFY.format("VAE"), _HALF.format("VAE") + " or fp32", "a NaN/Inf latent given to the decoder"),
    "input": ("the latent given to the sampler holds NaN/Inf: check the node or file that produced it",),
}


class NonFiniteError(RuntimeError):
    """A latent or decoded video holds NaN or Inf; the message names where (step, sigma) and what to try."""


def _counts(t: torch.Tensor) -> str:
    nan = int(torch.isnan(t).sum())
    inf = int(torch.isinf(t).sum())
    return f"{nan + inf} of {t.numel()} values non-finite ({nan} NaN, {inf} Inf)"


def nonfinite_error(t: torch.Tensor, where: str, stage: str, dtype: torch.dtype | None = None) -> NonFiniteError:
    """The error for a tensor found non-finite `where` (e.g. "at step 3 of 20 (sigma 0.8421)"); stage keys CAUSES."""
    causes = list(CAUSES[stage])
    if dtype == torch.float16 and stage != "input":
        causes.insert(0, causes.pop(1))  # the model runs in fp16: overflow is the first suspect
    listed = "; ".join(f"({i}) {c}" for i, c in enumerate(causes, 1))
    return NonFiniteError(f"{stage} produced NaN/Inf {where}: {_counts(t)}; stopped. Likely causes: {listed}.")


def _finite(t: torch.Tensor) -> bool:
    """One fp32 sum and one host read; a sum that overflowed on huge finite values is confirmed elementwise."""
    return math.isfinite(t.sum(dtype=torch.float32).item()) or bool(torch.isfinite(t).all())


all_finite = _finite  # public name: wan_core.attention's SDPA fallback checks each DiT output with it


def check_finite(t: torch.Tensor, where: str, stage: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return t, or raise NonFiniteError when it holds NaN/Inf (one sum and one host read)."""
    if not _finite(t):
        raise nonfinite_error(t, where, stage, dtype)
    return t


def finite_guard(sigmas: torch.Tensor, callback: Callable | None = None, *,
                 dtype: torch.dtype | None = None) -> Callable[[dict], None]:
    """A sampler callback that checks payload["denoised"] for NaN/Inf, then calls `callback` (if any).

    sigmas: the schedule being sampled (for "step i of n"); dtype: the model's weight dtype (orders the causes).
    """
    steps = len(sigmas) - 1

    def guarded(payload: dict) -> None:
        x0 = payload["denoised"]
        if not _finite(x0):  # the message is only formatted on failure
            where = f"at step {payload['i'] + 1} of {steps} (sigma {payload['sigma']:.4f})"
            raise nonfinite_error(x0, where, "sampling", dtype)
        if callback is not None:
            callback(payload)

    return guarded


# --- checkpoint scan -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BadTensor:
    """A stored tensor holding NaN/Inf: where, how many, and the first bad element's index."""

    file: str
    name: str
    dtype: str
    nan: int
    inf: int
    first: tuple[int, ...]


def _fp8_masks(bits: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(nan, inf) masks of fp8 values from their bytes (CPU isnan does not cover every fp8 dtype)."""
    name = str(dtype)
    if name.endswith("fnuz"):  # one NaN (0x80), no Inf
        return bits == 0x80, torch.zeros_like(bits, dtype=torch.bool)
    if "e4m3" in name:  # e4m3fn: S.1111.111 is NaN, no Inf
        return (bits & 0x7F) == 0x7F, torch.zeros_like(bits, dtype=torch.bool)
    exp_max = (bits & 0x7C) == 0x7C  # e5m2: exponent all ones, mantissa 0 -> Inf, else NaN
    return exp_max & ((bits & 0x03) != 0), exp_max & ((bits & 0x03) == 0)


def _all_finite(part: torch.Tensor) -> bool:
    """Fast path: a finite fp32 sum means finite values (one pass, no mask); fp8 from its bytes in one mask."""
    if part.element_size() > 1:
        return math.isfinite(part.sum(dtype=torch.float32).item())
    bits, name = part.view(torch.uint8), str(part.dtype)
    if name.endswith("fnuz"):
        return not bool((bits == 0x80).any())
    special = 0x7F if "e4m3" in name else 0x7C  # exponent (and for e4m3fn mantissa) all ones
    return not bool(((bits & special) == special).any())


def _masks(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if part.element_size() == 1:
        return _fp8_masks(part.view(torch.uint8), part.dtype)
    return torch.isnan(part), torch.isinf(part)


def scan_tensor(t: torch.Tensor) -> tuple[int, int, tuple[int, ...]] | None:
    """(NaN count, Inf count, first bad index) of a floating-point tensor, chunk by chunk; None when all finite."""
    flat = t.reshape(-1)  # a view of the memory map for the contiguous tensors safetensors stores
    nan = inf = 0
    first = None
    for start in range(0, flat.numel(), SCAN_CHUNK):
        part = flat[start:start + SCAN_CHUNK]
        if _all_finite(part):
            continue
        is_nan, is_inf = _masks(part)
        n, i = int(is_nan.sum()), int(is_inf.sum())
        if (n or i) and first is None:
            offset = start + int(torch.nonzero(is_nan | is_inf)[0, 0])
            first = tuple(int(v) for v in torch.unravel_index(torch.tensor(offset), t.shape)) if t.ndim else ()
        nan, inf = nan + n, inf + i
    return None if first is None else (nan, inf, first)


def _tensors(path) -> Iterator[tuple[str, str, torch.Tensor]]:
    from safetensors import safe_open

    from .loading import read_header, resolve_files

    for file in resolve_files(path):
        read_header(file)  # a truncated or damaged header fails here, naming the file
        with safe_open(file, framework="pt", device="cpu") as f:  # memory-mapped: one tensor paged in at a time
            for name in f.keys():
                yield file.name, name, f.get_tensor(name)


def scan_file(path, *, progress: Callable[[str], None] | None = None) -> tuple[int, list[BadTensor]]:
    """Read every floating-point tensor of a checkpoint (file, sharded index or folder) -> (tensors read, bad ones)."""
    bad, seen = [], 0
    for file, name, t in _tensors(path):
        if not t.is_floating_point():
            continue
        seen += 1
        if progress is not None:
            progress(name)
        if found := scan_tensor(t):
            bad.append(BadTensor(file, name, str(t.dtype).removeprefix("torch."), *found))
    return seen, bad
