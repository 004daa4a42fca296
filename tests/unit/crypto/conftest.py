"""Published test vectors for the crypto core, read from ``shared/vectors/`` as published.

The directory is ``<repo>/../shared/vectors`` unless ``RT_VECTORS_DIR`` says
otherwise. A missing vector file is a collection error, never a skip: the
vectors are the evidence that the implementation matches the spec.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

COBBLESTONE_FILE = "c2sp_chunked_encryption_aes_256_gcm_test.json"
ED25519_FILE = "ed25519_test.json"


def vectors_dir() -> Path:
    override = os.environ.get("RT_VECTORS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3].parent / "shared" / "vectors"


def load_vectors(name: str) -> dict[str, Any]:
    path = vectors_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"test vectors not found: {path} (set RT_VECTORS_DIR)")
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@pytest.fixture(scope="session")
def cobblestone_file() -> dict[str, Any]:
    return load_vectors(COBBLESTONE_FILE)


@pytest.fixture(scope="session")
def ed25519_file() -> dict[str, Any]:
    return load_vectors(ED25519_FILE)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``cobblestone_vector`` and ``ed25519_vector`` with one case per vector."""
    if "cobblestone_vector" in metafunc.fixturenames:
        data = load_vectors(COBBLESTONE_FILE)
        cases = [
            dict(test, aead=group["aead"])
            for group in data["testGroups"]
            for test in group["tests"]
        ]
        metafunc.parametrize(
            "cobblestone_vector", cases, ids=[f"tc{case['tcId']}" for case in cases]
        )
    if "ed25519_vector" in metafunc.fixturenames:
        data = load_vectors(ED25519_FILE)
        cases = [
            dict(test, pk=group["publicKey"]["pk"])
            for group in data["testGroups"]
            for test in group["tests"]
        ]
        metafunc.parametrize("ed25519_vector", cases, ids=[f"tc{case['tcId']}" for case in cases])
