"""Sealing builds the batches once, stages them encrypted, and opens back to the same batches."""

from __future__ import annotations

import datetime as dt
import io
import random
import tempfile
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rt_client import transfer as rtx
from rt_client.crypto import hpke
from scripts import samples


@dataclass(frozen=True)
class _Receiver:
    district_code: str
    hpke_kem: str
    hpke_kdf: str
    hpke_aead: str
    hpke_public_key: bytes
    hpke_key_id: str


def _keys() -> tuple[hpke.HpkePrivateKey, _Receiver]:
    suite = hpke.DEFAULT_SUITE
    private = hpke.HpkePrivateKey.generate(suite)
    public = private.public_key()
    return private, _Receiver(
        "3768338", suite.kem, suite.kdf, suite.aead, public.public_bytes(), public.key_id()
    )


@pytest.mark.parametrize("memory", [rtx.STAGING_MEMORY_BYTES, 4096])
def test_batches_are_built_once_and_open_back_unchanged(
    monkeypatch: pytest.MonkeyPatch, memory: int
) -> None:
    batches = samples.sample_batches(random.Random(2), {"HIS": 3000, "TST": 500}, batch_rows=200)
    calls = []

    def build() -> Any:
        calls.append(1)
        return iter(batches)

    # Everything the staging writes to a temporary file (when it spills) is seen here.
    spilled = io.BytesIO()
    real = tempfile.SpooledTemporaryFile

    def spooled(max_size: int = 0, **kwargs: Any) -> Any:
        staging = real(max_size=max_size, **kwargs)
        write = staging.write

        def tee(data: bytes) -> int:
            spilled.write(data)
            return write(data)

        staging.write = tee  # type: ignore[method-assign]
        return staging

    monkeypatch.setattr(rtx, "STAGING_MEMORY_BYTES", memory)
    monkeypatch.setattr(rtx.tempfile, "SpooledTemporaryFile", spooled)
    private, receiver = _keys()
    signing = Ed25519PrivateKey.generate()
    out = io.BytesIO()
    sealed = rtx.seal_transfer(
        batches=build, transfer_id="t-1", request_id="r-1", sender="1964733",
        receiver=receiver, signing_key=signing, out=out,
        created_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )  # fmt: skip
    assert calls == [1]
    assert len(out.getvalue()) == sealed.ciphertext_bytes
    header, digest = rtx.open_header(
        sealed.header,
        sender="1964733",
        sender_signing_key=signing.public_key().public_bytes_raw(),
        receiver="3768338",
        receiver_key_id=receiver.hpke_key_id,
        wrapped_key=sealed.wrapped_key,
    )
    opened = list(
        rtx.decrypt_batches(header, digest, sealed.wrapped_key, private, [out.getvalue()])
    )
    assert opened == batches
    # The staged bytes are ciphertext: no course title of the records is in them.
    assert spilled.getvalue() and b"English" not in spilled.getvalue()
    assert any(b"English" in b.SerializeToString() for b in batches)
