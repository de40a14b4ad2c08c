"""Regional torch.compile of the DiT: one compiled function runs every transformer block (DiTHooks.run_block).

The blocks of a Wan DiT share their code, so compiling the block call once (torch's "regional compilation"
recipe: with dynamo's default inline_inbuilt_nn_modules a block's parameters are graph inputs, not constants)
gives one graph that all layers reuse: compile time is that of one block, not of the whole DiT, and the model
itself is never modified (P12: the hook is per call). Shapes are static (dynamic=False): within one sampling run
the latent, text and batch shapes are fixed and only tensor values (x, the time projection) change, so no step
recompiles; a new resolution, batch (cfg batching on/off) or device compiles once more. A self-attention hook
whose Python state changes per step (a windowed Enhance-A-Video) may recompile when it switches.

When compilation is unavailable (no torch.compile, no C++ compiler for the CPU inductor, no Triton for CUDA) or
fails at its first call, one warning is logged and the blocks run eagerly; results are the same either way
(tests/test_compile.py). Benchmark: benchmarks/bench_compile.py.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
from typing import Optional

import torch

log = logging.getLogger(__name__)


def _run_block(block: torch.nn.Module, x: torch.Tensor, ctx) -> torch.Tensor:
    return block(x, ctx)


def compile_unavailable(device: torch.device | str) -> Optional[str]:
    """Why torch.compile cannot run the DiT on `device` (quick checks, nothing compiled), or None."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile (it needs torch >= 2.0)"
    kind = torch.device(device).type
    if kind == "cuda" and importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton; on Windows: pip install triton-windows)"
    if kind == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
        except ImportError:  # internal API moved: the first call will tell
            return None
        try:
            get_cpp_compiler()
        except Exception as e:  # torch raises its own error types for a missing or unusable compiler
            return (f"no C++ compiler for torch's CPU backend ({type(e).__name__}: {e}); install g++ or clang++ "
                    "(or set CXX)")
    return None


def _root_cause(e: BaseException) -> str:
    """'Type: first line' of the innermost cause (dynamo wraps a backend's error in BackendCompilerFailed)."""
    while (inner := getattr(e, "inner_exception", None) or e.__cause__) is not None:
        e = inner
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


class BlockRunner:
    """run_block(block, x, ctx) through one torch.compile'd function, eager once compiling is unavailable.

    A call whose shapes have not run compiled yet keeps a copy of x (the block updates its residual stream in
    place), so a compile error at that call is caught, logged once as a warning, and the block reruns eagerly on
    the untouched input; every later call then runs eagerly too. backend: torch.compile's (tests use "aot_eager")."""

    def __init__(self, backend="inductor"):
        self._compiled = torch.compile(_run_block, dynamic=False, backend=backend)
        self._seen: set = set()  # (x shape, dtype, device, per-token time) that ran compiled
        self.failed: Optional[str] = None

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.warning("torch.compile is unavailable, the DiT runs eagerly (same results, no speed-up): %s", reason)

    def __call__(self, block: torch.nn.Module, x: torch.Tensor, ctx) -> torch.Tensor:
        if self.failed is None and not self._seen:
            if reason := compile_unavailable(x.device):
                self._fail(reason)
        if self.failed is not None:
            return block(x, ctx)
        key = (tuple(x.shape), x.dtype, x.device, tuple(ctx.e0.shape), tuple(ctx.context.shape))
        if key in self._seen:
            return self._compiled(block, x, ctx)
        keep = x.clone()
        try:
            with warnings.catch_warnings():  # the RoPE table arrives complex; the compiled math is real (wan_core.rope)
                warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
                out = self._compiled(block, x, ctx)
        except Exception as e:  # any compiler error: the eager block is always correct
            self._fail(_root_cause(e))
            return block(keep, ctx)
        self._seen.add(key)
        return out


@functools.cache
def block_runner() -> BlockRunner:
    """The process's one compiled block runner (its compiled graphs are reused by every run and every model)."""
    return BlockRunner()
