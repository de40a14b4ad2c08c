"""Image-to-video outside the parity test: start-image preparation and its bad inputs, the node path (our Latent Init
with a start image and a native-style noise_mask latent into our sampler, then decode), the pipeline and the CLI."""
import json

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL.Image", reason="Pillow reads start images (requirements.txt)")

from nodes import NODE_CLASS_MAPPINGS  # noqa: E402
from nodes.host import StandaloneHost, WanModel, set_host  # noqa: E402
from tests.tiny_models import write_comfy_layout  # noqa: E402
from wan_core.cli import main  # noqa: E402
from wan_core.i2v import image_frames_from_mask, noise_mask  # noqa: E402
from wan_core.image import check_vae_family, encode_image, file_sha256, prepare_image  # noqa: E402
from wan_core.latent_format import WAN22_MEAN  # noqa: E402
from wan_core.latent_init import CROP_KEY  # noqa: E402
from wan_core.vae import VAEConfig, WanVAE  # noqa: E402
from wan_core.video import read_video  # noqa: E402

N = {name: cls() for name, cls in NODE_CLASS_MAPPINGS.items()}


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- start image preparation ------------------------------------------------------------------------------------
def test_same_size_image_is_used_unchanged_and_normalised_like_the_official_code():
    arr = _rgb(32, 48)
    pixels, note = prepare_image(PIL.fromarray(arr), 48, 32)
    assert note == "" and pixels.shape == (1, 3, 1, 32, 48)
    expected = (torch.from_numpy(arr).float() / 255 - 0.5) / 0.5
    assert torch.equal(pixels[0, :, 0].permute(1, 2, 0), expected)
    as_float = torch.from_numpy(arr).float()[None] / 255  # ComfyUI IMAGE [1, H, W, 3]
    assert torch.allclose(prepare_image(as_float, 48, 32)[0], pixels, atol=1e-6)


def test_other_aspect_is_lanczos_resized_and_centre_cropped_with_a_note(caplog):
    arr = np.zeros((64, 128, 3), dtype=np.uint8)
    arr[:, 32:96] = 255  # a white centre square on black: the crop keeps the centre
    with caplog.at_level("WARNING"):
        pixels, note = prepare_image(PIL.fromarray(arr), 32, 32)
    assert "another aspect ratio" in note and "centre 64x64" in note and note in caplog.text
    ref = PIL.fromarray(arr).resize((64, 32), PIL.LANCZOS).crop((16, 0, 48, 32))  # official: cover, LANCZOS, crop
    expected = (torch.from_numpy(np.array(ref)).float() / 255 - 0.5) / 0.5
    assert torch.equal(pixels[0, :, 0].permute(1, 2, 0), expected)
    assert pixels.min() > 0.7 and pixels.mean() > 0.95  # only the white centre survives (LANCZOS rings a little)


def test_greyscale_and_rgba_are_converted_with_a_note():
    grey = PIL.fromarray(_rgb(16, 16)[..., 0], mode="L")
    pixels, note = prepare_image(grey, 16, 16)
    assert "greyscale image converted to RGB" in note
    assert torch.equal(pixels[0, 0], pixels[0, 1]) and torch.equal(pixels[0, 1], pixels[0, 2])
    rgba = PIL.fromarray(np.dstack([_rgb(16, 16), np.full((16, 16), 128, np.uint8)]), mode="RGBA")
    pixels_a, note_a = prepare_image(rgba, 16, 16)
    assert "RGBA" in note_a and "alpha ignored" in note_a
    assert torch.equal(pixels_a, prepare_image(rgba.convert("RGB"), 16, 16)[0])
    comfy_rgba = torch.rand(1, 16, 16, 4)
    assert "RGBA" in prepare_image(comfy_rgba, 16, 16)[1]


def test_bad_images_name_the_value_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="start image '.*missing.png' not found"):
        prepare_image(tmp_path / "missing.png", 32, 32)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="notes.png' is not a readable image"):
        prepare_image(tmp_path / "notes.png", 32, 32)
    with pytest.raises(ValueError, match=r"several start frames \(2\)"):
        prepare_image(torch.rand(2, 16, 16, 3), 16, 16)
    with pytest.raises(ValueError, match=r"permute\(1, 2, 0\)"):
        prepare_image(torch.rand(3, 16, 16), 16, 16)
    with pytest.raises(ValueError, match="values in 0..1"):
        prepare_image(np.full((16, 16, 3), 200.0, dtype=np.float32), 16, 16)


def test_wrong_vae_family_is_refused():
    wan21_like = WanVAE(VAEConfig(base_dim=8, decoder_base_dim=16, z_dim=16))
    with pytest.raises(ValueError, match="16 latent channels.*Wan2.2 VAE"):
        check_vae_family(wan21_like)
    with pytest.raises(ValueError, match="None latent channels"):
        encode_image(torch.nn.Linear(2, 2), torch.zeros(1, 3, 1, 32, 32))


def test_noise_mask_rules():
    shape = (1, 48, 3, 2, 2)
    assert image_frames_from_mask(noise_mask(1, 3, 2, 2), shape) == 1
    assert image_frames_from_mask(torch.ones(1, 1, 3, 2, 2), shape) == 0  # all sampled: text-to-video
    assert image_frames_from_mask(noise_mask(2, 3, 2, 2).repeat(1, 48, 1, 1, 1), (2, 48, 3, 2, 2)) == 1
    spatial = torch.ones(1, 1, 3, 2, 2)
    spatial[..., 0, 0] = 0
    with pytest.raises(ValueError, match="spatial inpainting masks are not supported"):
        image_frames_from_mask(spatial, shape)
    with pytest.raises(ValueError, match="several start frames"):
        image_frames_from_mask(noise_mask(1, 3, 2, 2, image_frames=2), shape)
    with pytest.raises(ValueError, match="nothing is left to sample"):
        image_frames_from_mask(torch.zeros(1, 1, 3, 2, 2), shape)
    with pytest.raises(ValueError, match=r"expected \[B, 1, 3, h, w\]"):
        image_frames_from_mask(torch.ones(1, 2, 2), shape)


# --- nodes ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return write_comfy_layout(tmp_path_factory.mktemp("models"))


@pytest.fixture
def loaded(models_dir, tmp_path):
    previous = set_host(StandaloneHost(models_dir, tmp_path / "output", device="cpu"))
    try:
        dit = N["WanT2VModelLoader"].load("tiny_dit.safetensors", "auto", True)[0]
        te = N["WanT2VTextEncoderLoader"].load("tiny_umt5.safetensors", "auto", True)[0]
        vae = N["WanT2VVAELoader"].load("tiny_vae.safetensors", "auto", True)[0]
        pos, neg = N["WanT2VTextEncode"].encode(te, "a red circle moving to the right", "")
        yield dit, vae, pos, neg
    finally:
        set_host(previous)


def _init(width, height, image=None, vae=None, frames=9, batch=1):
    return N["WanT2VLatentInit"].init("16:9", "custom", width, height, "frames", frames, 1.0, 24.0, batch,
                                      start_image=image, vae=vae)


def _sample(dit, pos, neg, latent, sampler="unipc", steps=3):
    return N["WanT2VSampler"].sample(dit, pos, neg, latent, 3, steps, 5.0, 5.0, sampler, 1.0)[0]


def test_latent_init_with_start_image_then_our_sampler_and_decode(loaded):
    dit, vae, pos, neg = loaded
    image = torch.from_numpy(_rgb(40, 72)).float()[None] / 255  # IMAGE [1, H, W, 3], the requested size
    out = _init(72, 40, image, vae, batch=2)
    latent, note = out["result"][0], out["result"][4]
    assert latent["samples"].shape == (2, 48, 3, 4, 6) and latent[CROP_KEY] == (12, 12, 40, 72)
    assert latent["noise_mask"].shape == (2, 1, 3, 4, 6) and "canvas 96x64" in note
    assert torch.equal(latent["noise_mask"][:, :, 0], torch.zeros(2, 1, 4, 6)) and latent["noise_mask"][:, :, 1:].all()
    mean = torch.tensor(WAN22_MEAN).view(1, 48, 1, 1, 1)
    assert torch.allclose(latent["samples"][:, :, 1:], mean.expand(2, 48, 2, 4, 6))  # normalised 0, as native
    for sampler in ("unipc", "euler", "dpm++2m"):
        sampled = _sample(dit, pos, neg, latent, sampler)
        assert torch.equal(sampled["samples"][:, :, :1], latent["samples"][:, :, :1]), sampler
        assert not torch.equal(sampled["samples"][:, :, 1:], latent["samples"][:, :, 1:])
    frames = N["WanT2VDecode"].decode(vae, sampled, 0)[0]
    assert frames.shape == (2 * 9, 40, 72, 3)
    t2v = _sample(dit, pos, neg, _init(72, 40)["result"][0])  # the image changes the video
    assert not torch.allclose(t2v["samples"][:, :, 1:], sampled["samples"][:1, :, 1:])


def test_native_style_noise_mask_latent_into_our_sampler(loaded):
    dit, vae, pos, neg = loaded
    pixels = prepare_image(_rgb(64, 64, seed=4), 64, 64)[0]
    encoded = encode_image(vae.model, pixels)  # [1, 48, 1, 4, 4] raw, as a native VAE encode returns it
    mask = noise_mask(2, 3, 4, 4)  # as Wan22ImageToVideoLatent: [B, 1, T, h, w], 0 on frame 0
    latent = torch.zeros(1, 48, 3, 4, 4)
    latent[:, :, :1] = encoded
    mean = torch.tensor(WAN22_MEAN).view(1, 48, 1, 1, 1)
    samples = ((latent + mean) * mask[:1] + latent * (1 - mask[:1])).repeat(2, 1, 1, 1, 1)  # its process_out blend
    native = {"samples": samples, "noise_mask": mask}
    out = _sample(dit, pos, neg, native)
    assert torch.equal(out["samples"][:, :, :1], encoded.expand(2, -1, -1, -1, -1))
    assert N["WanT2VDecode"].decode(vae, out, 0)[0].shape == (2 * 9, 64, 64, 3)  # full canvas: no crop recorded
    with pytest.raises(ValueError, match="keeps a latent frame after a sampled one"):
        _sample(dit, pos, neg, {**native, "noise_mask": 1 - mask})


def test_latent_init_bad_start_images(loaded):
    dit, vae, pos, neg = loaded
    image = torch.rand(1, 40, 72, 3)
    with pytest.raises(ValueError, match="vae is not: connect the WanT2V VAE Loader"):
        _init(64, 64, image, None)
    with pytest.raises(ValueError, match=r"several start frames \(2\)"):
        _init(64, 64, torch.rand(2, 64, 64, 3), vae)
    note = _init(64, 64, image, vae)["result"][4]
    assert "another aspect ratio" in note and "centre 40x40" in note
    assert "RGBA image converted" in _init(64, 64, torch.rand(1, 64, 64, 4), vae)["result"][4]
    wan21 = WanModel("vae", WanVAE(VAEConfig(base_dim=8, decoder_base_dim=16, z_dim=16)), None, "wan21_like")
    with pytest.raises(ValueError, match="16 latent channels"):
        _init(64, 64, torch.rand(1, 64, 64, 3), wan21)


# --- pipeline and CLI -------------------------------------------------------------------------------------------
def test_pipeline_image_argument_forms_and_refusals(models_dir):
    from wan_core.pipeline import WanT2VPipeline

    pipe = WanT2VPipeline.from_pretrained(models_dir)
    arr = _rgb(64, 64, seed=7)
    kw = dict(width=64, height=64, num_frames=5, num_inference_steps=2, seed=1, output_type="latent")
    a = pipe("a green square", image=PIL.fromarray(arr), **kw)
    assert torch.equal(a, pipe("a green square", image=arr, **kw))
    assert torch.equal(a, pipe("a green square", image=torch.from_numpy(arr), **kw))
    encoded = encode_image(pipe.vae, prepare_image(arr, 64, 64)[0])
    assert torch.equal(a[:, :, :1], encoded)
    from wan_core.temporal.options import TemporalOptions

    for spec in ("on", "flow=0.4,enhance=2"):  # temporal options wrap inside the image conditioning
        z = pipe("a green square", image=arr, temporal=TemporalOptions.parse(spec), **kw)
        assert torch.equal(z[:, :, :1], encoded) and not torch.equal(z, a), spec
    with pytest.raises(ValueError, match="end image is not supported"):
        pipe("x", image=arr, end_image=arr, **kw)


def test_cli_image_on_the_demo_model_writes_mp4_with_image_metadata(tmp_path, capsys):
    from wan_core.demo import demo_files

    try:
        demo_files()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    start = tmp_path / "start.png"
    arr = _rgb(128, 128, seed=9)
    arr[:] = (20, 40, 140)
    arr[40:88, 20:68] = (235, 25, 25)  # a red square on blue, like the demo world
    PIL.fromarray(arr).save(start)
    out = tmp_path / "i2v.mp4"
    torch.set_num_threads(1)
    code = main(["generate", "a red square moving to the right on a blue background", "--image", str(start),
                 "-o", str(out), "--steps", "4", "--frames", "9", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    frames, meta = read_video(out)
    assert frames.shape == (9, 128, 128, 3)
    params = json.loads(meta["wan_t2v_parameters"])
    assert params["image"] == "start.png" and params["image_sha256"] == file_sha256(start)
    mse = ((frames[0].astype(np.float64) - arr) ** 2).mean()
    psnr = 10 * np.log10(255.0 ** 2 / mse)
    with capsys.disabled():
        print(f"\nCLI --image on the demo model: first-frame PSNR vs the start image {psnr:.2f} dB")
    assert psnr > 15  # the frame is the image's VAE reconstruction (the demo VAE bounds it), not a new picture


def test_cli_refuses_bad_image_requests(tmp_path, capsys):
    code = main(["generate", "x", "--image", str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.mp4")])
    assert code == 2 and "nope.png' not found" in capsys.readouterr().err
    PIL.fromarray(_rgb(8, 8)).save(tmp_path / "a.png")
    code = main(["generate", "x", "--image", str(tmp_path / "a.png"), "--end-image", str(tmp_path / "a.png"),
                 "-o", str(tmp_path / "x.mp4")])
    assert code == 2 and "end image is not supported" in capsys.readouterr().err
    code = main(["generate", "x", "--image", str(tmp_path / "a.png"), "--image", str(tmp_path / "a.png"),
                 "-o", str(tmp_path / "x.mp4")])
    assert code == 2 and "several start frames (2)" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
