"""Shared fixtures: real SQLite files, the shipped catalog, one MiniLM encoder per session."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def _session_cache_dir(tmp_path_factory):
    """One cache folder for the whole run: derived data (catalog embeddings) is computed once, not per test."""
    return os.environ.get("RADASSIST_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch, _session_cache_dir):
    """Never touch the real user data folder from a test; each test gets its own data folder."""
    base = tmp_path_factory.mktemp("appdirs")
    monkeypatch.setenv("RADASSIST_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("RADASSIST_CACHE_DIR", _session_cache_dir)


@pytest.fixture
def db(tmp_path):
    """A real SQLite file, migrated, with the shipped catalog (support.database.new_database)."""
    from support.database import new_database

    database = new_database(tmp_path / "radassist.db")
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def catalog():
    from radassist.catalog import default_catalog

    return default_catalog()


@pytest.fixture(scope="session")
def sentence_encoder():
    from radassist.engines.embedding import load_sentence_encoder

    return load_sentence_encoder()


@pytest.fixture(autouse=True)
def fast_hasher(request, monkeypatch):
    """Cheap argon2 parameters in every in-process test: they check behaviour, not the cost of hashing
    (each production hash costs ~100 ms). A test marked ``real_hasher`` keeps the shipped parameters."""
    if request.node.get_closest_marker("real_hasher"):
        return
    from argon2 import PasswordHasher

    from radassist import users

    monkeypatch.setattr(users, "HASHER", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
    monkeypatch.setattr(users, "_DUMMY_HASH", None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Llama with a word-level tokenizer built from the test vocabulary."""
    from support.llm import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
