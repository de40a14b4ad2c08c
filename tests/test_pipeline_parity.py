"""The whole text-to-video loop vs diffusers `WanPipeline` (expand_timesteps=True, i.e. TI2V-5B) on the same tiny random
weights, sigmas, noise and prompt embeddings, CFG on, UniPC: final latents and decoded frames."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is the parity reference (requirements-dev.txt)")

from wan_core.convert import convert  # noqa: E402
from wan_core.latent_format import WAN22_MEAN, WAN22_STD, normalize_latents  # noqa: E402
from wan_core.model import WanTransformer  # noqa: E402
from wan_core.noise import initial_noise  # noqa: E402
from wan_core.pipeline import sample_latents  # noqa: E402
from wan_core.vae import WanVAE  # noqa: E402

TEXT_DIM = 32


def tiny_models(seed=0):
    torch.manual_seed(seed)
    dit = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=48, out_channels=48,
        text_dim=TEXT_DIM, freq_dim=256, ffn_dim=96, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024).eval()
    vae = diffusers.AutoencoderKLWan(
        base_dim=16, decoder_base_dim=24, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
        temperal_downsample=[False, True, True], dropout=0.0, is_residual=True, in_channels=12, out_channels=12,
        patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=list(WAN22_MEAN),
        latents_std=list(WAN22_STD)).eval()
    # random VAE weights are tiny-variance by default; make them matter
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return dit, vae


def padded(embeds: torch.Tensor, length=512):
    out = torch.zeros(1, length, embeds.shape[-1])
    out[:, : embeds.shape[1]] = embeds
    return out


@pytest.mark.parametrize("steps", [4, 6])
def test_full_loop_matches_wan_pipeline(steps):
    dit_ref, vae_ref = tiny_models()
    dit = WanTransformer.from_state_dict(convert(dit_ref.state_dict(), "dit", "diffusers")[0])
    vae = WanVAE.from_state_dict(convert(vae_ref.state_dict(), "vae", "diffusers")[0])
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(1, 7, TEXT_DIM, generator=g), torch.randn(1, 5, TEXT_DIM, generator=g)
    frames, height, width, shift, cfg = 9, 64, 96, 5.0, 5.0
    noise = initial_noise((1, 48, 3, height // 16, width // 16), seed=11)

    scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                  num_train_timesteps=1000, flow_shift=shift)
    ref_pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=vae_ref, scheduler=scheduler,
                                     transformer=dit_ref, expand_timesteps=True)
    ref_pipe.set_progress_bar_config(disable=True)
    kwargs = dict(height=height, width=width, num_frames=frames, num_inference_steps=steps, guidance_scale=cfg,
                  prompt_embeds=padded(cond), negative_prompt_embeds=padded(uncond), latents=noise.clone())
    ref_latents = ref_pipe(output_type="latent", **kwargs).frames  # normalised latents
    ref_video = ref_pipe(output_type="pt", **kwargs).frames[0]  # [T, 3, H, W] in 0..1

    latent = torch.zeros(1, 48, 3, height // 16, width // 16)
    z = sample_latents(dit, cond, uncond, latent, seed=11, steps=steps, cfg=cfg, shift=shift, sampler="unipc",
                       schedule="diffusers", noise=noise)
    scale = ref_latents.abs().max()
    err = (normalize_latents(z) - ref_latents).abs().max() / scale
    assert err <= 1e-4, f"latent max rel error {err:.2e}"

    video = vae.decode(z)  # [1, 3, T, H, W] in -1..1
    ours = ((video[0].float() + 1) / 2).clamp(0, 1).permute(1, 0, 2, 3)  # [T, 3, H, W]
    assert ours.shape == ref_video.shape == (frames, 3, height, width)
    assert (ours - ref_video).abs().max() <= 1e-4


def test_cfg_and_seed_change_the_result_and_seed_reproduces():
    dit_ref, _ = tiny_models()
    dit = WanTransformer.from_state_dict(convert(dit_ref.state_dict(), "dit", "diffusers")[0])
    cond, uncond = torch.randn(1, 4, TEXT_DIM), torch.randn(1, 4, TEXT_DIM)
    latent = torch.zeros(1, 48, 2, 4, 4)
    run = lambda **kw: sample_latents(dit, cond, uncond, latent, **{"seed": 3, "steps": 3, "cfg": 5.0, **kw})
    a, b = run(), run()
    assert torch.equal(a, b)
    assert not torch.allclose(a, run(seed=4))
    assert not torch.allclose(a, run(cfg=1.0))
    with pytest.raises(ValueError, match="needs a negative prompt"):
        sample_latents(dit, cond, None, latent, seed=0, steps=2, cfg=5.0)
