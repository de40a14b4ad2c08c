"""Generation defaults follow the loaded model: the demo DiT's metadata, else the official TI2V-5B values."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.tiny_models import tiny_dit_state_dict, write, write_comfy_layout
from wan_core.cli import build_parser, main, resolve_settings
from wan_core.config import SAMPLING_DEFAULTS_KEY, SamplingConfig, sampling_defaults_json
from wan_core.demo import DEMO_DEFAULTS, DEMO_FILES, PACK_ROOT
from wan_core.loading import sampling_defaults
from wan_core.pipeline import WanT2VPipeline
from wan_core.video import read_video

DEMO_DIT = PACK_ROOT / DEMO_FILES["dit"]
needs_demo = pytest.mark.skipif(not all((PACK_ROOT / p).is_file() for p in DEMO_FILES.values()),
                                reason="demo weights not in this checkout")


def _with_entry(tmp_path, value, name="dit.safetensors"):
    path = tmp_path / name
    save_file(tiny_dit_state_dict(), str(path), metadata={SAMPLING_DEFAULTS_KEY: value})
    return path


@needs_demo
def test_shipped_demo_dit_carries_the_demo_defaults():
    cfg, source = sampling_defaults(DEMO_DIT)
    assert cfg == DEMO_DEFAULTS and source == f"from {DEMO_DIT.name} metadata"


def test_file_without_the_entry_gets_the_official_defaults(tmp_path):
    cfg, source = sampling_defaults(write(tiny_dit_state_dict(), tmp_path / "plain.safetensors"))
    assert cfg == SamplingConfig() and (cfg.width, cfg.height, cfg.num_frames, cfg.steps) == (1280, 704, 121, 50)
    assert source.startswith("official TI2V-5B defaults") and "plain.safetensors" in source
    args = build_parser().parse_args(["generate", "x", "--steps", "4"])
    settings, line = resolve_settings(args, cfg, source)
    assert settings == SamplingConfig(steps=4)
    assert line == (f"defaults: 1280x704, 121 frames @ 24 fps, 50 unipc steps, cfg 5, shift 5 ({source}); "
                    "overridden by --steps")


def test_export_writes_the_entry(tmp_path):
    from wan_core.demo.export import save_dit
    from wan_core.model import WanTransformer

    dit = WanTransformer.from_state_dict(tiny_dit_state_dict())
    save_dit(dit, tmp_path / "a.safetensors", metadata={"round": "1"})
    assert sampling_defaults(tmp_path / "a.safetensors")[0] == DEMO_DEFAULTS
    custom = SamplingConfig(width=64, height=64, num_frames=9, steps=3)
    save_dit(dit, tmp_path / "b.safetensors", sampling_defaults=custom)
    assert sampling_defaults(tmp_path / "b.safetensors")[0] == custom


def test_partial_entry_keeps_official_values_for_the_rest(tmp_path):
    cfg, _ = sampling_defaults(_with_entry(tmp_path, json.dumps({"steps": 8, "sampler": "euler"})))
    assert cfg == SamplingConfig(steps=8, sampler="euler")


@pytest.mark.parametrize("value,match", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"stepz": 4}', r"unknown sampling default\(s\) \['stepz'\]"),
    ('{"steps": "20"}', "steps='20' has the wrong type"),
    ('{"steps": true}', "steps=True has the wrong type"),
    ('{"width": -64}', "width=-64 must be positive"),
    ('{"sampler": "ddim"}', "sampler in"),
    ('{"num_frames": 24}', "frames must be 4k\\+1 \\(got 24\\)"),
])
def test_bad_entry_names_the_file_the_field_and_the_fix(tmp_path, value, match):
    path = _with_entry(tmp_path, value)
    with pytest.raises(ValueError, match=match) as err:
        sampling_defaults(path)
    assert str(path) in str(err.value) and f"fix or delete the '{SAMPLING_DEFAULTS_KEY}'" in str(err.value)


def test_cli_bad_entry_is_a_clear_error_before_loading(tmp_path, capsys):
    root = write_comfy_layout(tmp_path / "models")
    dit = root / "diffusion_models" / "tiny_dit.safetensors"
    save_file(load_file(str(dit)), str(dit), metadata={SAMPLING_DEFAULTS_KEY: '{"fps": "fast"}'})
    (root / "diffusion_models" / "tiny_dit.safetensors.sha256").unlink()
    assert main(["generate", "x", "-o", str(tmp_path / "o.mp4"), "--model-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fps='fast' has the wrong type" in err and "Traceback" not in err


def test_pipeline_arguments_default_to_the_model_defaults(tmp_path):
    root = write_comfy_layout(tmp_path / "models")
    dit = root / "diffusion_models" / "tiny_dit.safetensors"
    entry = SamplingConfig(width=64, height=32, num_frames=5, steps=1, guidance_scale=1.0, sampler="euler")
    save_file(load_file(str(dit)), str(dit), metadata={SAMPLING_DEFAULTS_KEY: sampling_defaults_json(entry)})
    (root / "diffusion_models" / "tiny_dit.safetensors.sha256").unlink()
    pipe = WanT2VPipeline.from_pretrained(root, dtype=torch.float32)
    assert pipe.defaults == entry and pipe.defaults_source == "from tiny_dit.safetensors metadata"
    assert pipe("a red circle").shape == (5, 32, 64, 3)
    assert pipe("a red circle", width=32, num_frames=1).shape == (1, 32, 32, 3)  # arguments override
    plain = WanT2VPipeline(pipe.dit, pipe.vae, pipe.text_encoder)  # built by hand: the official defaults
    assert plain.defaults == SamplingConfig() and plain.defaults_source.startswith("official")


@needs_demo
def test_model_dir_with_the_demo_files_runs_like_the_default_command(tmp_path, capsys):
    folder = tmp_path / "my_models"
    for rel in DEMO_FILES.values():  # a user's copy of the demo files, ComfyUI layout
        dst = folder / rel.removeprefix("models/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACK_ROOT / rel, dst)
        shutil.copy(PACK_ROOT / (rel + ".sha256"), str(dst) + ".sha256")
    fast = ["--steps", "2"]  # the rest (128x128, 25 frames, cfg, shift, sampler) from the file
    outs, lines = [], []
    for extra in ([], ["--model-dir", str(folder)]):
        out = tmp_path / f"{len(outs)}.mp4"
        assert main(["generate", "a red circle moving to the right on a blue background", "-o", str(out),
                     "--device", "cpu", *fast, *extra]) == 0
        lines.append(capsys.readouterr().out.splitlines()[0])
        outs.append(read_video(out)[0])
    assert lines[0] == lines[1] == (f"defaults: {DEMO_DEFAULTS.summary()} (from {DEMO_DIT.name} metadata); "
                                    "overridden by --steps")
    assert outs[0].shape == (25, 128, 128, 3) and (outs[0] == outs[1]).all()
