"""Benchmark: peak RSS and time of loading a ~1 GB safetensors checkpoint through wan_core.loading.

    python benchmarks/bench_load.py [--gib 1.0] [--dtype bf16] [--dit] [--keep DIR]

Writes a file of random tensors (or, with --dit, a random Wan DiT of about that size) to a temporary folder, then in
a fresh subprocess: imports torch and wan_core, records the RSS baseline, loads the file with `read_state_dict`
(with --dit: `load_dit`), touches every tensor (a full reduction over its bytes) and reports the kernel's peak RSS
(VmHWM). Target: peak RSS <= 1.3 x file size, i.e. the tensors are the file's memory map, not a second copy. The
page cache is warm (the file was just written), so the time measures mapping and touching, not disk speed.
Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
TENSOR_MIB = 32  # size of each tensor in the synthetic file

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from wan_core.loading import load_dit, read_state_dict

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0

path, dit = sys.argv[1], sys.argv[2] == "1"
base = rss("VmRSS")
t0 = time.perf_counter()
if dit:
    tensors = load_dit(path, verify=False).state_dict()
else:
    tensors, _ = read_state_dict(path, verify=False)
t_load = time.perf_counter() - t0
checksum = 0.0
for t in tensors.values():  # touch every byte: reduce over the raw bytes of each tensor
    checksum += float(t.detach().reshape(-1).view(torch.uint8)[::64].sum())
t_touch = time.perf_counter() - t0 - t_load
print(json.dumps({"baseline": base, "peak": rss("VmHWM"), "rss_end": rss("VmRSS"), "load_s": t_load,
                  "touch_s": t_touch, "tensors": len(tensors), "checksum": checksum}))
"""


def write_tensors(path: Path, nbytes: int, dtype) -> None:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    per = TENSOR_MIB << 20
    n = max(1, nbytes // per)
    numel = per // torch.empty((), dtype=dtype).element_size()
    base = torch.randn(numel, generator=gen).to(dtype)
    # distinct tensors (a roll of one random block) without n random draws
    save_file({f"blocks.{i}.weight": base.roll(i * 4099).reshape(-1, 1024) for i in range(n)}, str(path))


def write_dit(path: Path, nbytes: int, dtype) -> None:
    import torch
    from safetensors.torch import save_file

    from wan_core.config import WanConfig
    from wan_core.model import WanTransformer

    dim = 1024
    per_layer = (4 * 2 + 2 * 4) * dim * dim  # self/cross attention + ffn (ffn_dim = 4 dim) weights
    layers = max(1, round(nbytes / torch.empty((), dtype=dtype).element_size() / per_layer))
    cfg = WanConfig(dim=dim, ffn_dim=4 * dim, num_heads=dim // 128, num_layers=layers, text_dim=dim)
    torch.manual_seed(0)
    with torch.device("meta"):
        meta = WanTransformer(cfg).state_dict()
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=gen).to(dtype) for k, v in meta.items()}
    save_file(sd, str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="file size in GiB (default 1.0)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--dit", action="store_true", help="write a random Wan DiT and load it with load_dit")
    parser.add_argument("--keep", type=Path, default=None, help="write the file here instead of a temp folder")
    args = parser.parse_args(argv)
    import torch

    dtype = getattr(torch, DTYPES[args.dtype])
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ("bench_dit.safetensors" if args.dit else "bench_tensors.safetensors")
        t0 = time.perf_counter()
        (write_dit if args.dit else write_tensors)(path, int(args.gib * (1 << 30)), dtype)
        size = path.stat().st_size
        print(f"wrote {path.name}: {size / 2**30:.3f} GiB in {time.perf_counter() - t0:.1f} s", flush=True)
        root = str(Path(__file__).resolve().parents[1])
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), "1" if args.dit else "0"], check=True,
                             capture_output=True, text=True, cwd=root, env={"PYTHONPATH": root, "PATH": ""})
        r = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = r["peak"] / size
    above = (r["peak"] - r["baseline"]) / size
    print(f"{'load_dit' if args.dit else 'read_state_dict'}: {r['tensors']} tensors, load {r['load_s']:.2f} s, "
          f"touch {r['touch_s']:.2f} s")
    print(f"peak RSS {r['peak'] / 2**30:.3f} GiB (baseline after imports {r['baseline'] / 2**30:.3f} GiB) for a "
          f"{size / 2**30:.3f} GiB file")
    print(f"peak RSS / file size = {ratio:.3f} (target <= 1.3: {'OK' if ratio <= 1.3 else 'FAIL'}); "
          f"(peak - baseline) / file size = {above:.3f}")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
