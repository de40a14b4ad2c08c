"""Print the measured parity errors of wan_core vs diffusers on tiny random weights (fp32, CPU), one table.

    python benchmarks/parity_report.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffusers  # noqa: E402

from tests.test_pipeline_parity import TEXT_DIM, padded, tiny_models  # noqa: E402
from wan_core.convert import convert  # noqa: E402
from wan_core.latent_format import normalize_latents  # noqa: E402
from wan_core.model import WanTransformer  # noqa: E402
from wan_core.noise import initial_noise  # noqa: E402
from wan_core.pipeline import sample_latents  # noqa: E402
from wan_core.vae import WanVAE  # noqa: E402


@torch.no_grad()
def main():
    torch.set_num_threads(1)
    dit_ref, vae_ref = tiny_models()
    dit = WanTransformer.from_state_dict(convert(dit_ref.state_dict(), "dit", "diffusers")[0])
    vae = WanVAE.from_state_dict(convert(vae_ref.state_dict(), "vae", "diffusers")[0])
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(1, 7, TEXT_DIM, generator=g), torch.randn(1, 5, TEXT_DIM, generator=g)
    rows = []
    x = torch.randn(1, 48, 3, 4, 6, generator=g)
    for t in (999.0, 500.0, 20.0):
        ours = dit(x, torch.tensor([t]), cond)
        ref = dit_ref(hidden_states=x, timestep=torch.full((1, 18), t), encoder_hidden_states=padded(cond),
                      return_dict=False)[0]
        rows.append((f"DiT forward t={t:g} (per-token t in diffusers)", (ours - ref).abs().max() / ref.abs().max()))
    video = torch.rand(1, 3, 9, 64, 96, generator=g) * 2 - 1
    z_ours, z_ref = vae.encode(video), vae_ref.encode(video).latent_dist.mode()
    rows.append(("VAE encode (mu)", (z_ours - z_ref).abs().max() / z_ref.abs().max()))
    v_ours, v_ref = vae.decode(z_ref), vae_ref.decode(z_ref).sample
    rows.append(("VAE decode", (v_ours - v_ref).abs().max() / v_ref.abs().max()))
    for steps in (4, 8):
        noise = initial_noise((1, 48, 3, 4, 6), seed=11)
        sched = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                  num_train_timesteps=1000, flow_shift=5.0)
        pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=vae_ref, scheduler=sched,
                                     transformer=dit_ref, expand_timesteps=True)
        pipe.set_progress_bar_config(disable=True)
        ref = pipe(height=64, width=96, num_frames=9, num_inference_steps=steps, guidance_scale=5.0,
                   prompt_embeds=padded(cond), negative_prompt_embeds=padded(uncond), latents=noise.clone(),
                   output_type="latent").frames
        z = sample_latents(dit, cond, uncond, torch.zeros(1, 48, 3, 4, 6), seed=11, steps=steps, cfg=5.0, shift=5.0,
                           sampler="unipc", schedule="diffusers", noise=noise)
        rows.append((f"WanPipeline loop, UniPC {steps} steps, CFG 5 (latents)",
                     (normalize_latents(z) - ref).abs().max() / ref.abs().max()))
    print(f"{'comparison (fp32, CPU, tiny random weights)':<58}{'max |diff| / max |ref|':>24}")
    for name, err in rows:
        print(f"{name:<58}{float(err):>24.2e}")


if __name__ == "__main__":
    main()
