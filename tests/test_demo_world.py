"""The demo world: deterministic generator, held-out triples never drawn, captions parse back, evaluator on truth."""
import pytest
import torch

from tests._temporal_synth import one_thread
from wan_core.demo.captions import LANGS, caption, parse_caption, scene_attributes
from wan_core.demo.evaluate import detect, evaluate, ground_truth, held_out_cases, score, temporal_metrics
from wan_core.demo.world import (BACKGROUND_COLOURS, HELD_OUT, MOTIONS, OBJECT_COLOURS, SHAPES, SIZES, make_clip,
                                 render, sample_scene)


single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)  # small kernels: no OpenMP contention


def test_world_covers_the_required_attributes():
    assert len(OBJECT_COLOURS) >= 6 and len(MOTIONS) >= 6 and set(SHAPES) >= {"circle", "square", "triangle"}
    assert {"1:1", "16:9", "9:16"} <= set(SIZES)
    assert all(w % 32 == 0 and h % 32 == 0 and min(w, h) >= 128 for w, h in SIZES.values())
    assert {t[0] for t in HELD_OUT} == set(OBJECT_COLOURS) and {t[2] for t in HELD_OUT} == set(MOTIONS)


def test_generator_is_deterministic():
    a, sa = make_clip(123)
    b, sb = make_clip(123)
    c, _ = make_clip(124)
    assert sa == sb and torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (sa.frames, sa.height, sa.width, 3) and a.dtype == torch.float32
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_training_scenes_never_contain_a_held_out_triple():
    held = set(HELD_OUT)
    seen_two_objects = False
    for seed in range(3000):
        scene = sample_scene(seed)
        seen_two_objects |= len(scene.objects) == 2
        assert not {o.triple for o in scene.objects} & held, seed
        assert all(o.colour != scene.background for o in scene.objects)
    assert seen_two_objects


def test_held_out_cases_use_held_out_triples_only():
    cases = held_out_cases(seeds=1)
    assert [c.scene.objects[0].triple for c in cases] == list(HELD_OUT)
    assert {(c.scene.width, c.scene.height) for c in cases} == set(SIZES.values())


def test_captions_parse_back_in_both_languages():
    for seed in range(400):
        scene = sample_scene(seed)
        for lang in LANGS:
            text = caption(scene, lang, variant=seed)
            assert parse_caption(text) == scene_attributes(scene), text
    assert parse_caption("蓝色背景上，一个红色的圆形向左移动").objects == (("red", "circle", "left"),)
    assert parse_caption("a red circle moving to the right on a blue background").background == "blue"


def test_evaluator_scores_ground_truth_perfectly():
    cases = held_out_cases(seeds=1)[:3]  # 3 scenes, one per aspect ratio
    report = evaluate(ground_truth, cases)
    for lang in LANGS:
        rows = report["rows"][lang]
        assert all(r["colour"] and r["shape"] and r["motion"] for r in rows), rows
    assert report["agreement"] == 1.0


def test_evaluator_detects_wrong_attributes():
    frames, scene = make_clip(5, triple=("red", "circle", "left"), n_objects=1, exclude=())
    assert detect(frames)[0].triple == ("red", "circle", "left")
    wrong = score(frames, "a green square moving up on a black background")
    assert not (wrong["colour"] or wrong["shape"] or wrong["motion"])
    still = score(frames[:1].expand_as(frames), caption(scene, "en"))
    assert still["detected"][2] == "static" and not still["motion"]


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_shape_survives_the_blur_of_a_lossy_decoder(shape):
    """A 17x17 box blur rounds every corner and fattens the shape, as the tiny VAE does (template IoU then called
    the triangle a square); the bounding-box features must still name the shape."""
    frames, _ = make_clip(3, triple=("white", shape, "static"), n_objects=1, background="black", aspect="1:1",
                          exclude=())
    img = frames[:1].permute(0, 3, 1, 2)
    blurred = torch.nn.functional.avg_pool2d(img, 17, stride=1, padding=8, count_include_pad=False)
    clip = blurred.permute(0, 2, 3, 1).expand(5, -1, -1, -1)
    assert detect(clip)[0].shape == shape


def test_temporal_metrics():
    frames, _ = make_clip(7, triple=("white", "square", "right"), n_objects=1, background="black", exclude=())
    m = temporal_metrics(frames)
    assert m["mean_change"] > 0 and m["flicker"] < 1e-3
    noisy = (frames + 0.2 * torch.rand(frames.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert temporal_metrics(noisy)["flicker"] > 10 * m["flicker"] + 0.01
    assert render(sample_scene(7, triple=("white", "square", "right"), n_objects=1, background="black",
                               exclude=())).shape == frames.shape
