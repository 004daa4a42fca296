"""The pure cryptographic core of Records Transfer (DESIGN.md section 5).

Cobblestone-256 payload encryption, HPKE key wrap, signed envelopes and the
transfer trailer. No I/O, no gRPC, no protobuf: data in, data out. The
signing labels, one per message type, are read where they are defined:
``envelope.LABEL_DECISION`` and so on (``from rt_client.crypto import envelope``).
"""

from rt_client.crypto.cobblestone import (
    CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    CobblestoneDecryptor,
    CobblestoneEncryptor,
)
from rt_client.crypto.cobblestone import decrypt as cobblestone_decrypt
from rt_client.crypto.cobblestone import encrypt as cobblestone_encrypt
from rt_client.crypto.envelope import (
    KNOWN_LABELS,
    Signed,
    ed25519_public_bytes,
    load_ed25519_private,
    load_ed25519_public,
    open_signed,
    seal,
    sign_body,
    verify_body,
)
from rt_client.crypto.hpke import (
    DEFAULT_SUITE,
    FALLBACK_SUITE,
    SUPPORTED_SUITES,
    HpkePrivateKey,
    HpkePublicKey,
    HpkeSuite,
    key_id,
    suite_from_name,
    suite_from_names,
    unwrap_key,
    wrap_key,
)
from rt_client.crypto.trailer import header_digest, sign_trailer, trailer_message, verify_trailer

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_SUITE",
    "FALLBACK_SUITE",
    "HEADER_SIZE",
    "KNOWN_LABELS",
    "SUPPORTED_SUITES",
    "TAG_SIZE",
    "CobblestoneDecryptor",
    "CobblestoneEncryptor",
    "HpkePrivateKey",
    "HpkePublicKey",
    "HpkeSuite",
    "Signed",
    "cobblestone_decrypt",
    "cobblestone_encrypt",
    "ed25519_public_bytes",
    "header_digest",
    "key_id",
    "load_ed25519_private",
    "load_ed25519_public",
    "open_signed",
    "seal",
    "sign_body",
    "sign_trailer",
    "suite_from_name",
    "suite_from_names",
    "trailer_message",
    "unwrap_key",
    "verify_body",
    "verify_trailer",
    "wrap_key",
]
