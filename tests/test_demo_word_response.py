"""The word-response probe: 0 for a DiT that ignores the prompt, 1 for one that draws exactly what the prompt names."""
import random
from dataclasses import replace

import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.captions import parse_caption
from wan_core.demo.evaluate import encode_scene, held_out_cases
from wan_core.demo.training.config import TrainConfig
from wan_core.demo.word_response import ATTRIBUTES, format_response, word_response
from wan_core.latent_format import normalize_latents
from wan_core.vae import WanVAE

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    vae = WanVAE(TrainConfig.smoke().vae).eval()
    case = held_out_cases(1)[0]

    def latent_of(text: str) -> torch.Tensor:
        """The latent of the case's geometry with the attributes the caption names."""
        colour, shape, motion = parse_caption(text).objects[0]
        obj = replace(case.scene.objects[0], colour=colour, shape=shape, motion=motion)
        return normalize_latents(encode_scene(vae, replace(case.scene, objects=(obj,))))
    return vae, case, latent_of


class _Oracle(torch.nn.Module):
    """Predicts x0 = the latent of the scene the prompt names (context is an index into `latents`)."""

    def __init__(self, latents: list):
        super().__init__()
        self.latents, self.w = latents, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, context):
        s = t.view(-1, 1, 1, 1, 1) / 1000.0
        return (x - self.latents[int(context.item())]) / s  # v with x - s * v = the named latent


class _Blind(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x, t, context):
        return self.w * x


def test_a_dit_that_draws_the_named_scene_responds_fully_to_every_word(setup):
    vae, case, latent_of = setup
    latents: list = []

    def encode(text):
        latents.append(latent_of(text))
        return torch.tensor(float(len(latents) - 1))
    r = word_response(_Oracle(latents), vae, encode, [case], sigmas=(0.5, 0.9))
    for a in ATTRIBUTES:
        assert r.size[a] > 0
        for s in (0.5, 0.9):
            assert r.ratio[a][s] == pytest.approx(1.0, abs=1e-3)
            assert r.position[a][s] == pytest.approx(1.0, abs=1e-3)  # its prediction is the true clip
    assert r.x0_error[0.5] == pytest.approx(0.0, abs=1e-6)
    assert "shape" in format_response(r)


def test_a_dit_that_ignores_the_prompt_responds_to_no_word(setup):
    vae, case, _ = setup
    r = word_response(_Blind(), vae, lambda text: torch.zeros(1, 3, 8), [case], sigmas=(0.3, 0.9))
    assert all(r.ratio[a][s] == 0.0 for a in ATTRIBUTES for s in (0.3, 0.9))
    assert r.x0_error[0.9] > r.x0_error[0.3] > 0  # it predicts x0 worse the noisier the input


class _Midway(torch.nn.Module):
    """Predicts x0 = the mean of two given latents, whatever the prompt (context is ignored)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.mid, self.w = (a + b) / 2, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, context):
        return (x - self.mid) / (t.view(-1, 1, 1, 1, 1) / 1000.0)


def test_position_places_a_half_way_prediction_at_one_half(setup, monkeypatch):
    vae, case, latent_of = setup
    import wan_core.demo.word_response as wr

    true_latent = latent_of(wr.caption(case.scene, "en", variant=0))
    other = wr._changed(case, "shape", random.Random(0))
    other_latent = normalize_latents(encode_scene(vae, other))
    monkeypatch.setattr(wr, "_changed", lambda c, attribute, rng: other)  # every attribute: that other shape
    r = word_response(_Midway(true_latent, other_latent), vae, lambda text: torch.zeros(1, 3, 8), [case],
                      sigmas=(0.5,))
    assert r.position["shape"][0.5] == pytest.approx(0.5, abs=1e-3)
    assert "position" in format_response(r)
