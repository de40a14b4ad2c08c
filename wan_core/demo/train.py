"""Train the embedded demo model from scratch on the synthetic world (seeded; CPU; only wan_core's own classes).

    # the shipped files, in this order (times in the README; 89.5 min in all):
    python -m wan_core.demo.train --out models --stage vae --budget-minutes 26 --set vae_temporal_steps=0 \
        --set vae_mask_channels=16
    python -m wan_core.demo.train --out models --stage dit --budget-minutes 41 --threads 2 --dit-steps 12000 \
        --set dit_bf16=true --set vae_mask_channels=16
    python -m wan_core.demo.train --out models --stage vae3 --budget-minutes 8.5 --threads 2 --set vae_mask_channels=16
    python -m wan_core.demo.train --out models --stage dit2 --budget-minutes 28 --threads 2 --dit-steps 9000 \
        --set dit_bf16=true --set shape_swap_share_round2=1.0 --set frame_crop_share_round2=0.5 \
        --set dit_ema_round2=0.999 --set vae_mask_channels=16

Stages (each resumable from the files of the previous one in --out):
1. tokenizer: sentencepiece (unigram, character_coverage 1.0) on EN+ZH captions, stored as `spiece_model`.
2. vae: a tiny Wan2.2-family VAE (z_dim 48) on 9-frame 96 px crops, then whole clips, then the decoder alone:
   L1 + MSE (objects weighted up) + a moment term that
   pulls the per-channel statistics of normalise(mu) to mean 0 / std 1, i.e. the raw latents to the official Wan2.2
   latent mean/std, so the standard `wan_core.latent_format` normalisation applies unchanged. A last decoder-only
   phase adds a temporal term (the frame-to-frame change of the reconstruction error) against flicker.
3. dit: encode N clips once (latent cache), then the DiT and a tiny umT5 encoder jointly with flow matching:
   x_s = (1 - s) x0 + s noise, target v = noise - x0, s = shift_sigma(u, shift), u ~ U(0, 1), t = trunc(1000 s),
   exactly the sigma/timestep convention of inference; latent pixels an object covers weigh 1 + object_weight.
   Captions drop to "" or the default negative prompt (CFG). A training-only read-out of the scene's attributes
   from the pooled text encoding (`AttributeHeads`, weight text_aux_weight) teaches the encoder both languages fast.
Step counts are fixed by the config; --budget-minutes only caps them (the steps done and the steps the learning-rate
schedule was planned over are written into each file's metadata; a DiT round re-planned by its time cap is replayed
without a budget by the same --dit-steps plus --set dit_replan_steps=SCHEDULED, and --set dit_stop_steps=DONE if
the cap also stopped it).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from ..config import WanConfig
from ..latent_format import WAN22_MEAN, WAN22_STD, normalize_latents
from ..model import WanTransformer
from ..prompts import DEFAULT_NEGATIVE_PROMPT, clean_prompt
from ..schedules import shift_sigma, sigma_to_timestep
from ..tokenizer import SpieceTokenizer, train_tokenizer
from ..vae import VAEConfig, WanVAE
from .captions import LANGS, caption, corpus
from .compact_text import compact_text
from .ema import WeightEMA
from .evaluate import foreground, row_foreground
from .export import MODEL_FILES, load_stage, save_dit, save_text_encoder, save_vae
from .mask_code import blur_rest, check_channels, chunk_slices, mask_loss
from .world import (BACKGROUND_COLOURS, HELD_OUT, MOTIONS, OBJECT_COLOURS, SHAPES, SIZES, coverage, render,
                    sample_scene, shape_difference)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class T5Spec:
    """Tiny umT5 encoder (transformers UMT5Config fields)."""

    d_model: int = 128
    d_kv: int = 32
    num_heads: int = 4
    d_ff: int = 256
    num_layers: int = 2
    buckets: int = 32


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (with the seed)."""

    seed: int = 0
    vocab_size: int = 600
    tokenizer_sentences: int = 6000
    vae: VAEConfig = VAEConfig(base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=(1, 2, 2), num_res_blocks=1,
                               temporal_downsample=(True, True), patch_size=4)
    vae_steps: int = 1500
    vae_batch: int = 2
    vae_frames: int = 9  # 1 + 4 + 4: the first chunk, and cached chunks that follow a full chunk
    vae_crop: int = 96  # pixels; random crops near an object (the networks are convolutional)
    vae_long_steps: int = 500  # phase 1: whole 25-frame clips
    vae_long_frames: int = 25
    vae_decoder_steps: int = 1200  # phase 2: decoder only
    vae_temporal_steps: int = 900  # phase 3: decoder only, with the temporal loss below
    vae_temporal_weight: float = 2.0  # phase 3 weight of the frame-to-frame change of the reconstruction error
    vae_lr: float = 3e-3
    vae_latent_noise: float = 0.1  # decoder sees mu + this * latent_std * N(0, 1)
    vae_moment_weight: float = 0.1
    # Mask code (wan_core.demo.mask_code): the first vae_mask_channels latent channels learn the objects' coverage
    # of their sub-blocks (16: 4 px sub-blocks), the same for every colour, weight vae_mask_weight; a share
    # vae_mask_blur_share of the decoder's inputs has the other channels blurred, so the decoder takes the outline
    # from the code. 0 = off; the shipped VAE uses 16 (shapes rose from near chance to about 90%;
    # docs/demo_experiments.md).
    vae_mask_channels: int = 0
    vae_mask_weight: float = 1.0
    vae_mask_blur_share: float = 0.5
    t5: T5Spec = T5Spec()
    # dim must be at least the 192 values of a 1x2x2 patch of 48 channels: with dim 128 the patch embedding and the
    # head squeeze each token through 128 numbers, so a third of the noise can never be predicted (measured: the
    # dim-128 model left 1/3 of the noise variance at sigma 0.1-0.2, which showed as grain, flicker and a noisy
    # first frame). Head dim stays 128 (infer_config assumes it): 2 heads.
    dit: WanConfig = WanConfig(dim=256, ffn_dim=768, num_heads=2, num_layers=4, in_dim=48, out_dim=48, text_dim=128)
    dit_file_dtype: str = "bfloat16"  # the DiT file's storage dtype (fp32 would be 17.7 MB; the pack ships <= 15 MB)
    clips: int = 4000  # latent cache size
    dit_steps: int = 24000
    # Replaying a time-capped DiT round (its file records "steps" done and the "scheduled_steps" its clock planned at
    # step 100, _Clock.ESTIMATE_AT): dit_replan_steps > 0 switches the schedule to that count at step 100, as the
    # time estimate did, and dit_stop_steps > 0 stops after that many steps.
    dit_replan_steps: int = 0
    dit_stop_steps: int = 0
    dit_batch: int = 8
    dit_lr: float = 1e-3
    # bf16 autocast for the DiT + umT5 forward passes (weights and optimizer stay fp32; losses are computed in
    # fp32). On this machine's CPU (AVX512-BF16) a DiT training step took 0.24-0.29 s instead of 0.31-0.38 s in the
    # shipped runs, so a time slot holds about 1.3x the steps. Off reproduces the fp32 runs.
    dit_bf16: bool = False
    shift: float = 5.0  # training sigma shift: more steps at high noise, where the prompt decides the layout (the
    # demo samples with shift 3, DEMO_DEFAULTS; both shifts cover all noise levels, they only weight them differently)
    shift_round2: float = 6.0  # an optional second DiT round (--stage dit2) trains more at high noise
    object_weight: float = 3.0  # flow-loss weight of latent pixels covered by an object: 1 + this * coverage
    drop_caption: float = 0.1  # probability of "" / the default negative prompt (the CFG branch)
    text_aux_weight: float = 0.3  # auxiliary loss: the scene's attributes read back from the pooled text encoding
    # Attribute contrast (contrast_loss): up to contrast_rows single-object rows of a batch are run again with one
    # attribute of the caption swapped (shape with probability contrast_shape, else colour or motion); the
    # object-pixel flow loss under the wrong caption must exceed the true one by contrast_margin in log terms.
    # 0 weight = off (round 1); --stage dit2 uses contrast_weight_round2.
    contrast_weight: float = 0.0
    contrast_weight_round2: float = 0.0
    contrast_rows: int = 4
    contrast_margin: float = 0.1
    contrast_shape: float = 0.5
    # Shape emphasis: latent pixels where the shapes differ on the object's path (world.shape_difference, 0..1) weigh
    # shape_weight more in the flow loss; and a share of each batch's rows draws its sigma with low_shift instead
    # of the round's shift (more training where the noisy latent still shows an outline that the DiT must keep).
    # 0 = off (both shipped rounds); --stage dit2 uses the *_round2 values.
    shape_weight: float = 0.0
    shape_weight_round2: float = 0.0
    low_shift_share: float = 0.0
    low_shift_share_round2: float = 0.0
    low_shift: float = 1.0
    # Shape probe (ShapeProbe): a training-only linear read-out of the object's shape from every object token of a
    # middle DiT block, weight shape_probe_weight (0 = off; --stage dit2 uses shape_probe_weight_round2). It pulls
    # the caption's shape word into the tokens where the object is, half-way through the DiT, so the blocks after it
    # can draw it. Tried in a second-round pilot: the tokens learned the shape, the videos did not
    # (docs/demo_experiments.md).
    shape_probe_weight: float = 0.0
    shape_probe_weight_round2: float = 0.0
    # Shape swap: the DiT learned to copy a shape from the noisy latent rather than read it from the caption
    # (re-noised to sigma 0.67, a clip drawn with the wrong shape came out with that shape in 13 of 24 held-out
    # scenes, with the caption's in 8), so from pure noise, where no shape is there to copy, it draws a round blob.
    # A share of the captioned single-object rows see a latent blended towards the same clip drawn with another
    # shape, x_in = x0 + lam * (x_alt - x0), lam ~ U(0, 1), at sigma >= shape_swap_min_sigma, while the target still
    # lands on x0: the caption, not the noisy latent, decides the shape. 0 = off; --stage dit2 uses *_round2.
    # The shipped second round uses share 1 (before the mask code: 7 latent / 10 caption after it, shapes still near
    # chance; docs/demo_experiments.md).
    shape_swap_share: float = 0.0
    shape_swap_share_round2: float = 0.0
    shape_swap_min_sigma: float = 0.4
    # Blob swap: a share of the swapped rows blend towards the mean of the clip's latents in all three shapes
    # instead of one other shape. That mean is what a DiT unsure of the shape predicts at high sigma (the MSE
    # optimum over the shapes), and later steps then copy it: a round blob. These rows teach the DiT to turn that
    # blob into the caption's shape. Needs the third shape's latent in the cache (encoded only when > 0).
    # Tried at 0.5 in a second round with the shipped swap: one more right shape per language, worse elsewhere
    # (docs/demo_experiments.md).
    shape_swap_blob: float = 0.0
    shape_swap_blob_round2: float = 0.0
    # Own step (exposure bias): at inference the DiT sees latents made by its own earlier steps (blurred where it was
    # unsure: round blobs, faded objects), in training only true clips noised. A share own_step_share of the rows at
    # sigma >= shape_swap_min_sigma instead see the result of one Euler step of the DiT itself (no gradient), taken
    # with its caption from a higher sigma drawn in U(sigma, 1) with the same noise, and learn the velocity that
    # lands on the true clip from there. 0 = off; --stage dit2 uses own_step_share_round2. Tried at 0.5 in a second
    # round with the shipped swap: no better than without (docs/demo_experiments.md).
    own_step_share: float = 0.0
    own_step_share_round2: float = 0.0
    # Shape direction: the DiT's x0 prediction from pure noise is a round blob (sigma 0.99, 11 of 12 held-out English
    # scenes, though the mean of the true latents over the world's jitter keeps 11 of 12 shapes): the shape is a small
    # direction d = x0 - x_other_shape in a large residual, so the plain MSE gives it a tiny share of the gradient.
    # shape_direction_loss adds the squared residual along d (per element, like one more latent value), weighted by
    # this: W multiplies the flow loss's gradient along d by about 1 + W. Needs the swap cache (other shapes).
    # 0 = off; --stage dit2 uses the _round2 value. Tried at 20 and 3 in a second round with the shipped swap: the
    # DiT read shape words 3-5x (2.5-4x) more strongly, but its x0 error grew 2x (1.5x) and the videos got worse
    # (shape 29-46%, English colour and motion 71%; docs/demo_experiments.md).
    shape_direction_weight: float = 0.0
    shape_direction_weight_round2: float = 0.0
    # Frame crop (cheaper shape steps): a share of the steps train on the first frame_crop_frames latent frames of the
    # cached clips (the VAE is causal, so these are exactly the latents of the clip's first 1 + 4 (k - 1) frames)
    # with frame_crop_batch rows instead of dit_batch. A one-frame row has a seventh of a 16:9 clip's tokens; measured
    # here (2 threads, bf16, forward + backward + AdamW): 8 clips 0.37 s, 32 first frames 0.41 s, 48 first frames
    # 0.81 s. So a crop step shows 4x the rows (each with a shape) for about the time of a clip step. 0 = off;
    # --stage dit2 uses frame_crop_share_round2. The shipped second round uses 0.5 (before the mask code colour, motion
    # and EN/ZH agreement rose with it, shapes did not; docs/demo_experiments.md).
    frame_crop_share: float = 0.0
    frame_crop_share_round2: float = 0.0
    frame_crop_frames: int = 1
    frame_crop_batch: int = 32
    # Weight average: the DiT and umT5 files hold an exponential moving average of the round's weights with this
    # decay (WeightEMA; the decay ramps up over the first steps) instead of its last weights. 0 = off (the last
    # weights; the shipped first round); --stage dit2 uses dit_ema_round2 (0.999 in the shipped second round; before the
    # mask code EN/ZH agreement rose with it, shapes did not; docs/demo_experiments.md).
    dit_ema: float = 0.0
    dit_ema_round2: float = 0.0
    warmup: int = 50

    def per_round(self, name: str, second: bool):
        """The value of field `name` for a DiT round: `name`_round2 in the second round (--stage dit2), else `name`."""
        return getattr(self, f"{name}_round2" if second else name)

    @classmethod
    def smoke(cls) -> "TrainConfig":
        """A few seconds per stage, for tests."""
        return cls(vocab_size=300, tokenizer_sentences=800, vae_steps=4, vae_long_steps=2, vae_long_frames=9,
                   vae_decoder_steps=2, vae_temporal_steps=2,
                   vae_crop=32, clips=4, dit_steps=4,
                   dit_batch=2, vae=replace(cls.vae, base_dim=8, decoder_base_dim=8),
                   t5=T5Spec(d_model=32, d_kv=16, num_heads=2, d_ff=64, num_layers=1),
                   dit=WanConfig(dim=128, ffn_dim=128, num_heads=1, num_layers=1, in_dim=48, out_dim=48, text_dim=32))


def _lr(step: int, total: int, warmup: int) -> float:
    """Linear warmup then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


class _Clock:
    """Stops a stage at its step count or its time cap, whichever comes first."""

    ESTIMATE_AT = 100

    def __init__(self, steps: int, minutes: float | None, name: str, replan: int = 0):
        self.steps, self.cap, self.name, self.t0 = steps, (minutes or 0) * 60 or None, name, time.perf_counter()
        self.replan = replan

    def plan(self, step: int) -> int:
        """Steps to schedule the learning rate over: the configured count, or fewer if the time cap allows fewer
        (estimated from the speed so far, once, at step ESTIMATE_AT; a busy machine then under-plans, so pass the
        step count explicitly, e.g. --dit-steps, when other work shares the cores)."""
        if step == self.ESTIMATE_AT and self.replan > 0:  # replaying a run whose time cap re-planned it here
            self.steps = self.replan
        elif step == self.ESTIMATE_AT and self.cap is not None:
            rate = self.elapsed / step
            fit = int(step + (self.cap - self.elapsed) / rate * 0.97)
            if fit < self.steps:
                log.warning("%s: %.2f s/step; scheduling %d steps instead of %d to fit the time cap",
                            self.name, rate, fit, self.steps)
                self.steps = fit
        return self.steps

    def done(self, step: int) -> bool:
        if step >= self.steps:
            return True
        if self.cap is not None and time.perf_counter() - self.t0 > self.cap:
            log.warning("%s: time cap reached after %d of %d steps", self.name, step, self.steps)
            return True
        return False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


# --- tokenizer ----------------------------------------------------------------------------------------------------------
def train_demo_tokenizer(cfg: TrainConfig) -> SpieceTokenizer:
    """Sentencepiece on cleaned EN+ZH captions (+ the default negative prompt, so its characters are known)."""
    sentences = [clean_prompt(c) for c in corpus(cfg.tokenizer_sentences, seed=cfg.seed)]
    sentences += [clean_prompt(DEFAULT_NEGATIVE_PROMPT)] * 20
    return SpieceTokenizer.from_bytes(train_tokenizer(sentences, vocab_size=cfg.vocab_size, input_sentence_size=0,
                                                      shuffle_input_sentence=False, num_threads=1))


# --- VAE ----------------------------------------------------------------------------------------------------------------
def _vae_batch(cfg: TrainConfig, rng: random.Random) -> torch.Tensor:
    """[B, 3, vae_frames, crop, crop] in -1..1: random windows of training clips, cropped around an object."""
    return _vae_crops(cfg, rng)[0]


def _vae_crops(cfg: TrainConfig, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`_vae_batch` and, with the mask code on, the objects' coverage of the same crops [B, 1, vae_frames, crop,
    crop] (0..1; None when off). The same random draws either way."""
    out = []
    for _ in range(cfg.vae_batch):
        scene = sample_scene(rng.randrange(1 << 30))
        frames = render(scene)  # [T, H, W, 3]
        if cfg.vae_mask_channels:
            frames = torch.cat([frames, coverage(scene)[..., None]], dim=-1)  # cropped together, split below
        t0 = rng.randrange(scene.frames - cfg.vae_frames + 1)
        clip = frames[t0:t0 + cfg.vae_frames]
        c = cfg.vae_crop
        o = scene.objects[rng.randrange(len(scene.objects))]
        cx = o.x * scene.width + rng.uniform(-0.6, 0.6) * c
        cy = o.y * scene.height + rng.uniform(-0.6, 0.6) * c
        x0 = int(min(max(cx - c / 2, 0), scene.width - c))
        y0 = int(min(max(cy - c / 2, 0), scene.height - c))
        out.append(clip[:, y0:y0 + c, x0:x0 + c])
    video = rearrange(torch.stack(out), "b t h w c -> b c t h w")  # [B, 3 (+ 1), T, c, c]
    return video[:, :3] * 2 - 1, (video[:, 3:] if cfg.vae_mask_channels else None)


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


def vae_losses(vae: WanVAE, video: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
               temporal_weight: float = 0.0, alpha: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Reconstruction (objects weighted x5) + moment matching of normalise(mu) to N(0, 1) per channel, and with
    temporal_weight > 0 a temporal term: the change of the reconstruction error from one frame to the next. The
    causal decoder makes each latent frame's four pixel frames in one piece, so its error jumps where one latent
    frame hands over to the next (measured on an earlier VAE: the warping error of those frame pairs is 2-4x that
    of the others); an error that stays the same from frame to frame is not seen as flicker. With the mask code on
    (cfg.vae_mask_channels; `alpha` = the objects' coverage of `video`) a mask term trains the code and a share of
    the decoder's inputs has the other channels blurred (wan_core.demo.mask_code)."""
    mask_on = cfg.vae_mask_channels > 0
    if mask_on and alpha is None:
        raise ValueError(f"vae_mask_channels={cfg.vae_mask_channels} needs the objects' coverage (alpha) of the "
                         "video; take the batch from _vae_crops")
    mu = vae_encode_train(vae, video)
    mean, std = _latent_stats(mu)
    z = mu + cfg.vae_latent_noise * std * torch.randn(mu.shape, generator=gen).to(mu)
    if mask_on:
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
    if mask_on:
        out["mask"] = mask_loss(n, alpha, cfg.vae_mask_channels)
        out["loss"] = out["loss"] + cfg.vae_mask_weight * out["mask"]
    if temporal_weight > 0 and err.shape[2] > 1:
        step_err = err[:, :, 1:] - err[:, :, :-1]  # [B, 3, T - 1, H, W]
        pair_w = torch.maximum(weight[:, :, 1:], weight[:, :, :-1])
        out["temporal"] = (pair_w * (step_err.abs() + step_err.pow(2))).mean() / pair_w.mean()
        out["loss"] = out["loss"] + temporal_weight * out["temporal"]
    return out


def train_vae(cfg: TrainConfig, minutes: float | None = None, *, vae: WanVAE | None = None,
                        phases: tuple[int, ...] = (0, 1, 2, 3)) -> tuple[WanVAE, dict]:
    """Phase 0: short clips (cheap, learns appearance); phase 1: whole clips, so chunks late in a video (whose causal
    receptive field no longer reaches the zero padding at the start) are trained too; phase 2: decoder only (the
    encoder, hence the DiT's latents, stay fixed), for sharper edges; phase 3: decoder only with the temporal loss
    (vae_losses), against the flicker where one latent frame hands over to the next. `vae` resumes from a saved
    VAE; phases 2 and 3 leave the latents unchanged, so they can run after the DiT is trained."""
    torch.manual_seed(cfg.seed)
    if cfg.vae_mask_channels:
        check_channels(cfg.vae_mask_channels, cfg.vae.z_dim)
    vae = (vae or WanVAE(cfg.vae)).train()
    plan = {0: (cfg.vae_steps, cfg.vae_frames), 1: (cfg.vae_long_steps, cfg.vae_long_frames),
            2: (cfg.vae_decoder_steps, cfg.vae_long_frames), 3: (cfg.vae_temporal_steps, cfg.vae_long_frames)}
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
        clock, step, history = _Clock(steps, cap, f"vae phase {phase}"), 0, []
        while not clock.done(step):
            for g in opt.param_groups:
                g["lr"] = cfg.vae_lr * (1.0 if phase == 0 else 0.5) * _lr(step, clock.plan(step), cfg.warmup)
            video, alpha = _vae_crops(pcfg, rng)
            losses = vae_losses(vae, video, pcfg, gen, temporal_weight=cfg.vae_temporal_weight if phase == 3 else 0.0,
                                alpha=alpha)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            history.append({k: round(v.item(), 5) for k, v in losses.items()})
            if step % 10 == 0:
                log.info("vae phase %d step %d  %s  %.0f s", phase, step, history[-1], clock.elapsed)
            step += 1
        info[f"phase{phase}"] = {"frames": frames, "steps": step, "scheduled_steps": clock.steps,
                                 "seconds": round(clock.elapsed, 1), "last": history[-10:]}
    return vae.eval(), info


# --- DiT + text encoder -------------------------------------------------------------------------------------------------
def build_text_encoder(spec: T5Spec, vocab: int):
    from transformers import UMT5Config, UMT5EncoderModel

    t5 = UMT5Config(vocab_size=vocab, d_model=spec.d_model, d_kv=spec.d_kv, d_ff=spec.d_ff, num_layers=spec.num_layers,
                    num_heads=spec.num_heads, relative_attention_num_buckets=spec.buckets,
                    relative_attention_max_distance=128, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
                    dropout_rate=0.0, is_encoder_decoder=False, use_cache=False)
    t5._attn_implementation = "eager"  # as WanTextEncoder loads it
    return UMT5EncoderModel(t5)


def encode_text_train(model, tokenizer: SpieceTokenizer, prompts: list[str], *, with_mask: bool = False):
    """What `pad_context(WanTextEncoder.encode(prompts))` computes, with autograd: [B, max L_i, d_model], rows past
    each prompt's true length (incl. EOS) are zero. `with_mask` also returns the [B, L] token mask."""
    ids, mask = tokenizer([clean_prompt(p) for p in prompts], max_length=512)  # [B, L] each
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, D]
    hidden = hidden * mask[..., None].to(hidden.dtype)
    return (hidden, mask) if with_mask else hidden


# Attributes the auxiliary text loss reads back: (name, classes); a second object's slots have a "none" class.
_ATTRIBUTES = (("colour", sorted(OBJECT_COLOURS)), ("shape", list(SHAPES)), ("motion", list(MOTIONS)))


class AttributeHeads(torch.nn.Module):
    """Training-only linear read-out of a scene's attributes from the mean-pooled text encoding: each object's
    colour/shape/motion (object 2 may be "none"), the background colour and two-tone. Its loss makes every
    attribute word, English or Chinese, land in the encoding early and in a shared place, which the DiT's
    cross-attention then finds; the heads are not part of the shipped encoder."""

    def __init__(self, d_model: int):
        super().__init__()
        sizes = [len(c) for _, c in _ATTRIBUTES]
        self.heads = torch.nn.ModuleList([torch.nn.Linear(d_model, n) for n in sizes] +
                                         [torch.nn.Linear(d_model, n + 1) for n in sizes] +
                                         [torch.nn.Linear(d_model, len(BACKGROUND_COLOURS)), torch.nn.Linear(d_model, 2)])

    @staticmethod
    def labels(scene) -> list[int]:
        out = [classes.index(getattr(scene.objects[0], name)) for name, classes in _ATTRIBUTES]
        second = scene.objects[1] if len(scene.objects) > 1 else None
        out += [len(classes) if second is None else classes.index(getattr(second, name))
                for name, classes in _ATTRIBUTES]
        return out + [sorted(BACKGROUND_COLOURS).index(scene.background), int(scene.two_tone)]

    def loss(self, context: torch.Tensor, mask: torch.Tensor, scenes: list) -> torch.Tensor:
        """Mean cross-entropy over the attributes of the captioned rows (`scenes[i]` None: a dropped caption)."""
        rows = [i for i, sc in enumerate(scenes) if sc is not None]
        if not rows:
            return context.sum() * 0
        m = mask[rows].to(context)[..., None]
        pooled = (context[rows] * m).sum(1) / m.sum(1).clamp(min=1)
        target = torch.tensor([self.labels(scenes[i]) for i in rows])  # [R, heads]
        return torch.stack([F.cross_entropy(head(pooled), target[:, k]) for k, head in enumerate(self.heads)]).mean()


class ShapeProbe(torch.nn.Module):
    """Training-only linear read-out of the first object's shape from each token of a DiT block's output.

    Constructing it hooks block num_layers // 2 - 1 (the middle) of `dit`; after a forward pass, `loss(cover,
    scenes)` is the cross-entropy of every token's shape prediction against the captioned scene's shape, weighted by
    how much of the token the object covers. Rows of dropped captions and of two-object scenes are skipped. The colour and the motion
    reach the DiT through the flow loss alone (they move many latent pixels); a shape changes only a few, so the
    flow loss barely rewards reading the shape word (measured: an earlier DiT's flow loss was the same with the
    wrong shape word) and the probe asks for it directly. Not part of the shipped DiT. Measured: the probe's loss
    falls to about 0 within 2000 steps, yet the generated shapes did not change (docs/demo_experiments.md)."""

    def __init__(self, dit: WanTransformer):
        super().__init__()
        self.patch = tuple(dit.cfg.patch_size)
        self.linear = torch.nn.Linear(dit.cfg.dim, len(SHAPES))
        self.hidden: torch.Tensor | None = None
        self.block = max(0, dit.cfg.num_layers // 2 - 1)
        self.handle = dit.blocks[self.block].register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        if self.hidden is None:  # the first forward pass after reset(): the batch's flow-loss pass
            self.hidden = output.clone()

    def reset(self) -> None:
        self.hidden = None

    def detach(self) -> None:
        self.handle.remove()
        self.hidden = None

    def loss(self, cover: torch.Tensor, scenes: list) -> torch.Tensor:
        """cover [B, T', h, w] (object coverage on the latent grid); scenes[i] None for a dropped caption."""
        rows = [i for i, sc in enumerate(scenes) if sc is not None and len(sc.objects) == 1]
        if self.hidden is None or not rows:
            return self.linear.weight.sum() * 0
        weight = F.avg_pool3d(cover[rows, None].float(), self.patch).flatten(1)  # [R, L] per-token coverage
        logits = self.linear(self.hidden[rows].float())  # [R, L, shapes]
        target = torch.tensor([SHAPES.index(scenes[i].objects[0].shape) for i in rows])
        ce = F.cross_entropy(logits.transpose(1, 2), target[:, None].expand(-1, logits.shape[1]), reduction="none")
        return (weight * ce).sum() / weight.sum().clamp_min(1e-6)


@torch.no_grad()
def latent_footprint(mask: torch.Tensor, latent_shape) -> torch.Tensor:
    """A per-pixel map [T, H, W] (0..1) on the latent grid [T', h, w]: the maximum over the frames of each latent
    frame (0: video frame 0; k: the 4 frames 4k-3..4k, the causal VAE's chunks), averaged over each latent pixel's
    16x16 footprint."""
    tl, h, w = latent_shape
    mask = mask.float()
    per_frame = torch.stack([mask[s].amax(dim=0) for s in chunk_slices(tl)])  # [T', H, W]
    return F.adaptive_avg_pool2d(per_frame[:, None], (h, w))[:, 0]


def object_coverage(frames: torch.Tensor, latent_shape) -> torch.Tensor:
    """Fraction of each latent pixel's footprint covered by an object: frames [T, H, W, 3] (0..1) -> [T', h, w]."""
    return latent_footprint(foreground(frames), latent_shape)


def other_shape(scene, i: int, third: bool = False):
    """The single-object scene drawn with one of the two other shapes (picked by i; `third`: the one not picked),
    or None for two objects."""
    if len(scene.objects) != 1:
        return None
    o = scene.objects[0]
    others = [s for s in SHAPES if s != o.shape]
    shape = random.Random(f"shape-swap:{i}").choice(others)
    if third:
        shape = next(s for s in others if s != shape)
    return replace(scene, objects=(replace(o, shape=shape),))


@torch.no_grad()
def cache_latents(vae: WanVAE, cfg: TrainConfig, minutes: float | None = None, batch: int = 8, *,
                  swap_shapes: bool = False, all_shapes: bool = False) -> dict[str, list]:
    """Encode cfg.clips training clips once (batched per aspect) -> {aspect: [(normalised latent [C, T', h, w], scene,
    object coverage [T', h, w], shape difference [T', h, w])]}; with swap_shapes each entry also carries the latent of
    `other_shape(scene)` (None for two objects), for the shape swap, and with all_shapes as well that of the third
    shape (`other_shape(scene, i, third=True)`), for the blob swap."""
    pools: dict[str, list] = {a: [] for a in SIZES}
    waiting: dict[str, list] = {a: [] for a in SIZES}
    t0 = time.perf_counter()

    def encode(scenes: list) -> tuple[torch.Tensor, torch.Tensor]:
        video = torch.stack([render(sc) for sc in scenes])  # [B, T, H, W, 3]
        return video, normalize_latents(vae.encode(rearrange(video, "b t h w c -> b c t h w") * 2 - 1))

    def encode_some(alts: tuple) -> list:
        """Latents of the scenes in `alts`, None where the scene is None."""
        have = [k for k, a in enumerate(alts) if a is not None]
        z_alt = [None] * len(alts)
        if have:
            for k, za in zip(have, encode([alts[k] for k in have])[1]):
                z_alt[k] = za
        return z_alt

    def flush(aspect: str) -> None:
        scenes, alts, thirds = zip(*waiting[aspect])
        video, z = encode(list(scenes))
        cover = [object_coverage(v, z.shape[2:]) for v in video]
        shapes = [latent_footprint(shape_difference(sc), z.shape[2:]) for sc in scenes]
        columns = [z, scenes, cover, shapes]
        if swap_shapes:
            columns.append(encode_some(alts))
        if swap_shapes and all_shapes:
            columns.append(encode_some(thirds))
        pools[aspect].extend(zip(*columns))
        waiting[aspect] = []

    for i in range(cfg.clips):
        scene = sample_scene(cfg.seed * 7_919 + i + 1_000_000)
        aspect = next(a for a, wh in SIZES.items() if wh == (scene.width, scene.height))
        waiting[aspect].append((scene, other_shape(scene, i) if swap_shapes else None,
                                other_shape(scene, i, third=True) if swap_shapes and all_shapes else None))
        if len(waiting[aspect]) == batch:
            flush(aspect)
            done = sum(len(p) for p in pools.values())
            log.info("cached %d latents, %.0f s", done, time.perf_counter() - t0)
            if minutes and time.perf_counter() - t0 > minutes * 60:
                log.warning("latent cache: time cap reached after %d of %d clips", done, cfg.clips)
                break
    for aspect in SIZES:
        if waiting[aspect]:
            flush(aspect)
    return pools


def _prompt(scene, rng: random.Random, cfg: TrainConfig) -> tuple[str, object, tuple | None]:
    """(prompt, the scene it describes or None for a dropped caption, (lang, variant) of the caption or None)."""
    r = rng.random()
    if r < cfg.drop_caption / 2:
        return "", None, None
    if r < cfg.drop_caption:
        return DEFAULT_NEGATIVE_PROMPT, None, None
    lang, variant = rng.choice(LANGS), rng.randrange(1 << 20)
    return caption(scene, lang, variant=variant), scene, (lang, variant)


_SWAP_CHOICES = {"shape": SHAPES, "colour": tuple(OBJECT_COLOURS), "motion": tuple(MOTIONS)}


def swapped_caption(scene, how: tuple, rng: random.Random, shape_share: float) -> str:
    """The caption of `scene` (a single object; `how` = (lang, variant)) with one attribute changed: the shape with
    probability shape_share, else the colour (never the background's) or the motion. The changed triple is never a
    held-out one (only captions of training triples are ever seen in training, even as negatives)."""
    obj = scene.objects[0]
    r = rng.random()
    name = "shape" if r < shape_share else ("colour" if r < (1 + shape_share) / 2 else "motion")
    options = [v for v in _SWAP_CHOICES[name] if v != getattr(obj, name) and v != scene.background]
    rng.shuffle(options)
    for value in options:
        new = replace(obj, **{name: value})
        if (new.colour, new.shape, new.motion) not in HELD_OUT:
            return caption(replace(scene, objects=(new,)), how[0], variant=how[1])
    raise AssertionError(f"no training triple differs from {obj} in its {name}")  # cannot happen: 3+ values each


def contrast_loss(dit: WanTransformer, xs: torch.Tensor, t: torch.Tensor, target: torch.Tensor, v: torch.Tensor,
                  context_wrong: torch.Tensor, cover: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge on the object-pixel flow loss of rows run with a wrong caption: mean relu(margin - (log L_wrong -
    log L_true)). xs, target, v (the true caption's prediction) [R, C, T', h, w], t [R], cover [R, T', h, w].

    The plain flow loss barely rewards a prompt word that changes only a few latent pixels (a shape's corners),
    because its noise swamps the gain; both losses here use the same noise, so the difference isolates what the
    word should change. Measured on the v4 DiT before this term: the loss with a wrong shape word equalled the
    loss with the right one at every noise level, i.e. the DiT ignored shape words (shape accuracy 33%, chance)."""
    with compact_text(dit, context_wrong.shape[1]):
        v_wrong = dit(xs, t, context_wrong)
    w = cover.to(v)
    per_row = lambda pred: ((pred - target).pow(2).mean(dim=1) * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-6)  # noqa: E731
    gap = per_row(v_wrong).clamp_min(1e-8).log() - per_row(v).clamp_min(1e-8).log()  # [R]
    return F.relu(margin - gap).mean()


def flow_loss(dit: WanTransformer, text_model, tokenizer, x0: torch.Tensor, prompts: list[str], cfg: TrainConfig,
              gen: torch.Generator, shift: float | None = None, cover: torch.Tensor | None = None,
              context: torch.Tensor | None = None, parts: dict | None = None, shape_cover: torch.Tensor | None = None,
              shape_weight: float = 0.0, low_shift_share: float = 0.0, x_alt: torch.Tensor | None = None,
              alt_mix: torch.Tensor | None = None, own_step_share: float = 0.0) -> torch.Tensor:
    """Flow-matching MSE on a batch of normalised latents x0 [B, C, T', h, w]; `cover` [B, T', h, w] (object
    coverage) weights latent pixels by 1 + cfg.object_weight * cover, so the small objects the prompt names are
    not drowned by the background, and `shape_cover` (shape difference on the latent grid) adds shape_weight *
    shape_cover. The first round(low_shift_share * B) rows draw sigma with cfg.low_shift instead of `shift`.
    `context` is the prompts' encoding if already computed; a `parts` dict receives xs, t, target and v (for
    contrast_loss). Shape swap: with x_alt [B, ...] and alt_mix [B] (lam, 0 = plain row), the rows whose sigma is at
    least cfg.shape_swap_min_sigma see x_in = x0 + lam * (x_alt - x0) noised, and the target is the velocity that
    still lands on x0 from there: (xs - x0) / sigma. Own step: a share own_step_share of the rows at that floor or
    above instead see xs = x_hi + (sigma - s_hi) * dit(x_hi), x_hi = (1 - s_hi) x0 + s_hi noise, s_hi ~ U(sigma, 1)
    (the DiT's own Euler step, no gradient), with the same target (xs - x0) / sigma."""
    b = x0.shape[0]
    u = torch.rand(b, generator=gen)
    s = shift_sigma(u, shift or cfg.shift)  # [B] sigma, the inference distribution of timesteps
    low = round(low_shift_share * b)
    if low > 0:
        s = torch.cat([shift_sigma(u[:low], cfg.low_shift), s[low:]])
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
    if context is None:
        context = encode_text_train(text_model, tokenizer, prompts)
    if own_step_share > 0:
        xs, target = _own_step(dit, x0, noise, s, xs, target, context, own_step_share, cfg.shape_swap_min_sigma, gen)
    t = sigma_to_timestep(s)
    with compact_text(dit, context.shape[1]):
        v = dit(xs, t, context)
    err = (v - target).pow(2).mean(dim=1)  # [B, T', h, w]
    if parts is not None:
        parts.update(xs=xs, t=t, target=target, v=v, sigma=s)
    if cover is None:
        return err.mean()
    weight = 1 + cfg.object_weight * cover.to(err)
    if shape_cover is not None and shape_weight > 0:
        weight = weight + shape_weight * shape_cover.to(err)
    return (weight * err).sum() / weight.sum()


def _own_step(dit: WanTransformer, x0, noise, s, xs, target, context, share: float, min_sigma: float,
              gen: torch.Generator):
    """flow_loss's own-step rows: (xs, target) with a share of the rows at sigma >= min_sigma replaced by one Euler
    step of the DiT itself (no gradient) from s_hi ~ U(sigma, 1) with the same noise, and the velocity that lands on
    x0 from there."""
    b = x0.shape[0]
    own = (torch.rand(b, generator=gen) < share) & (s >= min_sigma)
    s_hi = (s + (1 - s) * torch.rand(b, generator=gen)).clamp(max=0.999)
    if not own.any():
        return xs, target
    sb, hb = s[own].view(-1, 1, 1, 1, 1), s_hi[own].view(-1, 1, 1, 1, 1)
    x_hi = (1 - hb) * x0[own] + hb * noise[own]
    with torch.no_grad(), compact_text(dit, context.shape[1]):
        v_hi = dit(x_hi, sigma_to_timestep(s_hi[own]), context[own])
    stepped = x_hi + (sb - hb) * v_hi.to(x_hi)
    xs, target = xs.clone(), target.clone()
    xs[own], target[own] = stepped, (stepped - x0[own]) / sb
    return xs, target


def shape_direction_loss(v: torch.Tensor, target: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Mean over the rows with d != 0 of <v - target, d / |d|>^2 / numel(row): the squared flow residual along the
    shape direction d [B, C, T', h, w] (x0 - the clip in another shape), counted like one latent value of the row, so
    a weight W gives that direction about W times the gradient the per-element mean-square flow loss gives it.
    0 if no row has a direction."""
    d = d.float()
    norm = d.flatten(1).norm(dim=1)
    rows = norm > 0
    if not rows.any():
        return v.new_zeros((), dtype=torch.float32)
    r = (v.float() - target.float())[rows].flatten(1)
    p = (r * d[rows].flatten(1)).sum(dim=1) / norm[rows]
    return (p.pow(2) / r.shape[1]).mean()


def _other_shape_rows(items: list, described: tuple) -> list[bool]:
    """Per cache entry: its caption describes its scene (`described[i]` not None) and the cache holds the clip in
    another shape (only single objects have one)."""
    return [sc is not None and len(item) > 4 and item[4] is not None for sc, item in zip(described, items)]


def shape_directions(items: list, described: tuple) -> torch.Tensor:
    """[B, C, T', h, w]: per cache entry, x0 minus its latent in another shape for the `_other_shape_rows`, else
    zeros."""
    ok = _other_shape_rows(items, described)
    return torch.stack([item[0] - item[4] if o else torch.zeros_like(item[0]) for o, item in zip(ok, items)])


def swap_inputs(items: list, described: tuple, share: float, blob_share: float, gen: torch.Generator):
    """(x_alt [B, C, T', h, w], alt_mix [B]) for flow_loss's shape swap, from cache entries `items` whose caption
    describes their scene (`described[i]` not None; a dropped caption has no shape to follow). A share of the
    single-object rows get lam ~ U(0, 1) (the others 0) and, as x_alt, the clip in another shape or, for a
    blob_share of them, the mean of the clip's latents in all three shapes (the blob an unsure DiT predicts)."""
    ok = _other_shape_rows(items, described)
    pick = torch.rand(len(items), generator=gen) < share
    lam = torch.rand(len(items), generator=gen)
    alt_mix = torch.where(torch.tensor(ok) & pick, lam, torch.zeros_like(lam))
    x_alt = [item[4] if o else item[0] for o, item in zip(ok, items)]
    if blob_share > 0:
        blob = (torch.rand(len(items), generator=gen) < blob_share).tolist()
        x_alt = [(item[0] + item[4] + item[5]) / 3 if o and bl else xa
                 for o, bl, item, xa in zip(ok, blob, items, x_alt)]
    return torch.stack(x_alt), alt_mix


def first_frames(item: tuple, k: int) -> tuple:
    """A latent-cache entry cut to its first k latent frames: latents [C, T', h, w] (None stays None), coverage and
    shape difference [T', h, w]; the scene is kept."""
    if k < 1:
        raise ValueError(f"frame_crop_frames={k}: keep at least 1 latent frame (1 = the clip's first frame alone)")
    cut = lambda x, dim: None if x is None else x.narrow(dim, 0, min(k, x.shape[dim]))  # noqa: E731
    return (cut(item[0], 1), item[1], cut(item[2], 0), cut(item[3], 0), *[cut(z, 1) for z in item[4:]])


def _require_columns(pools: dict, columns: int, needed: bool, message: str) -> None:
    """Raise ValueError(message) if `needed` and some cache entry has fewer than `columns` items."""
    if needed and any(len(item) < columns for pool in pools.values() for item in pool):
        raise ValueError(message)


def _recent(values: list[float], n: int = 25) -> float:
    """Mean of the last n values (0 if none): the training log's running figures."""
    tail = values[-n:]
    return sum(tail) / max(1, len(tail))


def train_dit(cfg: TrainConfig, pools: dict, tokenizer: SpieceTokenizer, minutes: float | None = None, *,
              resume: tuple | None = None, round_: int = 0, on_step=None):
    """DiT + umT5 jointly; `resume` = (dit, text_model) continues a previous round (new LR cycle, seeded by round_).

    on_step(step, dit, text_model), if given, is called after every optimizer step (e.g. to keep weight averages)."""
    torch.manual_seed(cfg.seed + 1 + round_)
    dit = resume[0].train() if resume else WanTransformer(cfg.dit).train()
    text_model = resume[1].train() if resume else build_text_encoder(cfg.t5, tokenizer.vocab_size).train()
    lr = cfg.dit_lr * (0.5 if resume else 1.0)
    heads = AttributeHeads(text_model.config.d_model)
    second = resume is not None
    probe_weight = cfg.per_round("shape_probe_weight", second)
    probe = ShapeProbe(dit) if probe_weight > 0 else None
    params = list(dit.parameters()) + list(text_model.parameters()) + list(heads.parameters())
    params += list(probe.parameters()) if probe is not None else []
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    rng, gen = random.Random(f"dit:{cfg.seed}:{round_}"), torch.Generator().manual_seed(cfg.seed + 1 + 7 * round_)
    aspects = [a for a in sorted(pools) if pools[a]]
    clock, step, history, contrasts = _Clock(cfg.dit_steps, minutes, "dit", replan=cfg.dit_replan_steps), 0, [], []
    probes: list[float] = []
    contrast_weight = cfg.per_round("contrast_weight", second)
    swap_share = cfg.per_round("shape_swap_share", second)
    blob_share = cfg.per_round("shape_swap_blob", second)
    direction_weight = cfg.per_round("shape_direction_weight", second)
    directions: list[float] = []
    crop_share = cfg.per_round("frame_crop_share", second)
    if crop_share > 0 and (cfg.frame_crop_frames < 1 or cfg.frame_crop_batch < 1):
        raise ValueError(f"frame crop on (share {crop_share}) with frame_crop_frames={cfg.frame_crop_frames} and "
                         f"frame_crop_batch={cfg.frame_crop_batch}: both must be at least 1 (1 frame = the clip's "
                         "first frame alone), or set the share to 0")
    _require_columns(pools, 5, direction_weight > 0,
                     f"shape_direction_weight={direction_weight} needs the other-shape latents in the cache: build it "
                     "with cache_latents(..., swap_shapes=True) (the training run does so when the shape swap or the "
                     "shape direction is on), or set shape_direction_weight=0")
    _require_columns(pools, 6, blob_share > 0,
                     f"shape_swap_blob={blob_share} needs the latents of all three shapes in the cache: build it with "
                     "cache_latents(..., swap_shapes=True, all_shapes=True), or set shape_swap_blob=0")
    ema_decay = cfg.per_round("dit_ema", second)
    ema = WeightEMA([dit, text_model], ema_decay) if ema_decay > 0 else None
    while not clock.done(step) and not 0 < cfg.dit_stop_steps <= step:
        for g in opt.param_groups:
            g["lr"] = lr * _lr(step, clock.plan(step), cfg.warmup)
        pool = pools[aspects[step % len(aspects)]]
        crop = crop_share > 0 and rng.random() < crop_share  # no draw when off: crop-free rounds replay unchanged
        items = [pool[rng.randrange(len(pool))] for _ in range(cfg.frame_crop_batch if crop else cfg.dit_batch)]
        if crop:
            items = [first_frames(item, cfg.frame_crop_frames) for item in items]
        x0 = torch.stack([item[0] for item in items])  # [B, C, T', h, w]
        prompts, described, how = zip(*[_prompt(item[1], rng, cfg) for item in items])
        cover, parts = torch.stack([item[2] for item in items]), {}
        shape_cover = torch.stack([item[3] for item in items])
        x_alt, alt_mix = swap_inputs(items, described, swap_share, blob_share, gen) if swap_share > 0 else (None, None)
        if probe is not None:
            probe.reset()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.dit_bf16):
            context, mask = encode_text_train(text_model, tokenizer, list(prompts), with_mask=True)
            flow = flow_loss(dit, text_model, tokenizer, x0, list(prompts), cfg, gen,
                             shift=cfg.per_round("shift", second), cover=cover, context=context,
                             parts=parts, shape_cover=shape_cover,
                             shape_weight=cfg.per_round("shape_weight", second),
                             low_shift_share=cfg.per_round("low_shift_share", second),
                             x_alt=x_alt, alt_mix=alt_mix,
                             own_step_share=cfg.per_round("own_step_share", second))
            aux = heads.loss(context, mask, list(described))
            loss = flow.float() + cfg.text_aux_weight * aux.float()
            if direction_weight > 0:
                along = shape_direction_loss(parts["v"], parts["target"], shape_directions(items, described))
                loss = loss + direction_weight * along
                directions.append(along.item())
            if probe is not None:
                probed = probe.loss(cover, list(described))
                loss = loss + probe_weight * probed.float()
                probes.append(probed.item())
            rows = [i for i, sc in enumerate(described) if sc is not None and len(sc.objects) == 1][
                :cfg.contrast_rows] if contrast_weight > 0 else []
            if rows:
                wrong = [swapped_caption(described[i], how[i], rng, cfg.contrast_shape) for i in rows]
                pick = torch.tensor(rows)
                contrast = contrast_loss(dit, parts["xs"][pick], parts["t"][pick], parts["target"][pick],
                                         parts["v"][pick], encode_text_train(text_model, tokenizer, wrong),
                                         cover[pick], cfg.contrast_margin)
                loss = loss + contrast_weight * contrast.float()
                contrasts.append(contrast.item())
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
            log.info("dit step %d  flow loss %.4f (mean of last 25: %.4f)  text aux %.4f  contrast %.4f  "
                     "shape probe %.4f  shape direction %.5f  %.0f s", step, history[-1], _recent(history),
                     aux.item(), _recent(contrasts), _recent(probes), _recent(directions), clock.elapsed)
        step += 1
    info = {"steps": step, "scheduled_steps": clock.steps, "seconds": round(clock.elapsed, 1), "last": history[-50:]}
    if contrasts:
        info["contrast_last"] = [round(c, 5) for c in contrasts[-50:]]
    if directions:
        info["shape_direction_last"] = [round(c, 6) for c in directions[-50:]]
    if probe is not None:
        probe.detach()
        info["shape_probe_last"] = [round(c, 5) for c in probes[-50:]]
    if ema is not None:
        ema.copy_to([dit, text_model])
        info["ema_decay"] = ema_decay
    return dit.eval(), text_model.eval(), info


def resume_dit(out: Path):
    """(dit, text_model, tokenizer) from the files in `out`, copied into fresh trainable fp32 modules."""
    from ..loading import load_dit, load_text_encoder

    loaded = load_dit(out / MODEL_FILES["dit"], dtype=torch.float32)
    dit = WanTransformer(loaded.cfg)
    dit.load_state_dict(loaded.state_dict())
    te = load_text_encoder(out / MODEL_FILES["text_encoder"], dtype=torch.float32)
    text_model = build_text_encoder(T5Spec(d_model=te.model.config.d_model, d_kv=te.model.config.d_kv,
                                           num_heads=te.model.config.num_heads, d_ff=te.model.config.d_ff,
                                           num_layers=te.model.config.num_layers,
                                           buckets=te.model.config.relative_attention_num_buckets),
                                    te.model.config.vocab_size)
    text_model.load_state_dict(te.model.state_dict())
    return dit, text_model, te.tokenizer


def _file_training(path: Path) -> dict:
    """The "training" record in a safetensors file's metadata ({} if none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("training", "{}"))


# --- command line -------------------------------------------------------------------------------------------------------
def run(out: Path, cfg: TrainConfig, *, stages=("vae", "dit"), budget_minutes: float | None = None,
        dtype: torch.dtype | None = None, threads: int = 1) -> dict:
    """Run the stages into `out` (ComfyUI layout: diffusion_models/, text_encoders/, vae/); returns a summary."""
    torch.set_num_threads(max(1, min(2, threads)))  # OpenMP barriers stall when other jobs hold the cores
    out = Path(out)
    summary: dict = {"config": json.loads(json.dumps(asdict(cfg), default=str))}
    vae_share = 0.3 if "vae" in stages and "dit" in stages else 1.0
    resume = {"vae1": (1, 2, 3), "vae2": (2, 3), "vae3": (3,)}
    if "vae" in stages or set(resume) & set(stages):
        phases = next((p for k, p in resume.items() if k in stages), (0, 1, 2, 3))
        start = load_stage(out / MODEL_FILES["vae"]) if phases[0] > 0 else None
        earlier = _file_training(out / MODEL_FILES["vae"]) if start is not None else {}
        vae, info = train_vae(cfg, budget_minutes and budget_minutes * vae_share, vae=start, phases=phases)
        info = {**{k: v for k, v in earlier.items() if k not in info}, **info}  # a resumed file keeps its history
        summary["vae"] = info
        save_vae(vae, out / MODEL_FILES["vae"], dtype=dtype, metadata={"training": json.dumps(info)})
    if "dit" in stages or "dit2" in stages:
        vae = load_stage(out / MODEL_FILES["vae"])
        t0 = time.perf_counter()
        rest = budget_minutes and budget_minutes * (1 - vae_share if "vae" in stages else 1.0)
        resume = None
        if "dit2" in stages:  # a further round on the files in --out (tokenizer from the text-encoder file)
            resume = resume_dit(out)
            tokenizer = resume[2]
        else:
            tokenizer = train_demo_tokenizer(cfg)
        swap = (cfg.per_round("shape_swap_share", resume is not None) > 0
                or cfg.per_round("shape_direction_weight", resume is not None) > 0)
        blob = swap and cfg.per_round("shape_swap_blob", resume is not None) > 0
        pools = cache_latents(vae, cfg, rest and rest * (0.33 if blob else 0.25 if swap else 0.15),
                              swap_shapes=swap, all_shapes=blob)
        summary["latents"] = {"clips": sum(len(p) for p in pools.values()), "seconds": round(time.perf_counter() - t0)}
        dit_minutes = rest and rest - (time.perf_counter() - t0) / 60
        dit, text_model, info = train_dit(cfg, pools, tokenizer, dit_minutes, resume=resume and resume[:2],
                                          round_=1 if resume else 0)
        summary["dit"] = info
        meta = {"training": json.dumps({k: summary[k] for k in ("latents", "dit")}), "round": str(int(bool(resume))),
                "train_config": json.dumps(summary["config"])}
        save_dit(dit, out / MODEL_FILES["dit"], dtype=dtype or getattr(torch, cfg.dit_file_dtype), metadata=meta)
        save_text_encoder(text_model, tokenizer, out / MODEL_FILES["text_encoder"], dtype=dtype, metadata=meta)
    return summary


def _overrides(cfg: TrainConfig, items: list[str]) -> dict:
    """--set FIELD=VALUE pairs -> typed values for the scalar (bool/int/float) fields of cfg."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        current = getattr(cfg, key, None)
        if not sep or not isinstance(current, (int, float)):
            scalars = sorted(k for k, v in asdict(cfg).items() if isinstance(v, (int, float)))
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {scalars}")
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {item!r}: {key} is a switch; use {key}=true or {key}=false")
            out[key] = value.lower() in ("true", "1")
            continue
        try:
            out[key] = type(current)(value)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {value!r} is not a valid {type(current).__name__}") from None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wan_core.demo.train", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="pack models/ folder (or any folder) to write into")
    ap.add_argument("--budget-minutes", type=float, default=None, help="wall-time cap for all stages (<= 90)")
    ap.add_argument("--stage", choices=("all", "vae", "vae1", "vae2", "vae3", "dit", "dit2"), default="all",
                    help="vae1 / vae2 / vae3: resume the VAE file in --out at phase 1 / 2 / 3 (phases 2 and 3 keep "
                         "the encoder, so the latents and a trained DiT stay valid); "
                         "dit2: a second DiT + text-encoder round on the files in --out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-steps", type=int, default=None)
    ap.add_argument("--dit-steps", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a scalar TrainConfig field, e.g. --set shift=5 (repeatable; recorded in the files)")
    ap.add_argument("--smoke", action="store_true", help="tiny config, seconds per stage")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; 1 is several times faster than 2 when the machine is busy")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig.smoke() if args.smoke else TrainConfig()
    cfg = replace(cfg, seed=args.seed, **{k: v for k, v in (("vae_steps", args.vae_steps),
                                                              ("dit_steps", args.dit_steps)) if v is not None})
    cfg = replace(cfg, **_overrides(cfg, args.set))
    stages = ("vae", "dit") if args.stage == "all" else (args.stage,)
    summary = run(args.out, cfg, stages=stages, budget_minutes=args.budget_minutes, threads=args.threads)
    log.info("summary: %s", json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
