"""The WanT2V LoRA node through the standalone host: chainable, base model shared unchanged between branches, the
sampler sees exactly its branch's LoRAs, bad LoRAs fail at the node."""
from __future__ import annotations

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from nodes.host import StandaloneHost, set_host
from tests._lora_synth import kohya_sd, lowrank_entries, merged_reference, official_sd
from tests.tiny_models import tiny_dit_state_dict, write, write_comfy_layout
from wan_core.lora import LoraError

NODE = NODE_CLASS_MAPPINGS["WanT2VLora"]()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = write_comfy_layout(tmp_path_factory.mktemp("models"))
    base = tiny_dit_state_dict()
    write(official_sd(lowrank_entries(base, seed=1), alpha=4.0), root / "loras" / "style.safetensors")
    write(kohya_sd(lowrank_entries(base, seed=2)), root / "loras" / "sub" / "subject.safetensors")
    g = torch.Generator().manual_seed(0)
    write({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(2, 5120, generator=g),
           "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(5120, 2, generator=g)},
          root / "loras" / "wan14b.safetensors")
    return root


@pytest.fixture
def host(models_dir, tmp_path):
    h = StandaloneHost(models_dir, tmp_path / "output", device="cpu")
    previous = set_host(h)
    yield h
    set_host(previous)


def test_node_is_registered_with_a_loras_dropdown(host):
    assert NODE_DISPLAY_NAME_MAPPINGS["WanT2VLora"] == "WanT2V LoRA"
    spec = NODE_CLASS_MAPPINGS["WanT2VLora"].INPUT_TYPES()["required"]
    listed = [n for n in spec["lora_name"][0] if "tiny_demo" not in n]  # the pack's own demo LoRA is listed too
    assert listed == ["style.safetensors", "sub/subject.safetensors", "wan14b.safetensors"]
    assert spec["model"][0] == "WANT2V_DIT" and NODE.RETURN_TYPES == ("WANT2V_DIT",)


def test_chain_and_branches_share_the_base(host):
    base_sd = tiny_dit_state_dict()
    dit = NODE_CLASS_MAPPINGS["WanT2VModelLoader"]().load("tiny_dit.safetensors", "auto", True)[0]
    one = NODE.apply(dit, "style.safetensors", 0.5)[0]
    two = NODE.apply(one, "sub/subject.safetensors", 1.0)[0]
    assert dit.loras == () and len(one.loras) == 1 and len(two.loras) == 2
    assert one.model is dit.model and two.model is dit.model  # one base model in memory
    assert NODE.apply(dit, "style.safetensors", 0.0)[0] is dit
    want = merged_reference(base_sd, lowrank_entries(base_sd, seed=1), 0.5, alpha=4.0)
    want = merged_reference(want, lowrank_entries(base_sd, seed=2), 1.0)
    for handle, expect in ((two, want), (dit, base_sd), (one, None), (dit, base_sd)):
        sd = host.activate(handle).state_dict()
        if expect is not None:
            err = max((sd[k] - expect[k]).abs().max().item() for k in expect)
            assert err < 1e-6 if handle is two else err == 0.0  # the base branch: bit for bit


def test_lora_for_another_model_fails_at_the_node(host):
    dit = NODE_CLASS_MAPPINGS["WanT2VModelLoader"]().load("tiny_dit.safetensors", "auto", True)[0]
    with pytest.raises(LoraError, match=r"width 5120 \(Wan 14B"):
        NODE.apply(dit, "wan14b.safetensors", 1.0)
    with pytest.raises(FileNotFoundError, match="style2.safetensors"):
        NODE.apply(dit, "style2.safetensors", 1.0)
