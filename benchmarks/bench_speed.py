"""Step caching and few-step sampling on the demo model: DiT calls, time, PSNR against the uncached run, accuracy.

For each schedule (50-step UniPC, 20-step Euler; the demo's cfg 3 and shift 3) every case is generated once
uncached and once per cache setting, from the same seed; per setting the table prints the DiT calls (cond + uncond
forwards), calls saved (uncached / cached), the wall-time ratio of the whole pipeline call (text, sampling, decode)
against the uncached run measured in the same process, the mean PSNR of the decoded video against the uncached one,
and the evaluator's accuracy (wan_core.demo.evaluate.score: colour, shape, motion, all three) and its drop in points.
The lcm row compares 4 lcm steps (demo schedule) and the turbo preset's warped timesteps with 20 Euler steps.

Prompts: the held-out cases (wan_core.demo.evaluate.held_out_cases, English prompts) by default; thresholds were
chosen on --prompts tune (scenes from the training distribution, other seeds), which --calibrate also uses to write
the demo DiT's MagCache ratios (models/diffusion_models/<dit>.magcache.json; mean log ratio over the prompts).

    python benchmarks/bench_speed.py                      # held-out, both schedules, the shipped settings
    python benchmarks/bench_speed.py --prompts tune --settings "easycache:0.05;easycache:0.1;magcache:0.1"
    python benchmarks/bench_speed.py --calibrate          # re-record the demo MagCache ratios
Run timed comparisons alone (e.g. under `flock`): times are ratios measured side by side, one thread.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_core.demo.captions import caption  # noqa: E402
from wan_core.demo.evaluate import Case, held_out_cases, score  # noqa: E402
from wan_core.demo.evaluate_i2v import psnr  # noqa: E402
from wan_core.demo.world import sample_scene  # noqa: E402
from wan_core.few_step import get_preset  # noqa: E402
from wan_core.magcache_ratios import MagRatios, load_ratios, save_ratios, sidecar  # noqa: E402
from wan_core.model_files import resolve_inputs  # noqa: E402
from wan_core.pipeline import WanT2VPipeline  # noqa: E402
from wan_core.schedules import flow_sigmas  # noqa: E402
from wan_core.step_cache import StepCacheConfig  # noqa: E402

SCHEDULES = {"unipc50": (50, "unipc"), "euler20": (20, "euler")}
SHIPPED = "easycache:0.05;easycache:0.1;easycache:0.2;magcache:0.25;magcache:0.5"


def tune_cases(n: int) -> list[Case]:
    """Scenes from the training distribution (held-out triples excluded), seeds far from the training seeds."""
    cases = []
    for i in range(n):
        scene = sample_scene(70_000 + 13 * i, n_objects=1)
        cases.append(Case(scene, i, {"en": caption(scene, "en", variant=i)}))
    return cases


def generate(pipe, case: Case, *, steps=None, sampler, cache=None, sigmas=None, cfg=None):
    s = case.scene
    t = time.perf_counter()
    frames, info = pipe(case.prompts["en"], width=s.width, height=s.height, num_frames=s.frames, seed=case.seed,
                        num_inference_steps=steps, sampler=sampler, cache=cache, sigmas=sigmas,
                        guidance_scale=cfg, return_info=True)
    return frames, info, time.perf_counter() - t


def accuracy(rows: list[dict]) -> dict:
    n = max(1, len(rows))
    out = {k: 100.0 * sum(r[k] for r in rows) / n for k in ("colour", "shape", "motion")}
    out["all3"] = 100.0 * sum(r["colour"] and r["shape"] and r["motion"] for r in rows) / n
    return out


def parse_setting(text: str, ratios) -> StepCacheConfig:
    config = StepCacheConfig.parse(text)
    return config.with_ratios(ratios) if config.method == "magcache" else config


def run_schedule(pipe, cases, name, settings, ratios) -> list[str]:
    steps, sampler = SCHEDULES[name]
    base = [generate(pipe, c, steps=steps, sampler=sampler) for c in cases]
    base_acc = accuracy([score(f, c.prompts["en"]) for (f, _, _), c in zip(base, cases)])
    base_calls, base_time = sum(b[1]["dit_calls"] for b in base), sum(b[2] for b in base)
    lines = [f"{name} ({steps} {sampler} steps, cfg {pipe.defaults.guidance_scale:g}, {len(cases)} videos)",
             f"{'setting':<16}{'DiT calls':>10}{'fewer':>7}{'time':>7}{'PSNR dB':>9}{'min dB':>8}"
             f"{'colour':>8}{'shape':>7}{'motion':>8}{'all3':>7}{'drop':>7}",
             f"{'off':<16}{base_calls:>10}{1.0:>6.2f}x{1.0:>6.2f}x{'-':>9}{'-':>8}{base_acc['colour']:>7.1f}%"
             f"{base_acc['shape']:>6.1f}%{base_acc['motion']:>7.1f}%{base_acc['all3']:>6.1f}%{0.0:>7.1f}"]
    for text in settings:
        runs = [generate(pipe, c, steps=steps, sampler=sampler, cache=parse_setting(text, ratios)) for c in cases]
        acc = accuracy([score(f, c.prompts["en"]) for (f, _, _), c in zip(runs, cases)])
        calls, secs = sum(r[1]["dit_calls"] for r in runs), sum(r[2] for r in runs)
        dbs = [min(psnr(f, b[0]), 99.0) for (f, _, _), b in zip(runs, base)]
        lines.append(f"{text:<16}{calls:>10}{base_calls / calls:>6.2f}x{secs / base_time:>6.2f}x"
                     f"{statistics.mean(dbs):>9.2f}{min(dbs):>8.2f}{acc['colour']:>7.1f}%{acc['shape']:>6.1f}%"
                     f"{acc['motion']:>7.1f}%{acc['all3']:>6.1f}%{base_acc['all3'] - acc['all3']:>7.1f}")
    return lines


def run_lcm(pipe, cases) -> list[str]:
    shift = pipe.defaults.shift
    arms = [("euler 20", dict(steps=20, sampler="euler")),
            ("lcm 4", dict(sampler="lcm", sigmas=flow_sigmas(4, shift))),
            ("lcm turbo", dict(sampler="lcm", sigmas=get_preset("turbo").sigmas(), cfg=1.0))]
    lines = [f"lcm smoke ({len(cases)} videos; the demo model is not distilled)",
             f"{'arm':<12}{'DiT calls':>10}{'time':>7}{'colour':>8}{'shape':>7}{'motion':>8}{'all3':>7}"]
    base_time = None
    for name, kw in arms:
        runs = [generate(pipe, c, **kw) for c in cases]
        acc = accuracy([score(f, c.prompts["en"]) for (f, _, _), c in zip(runs, cases)])
        secs = sum(r[2] for r in runs)
        base_time = base_time or secs
        lines.append(f"{name:<12}{sum(r[1]['dit_calls'] for r in runs):>10}{secs / base_time:>6.2f}x"
                     f"{acc['colour']:>7.1f}%{acc['shape']:>6.1f}%{acc['motion']:>7.1f}%{acc['all3']:>6.1f}%")
    return lines


def calibrate(pipe, cases, dit_path) -> Path:
    """Mean log magnitude ratio over the cases of 50-step UniPC runs in calibrate mode -> the DiT's sidecar."""
    tables = [generate(pipe, c, steps=50, sampler="unipc", cache=StepCacheConfig(method="calibrate"))[1]
              ["magcache_ratios"] for c in cases]

    def mean(key):
        cols = zip(*(getattr(t, key) for t in tables))
        return tuple(math.exp(statistics.mean(math.log(r) for r in col)) for col in cols)

    ratios = MagRatios(tables[0].sigmas, mean("cond"), mean("uncond"), Path(dit_path).name)
    return save_ratios(ratios, sidecar(dit_path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", choices=["held-out", "tune"], default="held-out")
    ap.add_argument("--cases", type=int, default=12, help="videos per row (held-out: at most 12 per seed)")
    ap.add_argument("--schedules", default="unipc50,euler20", help=f"comma list of {sorted(SCHEDULES)}")
    ap.add_argument("--settings", default=SHIPPED, help="';'-separated --cache specs")
    ap.add_argument("--no-lcm", action="store_true", help="skip the lcm smoke rows")
    ap.add_argument("--calibrate", action="store_true", help="write the demo DiT's MagCache ratios and stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pipe = WanT2VPipeline.from_pretrained()
    dit_path = resolve_inputs(None).dit
    cases = tune_cases(args.cases) if args.prompts == "tune" or args.calibrate else held_out_cases(1)[:args.cases]
    if args.calibrate:
        print(f"wrote {calibrate(pipe, cases, dit_path)} ({len(cases)} tuning prompts)")
        return 0
    ratios = load_ratios(dit_path)
    settings = [s.strip() for s in args.settings.split(";") if s.strip()]
    generate(pipe, cases[0], steps=4, sampler="euler")  # warm-up (first-call overheads), not timed
    start = time.perf_counter()
    for name in args.schedules.split(","):
        print("\n".join(run_schedule(pipe, cases, name.strip(), settings, ratios)) + "\n", flush=True)
    if not args.no_lcm:
        print("\n".join(run_lcm(pipe, cases)), flush=True)
    print(f"\n{args.prompts} prompts, {len(cases)} cases, total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
