"""The output folder of a batch: each video written atomically, then one JSON line in `manifest.jsonl`
(job, file, sha256, seconds, worker, key, frames_sha256: of the uint8 frames before encoding). A re-run skips a job
whose latest manifest line has the same key (same job fields, start image and model) and whose file still exists with
the recorded sha256; anything else renders again.

Only the process driving the batch writes here (workers return the encoded bytes), so one cluster needs no shared
file system. A crash between the rename and the manifest line leaves a complete file that is simply rendered again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file beside `path`, fsync, rename: the file is complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Manifest:
    """The output folder and its manifest.jsonl (appended one complete line per finished or failed job)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST
        self.entries: dict[str, dict] = {}  # job output name -> its latest successful line
        if self.path.is_file():
            for number, text in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    entry = json.loads(text)
                except json.JSONDecodeError:
                    log.warning("%s line %d is not JSON (an interrupted write?); ignored", self.path, number)
                    continue
                if isinstance(entry, dict) and "sha256" in entry and "job" in entry:
                    self.entries[entry["job"]] = entry

    def is_done(self, output: str, key: str) -> bool:
        """True when `output` was rendered with this key and the file is there, unchanged."""
        entry = self.entries.get(output)
        if entry is None or entry.get("key") != key:
            return False
        file = self.out_dir / entry["file"]
        return file.is_file() and sha256_file(file) == entry["sha256"]

    def _append(self, entry: dict) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:  # one write of one line: never a half line in between
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def record(self, output: str, key: str, data: bytes, *, seconds: float, worker: str,
               frames_sha256: str | None = None) -> dict:
        """Write the video atomically, then its manifest line; returns the line. frames_sha256: of the raw frames."""
        write_atomic(self.out_dir / output, data)
        entry = {"job": output, "file": output, "sha256": hashlib.sha256(data).hexdigest(),
                 "seconds": round(seconds, 3), "worker": worker, "key": key}
        if frames_sha256 is not None:
            entry["frames_sha256"] = frames_sha256
        self._append(entry)
        self.entries[output] = entry
        return entry

    def record_failure(self, output: str, key: str, error: str, *, attempts: int, worker: str | None) -> dict:
        """A manifest line for a job that failed for good (no file); a re-run tries it again."""
        entry = {"job": output, "error": error, "attempts": attempts, "worker": worker, "key": key}
        self._append(entry)
        return entry
