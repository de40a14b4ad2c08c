"""Text (+ start image) -> video: encode prompts -> seeded noise -> flow-matching sampling with CFG -> VAE decode.

`sample_latents` is the building block the ComfyUI sampler node calls; `WanT2VPipeline` is the diffusers-like front end.
Image-to-video (a start image fixing the first latent frame) is wan_core.i2v's conditioning on the same loop.
Parity with diffusers `WanPipeline` on tiny random weights: tests/test_pipeline_parity.py; image-to-video against
diffusers `WanImageToVideoPipeline` and the official loop: tests/test_i2v_parity.py.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .config import OFFICIAL_DEFAULTS, SamplingConfig
from .geometry import WAN22_VAE, latent_shape, validate_request
from .guard import check_finite, finite_guard
from .attention import AttentionRun
from .guidance import cfg_pair_velocity_fn, cfg_velocity_fn
from .i2v import check_image_latent, image_model_fn, impose, token_timesteps
from .image import END_IMAGE, encode_image, prepare_image
from .latent_format import denormalize_latents, normalize_latents
from .noise import initial_noise
from .param import FlowParam
from .prompts import DEFAULT_NEGATIVE_PROMPT
from .sampling import STOCHASTIC, get_sampler
from .schedules import denoise_sigmas, flow_sigmas, sigma_to_timestep
from .speed import SpeedOptions, use_cfg_batch, with_hooks
from .step_cache import CacheRun, StepCacheConfig, start_cache

log = logging.getLogger(__name__)

ModelWrapper = Callable[[Callable, torch.Tensor], Callable]  # (model_fn, sigmas) -> model_fn


def pad_context(embeds: Sequence[torch.Tensor]) -> torch.Tensor:
    """List of [L_i, D] prompt embeddings -> [B, max L_i, D], zero-padded (the DiT pads further to its text_len)."""
    length = max(e.shape[0] for e in embeds)
    out = embeds[0].new_zeros(len(embeds), length, embeds[0].shape[-1])
    for i, e in enumerate(embeds):
        out[i, : e.shape[0]] = e
    return out


def _batch(context: torch.Tensor, batch: int) -> torch.Tensor:
    if context.shape[0] == batch:
        return context
    if context.shape[0] != 1:
        raise ValueError(f"conditioning batch {context.shape[0]} does not match latent batch {batch}; use one prompt "
                         "for the whole batch or one per latent")
    return context.expand(batch, *context.shape[1:])


def dit_velocity_fn(dit: torch.nn.Module, context: torch.Tensor, *, hooks=None, image_frames: int = 0) -> Callable:
    """velocity_fn(x [B,C,T,H,W], sigma [B]) calling the DiT with t = trunc(sigma * 1000).

    image_frames > 0 (image-to-video): per-token t [B, L], 0 on the tokens of the first image_frames latent frames."""
    pf, ph, pw = tuple(getattr(dit, "cfg").patch_size) if image_frames else (1, 1, 1)

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        ctx = _batch(context, x.shape[0]).to(x.device)
        t = sigma_to_timestep(sigma).to(x.device)  # [B]
        if image_frames:
            grid = (x.shape[2] // pf, x.shape[3] // ph, x.shape[4] // pw)
            t = token_timesteps(t, grid, -(-image_frames // pf))  # [B, L]
        return dit(x, t, ctx, hooks=hooks)

    return velocity


def dit_pair_fn(dit: torch.nn.Module, context: torch.Tensor, neg_context: torch.Tensor, *, hooks=None,
                image_frames: int = 0) -> Callable:
    """pair(x [B,C,T,H,W], sigma [B]) -> (v_cond, v_uncond) from ONE DiT forward on the batch [x; x] (cfg batching).

    The two contexts are zero-padded to a common length: the DiT zero-pads every context to its text_len before
    embedding it (cross-attention has no mask), so each half sees exactly what a separate call sees."""
    def pair(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        both = pad_context([*_batch(context, b), *_batch(neg_context, b)])  # [2B, L, D]
        v = dit_velocity_fn(dit, both, hooks=hooks, image_frames=image_frames)(torch.cat([x, x]),
                                                                              torch.cat([sigma, sigma]))  # [2B, ...]
        return v[:b], v[b:]

    return pair


def guided_velocity_fn(dit: torch.nn.Module, context: torch.Tensor, neg_context: torch.Tensor | None, cfg: float,
                       x: torch.Tensor, *, speed: SpeedOptions, cache_run: CacheRun, hooks=None,
                       image_frames: int = 0) -> Callable:
    """The guided velocity_fn(x, sigma) of a run. Around each DiT call, inside out: the attention backend's SDPA
    fallback (wan_core.attention), the step cache (per branch, or the batched pair), then cfg. neg_context None =
    no guidance (cfg 1). cfg batching per speed.cfg_batch (wan_core.speed.use_cfg_batch)."""
    if speed.compile:
        from .compile import block_runner

        hooks = with_hooks(hooks, run_block=block_runner())
    attn = AttentionRun(speed.attention, x.device)

    def velocity(ctx: torch.Tensor) -> Callable:
        return attn.guard(lambda a: dit_velocity_fn(dit, ctx, hooks=with_hooks(hooks, attention=a),
                                                    image_frames=image_frames))

    if neg_context is not None and use_cfg_batch(speed.cfg_batch, x, dit.cfg, per_token_time=image_frames > 0):
        pair = attn.guard(lambda a: dit_pair_fn(dit, context, neg_context, hooks=with_hooks(hooks, attention=a),
                                                image_frames=image_frames))
        return cfg_pair_velocity_fn(cache_run.wrap_pair(pair), cfg)
    cond, uncond = cache_run.wrap_branches(velocity(context), None if neg_context is None else velocity(neg_context))
    return cfg_velocity_fn(cond, uncond, cfg)


@torch.no_grad()
def sample_latents(dit: torch.nn.Module, context: torch.Tensor, neg_context: torch.Tensor | None,
                   latent_raw: torch.Tensor, *, seed: int, steps: int = 50, cfg: float = 5.0, shift: float = 5.0,
                   sampler: str = "unipc", schedule: str = "official", denoise: float = 1.0,
                   sigmas: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   callback: Callable | None = None, model_wrappers: Sequence[ModelWrapper] = (),
                   hooks=None, noise_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   image_latent: torch.Tensor | None = None, cache: StepCacheConfig | None = None,
                   return_info: bool = False, speed: SpeedOptions | None = None):
    """Sample a raw (VAE-space) latent [B, C, T, H, W] like `latent_raw` (its values are used only when denoise < 1).

    context/neg_context: [1 or B, L, text_dim] prompt embeddings (zero-padded). `sigmas` overrides steps/shift/schedule/denoise.
    model_wrappers: callables (model_fn, sigmas) -> model_fn applied in order (temporal-consistency options plug in here).
    noise_transform: applied to the seeded (or given) initial noise, e.g. a temporally correlated noise prior.
    Every step's x0 estimate is checked for NaN/Inf (wan_core.guard): the first one raises NonFiniteError naming the
    step and sigma, before `callback` sees it.
    image_latent: image-to-video, a raw VAE latent [1 or B, C, Ti, H, W] of the start image (wan_core.image
    encode_image): the first Ti latent frames start as it, their tokens get timestep 0, it is imposed on every model
    input and x0 estimate (wan_core.i2v) and the returned latent's first Ti frames equal it exactly.
    cache: step caching of the DiT branches (wan_core.step_cache), None = every step computed. The DiT calls made
    and skipped are logged (INFO); return_info=True returns (latent, info dict with "dit_calls", "dit_skipped",
    "cache" and, for the calibrate method, "magcache_ratios").
    speed: wan_core.speed.SpeedOptions (cfg batching "auto"/"on"/"off", compile, attention backend); None = defaults.
    """
    if cfg < 0:
        raise ValueError(f"cfg (guidance scale) must be >= 0 (got {cfg}); 5.0 is the official value, 1.0 disables guidance")
    sample = get_sampler(sampler)
    image = None if image_latent is None else check_image_latent(image_latent, tuple(latent_raw.shape))
    explicit_sigmas = sigmas
    if sigmas is None:
        sigmas = denoise_sigmas(flow_sigmas(steps, shift, kind=schedule), denoise)
    if noise is None:
        noise = initial_noise(tuple(latent_raw.shape), seed, device=latent_raw.device)
    noise = noise.to(latent_raw.device, torch.float32)
    if noise_transform is not None:
        noise = noise_transform(noise)
    if (denoise >= 1.0 and explicit_sigmas is None) or not latent_raw.any():
        x = noise  # text-to-video starts from pure noise, as the official and diffusers loops do
    else:  # partial denoise of a given latent (video-to-video), ComfyUI's convention
        check_finite(latent_raw, "in the latent given to the sampler", "input")
        x = FlowParam.noise_scaling(float(sigmas[0]), noise, normalize_latents(latent_raw.float()))
    ti = 0 if image is None else image.shape[2]
    if image is not None:
        image_norm = normalize_latents(image.to(x.device))  # model space, as the official VAE encode returns it
        x = impose(x, image_norm)
    if neg_context is None and cfg != 1.0:
        raise ValueError(f"cfg={cfg} needs a negative prompt embedding; pass one or set cfg to 1.0")
    cache_run = start_cache(cache, sigmas)  # counts DiT calls; with a cache, reuses branch outputs
    model_fn = FlowParam.wrap(guided_velocity_fn(dit, context, neg_context if cfg != 1.0 else None, cfg, x,
                                                 speed=speed or SpeedOptions(), cache_run=cache_run, hooks=hooks,
                                                 image_frames=ti))
    for wrap in model_wrappers:
        model_fn = wrap(model_fn, sigmas)
    if image is not None:  # outermost: temporal wrappers see the imposed latent, their x0 gets the image back
        model_fn = image_model_fn(model_fn, image_norm)
    dtype = next(dit.parameters()).dtype
    extra = {"seed": seed} if sampler in STOCHASTIC else {}  # per-step noise of lcm
    x0 = sample(model_fn, x, sigmas, callback=finite_guard(sigmas, callback, dtype=dtype), **extra)  # NonFiniteError
    (log.info if cache is not None else log.debug)(cache_run.log_line())
    out = denormalize_latents(check_finite(x0, "after the last step", "sampling", dtype))
    out = out if image is None else impose(out, image.to(out.device))  # the given raw values, bit for bit
    return (out, cache_run.report()) if return_info else out


@dataclass
class WanT2VPipeline:
    """Diffusers-like text-to-video pipeline over wan_core models.

    device=None keeps every model where it is; with `offload=True` (or "models") models wait on the CPU and move to
    `device` only while their stage runs; "blocks" also streams the DiT's blocks one at a time (wan_core.offload).
    `__call__` arguments left at None take `defaults` (from_pretrained reads them from the DiT file).
    """

    dit: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: object
    device: torch.device | str | None = None
    offload: bool | str = False  # False, True / "models", "blocks"
    defaults: SamplingConfig = SamplingConfig()  # what __call__ uses for arguments left at None
    defaults_source: str = OFFICIAL_DEFAULTS  # where `defaults` came from, for messages

    def __post_init__(self):
        if self.device is not None and not self.offload:
            for m in self._modules():
                m.to(self.device)

    def _modules(self):
        return [self.dit, self.vae, self.text_encoder.model]

    @contextlib.contextmanager
    def _stage(self, module: torch.nn.Module):
        if self.offload == "blocks" and module is self.dit and self.device is not None:
            from .offload import stream_blocks  # DiT blocks visit the device one at a time (wan_core.offload)

            with stream_blocks(module, self.device):
                yield
        elif self.offload and self.device is not None:
            module.to(self.device)
            try:
                yield
            finally:
                module.to("cpu")
        else:
            yield

    @classmethod
    def from_pretrained(cls, path=None, *, dit=None, vae=None, text_encoder=None, tokenizer=None, device=None,
                        dtype=None, vae_dtype=None, offload: bool | str = False, verify: bool = True) -> "WanT2VPipeline":
        """Load from a model folder (ComfyUI layout, diffusers folder or official folder) and/or explicit files.

        With no arguments at all the embedded tiny demo model shipped with the pack is used. dtype applies to the DiT
        and the text encoder, vae_dtype to the VAE; None keeps the dtype stored in the file. The generation defaults
        come from the DiT file's metadata when it carries them (the demo model does), else SamplingConfig().
        """
        from .loading import load_dit, load_text_encoder, load_vae, sampling_defaults
        from .model_files import resolve_inputs

        files = resolve_inputs(path, dit=dit, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
        defaults, source = sampling_defaults(files.dit)  # header only: a bad entry fails before any weight is read
        load_on = None if offload else device
        return cls(
            dit=load_dit(files.dit, device=load_on, dtype=dtype, verify=verify),
            vae=load_vae(files.vae, device=load_on, dtype=vae_dtype, verify=verify),
            text_encoder=load_text_encoder(files.text_encoder, tokenizer=files.tokenizer, device=load_on, dtype=dtype,
                                           verify=verify),
            device=device, offload=offload, defaults=defaults, defaults_source=source)

    def load_lora(self, file, strength: float = 1.0, *, verify: bool = True) -> "WanT2VPipeline":
        """Merge a LoRA file into the DiT (fp32 math, stored in the DiT's dtypes; any format wan_core.lora reads).
        Several calls stack; `unload_loras()` restores the base weights bit for bit."""
        from .lora import apply_lora_files

        apply_lora_files(self.dit, [(file, strength)], verify=verify)
        return self

    def unload_loras(self) -> list[tuple[str, float]]:
        """Remove every LoRA from the DiT (the original tensors come back) -> the (name, strength) pairs removed."""
        from .lora import remove_loras

        return remove_loras(self.dit)

    @torch.no_grad()
    def encode_prompt(self, prompt: str | Sequence[str], negative_prompt: str | None = None):
        """-> (context [B, L, D], negative context [B, L, D]); None negative means the official default."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negative = DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
        with self._stage(self.text_encoder.model):
            embeds = self.text_encoder.encode(prompts + [negative])
        ctx = pad_context(embeds[:-1])
        return ctx, pad_context(embeds[-1:])

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str], negative_prompt: str | None = None, *,
                 width: int | None = None, height: int | None = None, num_frames: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 shift: float | None = None, seed: int = 0, sampler: str | None = None, schedule: str | None = None,
                 callback: Callable | None = None, output_type: str = "pt", decode_tile=None,
                 model_wrappers: Sequence[ModelWrapper] = (), hooks=None, temporal=None, deflicker: float = 0.0,
                 image=None, end_image=None, sigmas=None, preset: str | None = None, cache=None,
                 return_info: bool = False, speed: SpeedOptions | None = None):
        """Generate video(s): frames [T, H, W, 3] float in 0..1 for one prompt, [B, T, H, W, 3] for a list.

        Size, length, steps, guidance, shift, sampler and schedule left at None take `self.defaults` (the loaded
        model's; see `defaults_source`).
        output_type: "pt" (frames), "latent" (raw VAE latents [B, 48, T', H/16, W/16]).
        temporal: a wan_core.temporal.options.TemporalOptions (flow-guided x0 smoothing, Enhance-A-Video gain,
            correlated initial noise); None = off.
        deflicker: strength 0..1 of the motion-compensated deflicker applied to the decoded frames
            (wan_core.temporal.deflicker); 0 = off.
        image: image-to-video start image (a Pillow image, an [H, W, 3] uint8 array/tensor or float one in 0..1, or a
            file path): resized (LANCZOS) and centre-cropped to width x height (wan_core.image), VAE-encoded, and the
            video's first frame is fixed to it (wan_core.i2v). None = text-to-video. end_image is refused (the
            released weights condition on the first frame only).
        sigmas: an explicit schedule (1-D, ending in 0; wan_core.few_step builds one from text) instead of
            steps / shift / schedule. preset: "fastwan" or "turbo" (wan_core.few_step.PRESETS: lcm sampler, warped
            timesteps, shift 5, cfg 1; arguments given explicitly still win) for those distilled weights.
        cache: a wan_core.step_cache.StepCacheConfig (EasyCache / MagCache step reuse); None = off.
        return_info: also return a dict with the DiT calls made and skipped ("dit_calls", "dit_skipped", ...).
        speed: a wan_core.speed.SpeedOptions (cfg batching, regional torch.compile, attention backend); None =
            defaults (cfg batching auto, eager, SDPA).
        Raises NonFiniteError (wan_core.guard) when sampling or decoding produces NaN/Inf.
        """
        if preset is not None:
            from .few_step import get_preset

            p = get_preset(preset)
            sampler = p.sampler if sampler is None else sampler
            guidance_scale = p.cfg if guidance_scale is None else guidance_scale
            sigmas = p.sigmas(shift) if sigmas is None else sigmas
            shift = p.shift if shift is None else shift
        s = self.defaults.merged(width=width, height=height, num_frames=num_frames, steps=num_inference_steps,
                                 guidance_scale=guidance_scale, shift=shift, sampler=sampler, schedule=schedule)
        width, height, num_frames = s.width, s.height, s.num_frames
        if output_type not in ("pt", "latent"):
            raise ValueError(f"output_type must be 'pt' or 'latent' (got {output_type!r})")
        if deflicker != 0:  # checked before sampling, not after it
            from .temporal.deflicker import check_strength

            check_strength(deflicker)
        validate_request(width, height, num_frames, WAN22_VAE, tuple(self.dit.cfg.patch_size))
        if end_image is not None:
            raise ValueError(END_IMAGE)
        pixels = None if image is None else prepare_image(image, width, height)[0]  # before any model runs
        shape_noise = None
        if temporal is not None:
            from .temporal.options import build, combine_hooks, noise_transform

            shape_noise = noise_transform(temporal)
            extra_wrappers, extra_hooks = build(temporal)
            model_wrappers, hooks = (*extra_wrappers, *model_wrappers), combine_hooks(extra_hooks, hooks)
        context, neg = self.encode_prompt(prompt, negative_prompt)
        batch = context.shape[0]
        device = self.device if self.device is not None else next(self.dit.parameters()).device
        latent = torch.zeros(latent_shape(num_frames, height, width, WAN22_VAE, batch), device=device)
        image_latent = None
        if pixels is not None:
            with self._stage(self.vae):
                image_latent = encode_image(self.vae, pixels).to(device)  # [1, 48, 1, H/16, W/16] raw
        with self._stage(self.dit):
            z = sample_latents(self.dit, context, neg if s.guidance_scale != 1.0 else None, latent, seed=seed,
                               steps=s.steps, cfg=s.guidance_scale, shift=s.shift, sampler=s.sampler,
                               schedule=s.schedule, callback=callback, model_wrappers=model_wrappers, hooks=hooks,
                               noise_transform=shape_noise, image_latent=image_latent, sigmas=sigmas, cache=cache,
                               return_info=True, speed=speed)
        z, info = z
        if output_type == "latent":
            return (z, info) if return_info else z
        with self._stage(self.vae):
            vae_dtype = next(self.vae.parameters()).dtype
            video = self.vae.decode(z.to(vae_dtype), tile=decode_tile)  # [B, 3, T, H, W]
        check_finite(video, "in the VAE decode output", "decode", vae_dtype)
        frames = ((video.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)  # [B, T, H, W, 3]
        if deflicker > 0:
            from .temporal.deflicker import deflicker as deflicker_frames

            frames = torch.stack([deflicker_frames(clip, deflicker) for clip in frames])
        frames = frames.cpu()
        frames = frames[0] if isinstance(prompt, str) else frames
        return (frames, info) if return_info else frames
