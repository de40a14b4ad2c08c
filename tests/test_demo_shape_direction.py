"""The shape-direction term of the demo DiT's training: the squared flow residual along x0 - (the clip in another
shape), scaled like one latent value, for the rows that have such a direction."""
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.train import (TrainConfig, shape_direction_loss, shape_directions, train_demo_tokenizer,
                                 train_dit)
from wan_core.demo.world import sample_scene

CFG = TrainConfig.smoke()
single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_the_term_is_the_squared_residual_along_the_unit_direction_per_element():
    v, target, d = _rand(2, 3, 2, 2, 2, seed=1), _rand(2, 3, 2, 2, 2, seed=2), _rand(2, 3, 2, 2, 2, seed=3)
    r, n = (v - target).flatten(1), 3 * 2 * 2 * 2
    p = (r * d.flatten(1)).sum(1) / d.flatten(1).norm(dim=1)
    assert torch.allclose(shape_direction_loss(v, target, d), (p ** 2 / n).mean())
    assert shape_direction_loss(target, target, d).item() == 0.0  # no residual, no term
    # a residual orthogonal to d costs nothing, however large
    ortho = r[0] - (r[0] @ d[0].flatten()) / d[0].flatten().norm() ** 2 * d[0].flatten()
    v_ortho = target.clone()
    v_ortho[0] += 100 * ortho.view(3, 2, 2, 2)
    d_one = d.clone()
    d_one[1] = 0
    assert shape_direction_loss(v_ortho, target, d_one).abs().item() < 1e-6


def test_rows_without_a_direction_are_left_out_and_its_gradient_lies_along_d():
    v = _rand(2, 4, 1, 2, 2, seed=4).requires_grad_()
    target, d = _rand(2, 4, 1, 2, 2, seed=5), _rand(2, 4, 1, 2, 2, seed=6)
    d[1] = 0
    loss = shape_direction_loss(v, target, d)
    only_row0 = shape_direction_loss(v[:1], target[:1], d[:1])
    assert torch.allclose(loss, only_row0)  # the mean runs over the rows that have a direction
    loss.backward()
    assert torch.count_nonzero(v.grad[1]) == 0
    g, dd = v.grad[0].flatten(), d[0].flatten()
    assert torch.allclose(g, (g @ dd) / (dd @ dd) * dd, atol=1e-6)  # parallel to d
    assert shape_direction_loss(v, target, torch.zeros_like(d)).item() == 0.0


def test_directions_come_from_described_single_objects_with_a_cached_other_shape():
    x0, alt = _rand(4, 2, 1, 1, seed=7), _rand(4, 2, 1, 1, seed=8)
    single = sample_scene(1, n_objects=1)
    items = [(x0[0], None, None, None, alt[0]),  # described single object with its other shape
             (x0[1], None, None, None, alt[1]),  # caption dropped: nothing to follow
             (x0[2], None, None, None, None),  # two objects: no other-shape latent
             (x0[3], None, None, None)]  # a cache without the swap
    d = shape_directions(items, (single, None, single, single))
    assert torch.equal(d[0], x0[0] - alt[0])
    assert not d[1:].any()


def test_train_dit_adds_the_term_only_when_on_and_needs_the_other_shapes():
    tokenizer = train_demo_tokenizer(CFG)
    torch.manual_seed(0)
    x0, x_alt = torch.randn(2, 48, 2, 4, 4), torch.randn(2, 48, 2, 4, 4)
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(2)]
    pools = {"1:1": [(x0[i], scenes[i], torch.ones(2, 4, 4), torch.zeros(2, 4, 4), x_alt[i]) for i in range(2)]}
    cfg = replace(CFG, dit_steps=4, warmup=2, drop_caption=0.0)
    off = train_dit(cfg, pools, tokenizer)[2]
    on = train_dit(replace(cfg, shape_direction_weight=5.0), pools, tokenizer)[2]
    second = train_dit(replace(cfg, shape_direction_weight_round2=5.0), pools, tokenizer)[2]  # a round-2 value
    assert "shape_direction_last" not in off and "shape_direction_last" not in second
    assert second["last"] == off["last"]
    assert len(on["shape_direction_last"]) == 4 and all(v > 0 for v in on["shape_direction_last"])
    assert on["last"][0] == off["last"][0] and on["last"][1:] != off["last"][1:]  # it changes the updates only
    with pytest.raises(ValueError, match="swap_shapes=True"):
        train_dit(replace(cfg, shape_direction_weight=5.0), {"1:1": [item[:4] for item in pools["1:1"]]}, tokenizer)
