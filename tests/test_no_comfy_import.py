"""P2: wan_core must import without ComfyUI and must not pull ComfyUI modules in."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST_MODULES = ("comfy", "folder_paths", "nodes", "comfy_extras", "execution", "server")


def test_wan_core_imports_no_comfy_modules():
    code = (
        "import sys, wan_core, wan_core.pipeline, wan_core.loading, wan_core.cli, wan_core.model, wan_core.vae, "
        "wan_core.text_encoder, wan_core.sampling\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {HOST_MODULES!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"wan_core imported host modules: {out.stdout}"


def test_no_comfy_import_statements_in_wan_core():
    offenders = []
    for path in (ROOT / "wan_core").rglob("*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            s = line.strip()
            if s.startswith(("import comfy", "from comfy", "import folder_paths", "from folder_paths")):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {s}")
    assert not offenders, offenders
