"""The evaluator's image-to-video mode: the PSNR helper, the true clips, and one case on the shipped demo model."""
import math

import pytest
import torch

from wan_core.demo import DEMO_FILES, PACK_ROOT, load_demo_pipeline
from wan_core.demo.evaluate import held_out_cases, main
from wan_core.demo.evaluate_i2v import (evaluate_i2v, first_frame_psnr, ground_truth_i2v, i2v_generator, i2v_summary,
                                        psnr, start_image, vae_first_frame)
from wan_core.demo.world import render


def test_psnr_of_synthetic_frames():
    frames = torch.zeros(3, 8, 8, 3)
    assert psnr(frames, frames) == math.inf
    assert psnr(frames, frames + 0.1) == pytest.approx(20.0)  # MSE 0.01 at peak 1
    image = torch.full((8, 8, 3), 51, dtype=torch.uint8)  # 51 / 255 = 0.2
    assert first_frame_psnr(frames, image) == pytest.approx(-10 * math.log10(0.04))
    frames[1:] = 0.2  # only frame 0 counts
    assert first_frame_psnr(frames, image) == pytest.approx(13.98, abs=0.01)
    with pytest.raises(ValueError, match="different shapes"):
        psnr(frames[0], frames[0, :4])
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        first_frame_psnr(frames[0], image)


def test_start_image_is_the_rounded_first_frame_and_the_true_clips_score_perfectly():
    cases = held_out_cases(1)[:2]
    image = start_image(cases[0])
    assert image.dtype == torch.uint8 and image.shape == (cases[0].scene.height, cases[0].scene.width, 3)
    assert (image.float() / 255 - render(cases[0].scene)[0]).abs().max() <= 0.5 / 255 + 1e-6
    s = i2v_summary(evaluate_i2v(ground_truth_i2v, cases))
    assert s["videos"] == 4 and s["kept"] == s["direction"] == 100.0
    assert s["psnr_min"] > 50  # 8-bit rounding only


def test_cli_refuses_i2v_with_vae_only():
    with pytest.raises(SystemExit, match="--i2v samples from the start image"):
        main(["--i2v", "--vae-only"])


@pytest.mark.skipif(not all((PACK_ROOT / v).is_file() for v in DEMO_FILES.values()),
                    reason=f"demo weights not in this checkout ({DEMO_FILES})")
def test_demo_model_first_frame_is_the_vae_reconstruction_of_the_start_image():
    """One held-out case, 4 steps: the causal decoder's first frame depends on latent frame 0 alone, which
    image-to-video fixes to the image latent, so the output's first frame is the VAE's reconstruction of the image
    and its PSNR is the VAE's, whatever the DiT draws."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = load_demo_pipeline()
        case = held_out_cases(1)[1]
        frames = i2v_generator(pipe, steps=4)(case, "en")
        image = start_image(case)
        recon = vae_first_frame(pipe.vae, image)
    finally:
        torch.set_num_threads(before)
    assert frames.shape == (case.scene.frames, case.scene.height, case.scene.width, 3)
    assert (frames[0] - recon).abs().max() < 1e-4
    assert first_frame_psnr(frames, image) == pytest.approx(psnr(recon, image.float() / 255), abs=0.01)
    assert first_frame_psnr(frames, image) > 15  # the start image, not noise or another scene
