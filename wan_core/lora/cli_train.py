"""`python -m wan_core lora train --data DIR --out my_lora.safetensors`: fine-tune a LoRA on a folder of clips.

Order of work, so that only one model is in memory at a time and nothing is encoded twice: the captions' umT5
embeddings and the clips' VAE latents are read from the cache (`<out stem>.cache/` beside the output, or
--cache-dir) and only the missing ones are computed (the encoder / VAE is loaded only then); then the DiT is loaded,
frozen, and the LoRA trained (wan_core.lora.train). A checkpoint (`<out stem>.checkpoint.pt`) is written every
--save-every steps; a re-run with the same settings resumes from it.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_lora_parser(sub) -> None:
    """Registers `lora train` on the top-level subparsers (wan_core.cli)."""
    lora = sub.add_parser("lora", help="LoRA tools: `lora train` fine-tunes one on a folder of clips")
    lsub = lora.add_subparsers(dest="lora_command", required=True)
    p = lsub.add_parser("train", help="train a LoRA (ComfyUI format) on clips/images with .txt captions",
                        description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of clips (.mp4 ...) or images, each with a .txt caption "
                                                 "(one per line; several lines: one drawn per use)")
    p.add_argument("--out", required=True, help="the LoRA .safetensors to write (a .sha256 sidecar beside it)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=None, help="default: the rank (scale alpha / rank = 1)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--targets", default="attn,ffn", help="comma list of attn, self_attn, cross_attn, ffn")
    p.add_argument("--width", type=int, default=None, help="training width (clips resized to cover it and "
                                                           "centre-cropped; default: each clip's own, cut to x32)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="4k+1 first frames of each clip (default: all, cut "
                                                            "to 4k+1)")
    p.add_argument("--shift", type=float, default=None, help="flow shift of the training noise levels (default: "
                                                             "the model's sampling shift)")
    p.add_argument("--caption-dropout", type=float, default=0.0, help="share of rows trained on the empty prompt")
    p.add_argument("--preserve", action="append", default=[], metavar="WORD=ALT[|ALT...]",
                   help="output preservation: rows are also trained to match the frozen model on their caption "
                        "with WORD replaced by one of the ALTs (captions without WORD: as they are); repeatable, "
                        "e.g. --preserve golden=blue|green|gray --preserve 金色=蓝色|绿色")
    p.add_argument("--preserve-weight", type=float, default=None,
                   help="weight of the preservation loss (default 1 with --preserve, else 0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (0: only at the end)")
    p.add_argument("--save-dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 autocast on GPUs, fp32 on the CPU")
    p.add_argument("--checkpointing", default="auto", choices=["auto", "on", "off"],
                   help="gradient checkpointing of the DiT blocks (auto: on GPUs)")
    p.add_argument("--cache-dir", default=None, help="latent / embedding cache (default: <out stem>.cache beside it)")
    p.add_argument("--model-dir", help="ComfyUI models folder, diffusers folder or official Wan2.2 folder "
                                       "(default: the embedded demo model)")
    p.add_argument("--dit", help="DiT .safetensors")
    p.add_argument("--vae", help="Wan2.2 VAE .safetensors")
    p.add_argument("--text-encoder", help="umT5 .safetensors")
    p.add_argument("--tokenizer", help="tokenizer folder (when the text encoder file embeds none)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-verify", action="store_true", help="skip SHA256 checks against .sha256 sidecars")
    p.set_defaults(func=cmd_lora_train)


def preservation_rules(specs: list[str]) -> list[tuple[str, list[str]]]:
    """--preserve WORD=ALT|ALT ... -> [(word, [alts])]; a malformed rule is refused with an example."""
    rules = []
    for spec in specs:
        word, sep, alts = spec.partition("=")
        options = [a.strip() for a in alts.split("|") if a.strip()]
        if not sep or not word.strip() or not options:
            raise ValueError(f"--preserve {spec!r}: write WORD=ALT or WORD=ALT1|ALT2, the concept's word and words "
                             "the model already knows, e.g. --preserve golden=blue|green")
        rules.append((word.strip(), options))
    return rules


def preservation_prompts(caption: str, rules: list[tuple[str, list[str]]]) -> list[str]:
    """The preservation prompts of a caption: every rule whose word it contains applied with its k-th alternative
    (k over the longest list), or the caption itself when it contains no rule's word."""
    hits = [(w, alts) for w, alts in rules if w in caption]
    if not hits:
        return [caption]
    out = []
    for k in range(max(len(alts) for _, alts in hits)):
        text = caption
        for w, alts in hits:
            text = text.replace(w, alts[k % len(alts)])
        out.append(text)
    return out


def _lazy(load):
    """A function that loads its model on the first call only (no load when everything is cached)."""
    box = []

    def get():
        if not box:
            box.append(load())
        return box[0]
    return get


def cmd_lora_train(args) -> int:
    import torch
    from tqdm import tqdm

    from ..cli import pick_device
    from ..latent_format import normalize_latents
    from ..loading import load_dit, load_text_encoder, load_vae, sampling_defaults
    from ..model_files import resolve_inputs
    from . import data as D
    from .train import LoraTrainConfig, TrainData, train_lora, write_lora

    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {args.out}: LoRAs are written as .safetensors; name it e.g. {out.stem}.safetensors")
    items = D.find_items(args.data)  # a bad folder or a missing caption fails before any model loads
    files = resolve_inputs(args.model_dir, dit=args.dit, vae=args.vae, text_encoder=args.text_encoder,
                           tokenizer=args.tokenizer)
    device = pick_device(args.device)
    gpu = device.type != "cpu"
    shift = args.shift if args.shift is not None else sampling_defaults(files.dit)[0].shift
    rules = preservation_rules(args.preserve)
    unused = [w for w, _ in rules if not any(w in c for it in items for c in it.captions)]
    if unused:
        raise ValueError(f"--preserve: no caption in {args.data} contains {unused}; the word must appear as written "
                         "in the captions")
    weight = args.preserve_weight if args.preserve_weight is not None else (1.0 if rules else 0.0)
    cfg = LoraTrainConfig(rank=args.rank, alpha=args.alpha or float(args.rank), steps=args.steps, lr=args.lr,
                          batch=args.batch, targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
                          shift=shift, seed=args.seed, caption_dropout=args.caption_dropout,
                          preserve_weight=weight,
                          bf16=args.precision == "bf16" or (args.precision == "auto" and gpu),
                          checkpointing=args.checkpointing == "on" or (args.checkpointing == "auto" and gpu))
    verify = not args.no_verify
    cache = Path(args.cache_dir) if args.cache_dir else out.with_name(out.stem + ".cache")
    stats = D.CacheStats()

    te = _lazy(lambda: load_text_encoder(files.text_encoder, tokenizer=files.tokenizer, device=device,
                                         dtype=torch.bfloat16 if gpu else torch.float32, verify=verify))
    keep = {c: preservation_prompts(c, rules) for it in items for c in it.captions} if weight > 0 else {}
    texts = list(dict.fromkeys([c for it in items for c in it.captions] + [""] + [k for v in keep.values() for k in v]))
    with torch.no_grad():
        embeds = D.cached_embeddings(texts, lambda batch: [e.float().cpu() for e in te().encode(batch)],
                                     D.file_digest(files.text_encoder), cache, stats=stats)
    te = None  # the encoder (if it was loaded) is freed before the VAE and the DiT load
    vae = _lazy(lambda: load_vae(files.vae, device=device, dtype=torch.float32 if not gpu else None, verify=verify))

    def encode(pixels):
        v = vae()
        return normalize_latents(v.encode(pixels.to(device, next(v.parameters()).dtype)).float())

    vae_id = D.file_digest(files.vae)
    bar = tqdm(total=len(items), desc="latents", unit="clip", disable=None)
    with torch.no_grad():
        latents = D.cached_latents(items, encode, vae_id, cache, width=args.width, height=args.height,
                                   frames=args.frames, stats=stats, progress=lambda k: bar.update(1))
    bar.close()
    vae = None
    print(f"cache {cache}: {stats.hits} entries reused, {stats.made} computed", flush=True)
    data = TrainData(latents, [[embeds[c] for c in it.captions] for it in items], embeds[""],
                     [[[embeds[k] for k in keep[c]] for c in it.captions] for it in items] if keep else None)

    dit = load_dit(files.dit, device=device, dtype=torch.bfloat16 if gpu else torch.float32, verify=verify)
    dit_id = D.file_digest(files.dit)
    fingerprint = D.digest(dit_id, vae_id, args.width, args.height, args.frames,
                           *[D.file_digest(it.path) for it in items], *[c for it in items for c in it.captions],
                           *[f"{w}={'|'.join(a)}" for w, a in rules])
    ckpt = out.with_name(out.stem + ".checkpoint.pt")
    bar = tqdm(total=cfg.steps, desc="training", unit="step", disable=None)

    def on_step(step, loss):
        if bar.n == 0 and step > 0:
            bar.update(step)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
    t_train = time.perf_counter()
    layers, info = train_lora(dit, data, cfg, checkpoint=ckpt, save_every=args.save_every, fingerprint=fingerprint,
                              on_step=on_step)
    bar.close()
    meta = {"trainer": "wan_core lora train", **cfg.identity(), "steps": info["steps"],
            "width": args.width, "height": args.height, "frames": args.frames,
            "latent_shapes": sorted({"x".join(map(str, z.shape[1:])) for z in latents}),
            "base_model": files.dit.name, "base_model_sha256": dit_id, "data": Path(args.data).name,
            "clips": len(items), "captions": sum(len(it.captions) for it in items),
            "preserve": args.preserve, "preserve_loss_last_50": info["preserve_loss_last_50"],
            "resumed_at": info["resumed_at"], "loss_first_50": info["loss_first_50"],
            "loss_last_50": info["loss_last_50"], "train_seconds": round(time.perf_counter() - t_train, 1),
            "seconds": round(time.perf_counter() - t0, 1), "device": device.type,
            "threads": torch.get_num_threads()}
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.save_dtype]
    write_lora(out, layers, meta, dtype)
    print(f"wrote {out} ({len(layers)} layers, rank {cfg.rank}, {info['steps']} steps; loss {info['loss_first_50']}"
          f" -> {info['loss_last_50']}) in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


def main(argv=None) -> int:  # for `python -m wan_core.lora.cli_train` in tests
    ap = argparse.ArgumentParser()
    add_lora_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)
