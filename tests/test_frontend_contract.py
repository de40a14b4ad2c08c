"""The shipped UI workflows as the real ComfyUI frontend shows them (headless Chromium driven by playwright).

Needs COMFYUI_PATH (a ComfyUI checkout; the server's Python, see tests/comfy_server.py, must have its
comfyui-frontend-package), the `playwright` Python package and a Chromium binary (CHROMIUM_PATH, or `chromium` on
PATH, e.g. Debian's `chromium` package); skipped with the reason otherwise. Each workflows/*.json is loaded with
app.loadGraphData() in a fresh browser context and must show: every node type registered, no page error, stored
sizes no smaller than the frontend's minimum, no two nodes overlapping (bounding boxes as the frontend computes them,
title bar and the badges drawn above it included), titles that name what each node does (tests/workflow_layout.py) and
app.graphToPrompt() output equal to the API-format twin in workflows/api/ (class_type, inputs and title).
A screenshot of each is written to $FRONTEND_SHOTS_DIR when set.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.comfy_server import COMFY, ROOT, SKIP_REASON, comfy_server, make_base, place_tiny_models, server_python
from tests.workflow_layout import overlaps, title_problems

UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
API_DIR = ROOT / "workflows" / "api"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
# without the background-networking flags Chromium waits on network services a closed network never answers
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# what a user has after the first run: no template dialog, and the canvas navigation values that frontend 1.27
# writes on first start (left unset, its NavigationMode setting writes them before they are registered: page error)
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Canvas.LeftMouseClickBehavior": "panning",
            "Comfy.Canvas.MouseWheelScroll": "zoom", "Comfy.Minimap.Visible": False,
            "LiteGraph.Canvas.MinFontSizeForLOD": 0}  # full-detail rendering at any zoom, for the screenshots
VIEWPORT = {"width": 1920, "height": 1080}

def _skip_reason() -> str | None:
    if not COMFY:
        return SKIP_REASON
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright; it downloads no browser)"
    if not CHROMIUM:
        return "no Chromium binary: set CHROMIUM_PATH or install Debian's chromium package"
    if subprocess.run([server_python(), "-c", "import comfyui_frontend_package"], capture_output=True).returncode:
        return f"{server_python()} has no comfyui-frontend-package (ComfyUI's requirements.txt installs it)"
    return None


SKIP = _skip_reason()
pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

LOAD_JS = """async (wf) => {
  await window.app.loadGraphData(wf);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  window.app.canvas.draw(true, true);
  const nodes = window.app.graph._nodes.map(n => {
    const [x, y, w, h] = n.getBounding();  // title bar included
    const badges = (n.badges || []).map(b => typeof b === "function" ? b() : b);  // drawn above the title bar
    const above = badges.length ? Math.max(...badges.map(b => b.height)) + 2 : 0;
    return {id: n.id, type: n.type, title: n.title, size: Array.from(n.size), min_size: Array.from(n.computeSize()),
            box: [x, y - above, w, h + above]};
  });
  const prompt = await window.app.graphToPrompt();
  return {nodes, output: prompt.output};
}"""
FIT_JS = """async () => {
  await window.app.extensionManager.command.execute('Comfy.Canvas.FitView');
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
}"""


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    from tests.tiny_models import write_comfy_layout

    base = tmp_path_factory.mktemp("frontend_base")
    models = make_base(base)
    place_tiny_models(models, write_comfy_layout(tmp_path_factory.mktemp("tiny")), sorted(API_DIR.glob("*.json")))
    (base / "user" / "default").mkdir(parents=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(SETTINGS))
    with comfy_server(base, frontend=True) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # playwright gives the browser a fresh temporary profile
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


_LOADED: dict[str, dict] = {}


@pytest.fixture
def shown(frontend, browser, request):
    """What the frontend shows for workflow request.param: its nodes, graphToPrompt output and page errors."""
    path = request.param
    if path.name not in _LOADED:
        context = browser.new_context(viewport=VIEWPORT)  # own storage: no tabs left by another workflow
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
        page.goto(frontend)
        page.wait_for_function("!!(window.app?.graph && window.LiteGraph?.registered_node_types?.WanT2VSampler)",
                               timeout=120_000)
        workflow = json.loads(path.read_text())
        unregistered = page.evaluate("(types) => types.filter(t => !window.LiteGraph.registered_node_types[t])",
                                     sorted({n["type"] for n in workflow["nodes"]}))
        result = page.evaluate(LOAD_JS, workflow)
        if "zod schema" in (alert := page.evaluate("() => document.body.innerText")):  # the load alert, no page error
            errors.append("frontend alert: " + alert[alert.find("Invalid workflow"):][:300])
        page.evaluate(FIT_JS)
        if shots := os.environ.get("FRONTEND_SHOTS_DIR"):
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / f"{path.stem}.png"))
        context.close()
        _LOADED[path.name] = {**result, "errors": errors, "unregistered": unregistered, "workflow": workflow}
    return _LOADED[path.name]


def _per_file(test):
    return pytest.mark.parametrize("shown", UI_FILES, ids=lambda p: p.name, indirect=True)(test)


@_per_file
def test_every_node_type_is_registered_and_no_page_error(shown):
    assert not shown["unregistered"], f"node types the frontend does not know: {shown['unregistered']}"
    assert not shown["errors"], "page errors while loading:\n" + "\n".join(shown["errors"])
    assert len(shown["nodes"]) == len(shown["workflow"]["nodes"]), "the frontend dropped or added nodes"


@_per_file
def test_stored_sizes_are_what_the_frontend_draws(shown):
    """A node stored smaller than the frontend's minimum grows on load and can cover its neighbours."""
    stored = {n["id"]: n["size"] for n in shown["workflow"]["nodes"]}
    small = [f"node {n['id']} ({n['title']}): stored {stored[n['id']]}, minimum [{n['min_size'][0]:.0f}, "
             f"{n['min_size'][1]:.0f}]" for n in shown["nodes"]
             if stored[n["id"]][0] < n["min_size"][0] - 0.5 or stored[n["id"]][1] < n["min_size"][1] - 0.5]
    assert not small, "sizes below the frontend's minimum (store at least that):\n" + "\n".join(small)


@_per_file
def test_no_two_nodes_overlap(shown):
    found = overlaps(shown["nodes"])
    assert not found, "overlapping nodes (move one in the workflow's 'pos'):\n" + "\n".join(found)


@_per_file
def test_titles_name_what_each_node_does(shown):
    problems = title_problems(shown["nodes"])
    assert not problems, "titles breaking the rule in tests/workflow_layout.py:\n" + "\n".join(problems)


@_per_file
def test_graph_to_prompt_equals_shipped_api_file(shown, request):
    api_path = API_DIR / request.node.callspec.params["shown"].name
    assert api_path.exists(), f"{api_path.name} has no API-format twin in workflows/api/"
    api = json.loads(api_path.read_text())
    output = shown["output"]
    assert sorted(output) == sorted(api), "node ids differ between graphToPrompt() and the API file"
    for node_id, node in api.items():
        assert output[node_id]["class_type"] == node["class_type"], f"node {node_id}: class_type"
        assert output[node_id]["inputs"] == node["inputs"], f"node {node_id} ({node['class_type']}): inputs differ"
        assert output[node_id].get("_meta") == node.get("_meta"), f"node {node_id}: title differs (client --set keys)"
