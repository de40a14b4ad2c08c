"""GPU check: TI2V-5B-shaped speed and memory on one CUDA GPU, with random bf16 weights (nothing downloaded).

    python benchmarks/gpu_check.py [--budget 270] [--workdir DIR] [--skip file,vae,...]   # a CUDA machine
    python benchmarks/gpu_check.py --smoke                                                # tiny, CPU, seconds

Needs only torch, safetensors and einops (plus this repository); diffusers' WanTransformer3DModel and
AutoencoderKLWan are timed beside ours when diffusers is importable, ComfyUI's WanModel when --comfyui PATH (or
COMFYUI_PATH) points at a ComfyUI checkout importable by this Python. Prints one markdown table for
docs/benchmarks.md, at 1280x704x121 (latent [1, 48, 31, 44, 80], 27280 tokens):
- s/DiT forward: plain; cfg-batched (one forward on batch 2, per guided step, beside two plain forwards);
  regionally compiled (wan_core.compile; compile time reported); sage / flash attention when installed.
- VAE decode: time and peak memory, untiled and tiled (an out-of-memory is reported, not fatal).
- Load: time to load a ~10 GB DiT safetensors file (the random weights, written to --workdir) onto the GPU with
  wan_core.loading.load_dit, and with plain safetensors load_file for reference (page cache as found: the file was
  just written, so this is a warm-cache load unless the machine drops it).
Each section is skipped, saying so, once the time budget (default 270 s; a started section finishes) is spent.
Random weights: values do not affect speed; bf16 throughout, as the 5B runs on GPUs.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_core.config import PRESETS, WanConfig  # noqa: E402
from wan_core.geometry import latent_shape  # noqa: E402
from wan_core.model import DiTHooks, WanTransformer  # noqa: E402
from wan_core.vae import VAEConfig, WanVAE  # noqa: E402

FULL = dict(width=1280, height=704, frames=121, dit=PRESETS["ti2v-5B"], vae=VAEConfig(), tile=(16, 16))
SMOKE = dict(width=64, height=64, frames=5, dit=WanConfig(dim=64, ffn_dim=128, num_heads=1, num_layers=2),
             vae=VAEConfig(base_dim=8, decoder_base_dim=16), tile=(2, 2))


class Report:
    def __init__(self, budget: float):
        self.start, self.budget, self.rows = time.perf_counter(), budget, []

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def row(self, what: str, value: str, note: str = "") -> None:
        self.rows.append((what, value, note))
        print(f"| {what} | {value} | {note} |", flush=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2 ** 30:.1f} GiB" if device.type == "cuda" else "n/a (CPU)"


def timed(fn, device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def random_dit(cfg: WanConfig, device, dtype) -> WanTransformer:
    dit = WanTransformer(cfg, device=device, dtype=dtype).eval()
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in dit.parameters():  # fan-in scaled: activations stay finite through the layers
            p.normal_(0.0, p.shape[-1] ** -0.5 if p.ndim >= 2 else 0.02, generator=g)
    return dit


def dit_section(rep: Report, spec: dict, device, dtype, repeats: int, compile_backend: str, skip: set) -> dict:
    from wan_core.attention import BACKENDS, get_backend
    from wan_core.compile import BlockRunner

    cfg = spec["dit"]
    dit = random_dit(cfg, device, dtype)
    shape = latent_shape(spec["frames"], spec["height"], spec["width"])
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(shape, generator=g, device=device)
    t = torch.full((1,), 750.0, device=device)
    ctx = torch.randn(1, 120, cfg.text_dim, generator=g, device=device, dtype=dtype)
    tokens = shape[2] * shape[3] * shape[4] // 4
    rep.row("latent / tokens", f"{list(shape)} / {tokens}", f"DiT dim {cfg.dim} x {cfg.num_layers} layers, {dtype}")
    out = {}
    with torch.no_grad():
        peak_reset(device)
        out["plain"] = timed(lambda: dit(x, t, ctx), device, repeats)
        rep.row("DiT forward, plain", f"{out['plain']:.3f} s", f"peak {peak_gb(device)}")
        if "batch" not in skip and rep.left() > 0:
            x2, t2, c2 = torch.cat([x, x]), torch.cat([t, t]), torch.cat([ctx, ctx])
            peak_reset(device)
            s = timed(lambda: dit(x2, t2, c2), device, repeats)
            rep.row("DiT forward, cfg-batched (batch 2 = one guided step)", f"{s:.3f} s",
                    f"vs 2 plain {2 * out['plain']:.3f} s: {2 * out['plain'] / s:.2f}x; peak {peak_gb(device)}")
        for name in ("sage", "flash"):
            if name in skip or rep.left() <= 0:
                continue
            try:
                fn = get_backend(name, device)
            except ValueError as e:
                rep.row(f"DiT forward, {name} attention", "not run", str(e).split(";")[0])
                continue
            s = timed(lambda: dit(x, t, ctx, hooks=DiTHooks(attention=fn)), device, repeats)
            err = (dit(x, t, ctx, hooks=DiTHooks(attention=fn)) - dit(x, t, ctx)).abs().max().item()
            rep.row(f"DiT forward, {name} attention ({BACKENDS[name].package})", f"{s:.3f} s",
                    f"{out['plain'] / s:.2f}x plain; max abs diff {err:.3g}")
        if "compile" not in skip and rep.left() > 0:
            runner = BlockRunner(backend=compile_backend)
            hooks = DiTHooks(run_block=runner)
            start = time.perf_counter()
            dit(x, t, ctx, hooks=hooks)
            sync(device)
            first = time.perf_counter() - start
            if runner.failed:
                rep.row("DiT forward, compiled", "not run", runner.failed)
            else:
                s = timed(lambda: dit(x, t, ctx, hooks=hooks), device, repeats)
                rep.row(f"DiT forward, compiled ({compile_backend}, regional)", f"{s:.3f} s",
                        f"{out['plain'] / s:.2f}x plain; compile {first - s:.1f} s")
    out["dit"] = dit
    out["inputs"] = (x, t, ctx)
    return out


def reference_dits(rep: Report, spec: dict, device, dtype, repeats: int, inputs, comfyui: str | None) -> None:
    """diffusers' (and ComfyUI's) DiT on the same shapes with their own random weights (speed does not depend on
    the values)."""
    x, t, ctx = inputs
    cfg = spec["dit"]
    try:
        from diffusers import WanTransformer3DModel
    except ImportError as e:
        rep.row("diffusers DiT forward", "not run", f"diffusers not importable ({e})")
    else:
        with torch.device(device):  # built on the GPU: no 20 GB fp32 initialisation on the host
            ref = WanTransformer3DModel(
                patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
                in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
                ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=cfg.eps, rope_max_seq_len=cfg.rope_max_len)
        ref = ref.to(dtype).eval()
        tokens = x.shape[2] * x.shape[3] * x.shape[4] // 4
        tt = torch.full((1, tokens), 750.0, device=device)  # per-token t, as its TI2V pipeline passes
        with torch.no_grad():
            s = timed(lambda: ref(hidden_states=x.to(dtype), timestep=tt, encoder_hidden_states=ctx,
                                  return_dict=False), device, repeats)
        rep.row("diffusers WanTransformer3DModel forward", f"{s:.3f} s", "its default attention processor")
        del ref
        free(device)
    path = comfyui or os.environ.get("COMFYUI_PATH")
    if not path or rep.left() <= 0:
        rep.row("ComfyUI WanModel forward", "not run", "no --comfyui / COMFYUI_PATH" if not path else "time budget")
        return
    try:
        sys.path.insert(0, path)
        import comfy.cli_args

        comfy.cli_args.args.cpu = device.type == "cpu"  # before comfy.model_management reads it (the smoke run)
        import comfy.ops
        from comfy.ldm.wan.model import WanModel  # ComfyUI picks its attention from its own settings

        model = WanModel(model_type="t2v", patch_size=cfg.patch_size, text_len=cfg.text_len, in_dim=cfg.in_dim,
                         dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim,
                         out_dim=cfg.out_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers, eps=cfg.eps,
                         device=device, dtype=dtype, operations=comfy.ops.manual_cast).eval()
        with torch.no_grad():
            s = timed(lambda: model(x.to(dtype), t, ctx), device, repeats)
        rep.row("ComfyUI WanModel forward", f"{s:.3f} s", "its optimized_attention (ComfyUI's settings)")
    except Exception as e:  # any import or API mismatch: reported, the rest of the check still runs
        rep.row("ComfyUI WanModel forward", "not run", f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")


def free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def vae_section(rep: Report, spec: dict, device, dtype) -> None:
    vae = WanVAE(spec["vae"], device=device, dtype=dtype).eval()
    shape = latent_shape(spec["frames"], spec["height"], spec["width"])
    z = torch.randn(shape, generator=torch.Generator(device=device).manual_seed(2), device=device, dtype=dtype)
    for tile in (None, spec["tile"]):
        if rep.left() <= 0:
            rep.row(f"VAE decode, {'tiled ' + str(tile) if tile else 'untiled'}", "not run", "time budget")
            continue
        free(device)
        peak_reset(device)
        name = f"VAE decode, tiled {tile[0]}x{tile[1]} latent cells" if tile else "VAE decode, untiled"
        try:
            with torch.no_grad():
                start = time.perf_counter()
                video = vae.decode(z, tile=tile, tile_overlap=min(4, min(tile) - 1) if tile else 4)
                sync(device)
            rep.row(name, f"{time.perf_counter() - start:.2f} s", f"peak {peak_gb(device)}; out {list(video.shape)}")
            del video
        except torch.OutOfMemoryError:
            rep.row(name, "out of memory", f"peak {peak_gb(device)}")
    del vae
    free(device)


def file_section(rep: Report, dit: WanTransformer, device, dtype, workdir: str) -> None:
    from safetensors.torch import load_file, save_file

    from wan_core.loading import load_dit

    path = Path(tempfile.mkdtemp(prefix="gpu_check_", dir=workdir)) / "dit.safetensors"
    try:
        start = time.perf_counter()
        save_file({k: v.contiguous().cpu() for k, v in dit.state_dict().items()}, str(path))
        size = path.stat().st_size / 1e9
        rep.row("write DiT safetensors", f"{time.perf_counter() - start:.1f} s", f"{size:.2f} GB")
        del dit
        free(device)
        for name, load in (("load_dit (wan_core)", lambda: load_dit(path, device=device, dtype=dtype, verify=False)),
                           ("safetensors load_file", lambda: load_file(str(path), device=str(device)))):
            if rep.left() <= 0:
                rep.row(f"load {size:.1f} GB, {name}", "not run", "time budget")
                continue
            start = time.perf_counter()
            loaded = load()
            sync(device)
            rep.row(f"load {size:.1f} GB, {name}", f"{time.perf_counter() - start:.1f} s",
                    f"{size / (time.perf_counter() - start):.2f} GB/s to {device}; page cache warm (just written)")
            del loaded
            free(device)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
            path.parent.rmdir()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (fp32): proves the script runs")
    p.add_argument("--budget", type=float, default=270.0,
                   help="seconds; a section starts only within it (the longest, compile and the untiled VAE decode, "
                        "take 1-2 min on an H100), so the whole run stays under 6 minutes")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per DiT measurement (after one warm-up)")
    p.add_argument("--workdir", default=tempfile.gettempdir(), help="where the ~10 GB test file is written")
    p.add_argument("--skip", default="", help="comma list of: batch, sage, flash, compile, reference, vae, file")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--comfyui", default=None, help="ComfyUI checkout to time its WanModel (default $COMFYUI_PATH)")
    args = p.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.smoke:
        spec, device, dtype = SMOKE, torch.device("cpu"), torch.float32
    else:
        if not torch.cuda.is_available():
            p.error("no CUDA device: this check is for a GPU machine (use --smoke to test the script on a CPU)")
        spec, device, dtype = FULL, torch.device("cuda"), torch.bfloat16
    rep = Report(args.budget)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)"
    print(f"gpu_check: {name}, torch {torch.__version__}, {spec['width']}x{spec['height']}x{spec['frames']}, "
          f"budget {args.budget:.0f} s\n\n| measurement | value | note |\n|---|---|---|", flush=True)
    dit_out = dit_section(rep, spec, device, dtype, args.repeats, args.compile_backend, skip)
    dit = dit_out.pop("dit")
    if "reference" not in skip:
        dit.to("cpu") if device.type == "cuda" else None  # room for the reference models
        free(device)
        reference_dits(rep, spec, device, dtype, args.repeats, dit_out["inputs"], args.comfyui)
    del dit_out
    if "vae" not in skip:
        vae_section(rep, spec, device, dtype)
    if "file" not in skip and rep.left() > 0:
        file_section(rep, dit, device, dtype, args.workdir)
    print(f"\ntotal {time.perf_counter() - rep.start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
