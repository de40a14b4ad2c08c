"""SHA256 streaming, the (path, size, mtime) cache, sidecar formats and mismatch errors (wan_core.integrity)."""
from __future__ import annotations

import hashlib
import os
import sys

import pytest

from wan_core import integrity
from wan_core.integrity import IntegrityError, read_sidecar, sha256_file, verify_file, write_sidecar


pytestmark = pytest.mark.usefixtures("hash_cache")


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "model.safetensors"
    data = os.urandom(3 * 1024 * 1024 + 17)  # not a multiple of the chunk size
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_streaming_hash_matches_hashlib(blob, monkeypatch):
    path, want = blob
    monkeypatch.setattr(integrity, "CHUNK", 1 << 20)
    assert sha256_file(path, progress=False) == want


def test_cache_hit_does_not_reread(blob, monkeypatch, tmp_path):
    path, want = blob
    calls = []
    real = integrity._hash_stream
    monkeypatch.setattr(integrity, "_hash_stream", lambda *a: calls.append(a) or real(*a))
    assert sha256_file(path) == want
    assert sha256_file(path) == want
    assert len(calls) == 1
    assert (tmp_path / "hash-cache" / integrity.CACHE_FILE).is_file()


def test_cache_invalidated_by_mtime_and_content(blob, monkeypatch):
    path, want = blob
    calls = []
    real = integrity._hash_stream
    monkeypatch.setattr(integrity, "_hash_stream", lambda *a: calls.append(a) or real(*a))
    sha256_file(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert sha256_file(path) == want
    path.write_bytes(b"other")
    assert sha256_file(path) == hashlib.sha256(b"other").hexdigest()
    assert len(calls) == 3
    assert len(integrity._read_cache()) == 1  # stale entries of the same path are dropped


def test_cache_dir_is_never_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("WAN_CORE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert integrity.cache_dir() == tmp_path / "xdg" / "wan_core"
    assert "wan_core" in str(integrity.cache_dir())


@pytest.mark.parametrize("fmt", ["{h}\n", "{h}  model.safetensors\n", "{h} *model.safetensors\n",
                                 "SHA256 (model.safetensors) = {h}\n", "{H}",
                                 "{o}  other.bin\n{h}  model.safetensors\n"])
def test_sidecar_formats(blob, fmt):
    path, want = blob
    path.with_name(path.name + ".sha256").write_text(fmt.format(h=want, H=want.upper(), o="0" * 64))
    assert read_sidecar(path) == want
    assert verify_file(path) == want


def test_no_sidecar(blob):
    path, _ = blob
    assert read_sidecar(path) is None
    assert verify_file(path) is None
    with pytest.raises(IntegrityError, match="no hash given and no sidecar"):
        verify_file(path, require=True)


def test_bad_sidecar_is_named(blob):
    path, _ = blob
    path.with_name(path.name + ".sha256").write_text("not a hash\n")
    with pytest.raises(ValueError, match=r"model\.safetensors\.sha256.*64 hex digits"):
        read_sidecar(path)


def test_sidecar_mismatch_names_both_hashes_and_fix(blob):
    path, want = blob
    wrong = "ab" * 32
    path.with_name(path.name + ".sha256").write_text(wrong + "\n")
    with pytest.raises(IntegrityError) as err:
        verify_file(path)
    msg = str(err.value)
    assert wrong in msg and want in msg and "re-download" in msg and "delete model.safetensors.sha256" in msg


def test_given_hash_overrides_sidecar(blob):
    path, want = blob
    path.with_name(path.name + ".sha256").write_text("cd" * 32)
    assert verify_file(path, want) == want
    with pytest.raises(IntegrityError, match="ef" * 32):
        verify_file(path, "ef" * 32)


def test_write_sidecar_round_trip(blob):
    path, want = blob
    side = write_sidecar(path)
    assert side.read_text() == f"{want}  model.safetensors\n"
    assert verify_file(path, require=True) == want


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        sha256_file(tmp_path / "nope.safetensors")
