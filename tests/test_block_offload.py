"""Block streaming (`--offload blocks`): identical results, CPU tensors restored, packed weights streamed."""
import pytest
import torch

from tests.tiny_models import TINY_DIT, tiny_dit_state_dict
from wan_core.model import WanTransformer
from wan_core.offload import BlockStreamer, block_bytes, stream_blocks


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 48, 2, 8, 8, generator=g), torch.tensor([400.0]), torch.randn(1, 6, 32, generator=g)


def _run(model, device):
    x, t, c = _inputs()
    with torch.no_grad():
        return model(x.to(device), t.to(device), c.to(device)).cpu()


def test_cpu_streaming_is_identical_and_restores():
    model = WanTransformer.from_state_dict(tiny_dit_state_dict())
    want = _run(model, "cpu")
    before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    with stream_blocks(model, "cpu") as streamer:
        got = _run(model, "cpu")
        again = _run(model, "cpu")
    assert torch.equal(got, want) and torch.equal(again, want)
    assert streamer.copies == 2 * TINY_DIT.num_layers and not streamer._saved and not streamer._handles
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == before  # same tensors, nothing copied
    assert not any(b._forward_pre_hooks or b._forward_hooks for b in model.blocks)
    largest, rest = block_bytes(model)
    assert largest > 0 and rest > 0


def test_error_inside_a_block_restores_tensors():
    model = WanTransformer.from_state_dict(tiny_dit_state_dict())
    streamer = BlockStreamer(model, "cpu").attach()
    ptr = model.blocks[0].ffn[0].weight.data_ptr()
    streamer._enter(0)
    streamer.detach()  # as after an exception raised inside block 0
    assert model.blocks[0].ffn[0].weight.data_ptr() == ptr and not streamer._saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (on the CPU streaming copies nothing)")
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_streaming_matches_resident(tmp_path, packed):
    from wan_core.loading import load_dit
    from tests.tiny_models import write

    sd = tiny_dit_state_dict()
    if packed:
        from wan_core.quantize import quantize_file

        quantize_file(write(sd, tmp_path / "dit.safetensors", sidecar=False), tmp_path / "dit.gguf", "Q4_0")
        model = load_dit(tmp_path / "dit.gguf", dtype=torch.float32)
    else:
        model = WanTransformer.from_state_dict(sd)
    want = _run(model.to("cuda"), "cuda")
    model.to("cpu")
    with stream_blocks(model, "cuda") as streamer:
        got = _run(model, "cuda")
    assert torch.equal(got, want) and streamer.copies == TINY_DIT.num_layers
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.blocks[0].ffn[0].weight.is_pinned()
