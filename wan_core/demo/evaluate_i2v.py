"""The evaluator's image-to-video mode: held-out scenes started from the first frame of their own clip.

Every held-out case (wan_core.demo.evaluate.held_out_cases) gives a start image, frame 0 of its true clip rendered by
wan_core.demo.world and rounded to 8 bits (what a PNG of it holds), and its caption in each language as the prompt.
Scored per video, on the frames the pipeline returns (no mp4 round trip):
- first-frame PSNR of the output against the start image (peak 1.0, over all pixels and channels);
- the T2V score (wan_core.demo.evaluate.score): colour, shape and motion against the caption, which names the
  image's object, so "kept" = colour and shape both still those of the image, "direction" = the prompted motion.
The VAE's own first-frame PSNR on the same start images (encode + decode of the image alone) is printed beside it:
the causal decoder's first frame depends only on latent frame 0, which image-to-video fixes to the image latent, so
this is the ceiling of the model's first-frame PSNR whatever the DiT does.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .captions import LANGS
from .evaluate import Case, evaluate, format_table
from .world import render

PEAK = 1.0  # frames are float in 0..1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images or videos of the same shape in 0..1 (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR of images of different shapes {tuple(a.shape)} and {tuple(b.shape)}; compare frames "
                         "of the same size")
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK ** 2 / mse)


def first_frame_psnr(frames: torch.Tensor, image: torch.Tensor) -> float:
    """PSNR of frames[0] ([T, H, W, 3] in 0..1) against the start image [H, W, 3] (uint8 or float in 0..1)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] in 0..1 (got shape {tuple(frames.shape)})")
    return psnr(frames[0].float(), as_unit(image))


def as_unit(image: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 3] -> float in 0..1; float images are returned as float32."""
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def start_image(case: Case) -> torch.Tensor:
    """Frame 0 of the case's true clip as uint8 [H, W, 3] (a PNG of it holds exactly these values)."""
    return (render(case.scene)[0] * 255).round().clamp(0, 255).to(torch.uint8)


def ground_truth_i2v(case: Case, lang: str) -> torch.Tensor:
    """The true clip (what a perfect model would produce); its frame 0 differs from the start image by rounding."""
    return render(case.scene)


def i2v_generator(pipe, *, steps=None, cfg=None, shift=None, sampler=None) -> Callable[[Case, str], torch.Tensor]:
    """A `generate(case, lang)` backed by a WanT2VPipeline with image=start_image(case); unset knobs take
    DEMO_DEFAULTS, as the T2V evaluator."""
    from . import DEMO_DEFAULTS as d

    def generate(case: Case, lang: str) -> torch.Tensor:
        return pipe(case.prompts[lang], width=case.scene.width, height=case.scene.height,
                    num_frames=case.scene.frames, seed=case.seed, num_inference_steps=steps or d.steps,
                    guidance_scale=d.guidance_scale if cfg is None else cfg, shift=shift or d.shift,
                    sampler=sampler or d.sampler, image=start_image(case))
    return generate


def vae_first_frame(vae, image: torch.Tensor) -> torch.Tensor:
    """The VAE's encode + decode of a start image alone (uint8 [H, W, 3]) -> float [H, W, 3] in 0..1, through the
    pipeline's own preprocessing (wan_core.image)."""
    from ..image import encode_image, prepare_image

    pixels = prepare_image(image.numpy(), image.shape[1], image.shape[0])[0]
    with torch.no_grad():
        video = vae.decode(encode_image(vae, pixels).to(next(vae.parameters()).dtype))
    return ((video[0, :, 0].float() + 1) / 2).clamp(0, 1).permute(1, 2, 0).cpu()


def evaluate_i2v(generate: Callable[[Case, str], torch.Tensor], cases: list[Case], vae=None) -> dict:
    """evaluate()'s report (rows per language, agreement) plus, per video in the rows' order, "psnr" (first frame
    vs start image) and, with a VAE, "vae_psnr" (the VAE alone on that image) and "vs_vae" (first frame vs the
    VAE's reconstruction: inf when the DiT cannot move the first frame)."""
    images = {id(c): start_image(c) for c in cases}
    recon = {id(c): vae_first_frame(vae, images[id(c)]) for c in cases} if vae is not None else {}

    def scored(case: Case, lang: str) -> torch.Tensor:
        frames = generate(case, lang)
        extra = {"psnr": first_frame_psnr(frames, images[id(case)])}
        if recon:
            extra["vae_psnr"] = psnr(recon[id(case)], as_unit(images[id(case)]))
            extra["vs_vae"] = psnr(frames[0].float(), recon[id(case)])
        pending.append(extra)
        return frames

    pending: list[dict] = []
    report = evaluate(scored, cases)
    by_lang = iter(pending)  # evaluate() calls generate case by case, LANGS in order
    extras = {lang: [] for lang in LANGS}
    for _ in cases:
        for lang in LANGS:
            extras[lang].append(next(by_lang))
    for lang in LANGS:
        report["rows"][lang] = [{**r, **e} for r, e in zip(report["rows"][lang], extras[lang])]
    return report


def i2v_summary(report: dict) -> dict:
    """Over all videos: first-frame PSNR mean/min, % kept colour and shape, % prompted direction (+ VAE figures)."""
    rows = [r for lang in report["rows"] for r in report["rows"][lang]]
    n = max(1, len(rows))
    out = {"videos": len(rows), "psnr_mean": sum(min(r["psnr"], 99.0) for r in rows) / n,
           "psnr_min": min(r["psnr"] for r in rows),
           "kept": 100.0 * sum(r["colour"] and r["shape"] for r in rows) / n,
           "direction": 100.0 * sum(r["motion"] for r in rows) / n}
    if rows and "vae_psnr" in rows[0]:
        out.update(vae_mean=sum(r["vae_psnr"] for r in rows) / n, vae_min=min(r["vae_psnr"] for r in rows),
                   vae_max=max(r["vae_psnr"] for r in rows), vs_vae_min=min(r["vs_vae"] for r in rows))
    return out


def format_i2v(report: dict) -> str:
    """The T2V table, then the image-to-video lines."""
    s = i2v_summary(report)
    lines = [format_table(report),
             f"I2V, {s['videos']} videos: first-frame PSNR vs start image mean {s['psnr_mean']:.2f} dB, min "
             f"{s['psnr_min']:.2f} dB (target >= 28); colour+shape kept {s['kept']:.1f}% (target >= 90); prompted "
             f"direction {s['direction']:.1f}% (target >= 80)"]
    if "vae_mean" in s:
        lines.append(f"VAE alone on the start images (encode + decode): mean {s['vae_mean']:.2f} dB, "
                     f"{s['vae_min']:.2f}-{s['vae_max']:.2f} dB; output first frame vs that reconstruction: min "
                     f"{s['vs_vae_min']:.2f} dB (inf = identical: the first frame is the VAE's alone)")
    return "\n".join(lines)
