"""Explicit schedules (--sigmas / --timesteps, warped or not), the fastwan / turbo presets, the CLI flags and the
sampler node's native SIGMAS input."""
import argparse

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS as N
from wan_core.cli import build_parser
from wan_core.few_step import PRESETS, explicit_sigmas, get_preset, resolve_schedule, timestep_sigmas
from wan_core.schedules import shift_sigma
from wan_core.speed_cli import PRESET_NAMES, apply_speed_args


def test_explicit_sigmas_append_zero_and_keep_values():
    assert explicit_sigmas("1,0.94,0.845").tolist() == pytest.approx([1.0, 0.94, 0.845, 0.0])
    assert explicit_sigmas([1.0, 0.5, 0.0]).tolist() == [1.0, 0.5, 0.0]
    assert explicit_sigmas(" 1 ; 0.5 ").dtype == torch.float32


@pytest.mark.parametrize("text, message", [
    ("1,abc", "entry 'abc' is not a number"), ("0.5,0.9", "strictly decreasing"), ("1.2,0.5", r"lie in \(0, 1\]"),
    ("", "is empty"), ("0", "holds no step"), ("1,nan", "not finite")])
def test_explicit_sigmas_errors_name_the_value(text, message):
    with pytest.raises(ValueError, match=message):
        explicit_sigmas(text)


@pytest.mark.parametrize("text, message", [("1000,1200", r"lie in \(0, 1000\]"), ("500,757", "strictly decreasing"),
                                           ("1000,x", "'x' is not a number")])
def test_timestep_errors(text, message):
    with pytest.raises(ValueError, match=message):
        timestep_sigmas(text)


def test_warp_matches_the_shifted_1000_step_table():
    # FastVideo / Self-Forcing: table = shift(linspace(1, 0, 1001)[:-1]) * 1000 with 0 appended, indexed at 1000 - t
    table = torch.cat([shift_sigma(torch.linspace(1, 0, 1001, dtype=torch.float64)[:-1], 5.0) * 1000,
                       torch.zeros(1, dtype=torch.float64)])
    ts = [1000, 757, 522]
    want = [float(table[1000 - t]) / 1000 for t in ts] + [0.0]
    got = timestep_sigmas(ts, shift=5.0, warp=True).tolist()
    assert got == pytest.approx(want, abs=1e-6)
    assert got[1] == pytest.approx(0.9397, abs=1e-4) and got[2] == pytest.approx(0.8452, abs=1e-4)
    assert timestep_sigmas("1000,757,522").tolist() == pytest.approx([1.0, 0.757, 0.522, 0.0])  # no warp


def test_presets():
    assert sorted(PRESETS) == sorted(PRESET_NAMES)
    fw, tb = get_preset("fastwan"), get_preset("turbo")
    assert (fw.timesteps, fw.shift, fw.cfg, fw.sampler, fw.warp) == ((1000, 757, 522), 5.0, 1.0, "lcm", True)
    assert (tb.timesteps, tb.shift, tb.cfg) == ((1000, 750, 500, 250), 5.0, 1.0)
    assert len(tb.sigmas()) == 5 and tb.sigmas()[-1] == 0
    sig, fixed = resolve_schedule(preset="fastwan")
    assert torch.equal(sig, fw.sigmas()) and fixed == {"sampler": "lcm", "guidance_scale": 1.0, "shift": 5.0}
    assert not torch.equal(resolve_schedule(preset="fastwan", shift=3.0)[0], sig)  # the user's shift warps
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        get_preset("fast")
    with pytest.raises(ValueError, match="not both"):
        resolve_schedule(sigmas="1,0.5", timesteps="1000,500")
    with pytest.raises(ValueError, match="--warp applies to --timesteps"):
        resolve_schedule(sigmas="1,0.5", warp=True)


def _args(*flags) -> argparse.Namespace:
    return build_parser().parse_args(["generate", "a red ball", *flags])


BASE = {"num_inference_steps": 20, "guidance_scale": 3.0, "shift": 3.0, "sampler": "euler"}


def test_cli_preset_sets_sampler_cfg_shift_unless_flagged(tmp_path):
    settings, speed = apply_speed_args(_args("--preset", "fastwan"), BASE, tmp_path / "dit.safetensors")
    assert (settings["sampler"], settings["guidance_scale"], settings["shift"]) == ("lcm", 1.0, 5.0)
    assert settings["num_inference_steps"] == 3 and torch.equal(speed["sigmas"], get_preset("fastwan").sigmas())
    flagged = {**BASE, "guidance_scale": 2.0}  # what resolve_settings made of --cfg 2
    settings, _ = apply_speed_args(_args("--preset", "turbo", "--cfg", "2"), flagged, tmp_path / "d")
    assert settings["guidance_scale"] == 2.0 and settings["sampler"] == "lcm" and settings["num_inference_steps"] == 4
    with pytest.raises(ValueError, match="--steps does not apply"):
        apply_speed_args(_args("--preset", "turbo", "--steps", "8"), BASE, tmp_path / "d")
    settings, speed = apply_speed_args(_args("--timesteps", "1000,757,522", "--warp"), BASE, tmp_path / "d")
    assert speed["sigmas"][1].item() == pytest.approx(0.9397, abs=1e-4) and settings["sampler"] == "euler"


def test_cli_bad_schedule_exits_with_the_message(capsys):
    from wan_core.cli import main

    assert main(["generate", "a red ball", "--sigmas", "1,abc", "-o", "never.mp4"]) == 2
    assert "'abc' is not a number" in capsys.readouterr().err


@pytest.fixture
def loaded(tmp_path_factory):
    from nodes.host import StandaloneHost, set_host
    from tests.tiny_models import write_comfy_layout

    root = write_comfy_layout(tmp_path_factory.mktemp("models"))
    previous = set_host(StandaloneHost(root, root / "out", device="cpu"))
    try:
        dit = N["WanT2VModelLoader"]().load("tiny_dit.safetensors", "auto", True)[0]
        te = N["WanT2VTextEncoderLoader"]().load("tiny_umt5.safetensors", "auto", True)[0]
        yield dit, N["WanT2VTextEncode"]().encode(te, "a red circle moving to the right", "")
    finally:
        set_host(previous)


def test_node_sigmas_input_drives_the_sampler(loaded):
    from wan_core.schedules import flow_sigmas

    dit, (pos, neg) = loaded
    latent = {"samples": torch.zeros(1, 48, 3, 4, 4)}
    node = N["WanT2VSampler"]()
    plain = node.sample(dit, pos, neg, latent, 3, 3, 5.0, 5.0, "euler", 1.0)[0]["samples"]
    native = node.sample(dit, pos, neg, latent, 3, 50, 5.0, 1.0, "euler", 1.0, sigmas=flow_sigmas(3, 5.0))[0]
    assert torch.equal(native["samples"], plain)  # the SIGMAS input replaces steps and shift
    manual = torch.tensor([1.0, 0.5, 0.0])  # as ManualSigmas makes it
    other = node.sample(dit, pos, neg, latent, 3, 3, 5.0, 5.0, "euler", 1.0, sigmas=manual)[0]["samples"]
    assert not torch.equal(other, plain)
    few = N["WanT2VFewStepSchedule"]().schedule("turbo", "", 5.0, True)[0]
    assert torch.equal(few, get_preset("turbo").sigmas())
    assert N["WanT2VFewStepSchedule"]().schedule("custom", "1000,500", 5.0, False)[0].tolist() == [1.0, 0.5, 0.0]
    lcm = node.sample(dit, pos, neg, latent, 3, 3, 1.0, 5.0, "lcm", 1.0, sigmas=few)[0]["samples"]
    assert torch.isfinite(lcm).all() and lcm.shape == plain.shape
