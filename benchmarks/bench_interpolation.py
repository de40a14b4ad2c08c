"""Leave-one-out frame-interpolation benchmark: wan_core.temporal vs linear blending vs FFmpeg minterpolate.

Every clip is rendered at the chosen size; the odd frames are dropped, interpolated back from their neighbours
(2x) and compared with the dropped originals (PSNR on 0..255 RGB, SSIM with an 11x11 Gaussian window averaged
over RGB). FFmpeg's `minterpolate` (mi_mode=mci, scd=none, otherwise defaults) runs in-process through PyAV's
bundled libavfilter. All methods see the same uint8 frames and are scored on uint8 output.

Sets (nothing is downloaded; the photographs are the sample images scikit-image ships in its wheel):
  photo_pan   camera pans over astronaut / coffee / chelsea / rocket, 3-8 px per frame
  photo_zoom  zoom (2-3.5 % per frame) with a slight rotation or drift over the same photographs
  shapes      textured discs and boxes moving in different directions (occlusions) over a slowly panning photo
  demo        clips the shipped demo model generates for held-out prompts (its own size, 25 frames at 12 fps)

Usage: python benchmarks/bench_interpolation.py [--size 192x256] [--frames 9] [--threads 1] [--demo 6]
Needs scikit-image (benchmark only: pip install scikit-image).
"""
from __future__ import annotations

import argparse
import fractions
import math
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: python benchmarks/...

from wan_core.temporal.interpolate import InterpConfig, interpolate_frames

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def load_photo(name: str) -> torch.Tensor:
    """A scikit-image sample photograph as [1, 3, H, W] float in 0..1."""
    try:
        import skimage.data
    except ImportError as e:
        raise SystemExit(
            "bench_interpolation.py needs scikit-image for its bundled sample photographs: pip install scikit-image"
        ) from e
    img = getattr(skimage.data, name)()
    return torch.from_numpy(img[..., :3].copy()).permute(2, 0, 1)[None].float() / 255  # [H, W, 3] -> [1, 3, H, W]


def render_camera(photo: torch.Tensor, h: int, w: int, poses, *, supersample: int = 2) -> torch.Tensor:
    """Frames [T, H, W, 3] of a camera looking at photo; pose = (x shift, y shift, zoom, rotation in degrees).

    The frame centre sits over the photo centre plus the shift (output pixels); the photo is first resized so the
    frame covers about 60% of its shorter side, which leaves room to move.
    """
    ph, pw = photo.shape[-2:]
    fit = min(ph / (h / 0.6), pw / (w / 0.6))
    photo = F.interpolate(photo, size=(round(ph / fit), round(pw / fit)), mode="bilinear", antialias=True,
                          align_corners=False)
    ph, pw = photo.shape[-2:]
    ss = supersample
    ys, xs = torch.meshgrid((torch.arange(h * ss) + 0.5) / ss - 0.5 - (h - 1) / 2,
                            (torch.arange(w * ss) + 0.5) / ss - 0.5 - (w - 1) / 2, indexing="ij")
    frames = []
    for dx, dy, zoom, rot in poses:
        a = math.radians(rot)
        px = (math.cos(a) * xs - math.sin(a) * ys) / zoom + (pw - 1) / 2 + dx  # photo pixel coordinates
        py = (math.sin(a) * xs + math.cos(a) * ys) / zoom + (ph - 1) / 2 + dy
        grid = torch.stack((px / (pw - 1) * 2 - 1, py / (ph - 1) * 2 - 1), dim=-1)[None]  # [1, H*ss, W*ss, 2]
        img = F.grid_sample(photo, grid, mode="bicubic", padding_mode="reflection", align_corners=True)
        frames.append(F.avg_pool2d(img, ss).clamp(0, 1)[0])
    return torch.stack(frames).permute(0, 2, 3, 1)  # [T, 3, H, W] -> [T, H, W, 3]


def render_shapes(h: int, w: int, frames: int, *, supersample: int = 4) -> list[tuple[str, torch.Tensor]]:
    """Clips of textured shapes moving over a slowly panning photograph."""
    bg_pan = [(1.3 * t, 0.4 * t, 1.0, 0.0) for t in range(frames)]
    textures = [load_photo(n) for n in ("astronaut", "rocket", "chelsea")]
    ss = supersample
    ys, xs = torch.meshgrid((torch.arange(h * ss) + 0.5) / ss - 0.5, (torch.arange(w * ss) + 0.5) / ss - 0.5,
                            indexing="ij")
    specs = {  # (kind, centre x, centre y, radius, vx, vy, texture) in output pixels / per frame
        "shapes_apart": [("disc", 0.40, 0.5, 0.16, -4.2, 0.3, 0), ("box", 0.60, 0.5, 0.15, 3.7, 0.6, 1)],
        "shapes_cross": [("disc", 0.25, 0.35, 0.13, 5.3, 1.4, 0), ("box", 0.75, 0.65, 0.14, -4.6, -1.1, 1),
                         ("disc", 0.5, 0.8, 0.10, 0.7, -2.9, 2)],
        "shapes_fast": [("box", 0.3, 0.4, 0.18, 7.4, 2.2, 2), ("disc", 0.7, 0.6, 0.12, -3.3, 2.7, 0)],
    }
    out = []
    for name, shapes in specs.items():
        bg = render_camera(load_photo("coffee"), h, w, bg_pan)  # [T, H, W, 3]
        clip = []
        for t in range(frames):
            img = F.interpolate(bg[t].permute(2, 0, 1)[None], scale_factor=ss, mode="nearest")  # [1, 3, Hs, Ws]
            for kind, cx, cy, r, vx, vy, tex in shapes:
                x0, y0, rad = cx * w + vx * t, cy * h + vy * t, r * min(h, w)
                if kind == "disc":
                    inside = (xs - x0) ** 2 + (ys - y0) ** 2 <= rad**2
                else:
                    inside = ((xs - x0).abs() <= rad) & ((ys - y0).abs() <= rad)
                tx = ((xs - x0) / (2 * rad)).clamp(-1, 1)  # texture moves with the shape
                ty = ((ys - y0) / (2 * rad)).clamp(-1, 1)
                patch = F.grid_sample(textures[tex], torch.stack((tx, ty), -1)[None], mode="bilinear",
                                      align_corners=True)  # [1, 3, Hs, Ws]
                img = torch.where(inside[None, None], patch, img)
            clip.append(F.avg_pool2d(img, ss)[0])
        out.append((name, torch.stack(clip).permute(0, 2, 3, 1)))  # [T, 3, H, W] -> [T, H, W, 3]
    return out


def clip_sets(h: int, w: int, frames: int) -> dict[str, list[tuple[str, torch.Tensor]]]:
    pans = [(3.3, 1.1), (5.2, -1.7), (-6.3, 2.6), (7.6, 0.4)]  # non-integer: no exact pixel shifts
    zooms = [(1.02, 0.4, 0.0), (1.025, 0.0, 1.0), (1.03, -0.3, 0.0), (0.975, 0.0, -1.5)]
    sets: dict[str, list] = {"photo_pan": [], "photo_zoom": [], "shapes": []}
    for name, (vx, vy), (z, rot, drift) in zip(PHOTOS, pans, zooms):
        photo = load_photo(name)
        sets["photo_pan"].append((f"{name}_pan", render_camera(photo, h, w, [(vx * t, vy * t, 1.0, 0.0)
                                                                            for t in range(frames)])))
        sets["photo_zoom"].append((f"{name}_zoom", render_camera(photo, h, w, [(drift * t, 0.0, z**t, rot * t)
                                                                              for t in range(frames)])))
    sets["shapes"] = render_shapes(h, w, frames)
    return sets


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def minterpolate_2x(frames: np.ndarray, fps: int = 12) -> tuple[np.ndarray, float]:
    """FFmpeg minterpolate (mci, scd=none) doubling the frame rate; returns ([2T-1, H, W, 3] uint8, seconds)."""
    h, w = frames.shape[1:3]
    tb = fractions.Fraction(1, fps)
    graph = av.filter.Graph()
    src = graph.add_buffer(width=w, height=h, format="rgb24", time_base=tb)
    mi = graph.add("minterpolate", f"fps={2 * fps}:mi_mode=mci:scd=none")
    fmt = graph.add("format", "rgb24")
    sink = graph.add("buffersink")
    src.link_to(mi)
    mi.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    out = []

    def drain():
        while True:
            try:
                out.append(graph.pull().to_ndarray())
            except (av.error.BlockingIOError, av.error.EOFError):
                return

    start = time.perf_counter()
    padded = list(frames) + [frames[-1]] * 2  # minterpolate needs look-ahead to emit the last interval
    for i, f in enumerate(padded):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        vf.pts, vf.time_base = i, tb
        graph.push(vf)
        drain()
    graph.push(None)
    drain()
    seconds = time.perf_counter() - start
    need = 2 * len(frames) - 1
    if len(out) < need:
        raise RuntimeError(f"minterpolate returned {len(out)} frames, expected at least {need}")
    return np.stack(out[:need]), seconds


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) averaged over RGB."""
    x = torch.from_numpy(a).permute(2, 0, 1)[:, None].double()  # [H, W, 3] -> [3, 1, H, W]
    y = torch.from_numpy(b).permute(2, 0, 1)[:, None].double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :])[None, None]  # [1, 1, 11, 11]
    mu = lambda z: F.conv2d(z, k)  # noqa: E731  valid-region filtering, as the reference implementation
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = mu(x), mu(y)
    sxx, syy, sxy = mu(x * x) - mx**2, mu(y * y) - my**2, mu(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean().item()


def evaluate(clip: torch.Tensor, cfg: InterpConfig) -> dict[str, list[float]]:
    """Per dropped frame: PSNR/SSIM of blend, minterpolate, ours, and seconds per interpolated frame."""
    frames = to_uint8(clip)  # [T, H, W, 3]
    kept = frames[::2]
    truth = frames[1::2]
    n = len(truth)
    # the blend rounded the way ours is (to_uint8 of the float frame), so a frame where ours falls back to the
    # blend scores exactly the blend's PSNR instead of differing by the rounding of half levels
    unit = torch.from_numpy(kept).float() / 255
    blend = to_uint8((1 - 0.5) * unit[:-1] + 0.5 * unit[1:])
    mi, mi_s = minterpolate_2x(kept)
    start = time.perf_counter()
    ours = interpolate_frames(torch.from_numpy(kept).float() / 255, 2, cfg)
    ours_s = time.perf_counter() - start
    ours = to_uint8(ours)
    res = {"n": n, "mi_s": mi_s / n, "ours_s": ours_s / n}
    for name, pred in (("blend", blend), ("mi", mi[1::2]), ("ours", ours[1::2])):
        res[f"{name}_psnr"] = [psnr(p, t) for p, t in zip(pred, truth)]
        res[f"{name}_ssim"] = [ssim(p, t) for p, t in zip(pred, truth)]
    return res


def demo_clips(n: int) -> list[tuple[str, torch.Tensor]]:
    """n clips from the shipped demo model (held-out prompts, alternating EN/ZH, seed 0), [T, H, W, 3] in 0..1."""
    from wan_core.demo import load_demo_pipeline
    from wan_core.demo.evaluate import held_out_cases, model_generator

    generate = model_generator(load_demo_pipeline())  # DEMO_DEFAULTS, seeded by the case (seed 0 here)
    langs = ("en", "zh")
    return [(f"demo_{i}_{langs[i % 2]}", generate(case, langs[i % 2])) for i, case in enumerate(held_out_cases(1)[:n])]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="192x256", help="HxW of the rendered clips")
    ap.add_argument("--frames", type=int, default=9, help="frames per clip (odd; the odd frames are dropped)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (minterpolate is single-threaded)")
    ap.add_argument("--demo", type=int, default=6, help="demo-model clips to add as a set (0: none)")
    ap.add_argument("--local-gain", default=None, metavar="LO,HI",
                    help="InterpConfig.local_gain band of the per-pixel blend fallback, or 'off' (default: the library's)")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    if args.frames < 3 or args.frames % 2 == 0:
        raise SystemExit(f"--frames must be odd and >= 3 (got {args.frames})")
    torch.set_num_threads(args.threads)
    if args.local_gain is None:
        cfg = InterpConfig()
    elif args.local_gain == "off":
        cfg = InterpConfig(local_gain=None)
    else:
        cfg = InterpConfig(local_gain=tuple(float(v) for v in args.local_gain.split(",")))
    rows, overall = [], {}
    sets = clip_sets(h, w, args.frames)
    if args.demo:
        sets["demo"] = demo_clips(args.demo)
    for set_name, clips in sets.items():
        agg: dict[str, list[float]] = {}
        for clip_name, clip in clips:
            res = evaluate(clip, cfg)
            for key, val in res.items():
                agg.setdefault(key, []).extend(val if isinstance(val, list) else [val])
            gap = min(o - b for o, b in zip(res["ours_psnr"], res["blend_psnr"]))
            print(f"  {clip_name:18s} blend {np.mean(res['blend_psnr']):6.2f}  minterp {np.mean(res['mi_psnr']):6.2f}"
                  f"  ours {np.mean(res['ours_psnr']):6.2f} dB  (min ours-blend {gap:+.2f} dB)", flush=True)
        rows.append((set_name, agg))
        for key, val in agg.items():
            overall.setdefault(key, []).extend(val)
    rows.append(("ALL", overall))
    print(f"\nleave-one-out 2x interpolation, {h}x{w}, {args.frames}-frame clips (demo set: the model's own size, "
          f"25 frames), torch threads {args.threads}")
    head = (f"| set | frames | blend PSNR / SSIM | minterpolate PSNR / SSIM | ours PSNR / SSIM | ours - blend "
            f"(mean / min) dB | frames below blend | s/frame minterp | s/frame ours |")
    print(head)
    print("|" + "---|" * 9)
    for name, a in rows:
        diff = np.array(a["ours_psnr"]) - np.array(a["blend_psnr"])
        print(f"| {name} | {len(a['ours_psnr'])} | {np.mean(a['blend_psnr']):.2f} / {np.mean(a['blend_ssim']):.4f} | "
              f"{np.mean(a['mi_psnr']):.2f} / {np.mean(a['mi_ssim']):.4f} | "
              f"{np.mean(a['ours_psnr']):.2f} / {np.mean(a['ours_ssim']):.4f} | {diff.mean():+.2f} / {diff.min():+.2f} | "
              f"{int((diff < 0).sum())} | {np.mean(a['mi_s']):.3f} | {np.mean(a['ours_s']):.3f} |")


if __name__ == "__main__":
    main()
