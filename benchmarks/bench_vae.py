"""Benchmark: wan_core WanVAE.decode vs diffusers AutoencoderKLWan.decode on CPU, same weights and latents.

    python benchmarks/bench_vae.py [--threads 1] [--repeats 2] [--configs small,medium]

Each (side, config) runs in its own subprocess. Both sides build on the meta device and load the same safetensors file
with assign=True. After one warm-up decode, each timed decode reports wall time, process CPU time and its peak RSS
increase: the Linux RSS high-water mark (VmHWM, reset through /proc/self/clear_refs before the decode) minus the RSS
just before it. The whole-process ru_maxrss is printed too (it includes imports). The parent checks that both outputs
agree. Random weights; nothing is downloaded. CPU time is the fairer speed figure on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name: (encoder base_dim, decoder_base_dim, latent [B, 48, T', h, w])
CONFIGS = {
    "small": (16, 32, (1, 48, 3, 8, 8)),  # 9 frames, 128x128 px
    "medium": (32, 64, (1, 48, 3, 12, 12)),  # 9 frames, 192x192 px
    "large": (64, 128, (1, 48, 3, 16, 16)),  # 9 frames, 256x256 px; not in the default run (several minutes)
}


def diffusers_kwargs(base: int, dec: int) -> dict:
    return dict(base_dim=base, decoder_base_dim=dec, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the RSS high-water mark (VmHWM)
        f.write("5")


def _peak_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def child(side: str, name: str, workdir: str, threads: int, repeats: int) -> None:
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    base, dec, shape = CONFIGS[name]
    z = load_file(os.path.join(workdir, f"{name}_z.safetensors"))["z"]
    if side == "ours":
        sys.path.insert(0, ROOT)
        from wan_core.vae import WanVAE

        model = WanVAE.from_state_dict(load_file(os.path.join(workdir, f"{name}_official.safetensors")))
        decode = model.decode
    else:
        from diffusers import AutoencoderKLWan

        with torch.device("meta"):
            model = AutoencoderKLWan(**diffusers_kwargs(base, dec))
        model.load_state_dict(load_file(os.path.join(workdir, f"{name}_diffusers.safetensors")), assign=True)
        model.eval()

        def decode(x):
            return model.decode(x).sample

    with torch.no_grad():
        out = decode(z)  # warm-up: first-use costs (library pages, kernel selection) are not counted
        del out
        walls, cpus, peaks = [], [], []
        for _ in range(repeats):
            _reset_peak()
            rss0 = _rss_bytes()
            t0, c0 = time.perf_counter(), time.process_time()
            out = decode(z)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            peaks.append(_peak_bytes() - rss0)
            if _ < repeats - 1:
                del out
    torch.save(out, os.path.join(workdir, f"{name}_{side}_out.pt"))
    print(json.dumps({"wall": min(walls), "cpu": min(cpus), "peak_delta": max(peaks),
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--configs", default="small,medium", help=f"comma-separated subset of {list(CONFIGS)}")
    ap.add_argument("--child", nargs=2, metavar=("SIDE", "CONFIG"), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.workdir, args.threads, args.repeats)

    from diffusers import AutoencoderKLWan
    from safetensors.torch import save_file

    sys.path.insert(0, ROOT)
    from wan_core.convert import convert

    mib = 2**20
    # a fixed mmap threshold makes glibc return every large tensor to the OS when freed, so the RSS peak is the peak of
    # live memory rather than an artefact of heap fragmentation (the same setting for both sides)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    with tempfile.TemporaryDirectory() as workdir:
        print(f"threads={args.threads} repeats={args.repeats} (best of); torch {torch.__version__}")
        print(f"{'config':8} {'latent':18} {'side':9} {'wall s':>7} {'cpu s':>7} {'peak+ MiB':>9} {'maxrss MiB':>10}")
        for name in args.configs.split(","):
            base, dec, shape = CONFIGS[name]
            gen = torch.Generator().manual_seed(0)
            with torch.random.fork_rng():
                torch.manual_seed(0)
                ref = AutoencoderKLWan(**diffusers_kwargs(base, dec))
            sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
            official, unmatched = convert(sd, "vae", "diffusers")
            if unmatched:
                raise RuntimeError(f"unconverted keys: {unmatched}")
            save_file(sd, os.path.join(workdir, f"{name}_diffusers.safetensors"))
            save_file(official, os.path.join(workdir, f"{name}_official.safetensors"))
            save_file({"z": torch.randn(shape, generator=gen)}, os.path.join(workdir, f"{name}_z.safetensors"))
            res = {}
            for side in ("ours", "diffusers"):
                cmd = [sys.executable, os.path.abspath(__file__), "--child", side, name, "--workdir", workdir,
                       "--threads", str(args.threads), "--repeats", str(args.repeats)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                r = res[side] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{name:8} {str(shape):18} {side:9} {r['wall']:7.2f} {r['cpu']:7.2f} "
                      f"{r['peak_delta'] / mib:9.1f} {r['maxrss'] / mib:10.1f}")
            a = torch.load(os.path.join(workdir, f"{name}_ours_out.pt"), weights_only=True)
            b = torch.load(os.path.join(workdir, f"{name}_diffusers_out.pt"), weights_only=True)
            o, d = res["ours"], res["diffusers"]
            print(f"{name:8} ours/diffusers: wall {o['wall'] / d['wall']:.2f}x, cpu {o['cpu'] / d['cpu']:.2f}x, "
                  f"peak increase {o['peak_delta'] / max(d['peak_delta'], 1):.2f}x; "
                  f"output max abs diff {(a - b).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
