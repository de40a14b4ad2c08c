"""One video on several processes (wan_core.distributed), on the CPU with gloo and 2 processes (torch.multiprocessing
spawn): the Ulysses-parallel DiT forward (odd token count -> padding; text-to-video and per-token image-to-video
timesteps), the CFG-parallel guided step and whole generations (the demo model through DistributedPipeline: text
encoder on rank 0 + broadcast, decode on rank 0; CFG-parallel sampling) equal the single-process results within 1e-5;
a Ulysses size that does not divide the head count and a wrong process count are refused.

All parallel checks run in ONE spawn (one process-group start, ~10 s on 2 cores); the parent asserts on the numbers
each rank saved, so a failure names the check."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.tiny_models import tiny_dit_state_dict
from wan_core.config import WanConfig
from wan_core.distributed.plan import check_world
from wan_core.distributed.ulysses import check_ulysses, padded_length, shard_tokens, valid_sizes

TOL = 1e-5
CFG4 = WanConfig(dim=128, ffn_dim=256, num_heads=4, num_layers=2, text_dim=32, freq_dim=32)  # head_dim 32
SHAPE = (2, CFG4.in_dim, 3, 6, 2)  # latent [B, 48, T, H, W] -> token grid (3, 3, 1): 9 tokens, odd for U = 2
GEN = dict(width=96, height=96, num_frames=9, num_inference_steps=3, seed=5)  # demo model: 3 x 3 x 3 = 27 tokens


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def _forward_checks(rank, out):
    from wan_core.distributed.dit import parallel_hooks
    from wan_core.distributed.plan import make_plan
    from wan_core.i2v import token_timesteps
    from wan_core.model import WanTransformer
    from wan_core.noise import initial_noise

    try:
        make_plan(3, 2, False)
        out["refused_3_heads"] = ""
    except ValueError as e:
        out["refused_3_heads"] = str(e)
    dit = WanTransformer.from_state_dict(tiny_dit_state_dict(CFG4), CFG4).eval()
    x, ctx = initial_noise(SHAPE, 1), initial_noise((2, 7, CFG4.text_dim), 2)
    t = torch.tensor([700.0, 250.0])
    sp = parallel_hooks(make_plan(CFG4.num_heads, 2, False), CFG4.num_layers)
    with torch.no_grad():
        ref = dit(x, t, ctx)
        out["forward"] = max_diff(dit(x, t, ctx, hooks=sp), ref)
        out["forward_scale"] = ref.abs().max().item()
        tt = token_timesteps(t, (3, 3, 1), 1)  # image-to-video: the first latent frame's tokens at t = 0
        out["forward_i2v"] = max_diff(dit(x, tt, ctx, hooks=sp), dit(x, tt, ctx))
    return dit


def _cfg_checks(dit, out):
    from wan_core.distributed.dit import parallel_hooks
    from wan_core.distributed.plan import make_plan
    from wan_core.guidance import cfg_pair_velocity_fn
    from wan_core.noise import initial_noise
    from wan_core.pipeline import dit_pair_fn, sample_latents
    from wan_core.speed import SpeedOptions

    plan = make_plan(CFG4.num_heads, 1, True)  # 2 ranks = U 1 x 2 branches
    hooks = parallel_hooks(plan, CFG4.num_layers)
    x, ctx, neg = initial_noise(SHAPE[1:], 3)[None], initial_noise((1, 5, 32), 4), initial_noise((1, 9, 32), 5)
    sigma = torch.tensor([0.6])
    with torch.no_grad():
        ref = cfg_pair_velocity_fn(dit_pair_fn(dit, ctx, neg), 5.0)(x, sigma)
        out["cfg_step"] = max_diff(cfg_pair_velocity_fn(dit_pair_fn(dit, ctx, neg, hooks=hooks), 5.0)(x, sigma), ref)
    latent = torch.zeros(x.shape)
    kw = dict(seed=3, steps=4, cfg=5.0, speed=SpeedOptions(cfg_batch="on"))
    out["cfg_sample"] = max_diff(sample_latents(dit, ctx, neg, latent, hooks=hooks, **kw),
                                 sample_latents(dit, ctx, neg, latent, **kw))


def _generation_checks(rank, out):
    from wan_core.demo import load_demo_pipeline
    from wan_core.distributed.pipeline import DistributedPipeline

    ref_pipe = load_demo_pipeline()
    pipe = DistributedPipeline.load(ulysses=2, cfg_parallel=False, dtype=torch.float32)
    out["text_encoder_loaded"] = pipe.text_encoder is not None
    image = (np.arange(96 * 96 * 3) % 251).astype(np.uint8).reshape(96, 96, 3)  # image-to-video start frame
    for name, extra in (("t2v", {}), ("i2v", {"image": image})):
        got = pipe("a red circle moving to the left", **GEN, **extra)
        want = ref_pipe("a red circle moving to the left", **GEN, output_type="pt" if rank == 0 else "latent",
                        **extra)
        out[f"gen_{name}"] = max_diff(got, want)
        out[f"gen_{name}_kind"] = "frames" if got.ndim == 4 and got.shape[-1] == 3 else "latent"


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out = {}
    try:
        dit = _forward_checks(rank, out)
        _cfg_checks(dit, out)
        _generation_checks(rank, out)
    finally:
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("dist"))
    mp.spawn(_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True)
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(2)]


def test_sequence_parallel_forward_equals_single(ranks):
    for r in ranks:
        assert r["forward"] <= TOL * max(1.0, r["forward_scale"]), r
        assert r["forward_i2v"] <= TOL * max(1.0, r["forward_scale"]), r


def test_cfg_parallel_step_and_sampling_equal_single(ranks):
    for r in ranks:
        assert r["cfg_step"] <= TOL, r
        assert r["cfg_sample"] <= TOL, r


def test_whole_generation_equals_single(ranks):
    assert [r["text_encoder_loaded"] for r in ranks] == [True, False]  # umT5 on rank 0 only
    for name in ("t2v", "i2v"):
        assert [r[f"gen_{name}_kind"] for r in ranks] == ["frames", "latent"]  # decode on rank 0 only
        for r in ranks:
            assert r[f"gen_{name}"] <= TOL, (name, r)


def test_head_count_not_divisible_is_refused(ranks):
    assert "valid sizes: 1, 3" in ranks[0]["refused_3_heads"]
    with pytest.raises(ValueError, match=r"--ulysses 5 does not divide the DiT's 24 .*valid sizes: 1, 2, 3, 4, 6, 8, "
                                         r"12, 24"):
        check_ulysses(24, 5)
    assert valid_sizes(24) == [1, 2, 3, 4, 6, 8, 12, 24]


def test_process_count_must_match():
    check_world(8, 4, True)
    with pytest.raises(ValueError, match=r"--ulysses 4 --cfg-parallel needs 8 processes .* but 4 were started"):
        check_world(4, 4, True)


def test_shards_pad_and_cover_the_sequence():
    t = torch.arange(9.0).view(1, 9, 1)
    shards = [shard_tokens(t, 4, r) for r in range(4)]
    assert padded_length(9, 4) == 12 and all(s.shape == (1, 3, 1) for s in shards)
    assert torch.equal(torch.cat(shards, 1)[:, :9], t) and shards[3].flatten().tolist() == [0.0, 0.0, 0.0]


def test_cli_refuses_parallel_flags_without_torchrun(monkeypatch, capsys):
    from wan_core.cli import main

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert main(["generate", "x", "--ulysses", "2", "--cfg-parallel"]) == 2
    assert "need 4 processes: launch with `torchrun --nproc-per-node 4" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["generate", "x"]) == 2  # torchrun without the flags: every rank would render the same video
    assert "neither --ulysses nor --cfg-parallel" in capsys.readouterr().err
