"""Benchmark: the cost of the non-finite guard (wan_core.guard) per sampler step, side by side in one run.

    python benchmarks/bench_guard.py [--repeats 9] [--threads 1] [--configs demo large]

For each config one Euler step with classifier-free guidance (two DiT calls, as `sample_latents` builds it) runs
without a callback and with `finite_guard` as the callback, interleaved (without, with, with, without, ...) after a
warm-up; the medians, their ratio and the median of the per-pair ratios are printed, in wall time and in this process's CPU
time (steadier on a shared machine). Because the guard is far below the run-to-run noise of a step, the guard
alone (`check_finite` on that step's x0 estimate, which is what the callback runs) is also timed in a tight loop and
given as a share of the step; the same for the latent of a real 1280x704, 121-frame TI2V-5B video.
Configs: "demo" = the shipped demo DiT at its 128x128, 25-frame defaults; "large" = the real TI2V-5B width
(dim 3072, ffn 14336, 24 heads, text_dim 4096) with 2 of its 30 layers on a 256x256, 5-frame latent, random weights.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_core.config import WanConfig  # noqa: E402
from wan_core.guard import check_finite, finite_guard  # noqa: E402
from wan_core.guidance import cfg_velocity_fn  # noqa: E402
from wan_core.param import FlowParam  # noqa: E402
from wan_core.pipeline import dit_velocity_fn  # noqa: E402
from wan_core.sampling import sample_euler  # noqa: E402

REAL_LATENT = (1, 48, 31, 44, 80)  # 1280x704, 121 frames on the Wan2.2 VAE
LARGE = WanConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=2, text_dim=4096)


def build(name: str):
    """(dit, latent shape, context length, guidance scale) of one config."""
    if name == "demo":
        from wan_core.demo import demo_files
        from wan_core.loading import load_dit

        return load_dit(demo_files().dit, dtype=torch.float32), (1, 48, 7, 8, 8), 16, 3.0
    from wan_core.model import WanTransformer

    g = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanTransformer(LARGE).state_dict().items()}
    sd = {k: torch.randn(s, generator=g) * (s[-1] ** -0.5 if len(s) >= 2 else 0.1) for k, s in shapes.items()}
    return WanTransformer.from_state_dict(sd), (1, 48, 2, 16, 16), 32, 5.0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _both(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call; the CPU time is what waiting for a shared core
    does not inflate (with --threads 1 it is the step's own work)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def bench(name: str, repeats: int) -> None:
    dit, shape, ctx_len, cfg = build(name)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    cond = dit_velocity_fn(dit, torch.randn(1, ctx_len, dit.cfg.text_dim, generator=g))
    uncond = dit_velocity_fn(dit, torch.randn(1, ctx_len, dit.cfg.text_dim, generator=g))
    model_fn = FlowParam.wrap(cfg_velocity_fn(cond, uncond, cfg))
    sigmas = torch.tensor([0.9, 0.8])  # one step
    sides = {"without": lambda: sample_euler(model_fn, x, sigmas),
             "with": lambda: sample_euler(model_fn, x, sigmas, callback=finite_guard(sigmas))}
    for run in sides.values():
        run()  # warm-up
    times = {k: [] for k in sides}  # [(wall, cpu)] per side
    for r in range(repeats):  # interleaved, the order alternating so that drift favours neither side
        for k in (("without", "with") if r % 2 == 0 else ("with", "without")):
            times[k].append(_both(sides[k]))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    paired = [statistics.median(a[j] / b[j] for a, b in zip(times["with"], times["without"])) for j in (0, 1)]
    denoised = model_fn(x, torch.full((1,), 0.9))
    guard = _guard_seconds(denoised)
    real = _guard_seconds(torch.randn(REAL_LATENT, generator=g))
    params = sum(p.numel() for p in dit.parameters()) / 1e6
    print(f"{name}: {params:.0f} M params, latent {list(shape)}, cfg {cfg:g}; medians of {repeats} steps each:")
    print(f"  wall: without guard {wall['without'] * 1e3:.1f} ms, with {wall['with'] * 1e3:.1f} ms, ratio "
          f"{wall['with'] / wall['without']:.4f} (median of paired ratios {paired[0]:.4f})")
    print(f"  CPU time: without {cpu['without'] * 1e3:.1f} ms, with {cpu['with'] * 1e3:.1f} ms, ratio "
          f"{cpu['with'] / cpu['without']:.4f} (median of paired ratios {paired[1]:.4f})")
    print(f"  guard alone: {guard * 1e6:.1f} us = {guard / wall['without'] * 100:.2g}% of the step; on a real "
          f"1280x704x121 latent {list(REAL_LATENT)}: {real * 1e3:.2f} ms")


def _guard_seconds(t: torch.Tensor, loops: int = 50) -> float:
    """Median time of check_finite(t) (what the guard callback runs per step)."""
    check_finite(t, "", "sampling")
    return statistics.median(_timed(lambda: check_finite(t, "", "sampling")) for _ in range(loops))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--configs", nargs="+", default=["demo", "large"], choices=["demo", "large"])
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    with torch.no_grad():
        for name in args.configs:
            bench(name, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
