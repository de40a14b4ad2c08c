"""TemporalOptions: validation and parsing; build() -> (model_wrappers, hooks); off = the plain sampler bit for bit;
on the shipped demo model the options lower the warping error of a fixed prompt and seed."""
import dataclasses

import pytest
import torch

from tests._temporal_synth import one_thread
from tests.tiny_models import tiny_dit_state_dict
from wan_core.model import DiTHooks, WanTransformer
from wan_core.pipeline import sample_latents
from wan_core.temporal.options import PRESETS, TemporalOptions, build, combine_hooks

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)  # small kernels: no OpenMP contention


def test_defaults_are_off_and_frozen():
    opts = TemporalOptions()
    assert not opts.enabled and opts.describe() == "off"
    assert build(opts) == ((), None) and build(None) == ((), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.enhance = 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"flow_strength": 1.5}, "flow_strength must be in"),
    ({"flow_strength": -0.1}, "flow_strength must be in"),
    ({"enhance": -1.0}, "enhance must be >= 0"),
    ({"enhance": float("nan")}, "finite number"),
    ({"flow_start": 0.6, "flow_end": 0.6}, "flow_start < flow_end"),
    ({"enhance_end": 1.2}, "enhance_start < enhance_end"),
    ({"enhance": "2"}, "finite number"),
    ({"flow_strength": True}, "finite number"),
])
def test_validation_names_the_field_and_the_rule(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TemporalOptions(**kwargs)


def test_parse_presets_and_pairs():
    assert TemporalOptions.parse("off") == TemporalOptions()
    assert TemporalOptions.parse("on") == PRESETS["on"] and PRESETS["on"].enabled
    assert TemporalOptions.parse("flow=0.3, enhance=1.5") == TemporalOptions(flow_strength=0.3, enhance=1.5)
    assert TemporalOptions.parse("on,enhance=0") == dataclasses.replace(PRESETS["on"], enhance=0.0)
    opts = TemporalOptions(flow_strength=0.25, enhance_end=0.5, enhance=1.0)
    assert TemporalOptions.parse(opts.describe()) == opts
    with pytest.raises(ValueError, match="unknown temporal option 'strength'"):
        TemporalOptions.parse("strength=1")
    with pytest.raises(ValueError, match="not a number"):
        TemporalOptions.parse("flow=lots")
    with pytest.raises(ValueError, match="unknown temporal preset"):
        TemporalOptions.parse("max")
    with pytest.raises(ValueError, match="flow_strength must be in"):
        TemporalOptions.parse("flow=3")


def test_build_pieces_and_window_check():
    wrappers, hooks = build(TemporalOptions(enhance=2.0))
    assert wrappers == () and isinstance(hooks, DiTHooks) and hooks.self_attn is not None
    wrappers, hooks = build(TemporalOptions(flow_strength=0.4, enhance=2.0, enhance_end=0.5))
    assert len(wrappers) == 2 and hooks.self_attn is not None
    with pytest.raises(ValueError, match="no step|is empty"):
        build(TemporalOptions(flow_strength=0.4, flow_start=0.1, flow_end=0.2), torch.linspace(1, 0, 3))
    build(TemporalOptions(flow_strength=0.4), torch.linspace(1, 0, 21))  # 20 steps: fine
    with pytest.raises(TypeError, match="TemporalOptions"):
        build({"enhance": 1.0})


def test_combine_hooks_runs_in_order():
    seen = []
    a = DiTHooks(self_attn=lambda i, q, k, v, out, grid: seen.append("a") or out + 1)
    b = DiTHooks(self_attn=lambda i, q, k, v, out, grid: seen.append("b") or out * 2,
                 block=lambda i, blk, x, ctx: x - 1)
    assert combine_hooks(None, a, None) is a and combine_hooks(None) is None
    both = combine_hooks(a, b)
    assert both.self_attn(0, None, None, None, torch.ones(1), None).item() == 4.0 and seen == ["a", "b"]
    assert both.block(0, None, torch.ones(1), None).item() == 0.0


@pytest.fixture(scope="module")
def dit():
    return WanTransformer.from_state_dict(tiny_dit_state_dict())


def _run(dit, options=None, sampler="unipc"):
    g = torch.Generator().manual_seed(7)
    cond, uncond = torch.randn(1, 4, 32, generator=g), torch.randn(1, 4, 32, generator=g)
    latent = torch.zeros(1, 48, 4, 12, 12)  # 4 latent frames of 12x12: room for latent flow on frames 1..3
    wrappers, hooks = build(options)
    return sample_latents(dit, cond, uncond, latent, seed=1, steps=5, cfg=4.0, shift=3.0, sampler=sampler,
                          model_wrappers=wrappers, hooks=hooks)


def test_off_is_bit_identical_and_on_changes_the_sample(dit):
    plain = _run(dit)
    assert torch.equal(_run(dit, TemporalOptions()), plain)
    assert torch.equal(_run(dit, TemporalOptions(flow_start=0.3, enhance_end=0.4)), plain)  # windows alone: off
    on = _run(dit, TemporalOptions(flow_strength=0.5, flow_start=0.0, flow_end=0.8, enhance=2.0, enhance_end=0.6))
    assert on.shape == plain.shape and torch.isfinite(on).all()
    assert not torch.allclose(on, plain, atol=1e-5)


# --- nodes -----------------------------------------------------------------------------------------------------


def test_settings_node_returns_the_frozen_options():
    from nodes.temporal import WanT2VTemporalSettings

    (opts,) = WanT2VTemporalSettings().settings(0.3, 0.1, 0.5, 1.5, 0.0, 0.8)
    assert opts == TemporalOptions(flow_strength=0.3, flow_start=0.1, flow_end=0.5, enhance=1.5, enhance_end=0.8)
    spec = WanT2VTemporalSettings.INPUT_TYPES()
    defaults = {k: v[1]["default"] for part in ("required", "optional") for k, v in spec[part].items()}
    assert TemporalOptions(**defaults) == PRESETS["on"]  # the node's defaults are the measured preset
    with pytest.raises(ValueError, match="flow_start < flow_end"):
        WanT2VTemporalSettings().settings(0.3, 0.7, 0.5, 1.5, 0.0, 1.0)


def test_metrics_and_interpolate_nodes_on_a_moving_pattern():
    import json

    from nodes.temporal import WanT2VFrameInterpolate, WanT2VVideoMetrics
    from tests._temporal_synth import translating_clip

    frames = translating_clip(5, h=32, w=48, dx=1.5, dy=0.0, seed=1)  # [T, H, W, 3]
    out = WanT2VVideoMetrics().measure(frames, 256)
    values = json.loads(out["result"][0])
    assert out["ui"]["text"][0] == out["result"][0]
    assert set(values) >= {"warping_error", "luma_flicker", "motion_mean"} and values["motion_mean"] > 0.5
    node = WanT2VFrameInterpolate()
    more, fps = node.interpolate(frames, 12.0, 2, 0.0)
    assert more.shape == (9, 32, 48, 3) and fps == 24.0
    assert torch.equal(more[::2], frames)  # input frames are kept
    resampled, fps = node.interpolate(frames, 12.0, 2, 18.0)
    assert fps == 18.0 and resampled.shape[0] == 7  # 4 intervals of 1/12 s = 1/3 s -> 6 intervals at 18 fps
    from nodes.temporal import WanT2VDeflicker

    (same,) = WanT2VDeflicker().deflicker(frames, 0.0)
    assert torch.equal(same, frames)
    (smoothed,) = WanT2VDeflicker().deflicker(frames, 1.0)
    assert smoothed.shape == frames.shape and (smoothed - frames).abs().mean() < 0.02  # a clean translation: kept


def test_sampler_node_accepts_the_temporal_input(tmp_path):
    from nodes import NODE_CLASS_MAPPINGS
    from nodes.host import StandaloneHost, set_host
    from nodes.text import to_conditioning
    from tests.tiny_models import write

    write(tiny_dit_state_dict(), tmp_path / "models" / "diffusion_models" / "tiny_dit.safetensors")
    previous = set_host(StandaloneHost(tmp_path / "models", tmp_path / "out", device="cpu"))
    try:
        assert "WanT2VTemporalSettings" in NODE_CLASS_MAPPINGS
        dit = NODE_CLASS_MAPPINGS["WanT2VModelLoader"]().load("tiny_dit.safetensors", "auto", True)[0]
        g = torch.Generator().manual_seed(3)
        pos, neg = to_conditioning(torch.randn(4, 32, generator=g)), to_conditioning(torch.randn(4, 32, generator=g))
        latent = {"samples": torch.zeros(1, 48, 4, 8, 8)}
        sampler = NODE_CLASS_MAPPINGS["WanT2VSampler"]()

        def run(temporal=None):
            return sampler.sample(dit, pos, neg, latent, 2, 4, 4.0, 3.0, "euler", 1.0, temporal=temporal)[0]["samples"]

        plain = run()
        assert torch.equal(run(TemporalOptions()), plain)
        on = run(TemporalOptions(flow_strength=0.5, flow_start=0.0, enhance=3.0))
        assert on.shape == plain.shape and not torch.allclose(on, plain, atol=1e-5)
    finally:
        set_host(previous)


# --- the shipped demo model ------------------------------------------------------------------------------------

# The recommended setting, the "on" preset plus the deflicker, on one held-out benchmark case of the shipped demo
# model (docs/temporal.md has the benchmark on the written mp4 files, with two metrics). The "on" preset alone helps
# less and not on every video (0.93x on the previous demo model; on this case of the current one it does not), so it
# is not what this checks.
DEMO_PROMPT = "on a white background, an orange circle moving upward"  # a held-out benchmark case, 1:1, seed 0


def test_demo_model_options_lower_the_warping_error():
    from wan_core.demo import DEMO_DEFAULTS, DEMO_FILES, PACK_ROOT, load_demo_pipeline
    from wan_core.temporal.metrics import video_metrics

    missing = [name for name in DEMO_FILES.values() if not (PACK_ROOT / name).is_file()]
    if missing:
        pytest.skip(f"demo model files not in the pack yet: {missing} (the training commands in docs/demo_model.md)")
    pipe = load_demo_pipeline()
    d = DEMO_DEFAULTS
    kw = dict(width=128, height=128, num_frames=d.num_frames, num_inference_steps=d.steps,
              guidance_scale=d.guidance_scale, shift=d.shift, sampler=d.sampler, seed=0)
    plain = video_metrics(pipe(DEMO_PROMPT, **kw), max_side=128)
    on = video_metrics(pipe(DEMO_PROMPT, temporal=PRESETS["on"], deflicker=1.0, **kw), max_side=128)
    print(f"warping error {plain['warping_error']:.3e} -> {on['warping_error']:.3e}, "
          f"motion {plain['motion_mean']:.3f} -> {on['motion_mean']:.3f}")
    assert on["warping_error"] < 0.9 * plain["warping_error"]  # 0.25x measured here
    assert on["motion_mean"] >= 0.8 * plain["motion_mean"]  # consistency not bought by freezing the video
