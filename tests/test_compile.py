"""Regional torch.compile (wan_core.compile): one compiled block function for all layers, no recompilation between
the steps of a run (nor between runs), the same results as eager, and a warning plus eager fallback when compiling
is unavailable or fails. The inductor test compiles for real (C++ on the CPU); the others use dynamo with the
aot_eager backend (same graph capture and guards, no C++ build) to stay fast."""
import logging

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from wan_core import compile as wc
from wan_core.config import WanConfig
from wan_core.model import DiTHooks, WanTransformer
from wan_core.noise import initial_noise
from wan_core.pipeline import sample_latents
from wan_core.speed import SpeedOptions
from wan_core.temporal.options import combine_hooks

CFG = WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=3, text_dim=16, freq_dim=32)
SHAPE = (1, CFG.in_dim, 2, 4, 4)


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return WanTransformer(CFG).eval()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def run(dit, hooks=None, speed=None, image=None, steps=3, cfg_batch="off"):
    ctx, neg = initial_noise((1, 5, CFG.text_dim), 1), initial_noise((1, 7, CFG.text_dim), 2)
    return sample_latents(dit, ctx, neg, torch.zeros(SHAPE), seed=0, steps=steps, cfg=5.0, hooks=hooks,
                          image_latent=image, speed=speed or SpeedOptions(cfg_batch=cfg_batch))


def test_inductor_compiled_run_matches_eager_without_recompiling(dit):
    if reason := wc.compile_unavailable("cpu"):
        pytest.skip(f"torch.compile cannot run here: {reason}")
    eager = run(dit)
    compiled = run(dit, speed=SpeedOptions(cfg_batch="off", compile=True))
    assert wc.block_runner().failed is None  # it really compiled (no eager fallback)
    assert counters["stats"]["unique_graphs"] == 1  # one graph for 3 layers x 3 steps x 2 branches
    assert (compiled - eager).abs().max().item() <= 1e-5 * eager.abs().max().item()
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = run(dit, speed=SpeedOptions(cfg_batch="off", compile=True))  # a second run reuses the graph
    assert torch.equal(again, compiled)


@pytest.mark.parametrize("cfg_batch", ["off", "on"])
@pytest.mark.parametrize("i2v", [False, True])
def test_one_graph_for_all_layers_and_steps(dit, cfg_batch, i2v):
    runner = wc.BlockRunner(backend="aot_eager")
    calls = []

    def counted(block, x, ctx):
        calls.append(block.index)
        return runner(block, x, ctx)

    image = initial_noise((1, CFG.in_dim, 1, 4, 4), 5) if i2v else None  # per-token timesteps: e0 [B, L, 6, C]
    eager = run(dit, image=image, steps=4, cfg_batch=cfg_batch)
    with torch._dynamo.config.patch(error_on_recompile=True):  # any recompilation raises
        out = run(dit, hooks=DiTHooks(run_block=counted), image=image, steps=4, cfg_batch=cfg_batch)
        again = run(dit, hooks=DiTHooks(run_block=counted), image=image, steps=4, cfg_batch=cfg_batch)
    assert runner.failed is None and counters["stats"]["unique_graphs"] == 1
    assert len(calls) == 2 * 4 * CFG.num_layers * (1 if cfg_batch == "on" else 2)  # every block went through it
    assert (out - eager).abs().max().item() <= 1e-5 * eager.abs().max().item() and torch.equal(out, again)


def _broken_backend(gm, example_inputs):
    raise RuntimeError("no C++ compiler found (simulated)")


def test_compile_error_at_first_call_warns_and_runs_eagerly(dit, caplog):
    runner = wc.BlockRunner(backend=_broken_backend)
    eager = run(dit)
    with caplog.at_level(logging.WARNING, logger="wan_core.compile"):
        out = run(dit, hooks=DiTHooks(run_block=runner))
    assert runner.failed is not None and "simulated" in runner.failed
    warnings = [r for r in caplog.records if "runs eagerly" in r.getMessage()]
    assert len(warnings) == 1  # one warning per runner, not per call
    assert torch.equal(out, eager)  # the failed call reran on its untouched input


def test_unavailable_compiler_is_detected_before_compiling(dit, monkeypatch, caplog):
    monkeypatch.setattr(wc, "compile_unavailable", lambda device: "no C++ compiler for torch's CPU backend (test)")
    runner = wc.BlockRunner(backend=_broken_backend)  # would raise if it were ever called
    with caplog.at_level(logging.WARNING, logger="wan_core.compile"):
        out = run(dit, hooks=DiTHooks(run_block=runner))
    assert "CPU backend (test)" in runner.failed and "runs eagerly" in caplog.text
    assert torch.equal(out, run(dit))
    assert counters["stats"]["unique_graphs"] == 0  # nothing was compiled


def test_combine_hooks_keeps_runner_and_attention():
    runner, attn = wc.BlockRunner(backend="aot_eager"), lambda q, k, v: q
    enhance = DiTHooks(self_attn=lambda i, q, k, v, out, grid: out)
    both = combine_hooks(enhance, DiTHooks(run_block=runner, attention=attn))
    assert both.run_block is runner and both.attention is attn and both.self_attn is not None
    with pytest.raises(ValueError, match="2 DiTHooks set run_block"):
        combine_hooks(DiTHooks(run_block=runner), DiTHooks(run_block=runner))
