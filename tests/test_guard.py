"""The non-finite guard: NaN/Inf stops sampling and decoding with an error naming the step, in every front end;
`verify --scan` lists the damaged tensors of a file."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes import NODE_CLASS_MAPPINGS
from nodes.host import StandaloneHost, set_host
from tests.tiny_models import write_comfy_layout
from wan_core.cli import main
from wan_core.guard import NonFiniteError, check_finite, finite_guard, scan_file, scan_tensor
from wan_core.pipeline import WanT2VPipeline, sample_latents
from wan_core.sampling import sample_euler

# The example is blocks.1.self_attn.q.weight[3, 5] of the demo DiT; in this tiny DiT (one head, 8 tokens) CPU
# SDPA happens to return finite values for NaN queries, so the NaN goes into a feed-forward weight instead.
BAD_KEY, BAD_INDEX = "blocks.1.ffn.0.weight", (3, 5)
ARGS = ["--width", "64", "--height", "64", "--frames", "5", "--steps", "2", "--device", "cpu"]


def _poison(path, key, index, value=float("nan")):
    sd = load_file(str(path))
    sd[key][index] = value
    save_file(sd, str(path))
    path.with_name(path.name + ".sha256").unlink()  # as a user with a damaged download and no sidecar


@pytest.fixture(scope="module")
def nan_dit_dir(tmp_path_factory):
    root = write_comfy_layout(tmp_path_factory.mktemp("nan_dit"))
    _poison(root / "diffusion_models" / "tiny_dit.safetensors", BAD_KEY, BAD_INDEX)
    return root


@pytest.fixture(scope="module")
def nan_vae_dir(tmp_path_factory):
    root = write_comfy_layout(tmp_path_factory.mktemp("nan_vae"))
    vae = root / "vae" / "tiny_vae.safetensors"
    key = next(k for k, v in load_file(str(vae)).items() if k.startswith("decoder.head") and v.ndim == 5)
    _poison(vae, key, (0, 0, 0, 0, 0))
    return root


def test_guard_names_step_and_sigma_and_the_fixes():
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])

    def model_fn(x, sigma):  # finite until sigma 0.5 (step 3), then Inf
        return x * 0.5 if sigma[0] > 0.6 else torch.full_like(x, float("inf"))

    seen = []
    with pytest.raises(NonFiniteError, match=r"at step 3 of 4 \(sigma 0\.5000\)") as err:
        sample_euler(model_fn, torch.randn(1, 4, 2, 3, 3), sigmas, callback=finite_guard(sigmas, seen.append))
    assert [p["i"] for p in seen] == [0, 1]  # the user's callback never sees the bad step
    text = str(err.value)
    assert "72 Inf" in text and "verify FILE --scan" in text and "bf16" in text and "attention" in text
    with pytest.raises(NonFiniteError, match=r"\(1\) fp16 overflow"):  # an fp16 model: overflow is named first
        check_finite(torch.tensor([float("nan")]), "at step 1", "sampling", torch.float16)
    assert check_finite(torch.ones(3), "x", "sampling") is not None
    assert check_finite(torch.full((4,), 3e38), "x", "sampling") is not None  # the sum overflows, the values do not


def test_pipeline_raises_naming_the_step(nan_dit_dir):
    pipe = WanT2VPipeline.from_pretrained(nan_dit_dir, dtype=torch.float32)
    with pytest.raises(NonFiniteError, match=r"sampling produced NaN/Inf at step 1 of 2 \(sigma [01]\.\d{4}\)"):
        pipe("a red circle", width=64, height=64, num_frames=5, num_inference_steps=2)


def test_cli_exits_nonzero_without_traceback_and_writes_nothing(nan_dit_dir, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert main(["generate", "a red circle", "-o", str(out), "--model-dir", str(nan_dit_dir), *ARGS]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: sampling produced NaN/Inf at step 1 of 2") and "Traceback" not in err
    assert "tiny_dit.safetensors" in err and "verify FILE --scan" in err and "No file was written" in err
    assert list(tmp_path.iterdir()) == []  # no mp4, no half-written temporary


def test_decode_output_is_checked(nan_vae_dir, tmp_path, capsys):
    pipe = WanT2VPipeline.from_pretrained(nan_vae_dir, dtype=torch.float32)
    with pytest.raises(NonFiniteError, match="decode produced NaN/Inf in the VAE decode output.*VAE file"):
        pipe("a red circle", width=64, height=64, num_frames=5, num_inference_steps=1)
    out = tmp_path / "o.mp4"
    assert main(["generate", "x", "-o", str(out), "--model-dir", str(nan_vae_dir), *ARGS]) == 3
    assert "decode produced NaN/Inf" in capsys.readouterr().err and not out.exists()


def test_nonfinite_input_latent_is_named(nan_vae_dir):
    dit = WanT2VPipeline.from_pretrained(nan_vae_dir).dit
    ctx = torch.zeros(1, 4, dit.cfg.text_dim)
    latent = torch.zeros(1, 48, 2, 2, 2)
    latent[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="latent given to the sampler"):
        sample_latents(dit, ctx, None, latent, seed=0, steps=2, cfg=1.0, denoise=0.5)


@pytest.fixture
def nan_host(nan_dit_dir, tmp_path):
    previous = set_host(StandaloneHost(nan_dit_dir, tmp_path / "output", device="cpu"))
    yield
    set_host(previous)


def test_sampler_and_decode_nodes_raise(nan_host):
    n = {name: cls() for name, cls in NODE_CLASS_MAPPINGS.items()}
    dit = n["WanT2VModelLoader"].load("tiny_dit.safetensors", "auto", True)[0]
    te = n["WanT2VTextEncoderLoader"].load("tiny_umt5.safetensors", "auto", True)[0]
    vae = n["WanT2VVAELoader"].load("tiny_vae.safetensors", "auto", True)[0]
    pos, neg = n["WanT2VTextEncode"].encode(te, "a red circle", "")
    latent = n["WanT2VLatentInit"].init("16:9", "custom", 64, 64, "frames", 5, 1.0, 24.0, 1)["result"][0]
    with pytest.raises(NonFiniteError, match=r"at step 1 of 3 \(sigma [01]\.\d{4}\)"):
        n["WanT2VSampler"].sample(dit, pos, neg, latent, 0, 3, 5.0, 5.0, "euler", 1.0)
    bad = {**latent, "samples": torch.full_like(latent["samples"], float("nan"))}
    with pytest.raises(NonFiniteError, match="decode produced NaN/Inf"):
        n["WanT2VDecode"].decode(vae, bad, 0)


FP8 = [d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if d is not None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, *FP8], ids=str)
def test_scan_tensor_counts_and_locates(dtype):
    t = torch.zeros(4, 6, 2).to(dtype)
    assert scan_tensor(t) is None
    f32 = torch.zeros(4, 6, 2)
    f32[1, 2, 1] = float("nan")
    f32[3, 0, 0] = float("nan")
    if dtype != getattr(torch, "float8_e4m3fn", None):  # e4m3fn has no Inf (it saturates to NaN)
        f32[2, 5, 0] = float("inf")
    nan, inf, first = scan_tensor(f32.to(dtype))
    assert first == (1, 2, 1) and nan == 2 and inf == (0 if dtype == getattr(torch, "float8_e4m3fn", None) else 1)


def test_scan_chunks_find_the_first_index(monkeypatch):
    monkeypatch.setattr("wan_core.guard.SCAN_CHUNK", 5)
    t = torch.zeros(3, 7)
    t[2, 4] = t[2, 6] = float("-inf")
    assert scan_tensor(t) == (0, 2, (2, 4))


def test_verify_scan_lists_bad_tensors_of_files_and_shards(nan_dit_dir, tmp_path, capsys):
    dit = nan_dit_dir / "diffusion_models" / "tiny_dit.safetensors"
    assert main(["verify", str(dit)]) == 2  # plain verify still needs a hash
    capsys.readouterr()
    assert main(["verify", str(dit), "--scan"]) == 3
    out = capsys.readouterr().out
    assert "hash not checked" in out and f"{BAD_KEY} [float32]: 1 NaN, 0 Inf, first at [3, 5]" in out
    assert "1 holds NaN/Inf" in out
    sd = load_file(str(dit))  # the same tensors as two shards with an index
    names = sorted(sd)
    half = len(names) // 2
    for i, part in enumerate((names[:half], names[half:])):
        save_file({k: sd[k] for k in part}, str(tmp_path / f"m-{i}.safetensors"))
    index = tmp_path / "m.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {k: f"m-{int(k in names[half:])}.safetensors" for k in names}}))
    seen, bad = scan_file(index)
    assert seen == len(sd) and [(b.name, b.nan, b.first) for b in bad] == [(BAD_KEY, 1, BAD_INDEX)]
    clean = write_comfy_layout(tmp_path / "clean") / "diffusion_models" / "tiny_dit.safetensors"
    assert main(["verify", str(clean), "--scan"]) == 0
    assert "all finite" in capsys.readouterr().out
