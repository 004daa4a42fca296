"""Published test vectors for the crypto core, read from ``tests/vectors/`` as published.

The files are in the repository (with their licence and source in
``tests/vectors/README.md``), so a clone alone runs these tests. A missing
vector file is a collection error, never a skip: the vectors are the evidence
that the implementation matches the spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

COBBLESTONE_FILE = "c2sp_chunked_encryption_aes_256_gcm_test.json"
ED25519_FILE = "ed25519_test.json"


VECTORS_DIR = Path(__file__).resolve().parents[2] / "vectors"


def load_vectors(name: str) -> dict[str, Any]:
    path = VECTORS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"test vectors not found: {path}")
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
