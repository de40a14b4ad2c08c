"""Temporal metrics: a flickering copy ranks worse than the clip; a frozen clip has no motion."""
import pytest
import torch

from tests._temporal_synth import one_thread, translating_clip
from wan_core.temporal.metrics import METRIC_KEYS, video_metrics

single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def clip():
    return translating_clip(6, h=48, w=64, dx=2.0, dy=1.0)  # [6, 48, 64, 3]


def test_keys_and_motion_of_a_pan(clip):
    m = video_metrics(clip)
    assert set(m) == set(METRIC_KEYS)
    assert all(isinstance(v, float) for v in m.values())
    assert abs(m["motion_mean"] - 5**0.5) < 0.3  # (2, 1) px per frame
    assert m["valid_fraction"] > 0.8


def test_flickering_copy_ranks_worse(clip):
    gain = torch.tensor([1.0, 0.94, 1.05, 0.93, 1.06, 0.95]).view(6, 1, 1, 1)
    flicker = (clip * gain).clamp(0, 1)
    g = torch.Generator().manual_seed(0)
    boiling = (clip + 0.03 * torch.randn(clip.shape, generator=g)).clamp(0, 1)
    base, fl, bo = video_metrics(clip), video_metrics(flicker), video_metrics(boiling)
    print({k: (round(base[k], 6), round(fl[k], 6), round(bo[k], 6)) for k in METRIC_KEYS})
    assert fl["warping_error"] > 3 * base["warping_error"]
    assert fl["luma_flicker"] > 10 * base["luma_flicker"]
    assert bo["warping_error"] > 3 * base["warping_error"]
    assert bo["hf_warping_error"] > 3 * base["hf_warping_error"]
    assert bo["hf_flicker"] > base["hf_flicker"]
    assert abs(fl["motion_mean"] - base["motion_mean"]) < 0.1  # flicker does not read as motion
    assert fl["valid_fraction"] > 0.8  # flow runs on mean-removed frames, so gain flicker keeps it intact


def test_frozen_clip_has_no_motion(clip):
    frozen = clip[:1].expand(5, -1, -1, -1)
    m = video_metrics(frozen)
    assert m["motion_mean"] < 1e-3 and m["motion_top5"] < 1e-3
    assert m["warping_error"] < 1e-8 and m["luma_flicker"] < 1e-8


def test_downscaled_analysis_reports_input_pixels(clip):
    big = torch.nn.functional.interpolate(clip.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear")
    big = big.permute(0, 2, 3, 1)  # [T, 3, 96, 128] -> [T, 96, 128, 3]
    m = video_metrics(big, max_side=64)
    assert abs(m["motion_mean"] - 2 * 5**0.5) < 0.6


def test_bad_layout_is_rejected(clip):
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        video_metrics(clip.permute(0, 3, 1, 2))


def test_benchmark_independent_metric_ranks_a_flickering_copy_worse_and_measures_a_pan(clip):
    """benchmarks/bench_temporal.py's second metric (OpenCV Farneback flow, a benchmark-only requirement)."""
    pytest.importorskip("cv2", reason="opencv-python-headless is a benchmark-only requirement "
                        "(pip install -r benchmarks/requirements.txt)")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_temporal import farneback_metrics, parse_seeds

    u8 = lambda x: (x * 255).round().to(torch.uint8).numpy()  # noqa: E731
    g = torch.Generator().manual_seed(0)
    boiling = (clip + 0.03 * torch.randn(clip.shape, generator=g)).clamp(0, 1)
    base, bo = farneback_metrics(u8(clip)), farneback_metrics(u8(boiling))
    print(base, bo)
    assert bo["cv_warping_error"] > 3 * base["cv_warping_error"]
    assert abs(base["cv_motion_mean"] - 5**0.5) < 0.5  # (2, 1) px per frame
    assert base["cv_valid"] > 0.8
    assert parse_seeds("0-1,4") == [0, 1, 4] and parse_seeds("4-7") == [4, 5, 6, 7]
