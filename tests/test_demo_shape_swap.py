"""The shape swap of the demo DiT's second round: rows that see a latent blended towards another shape still learn to
land on the caption's clip; off, or below its sigma floor, the flow loss is untouched."""
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.training.config import TrainConfig, dit_round
from wan_core.demo.training.dit_round import flow_loss, swap_inputs, train_dit
from wan_core.demo.training.latent_cache import CacheEntry, cache_latents, other_shape
from wan_core.demo.training.text import build_text_encoder, encode_text_train, train_demo_tokenizer
from wan_core.demo.world import sample_scene
from wan_core.model import WanTransformer
from wan_core.vae import WanVAE

CFG = TrainConfig.smoke()
PROMPTS = ["a red circle moving left on a blue background", "蓝色背景上，一个红色的方块向左移动"]

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def tokenizer():
    return train_demo_tokenizer(CFG)


def _loss(tokenizer, cfg, **kw):
    """flow_loss of a fixed seeded DiT on fixed latents -> (loss, {sigma, xs, target}) recorded from the DiT call."""
    torch.manual_seed(0)
    dit, text = WanTransformer(CFG.dit), build_text_encoder(CFG.t5, tokenizer.vocab_size)
    x0 = torch.randn(2, 48, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    parts, gen = {}, torch.Generator().manual_seed(0)
    real = dit.forward

    def spy(xs, t, context):
        v = real(xs, t, context)
        parts.update(xs=xs, t=t, v=v)
        return v
    dit.forward = spy
    with torch.no_grad():
        context = encode_text_train(text, tokenizer, PROMPTS)
        loss = flow_loss(dit, x0, context, cfg, gen, shift=cfg.shift, **kw)
    sigma = CFG.shift * (u := torch.rand(2, generator=torch.Generator().manual_seed(0))) / (1 + (CFG.shift - 1) * u)
    parts["sigma"] = sigma.clamp(0.0, 0.999)
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
    noise = (plain_parts["xs"] - (1 - s) * x0) / s
    assert torch.allclose(parts["xs"][0], (1 - s[0]) * x_alt[0] + s[0] * noise[0], atol=1e-4)  # row 0 saw x_alt
    assert torch.equal(parts["xs"][1], plain_parts["xs"][1])  # row 1 (lam 0) is a plain row
    # the loss is the weighted MSE against the velocity that lands on x0 in one Euler jump: (xs - x0) / sigma
    target = (parts["xs"] - x0) / s
    assert torch.allclose(swapped, (parts["v"] - target).pow(2).mean(), rtol=1e-4)
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
    plain = [e for pool in cache_latents(vae, replace(CFG, clips=6)).values() for e in pool]
    entries = [e for pool in cache_latents(vae, replace(CFG, clips=6), swap_shapes=True).values() for e in pool]
    assert len(entries) == 6 and all(e.other is None for e in plain)
    for e in entries:
        if len(e.scene.objects) == 1:
            assert e.other.shape == e.latent.shape and not torch.equal(e.other, e.latent)
        else:
            assert e.other is None
    assert any(e.other is not None for e in entries)
    assert all(torch.equal(a.latent, b.latent) and a.scene == b.scene for a, b in zip(plain, entries))  # same clips


def test_train_dit_applies_the_swap_in_round_two_only(tokenizer):
    torch.manual_seed(0)
    x0, x_alt = torch.randn(2, 48, 2, 4, 4), torch.randn(2, 48, 2, 4, 4)
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(2)]
    pools = {"1:1": [CacheEntry(x0[i], scenes[i], torch.ones(2, 4, 4), x_alt[i]) for i in range(2)]}
    cfg = replace(CFG, dit_steps=4, dit_steps_round2=4, warmup=2, drop_caption=0.0, shape_swap_min_sigma=0.0,
                  frame_crop_share_round2=0.0, dit_ema_round2=0.0)
    first = train_dit(cfg, pools, tokenizer, plan=dit_round(cfg, False))[2]["last"]
    without = {"1:1": [e._replace(other=None) for e in pools["1:1"]]}
    assert train_dit(cfg, without, tokenizer, plan=dit_round(cfg, False))[2]["last"] == first  # round 1: unused
    off = train_dit(cfg, pools, tokenizer, plan=replace(dit_round(cfg, True), swap_share=0.0))[2]["last"]
    on = train_dit(cfg, pools, tokenizer, plan=dit_round(cfg, True))[2]["last"]
    assert on != off
    with pytest.raises(ValueError, match="swap_shapes=True"):
        train_dit(cfg, without, tokenizer, plan=dit_round(cfg, True))


def test_swap_inputs_pick_another_shape_for_captioned_single_objects():
    z = [torch.full((48, 2, 4, 4), float(k)) for k in range(2)]
    scene, two = sample_scene(11, n_objects=1), sample_scene(11, n_objects=2)
    entries = [CacheEntry(z[0], scene, None, z[1]), CacheEntry(z[0], two, None, None),
               CacheEntry(z[0], scene, None, z[1])]
    described = (scene, two, None)  # row 2's caption was dropped: nothing to follow
    x_alt, mix = swap_inputs(entries, described, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(x_alt, torch.stack([z[1], z[0], z[0]])) and mix[0] > 0 and mix[1] == mix[2] == 0
    x_alt, mix = swap_inputs(entries, described, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(mix, torch.zeros(3))
