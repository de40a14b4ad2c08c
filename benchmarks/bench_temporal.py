"""Temporal options and the deflicker, scored on the mp4 files the command line writes, with two metrics.

For every held-out demo case (wan_core.demo.evaluate.held_out_cases: 12 colour/shape/motion triples per seed, an
English and a Chinese prompt each) the command line's own code path (`wan_core.cli.main(["generate", ...])`, in
this process) writes one mp4 plainly and one per arm, from the same seed; each mp4 is decoded with PyAV and scored:
  project metric       wan_core.temporal.metrics.video_metrics: warping error (Lai et al. 2018) with the pack's own
                       Horn-Schunck flow (the flow family the deflicker smooths along), flicker indices, motion
  independent metric   OpenCV Farneback flow (cv2.calcOpticalFlowFarneback) both ways with the forward-backward
                       check of Sundaram et al. / Ruder et al.: warping error over the pixels that pass it, and the
                       mean and top-5% flow magnitude (motion)
  evaluator            wan_core.demo.evaluate.score on the decoded frames: colour / direction / shape accuracy and the
                       background flicker; travel: the main object's centroid displacement over the clip (fraction
                       of the short side, the evaluator's least-squares fit), a motion measure no flicker inflates
  seconds              wall time of the whole generate call (load, text, sampling, decode, deflicker, encode) and of
                       the deflicker alone.
Every column is printed for the plain run and as the ratio arm / plain (points for the accuracies), arms side by side.
Issue 22 targets (independent metric, seeds not used for tuning): warping error <= 0.80x, motion >= 0.95x, direction
accuracy drop <= 2 points. The seed list is explicit: the deflicker was tuned on --seeds 0-1, its first choice
checked on 4-7, the shipped one confirmed on 8-11 (the default).

Needs `pip install -r benchmarks/requirements.txt` (opencv-python-headless). Usage:
  python benchmarks/bench_temporal.py --seeds 8-11 --langs en --temporal "deflicker=1"
  python benchmarks/bench_temporal.py --seeds 0-1 --limit 4 --temporal "deflicker=1;on,deflicker=1" --keep mp4s
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_core import cli  # noqa: E402
from wan_core.demo.evaluate import detect, held_out_cases, score  # noqa: E402
from wan_core.temporal import deflicker as deflicker_module  # noqa: E402
from wan_core.temporal.metrics import video_metrics  # noqa: E402
from wan_core.video import read_video  # noqa: E402

PROJECT = ("warping_error", "hf_warping_error", "luma_flicker", "hf_flicker", "motion_mean", "motion_top5")
INDEPENDENT = ("cv_warping_error", "cv_motion_mean", "cv_motion_top5", "cv_valid")
ACCURACY = ("colour", "motion", "shape")
TARGETS = {"cv_warping_error": "<= 0.80x", "cv_motion_mean": ">= 0.95x", "motion": "drop <= 2 pt",
           "colour": "drop <= 2 pt"}
# Farneback at the demo's 128-224 px: 3 levels, 15 px windows, 3 iterations, 5 px polynomials (OpenCV's example
# values; nothing tuned to the deflicker).
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def parse_seeds(spec: str) -> list[int]:
    """'4-7' -> [4, 5, 6, 7]; '0,2,5' -> [0, 2, 5]; ranges and lists mix ('0-1,4')."""
    seeds: list[int] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        lo, sep, hi = part.partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise SystemExit(f"--seeds {spec!r}: {part!r} is neither a seed nor a range like 4-7") from None
    if not seeds or min(seeds) < 0:
        raise SystemExit(f"--seeds {spec!r}: give non-negative seeds, e.g. 0-1 or 4,5,6,7")
    return sorted(set(seeds))


def select_cases(seeds: list[int], limit: int = 0):
    """Held-out cases whose seed is in `seeds` (each seed gives other scenes), the first `limit` (0 = all)."""
    cases = [c for c in held_out_cases(max(seeds) + 1) if c.seed in seeds]
    return cases[:limit] if limit else cases


def farneback_metrics(frames: np.ndarray) -> dict[str, float]:
    """Independent metric of a decoded clip [T, H, W, 3] uint8: warping error (mean squared RGB difference of frame t
    and frame t+1 warped by the Farneback flow, 0..1 units, over the pixels whose forward and backward flows agree)
    and motion (mean and top-5% flow magnitude, pixels per frame) with OpenCV's Farneback flow."""
    import cv2

    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    rgb = frames.astype(np.float32) / 255
    h, w = grey[0].shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    errs, valid, means, tops = [], [], [], []
    for t in range(len(grey) - 1):
        fw = cv2.calcOpticalFlowFarneback(grey[t], grey[t + 1], None, **FARNEBACK)
        bw = cv2.calcOpticalFlowFarneback(grey[t + 1], grey[t], None, **FARNEBACK)
        mx, my = gx + fw[..., 0], gy + fw[..., 1]
        back = cv2.remap(bw, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sq = lambda f: (f * f).sum(-1)  # noqa: E731
        ok = (sq(fw + back) <= 0.01 * (sq(fw) + sq(back)) + 0.5) & (mx >= 0) & (mx <= w - 1) & (my >= 0) \
            & (my <= h - 1)
        warped = cv2.remap(rgb[t + 1], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        resid = ((rgb[t] - warped) ** 2).mean(-1)
        errs.append(float(resid[ok].mean()) if ok.any() else 0.0)
        valid.append(float(ok.mean()))
        mag = np.sqrt(sq(fw)).ravel()
        means.append(float(mag.mean()))
        tops.append(float(np.sort(mag)[-max(1, mag.size // 20):].mean()))
    return {"cv_warping_error": float(np.mean(errs)), "cv_motion_mean": float(np.mean(means)),
            "cv_motion_top5": float(np.mean(tops)), "cv_valid": float(np.mean(valid))}


def score_mp4(path: Path, prompt: str, metrics_side: int | None) -> dict:
    """Both metrics and the evaluator's scores of one written mp4."""
    frames, _ = read_video(path)  # [T, H, W, 3] uint8
    x = torch.from_numpy(frames).float() / 255
    m = video_metrics(x, max_side=metrics_side)
    s = score(x, prompt)
    travel = math.hypot(*detect(x, 1)[0].displacement)
    return {**{k: m[k] for k in PROJECT}, **farneback_metrics(frames), "travel": travel, "bg_flicker": s["flicker"],
            **{k: float(s[k]) for k in ACCURACY}}


@contextlib.contextmanager
def timed_deflicker(sink: list):
    """Time every deflicker call the pipeline makes (it imports the function from the module when it runs)."""
    inner = deflicker_module.deflicker

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        out = inner(*a, **k)
        sink.append(time.perf_counter() - t0)
        return out

    deflicker_module.deflicker = wrapper
    try:
        yield
    finally:
        deflicker_module.deflicker = inner


def generate(case, prompt: str, arm: list[str], path: Path, device: str) -> tuple[float, float]:
    """Write one mp4 through the command line; return (seconds of the call, seconds of the deflicker)."""
    s = case.scene
    argv = ["generate", prompt, "-o", str(path), "--width", str(s.width), "--height", str(s.height),
            "--frames", str(s.frames), "--seed", str(case.seed), "--device", device, *arm]
    spent: list = []
    t0 = time.perf_counter()
    with timed_deflicker(spent), contextlib.redirect_stdout(io.StringIO()) as said:
        rc = cli.main(argv)
    seconds = time.perf_counter() - t0
    if rc != 0 or not path.is_file():
        raise SystemExit(f"python -m wan_core {' '.join(argv)} failed (exit {rc}): {said.getvalue()}")
    return seconds, sum(spent)


def arm_args(spec: str) -> list[str]:
    """'on,deflicker=1' -> ['--temporal', 'on', '--deflicker', '1'] (the command line's flags for one arm)."""
    out, temporal = [], []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        key, _, value = part.partition("=")
        if key.strip() == "deflicker":
            out += ["--deflicker", value.strip()]
        else:
            temporal.append(part)
    return (["--temporal", ",".join(temporal)] if temporal else []) + out


def mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / max(1, len(rows))


def format_table(base: list[dict], arms: dict[str, list[dict]]) -> str:
    """Metric, plain mean, then per arm the ratio arm / plain (accuracy: point change) and the target."""
    names = list(arms)
    head = f"{'metric':<20}{'plain':>10}" + "".join(f"{n[:22]:>24}" for n in names) + "  target"
    lines = [head]
    for key in PROJECT + INDEPENDENT + ("travel", "bg_flicker"):
        b = mean(base, key)
        cells = "".join(f"{mean(rows, key) / b if b else float('nan'):>23.3f}x" for rows in arms.values())
        label = ("cv: " + key[3:]) if key.startswith("cv_") else key
        lines.append(f"{label:<20}{b:>10.5f}{cells}  {TARGETS.get(key, '')}")
    for key in ACCURACY:
        b = 100 * mean(base, key)
        cells = "".join(f"{100 * mean(rows, key) - b:>+22.1f}pt" for rows in arms.values())
        label = {"motion": "direction"}.get(key, key)
        lines.append(f"{label + ' acc %':<20}{b:>10.1f}{cells}  {TARGETS.get(key, '')}")
    b = mean(base, "seconds")
    cells = "".join(f"{mean(rows, 'seconds') / b:>23.3f}x" for rows in arms.values())
    lines.append(f"{'s/video (CLI call)':<20}{b:>10.2f}{cells}")
    cells = "".join(f"{statistics.median(y['seconds'] / x['seconds'] for x, y in zip(base, rows)):>23.3f}x"
                    for rows in arms.values())
    lines.append(f"{'  median per video':<20}{'':>10}{cells}")
    cells = "".join(f"{mean(rows, 'deflicker_s'):>23.3f}s" for rows in arms.values())
    lines.append(f"{'deflicker s/video':<20}{'':>10}{cells}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temporal", default="deflicker=1", help="arms separated by ';', each TemporalOptions keys "
                    "(--temporal of the CLI) plus deflicker=S (--deflicker), e.g. 'deflicker=1;on,deflicker=1'")
    ap.add_argument("--seeds", default="8-11", help="held-out seeds, a list or ranges (default 8-11, the confirmation "
                    "seeds of docs/temporal.md; the deflicker was tuned on 0-1)")
    ap.add_argument("--langs", default="en,zh", help="prompt languages, comma-separated (default en,zh)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases of the selected seeds (0 = all)")
    ap.add_argument("--device", default="cpu", help="the CLI's --device (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared machines)")
    ap.add_argument("--metrics-side", type=int, default=128, help="longer side for the project metric's flow")
    ap.add_argument("--keep", default=None, help="keep the mp4 files in this folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the per-video rows to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = [s.strip() for s in args.temporal.split(";") if s.strip()]
    if not specs or any(not arm_args(s) for s in specs):
        raise SystemExit(f"--temporal {args.temporal!r}: every arm must turn something on; nothing to compare")
    seeds = parse_seeds(args.seeds)
    cases = select_cases(seeds, args.limit)
    langs = [s.strip() for s in args.langs.split(",") if s.strip()]
    base: list[dict] = []
    arms: dict[str, list[dict]] = {s: [] for s in specs}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if cases:  # one untimed call first: imports and the first model load would land on the first plain run
            generate(cases[0], cases[0].prompts[langs[0]], [], folder / "warmup.mp4", args.device)
        for i, case in enumerate(cases):
            for lang in langs:
                prompt = case.prompts[lang]
                for j, (spec, rows) in enumerate([("plain", base), *arms.items()]):
                    path = folder / f"case{i:02d}_seed{case.seed}_{lang}_arm{j}.mp4"
                    seconds, spent = generate(case, prompt, arm_args(spec) if j else [], path, args.device)
                    rows.append({**score_mp4(path, prompt, args.metrics_side), "seconds": seconds,
                                 "deflicker_s": spent, "prompt": prompt, "seed": case.seed, "mp4": path.name})
                print(f"[{i + 1}/{len(cases)} {lang} seed {case.seed}] cv warp {base[-1]['cv_warping_error']:.5f} -> "
                      + " ".join(f"{r[-1]['cv_warping_error']:.5f}" for r in arms.values()) + f"  {prompt}",
                      file=sys.stderr, flush=True)
    print(format_table(base, arms))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "plain": base, "arms": arms}, indent=1,
                                              ensure_ascii=False))
    print(f"{len(base)} videos per arm ({len(cases)} cases x {len(langs)} languages, seeds {args.seeds}), "
          f"{len(base) * (1 + len(specs))} mp4 files in {time.perf_counter() - t0:.0f} s; demo model through "
          f"`python -m wan_core generate` (in process), device {args.device}, threads {args.threads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
