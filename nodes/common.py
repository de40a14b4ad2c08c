"""Helpers shared by the node classes."""
from __future__ import annotations


def declared_range_error(cls, **values) -> str | None:
    """Check values against the min/max their node declares. ComfyUI skips its own range check for every input a
    VALIDATE_INPUTS method receives, so those methods call this first."""
    spec = cls.INPUT_TYPES()
    declared = {**spec.get("required", {}), **spec.get("optional", {})}
    for name, value in values.items():
        opts = declared[name][1] if len(declared[name]) > 1 else {}
        if "min" in opts and value < opts["min"]:
            return f"{name}={value} is below the minimum {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"{name}={value} is above the maximum {opts['max']}"
    return None
