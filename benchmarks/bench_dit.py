"""Benchmark: wan_core WanTransformer forward vs diffusers WanTransformer3DModel on CPU, same weights and inputs.

    python benchmarks/bench_dit.py [--repeats 3] [--configs small medium] [--threads 1]

Time: both models live in this process and run interleaved (ours, theirs, ours, ...) after one warm-up each; the
median of `repeats` runs is reported. diffusers gets the per-token timestep [B, L] that its Wan2.2 TI2V-5B
pipeline passes (expand_timesteps); a second row gives diffusers' scalar-t path for reference. Memory: each side
runs in its own subprocess; after a warm-up forward the kernel's peak-RSS counter is reset (/proc/self/clear_refs)
and the peak RSS above the pre-forward RSS is reported. Random weights from a seeded CPU generator; nothing is
downloaded.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_core.config import WanConfig  # noqa: E402
from wan_core.convert import convert  # noqa: E402
from wan_core.model import WanTransformer  # noqa: E402

CONFIGS = {  # (model config, latent [B, C, F, H, W])
    "small": (WanConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=2, text_dim=512), (1, 48, 4, 16, 16)),
    "medium": (WanConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=4, text_dim=4096), (1, 48, 8, 32, 32)),
}


def build(name: str, side: str):
    """Model of one side plus its inputs (x, t, context), all from seeded CPU generators."""
    from diffusers import WanTransformer3DModel

    cfg, shape = CONFIGS[name]
    with torch.device("meta"):
        ref = WanTransformer3DModel(
            patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
            in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            eps=cfg.eps, rope_max_seq_len=cfg.rope_max_len)
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * (v[0].numel() ** -0.5 if v.ndim >= 2 else 0.1)
          + (1.0 if ".norm" in k and k.endswith("weight") else 0.0) for k, v in ref.state_dict().items()}
    x = torch.randn(shape, generator=g)
    context = torch.randn(shape[0], cfg.text_len, cfg.text_dim, generator=g)
    n_tokens = shape[2] * shape[3] * shape[4] // 4
    t = torch.full((shape[0], n_tokens), 750.0)
    models = {}
    if side in ("diffusers", "both"):
        ref.load_state_dict(sd, assign=True)
        ref.rope = type(ref.rope)(cfg.head_dim, cfg.patch_size, cfg.rope_max_len)
        models["diffusers"] = ref.eval()
    if side in ("ours", "both"):
        models["ours"] = WanTransformer.from_state_dict(convert(sd, "dit", "diffusers")[0], cfg).eval()
    return models, (x, t, context)


def call(side: str, model, x, t, context, scalar_t: bool = False):
    with torch.no_grad():
        if side == "ours":
            return model(x, t, context)
        return model(x, t[:, 0] if scalar_t else t, context, return_dict=False)[0]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(name: str, side: str) -> dict:
    """Peak RSS above the pre-forward RSS of one forward (run in a fresh subprocess per side)."""
    models, (x, t, context) = build(name, side)
    call(side, models[side], x, t, context)  # warm-up: thread pools, allocator arenas
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_kb("VmRSS")
    call(side, models[side], x, t, context)
    return {"base_mb": base / 1024, "peak_extra_mb": (_status_kb("VmHWM") - base) / 1024}


def memory(name: str, side: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", side, "--configs", name, "--threads",
                          str(torch.get_num_threads())], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timing(name: str, repeats: int) -> dict:
    models, (x, t, context) = build(name, "both")
    out = call("ours", models["ours"], x, t, context)
    want = call("diffusers", models["diffusers"], x, t, context)
    call("diffusers", models["diffusers"], x, t, context, scalar_t=True)
    rel = ((out - want).abs().max() / want.abs().max()).item()
    times = {"ours": [], "diffusers": [], "diffusers_scalar_t": []}
    for _ in range(repeats):
        for key, side, scalar in (("ours", "ours", False), ("diffusers", "diffusers", False),
                                  ("diffusers_scalar_t", "diffusers", True)):
            t0 = time.perf_counter()
            call(side, models[side], x, t, context, scalar_t=scalar)
            times[key].append(time.perf_counter() - t0)
    return {"rel_diff": rel, "tokens": t.shape[1], **{k: statistics.median(v) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads; 1 (default) keeps timings stable on a shared machine, 0 = torch default")
    ap.add_argument("--child", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(args.configs[0], args.child)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} interleaved runs")
    for name in args.configs:
        cfg, shape = CONFIGS[name]
        r = timing(name, args.repeats)
        mem = {side: memory(name, side) for side in ("ours", "diffusers")}
        print(f"[{name}] dim {cfg.dim}, {cfg.num_layers} layers, ffn {cfg.ffn_dim}, latent {shape}, "
              f"{r['tokens']} tokens; max rel diff {r['rel_diff']:.2e}")
        print(f"  time  ours {r['ours']:.3f}s | diffusers per-token t {r['diffusers']:.3f}s -> ratio "
              f"{r['ours'] / r['diffusers']:.2f}x | diffusers scalar t {r['diffusers_scalar_t']:.3f}s -> ratio "
              f"{r['ours'] / r['diffusers_scalar_t']:.2f}x")
        print(f"  peak extra RSS during forward  ours {mem['ours']['peak_extra_mb']:.0f} MB | diffusers "
              f"{mem['diffusers']['peak_extra_mb']:.0f} MB -> ratio "
              f"{mem['ours']['peak_extra_mb'] / max(mem['diffusers']['peak_extra_mb'], 1e-9):.2f}x "
              f"(resident before forward: ours {mem['ours']['base_mb']:.0f} MB, diffusers "
              f"{mem['diffusers']['base_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
