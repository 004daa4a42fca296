"""HPKE key wrap for transfers: the input key, sealed to the receiving district.

RFC 9180 base mode through ``cryptography.hazmat.primitives.hpke``. The 32-byte
Cobblestone input key of a transfer is encrypted to the receiver's HPKE public
key with ``info = "rt/v1 transfer key" || H``, where ``H`` is the SHA-256 of the
serialized ``TransferHeader`` (DESIGN.md section 5, step 2). The header names
the suite, so binding ``H`` also binds the suite choice.

Suites are named by strings because they travel in protobuf headers and
directory entries. The default suite uses the hybrid post-quantum KEM
``MLKEM768_X25519`` ("harvest now, decrypt later"); ``X25519`` is the fallback.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from rt_client.errors import IntegrityError, InvalidInput

__all__ = [
    "DEFAULT_SUITE",
    "FALLBACK_SUITE",
    "SUPPORTED_SUITES",
    "TRANSFER_KEY_INFO",
    "HpkePrivateKey",
    "HpkePublicKey",
    "HpkeSuite",
    "key_id",
    "suite_from_name",
    "suite_from_names",
    "unwrap_key",
    "wrap_key",
]

TRANSFER_KEY_INFO: Final = b"rt/v1 transfer key"
"""HPKE ``info`` prefix; the header digest ``H`` follows it."""

_WRAPPED_KEY_SIZE = 32  # the Cobblestone-256 input key
_HEADER_DIGEST_SIZE = 32  # SHA-256
_AEAD_TAG_SIZE = 16  # AES-256-GCM

_MLKEM768_PUBLIC_SIZE = 1184  # FIPS 203, ek for ML-KEM-768
_MLKEM768_SEED_SIZE = 64  # FIPS 203, seed d || z
_X25519_SIZE = 32  # RFC 7748


@dataclass(frozen=True)
class HpkeSuite:
    """An HPKE suite by the names used on the wire (pyca's ``KEM``/``KDF``/``AEAD`` names)."""

    kem: str
    kdf: str
    aead: str

    @property
    def name(self) -> str:
        """``KEM/KDF/AEAD``, e.g. ``MLKEM768_X25519/HKDF_SHA256/AES_256_GCM``."""
        return f"{self.kem}/{self.kdf}/{self.aead}"

    def __str__(self) -> str:
        return self.name

    def _pyca(self) -> hpke.Suite:
        return hpke.Suite(
            getattr(hpke.KEM, self.kem), getattr(hpke.KDF, self.kdf), getattr(hpke.AEAD, self.aead)
        )

    def _is_hybrid(self) -> bool:
        return self.kem == "MLKEM768_X25519"

    def _public_size(self) -> int:
        return _MLKEM768_PUBLIC_SIZE + _X25519_SIZE if self._is_hybrid() else _X25519_SIZE

    def _private_size(self) -> int:
        return _MLKEM768_SEED_SIZE + _X25519_SIZE if self._is_hybrid() else _X25519_SIZE

    def _wrapped_size(self) -> int:
        enc_size: int = getattr(hpke.KEM, self.kem).enc_length()
        return enc_size + _WRAPPED_KEY_SIZE + _AEAD_TAG_SIZE


DEFAULT_SUITE: Final = HpkeSuite(kem="MLKEM768_X25519", kdf="HKDF_SHA256", aead="AES_256_GCM")
FALLBACK_SUITE: Final = HpkeSuite(kem="X25519", kdf="HKDF_SHA256", aead="AES_256_GCM")
SUPPORTED_SUITES: Final = (DEFAULT_SUITE, FALLBACK_SUITE)


def suite_from_names(kem: str, kdf: str, aead: str) -> HpkeSuite:
    """The supported suite with these names. Raises ``InvalidInput`` for any other."""
    suite = HpkeSuite(kem=kem, kdf=kdf, aead=aead)
    if suite not in SUPPORTED_SUITES:
        raise InvalidInput("unsupported HPKE suite")
    return suite


def suite_from_name(name: str) -> HpkeSuite:
    """Parse ``KEM/KDF/AEAD``. Raises ``InvalidInput`` unless it names a supported suite."""
    parts = name.split("/")
    if len(parts) != 3:
        raise InvalidInput("unsupported HPKE suite")
    return suite_from_names(*parts)


def _check_suite(suite: HpkeSuite) -> None:
    if suite not in SUPPORTED_SUITES:
        raise InvalidInput("unsupported HPKE suite")


def key_id(suite: HpkeSuite, public_bytes: bytes) -> str:
    """Identifier of an HPKE public key, as named in ``TransferHeader``.

    Hex of the first 16 bytes of ``SHA-256(suite.name || 0x00 || public_bytes)``;
    the zero byte ends the (NUL-free) suite name, so the encoding is unambiguous.
    """
    digest = hashlib.sha256(suite.name.encode("ascii") + b"\x00" + bytes(public_bytes)).digest()
    return digest[:16].hex()


def _load_x25519_public(data: bytes) -> x25519.X25519PublicKey:
    key = x25519.X25519PublicKey.from_public_bytes(data)
    # RFC 9180 section 7.1.4: a DH result of all zeros (a small-order point)
    # must be rejected. pyca rejects it at encryption time; checking with a
    # throwaway key here refuses such a key when it is first seen.
    x25519.X25519PrivateKey.generate().exchange(key)
    return key


class HpkePublicKey:
    """A receiver's HPKE public key for one suite.

    Serialized form (``public_bytes``): for ``MLKEM768_X25519`` the ML-KEM-768
    encapsulation key (1184 bytes) followed by the X25519 public key (32); for
    ``X25519`` the 32-byte X25519 public key.
    """

    __slots__ = ("_key", "_raw", "_suite")

    def __init__(
        self,
        suite: HpkeSuite,
        raw: bytes,
        key: hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey,
    ) -> None:
        # Build with ``from_bytes`` or ``HpkePrivateKey.public_key()``.
        self._suite = suite
        self._raw = raw
        self._key = key

    @classmethod
    def from_bytes(cls, suite: HpkeSuite, data: bytes) -> HpkePublicKey:
        """Parse and validate a public key. Raises ``InvalidInput`` if it is malformed."""
        _check_suite(suite)
        data = bytes(data)
        if len(data) != suite._public_size():
            raise InvalidInput("HPKE public key has the wrong length for its suite")
        key: hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey
        try:
            if suite._is_hybrid():
                mlkem_key = mlkem.MLKEM768PublicKey.from_public_bytes(data[:_MLKEM768_PUBLIC_SIZE])
                x_key = _load_x25519_public(data[_MLKEM768_PUBLIC_SIZE:])
                key = hpke.MLKEM768X25519PublicKey(mlkem_key, x_key)
            else:
                key = _load_x25519_public(data)
        except ValueError as exc:
            raise InvalidInput("HPKE public key is malformed") from exc
        return cls(suite, data, key)

    @property
    def suite(self) -> HpkeSuite:
        return self._suite

    def public_bytes(self) -> bytes:
        return self._raw

    def key_id(self) -> str:
        """``key_id(self.suite, self.public_bytes())``."""
        return key_id(self._suite, self._raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HpkePublicKey):
            return NotImplemented
        return self._suite == other._suite and self._raw == other._raw

    def __hash__(self) -> int:
        return hash((self._suite, self._raw))

    def __repr__(self) -> str:
        return f"HpkePublicKey(suite={self._suite.name!r}, key_id={self.key_id()!r})"


class HpkePrivateKey:
    """A district's HPKE private key for one suite. Never leaves the district.

    Serialized form (``private_bytes``): for ``MLKEM768_X25519`` the 64-byte
    ML-KEM-768 seed followed by the 32-byte X25519 private key; for ``X25519``
    the 32-byte X25519 private key.
    """

    __slots__ = ("_key", "_mlkem", "_public", "_suite", "_x25519")

    def __init__(
        self,
        suite: HpkeSuite,
        x25519_key: x25519.X25519PrivateKey,
        mlkem_key: mlkem.MLKEM768PrivateKey | None,
    ) -> None:
        # Build with ``generate`` or ``from_bytes``. pyca's hybrid key object
        # does not expose its parts, so the parts are kept for serialization.
        self._suite = suite
        self._x25519 = x25519_key
        self._mlkem = mlkem_key
        self._key: hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey
        x_public = x25519_key.public_key()
        if mlkem_key is not None:
            self._key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)
            m_public = mlkem_key.public_key()
            self._public = HpkePublicKey(
                suite,
                m_public.public_bytes_raw() + x_public.public_bytes_raw(),
                hpke.MLKEM768X25519PublicKey(m_public, x_public),
            )
        else:
            self._key = x25519_key
            self._public = HpkePublicKey(suite, x_public.public_bytes_raw(), x_public)

    @classmethod
    def generate(cls, suite: HpkeSuite = DEFAULT_SUITE) -> HpkePrivateKey:
        """A fresh key pair. Raises ``InvalidInput`` for an unsupported suite."""
        _check_suite(suite)
        mlkem_key = mlkem.MLKEM768PrivateKey.generate() if suite._is_hybrid() else None
        return cls(suite, x25519.X25519PrivateKey.generate(), mlkem_key)

    @classmethod
    def from_bytes(cls, suite: HpkeSuite, data: bytes) -> HpkePrivateKey:
        """Load ``private_bytes()`` output. Raises ``InvalidInput`` if malformed."""
        _check_suite(suite)
        data = bytes(data)
        if len(data) != suite._private_size():
            raise InvalidInput("HPKE private key has the wrong length for its suite")
        try:
            if suite._is_hybrid():
                mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(data[:_MLKEM768_SEED_SIZE])
                x_key = x25519.X25519PrivateKey.from_private_bytes(data[_MLKEM768_SEED_SIZE:])
                return cls(suite, x_key, mlkem_key)
            return cls(suite, x25519.X25519PrivateKey.from_private_bytes(data), None)
        except ValueError as exc:
            raise InvalidInput("HPKE private key is malformed") from exc

    @property
    def suite(self) -> HpkeSuite:
        return self._suite

    def private_bytes(self) -> bytes:
        """Raw key material: store it only in the district's key directory."""
        x_raw = self._x25519.private_bytes_raw()
        if self._mlkem is not None:
            return self._mlkem.private_bytes_raw() + x_raw
        return x_raw

    def public_key(self) -> HpkePublicKey:
        return self._public

    def __repr__(self) -> str:
        return f"HpkePrivateKey(suite={self._suite.name!r}, key_id={self._public.key_id()!r})"


def _info(header_digest: bytes) -> bytes:
    if len(header_digest) != _HEADER_DIGEST_SIZE:
        raise InvalidInput("header digest must be a 32-byte SHA-256")
    return TRANSFER_KEY_INFO + bytes(header_digest)


def wrap_key(input_key: bytes, receiver: HpkePublicKey, header_digest: bytes) -> bytes:
    """Seal a transfer's 32-byte input key to ``receiver``; returns ``enc || ciphertext``.

    Raises ``InvalidInput`` for a key or digest of the wrong size.
    """
    if len(input_key) != _WRAPPED_KEY_SIZE:
        raise InvalidInput("transfer input key must be 32 bytes")
    info = _info(header_digest)
    try:
        return receiver.suite._pyca().encrypt(bytes(input_key), receiver._key, info=info)
    except ValueError as exc:  # e.g. a small-order X25519 point (RFC 9180 7.1.4)
        raise InvalidInput("HPKE public key is unusable") from exc


def unwrap_key(wrapped: bytes, receiver: HpkePrivateKey, header_digest: bytes) -> bytes:
    """Open a wrapped input key with the receiver's private key.

    Raises ``IntegrityError`` for any failure: wrong key, wrong header digest,
    tampered or malformed wrapped key, or a payload that is not 32 bytes.
    """
    try:
        info = _info(header_digest)
        if len(wrapped) != receiver.suite._wrapped_size():
            raise IntegrityError()
        input_key = receiver.suite._pyca().decrypt(bytes(wrapped), receiver._key, info=info)
    except (InvalidTag, ValueError, InvalidInput) as exc:
        raise IntegrityError() from exc
    if len(input_key) != _WRAPPED_KEY_SIZE:
        raise IntegrityError()
    return input_key
