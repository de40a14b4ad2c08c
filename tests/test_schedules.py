"""Flow-matching schedules: the 50-step shift-5 table of the spec, diffusers equality, denoise, timesteps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wan_core.schedules import (KINDS, denoise_sigmas, flow_sigmas, flow_timesteps, shift_sigma,
                                sigma_to_timestep)

# wan22-spec.md (team reference) section 4.4, 50 steps, shift 5:
# (i, official t, official sigma, diffusers t, diffusers sigma)
SPEC_TABLE = [
    (0, 999, 0.9997998, 999, 0.9999990),
    (1, 995, 0.9957324, 995, 0.9959391),
    (2, 991, 0.9915305, 991, 0.9917441),
    (3, 987, 0.9871874, 987, 0.9874082),
    (4, 982, 0.9826958, 982, 0.9829242),
    (5, 978, 0.9780480, 978, 0.9782845),
    (6, 973, 0.9732358, 973, 0.9734807),
    (7, 968, 0.9682502, 968, 0.9685040),
    (8, 963, 0.9630817, 963, 0.9633448),
    (9, 957, 0.9577199, 957, 0.9579930),
    (10, 952, 0.9521540, 952, 0.9524376),
    (11, 946, 0.9463720, 946, 0.9466667),
    (12, 940, 0.9403611, 940, 0.9406676),
    (13, 934, 0.9341073, 934, 0.9344263),
    (14, 927, 0.9275957, 927, 0.9279280),
    (15, 920, 0.9208101, 921, 0.9211565),
    (16, 913, 0.9137326, 914, 0.9140941),
    (17, 906, 0.9063442, 906, 0.9067217),
    (18, 898, 0.8986237, 899, 0.8990183),
    (19, 890, 0.8905485, 890, 0.8909614),
    (20, 882, 0.8820933, 882, 0.8825259),
    (21, 873, 0.8732307, 873, 0.8736844),
    (22, 863, 0.8639306, 864, 0.8644070),
    (23, 854, 0.8541598, 854, 0.8546606),
    (24, 843, 0.8438816, 844, 0.8444087),
    (25, 833, 0.8330554, 833, 0.8336110),
    (26, 821, 0.8216361, 822, 0.8222225),
    (27, 809, 0.8095738, 810, 0.8101937),
    (28, 796, 0.7968125, 797, 0.7974687),
    (29, 783, 0.7832896, 783, 0.7839855),
    (30, 768, 0.7689347, 769, 0.7696741),
    (31, 753, 0.7536689, 754, 0.7544559),
    (32, 737, 0.7374024, 738, 0.7382419),
    (33, 720, 0.7200336, 720, 0.7209308),
    (34, 701, 0.7014464, 702, 0.7024077),
    (35, 681, 0.6815081, 682, 0.6825404),
    (36, 660, 0.6600657, 661, 0.6611773),
    (37, 636, 0.6369424, 638, 0.6381427),
    (38, 611, 0.6119324, 613, 0.6132326),
    (39, 584, 0.5847950, 586, 0.5862080),
    (40, 555, 0.5552468, 556, 0.5567879),
    (41, 522, 0.5229515, 524, 0.5246391),
    (42, 487, 0.4875073, 489, 0.4893633),
    (43, 448, 0.4484302, 450, 0.4504810),
    (44, 405, 0.4051314, 407, 0.4074094),
    (45, 356, 0.3568877, 359, 0.3594329),
    (46, 302, 0.3028007, 305, 0.3056630),
    (47, 241, 0.2417403, 244, 0.2449830),
    (48, 172, 0.1722651, 175, 0.1759692),
    (49, 92, 0.0925069, 96, 0.0967784),
]


@pytest.mark.parametrize("kind,t_col,s_col", [("official", 1, 2), ("diffusers", 3, 4)])
def test_50_step_shift_5_table_matches_spec(kind, t_col, s_col):
    sig = flow_sigmas(50, 5.0, kind=kind)
    assert sig.dtype == torch.float32 and sig.device.type == "cpu" and sig.shape == (51,)
    assert sig[-1].item() == 0.0
    expected = torch.tensor([row[s_col] for row in SPEC_TABLE], dtype=torch.float64)
    err = (sig[:-1].double() - expected).abs().max().item()
    assert err <= 1e-6, f"{kind}: max |sigma - spec| = {err:.3g}"
    t = sigma_to_timestep(sig[:-1])
    assert t.dtype == torch.float32
    assert t.long().tolist() == [row[t_col] for row in SPEC_TABLE]
    assert flow_timesteps(50, 5.0, kind=kind).tolist() == [row[t_col] for row in SPEC_TABLE]


def test_official_and_diffusers_timesteps_agree_at_23_of_50_steps():
    t_off = sigma_to_timestep(flow_sigmas(50, 5.0)[:-1])
    t_dif = sigma_to_timestep(flow_sigmas(50, 5.0, kind="diffusers")[:-1])
    assert int((t_off == t_dif).sum()) == 23  # spec 4.4


@pytest.mark.parametrize("steps", [1, 4, 20, 50])
@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_diffusers_kind_equals_diffusers_set_timesteps(steps, shift):
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    sched.set_timesteps(steps)
    assert torch.equal(flow_timesteps(steps, shift, kind="diffusers"), sched.timesteps)
    ours = flow_sigmas(steps, shift, kind="diffusers")
    assert (ours - sched.sigmas).abs().max().item() <= 1e-7  # equal except where a sigma moved 1 ulp (module doc)
    if shift == 5.0:
        assert torch.equal(ours, sched.sigmas)


@pytest.mark.parametrize("steps", [4, 50])
def test_official_kind_equals_diffusers_fed_official_raw_sigmas(steps):
    """Spec 4.4: diffusers with set_timesteps(sigmas=linspace(float32(0.999), 0, n+1)[:-1]) reproduces official."""
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    sched.set_timesteps(sigmas=np.linspace(float(np.float32(0.999)), 0.0, steps + 1)[:-1])
    assert torch.equal(flow_sigmas(steps, 5.0), sched.sigmas)
    assert torch.equal(flow_timesteps(steps, 5.0), sched.timesteps)


def test_official_dpm_kind_starts_at_one():
    """Spec 4.6: Wan's dpm++ path uses get_sampling_sigmas = shifted linspace(1, 0, n+1)[:n]; t = 1000, 995, ..."""
    sig = flow_sigmas(50, 5.0, kind="official_dpm")
    assert sig[0].item() == 1.0 and sig[-1].item() == 0.0
    raw = np.linspace(1, 0, 51)[:50]
    expected = torch.from_numpy(5.0 * raw / (1 + 4.0 * raw))
    assert (sig[:-1].double() - expected).abs().max().item() <= 1e-7
    assert sigma_to_timestep(sig[:5]).long().tolist() == [1000, 995, 991, 987, 982]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 8.0])
def test_float32_timesteps_reproduce_upstream_float64_truncation(kind, shift):
    """trunc(float32 sigma * 1000) equals upstream's int64(float64 sigma * 1000) for every step count 1..100."""
    for steps in range(1, 101):
        sig = flow_sigmas(steps, shift, kind=kind)
        t_ref = flow_timesteps(steps, shift, kind=kind)
        assert torch.equal(sigma_to_timestep(sig[:-1]).long(), t_ref), f"{kind} shift={shift} steps={steps}"


@pytest.mark.parametrize("kind", KINDS)
def test_schedules_are_decreasing_in_unit_interval_and_end_at_zero(kind):
    for steps in (1, 2, 7, 50):
        sig = flow_sigmas(steps, 5.0, kind=kind)
        assert sig.shape == (steps + 1,) and sig[-1].item() == 0.0
        assert bool((sig[1:] < sig[:-1]).all()) and 0.0 <= sig.min().item() and sig.max().item() <= 1.0


def test_shift_sigma():
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.equal(shift_sigma(s, 1.0), s)  # shift 1 is the identity
    assert shift_sigma(0.5, 5.0) == pytest.approx(5 / 6)
    assert shift_sigma(0.0, 5.0) == 0.0 and shift_sigma(1.0, 5.0) == 1.0
    with pytest.raises(ValueError, match="shift must be > 0"):
        shift_sigma(0.5, 0.0)


def test_sigma_to_timestep_truncates_and_keeps_shape():
    sig = torch.tensor([[0.9997998, 0.0925069], [0.5, 0.0]])
    assert sigma_to_timestep(sig).tolist() == [[999.0, 92.0], [500.0, 0.0]]
    assert sigma_to_timestep(sig.double()).dtype == torch.float64


def test_denoise_sigmas():
    sig = flow_sigmas(10, 5.0)
    assert torch.equal(denoise_sigmas(sig, 1.0), sig)
    half = denoise_sigmas(sig, 0.5)
    assert torch.equal(half, sig[5:]) and half[-1].item() == 0.0
    assert torch.equal(denoise_sigmas(sig, 0.26), sig[-4:])  # round(10 * 0.26) = 3 steps
    assert denoise_sigmas(sig, 0.1).shape == (2,)
    with pytest.raises(ValueError, match="keeps no step"):
        denoise_sigmas(sig, 0.04)
    for bad in (0.0, -0.5, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"denoise must be in \(0, 1\]"):
            denoise_sigmas(sig, bad)
    with pytest.raises(ValueError, match="1-D"):
        denoise_sigmas(torch.zeros(1), 0.5)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="choose one of"):
        flow_sigmas(10, 5.0, kind="karras")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="steps must be a positive int"):
            flow_sigmas(bad, 5.0)
