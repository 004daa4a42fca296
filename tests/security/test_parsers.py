"""Property-based tests of the envelope, header and batch parsers, and a short fuzz run.

Properties (hypothesis):

- envelopes: whatever the bytes, ``open_message`` accepts only what the signer
  signed under the right label, and refuses everything else with
  ``IntegrityError`` (one error for every failure);
- headers: a validly signed header with arbitrary fields is either accepted
  with its invariants holding, or refused with ``InvalidInput``/``IntegrityError``;
- batches: any sequence of valid batches survives framing cut at any points;
  arbitrary bytes give batches or ``InvalidInput``, never another exception;
  any valid row survives validation unchanged in meaning, and the bounds of the
  columns are enforced.

The fuzz targets of ``tests/security/fuzz.py`` get a few seconds here through
the very command ``make fuzz`` runs.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rt_client
from protos.rt.v1 import common_pb2, peer_pb2, records_pb2
from rt_client import transfer as rtx
from rt_client.crypto import envelope
from rt_client.errors import IntegrityError, InvalidInput
from rt_client.framing import delimit, read_batches
from rt_client.signed_messages import open_message, sign_message
from rt_server.core import validate
from tests.security import fuzz

REPO_ROOT = Path(rt_client.__file__).resolve().parent.parent
KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
PUBLIC = KEY.public_key().public_bytes_raw()
OTHER = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
SIGNER = "1964733"
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=30)


# --- envelopes -----------------------------------------------------------------------------------


@PROPS
@given(
    first=text,
    last=text,
    ssid=text,
    request_id=text,
    nonce=st.binary(max_size=20),
    label=st.sampled_from(sorted(envelope.KNOWN_LABELS)),
    flip=st.integers(min_value=-1, max_value=200),
)
def test_an_envelope_opens_only_as_signed(
    first, last, ssid, request_id, nonce, label, flip
) -> None:
    message = peer_pb2.RecordsRequest(
        request_id=request_id,
        nonce=nonce,
        student=peer_pb2.StudentIdentity(legal_first_name=first, legal_last_name=last, ssid=ssid),
    )
    signed = sign_message(label, message, SIGNER, KEY)
    if flip >= 0:  # one bit of the body or the signature flipped
        blob = bytearray(signed.body + signed.signature)
        blob[flip % len(blob)] ^= 0x01
        signed = common_pb2.SignedEnvelope(
            body=bytes(blob[: len(signed.body)]),
            signature=bytes(blob[len(signed.body) :]),
            signer_district=SIGNER,
        )

    def open_() -> peer_pb2.RecordsRequest:
        return open_message(
            envelope.LABEL_REQUEST,
            signed,
            signer=SIGNER,
            public_key=PUBLIC,
            message_type=peer_pb2.RecordsRequest,
        )

    if label == envelope.LABEL_REQUEST and flip < 0:
        assert open_() == message
    else:
        with pytest.raises(IntegrityError) as info:
            open_()
        assert str(info.value) == "verification failed"  # one answer for every failure
    for other_signer, key in (("3768338", PUBLIC), (SIGNER, OTHER.public_key().public_bytes_raw())):
        with pytest.raises(IntegrityError):
            open_message(
                envelope.LABEL_REQUEST,
                signed,
                signer=other_signer,
                public_key=key,
                message_type=peer_pb2.RecordsRequest,
            )


@PROPS
@given(st.binary(max_size=2048), st.binary(max_size=80))
def test_arbitrary_envelope_bytes_are_refused_with_integrity_error(body, signature) -> None:
    signed = common_pb2.SignedEnvelope(body=body, signature=signature, signer_district=SIGNER)
    with pytest.raises(IntegrityError):
        open_message(
            envelope.LABEL_REQUEST,
            signed,
            signer=SIGNER,
            public_key=PUBLIC,
            message_type=peer_pb2.RecordsRequest,
        )
    fuzz.fuzz_envelope(signed.SerializeToString())


# --- headers -------------------------------------------------------------------------------------

table_counts = st.lists(
    st.builds(
        common_pb2.TableCount,
        table=st.integers(min_value=-3, max_value=12),
        rows=st.integers(min_value=0, max_value=2**32 - 1),
    ),
    max_size=10,
)


@PROPS
@given(
    version=st.integers(min_value=0, max_value=3),
    sender=st.sampled_from([SIGNER, "3768338", ""]),
    receiver=st.sampled_from(["3768338", SIGNER, ""]),
    key_id=st.sampled_from(["k", "", "other"]),
    suite=st.sampled_from([rtx.PAYLOAD_SUITE, "", "Cobblestone-128"]),
    plaintext=st.integers(min_value=0, max_value=2**40),
    skew=st.integers(min_value=-20, max_value=20),
    tables=table_counts,
)
def test_a_signed_header_is_accepted_only_when_every_field_fits(
    version, sender, receiver, key_id, suite, plaintext, skew, tables
) -> None:
    header = records_pb2.TransferHeader(
        format_version=version,
        transfer_id="t",
        request_id="r",
        sender_district=sender,
        receiver_district=receiver,
        receiver_key_id=key_id,
        hpke_kem="MLKEM768_X25519",
        hpke_kdf="HKDF_SHA256",
        hpke_aead="AES_256_GCM",
        payload_suite=suite,
        plaintext_bytes=plaintext,
        ciphertext_bytes=max(0, rtx.ciphertext_length(plaintext) + (skew if skew % 3 == 0 else 0)),
    )
    for count in tables:
        try:
            header.tables.append(count)
        except ValueError:  # an enum value protobuf itself will not hold
            return
    body = header.SerializeToString()
    fuzz.fuzz_header(body)  # the fuzz target's invariants, on this input
    signed = common_pb2.SignedEnvelope(
        body=body,
        signer_district=SIGNER,
        signature=envelope.sign_body(envelope.LABEL_TRANSFER_HEADER, body, KEY),
    )
    fits = (
        version == rtx.FORMAT_VERSION_V1  # the v1 signature: the header alone
        and sender == SIGNER
        and receiver == "3768338"
        and key_id == "k"
        and suite == rtx.PAYLOAD_SUITE
        and header.ciphertext_bytes == rtx.ciphertext_length(plaintext)
        and header.ciphertext_bytes <= 1 << 30
        and len({c.table for c in tables}) == len(tables)
        and all(1 <= c.table <= 8 and c.rows <= rtx.MAX_TABLE_ROWS for c in tables)
    )
    call = lambda: rtx.open_header(  # noqa: E731
        signed,
        sender=SIGNER,
        sender_signing_key=PUBLIC,
        receiver="3768338",
        receiver_key_id="k",
        max_bytes=1 << 30,
    )
    if fits:
        assert call()[0] == header
    else:
        with pytest.raises((InvalidInput, IntegrityError)):
            call()


# --- batches -------------------------------------------------------------------------------------


def txt(max_size: int) -> st.SearchStrategy[str | None]:
    """Text a column holds: no NUL (refused by design), no lone surrogates (not UTF-8)."""
    chars = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
    return st.one_of(st.none(), st.text(chars, max_size=max_size))


short = txt(12)
dates = st.one_of(st.none(), st.dates(min_value=dt.date(1900, 1, 1)).map(dt.date.isoformat))
ints = st.one_of(st.none(), st.integers(min_value=-(2**31), max_value=2**31 - 1))


@st.composite
def his_rows(draw) -> records_pb2.HisRow:
    row = records_pb2.HisRow()
    for name, strategy in (
        ("yr", txt(9)),
        ("te", txt(4)),
        ("cn", short),
        ("co", txt(60)),
        ("dc", dates),
        ("gr", ints),
        (
            "cr",
            st.one_of(st.none(), st.decimals(min_value=-9999, max_value=9999, places=2).map(str)),
        ),
    ):
        value = draw(strategy)
        if value is not None:
            setattr(row, name, value)
    return row


his_batches = st.lists(his_rows(), min_size=1, max_size=20).map(
    lambda rows: records_pb2.RecordBatch(table=common_pb2.HIS, his=rows)
)


@PROPS
@given(st.lists(his_batches, min_size=1, max_size=5), st.lists(st.integers(0, 10_000), max_size=6))
def test_batches_survive_framing_cut_anywhere_and_validate(batches, cuts) -> None:
    stream = b"".join(delimit(b) for b in batches)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    back = list(read_batches(pieces))
    assert back == batches
    for batch in back:
        table, rows = validate.validate_batch(batch)
        assert table == "HIS" and len(rows) == len(batch.his)
    if len(stream) > 1:  # and a stream cut short is refused
        with pytest.raises(InvalidInput):
            list(read_batches([stream[:-1]]))


@PROPS
@given(st.binary(max_size=4096))
def test_arbitrary_plaintext_gives_batches_or_invalid_input(data) -> None:
    fuzz.fuzz_batches(data)
    fuzz.fuzz_ciphertext(data)


@PROPS
@given(st.text(min_size=61, max_size=80), st.sampled_from(["2025-02-30", "2025-13-01", "x", ""]))
def test_column_bounds_and_dates_are_enforced(long_title, bad_date) -> None:
    for row in (records_pb2.HisRow(co=long_title), records_pb2.HisRow(dc=bad_date)):
        with pytest.raises(InvalidInput) as info:
            validate.validate_batch(records_pb2.RecordBatch(table=common_pb2.HIS, his=[row]))
        assert long_title not in str(info.value)  # the error names the column, not the value


# --- the fuzz targets, briefly, through `make fuzz`'s own command --------------------------------


@pytest.mark.subprocess
def test_a_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    """Every target under hypothesis, and one under atheris where it is installed
    (each atheris target needs a process of its own, and a process costs seconds)."""
    runs = [["--engine", "hypothesis", "--seconds", "4"]]
    if fuzz.atheris_available():
        runs.append(["--engine", "atheris", "--target", "header", "--seconds", "1"])
    for options in runs:
        result = subprocess.run(
            [sys.executable, "-m", "tests.security.fuzz", *options, "--artifacts", str(tmp_path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        assert not list(tmp_path.iterdir())  # no crashing input written
