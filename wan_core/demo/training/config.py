"""What determines the demo model's trained weights (with the seed): `TrainConfig`, and the two DiT rounds it plans.

The defaults are the shipped recipe. Experiments that were tried and not shipped (attribute contrast, shape weight,
low-shift rows, shape probe, blob swap, own-step rows, shape-direction term) are described in
docs/demo_experiments.md and live in git history, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ...config import WanConfig
from ...vae import VAEConfig


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
    """Everything that determines the trained weights (with the seed and the torch thread count)."""

    seed: int = 0
    vocab_size: int = 600
    tokenizer_sentences: int = 6000
    vae: VAEConfig = VAEConfig(base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=(1, 2, 2), num_res_blocks=1,
                               temporal_downsample=(True, True), patch_size=4)
    vae_steps: int = 1500  # phase 0: short clips
    vae_batch: int = 2
    vae_frames: int = 9  # 1 + 4 + 4: the first chunk, and cached chunks that follow a full chunk
    vae_crop: int = 96  # pixels; random crops near an object (the networks are convolutional)
    vae_long_steps: int = 500  # phase 1: whole 25-frame clips
    vae_long_frames: int = 25
    vae_decoder_steps: int = 1200  # phase 2: decoder only
    vae_temporal_steps: int = 900  # phase 3 (--stage vae3): decoder only, with the temporal loss below
    vae_temporal_weight: float = 2.0  # phase 3 weight of the frame-to-frame change of the reconstruction error
    # Phase 4 (--stage vae_i2v): phase 3's loss plus, weighted vae_first_frame_weight, whole first frames
    # (vae_first_frame_batch of one aspect) decoded from their exact latents: the image-to-video first frame.
    vae_i2v_steps: int = 900
    vae_first_frame_weight: float = 4.0
    vae_first_frame_batch: int = 4
    vae_i2v_lr_scale: float = 0.5  # x vae_lr
    vae_lr: float = 3e-3
    vae_latent_noise: float = 0.1  # decoder sees mu + this * latent_std * N(0, 1)
    vae_moment_weight: float = 0.1
    # Mask code (wan_core.demo.mask_code): the first vae_mask_channels latent channels learn the objects' coverage
    # of their sub-blocks (16: 4 px sub-blocks; 1 or 4 also tile a latent pixel), the same for every colour, weight
    # vae_mask_weight; a share vae_mask_blur_share of the decoder's inputs has the other channels blurred, so the
    # decoder takes the outline from the code (shapes rose from near chance to about 90%; docs/demo_experiments.md).
    vae_mask_channels: int = 16
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
    dit_steps: int = 12000  # round 1 (--stage dit); the learning-rate schedule is planned over this many steps
    dit_steps_round2: int = 9000  # round 2 (--stage dit2)
    # Replaying a time-capped DiT round (its file records "steps" done and the "scheduled_steps" its clock planned at
    # step 100, Clock.ESTIMATE_AT): dit_replan_steps > 0 switches the schedule to that count at step 100, as the
    # time estimate did, and dit_stop_steps > 0 stops after that many steps.
    dit_replan_steps: int = 0
    dit_stop_steps: int = 0
    dit_batch: int = 8
    dit_lr: float = 1e-3  # round 1; round 2 continues at half of it
    # bf16 autocast for the DiT + umT5 forward passes (weights and optimizer stay fp32; losses are computed in fp32):
    # about 1.3x the steps of fp32 in a time slot on an AVX512-BF16 CPU. Both shipped rounds use it.
    dit_bf16: bool = True
    shift: float = 5.0  # training sigma shift: more steps at high noise, where the prompt decides the layout (the
    # demo samples with shift 3; both shifts cover all noise levels, they only weight them differently)
    shift_round2: float = 6.0  # the second round trains more at high noise
    object_weight: float = 3.0  # flow-loss weight of latent pixels covered by an object: 1 + this * coverage
    drop_caption: float = 0.1  # probability of "" / the default negative prompt (the CFG branch)
    text_aux_weight: float = 0.3  # auxiliary loss: the scene's attributes read back from the pooled text encoding
    # Shape swap (round 2): the DiT learned to copy a shape from the noisy latent rather than read it from the
    # caption, so from pure noise, where no shape is there to copy, it drew a round blob. A share of the captioned
    # single-object rows see a latent blended towards the same clip drawn with another shape,
    # x_in = x0 + lam * (x_alt - x0), lam ~ U(0, 1), at sigma >= shape_swap_min_sigma, while the target still lands
    # on x0: the caption, not the noisy latent, decides the shape.
    shape_swap_share_round2: float = 1.0
    shape_swap_min_sigma: float = 0.4
    # Frame crop (round 2, cheaper shape steps): a share of the steps train on the first frame_crop_frames latent
    # frames of the cached clips (the VAE is causal, so these are exactly the latents of the clip's first
    # 1 + 4 (k - 1) frames) with frame_crop_batch rows instead of dit_batch. A one-frame row has a seventh of a 16:9
    # clip's tokens, so a crop step shows 4x the rows (each with a shape) for about the time of a clip step.
    frame_crop_share_round2: float = 0.5
    frame_crop_frames: int = 1
    frame_crop_batch: int = 32
    # Weight average (round 2): the DiT and umT5 files hold an exponential moving average of the round's weights
    # with this decay (WeightEMA; the decay ramps up over the first steps) instead of its last weights.
    dit_ema_round2: float = 0.999
    # Image-to-video round (--stage dit_i2v, after vae_i2v): continues the files at dit_i2v_lr_scale x dit_lr, round
    # 2's shift, with the official image-to-video masking on a share dit_i2v_share of the batches: the first latent
    # frame clean, timestep 0 on its tokens, no loss on it. i2v_clips: the round's latent cache.
    dit_steps_i2v: int = 300
    dit_i2v_lr_scale: float = 0.25
    dit_i2v_share: float = 0.5
    i2v_clips: int = 600
    warmup: int = 50

    @classmethod
    def smoke(cls) -> "TrainConfig":
        """A few seconds per stage, for tests."""
        return cls(vocab_size=300, tokenizer_sentences=800, vae_steps=4, vae_long_steps=2, vae_long_frames=9,
                   vae_decoder_steps=2, vae_temporal_steps=2, vae_i2v_steps=2, vae_first_frame_batch=1,
                   vae_crop=32, clips=4, dit_steps=4, dit_steps_round2=4,
                   dit_batch=2, frame_crop_batch=4, vae=replace(cls.vae, base_dim=8, decoder_base_dim=8),
                   t5=T5Spec(d_model=32, d_kv=16, num_heads=2, d_ff=64, num_layers=1),
                   dit=WanConfig(dim=128, ffn_dim=128, num_heads=1, num_layers=1, in_dim=48, out_dim=48, text_dim=32))


@dataclass(frozen=True)
class DitRound:
    """What one DiT round does: round 1 (--stage dit) trains from scratch; round 2 (--stage dit2) continues the
    files at half the learning rate with the shape swap, the frame crop and the weight average; round 3 (--stage
    dit_i2v) continues them with the image-to-video masking. A share or decay of
    0 leaves that part out and draws no random numbers for it."""

    index: int  # 0 or 1: seeds the round's random streams
    steps: int
    lr: float
    shift: float
    swap_share: float
    crop_share: float
    ema_decay: float
    i2v_share: float = 0.0  # image-to-video masking (round 3, --stage dit_i2v)


def dit_round(cfg: TrainConfig, second: bool, i2v: bool = False) -> DitRound:
    if i2v:
        return DitRound(2, cfg.dit_steps_i2v, cfg.dit_lr * cfg.dit_i2v_lr_scale, cfg.shift_round2, 0.0, 0.0, 0.0,
                        cfg.dit_i2v_share)
    if second:
        return DitRound(1, cfg.dit_steps_round2, cfg.dit_lr * 0.5, cfg.shift_round2, cfg.shape_swap_share_round2,
                        cfg.frame_crop_share_round2, cfg.dit_ema_round2)
    return DitRound(0, cfg.dit_steps, cfg.dit_lr, cfg.shift, 0.0, 0.0, 0.0)
