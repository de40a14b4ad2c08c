"""The demo VAE's training phases: crops of the synthetic world, the losses, and `train_vae`.

Phase 0: short clips (cheap, learns appearance); phase 1: whole clips, so chunks late in a video (whose causal
receptive field no longer reaches the zero padding at the start) are trained too; phase 2: decoder only (the encoder,
hence the DiT's latents, stay fixed), for sharper edges; phase 3 (`--stage vae3`, after the first DiT round):
decoder only with a temporal loss, against the flicker where one latent frame hands over to the next; phase 4
(`--stage vae_i2v`, for image-to-video): phase 3's loss plus whole first frames decoded from their exact latents,
since an image-to-video output's first frame is the decoder's reading of the start image's latent alone.
The loss is L1 + MSE (objects weighted up), a moment term that pulls the per-channel statistics of normalise(mu) to
mean 0 / std 1, i.e. the raw latents to the official Wan2.2 latent mean/std, so the standard
`wan_core.latent_format` normalisation applies unchanged, and the mask code (`wan_core.demo.mask_code`).
"""
from __future__ import annotations

import logging
import random
from dataclasses import replace

import torch
from einops import rearrange

from ...latent_format import WAN22_MEAN, WAN22_STD
from ...vae import WanVAE
from ..evaluate import row_foreground
from ..mask_code import blur_rest, check_channels, mask_loss
from ..world import SIZES, coverage, render, sample_scene
from .clock import Clock, lr_factor
from .config import TrainConfig

log = logging.getLogger(__name__)

PHASES = (0, 1, 2, 3, 4)


def vae_crops(cfg: TrainConfig, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """(video [B, 3, vae_frames, crop, crop] in -1..1, the objects' coverage of the same crops [B, 1, vae_frames,
    crop, crop] in 0..1): random windows of training clips, cropped around an object."""
    out = []
    for _ in range(cfg.vae_batch):
        scene = sample_scene(rng.randrange(1 << 30))
        frames = torch.cat([render(scene), coverage(scene)[..., None]], dim=-1)  # cropped together, split below
        t0 = rng.randrange(scene.frames - cfg.vae_frames + 1)
        clip = frames[t0:t0 + cfg.vae_frames]
        c = cfg.vae_crop
        o = scene.objects[rng.randrange(len(scene.objects))]
        cx = o.x * scene.width + rng.uniform(-0.6, 0.6) * c
        cy = o.y * scene.height + rng.uniform(-0.6, 0.6) * c
        x0 = int(min(max(cx - c / 2, 0), scene.width - c))
        y0 = int(min(max(cy - c / 2, 0), scene.height - c))
        out.append(clip[:, y0:y0 + c, x0:x0 + c])
    video = rearrange(torch.stack(out), "b t h w c -> b c t h w")  # [B, 3 + 1, T, c, c]
    return video[:, :3] * 2 - 1, video[:, 3:]


def first_frame_batch(cfg: TrainConfig, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B, 3, 1, H, W] in -1..1, object coverage [B, 1, 1, H, W]): whole frame 0 of training scenes (one
    aspect per batch, rounded to 8 bits as a PNG start image holds it), the inputs of image-to-video."""
    aspect = rng.choice(sorted(SIZES))
    out = []
    for _ in range(cfg.vae_first_frame_batch):
        scene = sample_scene(rng.randrange(1 << 30), aspect=aspect, frames=1)
        image = (render(scene)[0] * 255).round() / 255
        out.append(torch.cat([image, coverage(scene)[0][..., None]], dim=-1))
    frames = rearrange(torch.stack(out), "b h w c -> b c 1 h w")
    return frames[:, :3] * 2 - 1, frames[:, 3:]


def first_frame_loss(vae: WanVAE, images: torch.Tensor) -> torch.Tensor:
    """Weighted L1 + MSE of the decoder's first frame from the exact (noise-free) latent of the image, as
    image-to-video decodes it (objects weighted x5, as `vae_losses`)."""
    with torch.no_grad():
        mu = vae_encode_train(vae, images)
    err = vae_decode_train(vae, mu) - images
    frames = rearrange(images, "b c t h w -> (b t) h w c")
    weight = 1 + 4 * rearrange(row_foreground((frames + 1) / 2), "(b t) h w -> b 1 t h w", b=images.shape[0]).float()
    return (weight * (err.abs() + err.pow(2))).mean() / weight.mean()


def _latent_stats(like: torch.Tensor):
    shape = (1, len(WAN22_MEAN), 1, 1, 1)
    return (torch.tensor(WAN22_MEAN).view(shape).to(like), torch.tensor(WAN22_STD).view(shape).to(like))


def vae_encode_train(vae: WanVAE, video: torch.Tensor) -> torch.Tensor:
    """`WanVAE.encode` with autograd: [B, 3, 1 + 4k, H, W] in -1..1 -> raw mu [B, z, 1 + k, H/16, W/16]."""
    p, st = vae.cfg.patch_size, vae.cfg.stride[0]
    x = rearrange(video, "b c f (h q) (w r) -> b (c r q) f h w", q=p, r=p)
    cache: dict = {}
    mus = [vae.conv1(vae.encoder(x[:, :, :1] if s == 0 else x[:, :, s - st + 1:s + 1], cache))[:, :vae.cfg.z_dim]
           for s in range(0, x.shape[2], st)]
    return torch.cat(mus, dim=2)


def vae_decode_train(vae: WanVAE, z: torch.Tensor) -> torch.Tensor:
    """`WanVAE.decode` with autograd (no clamp): raw z [B, z, T', h, w] -> [B, 3, 1 + 4 (T' - 1), 16 h, 16 w]."""
    p = vae.cfg.patch_size
    cache: dict = {}
    ys = [vae.decoder(vae.conv2(z[:, :, i:i + 1]), cache, first=i == 0) for i in range(z.shape[2])]
    return rearrange(torch.cat(ys, dim=2), "b (c r q) f h w -> b c f (h q) (w r)", q=p, r=p)


def vae_losses(vae: WanVAE, video: torch.Tensor, alpha: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
               temporal_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Reconstruction (objects weighted x5) + moment matching of normalise(mu) to N(0, 1) per channel + the mask
    code (`alpha` = the objects' coverage of `video`: a mask term trains the code, and a share of the decoder's
    inputs has the other channels blurred), and with temporal_weight > 0 a temporal term: the change of the
    reconstruction error from one frame to the next. The causal decoder makes each latent frame's four pixel frames
    in one piece, so its error jumps where one latent frame hands over to the next (measured on an earlier VAE: the
    warping error of those frame pairs is 2-4x that of the others); an error that stays the same from frame to
    frame is not seen as flicker."""
    mu = vae_encode_train(vae, video)
    mean, std = _latent_stats(mu)
    z = mu + cfg.vae_latent_noise * std * torch.randn(mu.shape, generator=gen).to(mu)
    z = blur_rest(z, cfg.vae_mask_channels, cfg.vae_mask_blur_share, gen)
    rec = vae_decode_train(vae, z)
    frames = rearrange(video, "b c t h w -> (b t) h w c")
    weight = 1 + 4 * rearrange(row_foreground((frames + 1) / 2), "(b t) h w -> b 1 t h w", b=video.shape[0]).float()
    err = rec - video
    recon = (weight * (err.abs() + err.pow(2))).mean() / weight.mean()
    n = (mu - mean) / std  # model-space latent [B, z, T', h, w]
    m = n.mean(dim=(0, 2, 3, 4))
    s = n.std(dim=(0, 2, 3, 4))
    moment = m.pow(2).mean() + (s - 1).pow(2).mean()
    out = {"loss": recon + cfg.vae_moment_weight * moment, "recon": recon, "moment": moment}
    out["mask"] = mask_loss(n, alpha, cfg.vae_mask_channels)
    out["loss"] = out["loss"] + cfg.vae_mask_weight * out["mask"]
    if temporal_weight > 0 and err.shape[2] > 1:
        step_err = err[:, :, 1:] - err[:, :, :-1]  # [B, 3, T - 1, H, W]
        pair_w = torch.maximum(weight[:, :, 1:], weight[:, :, :-1])
        out["temporal"] = (pair_w * (step_err.abs() + step_err.pow(2))).mean() / pair_w.mean()
        out["loss"] = out["loss"] + temporal_weight * out["temporal"]
    return out


def train_vae(cfg: TrainConfig, minutes: float | None = None, *, vae: WanVAE | None = None,
              phases: tuple[int, ...] = PHASES) -> tuple[WanVAE, dict]:
    """Run `phases` (see the module docstring) on `vae` (a fresh one if None) -> (vae, {"phase<k>": record}).
    Phases 2-4 leave the encoder, hence the latents, unchanged, so they can run after the DiT is trained.
    `minutes` caps the phases together, shared in proportion to their step counts."""
    torch.manual_seed(cfg.seed)
    check_channels(cfg.vae_mask_channels, cfg.vae.z_dim)
    vae = (vae or WanVAE(cfg.vae)).train()
    plan = {0: (cfg.vae_steps, cfg.vae_frames), 1: (cfg.vae_long_steps, cfg.vae_long_frames),
            2: (cfg.vae_decoder_steps, cfg.vae_long_frames), 3: (cfg.vae_temporal_steps, cfg.vae_long_frames),
            4: (cfg.vae_i2v_steps, cfg.vae_long_frames)}
    total = sum(plan[p][0] for p in phases)
    info = {}
    for phase in phases:
        steps, frames = plan[phase]
        pcfg = replace(cfg, vae_frames=frames)
        frozen = (vae.encoder, vae.conv1) if phase >= 2 else ()  # phases 2-3 train the decoder, latents unchanged
        for module in (vae.encoder, vae.conv1):
            module.requires_grad_(module not in frozen)
        params = [p for p in vae.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
        rng, gen = random.Random(f"vae:{cfg.seed}:{phase}"), torch.Generator().manual_seed(cfg.seed * 10 + phase)
        cap = minutes and minutes * steps / max(1, total)
        clock, step, history = Clock(steps, cap, f"vae phase {phase}"), 0, []
        while not clock.done(step):
            for g in opt.param_groups:
                g["lr"] = cfg.vae_lr * {0: 1.0, 4: cfg.vae_i2v_lr_scale}.get(phase, 0.5) * lr_factor(step, clock.plan(step), cfg.warmup)
            video, alpha = vae_crops(pcfg, rng)
            losses = vae_losses(vae, video, alpha, pcfg, gen,
                                temporal_weight=cfg.vae_temporal_weight if phase >= 3 else 0.0)
            if phase == 4:
                losses["first"] = first_frame_loss(vae, first_frame_batch(cfg, rng)[0])
                losses["loss"] = losses["loss"] + cfg.vae_first_frame_weight * losses["first"]
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            history.append({k: round(v.item(), 5) for k, v in losses.items()})
            if step % 10 == 0:
                log.info("vae phase %d step %d  %s  %.0f s", phase, step, history[-1], clock.elapsed)
            step += 1
        info[f"phase{phase}"] = {"frames": frames, "steps": step, "scheduled_steps": clock.steps,
                                 "seconds": round(clock.elapsed, 1), "last": history[-10:],
                                 "threads": torch.get_num_threads()}
    return vae.eval(), info
