"""Fixtures shared by several test files."""
import pytest

from tests.tiny_models import tiny_dit_state_dict, tiny_vae_state_dict


@pytest.fixture
def hash_cache(tmp_path, monkeypatch):
    """Point the SHA256 result cache at a fresh folder (never the user's cache)."""
    monkeypatch.setenv("WAN_CORE_CACHE", str(tmp_path / "hash-cache"))


@pytest.fixture(scope="module")
def dit_sd():
    return tiny_dit_state_dict()


@pytest.fixture(scope="module")
def vae_sd():
    return tiny_vae_state_dict()
