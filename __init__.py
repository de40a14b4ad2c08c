"""ComfyUI-WanT2V: Wan2.2 TI2V-5B text-to-video nodes on the wan_core engine.

Importable without ComfyUI (tests, scripts): the node classes need no ComfyUI import, and the host adapter
(nodes/host.py) talks to ComfyUI only when ComfyUI itself is running.
"""
import logging
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)  # so `wan_core` resolves; appended, so ComfyUI's own modules keep precedence

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes.host import comfy_loaded, get_host  # noqa: E402

if comfy_loaded():
    get_host()  # registers the pack's models/ folder with ComfyUI's model paths
    logging.getLogger(__name__).info("WanT2V: %d nodes registered", len(NODE_CLASS_MAPPINGS))

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
