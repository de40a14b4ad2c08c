"""Benchmark: regional torch.compile vs eager DiT forward, and cfg batching vs two forwards, on the CPU.

    python benchmarks/bench_compile.py [--configs d512x4 d3072x1] [--repeats 5]
                                                               [--threads 2] [--cfg]

compile: for each config, one model (random weights from a seeded CPU generator, nothing downloaded) runs the
same inputs eagerly and through wan_core.compile's one compiled block function (DiTHooks.run_block), interleaved
(eager, compiled, eager, ...) after warm-ups; the median s/forward of `repeats` runs, the median of the paired
ratios and the ratio of the best times are printed (on a shared machine the best times are the least disturbed).
"compile s" is the first compiled forward's time minus a steady compiled forward (graph capture + inductor + C++
build of the one block graph; the FX graph cache is pointed at a fresh folder so it is a cold compile).
--cfg: one guided step's DiT work at cfg 5 as two batch-1 forwards vs one batch-2 forward (cfg batching), for
the same configs plus the tiny demo DiT's shape; this decides wan_core.speed.CPU_CFG_BATCH.
Timings are ratios measured side by side in one process; absolute times depend on the machine (and on other
processes: run it under the CPU lock).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FFN_RATIO = 14336 / 3072  # TI2V-5B's ffn_dim / dim
CONFIGS = {  # name -> (dim, layers, latent [B, 48, F, H, W]); heads = dim / 128 as the 5B
    "d512x4": (512, 4, (1, 48, 4, 32, 32)),  # 1024 tokens
    "d3072x1": (3072, 1, (1, 48, 2, 16, 32)),  # 256 tokens
    "d512x4-128": (512, 4, (1, 48, 2, 16, 16)),  # 128 tokens: per-op overhead and the text path weigh more
    "demo": (None, None, (1, 48, 7, 8, 8)),  # the shipped tiny demo DiT at 128x128x25 (cfg batching only)
}


def build(name: str):
    import torch

    from wan_core.config import WanConfig
    from wan_core.model import WanTransformer

    dim, layers, shape = CONFIGS[name]
    if dim is None:
        from wan_core.loading import load_dit
        from wan_core.model_files import resolve_inputs

        dit = load_dit(resolve_inputs(None).dit, dtype=torch.float32)
        cfg = dit.cfg
    else:
        ffn = int(round(dim * FFN_RATIO / 128)) * 128
        cfg = WanConfig(dim=dim, ffn_dim=ffn, num_heads=dim // 128, num_layers=layers)
        torch.manual_seed(0)
        dit = WanTransformer(cfg)
        for p in dit.parameters():  # small random weights: finite activations through the layers
            torch.nn.init.normal_(p, std=p.shape[-1] ** -0.5 if p.ndim >= 2 else 0.02)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    t = torch.full((shape[0],), 750.0)
    context = torch.randn(shape[0], 120, cfg.text_dim, generator=g)  # a 120-token prompt (padded to 512 inside)
    return dit.eval(), cfg, x, t, context


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_compile(name: str, repeats: int) -> str:
    import torch

    from wan_core.compile import BlockRunner
    from wan_core.model import DiTHooks

    dit, cfg, x, t, context = build(name)
    hooks = DiTHooks(run_block=BlockRunner())
    with torch.no_grad():
        eager = lambda: dit(x, t, context)  # noqa: E731
        compiled = lambda: dit(x, t, context, hooks=hooks)  # noqa: E731
        timed(eager)
        first = timed(compiled)
        if hooks.run_block.failed:
            return f"{name}: compile unavailable ({hooks.run_block.failed})"
        err = (dit(x, t, context) - dit(x, t, context, hooks=hooks)).abs().max().item()
        times = {"eager": [], "compiled": []}
        for _ in range(repeats):
            times["eager"].append(timed(eager))
            times["compiled"].append(timed(compiled))
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    paired = statistics.median(a / b for a, b in zip(times["eager"], times["compiled"]))
    best = min(times["eager"]) / min(times["compiled"])
    tokens = x.shape[2] * x.shape[3] * x.shape[4] // 4
    return (f"| {name} | {cfg.dim} | {cfg.num_layers} | {tokens} | {e:.3f} | {c:.3f} | {paired:.2f}x | {best:.2f}x | "
            f"{first - c:.1f} | {err:.1e} |")


def bench_cfg(name: str, repeats: int) -> str:
    import torch

    dit, cfg, x, t, context = build(name)
    neg = torch.randn(1, 100, cfg.text_dim, generator=torch.Generator().manual_seed(2))
    both_ctx = torch.cat([context, torch.nn.functional.pad(neg, (0, 0, 0, context.shape[1] - neg.shape[1]))])
    x2, t2 = torch.cat([x, x]), torch.cat([t, t])
    with torch.no_grad():
        two = lambda: (dit(x, t, context), dit(x, t, neg))  # noqa: E731
        one = lambda: dit(x2, t2, both_ctx)  # noqa: E731
        timed(two), timed(one)
        times = {"two": [], "one": []}
        for _ in range(repeats):
            times["two"].append(timed(two))
            times["one"].append(timed(one))
    a, b = statistics.median(times["two"]), statistics.median(times["one"])
    paired = statistics.median(p / q for p, q in zip(times["two"], times["one"]))
    return f"| {name} | {a:.3f} | {b:.3f} | {paired:.2f}x | {min(times['two']) / min(times['one']):.2f}x |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["d512x4", "d3072x1"], choices=[c for c in CONFIGS if c != "demo"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cfg", action="store_true", help="also measure cfg batching (adds the demo DiT)")
    p.add_argument("--no-compile", action="store_true", help="skip the compile measurement")
    args = p.parse_args(argv)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench_compile_"))  # cold compile
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU; median of {args.repeats}")
    if not args.no_compile:
        print("\n| config | dim | layers | tokens | eager s/fwd | compiled s/fwd | speed-up (median of pairs) | "
              "speed-up (best of each) | compile s | max abs diff |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name in args.configs:
            print(bench_compile(name, args.repeats), flush=True)
    if args.cfg:
        print("\n| config | 2 forwards (batch 1) s | 1 forward (batch 2) s | speed-up (median of pairs) | "
              "speed-up (best of each) |")
        print("|---|---|---|---|---|")
        for name in ["demo", *args.configs]:
            print(bench_cfg(name, args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
