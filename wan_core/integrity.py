"""SHA256 integrity checks for checkpoint files: streaming hashes, a (path, size, mtime) cache, `.sha256` sidecars.

A file is checked against `<file>.sha256` whenever that sidecar exists (bare hex, or the `sha256sum` line format), or
against a hash the caller gives. Hashing a 10 GB file takes about a minute, so results are cached in a small JSON file
keyed by (resolved path, size, mtime_ns): an unchanged file is hashed once. The cache lives in `$WAN_CORE_CACHE`, or
else the user cache directory (`$XDG_CACHE_HOME/wan_core`, `%LOCALAPPDATA%/wan_core`, `~/.cache/wan_core`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CHUNK = 8 << 20  # bytes read per step while hashing
PROGRESS_MIN_BYTES = 256 << 20  # files smaller than this hash silently
CACHE_FILE = "sha256_cache.json"
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_SUMLINE = re.compile(r"^([0-9a-fA-F]{64})(?:\s+\*?(.+))?$")  # `sha256sum` writes "<hex>  <name>" or "<hex> *<name>"
_BSDLINE = re.compile(r"^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$")  # `shasum --tag` / BSD `sha256`


class IntegrityError(ValueError):
    """A file's SHA256 does not match the expected hash (or no hash was available when one was required)."""


def cache_dir() -> Path:
    """Directory of the hash cache: $WAN_CORE_CACHE, else the platform's user cache directory + /wan_core."""
    if env := os.environ.get("WAN_CORE_CACHE"):
        return Path(env).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "wan_core"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "wan_core"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wan_core"


def _cache_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _read_cache() -> dict[str, str]:
    file = cache_dir() / CACHE_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:  # a damaged cache only costs a re-hash
        logger.warning("ignoring unreadable hash cache %s (%s)", file, e)
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, digest: str) -> None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        same_file = key.rsplit("|", 2)[0] + "|"  # drop stale entries of this path (older size/mtime)
        entries = {k: v for k, v in _read_cache().items() if not k.startswith(same_file)}
        entries[key] = digest
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sha256_cache.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entries, f, indent=0, sort_keys=True)
        os.replace(tmp, folder / CACHE_FILE)  # atomic: concurrent writers never leave a half-written cache
    except OSError as e:
        logger.warning("could not write the hash cache in %s (%s); set WAN_CORE_CACHE to a writable folder", folder, e)


def _hash_stream(path: Path, size: int, progress: bool) -> str:
    h = hashlib.sha256()
    bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"sha256 {path.name}",
               disable=not progress or size < PROGRESS_MIN_BYTES, leave=False)
    with open(path, "rb") as f, bar:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            bar.update(n)
    return h.hexdigest()


def sha256_file(path, *, progress: bool = True) -> str:
    """Lower-case hex SHA256 of a file, streamed in 8 MiB chunks; cached by (resolved path, size, mtime_ns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot hash {path}: no such file")
    key = _cache_key(path)
    if cached := _read_cache().get(key):
        logger.debug("sha256 cache hit for %s", path)
        return cached
    digest = _hash_stream(path, path.stat().st_size, progress)
    if _cache_key(path) == key:  # do not cache a file that changed while it was read
        _write_cache(key, digest)
    return digest


def sidecar_path(path) -> Path:
    """`<file>.sha256` next to the file."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def parse_sha256(text: str, name: str | None = None, *, source: str = "hash") -> str:
    """Extract a hex digest from bare hex, `sha256sum` output or BSD `SHA256 (name) = hex` lines.

    With several lines, the line naming `name` is used. Raises ValueError naming `source` when nothing fits.
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    found: list[tuple[str, str | None]] = []
    for ln in lines:
        if m := _SUMLINE.match(ln):
            found.append((m.group(1), m.group(2)))
        elif m := _BSDLINE.match(ln):
            found.append((m.group(2), m.group(1)))
    if len(found) == 1 and len(lines) == 1:
        return found[0][0].lower()
    named = [h for h, n in found if n is not None and name is not None and Path(n.strip()).name == name]
    if len(named) == 1:
        return named[0].lower()
    raise ValueError(f"{source} does not hold a usable SHA256: expected 64 hex digits, optionally followed by the file "
                     f"name as `sha256sum` writes it{f' (looking for {name!r})' if name else ''}; got "
                     f"{text.strip()[:120]!r}. Fix or delete it.")


def read_sidecar(path) -> str | None:
    """The expected hash from `<file>.sha256`, or None when there is no sidecar."""
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return parse_sha256(text, Path(path).name, source=f"sidecar {side}")


def verify_file(path, expected: str | None = None, *, require: bool = False, progress: bool = True) -> str | None:
    """Check a file against `expected` (hex, or a sha256sum line) or its `.sha256` sidecar.

    Returns the verified hex digest, or None when there was nothing to check against (IntegrityError if `require`).
    A mismatch raises IntegrityError with both hashes and what to do.
    """
    path = Path(path)
    source = "the given hash"
    if expected is not None:
        expected = parse_sha256(expected, path.name, source="the given sha256")
    else:
        expected = read_sidecar(path)
        source = f"sidecar {sidecar_path(path).name}"
    if expected is None:
        if require:
            raise IntegrityError(f"cannot verify {path}: no hash given and no sidecar {sidecar_path(path).name}; pass "
                                 "the published SHA256 (e.g. --sha256 HEX) or write it into the sidecar")
        return None
    actual = sha256_file(path, progress=progress)
    if actual != expected:
        fix = "re-download the file" + ("" if source == "the given hash" else
                                        f", or delete {sidecar_path(path).name} if the file is right and the sidecar is stale")
        raise IntegrityError(f"SHA256 mismatch for {path}: expected {expected} ({source}) but the file hashes to "
                             f"{actual}; the file is damaged, incomplete or a different version. Fix: {fix}.")
    logger.debug("sha256 ok for %s (%s)", path.name, actual)
    return actual


def write_sidecar(path, digest: str | None = None) -> Path:
    """Write `<file>.sha256` in `sha256sum` format (hashing the file unless `digest` is given) -> sidecar path."""
    path = Path(path)
    digest = digest or sha256_file(path)
    if not _HEX.match(digest):
        raise ValueError(f"not a SHA256 hex digest: {digest!r}")
    side = sidecar_path(path)
    side.write_text(f"{digest.lower()}  {path.name}\n", encoding="utf-8")
    return side
