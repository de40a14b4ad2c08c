"""The weight average of the demo DiT's second round: WeightEMA itself, and train_dit with it."""
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.ema import WeightEMA
from wan_core.demo.training.config import TrainConfig, dit_round
from wan_core.demo.training.dit_round import train_dit
from wan_core.demo.training.latent_cache import CacheEntry
from wan_core.demo.training.text import build_text_encoder, train_demo_tokenizer
from wan_core.demo.world import sample_scene
from wan_core.model import WanTransformer

CFG = TrainConfig.smoke()
single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def test_the_average_follows_the_ramped_decay_exactly():
    lin = torch.nn.Linear(2, 1)
    start = [p.detach().clone() for p in lin.parameters()]
    ema = WeightEMA([lin], 0.9)
    assert ema.effective_decay(0) == pytest.approx(0.1) and ema.effective_decay(10_000) == 0.9
    expect = [s.clone() for s in start]
    for step in range(20):
        with torch.no_grad():
            for p in lin.parameters():
                p.add_(1.0)
        d = ema.effective_decay(step)
        expect = [d * e + (1 - d) * p.detach() for e, p in zip(expect, lin.parameters())]
        ema.update([lin], step)
    assert all(torch.allclose(s, e, atol=1e-6) for s, e in zip(ema.shadow, expect))
    last = [p.detach().clone() for p in lin.parameters()]
    assert not any(torch.allclose(s, p) for s, p in zip(ema.shadow, last))  # it lags the weights
    ema.copy_to([lin])
    assert all(torch.equal(p, s) for p, s in zip(lin.parameters(), ema.shadow))


def test_bad_decays_and_other_modules_are_refused_with_the_fix():
    lin = torch.nn.Linear(2, 1)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=f"EMA decay {bad} must lie strictly between 0 and 1"):
            WeightEMA([lin], bad)
    ema = WeightEMA([lin], 0.99)
    with pytest.raises(ValueError, match="same modules"):
        ema.update([lin, torch.nn.Linear(2, 1)], 0)
    with pytest.raises(ValueError, match="modules it was made from"):
        ema.copy_to([torch.nn.Linear(3, 1)])


def _pools():
    scenes = [sample_scene(i, aspect="1:1", n_objects=1) for i in range(3)]
    gen = torch.Generator().manual_seed(0)
    return {"1:1": [CacheEntry(torch.randn(48, 3, 4, 4, generator=gen), sc, torch.ones(3, 4, 4), None)
                    for sc in scenes]}


def test_train_dit_returns_the_average_and_trains_exactly_as_without_it():
    tokenizer, pools = train_demo_tokenizer(CFG), _pools()
    cfg = replace(CFG, dit_steps_round2=6, warmup=2, frame_crop_share_round2=0.0)  # the cache holds no other shape

    def run(c):  # a second round (resume) from fixed weights, recording the weights after every step
        torch.manual_seed(0)
        modules = (WanTransformer(c.dit), build_text_encoder(c.t5, tokenizer.vocab_size))
        start = [p.detach().clone() for m in modules for p in m.parameters()]
        seen = []
        plan = replace(dit_round(c, True), swap_share=0.0)
        dit, text_model, info = train_dit(c, pools, tokenizer, plan=plan, resume=modules, on_step=lambda step, d, t:
                                          seen.append([p.detach().clone() for m in (d, t) for p in m.parameters()]))
        return [p.detach().clone() for m in (dit, text_model) for p in m.parameters()], info, start, seen

    plain, plain_info, _, plain_seen = run(replace(cfg, dit_ema_round2=0.0))
    assert len(plain_seen) == 6 and "ema_decay" not in plain_info
    assert all(torch.equal(a, b) for a, b in zip(plain, plain_seen[-1]))  # off: the last weights
    averaged, info, start, seen = run(replace(cfg, dit_ema_round2=0.5))
    assert info["ema_decay"] == 0.5 and info["last"] == plain_info["last"]  # the same training
    assert all(torch.equal(a, b) for a, b in zip(seen[-1], plain_seen[-1]))
    ramp, expect = WeightEMA([], 0.5), start
    for step, weights in enumerate(seen):
        d = ramp.effective_decay(step)
        expect = [d * e + (1 - d) * w for e, w in zip(expect, weights)]
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(averaged, expect))
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(averaged, plain))  # the check can fail
    c = replace(cfg, dit_steps=2, dit_ema_round2=0.5)
    first_round = train_dit(c, pools, tokenizer, plan=dit_round(c, False))[2]
    assert "ema_decay" not in first_round  # a round-2 value does not reach round 1
