"""Scaled-fp8 DiT files (Kijai's `_scaled_KJ`, ComfyUI's `scaled_fp8` marker): weights stay fp8 with their scale and
are dequantized per layer at compute time; the forward equals the forward of the dequantized weights."""
import pytest
import torch

from tests.tiny_models import TINY_DIT, write
from wan_core.loading import load_dit
from wan_core.model import WanTransformer
from wan_core.quant.linear import dense_state_dict, quant_layers

E4M3_MAX = 448.0


def _scaled(sd: dict, *, marker: bool, per_row: bool = False) -> dict:
    """fp8 e4m3 Linear weights of the blocks with a per-layer (or per-row) fp32 `scale_weight`."""
    out = {"scaled_fp8": torch.empty(2, dtype=torch.float8_e4m3fn)} if marker else {}
    for k, v in sd.items():
        if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2:
            amax = v.abs().amax(1, keepdim=True) if per_row else v.abs().max()
            scale = (amax / E4M3_MAX).float()
            out[k] = (v / scale).to(torch.float8_e4m3fn)
            out[k.removesuffix("weight") + "scale_weight"] = scale.reshape(-1) if per_row else scale.reshape(())
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("layout", ["kijai_scaled_KJ", "comfy_scaled_fp8", "per_row"])
def test_scaled_fp8_forward(tmp_path, dit_sd, layout):
    sd = _scaled(dit_sd, marker=layout == "comfy_scaled_fp8", per_row=layout == "per_row")
    path = write(sd, tmp_path / f"wan2.2_ti2v_5B_fp8_e4m3fn_{layout}.safetensors", sidecar=False)
    model = load_dit(path, dtype=torch.float32)
    layers = {n: m for n, m in quant_layers(model).items() if m.qtype is not None}
    assert len(layers) == 10 * TINY_DIT.num_layers and all(m.qtype == "fp8" for m in layers.values())
    q = layers["blocks.0.self_attn.q"]
    assert q.weight.dtype == torch.float8_e4m3fn and q.scale_weight is not None  # stored as in the file
    dense = dense_state_dict(model)
    key = "blocks.0.self_attn.q.weight"
    scale = sd[key.removesuffix("weight") + "scale_weight"].reshape(-1, 1)
    assert torch.equal(dense[key], sd[key].float() * scale)
    ref = WanTransformer.from_state_dict(dense, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x, t, c = torch.randn(1, 48, 2, 8, 8, generator=g), torch.tensor([300.0]), torch.randn(1, 4, 32, generator=g)
    with torch.no_grad():
        got, want, orig = model(x, t, c), ref(x, t, c), WanTransformer.from_state_dict(dit_sd)(x, t, c)
    assert (got - want).abs().max() <= 1e-5
    assert (got - orig).abs().max() / orig.abs().max() < 0.1  # e4m3: 3 mantissa bits


def test_plain_fp8_still_dense(tmp_path, dit_sd):
    plain = {k: v.to(torch.float8_e5m2) if k.startswith("blocks.") and v.ndim == 2 else v for k, v in dit_sd.items()}
    model = load_dit(write(plain, tmp_path / "dit_fp8_e5m2.safetensors", sidecar=False))
    assert all(m.qtype is None for m in quant_layers(model).values())  # plain fp8 -> bf16 as before
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
