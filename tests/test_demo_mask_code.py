"""The demo VAE's mask code: its target, its checks, the decoder's blur and a few training steps."""
import random
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.mask_code import MASK_MEAN, MASK_STD, blur_rest, check_channels, mask_target
from wan_core.demo.training.config import TrainConfig
from wan_core.demo.training import vae_stage
from wan_core.demo.training.vae_stage import vae_crops, vae_losses
from wan_core.demo.world import OBJECT_COLOURS, background_image, coverage, render, sample_scene
from wan_core.vae import WanVAE

class _Remembering:
    """A stand-in for world.render: random frames, the last ones kept."""

    def __call__(self, scene):
        self.last = torch.rand(scene.frames, scene.height, scene.width, 3)
        return self.last


single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)
INSIDE, OUTSIDE = (1 - MASK_MEAN) / MASK_STD, (0 - MASK_MEAN) / MASK_STD


def test_coverage_is_the_mask_render_blends_with():
    scene = sample_scene(5, n_objects=1)
    cov = coverage(scene)[..., None]
    colour = torch.tensor(OBJECT_COLOURS[scene.objects[0].colour])
    expected = background_image(scene) * (1 - cov) + colour * cov
    assert torch.allclose(render(scene), expected.clamp(0, 1), atol=1e-6)
    pair = sample_scene(7, n_objects=2)
    assert coverage(pair).amax() == 1.0 and coverage(pair).amin() == 0.0


def test_mask_target_puts_each_sub_block_in_its_channel_and_averages_each_chunk():
    alpha = torch.zeros(1, 1, 5, 32, 32)  # 5 frames -> latent frames [0], [1-4]; 2x2 latent pixels
    alpha[:, :, 0, 0:4, 4:8] = 1  # frame 0: sub-block (row 0, col 1) of latent pixel (0, 0)
    alpha[:, :, 1:3, 16:20, 28:32] = 1  # half of the chunk: sub-block (0, 3) of latent pixel (1, 1)
    code = mask_target(alpha, 16)
    assert code.shape == (1, 16, 2, 2, 2)
    assert code[0, 1, 0, 0, 0] == pytest.approx(INSIDE)
    assert code[0, 3, 1, 1, 1] == pytest.approx((0.5 - MASK_MEAN) / MASK_STD)
    assert int((code != OUTSIDE).sum()) == 2
    four = mask_target(alpha, 4)  # 8 px sub-blocks: the first one covers a quarter of sub-block (0, 0)
    assert four[0, 0, 0, 0, 0] == pytest.approx((0.25 - MASK_MEAN) / MASK_STD)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        mask_target(torch.zeros(1, 1, 4, 16, 16), 16)


@pytest.mark.parametrize("channels", [-1, 0, 3, 9, 64])
def test_bad_channel_counts_name_the_fix(channels):
    with pytest.raises(ValueError, match=f"vae_mask_channels={channels}.*1, 4 \\(8 px sub-blocks\\) or 16"):
        check_channels(channels, 48)
    assert check_channels(16, 48) == 4


def test_blur_rest_keeps_the_code_and_blurs_only_chosen_rows():
    z = torch.zeros(2, 20, 1, 5, 5)
    z[:, :, :, 2, 2] = 9.0
    gen = torch.Generator().manual_seed(0)
    assert blur_rest(z, 16, 0.0, gen) is z
    out = blur_rest(z, 16, 1.0, gen)
    assert torch.equal(out[:, :16], z[:, :16])
    assert out[0, 16, 0, 2, 2] == pytest.approx(1.0) and out[0, 16, 0, 1, 1] == pytest.approx(1.0)
    assert out[0, 16, 0, 0, 0] == 0.0
    assert torch.equal(blur_rest(torch.ones(2, 20, 1, 5, 5), 16, 1.0, gen), torch.ones(2, 20, 1, 5, 5))


def test_the_crops_carry_the_coverage_of_their_pixels_and_training_learns_the_code(monkeypatch):
    cfg = replace(TrainConfig.smoke(), vae_crop=32, vae_batch=2)
    video, alpha = vae_crops(cfg, random.Random(4))
    assert video.shape == (2, 3, cfg.vae_frames, 32, 32) and alpha.shape == (2, 1, cfg.vae_frames, 32, 32)
    assert 0 <= alpha.min() and alpha.max() <= 1 and alpha.mean() > 0.05  # cropped near an object
    with monkeypatch.context() as m:  # frames whose red channel is their coverage: the two crops must match
        render = _Remembering()
        m.setattr(vae_stage, "render", render)
        m.setattr(vae_stage, "coverage", lambda sc: render.last[..., 0])
        marked, same = vae_crops(cfg, random.Random(4))
    assert torch.allclose((marked[:, :1] + 1) / 2, same, atol=1e-6)
    assert not torch.allclose(marked[:, :1], marked[:, 1:2])  # the check can fail
    torch.manual_seed(0)
    vae = WanVAE(cfg.vae).train()
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)

    def mask():
        return vae_losses(vae, video, alpha, cfg, torch.Generator().manual_seed(0))["mask"]
    first = mask().item()
    for _ in range(10):
        opt.zero_grad()
        vae_losses(vae, video, alpha, cfg, torch.Generator().manual_seed(0))["loss"].backward()
        opt.step()
    assert mask().item() < 0.7 * first
