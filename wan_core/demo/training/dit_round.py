"""One DiT round: the DiT and the tiny umT5 encoder trained jointly with flow matching on the latent cache.

x_s = (1 - s) x0 + s noise, target v = noise - x0, s = shift_sigma(u, shift), u ~ U(0, 1), t = trunc(1000 s):
exactly the sigma/timestep convention of inference; latent pixels an object covers weigh 1 + object_weight.
Captions drop to "" or the default negative prompt (CFG). A training-only read-out of the scene's attributes from
the pooled text encoding (`AttributeHeads`, weight text_aux_weight) teaches the encoder both languages fast.
The second round adds the shape swap, the frame crop and the weight average (`DitRound`, config.py).
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import torch

from ...i2v import token_timesteps
from ...model import WanTransformer
from ...prompts import DEFAULT_NEGATIVE_PROMPT
from ...schedules import shift_sigma, sigma_to_timestep
from ...tokenizer import SpieceTokenizer
from ..captions import LANGS, caption
from ..compact_text import compact_text
from ..ema import WeightEMA
from ..export import MODEL_FILES
from .clock import Clock, lr_factor
from .config import DitRound, TrainConfig
from .latent_cache import CacheEntry, first_frames
from .text import AttributeHeads, build_text_encoder, encode_text_train, spec_of

log = logging.getLogger(__name__)


def training_prompt(scene, rng: random.Random, cfg: TrainConfig) -> tuple[str, object]:
    """(prompt, the scene it describes, or None for a dropped caption: "" or the default negative prompt)."""
    r = rng.random()
    if r < cfg.drop_caption / 2:
        return "", None
    if r < cfg.drop_caption:
        return DEFAULT_NEGATIVE_PROMPT, None
    lang, variant = rng.choice(LANGS), rng.randrange(1 << 20)
    return caption(scene, lang, variant=variant), scene


def swap_inputs(entries: list[CacheEntry], described: tuple, share: float, gen: torch.Generator):
    """(x_alt [B, C, T', h, w], alt_mix [B]) for flow_loss's shape swap. A share of the rows whose caption describes
    their scene (`described[i]` not None; a dropped caption has no shape to follow) and whose clip the cache holds
    in another shape (single objects) get lam ~ U(0, 1) and that clip as x_alt; the others lam 0."""
    ok = [sc is not None and e.other is not None for sc, e in zip(described, entries)]
    pick = torch.rand(len(entries), generator=gen) < share
    lam = torch.rand(len(entries), generator=gen)
    alt_mix = torch.where(torch.tensor(ok) & pick, lam, torch.zeros_like(lam))
    return torch.stack([e.other if o else e.latent for o, e in zip(ok, entries)]), alt_mix


def flow_loss(dit: WanTransformer, x0: torch.Tensor, context: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
              *, shift: float, cover: torch.Tensor | None = None, x_alt: torch.Tensor | None = None,
              alt_mix: torch.Tensor | None = None, image_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Flow-matching MSE on a batch of normalised latents x0 [B, C, T', h, w] under the prompts' encoding `context`
    [B, L, text_dim]; `cover` [B, T', h, w] (object coverage) weights latent pixels by 1 + cfg.object_weight * cover,
    so the small objects the prompt names are not drowned by the background. Shape swap: with x_alt [B, ...] and
    alt_mix [B] (lam, 0 = plain row), the rows whose sigma is at least cfg.shape_swap_min_sigma see
    x_in = x0 + lam * (x_alt - x0) noised, and the target is the velocity that still lands on x0 from there:
    (xs - x0) / sigma. Image-to-video rows (`image_rows` [B] bool): the official masking, the first latent frame
    clean (x0), timestep 0 on its tokens (wan_core.i2v.token_timesteps, as inference), and no loss on it."""
    b = x0.shape[0]
    s = shift_sigma(torch.rand(b, generator=gen), shift)  # [B] sigma, the inference distribution of timesteps
    s = s.clamp(0.0, 0.999)
    noise = torch.randn(x0.shape, generator=gen)
    sb = s.view(b, 1, 1, 1, 1)
    x_in = x0
    if x_alt is not None and alt_mix is not None:
        lam = torch.where(s >= cfg.shape_swap_min_sigma, alt_mix, torch.zeros_like(alt_mix)).view(b, 1, 1, 1, 1)
        x_in = x0 + lam * (x_alt - x0)
    xs = (1 - sb) * x_in + sb * noise
    target = noise - x0  # (xs - x0) / sigma, the velocity that lands on x0
    if x_in is not x0:
        target = target + (1 - sb) / sb.clamp_min(1e-3) * (x_in - x0)
    t = sigma_to_timestep(s)
    frame_w = torch.ones(b, x0.shape[2])  # [B, T'] loss weight of each latent frame
    if image_rows is not None:
        first = torch.zeros(1, 1, x0.shape[2], 1, 1, dtype=torch.bool)
        first[:, :, 0] = True
        xs = torch.where(first & image_rows.view(b, 1, 1, 1, 1), x0, xs)
        pf, ph, pw = dit.cfg.patch_size
        grid = (x0.shape[2] // pf, x0.shape[3] // ph, x0.shape[4] // pw)
        t = torch.where(image_rows[:, None], token_timesteps(t, grid, 1), t[:, None].to(t.dtype))  # [B, L]
        frame_w[image_rows, 0] = 0.0
    with compact_text(dit, context.shape[1]):
        v = dit(xs, t, context)
    err = (v - target).pow(2).mean(dim=1)  # [B, T', h, w]
    weight = frame_w.view(b, -1, 1, 1).to(err)
    if cover is not None:
        weight = weight * (1 + cfg.object_weight * cover.to(err))
    if cover is None and image_rows is None:
        return err.mean()
    weight = weight.expand_as(err)
    return (weight * err).sum() / weight.sum()


def _recent(values: list[float], n: int = 25) -> float:
    """Mean of the last n values (0 if none): the training log's running figure."""
    tail = values[-n:]
    return sum(tail) / max(1, len(tail))


def train_dit(cfg: TrainConfig, pools: dict[str, list[CacheEntry]], tokenizer: SpieceTokenizer,
              minutes: float | None = None, *, plan: DitRound, resume: tuple | None = None, on_step=None):
    """DiT + umT5 jointly for one round (`plan`, seeded by plan.index) -> (dit, text_model, record); `resume` =
    (dit, text_model) continues those modules (trained in place), else fresh ones are built. The shape swap needs
    the other-shape latents in the cache (cache_latents(..., swap_shapes=True)).

    on_step(step, dit, text_model), if given, is called after every optimizer step (e.g. to keep weight averages)."""
    if plan.crop_share > 0 and (cfg.frame_crop_frames < 1 or cfg.frame_crop_batch < 1):
        raise ValueError(f"frame crop on (share {plan.crop_share}) with frame_crop_frames={cfg.frame_crop_frames} "
                         f"and frame_crop_batch={cfg.frame_crop_batch}: both must be at least 1 (1 frame = the "
                         "clip's first frame alone), or set the share to 0")
    if plan.swap_share > 0 and not any(e.other is not None for pool in pools.values() for e in pool):
        raise ValueError(f"shape swap on (share {plan.swap_share}) but no cache entry holds a clip in another shape: "
                         "build the cache with cache_latents(..., swap_shapes=True), or set the share to 0")
    torch.manual_seed(cfg.seed + 1 + plan.index)
    dit = resume[0].train() if resume else WanTransformer(cfg.dit).train()
    text_model = resume[1].train() if resume else build_text_encoder(cfg.t5, tokenizer.vocab_size).train()
    heads = AttributeHeads(text_model.config.d_model)
    params = list(dit.parameters()) + list(text_model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=plan.lr, betas=(0.9, 0.99), weight_decay=0.01)
    rng = random.Random(f"dit:{cfg.seed}:{plan.index}")
    gen = torch.Generator().manual_seed(cfg.seed + 1 + 7 * plan.index)
    aspects = [a for a in sorted(pools) if pools[a]]
    clock, step, history = Clock(plan.steps, minutes, "dit", replan=cfg.dit_replan_steps), 0, []
    ema = WeightEMA([dit, text_model], plan.ema_decay) if plan.ema_decay > 0 else None
    while not clock.done(step) and not 0 < cfg.dit_stop_steps <= step:
        for g in opt.param_groups:
            g["lr"] = plan.lr * lr_factor(step, clock.plan(step), cfg.warmup)
        pool = pools[aspects[step % len(aspects)]]
        crop = plan.crop_share > 0 and rng.random() < plan.crop_share  # no draw when off
        entries = [pool[rng.randrange(len(pool))] for _ in range(cfg.frame_crop_batch if crop else cfg.dit_batch)]
        if crop:
            entries = [first_frames(e, cfg.frame_crop_frames) for e in entries]
        x0 = torch.stack([e.latent for e in entries])  # [B, C, T', h, w]
        prompts, described = zip(*[training_prompt(e.scene, rng, cfg) for e in entries])
        cover = torch.stack([e.cover for e in entries])
        x_alt, alt_mix = swap_inputs(entries, described, plan.swap_share, gen) if plan.swap_share > 0 else (None, None)
        image_rows = torch.rand(len(entries), generator=gen) < plan.i2v_share if plan.i2v_share > 0 else None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.dit_bf16):
            context, mask = encode_text_train(text_model, tokenizer, list(prompts), with_mask=True)
            flow = flow_loss(dit, x0, context, cfg, gen, shift=plan.shift, cover=cover, x_alt=x_alt, alt_mix=alt_mix,
                             image_rows=image_rows)
            aux = heads.loss(context, mask, list(described))
            loss = flow.float() + cfg.text_aux_weight * aux.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            ema.update([dit, text_model], step)
        if on_step is not None:
            on_step(step, dit, text_model)
        history.append(round(flow.item(), 5))
        if step % 25 == 0:
            log.info("dit step %d  flow loss %.4f (mean of last 25: %.4f)  text aux %.4f  %.0f s", step, history[-1],
                     _recent(history), aux.item(), clock.elapsed)
        step += 1
    info = {"steps": step, "scheduled_steps": clock.steps, "seconds": round(clock.elapsed, 1), "last": history[-50:]}
    if ema is not None:
        ema.copy_to([dit, text_model])
        info["ema_decay"] = plan.ema_decay
    info["threads"] = torch.get_num_threads()
    return dit.eval(), text_model.eval(), info


def resume_dit(out: Path):
    """(dit, text_model, tokenizer) from the files in `out`, copied into fresh trainable fp32 modules."""
    from ...loading import load_dit, load_text_encoder

    loaded = load_dit(out / MODEL_FILES["dit"], dtype=torch.float32)
    dit = WanTransformer(loaded.cfg)
    dit.load_state_dict(loaded.state_dict())
    te = load_text_encoder(out / MODEL_FILES["text_encoder"], dtype=torch.float32)
    text_model = build_text_encoder(spec_of(te.model), te.model.config.vocab_size)
    text_model.load_state_dict(te.model.state_dict())
    return dit, text_model, te.tokenizer
