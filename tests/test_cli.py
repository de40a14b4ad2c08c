"""The command line end to end on tiny random weights in a ComfyUI-layout model folder."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import write_comfy_layout
from wan_core.cli import main
from wan_core.video import read_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_comfy_layout(tmp_path_factory.mktemp("models"))


def test_generate_writes_decodable_mp4_with_parameters(model_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    code = main(["generate", "a red circle moving to the left", "-o", str(out), "--model-dir", str(model_dir),
                 "--width", "64", "--height", "96", "--frames", "9", "--steps", "2", "--fps", "12", "--seed", "5",
                 "--device", "cpu"])
    assert code == 0
    frames, meta = read_video(out)
    assert frames.shape == (9, 96, 64, 3)
    params = json.loads(meta["wan_t2v_parameters"])
    assert params["prompt"] == "a red circle moving to the left" and params["seed"] == 5 and params["fps"] == 12


def test_generate_bad_frames_names_the_fix(model_dir, tmp_path, capsys):
    code = main(["generate", "x", "-o", str(tmp_path / "x.mp4"), "--model-dir", str(model_dir), "--frames", "8",
                 "--width", "64", "--height", "64", "--steps", "1", "--device", "cpu"])
    assert code == 2
    assert "frames must be 4k+1 (got 8); try 9" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_info_and_verify(model_dir, capsys):
    dit = model_dir / "diffusion_models" / "tiny_dit.safetensors"
    assert main(["info", str(dit)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "dit"
    assert main(["verify", str(dit)]) == 0
    assert "OK" in capsys.readouterr().out


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "wan_core", "generate", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert "--model-dir" in out.stdout and "--sampler" in out.stdout


def test_generate_with_temporal_options_and_interpolation(model_dir, tmp_path):
    out = tmp_path / "t.mp4"
    code = main(["generate", "a green square moving up", "-o", str(out), "--model-dir", str(model_dir), "--width", "64",
                 "--height", "64", "--frames", "9", "--steps", "3", "--fps", "12", "--device", "cpu",
                 "--temporal", "flow=0.4,enhance=2", "--interpolate", "2", "--deflicker", "1"])
    assert code == 0
    frames, meta = read_video(out)
    assert frames.shape[0] == 17  # (9 - 1) * 2 + 1
    params = json.loads(meta["wan_t2v_parameters"])
    assert params["fps"] == 24 and params["interpolate"] == 2 and "flow_strength=0.4" in params["temporal"]
    assert params["deflicker"] == 1.0


def test_generate_bad_deflicker_is_refused_before_loading(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "x", "-o", str(tmp_path / "x.mp4"), "--deflicker", "1.5"])
    assert exc.value.code == 2
    assert "1.5 is outside [0, 1]" in capsys.readouterr().err


def test_generate_bad_temporal_spec_is_refused(model_dir, tmp_path, capsys):
    code = main(["generate", "x", "-o", str(tmp_path / "x.mp4"), "--model-dir", str(model_dir), "--width", "64",
                 "--height", "64", "--frames", "5", "--steps", "1", "--temporal", "wobble=1"])
    assert code == 2
    assert "unknown temporal option 'wobble'" in capsys.readouterr().err
