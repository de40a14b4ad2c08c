"""cfg batching (cond and uncond in one DiT forward on a batch of 2B): the same results as two forwards within 1e-6,
for text-to-video and image-to-video (per-token timesteps), different-length prompts, latent batches, step caching;
one forward per step; the auto rule and option checks."""
import pytest
import torch

from tests.tiny_models import TINY_DIT, tiny_dit_state_dict
from wan_core.model import WanTransformer
from wan_core.noise import initial_noise
from wan_core.pipeline import dit_pair_fn, dit_velocity_fn, sample_latents
from wan_core.speed import CPU_CFG_BATCH, SpeedOptions, branch_activation_bytes, use_cfg_batch
from wan_core.step_cache import StepCacheConfig

TOL = 1e-6
SHAPE = (1, TINY_DIT.in_dim, 3, 4, 4)  # latent [B, 48, T, H, W]: 3 x 2 x 2 tokens


@pytest.fixture(scope="module")
def dit():
    return WanTransformer.from_state_dict(tiny_dit_state_dict(), TINY_DIT).eval()


def contexts(pos_len=5, neg_len=9, batch=1):
    """Prompt embeddings of different lengths (the negative prompt is longer, as the official one)."""
    return (initial_noise((batch, pos_len, TINY_DIT.text_dim), 11), initial_noise((1, neg_len, TINY_DIT.text_dim), 12))


def sample(dit, cfg_batch, shape=SHAPE, batch=1, image=None, **kw):
    ctx, neg = contexts(batch=batch)
    latent = torch.zeros(shape[0] * batch if batch > 1 else shape[0], *shape[1:])
    return sample_latents(dit, ctx, neg, latent, seed=3, steps=kw.pop("steps", 4), cfg=5.0, image_latent=image,
                          speed=SpeedOptions(cfg_batch=cfg_batch), return_info=True, **kw)


def max_diff(a, b):
    return (a - b).abs().max().item()


def rel_diff(a, b):
    """Max abs difference relative to the largest value: the batched Conv3d patch embedding (batch 2B) rounds
    differently from batch B in the last bit (~1 ulp per DiT call), and cfg 5 and the raw-latent scale amplify it."""
    return max_diff(a, b) / b.abs().max().item()


def test_pair_equals_two_forwards_with_different_context_lengths(dit):
    ctx, neg = contexts(pos_len=3, neg_len=17)
    x, sigma = initial_noise(SHAPE, 1), torch.tensor([0.7])
    v_cond, v_uncond = dit_pair_fn(dit, ctx, neg)(x, sigma)
    assert v_cond.shape == v_uncond.shape == SHAPE
    assert max_diff(v_cond, dit_velocity_fn(dit, ctx)(x, sigma)) <= TOL
    assert max_diff(v_uncond, dit_velocity_fn(dit, neg)(x, sigma)) <= TOL
    assert max_diff(v_cond, v_uncond) > 1e-3  # the halves really got different prompts


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_text_to_video_batched_equals_sequential(dit, sampler):
    seq, seq_info = sample(dit, "off", sampler=sampler)
    bat, bat_info = sample(dit, "on", sampler=sampler)
    assert rel_diff(seq, bat) <= TOL
    assert seq_info["dit_calls"] == bat_info["dit_calls"] == 8  # 4 steps x 2 branches, counted per branch


def test_latent_batch_of_two(dit):
    seq, _ = sample(dit, "off", batch=2)
    bat, _ = sample(dit, "on", batch=2)
    assert seq.shape[0] == 2 and rel_diff(seq, bat) <= TOL


def test_image_to_video_per_token_timesteps(dit):
    image = initial_noise((1, TINY_DIT.in_dim, 1, 4, 4), 9)  # a raw start-image latent
    seq, _ = sample(dit, "off", image=image)
    bat, _ = sample(dit, "on", image=image)
    assert torch.equal(bat[:, :, :1], image)  # the image frame is imposed on the batched path too
    assert rel_diff(seq, bat) <= TOL


def test_step_cache_decides_the_same_on_both_paths(dit):
    cache = StepCacheConfig(method="easycache", threshold=0.3, warmup=0.2)
    seq, seq_info = sample(dit, "off", steps=12, cache=cache)
    bat, bat_info = sample(dit, "on", steps=12, cache=cache)
    assert seq_info["dit_skipped"] > 0  # the cache really reused steps
    assert (bat_info["dit_calls"], bat_info["dit_skipped"]) == (seq_info["dit_calls"], seq_info["dit_skipped"])
    assert rel_diff(seq, bat) <= TOL


def test_one_forward_per_step_when_batched(dit):
    seen = []
    handle = dit.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        sample(dit, "on")
        batched = list(seen)
        seen.clear()
        sample(dit, "off")
    finally:
        handle.remove()
    assert batched == [2] * 4  # 4 steps, each one forward on a batch of 2
    assert seen == [1] * 8


def test_cfg_one_never_batches(dit):
    ctx, _ = contexts()
    seen = []
    handle = dit.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        sample_latents(dit, ctx, None, torch.zeros(SHAPE), seed=0, steps=2, cfg=1.0,
                       speed=SpeedOptions(cfg_batch="on"))
    finally:
        handle.remove()
    assert seen == [1, 1]


def test_auto_rule_and_options():
    x = torch.zeros(SHAPE)
    assert use_cfg_batch("on", x, TINY_DIT) and not use_cfg_batch("off", x, TINY_DIT)
    assert use_cfg_batch("auto", x, TINY_DIT) is CPU_CFG_BATCH  # CPU: the measured default
    # TI2V-5B at 1280x704x121 (latent 31 x 44 x 80, 27280 tokens, dim 3072): a few GB per branch
    big = branch_activation_bytes(torch.empty(1, 48, 31, 44, 80, device="meta"), 3072, (1, 2, 2), False)
    assert 2e9 < big < 8e9
    with pytest.raises(ValueError, match="cfg_batch must be one of"):
        SpeedOptions(cfg_batch="yes")
    with pytest.raises(ValueError, match="cfg_batch must be one of"):
        use_cfg_batch("maybe", x, TINY_DIT)


def test_speed_options_node(monkeypatch):
    import sys

    from nodes import NODE_CLASS_MAPPINGS
    from nodes.sampling import SamplerOptions

    node = NODE_CLASS_MAPPINGS["WanT2VSpeedOptions"]()
    base = SamplerOptions(step_cache=StepCacheConfig())
    out = node.options("on", True, "sdpa", options=base)[0]
    assert out.speed == SpeedOptions(cfg_batch="on", compile=True) and out.step_cache == base.step_cache
    monkeypatch.setitem(sys.modules, "sageattention", None)  # not importable, even where installed
    with pytest.raises(ValueError, match="pip install sageattention"):
        node.options("auto", False, "sage")
