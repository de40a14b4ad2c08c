"""The frame crop of the demo DiT's training: a share of the steps train on the first latent frames of the cached
clips, with more rows. The causal VAE makes those frames exactly the latents of the clip's first video frames."""
from dataclasses import replace

import pytest
import torch

import wan_core.demo.train as train
from tests._temporal_synth import one_thread
from wan_core.demo.train import TrainConfig, first_frames, train_demo_tokenizer, train_dit
from wan_core.demo.world import sample_scene
from wan_core.vae import WanVAE

CFG = TrainConfig.smoke()
single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def test_first_frames_cuts_every_per_frame_column_and_keeps_the_rest():
    z, alt = torch.randn(48, 7, 2, 3), torch.randn(48, 7, 2, 3)
    cover, diff = torch.rand(7, 2, 3), torch.rand(7, 2, 3)
    scene = sample_scene(3, n_objects=1)
    cut = first_frames((z, scene, cover, diff, alt, None), 2)
    assert torch.equal(cut[0], z[:, :2]) and torch.equal(cut[4], alt[:, :2])
    assert torch.equal(cut[2], cover[:2]) and torch.equal(cut[3], diff[:2])
    assert cut[1] is scene and cut[5] is None and len(cut) == 6
    assert first_frames((z, scene, cover, diff), 9)[0].shape[1] == 7  # never longer than the clip
    with pytest.raises(ValueError, match="frame_crop_frames=0"):
        first_frames((z, scene, cover, diff), 0)


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


def test_crop_steps_see_the_first_frames_of_more_rows_and_only_when_on(monkeypatch):
    tokenizer = train_demo_tokenizer(CFG)
    torch.manual_seed(0)
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(3)]
    pools = {"1:1": [(torch.randn(48, 3, 4, 4), sc, torch.ones(3, 4, 4), torch.zeros(3, 4, 4)) for sc in scenes]}
    seen = []
    real = train.flow_loss
    monkeypatch.setattr(train, "flow_loss", lambda dit, tm, tok, x0, *a, **k: seen.append(tuple(x0.shape)) or
                        real(dit, tm, tok, x0, *a, **k))
    cfg = replace(CFG, dit_steps=6, warmup=2, frame_crop_batch=5, frame_crop_frames=1)
    off = train_dit(cfg, pools, tokenizer)[2]
    assert seen == [(2, 48, 3, 4, 4)] * 6
    seen.clear()
    second_only = train_dit(replace(cfg, frame_crop_share_round2=1.0), pools, tokenizer)[2]  # not a round-2 run
    assert seen == [(2, 48, 3, 4, 4)] * 6 and second_only["last"] == off["last"]
    seen.clear()
    train_dit(replace(cfg, frame_crop_share=0.5), pools, tokenizer)
    assert set(seen) == {(2, 48, 3, 4, 4), (5, 48, 1, 4, 4)}
    with pytest.raises(ValueError, match="frame_crop_batch=0"):
        train_dit(replace(cfg, frame_crop_share=0.5, frame_crop_batch=0), pools, tokenizer)
