"""Bad GGUF input: unsupported tensor types, foreign architectures, truncated files -> messages naming the file."""
import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is a runtime requirement (pip install gguf)")

from tests._gguf_synth import write_gguf  # noqa: E402
from tests.tiny_models import tiny_dit_state_dict  # noqa: E402
from wan_core.cli import main  # noqa: E402
from wan_core.gguf_file import read_gguf  # noqa: E402
from wan_core.loading import CheckpointError, WrongModelKindError, load_dit, read_header  # noqa: E402


@pytest.fixture(scope="module")
def dit_arrays():
    return {k: v.numpy() for k, v in tiny_dit_state_dict().items()}


def test_unsupported_quant_type_named(tmp_path, dit_arrays):
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.IQ4_NL]
    packed = np.zeros((128, 128 // block * size), dtype=np.uint8)
    path = write_gguf(tmp_path / "dit_iq4.gguf", {**dit_arrays, "blocks.0.ffn.0.weight": (packed, "IQ4_NL")})
    with pytest.raises(CheckpointError, match=r"dit_iq4\.gguf.*'blocks\.0\.ffn\.0\.weight'.*IQ4_NL.*not supported"):
        load_dit(path)


def test_language_model_gguf_refused(tmp_path):
    """A llama-like file: token embedding, attention and norm tensors, architecture "llama"."""
    rng = np.random.default_rng(0)
    tensors = {"token_embd.weight": rng.standard_normal((64, 32)), "blk.0.attn_q.weight": rng.standard_normal((32, 32)),
               "blk.0.attn_norm.weight": np.ones(32), "output_norm.weight": np.ones(32)}
    path = write_gguf(tmp_path / "tinyllama-q8.gguf", tensors, arch="llama")
    with pytest.raises(CheckpointError, match=r"tinyllama-q8\.gguf is a GGUF of architecture 'llama', a language "
                                              r"model.*not a Wan diffusion model"):
        load_dit(path)
    assert main(["info", str(path)]) == 0  # info reports it instead of refusing


def test_unknown_tensors_without_architecture(tmp_path):
    path = write_gguf(tmp_path / "other.gguf", {"foo.weight": np.ones((4, 4))}, arch=None)
    assert "general.architecture" not in read_gguf(path)[1]
    with pytest.raises(WrongModelKindError, match=r"other\.gguf is not a recognised Wan component"):
        load_dit(path)


def test_truncated_and_damaged_files(tmp_path, dit_arrays):
    good = write_gguf(tmp_path / "good.gguf", dit_arrays).read_bytes()
    for name, data in (("cut.gguf", good[: len(good) - 1000]), ("header_cut.gguf", good[:200]),
                       ("zeros.gguf", b"GGUF" + bytes(64))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{name} is damaged or incomplete.*re-download it"):
            load_dit(path)
    path = tmp_path / "renamed.gguf"
    path.write_bytes(b"\x08\x00" + good[2:100])
    with pytest.raises(CheckpointError, match=r"renamed\.gguf is named \.gguf but does not start with the GGUF magic"):
        load_dit(path)
    with pytest.raises(CheckpointError, match=r"good\.gguf is a GGUF file, not safetensors"):
        read_header(tmp_path / "good.gguf")


def test_orig_shape_metadata(tmp_path, dit_arrays):
    """ComfyUI-GGUF's `comfy.gguf.orig_shape.<name>`: a tensor stored reshaped loads in its original shape."""
    w = dit_arrays["blocks.0.ffn.2.weight"]  # [128, 128] stored as [64, 256]
    q = gguf.quants.quantize(w.reshape(64, 256), gguf.GGMLQuantizationType.Q8_0)
    writer_path = tmp_path / "reshaped.gguf"
    writer = gguf.GGUFWriter(str(writer_path), arch="wan")
    for k, v in dit_arrays.items():
        if k == "blocks.0.ffn.2.weight":
            writer.add_array(f"comfy.gguf.orig_shape.{k}", list(w.shape))
            writer.add_tensor(k, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(k, np.ascontiguousarray(v, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model = load_dit(writer_path, dtype=torch.float32)
    want = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(w.shape)
    assert torch.equal(model.blocks[0].ffn[2].dense_weight(torch.float32), torch.from_numpy(want))
