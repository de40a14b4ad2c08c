"""Multi-head attention for the Wan DiT on torch's fused scaled_dot_product_attention (no mask, no dropout).

The layout is [B, L, H, D] (tokens before heads), as in Wan-Video/Wan2.2 wan/modules/attention.py; SDPA wants
[B, H, L, D], so the transposes are views and SDPA picks its fused kernel (flash / memory-efficient / CPU flash).

Optional backends (`BACKENDS`: SageAttention's `sageattn`, flash-attn's `flash_attn_func`; both take [B, L, H, D]
directly) are never required and imported only when a run asks for them (`get_backend`); the DiT gets the chosen
function through DiTHooks.attention. `AttentionRun` switches a run to SDPA at its first non-finite DiT output.
Tests: tests/test_attention_backends.py.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for q [B, Lq, H, D], k and v [B, Lk, H, D]; returns [B, Lq, H, D] in q.dtype."""
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention expects q [B, Lq, H, D] and k, v [B, Lk, H, D]; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    k = k.to(q.dtype)
    v = v.to(q.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, H, Lq, D]
    return out.transpose(1, 2)  # [B, Lq, H, D]


# --- optional backends (chosen per run; imported only when chosen) -------------------------------------------------
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # q, k, v [B, L, H, D] -> out


@dataclass(frozen=True)
class Backend:
    """An attention implementation: `load()` imports its package and returns an AttentionFn on [B, L, H, D]."""

    name: str
    package: str  # the pip package, named in the error when it is missing
    load: Callable[[], AttentionFn]
    needs_cuda: bool = True


def _half(fn: AttentionFn) -> AttentionFn:
    """fn on fp16/bf16 inputs (the kernels take no fp32): fp32 q, k, v go in as bf16, the result returns as q.dtype."""
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        want = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        return fn(q.to(want), k.to(want), v.to(want)).to(q.dtype)

    return torch.compiler.disable(run)  # an extension kernel: a graph break under torch.compile, never traced


def _load_sage() -> AttentionFn:
    from sageattention import sageattn

    return _half(lambda q, k, v: sageattn(q, k, v, tensor_layout="NHD", is_causal=False))  # [B, L, H, D]


def _load_flash() -> AttentionFn:
    from flash_attn import flash_attn_func

    return _half(lambda q, k, v: flash_attn_func(q, k, v, causal=False))  # [B, L, H, D]


BACKENDS: dict[str, Backend] = {
    "sdpa": Backend("sdpa", "torch", lambda: attention, needs_cuda=False),
    "sage": Backend("sage", "sageattention", _load_sage),
    "flash": Backend("flash", "flash-attn", _load_flash),
}
DEFAULT_BACKEND = "sdpa"


@functools.cache
def _loaded(backend: Backend) -> AttentionFn:
    """One function object per backend for the whole process (torch.compile guards on it: no recompile per run)."""
    return backend.load()


def get_backend(name: str, device: torch.device | str | None = None) -> AttentionFn:
    """The attention function of backend `name` ("sdpa", "sage", "flash"), importing its package now.

    A missing package, or a CUDA-only backend asked for another device, raises a ValueError naming the fix."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {sorted(BACKENDS)} (sdpa is PyTorch's "
                         "built-in and always available)")
    backend = BACKENDS[name]
    if backend.needs_cuda and device is not None and torch.device(device).type != "cuda":
        raise ValueError(f"attention backend {name!r} runs on CUDA GPUs only (the model is on "
                         f"{torch.device(device)}); use attention 'sdpa'")
    try:
        return _loaded(backend)
    except ImportError as e:
        raise ValueError(f"attention backend {name!r} needs the {backend.package!r} package, which is not "
                         f"importable ({e}); install it with `pip install {backend.package}` or use attention "
                         "'sdpa'") from e


class AttentionRun:
    """The attention of one sampling run: the chosen backend until its first non-finite DiT output, SDPA after.

    `fn` is what DiTHooks.attention gets (None = SDPA). `guard(build)` wraps a DiT call built by
    `build(attention_fn or None)` -> fn(x, sigma) returning a tensor or a tuple of tensors: with a non-default backend
    each output is checked (one sum, one host read); the first non-finite one logs a warning, switches the run (every
    guarded call of it) to SDPA and recomputes that call with SDPA, so neither the sampler nor a step cache sees it."""

    def __init__(self, name: str = DEFAULT_BACKEND, device: torch.device | str | None = None):
        self.name = name
        self.fn: Optional[AttentionFn] = None if name == DEFAULT_BACKEND else get_backend(name, device)
        self.fell_back = False

    def guard(self, build: Callable[[Optional[AttentionFn]], Callable]) -> Callable:
        if self.fn is None:
            return build(None)
        from .guard import all_finite

        chosen, sdpa = build(self.fn), []

        def guarded(x: torch.Tensor, sigma: torch.Tensor):
            if self.fn is not None:
                out = chosen(x, sigma)
                if all(all_finite(p) for p in (out if isinstance(out, tuple) else (out,))):
                    return out
                log.warning("attention backend %r produced NaN/Inf (sigma %.4f); PyTorch SDPA is used for the rest "
                            "of this run and that DiT call is recomputed", self.name, float(sigma.reshape(-1)[0]))
                self.fn, self.fell_back = None, True
            if not sdpa:
                sdpa.append(build(None))
            return sdpa[0](x, sigma)

        return guarded
