"""Layout and title rules for the shipped UI workflows, shared by the static check (tests/test_workflows.py, stored
positions and sizes) and the frontend check (tests/test_frontend_contract.py, boxes as the frontend computes them).

A node is given as {"id", "type", "title", "box": [x, y, w, h]}, the box covering everything drawn for the node.
"""
from __future__ import annotations

TITLE_H = 30  # frontend 1.27: LiteGraph.NODE_TITLE_HEIGHT, drawn above pos
BADGE_H = 22  # the pack's source badge ("WanT2V", 20 px + 2 px gap), drawn above the title bar

# The title rule: a node's title (case-insensitive) must contain one word of each group listed for its type, and
# no node may carry another type's signature word (the first word of that type's first group) unless its own
# groups list it too. Untitled nodes show the display name, which passes. Titles are unique within a workflow.
TITLE_WORDS = {
    "WanT2VModelLoader": [("load",), ("dit", "model", "diffusion")],
    "WanT2VTextEncoderLoader": [("load",), ("text encoder", "umt5")],
    "WanT2VVAELoader": [("load",), ("vae",)],
    "WanT2VTextEncode": [("prompt", "text encode")],
    "WanT2VLatentInit": [("size", "latent")],
    "WanT2VSampler": [("sampler",)],
    "WanT2VDecode": [("decode",)],
    "WanT2VSaveVideo": [("save",)],
    "WanT2VTemporalSettings": [("temporal",)],
    "WanT2VVideoMetrics": [("metrics",)],
    "WanT2VFrameInterpolate": [("interpolat",)],
    "WanT2VDeflicker": [("deflicker",)],
    "WanT2VStepCache": [("cache",)],
    "WanT2VFewStepSchedule": [("schedule", "sigmas")],
    "WanT2VSpeedOptions": [("speed",)],
    "WanT2VLora": [("lora",)],
    "LoadImage": [("load",), ("image",)],  # ComfyUI's own node (image-to-video start image)
    "Note": [("note",)],
    "MarkdownNote": [("note",)],
}


def title_problems(nodes: list[dict]) -> list[str]:
    """Every way the nodes' titles break the title rule (empty when they follow it)."""
    problems = []
    titles = [n["title"] for n in nodes]
    if len(set(titles)) != len(titles):
        problems.append(f"two nodes share a title: {sorted(titles)}")
    signatures = {kind: groups[0][0] for kind, groups in TITLE_WORDS.items()}
    for n in nodes:
        where = f"node {n['id']} ({n['type']}) titled {n['title']!r}"
        if n["type"] not in TITLE_WORDS:
            problems.append(f"{where}: no title rule for this type; add its words to TITLE_WORDS")
            continue
        title, groups = n["title"].lower(), TITLE_WORDS[n["type"]]
        problems += [f"{where}: the title must contain one of {group}" for group in groups
                     if not any(word in title for word in group)]
        own = {word for group in groups for word in group}
        problems += [f"{where}: names what {kind} does ({word!r})" for kind, word in signatures.items()
                     if kind != n["type"] and word not in own and word in title]
    return problems


def overlaps(nodes: list[dict]) -> list[str]:
    """Every pair of nodes whose boxes intersect (touching edges do not count)."""
    found = []
    for i, a in enumerate(nodes):
        ax, ay, aw, ah = a["box"]
        for b in nodes[i + 1:]:
            bx, by, bw, bh = b["box"]
            dx, dy = min(ax + aw, bx + bw) - max(ax, bx), min(ay + ah, by + bh) - max(ay, by)
            if dx > 0 and dy > 0:
                found.append(f"'{a['title']}' (node {a['id']}, box {[round(v) for v in a['box']]}) and "
                             f"'{b['title']}' (node {b['id']}, box {[round(v) for v in b['box']]}): "
                             f"{dx:.0f} x {dy:.0f} px")
    return found
