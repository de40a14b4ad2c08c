"""Optical flow: warping semantics, end-point error on synthetic motions with known flow, occlusion masks."""
import pytest
import torch

from tests._temporal_synth import camera_pair, one_thread, two_objects
from wan_core.temporal.flow import (
    FlowConfig,
    bidirectional_flow,
    consecutive_flows,
    endpoint_error,
    estimate_flow,
    occlusion_mask,
    warp,
)

# Measured (96x128, noise sigma 0.01, default FlowConfig): EPE ~0.08-0.10 px for every camera case.
single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)

EPE_BOUND = {"translation": 0.25, "zoom": 0.25, "rotation": 0.25, "large_translation": 0.3}


def test_warp_zero_flow_is_identity_and_integer_shift_is_exact():
    img = torch.rand(2, 3, 10, 12, dtype=torch.float64)
    assert torch.allclose(warp(img, torch.zeros(2, 2, 10, 12, dtype=torch.float64)), img)
    flow = torch.zeros(2, 2, 10, 12, dtype=torch.float64)
    flow[:, 0] = 2.0  # sample two pixels to the right
    out = warp(img, flow)
    assert out.dtype == torch.float64
    assert torch.allclose(out[..., :-2], img[..., 2:])
    assert torch.allclose(out[..., -2:], img[..., -1:].expand(-1, -1, -1, 2))  # border padding repeats the edge


def test_warp_rejects_mismatched_flow():
    with pytest.raises(ValueError, match="flow must be"):
        warp(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 9))


@pytest.mark.parametrize("kind", sorted(EPE_BOUND))
def test_flow_recovers_camera_motion(kind):
    img0, img1, truth = camera_pair(kind)
    f01, f10 = bidirectional_flow(img0, img1)
    epe = endpoint_error(f01, truth).item()
    print(f"{kind}: EPE {epe:.3f} px")
    assert epe < EPE_BOUND[kind]
    # the backward flow is consistent almost everywhere except where the camera motion leaves the frame
    valid = occlusion_mask(f01, f10)
    assert valid[..., 16:-16, 16:-16].mean() > 0.97


def test_two_objects_moving_apart_flow_and_revealed_regions():
    clip, truth, revealed, _ = two_objects(step=4)
    f01, f10 = bidirectional_flow(clip[:1], clip[1:])
    epe = endpoint_error(f01, truth).item()
    print(f"two objects: EPE {epe:.3f} px")
    assert epe < 0.5  # measured ~0.09
    valid10 = occlusion_mask(f10, f01)  # on frame 1's grid: revealed background has no match in frame 0
    marked = (1 - valid10)[revealed].mean().item()
    false_alarm = (1 - valid10)[~revealed].mean().item()
    print(f"revealed marked {marked:.2f}, false alarms {false_alarm:.3f}")
    assert marked > 0.6  # measured ~0.76 (the 4-px strips' edges are smoothed over)
    assert false_alarm < 0.05  # measured ~0.025


def test_consecutive_flows_shapes_and_static_clip():
    clip = torch.rand(1, 3, 32, 40).expand(4, 3, 32, 40)
    fw, bw = consecutive_flows(clip, FlowConfig(warps=1, iterations=5))
    assert fw.shape == bw.shape == (3, 2, 32, 40)
    assert fw.abs().max() < 1e-4 and bw.abs().max() < 1e-4


def test_flow_follows_input_dtype_and_validates():
    img0, img1, truth = camera_pair("translation", h=48, w=64)
    f = estimate_flow(img0.double(), img1.double())
    assert f.dtype == torch.float64
    assert endpoint_error(f.float(), truth) < 0.4
    with pytest.raises(ValueError, match="same shape"):
        estimate_flow(img0, img1[..., :-1])
    with pytest.raises(ValueError, match="alpha"):
        FlowConfig(alpha=0)
