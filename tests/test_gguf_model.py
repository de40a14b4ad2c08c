"""Tiny DiTs as GGUF (Q8_0, Q4_0 written by `quantize`; K-quants from random blocks): forward parity, quantizer round
trip, info / kind detection / config inference, LoRA patches after dequantization."""
import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is a runtime requirement (pip install gguf)")

from tests._gguf_synth import K_DIT, k_quant_dit_file  # noqa: E402
from tests.tiny_models import TINY_DIT, tiny_dit_state_dict, write  # noqa: E402
from wan_core.cli import main  # noqa: E402
from wan_core.gguf_file import read_gguf  # noqa: E402
from wan_core.loading import load_dit, sampling_defaults  # noqa: E402
from wan_core.model import WanTransformer  # noqa: E402
from wan_core.model_files import file_kind  # noqa: E402
from wan_core.quant.linear import QuantLinear, dense_state_dict, merge_patches, quant_layers, with_patches  # noqa
from wan_core.quantize import quantize_array, quantize_file, tensor_type  # noqa: E402

# max |forward - fp32 original| / max |fp32 original| measured on TINY_DIT (seed 0): Q8_0 0.0036, Q4_0 0.069
REL_BOUND = {"Q8_0": 0.01, "Q4_0": 0.15}


def _inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, cfg.in_dim, 2, 8, 8, generator=g), torch.tensor([700.0]),
            torch.randn(1, 5, cfg.text_dim, generator=g))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    sd = tiny_dit_state_dict()
    src = write(sd, d / "dit.safetensors", sidecar=False)
    return sd, src, {q: quantize_file(src, d / f"dit_{q}.gguf", q) and d / f"dit_{q}.gguf" for q in REL_BOUND}


@pytest.mark.parametrize("qtype", list(REL_BOUND))
def test_forward_matches_dequantized_and_original(files, qtype):
    sd, _, paths = files
    model = load_dit(paths[qtype], dtype=torch.float32)
    layers = quant_layers(model)
    assert sum(m.qtype == qtype for m in layers.values()) == 10 * TINY_DIT.num_layers + 6  # blocks + embeddings, head
    assert layers["blocks.0.ffn.0"].weight.dtype == torch.uint8  # packed in memory
    dense = WanTransformer.from_state_dict(dense_state_dict(model), dtype=torch.float32)
    orig = WanTransformer.from_state_dict(sd)
    x, t, c = _inputs(TINY_DIT)
    with torch.no_grad():
        got, want, ref = model(x, t, c), dense(x, t, c), orig(x, t, c)
    assert (got - want).abs().max() <= 1e-5
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    assert 0 < rel < REL_BOUND[qtype], rel
    # per element: half a step of the block scale (Q8_0; Q4_0 one step, its top code is clipped), plus the fp16
    # rounding of the scale (<= 2^-11 relative on up to 127 steps)
    w = sd["blocks.0.ffn.0.weight"].reshape(-1, 32)
    wq = dense_state_dict(model)["blocks.0.ffn.0.weight"].reshape(-1, 32)
    step = w.abs().amax(1, keepdim=True) / (127 if qtype == "Q8_0" else 8)
    assert ((w - wq).abs() <= step * ((0.5 if qtype == "Q8_0" else 1.0) + 2 ** -3)).all()


def test_k_quant_file_forward(tmp_path):
    path, packed = k_quant_dit_file(tmp_path / "dit_k.gguf")
    model = load_dit(path, dtype=torch.float32)
    types = {m.qtype for m in quant_layers(model).values()}
    assert types >= {"Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K"}
    dense = dense_state_dict(model)
    for name, (raw, qtype) in packed.items():  # the model's weights are gguf's own dequantization, bit for bit
        ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])
        assert torch.equal(dense[name], torch.from_numpy(ref)), name
    ref_model = WanTransformer.from_state_dict(dense, dtype=torch.float32)
    x, t, c = _inputs(K_DIT)
    with torch.no_grad():
        got, want = model(x, t, c), ref_model(x, t, c)
    assert torch.isfinite(got).all() and (got - want).abs().max() <= 1e-5


def test_bf16_compute_and_default_dtype(files):
    model = load_dit(files[2]["Q8_0"])  # dtype None: bf16 compute
    assert model.compute_dtype == torch.bfloat16
    x, t, c = _inputs(TINY_DIT)
    with torch.no_grad():
        out = model(x, t, c)
    ref = WanTransformer.from_state_dict(dense_state_dict(model), dtype=torch.float32)(x, t, c)
    assert out.dtype == torch.float32 and ((out - ref).abs().max() / ref.abs().max()) < 0.05


def test_quantizer_round_trip_equals_gguf_package(files):
    sd, _, paths = files
    for qtype, path in paths.items():
        got, meta = read_gguf(path)
        assert meta["general.architecture"] == "wan"
        for name, value in sd.items():
            want_type = tensor_type(name, tuple(value.shape), qtype)
            if want_type == "F32":
                assert torch.equal(got[name], value), name
            else:
                assert got[name].qtype == want_type and tuple(got[name].shape) == tuple(value.shape)
                direct = gguf.quants.quantize(value.numpy(), gguf.GGMLQuantizationType[want_type])
                assert np.array_equal(got[name].data.numpy(), direct), name
    assert tensor_type("blocks.0.modulation", (1, 6, 4096), "Q4_0") == "F32"
    assert tensor_type("blocks.0.self_attn.norm_q.weight", (128,), "Q4_0") == "F32"
    assert tensor_type("patch_embedding.weight", (3072, 48, 1, 2, 2), "Q4_0") == "F32"
    assert tensor_type("text_embedding.0.weight", (3072, 4100), "Q4_0") == "BF16"  # rows not whole blocks
    assert quantize_array(torch.ones(2, 32), "Q8_0").dtype == np.uint8


def test_quantize_cli_info_kind_and_defaults(files, tmp_path, capsys):
    from wan_core.config import SAMPLING_DEFAULTS_KEY, SamplingConfig, sampling_defaults_json

    sd, _, paths = files
    src = tmp_path / "dit_meta.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(src), metadata={SAMPLING_DEFAULTS_KEY: sampling_defaults_json(SamplingConfig(steps=7))})
    out = tmp_path / "out.gguf"
    assert main(["quantize", str(src), str(out), "--type", "Q5_1"]) == 0
    assert "Q5_1 26" in capsys.readouterr().out
    assert main(["quantize", str(src), str(out)]) == 2  # exists: refused, file untouched
    assert "exists" in capsys.readouterr().err
    assert sampling_defaults(out)[0].steps == 7  # metadata travels with the weights
    assert file_kind(out) == "dit" and file_kind(paths["Q4_0"]) == "dit"
    assert main(["info", str(paths["Q4_0"])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "dit" and info["architecture"] == "wan" and info["gguf_types"]["Q4_0"] == 26
    assert info["config"]["dim"] == TINY_DIT.dim and info["config"]["num_layers"] == TINY_DIT.num_layers
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary behind


def test_lora_patches_apply_after_dequantization(files):
    model = load_dit(files[2]["Q4_0"], dtype=torch.float32)
    layer = quant_layers(model)["blocks.0.self_attn.q"]
    g = torch.Generator().manual_seed(1)
    up, down = torch.randn(128, 4, generator=g), torch.randn(4, 128, generator=g)
    x = torch.randn(3, 128, generator=g)
    patched = with_patches(layer, [lambda w: 0.5 * (up.to(w) @ down.to(w))])
    assert layer.patches == [] and patched.weight is layer.weight  # original untouched, packed data shared
    want = x @ (layer.dense_weight(torch.float32) + 0.5 * up @ down).T + layer.bias
    assert torch.allclose(patched(x), want, atol=1e-5)
    merged = merge_patches(with_patches(layer, patched.patches), dtype=torch.float32)
    assert merged.qtype is None and torch.allclose(merged(x), want, atol=1e-5)
    assert isinstance(merged, QuantLinear) and layer.qtype == "Q4_0"
