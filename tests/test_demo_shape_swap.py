"""The shape swap of the demo DiT's training: rows that see a latent blended towards another shape still learn to land
on the caption's clip; off, or below its sigma floor, the flow loss is untouched."""
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.train import (TrainConfig, build_text_encoder, cache_latents, flow_loss, other_shape,
                                 swap_inputs, train_demo_tokenizer, train_dit)
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
    third = other_shape(scene, 4, third=True)
    assert {scene.objects[0].shape, alt.objects[0].shape, third.objects[0].shape} == {"circle", "square", "triangle"}
    assert replace(third.objects[0], shape=scene.objects[0].shape) == scene.objects[0]


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
    blob = [e for pool in cache_latents(vae, replace(CFG, clips=6), swap_shapes=True, all_shapes=True).values()
            for e in pool]
    assert all(len(e) == 6 for e in blob)
    for (z, scene, _, _, z_alt), (_, _, _, _, z_alt2, z_third) in zip(entries, blob):
        if len(scene.objects) == 1:
            assert torch.equal(z_alt2, z_alt) and not torch.equal(z_third, z) and not torch.equal(z_third, z_alt)
        else:
            assert z_third is None


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
    thirds = {"1:1": [item + (torch.randn(48, 2, 4, 4),) for item in pools["1:1"]]}
    assert train_dit(replace(cfg, shape_swap_share=1.0), thirds, tokenizer)[2]["last"] == on  # blob off: unused
    with pytest.raises(ValueError, match="all_shapes=True"):
        train_dit(replace(cfg, shape_swap_share=1.0, shape_swap_blob=1.0), pools, tokenizer)


def test_swap_inputs_pick_another_shape_or_the_blob_of_all_three():
    z = [torch.full((48, 2, 4, 4), float(k)) for k in range(3)]
    scene, two = sample_scene(11, n_objects=1), sample_scene(11, n_objects=2)
    items = [(z[0], scene, None, None, z[1], z[2]), (z[0], two, None, None, None, None),
             (z[0], scene, None, None, z[1], z[2])]
    described = (scene, two, None)  # row 2's caption was dropped: nothing to follow
    x_alt, mix = swap_inputs(items, described, 1.0, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(x_alt, torch.stack([z[1], z[0], z[0]])) and mix[0] > 0 and mix[1] == mix[2] == 0
    x_alt, mix = swap_inputs(items, described, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(x_alt[0], torch.full_like(z[0], 1.0)) and torch.equal(x_alt[1:], torch.stack([z[0], z[0]]))
    x_alt, mix = swap_inputs(items, described, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(mix, torch.zeros(3))


def test_own_step_rows_start_from_the_dits_own_euler_step_and_still_land_on_the_true_clip(tokenizer):
    cfgs = [replace(CFG, shape_swap_min_sigma=0.0)]
    x0 = torch.randn(2, 48, 2, 4, 4, generator=torch.Generator().manual_seed(3))

    def run(share, silent=False):
        dit, text = _models(tokenizer)
        if silent:  # a DiT whose velocity is 0: its Euler step stays at x_hi = (1 - s_hi) x0 + s_hi noise
            torch.nn.init.zeros_(dit.head.head.weight)
            torch.nn.init.zeros_(dit.head.head.bias)
        parts = {}
        with torch.no_grad():
            loss = flow_loss(dit, text, tokenizer, x0, PROMPTS, cfgs[-1], torch.Generator().manual_seed(0),
                             parts=parts, own_step_share=share)
        return loss, parts

    plain, p0 = run(0.0)
    own, p1 = run(1.0)
    s = p1["sigma"].view(2, 1, 1, 1, 1)
    assert torch.equal(p0["sigma"], p1["sigma"]) and own.item() != plain.item()
    assert torch.allclose(p1["xs"] - s * p1["target"], x0, atol=1e-4)  # one Euler jump lands on x0
    assert not torch.allclose(p1["xs"], p0["xs"], atol=1e-3)
    _, quiet = run(1.0, silent=True)
    noise = (p0["xs"] - (1 - s) * x0) / s
    reach = ((quiet["xs"] - x0) / (noise - x0)).flatten(1)  # = s_hi in every element of a row
    assert torch.allclose(reach, reach[:, :1].expand_as(reach), atol=1e-3)
    assert (reach[:, 0] >= p0["sigma"] - 1e-4).all() and (reach[:, 0] <= 1.0).all()
    cfgs.append(replace(CFG, shape_swap_min_sigma=1.0))
    below, _ = run(1.0)
    assert below.item() == plain.item()  # no row at the sigma floor or above: the plain loss
