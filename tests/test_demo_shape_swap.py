"""The shape swap of the demo DiT's training: rows that see a latent blended towards another shape still learn to land
on the caption's clip; off, or below its sigma floor, the flow loss is untouched."""
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.train import (TrainConfig, build_text_encoder, cache_latents, flow_loss, other_shape,
                                 train_demo_tokenizer, train_dit)
from wan_core.demo.world import sample_scene
from wan_core.model import WanTransformer
from wan_core.vae import WanVAE

CFG = TrainConfig.smoke()
PROMPTS = ["a red circle moving left on a blue background", "蓝色背景上，一个红色的方块向左移动"]

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def tokenizer():
    return train_demo_tokenizer(CFG)


def _models(tokenizer):
    torch.manual_seed(0)
    return WanTransformer(CFG.dit), build_text_encoder(CFG.t5, tokenizer.vocab_size)


def _loss(tokenizer, cfg, **kw):
    dit, text = _models(tokenizer)
    x0 = torch.randn(2, 48, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    parts = {}
    with torch.no_grad():
        loss = flow_loss(dit, text, tokenizer, x0, PROMPTS, cfg, torch.Generator().manual_seed(0), parts=parts, **kw)
    return loss, parts, x0


def test_swap_off_or_below_its_sigma_floor_leaves_the_loss_unchanged(tokenizer):
    plain, _, _ = _loss(tokenizer, CFG)
    x_alt = torch.randn(2, 48, 2, 4, 4)
    zero, _, _ = _loss(tokenizer, CFG, x_alt=x_alt, alt_mix=torch.zeros(2))
    floor, _, _ = _loss(tokenizer, replace(CFG, shape_swap_min_sigma=1.0), x_alt=x_alt, alt_mix=torch.ones(2))
    assert zero.item() == plain.item() and floor.item() == plain.item()


def test_swapped_rows_see_the_other_latent_and_are_still_steered_to_the_true_one(tokenizer):
    cfg = replace(CFG, shape_swap_min_sigma=0.0)
    plain, plain_parts, x0 = _loss(tokenizer, cfg)
    x_alt = torch.randn(2, 48, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    mix = torch.tensor([1.0, 0.0])
    swapped, parts, _ = _loss(tokenizer, cfg, x_alt=x_alt, alt_mix=mix)
    s = parts["sigma"].view(2, 1, 1, 1, 1)
    assert torch.allclose(parts["xs"] - s * parts["target"], x0, atol=1e-4)  # one Euler jump lands on x0
    noise = (plain_parts["xs"] - (1 - s) * x0) / s
    assert torch.allclose(parts["xs"][0], (1 - s[0]) * x_alt[0] + s[0] * noise[0], atol=1e-4)  # row 0 saw x_alt
    assert torch.equal(parts["xs"][1], plain_parts["xs"][1])  # row 1 (lam 0) is a plain row
    assert swapped.item() != plain.item()


def test_other_shape_changes_only_the_shape_of_a_single_object():
    scene = sample_scene(11, n_objects=1)
    alt = other_shape(scene, 4)
    assert alt.objects[0].shape != scene.objects[0].shape
    assert replace(alt.objects[0], shape=scene.objects[0].shape) == scene.objects[0]
    assert (alt.background, alt.width, alt.two_tone) == (scene.background, scene.width, scene.two_tone)
    assert other_shape(scene, 4) == alt  # deterministic
    assert other_shape(sample_scene(11, n_objects=2), 4) is None


def test_cache_with_swap_shapes_holds_the_other_shape_latent():
    torch.manual_seed(0)
    vae = WanVAE(CFG.vae).eval()
    plain = cache_latents(vae, replace(CFG, clips=6))
    pools = cache_latents(vae, replace(CFG, clips=6), swap_shapes=True)
    entries = [e for pool in pools.values() for e in pool]
    assert len(entries) == 6 and all(len(e) == 5 for e in entries)
    assert all(len(e) == 4 for pool in plain.values() for e in pool)
    for z, scene, _, _, z_alt in entries:
        if len(scene.objects) == 1:
            assert z_alt.shape == z.shape and not torch.equal(z_alt, z)
        else:
            assert z_alt is None
    assert torch.equal(entries[0][0], [e for pool in plain.values() for e in pool][0][0])  # same clips as plain


def test_train_dit_applies_the_swap_only_when_on(tokenizer):
    torch.manual_seed(0)
    x0, x_alt = torch.randn(2, 48, 2, 4, 4), torch.randn(2, 48, 2, 4, 4)
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(2)]
    pools = {"1:1": [(x0[i], scenes[i], torch.ones(2, 4, 4), torch.zeros(2, 4, 4), x_alt[i]) for i in range(2)]}
    cfg = replace(CFG, dit_steps=4, warmup=2, drop_caption=0.0, shape_swap_min_sigma=0.0)
    off = train_dit(cfg, pools, tokenizer)[2]["last"]
    on = train_dit(replace(cfg, shape_swap_share=1.0), pools, tokenizer)[2]["last"]
    four = {"1:1": [item[:4] for item in pools["1:1"]]}
    assert train_dit(cfg, four, tokenizer)[2]["last"] == off  # the alt latent is unused while the swap is off
    assert on != off
