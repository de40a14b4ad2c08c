"""The frame crop of the demo DiT's second round: a share of the steps train on the first latent frames of the cached
clips, with more rows. The causal VAE makes those frames exactly the latents of the clip's first video frames."""
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.training import dit_round as round_module
from wan_core.demo.training.config import TrainConfig, dit_round
from wan_core.demo.training.dit_round import train_dit
from wan_core.demo.training.latent_cache import CacheEntry, first_frames
from wan_core.demo.training.text import train_demo_tokenizer
from wan_core.demo.world import sample_scene
from wan_core.vae import WanVAE

CFG = TrainConfig.smoke()
single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def test_first_frames_cuts_every_per_frame_column_and_keeps_the_rest():
    z, alt = torch.randn(48, 7, 2, 3), torch.randn(48, 7, 2, 3)
    cover = torch.rand(7, 2, 3)
    scene = sample_scene(3, n_objects=1)
    cut = first_frames(CacheEntry(z, scene, cover, alt), 2)
    assert torch.equal(cut.latent, z[:, :2]) and torch.equal(cut.other, alt[:, :2])
    assert torch.equal(cut.cover, cover[:2]) and cut.scene is scene
    assert first_frames(CacheEntry(z, scene, cover, None), 9).latent.shape[1] == 7  # never longer than the clip
    assert first_frames(CacheEntry(z, scene, cover, None), 1).other is None
    with pytest.raises(ValueError, match="frame_crop_frames=0"):
        first_frames(CacheEntry(z, scene, cover, None), 0)


def test_the_first_latent_frames_are_the_latents_of_the_first_video_frames():
    torch.manual_seed(0)
    vae = WanVAE(CFG.vae).eval()
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        whole = vae.encode(video)  # [1, 48, 3, h, w]: frames 1, 2-5, 6-9
        first = vae.encode(video[:, :, :1])
        five = vae.encode(video[:, :, :5])
    assert whole.shape[2] == 3 and first.shape[2] == 1
    assert torch.allclose(whole[:, :, :1], first, atol=1e-5)
    assert torch.allclose(whole[:, :, :2], five, atol=1e-5)
    assert not torch.allclose(whole[:, :, 1:2], first, atol=1e-3)  # the comparison can fail


def test_crop_steps_see_the_first_frames_of_more_rows_and_only_in_round_two(monkeypatch):
    tokenizer = train_demo_tokenizer(CFG)
    torch.manual_seed(0)
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(3)]
    pools = {"1:1": [CacheEntry(torch.randn(48, 3, 4, 4), sc, torch.ones(3, 4, 4), torch.randn(48, 3, 4, 4))
                     for sc in scenes]}
    seen = []
    real = round_module.flow_loss
    monkeypatch.setattr(round_module, "flow_loss", lambda dit, x0, *a, **k: seen.append(tuple(x0.shape)) or
                        real(dit, x0, *a, **k))
    cfg = replace(CFG, dit_steps=6, dit_steps_round2=16, warmup=2, frame_crop_batch=5, frame_crop_frames=1,
                  frame_crop_share_round2=0.5)
    train_dit(cfg, pools, tokenizer, plan=dit_round(cfg, False))
    assert seen == [(2, 48, 3, 4, 4)] * 6  # round 1: no crop
    seen.clear()
    train_dit(cfg, pools, tokenizer, plan=dit_round(cfg, True))
    assert set(seen) == {(2, 48, 3, 4, 4), (5, 48, 1, 4, 4)} and len(seen) == 16
    seen.clear()
    train_dit(cfg, pools, tokenizer, plan=dit_round(replace(cfg, frame_crop_share_round2=0.0), True))
    assert seen == [(2, 48, 3, 4, 4)] * 16  # share 0: none
    with pytest.raises(ValueError, match="frame_crop_batch=0"):
        bad = replace(cfg, frame_crop_batch=0)
        train_dit(bad, pools, tokenizer, plan=dit_round(bad, True))
