"""`generate` flags for batched guidance, regional torch.compile and the attention backend (wan_core.speed).

Torch-free at import (the CLI parses before importing torch); wan_core/cli.py declares the flags with
`add_runtime_args` and turns them into a SpeedOptions with `runtime_options`.
"""
from __future__ import annotations

ATTENTION_CHOICES = ("sdpa", "sage", "flash")  # = wan_core.attention.BACKENDS


def add_runtime_args(p) -> None:
    """--cfg-batch, --compile, --attention."""
    p.add_argument("--cfg-batch", default="auto", choices=["auto", "on", "off"],
                   help="run the prompt and negative-prompt branches as one DiT forward on a batch of 2 (same "
                        "result, ~2x activation memory); auto: on for CUDA when memory allows, off on the CPU")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer block once for all layers (the first step pays the compile "
                        "time; a warning and eager run where compiling is unavailable)")
    p.add_argument("--attention", default="sdpa", choices=ATTENTION_CHOICES,
                   help="attention kernel: sdpa (PyTorch, default), sage (pip install sageattention) or flash (pip "
                        "install flash-attn), CUDA only; a NaN/Inf step switches the run back to sdpa")


def runtime_options(args, device):
    """The wan_core.speed.SpeedOptions of parsed `generate` arguments; a chosen attention backend is imported now
    (a missing package or a non-CUDA device raises its ValueError before any model is loaded)."""
    from .attention import DEFAULT_BACKEND, get_backend
    from .speed import SpeedOptions

    if args.attention != DEFAULT_BACKEND:
        get_backend(args.attention, device)
    return SpeedOptions(cfg_batch=args.cfg_batch, compile=args.compile, attention=args.attention)
