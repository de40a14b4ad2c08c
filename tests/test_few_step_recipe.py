"""Few-step recipes in ComfyUI: WanT2V Few-Step Schedule's options set the schedule, sampler lcm and cfg 1 on
WanT2V Sampler (wan_core.few_step.apply_recipe), winning over its widgets; a connected SIGMAS input wins over the
recipe's schedule."""
import logging

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS as N
from nodes.sampling import SamplerOptions
from wan_core.few_step import FewStepRecipe, apply_recipe, few_step_recipe, get_preset
from wan_core.speed import SpeedOptions


def test_recipe_from_preset_and_custom():
    turbo = few_step_recipe("turbo", shift=5.0)
    assert (turbo.name, turbo.sampler, turbo.cfg) == ("turbo", "lcm", 1.0)
    assert torch.equal(turbo.schedule(), get_preset("turbo").sigmas())
    assert not torch.equal(few_step_recipe("turbo", shift=3.0).schedule(), turbo.schedule())  # the user's shift warps
    custom = few_step_recipe("custom", timesteps="1000,500", warp=False)
    assert custom == FewStepRecipe("custom", (1.0, 0.5, 0.0)) and custom.schedule().dtype == torch.float32
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        few_step_recipe("fast")
    with pytest.raises(ValueError, match="strictly decreasing"):
        few_step_recipe("custom", timesteps="500,757")


def test_apply_recipe_replaces_widgets_and_logs_what(caplog):
    assert apply_recipe(None, sampler="unipc", cfg=5.0, sigmas=None) == ("unipc", 5.0, None)
    recipe = few_step_recipe("fastwan")
    with caplog.at_level(logging.INFO, logger="wan_core.few_step"):
        sampler, cfg, sigmas = apply_recipe(recipe, sampler="unipc", cfg=5.0, sigmas=None)
    assert (sampler, cfg) == ("lcm", 1.0) and torch.equal(sigmas, recipe.schedule())
    (line,) = caplog.messages
    assert "fastwan" in line and "3 steps" in line and "sampler=unipc, cfg=5.0, steps/shift/denoise" in line
    caplog.clear()
    manual = torch.tensor([1.0, 0.5, 0.0])
    with caplog.at_level(logging.INFO, logger="wan_core.few_step"):
        assert apply_recipe(recipe, sampler="lcm", cfg=1.0, sigmas=manual) == ("lcm", 1.0, manual)
    assert "sigmas input" in caplog.messages[0] and "replaces" not in caplog.messages[0]


def test_schedule_node_outputs_sigmas_and_chained_options():
    base = SamplerOptions(model_wrappers=("w",), speed=SpeedOptions(cfg_batch="off"))
    sigmas, options = N["WanT2VFewStepSchedule"]().schedule("turbo", "", 5.0, True, options=base)
    assert torch.equal(sigmas, get_preset("turbo").sigmas()) and options.few_step == few_step_recipe("turbo")
    assert options.model_wrappers == ("w",) and options.speed == base.speed
    assert N["WanT2VFewStepSchedule"].RETURN_TYPES[0] == "SIGMAS"  # slot 0 unchanged for saved graphs


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


def test_sampler_with_recipe_options_equals_manual_settings(loaded):
    dit, (pos, neg) = loaded
    latent, node = {"samples": torch.zeros(1, 48, 3, 4, 4)}, N["WanT2VSampler"]()
    sigmas, options = N["WanT2VFewStepSchedule"]().schedule("turbo", "", 5.0, True)
    by_hand = node.sample(dit, pos, neg, latent, 7, 4, 1.0, 5.0, "lcm", 1.0, sigmas=sigmas)[0]["samples"]
    recipe = node.sample(dit, pos, neg, latent, 7, 50, 5.0, 3.0, "unipc", 0.5, options=options)[0]["samples"]
    assert torch.equal(recipe, by_hand)  # widgets (50 unipc steps, cfg 5, shift 3, denoise 0.5) replaced
    manual = torch.tensor([1.0, 0.6, 0.3, 0.0])
    wins = node.sample(dit, pos, neg, latent, 7, 50, 5.0, 3.0, "unipc", 1.0, options=options, sigmas=manual)[0]
    assert torch.equal(wins["samples"], node.sample(dit, pos, neg, latent, 7, 3, 1.0, 5.0, "lcm", 1.0,
                                                    sigmas=manual)[0]["samples"])
    assert not torch.equal(wins["samples"], by_hand)
