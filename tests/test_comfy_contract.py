"""Contract tests against a real ComfyUI server (headless, CPU). Needs COMFYUI_PATH (a ComfyUI checkout);
skipped visibly otherwise. COMFYUI_PYTHON (the server's Python, e.g. ComfyUI's own venv) and COMFYUI_EXTRA_PYTHONPATH
(prepended to the server's PYTHONPATH, e.g. stand-ins for packages the machine lacks) are optional; see
tests/comfy_server.py.

The pack is symlinked into <base>/custom_nodes, tiny models go under the shipped workflow's file names, and a
full-size random Wan2.2 VAE is written for the native-node interop checks (about 1.4 GB on disk, ~3 GB RAM), plus
a tiny DiT that ComfyUI's own Wan code loads (UNETLoader) and a tiny umT5 with 4096-wide output for native KSampler.
"""
import json
import sys
import urllib.request

import pytest
import torch

from tests.comfy_server import COMFY, ROOT, SKIP_REASON, comfy_server, get_json, make_base, place_tiny_models

pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not COMFY, reason=SKIP_REASON)]
sys.path.insert(0, str(ROOT / "workflows"))
import client  # noqa: E402
from wan_core.config import WanConfig  # noqa: E402

API = ROOT / "workflows" / "api" / "wan22_ti2v_5B_t2v.json"
UI = ROOT / "workflows" / "wan22_ti2v_5B_t2v.json"
NATIVE_VAE = "wan2.2_vae_random.safetensors"
NATIVE_DIT = "tiny_native_wan22_dit.safetensors"  # ComfyUI detects it as WAN22 (dim 128 -> 1 head of 128)
NATIVE_DIT_CFG = WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2)  # text_dim 4096, freq_dim 256 as Comfy
T5_4096 = "tiny_umt5_4096.safetensors"  # tiny umT5 with the real 4096-wide output, as ComfyUI's Wan DiT expects
SMALL = ["size=custom", "width=72", "height=40", "frames=9", "steps=3"]


def _write_full_random_vae(path) -> None:
    from safetensors.torch import save_file

    from wan_core.vae import VAEConfig, WanVAE

    gen = torch.Generator().manual_seed(0)
    shapes = WanVAE(VAEConfig(), device="meta").state_dict()
    sd = {k: (torch.ones(v.shape) if k.endswith("gamma") else torch.zeros(v.shape) if k.endswith("bias")
              else torch.randn(v.shape, generator=gen) * 0.02).to(torch.bfloat16) for k, v in shapes.items()}
    save_file(sd, str(path))


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from tests.tiny_models import tiny_dit_state_dict, tiny_t5_state_dict, write, write_comfy_layout

    base = tmp_path_factory.mktemp("comfy_base")
    models = make_base(base)
    place_tiny_models(models, write_comfy_layout(tmp_path_factory.mktemp("tiny")), [API])
    _write_full_random_vae(models / "vae" / NATIVE_VAE)
    write(tiny_dit_state_dict(NATIVE_DIT_CFG), models / "diffusion_models" / NATIVE_DIT, sidecar=False)
    write(tiny_t5_state_dict(text_dim=4096), models / "text_encoders" / T5_4096, sidecar=False)
    with comfy_server(base, extra_args=("--use-pytorch-cross-attention", "--preview-method", "auto")) as url:
        yield url, base


def _small_graph(*extra: str) -> dict:
    return client.apply_overrides(client.load_workflow(API), [*SMALL, *extra])


def _follow(url: str, graph: dict) -> dict:
    """Queue graph over a websocket; returns counts of events, binary previews and the history entry."""
    cid = "contract"
    ws = client.WebSocket(url, f"/ws?clientId={cid}", 600)
    try:
        pid = client.queue_prompt(url, graph, cid)
        seen = {"progress": 0, "previews": 0, "error": None}
        while True:
            opcode, payload = ws.recv()
            if opcode == 2:
                seen["previews"] += 1
                continue
            msg = json.loads(payload)
            data = msg.get("data", {})
            if msg["type"] == "progress":
                seen["progress"] += 1
            if msg["type"] == "execution_error" and data.get("prompt_id") == pid:
                seen["error"] = data
            if msg["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == pid:
                break
    finally:
        ws.close()
    return {**seen, "history": client.wait_history(url, pid, 60)}


def test_object_info_lists_every_node_with_tooltips(comfy):
    from nodes import NODE_CLASS_MAPPINGS

    url, _ = comfy
    info = get_json(url + "/object_info")
    for name in NODE_CLASS_MAPPINGS:
        node = info[name]
        assert node["category"] == "WanT2V" and node["description"]
        assert node["python_module"].startswith("custom_nodes.")
        for section in ("required", "optional"):
            for inp, spec in node["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{inp}"
        assert len(node["output_tooltips"]) == len(node["output"])
    assert "wan2.2_ti2v_5B_fp16.safetensors" in info["WanT2VModelLoader"]["input"]["required"]["model_name"][0]
    templates = get_json(url + "/workflow_templates")["ComfyUI-WanT2V"]
    assert sorted(templates) == sorted(p.stem for p in UI.parent.glob("*.json"))  # api/ files are not templates


def test_pack_models_folder_is_registered(comfy):
    shipped = ROOT / "models" / "diffusion_models"
    if not shipped.is_dir():
        pytest.skip("the pack ships no models/diffusion_models folder yet")
    url, _ = comfy
    listed = get_json(url + "/models/diffusion_models")
    assert {p.name for p in shipped.glob("*.safetensors")} <= set(listed)


def test_api_workflow_through_client_writes_mp4_with_metadata(comfy, tmp_path):
    from wan_core.video import read_video

    url, _ = comfy
    code = client.main([str(API), "--server", url, "--out", str(tmp_path), "--embed-ui", str(UI), *sum(
        (["--set", s] for s in SMALL + ["Prompt.prompt=一只红色的狐狸在雪地里奔跑"]), [])])
    assert code == 0
    (mp4,) = tmp_path.glob("*.mp4")
    frames, meta = read_video(mp4)
    assert frames.shape == (9, 40, 72, 3)
    assert json.loads(meta["prompt"])["4"]["inputs"]["prompt"] == "一只红色的狐狸在雪地里奔跑"
    assert json.loads(meta["workflow"]) == json.loads(UI.read_text())
    assert json.loads(meta["parameters"])["6"]["steps"] == 3


def test_validation_error_reaches_the_client(comfy, tmp_path, capsys):
    url, _ = comfy
    assert client.main([str(API), "--server", url, "--set", "steps=5000", "--out", str(tmp_path)]) == 1
    assert "steps" in capsys.readouterr().err


def test_progress_and_previews_over_websocket(comfy):
    url, _ = comfy
    seen = _follow(url, _small_graph("seed=11"))
    assert seen["error"] is None and seen["history"]["status"]["status_str"] == "success"
    assert seen["progress"] >= 3 and seen["previews"] >= 3  # one JPEG preview per sampling step


def test_native_vae_decode_on_our_latent_and_our_sampler_on_native_latent(comfy):
    from wan_core.video import read_video

    url, base = comfy
    graph = _small_graph("seed=5")
    graph.update({
        "20": {"class_type": "VAELoader", "inputs": {"vae_name": NATIVE_VAE}},
        "21": {"class_type": "Wan22ImageToVideoLatent",
               "inputs": {"vae": ["20", 0], "width": 64, "height": 64, "length": 5, "batch_size": 1}},
        "22": {"class_type": "WanT2VSampler", "inputs": {**graph["6"]["inputs"], "latent": ["21", 0]}},
        "23": {"class_type": "WanT2VDecode", "inputs": {"vae": ["3", 0], "latent": ["22", 0], "tile_size": 0}},
        "24": {"class_type": "WanT2VSaveVideo", "inputs": {"frames": ["23", 0], "fps": 24.0, "crf": 19,
                                                           "filename_prefix": "contract/ours_on_native"}},
        "25": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["20", 0]}},
        "26": {"class_type": "WanT2VSaveVideo", "inputs": {"frames": ["25", 0], "fps": 24.0, "crf": 19,
                                                           "filename_prefix": "contract/native_on_ours"}},
    })
    seen = _follow(url, graph)
    assert seen["error"] is None, seen["error"]
    ours, _ = read_video(next((base / "output" / "contract").glob("ours_on_native_*.mp4")))
    native, _ = read_video(next((base / "output" / "contract").glob("native_on_ours_*.mp4")))
    assert ours.shape == (5, 64, 64, 3)
    # native VAEDecode ignores our recorded crop: it returns the padded 96x64 canvas of the 72x40 request
    assert native.shape == (9, 64, 96, 3)


def _native_ksampler_branch(steps: int, sampler: str, prefix: str) -> dict:
    """Nodes 30-33: native UNETLoader + KSampler on our conditioning (4) and latent (5), our decode (3) and save."""
    return {
        "30": {"class_type": "UNETLoader", "inputs": {"unet_name": NATIVE_DIT, "weight_dtype": "default"}},
        "31": {"class_type": "KSampler", "inputs": {
            "model": ["30", 0], "positive": ["4", 0], "negative": ["4", 1], "latent_image": ["5", 0], "seed": 1,
            "steps": steps, "cfg": 5.0, "sampler_name": sampler, "scheduler": "simple", "denoise": 1.0}},
        "32": {"class_type": "WanT2VDecode", "inputs": {"vae": ["3", 0], "latent": ["31", 0], "tile_size": 0}},
        "33": {"class_type": "WanT2VSaveVideo", "inputs": {"frames": ["32", 0], "fps": 24.0, "crf": 19,
                                                           "filename_prefix": prefix}},
    }


def test_native_ksampler_on_our_conditioning_and_latent(comfy):
    from wan_core.video import read_video

    url, base = comfy
    graph = _small_graph("Load Text Encoder.model_name=" + T5_4096)
    graph.update(_native_ksampler_branch(2, "uni_pc", "contract/ksampler_on_ours"))
    for node in ("6", "7", "8"):  # drop our DiT branch: its tiny test DiT has a 32-wide text input
        graph.pop(node)
    seen = _follow(url, graph)
    assert seen["error"] is None, seen["error"]
    frames, _ = read_video(next((base / "output" / "contract").glob("ksampler_on_ours_*.mp4")))
    assert frames.shape == (9, 40, 72, 3)  # KSampler keeps our crop key, so our decode returns the requested size


def test_interrupt_mid_sampling_then_next_prompt_runs(comfy):
    url, _ = comfy
    cid = "interrupter"
    ws = client.WebSocket(url, f"/ws?clientId={cid}", 600)
    try:
        pid = client.queue_prompt(url, _small_graph("steps=400", "seed=99"), cid)
        interrupted = None
        while interrupted is None:
            opcode, payload = ws.recv()
            if opcode != 1:
                continue
            msg = json.loads(payload)
            data = msg.get("data", {})
            if msg["type"] == "progress" and data.get("node") == "6" and data.get("value") == 2:
                urllib.request.urlopen(urllib.request.Request(url + "/interrupt", data=b"{}", method="POST"))
            if msg["type"] in ("execution_interrupted", "execution_success") and data.get("prompt_id") == pid:
                interrupted = msg
    finally:
        ws.close()
    assert interrupted["type"] == "execution_interrupted" and interrupted["data"]["node_id"] == "6"
    seen = _follow(url, _small_graph("seed=12"))
    assert seen["error"] is None and seen["history"]["status"]["status_str"] == "success"


# --- image-to-video --------------------------------------------------------------------------------------------------
API_I2V = ROOT / "workflows" / "api" / "wan22_ti2v_5B_i2v.json"
UI_I2V = ROOT / "workflows" / "wan22_ti2v_5B_i2v.json"
START = ROOT / "workflows" / "wan22_tiny_demo_start.png"


def _latent_file(base, prefix: str) -> torch.Tensor:
    from safetensors.torch import load_file

    (path,) = (base / "output" / "contract").glob(f"{prefix}_*.latent")
    return load_file(str(path))["latent_tensor"]


def test_pack_copies_the_start_image_into_the_input_folder(comfy):
    _, base = comfy
    assert (base / "input" / START.name).read_bytes() == START.read_bytes()


def test_native_wan22_i2v_latent_into_our_sampler_and_decode(comfy):
    from wan_core.video import read_video

    url, base = comfy
    graph = _small_graph("seed=5")
    graph.update({
        "20": {"class_type": "VAELoader", "inputs": {"vae_name": NATIVE_VAE}},
        "40": {"class_type": "LoadImage", "inputs": {"image": START.name}},
        "41": {"class_type": "Wan22ImageToVideoLatent", "inputs": {
            "vae": ["20", 0], "width": 64, "height": 64, "length": 9, "batch_size": 2, "start_image": ["40", 0]}},
        "42": {"class_type": "WanT2VSampler", "inputs": {**graph["6"]["inputs"], "latent": ["41", 0]}},
        "43": {"class_type": "WanT2VDecode", "inputs": {"vae": ["3", 0], "latent": ["42", 0], "tile_size": 0}},
        "44": {"class_type": "WanT2VSaveVideo", "inputs": {"frames": ["43", 0], "fps": 24.0, "crf": 19,
                                                           "filename_prefix": "contract/i2v_ours_on_native"}},
        "45": {"class_type": "SaveLatent", "inputs": {"samples": ["42", 0],
                                                      "filename_prefix": "contract/i2v_native_sampled"}},
        "46": {"class_type": "SaveLatent", "inputs": {"samples": ["41", 0],
                                                      "filename_prefix": "contract/i2v_native_input"}},
    })
    seen = _follow(url, graph)
    assert seen["error"] is None, seen["error"]
    video, _ = read_video(next((base / "output" / "contract").glob("i2v_ours_on_native_*.mp4")))
    assert video.shape == (2 * 9, 64, 64, 3)
    given, sampled = _latent_file(base, "i2v_native_input"), _latent_file(base, "i2v_native_sampled")
    assert given.shape == sampled.shape == (2, 48, 3, 4, 4)
    assert torch.equal(sampled[:, :, :1], given[:, :, :1])  # the start image's latent frame, bit for bit
    assert not torch.allclose(sampled[:, :, 1:], given[:, :, 1:])


def test_our_i2v_latent_into_native_ksampler(comfy):
    from wan_core.video import read_video

    url, base = comfy
    graph = client.apply_overrides(client.load_workflow(API_I2V), [*SMALL, "Load Text Encoder.model_name=" + T5_4096])
    graph.update(_native_ksampler_branch(3, "euler", "contract/i2v_ksampler_on_ours"))
    graph.update({
        "34": {"class_type": "SaveLatent", "inputs": {"samples": ["31", 0],
                                                      "filename_prefix": "contract/i2v_ksampler_sampled"}},
        "35": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0],
                                                      "filename_prefix": "contract/i2v_ours_input"}},
    })
    for node in ("6", "7", "8"):  # drop our DiT branch: its tiny test DiT has a 32-wide text input
        graph.pop(node)
    seen = _follow(url, graph)
    assert seen["error"] is None, seen["error"]
    frames, _ = read_video(next((base / "output" / "contract").glob("i2v_ksampler_on_ours_*.mp4")))
    assert frames.shape == (9, 40, 72, 3)  # our crop survives KSampler
    given, sampled = _latent_file(base, "i2v_ours_input"), _latent_file(base, "i2v_ksampler_sampled")
    # KSampler honours our noise_mask: frame 0 stays the image latent (up to its sampler's last-step rounding)
    assert (sampled[:, :, :1] - given[:, :, :1]).abs().max() <= 1e-4 * given.abs().max()
    assert (sampled[:, :, 1:] - given[:, :, 1:]).abs().max() > 0.1


def test_i2v_workflow_through_client_uploads_the_image(comfy, tmp_path):
    from PIL import Image

    from wan_core.video import read_video

    url, base = comfy
    start = tmp_path / "my_start.png"
    Image.new("RGB", (96, 54), (200, 30, 30)).save(start)
    code = client.main([str(API_I2V), "--server", url, "--out", str(tmp_path / "out"), "--image", str(start),
                        "--embed-ui", str(UI_I2V), *sum((["--set", s] for s in SMALL), [])])
    assert code == 0
    assert (base / "input" / "my_start.png").read_bytes() == start.read_bytes()
    (mp4,) = (tmp_path / "out").glob("*.mp4")
    frames, meta = read_video(mp4)
    assert frames.shape == (9, 40, 72, 3)
    assert json.loads(meta["prompt"])["10"]["inputs"]["image"] == "my_start.png"


def test_demo_i2v_workflow_as_shipped_starts_from_the_shipped_image(comfy, tmp_path):
    """The user's path: the demo image-to-video graph as shipped (only shorter), the pack's own demo model and the
    start image the pack copied into input/; the video's first frame is that image (through the demo VAE)."""
    import numpy as np
    from PIL import Image

    from wan_core.video import read_video

    url, _ = comfy
    api = ROOT / "workflows" / "api" / "wan22_tiny_demo_i2v.json"
    code = client.main([str(api), "--server", url, "--out", str(tmp_path), "--set", "frames=9", "--set", "steps=4"])
    assert code == 0
    (mp4,) = tmp_path.glob("*.mp4")
    frames, _ = read_video(mp4)
    assert frames.shape == (9, 128, 128, 3)
    start = np.asarray(Image.open(START).convert("RGB"), dtype=np.float64)
    psnr = 10 * np.log10(255.0 ** 2 / ((frames[0] - start) ** 2).mean())
    assert psnr > 20, f"first frame vs the start image: {psnr:.1f} dB"  # the demo VAE reconstructs it at 25.5 dB


def test_fast_workflow_and_native_sigmas_in_the_server(comfy, tmp_path):
    """The shipped few-step graph (Few-Step Schedule turbo -> Speed Options -> sampler) as queued by a user, next to
    branches that check its recipe against hand-set widgets, a Step Cache, and native BasicScheduler / KarrasScheduler
    SIGMAS into our sampler's sigmas input."""
    from wan_core.video import read_video

    url, base = comfy
    graph = client.apply_overrides(client.load_workflow(ROOT / "workflows" / "api" / "wan22_tiny_demo_fast.json"),
                                   ["size=custom", "width=64", "height=64", "frames=5"])
    shipped = graph["6"]["inputs"]

    def sampler(node_id: str, prefix: str, **inputs) -> dict:  # a WanT2VSampler like the shipped one + SaveLatent
        return {node_id: {"class_type": "WanT2VSampler", "inputs": {**shipped, **inputs}},
                f"{node_id}s": {"class_type": "SaveLatent", "inputs": {"samples": [node_id, 0],
                                                                      "filename_prefix": f"contract/{prefix}"}}}

    plain = {"steps": 50, "cfg": 5.0, "shift": 3.0, "sampler": "unipc"}  # widgets the recipe must replace
    graph.update({**sampler("6", "fast_shipped"),
                  **sampler("60", "fast_widgets", **plain, options=["11", 0]),
                  **sampler("61", "fast_by_hand", steps=4, cfg=1.0, sampler="lcm", sigmas=["10", 0], options=None),
                  "62": {"class_type": "WanT2VStepCache", "inputs": {"method": "easycache", "threshold": 0.1,
                                                                     "warmup": 0.2, "model": ["1", 0]}},
                  **sampler("63", "fast_cached", **{**plain, "steps": 12}, options=["62", 0]),
                  "64": {"class_type": "UNETLoader", "inputs": {"unet_name": NATIVE_DIT, "weight_dtype": "default"}},
                  "65": {"class_type": "BasicScheduler", "inputs": {"model": ["64", 0], "scheduler": "simple",
                                                                    "steps": 3, "denoise": 1.0}},
                  **sampler("66", "fast_basic", sampler="euler", cfg=3.0, sigmas=["65", 0], options=None),
                  "67": {"class_type": "KarrasScheduler", "inputs": {"steps": 3, "sigma_max": 1.0, "sigma_min": 0.05,
                                                                     "rho": 7.0}},
                  **sampler("68", "fast_karras", sampler="euler", cfg=3.0, sigmas=["67", 0], options=None)})
    for node in graph.values():
        node["inputs"] = {k: v for k, v in node["inputs"].items() if v is not None}
    seen = _follow(url, graph)
    assert seen["error"] is None, seen["error"]
    frames, _ = read_video(next((base / "output" / "WanT2V").glob("tiny_demo_fast_*.mp4")))
    assert frames.shape == (5, 64, 64, 3)
    latents = {p: _latent_file(base, f"fast_{p}") for p in ("shipped", "widgets", "by_hand", "cached", "basic",
                                                              "karras")}
    assert torch.equal(latents["widgets"], latents["shipped"])  # the recipe replaced unipc / 50 steps / cfg 5
    assert torch.equal(latents["by_hand"], latents["shipped"])  # = lcm, cfg 1 and its SIGMAS set by hand
    assert all(torch.isfinite(v).all() for v in latents.values())
    assert not torch.equal(latents["basic"], latents["karras"])  # each native schedule drove the sampler
    log = (base / "server.log").read_text()
    assert "few-step recipe turbo" in log and "replaces sampler=unipc, cfg=5.0" in log
    assert "step cache easycache" in log and "DiT calls made" in log  # the cache's report reaches the server log
