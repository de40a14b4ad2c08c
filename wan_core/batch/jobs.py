"""A jobs file: one JSON object per line, one video per job. Parsing reports each bad line by its number and keeps
the good ones, so one typo does not stop a night's batch.

    {"output": "fox.mp4", "prompt": "a red fox running through snow", "seed": 7, "steps": 30}

Keys (all but `output` and `prompt` optional; left out = the model's own default, as `python -m wan_core generate`):
output (mp4 name inside the output folder), prompt, negative_prompt, image (start image, relative to the jobs file),
seed, width, height, frames, fps, steps, cfg, shift, sampler, schedule.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

SAMPLERS = ("unipc", "euler", "dpm++2m", "lcm")
SCHEDULES = ("official", "diffusers")
# key -> (accepted types, what the message says); the setting keys are the `generate` flags' names (wan_core.cli)
FIELDS = {
    "output": (str, "a file name ending in .mp4"),
    "prompt": (str, "text"),
    "negative_prompt": ((str, type(None)), "text or null (null: the official negative prompt)"),
    "image": (str, "a PNG/JPEG path, relative to the jobs file"),
    "seed": (int, "an integer"),
    "width": (int, "an integer, multiple of 32"),
    "height": (int, "an integer, multiple of 32"),
    "frames": (int, "an integer 4k+1"),
    "fps": ((int, float), "a number"),
    "steps": (int, "a positive integer"),
    "cfg": ((int, float), "a number (1 disables guidance)"),
    "shift": ((int, float), "a number"),
    "sampler": (str, f"one of {', '.join(SAMPLERS)}"),
    "schedule": (str, f"one of {', '.join(SCHEDULES)}"),
}
EXAMPLE = '{"output": "fox.mp4", "prompt": "a red fox running through snow", "seed": 7}'


@dataclass(frozen=True)
class Job:
    """One parsed, validated line. `fields` holds the line's keys; `image` is resolved against the jobs file."""

    line: int
    fields: dict = field(hash=False)

    @property
    def output(self) -> str:
        return self.fields["output"]

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    def key(self, model: str = "") -> str:
        """sha256 of what determines the video: the job's fields, the start image's bytes and the model's
        description. A manifest entry with another key is stale (the job was edited), so the job renders again."""
        spec = {k: v for k, v in self.fields.items()}
        if "image" in spec and Path(spec["image"]).is_file():
            spec["image_sha256"] = hashlib.sha256(Path(spec["image"]).read_bytes()).hexdigest()
        text = json.dumps({"job": spec, "model": model}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class JobError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _check(obj, base: Path) -> dict:
    """The validated fields of one decoded line (ValueError naming the key, the rule and the fix)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}; e.g. {EXAMPLE}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; the keys are {list(FIELDS)}")
    for key in ("output", "prompt"):
        if key not in obj:
            raise ValueError(f"missing {key!r}; every job needs output and prompt, e.g. {EXAMPLE}")
    for key, value in obj.items():
        kinds, rule = FIELDS[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and key != "negative_prompt"):
            raise ValueError(f"{key} must be {rule} (got {value!r})")
    out = PurePosixPath(obj["output"])
    if out.suffix != ".mp4" or out.is_absolute() or ".." in out.parts or not out.name[:-4] or "\\" in obj["output"]:
        raise ValueError(f"output {obj['output']!r} must be a relative name ending in .mp4, inside the output "
                         "folder (no '..'), e.g. \"clips/fox.mp4\"")
    if obj.get("sampler") is not None and obj["sampler"] not in SAMPLERS:
        raise ValueError(f"sampler {obj['sampler']!r} is not one of {list(SAMPLERS)}")
    if obj.get("schedule") is not None and obj["schedule"] not in SCHEDULES:
        raise ValueError(f"schedule {obj['schedule']!r} is not one of {list(SCHEDULES)}")
    if "steps" in obj and obj["steps"] < 1:
        raise ValueError(f"steps must be >= 1 (got {obj['steps']})")
    fields = dict(obj)
    if "image" in fields:
        image = Path(fields["image"]) if Path(fields["image"]).is_absolute() else base / fields["image"]
        if not image.is_file():
            raise ValueError(f"image {fields['image']!r} not found (looked for {image}); image paths are relative "
                             "to the jobs file")
        fields["image"] = str(image)
    return fields


def parse_jobs(path: str | os.PathLike) -> tuple[list[Job], list[JobError]]:
    """(valid jobs in file order, errors by line number). Blank lines are skipped; a repeated output name is an
    error on the later line (two jobs would overwrite one file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jobs file {str(path)!r} not found; give a .jsonl file with one job per line, "
                                f"e.g. {EXAMPLE}")
    jobs, errors, seen = [], [], {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            errors.append(JobError(number, f"not valid JSON ({e.msg} at column {e.colno}); each line is one JSON "
                                           f"object, e.g. {EXAMPLE}"))
            continue
        try:
            fields = _check(obj, path.parent)
        except ValueError as e:
            errors.append(JobError(number, str(e)))
            continue
        name = PurePosixPath(fields["output"]).as_posix()
        if name in seen:
            errors.append(JobError(number, f"output {name!r} is already the output of line {seen[name]}; give each "
                                           "job its own output name"))
            continue
        seen[name] = number
        fields["output"] = name
        jobs.append(Job(number, fields))
    return jobs, errors
