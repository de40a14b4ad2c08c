import json

import av
import numpy as np
import pytest
import torch

from wan_core.video import read_video, write_mp4


def test_write_mp4_roundtrip_with_metadata_and_bt709(tmp_path):
    frames = torch.linspace(0, 1, 9 * 32 * 48 * 3).reshape(9, 32, 48, 3)
    meta = {"prompt": json.dumps({"1": {"class_type": "X"}}), "wan_t2v_parameters": json.dumps({"seed": 3})}
    path = write_mp4(frames, tmp_path / "a" / "v.mp4", fps=24, metadata=meta)
    decoded, tags = read_video(path)
    assert decoded.shape == (9, 32, 48, 3)
    assert json.loads(tags["prompt"]) == {"1": {"class_type": "X"}}
    assert json.loads(tags["wan_t2v_parameters"]) == {"seed": 3}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert (s.codec_context.color_primaries, s.codec_context.color_trc, s.codec_context.colorspace) == (1, 1, 1)
        assert s.average_rate == 24
    # smooth gradient survives lossy coding closely
    assert np.abs(decoded.astype(float) / 255 - frames.numpy()).mean() < 0.03
    assert not list(tmp_path.glob("a/*.part"))


def test_odd_sizes_are_padded_to_even(tmp_path):
    decoded, _ = read_video(write_mp4(np.zeros((5, 33, 47, 3), np.uint8), tmp_path / "o.mp4", fps=8))
    assert decoded.shape == (5, 34, 48, 3)


@pytest.mark.parametrize("kwargs,frames,msg", [
    ({"crf": 60}, np.zeros((2, 8, 8, 3)), "crf must be between 0"),
    ({"fps": 0}, np.zeros((2, 8, 8, 3)), "fps must be positive"),
    ({}, np.zeros((2, 3, 8, 8)), r"shape \[T, H, W, 3\]"),
    ({}, np.zeros((0, 8, 8, 3)), "0 frames"),
])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, kwargs, frames, msg):
    with pytest.raises(ValueError, match=msg):
        write_mp4(frames, tmp_path / "x.mp4", **kwargs)
    assert list(tmp_path.iterdir()) == []
