"""Attention backends (wan_core.attention): SDPA by default, optional ones never imported until chosen, clear errors
naming the pip package, and the SDPA fallback for the rest of a run at a backend's first non-finite DiT output
(tested with fake backends registered in BACKENDS)."""
import logging
import subprocess
import sys

import pytest
import torch

from tests.tiny_models import TINY_DIT, tiny_dit_state_dict
from wan_core import attention as wa
from wan_core.model import WanTransformer
from wan_core.noise import initial_noise
from wan_core.pipeline import sample_latents
from wan_core.speed import SpeedOptions
from wan_core.step_cache import StepCacheConfig

SHAPE = (1, TINY_DIT.in_dim, 3, 4, 4)
STEPS = 4


@pytest.fixture(scope="module")
def dit():
    return WanTransformer.from_state_dict(tiny_dit_state_dict(), TINY_DIT).eval()


@pytest.fixture(autouse=True)
def fresh_backends():
    wa._loaded.cache_clear()
    yield
    wa._loaded.cache_clear()


def register(monkeypatch, fn, name="fake"):
    monkeypatch.setitem(wa.BACKENDS, name, wa.Backend(name, "fake-attention-pkg", lambda: fn, needs_cuda=False))


def run(dit, attention="sdpa", cfg_batch="off", **kw):
    ctx, neg = initial_noise((1, 5, TINY_DIT.text_dim), 1), initial_noise((1, 9, TINY_DIT.text_dim), 2)
    return sample_latents(dit, ctx, neg, torch.zeros(SHAPE), seed=4, steps=STEPS, cfg=5.0, return_info=True,
                          speed=SpeedOptions(cfg_batch=cfg_batch, attention=attention), **kw)


def nan_after(calls: int, log: list):
    """SDPA, but NaN from its `calls`-th call on (a kernel that breaks mid-run)."""
    def fn(q, k, v):
        log.append(q.shape[0])
        out = wa.attention(q, k, v)
        return out * float("nan") if len(log) > calls else out

    return fn


def test_chosen_backend_is_used_in_self_and_cross_attention(dit, monkeypatch):
    log = []
    register(monkeypatch, nan_after(10 ** 9, log))  # never NaN: the SDPA result through the fake backend
    ref, _ = run(dit)
    out, _ = run(dit, "fake")
    assert len(log) == STEPS * 2 * TINY_DIT.num_layers * 2  # steps x branches x layers x (self + cross)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("cfg_batch", ["off", "on"])
def test_non_finite_step_falls_back_to_sdpa_for_the_rest_of_the_run(dit, monkeypatch, caplog, cfg_batch):
    log = []
    good = 2 * TINY_DIT.num_layers * 2 + 1  # NaN inside the second step's first DiT call
    register(monkeypatch, nan_after(good, log))
    ref, ref_info = run(dit, cfg_batch=cfg_batch)
    with caplog.at_level(logging.WARNING, logger="wan_core.attention"):
        out, info = run(dit, "fake", cfg_batch=cfg_batch)
    assert torch.isfinite(out).all() and torch.equal(out, ref)  # the NaN call was recomputed with SDPA
    assert len(log) == good + TINY_DIT.num_layers * 2 - 1  # the broken call's attention calls, then never again
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "rest of this run" in caplog.text and "'fake'" in caplog.text
    assert info["dit_calls"] == ref_info["dit_calls"]  # the recomputation is not a second counted DiT call


def test_fallback_happens_before_the_step_cache_sees_the_output(dit, monkeypatch):
    register(monkeypatch, nan_after(0, []))  # NaN from the very first call: the whole run is SDPA
    cache = StepCacheConfig(method="easycache", threshold=0.3, warmup=0.2)
    ref, ref_info = run(dit, cache=cache)
    out, info = run(dit, "fake", cache=cache)
    assert torch.equal(out, ref) and info["dit_skipped"] == ref_info["dit_skipped"]


def test_sdpa_adds_no_checks():
    built = []
    fn = wa.AttentionRun("sdpa").guard(lambda a: built.append(a) or (lambda x, s: x))
    assert built == [None] and fn(torch.ones(1), torch.ones(1)).item() == 1.0  # the DiT call itself, unwrapped


@pytest.mark.parametrize("name, package", [("sage", "sageattention"), ("flash", "flash-attn")])
def test_missing_package_names_the_pip_install(monkeypatch, name, package):
    monkeypatch.setitem(sys.modules, "sageattention", None)  # import fails even where it is installed
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    with pytest.raises(ValueError, match=f"pip install {package}"):
        wa.get_backend(name, "cuda")


def test_cuda_only_backends_refuse_other_devices(dit):
    with pytest.raises(ValueError, match="runs on CUDA GPUs only"):
        wa.get_backend("sage", "cpu")
    with pytest.raises(ValueError, match="runs on CUDA GPUs only"):  # before any sampling work
        run(dit, "flash")
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        wa.get_backend("xformers")
    with pytest.raises(ValueError, match="unknown attention backend"):
        SpeedOptions(attention="xformers")


def test_half_precision_adapter():
    seen = []

    def kernel(q, k, v):
        seen.append((q.dtype, k.dtype, v.dtype))
        return wa.attention(q.float(), k.float(), v.float()).to(q.dtype)

    q, k, v = (initial_noise((1, 6, 2, 8), s) for s in (1, 2, 3))
    out = wa._half(kernel)(q, k, v)
    assert seen == [(torch.bfloat16,) * 3] and out.dtype == torch.float32  # fp32 in, bf16 kernel, fp32 out
    assert (out - wa.attention(q, k, v)).abs().max().item() < 0.05  # bf16 rounding only
    wa._half(kernel)(q.half(), k.half(), v.half())
    assert seen[-1] == (torch.float16,) * 3  # half inputs pass through unchanged


def test_optional_packages_are_not_imported_with_wan_core():
    code = ("import sys, wan_core.pipeline, wan_core.attention, wan_core.speed, wan_core.compile; "
            "print(sorted(m for m in ('sageattention', 'flash_attn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
