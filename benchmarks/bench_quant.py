"""DiT file formats side by side at TI2V-5B width: file size, load peak RSS, forward peak RSS and forward time.

    python benchmarks/bench_quant.py [--layers 2] [--tokens 512] [--repeats 3] [--dir DIR]

A random DiT (dim 3072, ffn 14336, text 4096: the 5B's layer shapes, a few layers) is written as bf16 safetensors,
scaled fp8 (Kijai `_scaled_KJ` layout), GGUF Q8_0 and Q4_0 (`python -m wan_core quantize`'s code) and a GGUF with
Q4_K Linears (random well-formed blocks: wan_core reads K-quants but does not write them). Each format is loaded and
run in its own subprocess (peak RSS = VmHWM, Linux), computing in bf16 on the CPU. Prints a table and the Q4_0 memory
target: forward peak <= interpreter baseline + file size + 1.5 x largest dequantized layer + activations, where
activations = the bf16 run's forward peak minus its load peak. Run it on a quiet machine (nothing else holding the cores).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMATS = ("bf16", "fp8_scaled", "Q8_0", "Q4_0", "Q4_K")


def _cfg(layers: int):
    from wan_core.config import WanConfig

    return WanConfig(num_layers=layers)  # TI2V-5B widths


def write_files(folder: Path, layers: int) -> dict[str, Path]:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from tests._gguf_synth import random_k_blocks, write_gguf
    from wan_core.model import WanTransformer
    from wan_core.quantize import quantize_file

    torch.manual_seed(0)
    model = WanTransformer(_cfg(layers), device="meta")
    sd = {k: (torch.randn(v.shape) * 0.02) for k, v in model.state_dict().items()}
    paths = {f: folder / n for f, n in (("bf16", "dit_bf16.safetensors"), ("fp8_scaled", "dit_fp8_scaled_KJ.safetensors"),
                                        ("Q8_0", "dit_Q8_0.gguf"), ("Q4_0", "dit_Q4_0.gguf"), ("Q4_K", "dit_Q4_K.gguf"))}
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(paths["bf16"]))
    fp8 = {}
    for k, v in sd.items():
        if v.ndim == 2 and k.startswith("blocks."):
            scale = v.abs().max() / 448.0
            fp8[k], fp8[k.removesuffix("weight") + "scale_weight"] = (v / scale).to(torch.float8_e4m3fn), scale
        else:
            fp8[k] = v.to(torch.bfloat16)
    save_file(fp8, str(paths["fp8_scaled"]))
    for q in ("Q8_0", "Q4_0"):
        quantize_file(paths["bf16"], paths[q], q, overwrite=True)
    rng, tensors = np.random.default_rng(0), {}
    for k, v in sd.items():
        if v.ndim == 2 and v.shape[1] % 256 == 0 and "modulation" not in k:
            tensors[k] = (random_k_blocks("Q4_K", v.shape[0], v.shape[1], rng, scale=2e-5), "Q4_K")
        else:
            tensors[k] = v.numpy()
    write_gguf(paths["Q4_K"], tensors)
    return paths


def child(path: str, tokens: int, repeats: int) -> dict:
    """Runs in the subprocess: load, warm-up forward, timed forwards -> measurements."""
    import torch

    from wan_core.loading import load_dit

    torch.set_num_threads(max(1, torch.get_num_threads()))
    def rss() -> int:  # peak RSS of this process: VmHWM (ru_maxrss would carry the parent's peak across exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    base = rss()
    t0 = time.perf_counter()
    model = load_dit(path, dtype=torch.bfloat16, verify=False)
    load_s, load_peak = time.perf_counter() - t0, rss()
    cfg = model.cfg
    side = round(tokens ** 0.5) * 2  # one latent frame of side x side = (side/2)^2 tokens after the 1x2x2 patch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.in_dim, 1, side, side, generator=g)
    t, c = torch.tensor([500.0]), torch.randn(1, 64, cfg.text_dim, generator=g)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            t1 = time.perf_counter()
            out = model(x, t, c)
            times.append(time.perf_counter() - t1)
    from wan_core.quant.linear import quant_layers

    largest = max((m.out_features * m.in_features for m in quant_layers(model).values()), default=0)
    return {"base_rss": base, "load_peak": load_peak, "forward_peak": rss(), "load_s": load_s,
            "forward_s": sorted(times[1:])[len(times[1:]) // 2], "tokens": x.shape[3] * x.shape[4] // 4,
            "largest_layer_bf16": largest * 2, "finite": bool(torch.isfinite(out).all())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="keep the files here (default: a temporary folder)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_quant_"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = write_files(folder, args.layers)
    print(f"files written in {time.perf_counter() - t0:.0f} s to {folder}")
    rows = {}
    for fmt, path in paths.items():
        out = subprocess.run([sys.executable, __file__, "--child", str(path), str(args.tokens), str(args.repeats)],
                             capture_output=True, text=True, check=True)
        rows[fmt] = {**json.loads(out.stdout.strip().splitlines()[-1]), "file": path.stat().st_size}
    mib = 2 ** 20
    bf = rows["bf16"]
    print(f"\nDiT dim 3072, ffn 14336, {args.layers} layers, {bf['tokens']} tokens, bf16 compute on the CPU; "
          f"interpreter baseline RSS {bf['base_rss'] / mib:.0f} MiB")
    print(f"{'format':<11}{'file MiB':>10}{'load peak':>11}{'fwd peak':>10}{'load s':>8}{'fwd s':>8}{'vs bf16':>9}")
    for fmt, r in rows.items():
        print(f"{fmt:<11}{r['file'] / mib:>10.0f}{r['load_peak'] / mib:>11.0f}{r['forward_peak'] / mib:>10.0f}"
              f"{r['load_s']:>8.2f}{r['forward_s']:>8.3f}{r['forward_s'] / bf['forward_s']:>8.2f}x"
              f"{'' if r['finite'] else '  NON-FINITE'}")
    q4 = rows["Q4_0"]
    acts = max(0, bf["forward_peak"] - bf["load_peak"])
    bound = q4["base_rss"] + q4["file"] + 1.5 * q4["largest_layer_bf16"] + acts
    print(f"\nQ4_0 forward peak {q4['forward_peak'] / mib:.0f} MiB vs target {bound / mib:.0f} MiB = baseline "
          f"{q4['base_rss'] / mib:.0f} + file {q4['file'] / mib:.0f} + 1.5 x largest dequantized layer "
          f"{q4['largest_layer_bf16'] / mib:.0f} + activations {acts / mib:.0f} (bf16 forward peak - load peak): "
          f"{'met' if q4['forward_peak'] <= bound else 'NOT met'}")
    ratio = rows["Q8_0"]["forward_s"] / bf["forward_s"]
    print(f"Q8_0 forward time {ratio:.2f}x bf16 (target <= 1.3x): {'met' if ratio <= 1.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
