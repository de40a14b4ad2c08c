"""Per-run speed options of sample_latents: batched guidance, regional torch.compile, attention backend.

- cfg batching: the positive and negative prompt branches run as one DiT forward on a batch of 2B (same results
  within float rounding, tests/test_cfg_batch.py). "auto" turns it on for CUDA when the free memory holds the second
  branch's activations, and off elsewhere (on the CPU it measured no faster: docs/speed.md).
- compile: wan_core.compile's one compiled block function (eager with a warning when unavailable).
- attention: "sdpa" (PyTorch, default), "sage" (sageattention) or "flash" (flash-attn), wan_core.attention; a
  non-default backend falls back to SDPA for the rest of the run at its first non-finite DiT output.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch

from .attention import BACKENDS, DEFAULT_BACKEND
from .config import WanConfig
from .model import DiTHooks

CFG_BATCH_MODES = ("auto", "on", "off")
CPU_CFG_BATCH = False  # "auto" on the CPU: benchmarks/bench_compile.py --cfg measured no gain (docs/speed.md)
ACTIVATION_FLOATS_PER_TOKEN = 12  # fp32 values per token and channel alive at a block's peak (residual, q, k, v, ...)


@dataclass(frozen=True)
class SpeedOptions:
    """cfg_batch: "auto" | "on" | "off"; compile: regional torch.compile of the blocks; attention: a BACKENDS name."""

    cfg_batch: str = "auto"
    compile: bool = False
    attention: str = DEFAULT_BACKEND

    def __post_init__(self):
        if self.cfg_batch not in CFG_BATCH_MODES:
            raise ValueError(f"cfg_batch must be one of {CFG_BATCH_MODES} (got {self.cfg_batch!r}); auto batches the "
                             "two guidance branches on CUDA GPUs")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False (got {self.compile!r})")
        if self.attention not in BACKENDS:
            raise ValueError(f"unknown attention backend {self.attention!r}; choose one of {sorted(BACKENDS)}")

    def describe(self) -> str:
        return f"cfg_batch={self.cfg_batch}, compile={'on' if self.compile else 'off'}, attention={self.attention}"


def branch_activation_bytes(x: torch.Tensor, dim: int, patch: tuple[int, int, int], per_token_time: bool) -> int:
    """Rough peak activation bytes of one guidance branch's DiT forward for latent x [B, C, T, H, W]."""
    tokens = x.shape[0] * math.prod(n // p for n, p in zip(x.shape[2:], patch))
    floats = ACTIVATION_FLOATS_PER_TOKEN + (6 if per_token_time else 0)  # image-to-video: e0 is [B, L, 6, C] fp32
    return tokens * dim * floats * 4


def use_cfg_batch(mode: str, x: torch.Tensor, cfg: WanConfig, per_token_time: bool = False) -> bool:
    """Whether to batch the guidance branches: "on"/"off" as given; "auto": on CUDA when the free memory (plus the
    allocator's cached blocks) exceeds twice the second branch's estimated activations, CPU_CFG_BATCH elsewhere."""
    if mode not in CFG_BATCH_MODES:
        raise ValueError(f"cfg_batch must be one of {CFG_BATCH_MODES} (got {mode!r})")
    if mode != "auto":
        return mode == "on"
    if x.device.type != "cuda":
        return CPU_CFG_BATCH
    free, _ = torch.cuda.mem_get_info(x.device)
    free += torch.cuda.memory_reserved(x.device) - torch.cuda.memory_allocated(x.device)
    return free > 2 * branch_activation_bytes(x, cfg.dim, tuple(cfg.patch_size), per_token_time)


def with_hooks(hooks: Optional[DiTHooks], **fields) -> Optional[DiTHooks]:
    """hooks with `fields` set (a new DiTHooks; None fields are left as they are); None when nothing is set."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        return hooks
    return dataclasses.replace(hooks, **fields) if hooks is not None else DiTHooks(**fields)
