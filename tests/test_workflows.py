"""Shipped workflows: API format executed in-process (links resolved, ComfyUI-style input validation) on tiny models;
UI format checked against the node definitions (types, widget order and types, links), and its stored layout and
titles against tests/workflow_layout.py (the real frontend's view is tests/test_frontend_contract.py)."""
import inspect
import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from nodes.host import StandaloneHost, set_host
from tests.tiny_models import write_comfy_layout
from tests.workflow_layout import BADGE_H, TITLE_H, overlaps, title_problems
from wan_core.video import read_video

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflows"))
import client  # noqa: E402

API_FILES = sorted((ROOT / "workflows" / "api").glob("*.json"))
UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}  # UI-only node types (no backend class)
WIDGET_TYPES = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}
MODEL_COMBOS = {"model_name", "lora_name"}  # file dropdowns: their choices depend on the user's folders


class LoadImageStandIn:
    """ComfyUI's native LoadImage as far as these tests need it: its input folder is workflows/ (the shipped start
    image); returns IMAGE [1, H, W, 3] in 0..1 and MASK like the real node for an opaque RGB file."""

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (sorted(p.name for p in (ROOT / "workflows").glob("*.png")),
                                       {"image_upload": True})}}

    def load_image(self, image):
        import numpy as np
        import torch
        from PIL import Image

        rgb = np.array(Image.open(ROOT / "workflows" / image).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(rgb)[None], torch.zeros(1, *rgb.shape[:2])


NATIVE = {"LoadImage": LoadImageStandIn}  # core ComfyUI nodes the shipped workflows use
CLASSES = {**NODE_CLASS_MAPPINGS, **NATIVE}
FRONTEND_WIDGETS = {"LoadImage": ("upload",)}  # widgets the frontend adds: in widgets_values, not in the API prompt


def _inputs(cls) -> dict:
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def _check_value(where: str, kind, opts: dict, value, name: str):
    if isinstance(kind, list):
        assert isinstance(value, str), f"{where}: {name}={value!r} must be one of the choices"
        assert name in MODEL_COMBOS or value in kind, f"{where}: {name}={value!r} not in {kind}"
        return
    assert isinstance(value, WIDGET_TYPES[kind]) and not (kind != "BOOLEAN" and isinstance(value, bool)), \
        f"{where}: {name}={value!r} is not {kind}"
    if kind in ("INT", "FLOAT"):
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {name}={value} out of range"


def validate_api(graph: dict) -> None:
    """What ComfyUI checks before queueing: known types, required inputs present, link types, widget values."""
    for node_id, node in graph.items():
        cls = CLASSES[node["class_type"]]
        spec = cls.INPUT_TYPES()
        for name in spec["required"]:
            assert name in node["inputs"], f"node {node_id}: missing required input {name}"
        declared = _inputs(cls)
        for name, value in node["inputs"].items():
            if name in FRONTEND_WIDGETS.get(node["class_type"], ()):
                continue
            kind, opts = declared[name]
            if isinstance(value, list):
                src = CLASSES[graph[value[0]]["class_type"]]
                assert src.RETURN_TYPES[value[1]] == kind, f"node {node_id}.{name}: link type mismatch"
            else:
                _check_value(f"node {node_id}", kind, opts, value, name)
        if hasattr(cls, "VALIDATE_INPUTS"):
            args = inspect.signature(cls.VALIDATE_INPUTS).parameters
            assert cls.VALIDATE_INPUTS(**{k: node["inputs"][k] for k in args if k in node["inputs"]}) is True


def run_api(graph: dict, extra_pnginfo: dict | None = None) -> dict:
    """Execute an API-format graph in dependency order; returns {node id: outputs}."""
    results: dict[str, tuple] = {}

    def run(node_id: str):
        if node_id in results:
            return results[node_id]
        node = graph[node_id]
        cls = CLASSES[node["class_type"]]
        kwargs = {k: (run(v[0])[v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        hidden = cls.INPUT_TYPES().get("hidden", {})
        kwargs.update({k: {"PROMPT": graph, "EXTRA_PNGINFO": extra_pnginfo}[v] for k, v in hidden.items()})
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        results[node_id] = out["result"] if isinstance(out, dict) else out
        return results[node_id]

    for node_id in graph:
        run(node_id)
    return results


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """Tiny models saved under the file names the shipped workflows use."""
    tiny = write_comfy_layout(tmp_path_factory.mktemp("tiny"))
    root = tmp_path_factory.mktemp("models")
    for path in API_FILES:
        for node in json.loads(path.read_text()).values():
            name = node["inputs"].get("model_name")
            if name:
                folder = {"WanT2VModelLoader": "diffusion_models", "WanT2VTextEncoderLoader": "text_encoders",
                          "WanT2VVAELoader": "vae"}[node["class_type"]]
                src = next((tiny / folder).glob("*.safetensors"))
                (root / folder).mkdir(exist_ok=True)
                shutil.copy(src, root / folder / name)
            if node["class_type"] == "WanT2VLora":  # a LoRA of the tiny DiT under the shipped LoRA's name
                _tiny_lora(tiny, root / "loras" / node["inputs"]["lora_name"])
    return root


def _tiny_lora(tiny: Path, path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from tests._lora_synth import lowrank_entries, official_sd

    sd = load_file(str(next((tiny / "diffusion_models").glob("*.safetensors"))))
    path.parent.mkdir(exist_ok=True)
    save_file(official_sd(lowrank_entries(sd), alpha=4), str(path))


def test_workflow_folders_are_not_empty():
    assert API_FILES and UI_FILES


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_validates_and_runs(path, models_dir, tmp_path):
    graph = client.load_workflow(path)
    validate_api(graph)
    set_host(StandaloneHost(models_dir, tmp_path / "out", device="cpu"))
    try:
        small = client.apply_overrides(graph, ["size=custom", "width=72", "height=40", "frames=5", "steps=2",
                                               "prompt=一只红色的狐狸在雪地里奔跑"])
        ui_path = ROOT / "workflows" / path.name
        workflow = json.loads(ui_path.read_text()) if ui_path.exists() else {}
        results = run_api(small, {"workflow": workflow})
    finally:
        set_host(None)
    saved = [r[0] for nid, r in results.items() if small[nid]["class_type"] == "WanT2VSaveVideo"]
    assert len(saved) == 1
    frames, meta = read_video(saved[0])
    multiplier = [n["inputs"]["multiplier"] for n in small.values() if n["class_type"] == "WanT2VFrameInterpolate"]
    assert frames.shape == ((5 - 1) * (multiplier[0] if multiplier else 1) + 1, 40, 72, 3)  # 5 frames, interpolated
    assert json.loads(meta["prompt"]) == small and json.loads(meta["workflow"]) == workflow


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_matches_node_definitions(path):
    ui = json.loads(path.read_text())
    assert str(uuid.UUID(ui["id"])) == ui["id"], f"{path.name}: id {ui['id']!r} is not a UUID (the frontend warns)"
    links = {link[0]: link for link in ui["links"]}
    by_id = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        where = f"{path.name} node {node['id']} ({node['type']})"
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in CLASSES, f"{where}: unknown node type"
        cls = CLASSES[node["type"]]
        values = list(node.get("widgets_values", []))
        sockets = {i["name"]: i for i in node.get("inputs", [])}
        optional = cls.INPUT_TYPES().get("optional", {})
        for name, (kind, opts) in _inputs(cls).items():
            if name in optional and name not in sockets and not (isinstance(kind, list) or kind in WIDGET_TYPES):
                continue  # an optional socket the graph does not use
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                assert values, f"{where}: widget values end before {name}"
                _check_value(where, kind, opts, values.pop(0), name)
                if opts.get("control_after_generate"):
                    assert values.pop(0) in ("fixed", "increment", "decrement", "randomize"), where
            else:
                assert name in sockets and sockets[name]["type"] == kind, f"{where}: socket {name} missing/mistyped"
        values = values[len(FRONTEND_WIDGETS.get(node["type"], ())):]
        assert not values, f"{where}: {len(values)} widget values left over: {values}"
        for i, out in enumerate(node["outputs"]):
            assert out["type"] == cls.RETURN_TYPES[i], f"{where}: output {i} type"
            for link_id in out["links"] or []:
                assert links[link_id][1] == node["id"] and links[link_id][2] == i, f"{where}: link {link_id}"
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert by_id[src]["outputs"][src_slot]["type"] == kind == by_id[dst]["inputs"][dst_slot]["type"]
        assert by_id[dst]["inputs"][dst_slot]["link"] == link_id


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_and_api_formats_agree(path):
    api_path = ROOT / "workflows" / "api" / path.name
    if not api_path.exists():
        pytest.skip(f"{path.name} has no API-format twin in workflows/api/")
    api = json.loads(api_path.read_text())
    ui = {str(n["id"]): n for n in json.loads(path.read_text())["nodes"] if n["type"] not in FRONTEND_ONLY}
    assert {k: n["class_type"] for k, n in api.items()} == {k: n["type"] for k, n in ui.items()}
    for node_id, node in api.items():
        widgets = [v for v in node["inputs"].values() if not isinstance(v, list)]
        ui_values = [v for v in ui[node_id]["widgets_values"] if v not in ("randomize", "fixed")]
        if extra := FRONTEND_WIDGETS.get(node["class_type"]):
            ui_values = ui_values[:-len(extra)]  # the frontend does not send its own widgets (LoadImage's upload)
        assert widgets == ui_values, f"node {node_id}: API and UI widget values differ"
        title = ui[node_id].get("title") or NODE_DISPLAY_NAME_MAPPINGS[node["class_type"]]
        assert node["_meta"]["title"] == title, f"node {node_id}: API title differs from the UI's (client --set keys)"


def _stored_nodes(path: Path) -> list[dict]:
    """The UI graph's nodes with the box its stored pos and size give (title bar and the pack's badge above pos)."""
    nodes = []
    for n in json.loads(path.read_text())["nodes"]:
        above = TITLE_H + (BADGE_H if n["type"] in NODE_CLASS_MAPPINGS else 0)
        (x, y), (w, h) = n["pos"], n["size"]
        nodes.append({"id": n["id"], "type": n["type"], "box": [x, y - above, w, h + above],
                      "title": n.get("title") or NODE_DISPLAY_NAME_MAPPINGS.get(n["type"], n["type"])})
    return nodes


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_stored_layout_has_no_overlaps(path):
    found = overlaps(_stored_nodes(path))
    assert not found, "overlapping nodes (move one in the workflow's 'pos'):\n" + "\n".join(found)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_titles_name_what_each_node_does(path):
    problems = title_problems(_stored_nodes(path))
    assert not problems, "titles breaking the rule in tests/workflow_layout.py:\n" + "\n".join(problems)
