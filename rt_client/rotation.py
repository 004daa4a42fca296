"""Key rotation and certificate renewal over ``UpdateEntry`` (DESIGN.md section 3).

``rotate_keys`` replaces any of the district's three keys (and/or its
endpoints), crash-safely: the new keys go to ``pending-keys/`` first
(``rt_client.keystore``), then the registry is asked over mutual TLS with the
current certificate, then its answer is verified, and only then are the keys
promoted into the identity files. A process that died in between finds the
pending keys on its next run and finishes: it asks again with the same keys
(over the enrollment port, where the registry answers again for keys its
entry already pins, proven by the CSR's signature), so a rotation whose answer
was lost never locks the district out. That includes a run that died while
saving the new identity files (the new TLS key written, its certificate not):
``load_identity`` refuses the mismatch, and the keys in ``pending-keys/`` are
asked for again and saved whole. Every key change holds
``keystore.key_change_lock``, so ``rt keys rotate`` and a running ``rt serve``
never change keys at once.

What stays behind after a rotation:

- the old HPKE key, in ``hpke-retired/`` until ``hpke_retired_key_days`` have
  passed, so transfers sealed to it before the senders saw the new entry open;
- nothing of the old TLS key: its certificate is still valid until it expires
  but the registry refuses it at once and peers as soon as their directory
  cache (``directory_ttl_seconds``) sees the new entry;
- the old signing key's public half, in the registry's entry
  (``previous_signing_keys``, retired at the registry's time of the update,
  listed for its ``previous_signing_key_days``): what we signed before the
  rotation (a request still in the outbox, a sealed transfer's header) still
  verifies at peers; an item dated after the rotation and signed with the old
  key is refused (``rt_client.signed_messages.verify_by_keys``). The private
  half is not kept.

A renewal is a TLS rotation (new key, new certificate) that ``rt serve`` runs
on its own (``rt_server.renewal``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.rt.v1 import registry_pb2, registry_pb2_grpc
from rt_client.config import DistrictConfig
from rt_client.crypto.hpke import HpkePrivateKey
from rt_client.directory import Clock, registry_channel, utc_now
from rt_client.enroll import check_answer, load_ca, registry_call
from rt_client.errors import ConfigError, EnrollmentRefused, RegistryError
from rt_client.identity import (
    CA_FILE,
    HPKE_KEY_FILE,
    SIGNING_KEY_FILE,
    DistrictIdentity,
    DistrictKeys,
    load_identity,
    make_csr,
    save_enrollment,
)
from rt_client.keystore import (
    PENDING_DIR,
    clear_pending,
    hpke_key_in,
    key_change_lock,
    load_pending,
    retire_hpke_key,
    save_pending,
)
from rt_client.tls import server_only_channel

__all__ = ["Rotation", "finish_pending", "rotate_keys", "update_district_entry"]

_DEFAULT_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class Rotation:
    """What changed: the new identity, and which keys are new."""

    identity: DistrictIdentity
    tls: bool
    hpke: bool
    signing: bool
    finished_earlier: bool  # it completed a rotation an earlier run had started


def _public(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rotate_keys(
    config: DistrictConfig,
    *,
    tls: bool = False,
    hpke: bool = False,
    signing: bool = False,
    endpoints: Sequence[str] | None = None,
    clock: Clock = utc_now,
    timeout: float = _DEFAULT_TIMEOUT,
) -> Rotation:
    """Replace the keys asked for (and/or the endpoints) and return what changed.

    A rotation an earlier run left pending is finished first, and is the
    rotation done (its keys, not new ones). Raises ``ConfigError``,
    ``PeerUnavailable`` or ``RegistryError``; on any of them the current keys
    are still the ones in force, or the pending ones are kept to finish later.
    """
    with key_change_lock(config.data_dir):
        current = _load_or_recover(config, clock, timeout)
        if isinstance(current, Rotation):
            return current  # the identity files were half written: finished from pending-keys/
        pending = load_pending(config.data_dir, current.code)
        if pending is not None:
            return _finish(config, current, pending, clock, timeout, earlier=True)
        return _rotate(config, current, tls, hpke, signing, endpoints, clock, timeout)


def _rotate(
    config: DistrictConfig,
    current: DistrictIdentity,
    tls: bool,
    hpke: bool,
    signing: bool,
    endpoints: Sequence[str] | None,
    clock: Clock,
    timeout: float,
) -> Rotation:
    new_endpoints = tuple(endpoints) if endpoints else config.advertised_endpoints
    old = current.keys(new_endpoints)
    tls_key = ec.generate_private_key(ec.SECP256R1()) if tls else old.tls_key
    keys = DistrictKeys(
        code=current.code,
        tls_key=tls_key,
        csr=make_csr(tls_key, current.code),
        hpke_key=HpkePrivateKey.generate(old.hpke_key.suite) if hpke else old.hpke_key,
        signing_key=Ed25519PrivateKey.generate() if signing else old.signing_key,
        endpoints=new_endpoints,
    )
    save_pending(config.data_dir, keys)  # before the registry hears of them
    return _finish(config, current, keys, clock, timeout, earlier=False)


def finish_pending(
    config: DistrictConfig, *, clock: Clock = utc_now, timeout: float = _DEFAULT_TIMEOUT
) -> Rotation | None:
    """Finish a rotation an earlier run left pending; None if there is none.

    Also when that run died while saving the new identity files (a new TLS key
    beside the old certificate): the keys in ``pending-keys/`` are asked for
    again and saved whole. Raises ``ConfigError`` (the identity is unusable and
    nothing pending can mend it), ``PeerUnavailable``, ``RegistryError``.
    """
    with key_change_lock(config.data_dir):
        current = _load_or_recover(config, clock, timeout)
        if isinstance(current, Rotation):
            return current
        pending = load_pending(config.data_dir, current.code)
        if pending is None:
            return None
        return _finish(config, current, pending, clock, timeout, earlier=True)


def _load_or_recover(
    config: DistrictConfig, clock: Clock, timeout: float
) -> DistrictIdentity | Rotation:
    """The identity in the data directory or, if it is half written and a rotation is
    pending, that rotation finished. Raises ``ConfigError`` when neither."""
    try:
        return load_identity(config.data_dir)
    except ConfigError as unusable:
        pending = load_pending(config.data_dir, config.district_code)
        if pending is None:
            raise
        return _recover(config, pending, clock, timeout, unusable)


def _recover(
    config: DistrictConfig,
    keys: DistrictKeys,
    clock: Clock,
    timeout: float,
    unusable: ConfigError,
) -> Rotation:
    """Save ``keys`` whole, with the registry's answer for them asked again."""
    data_dir = config.data_dir
    ca_path = data_dir / CA_FILE if (data_dir / CA_FILE).is_file() else config.registry_ca_path
    try:
        ca_pem = ca_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{unusable}; and the registry CA {ca_path} is unreadable") from exc
    response = _ask_again(config, keys, ca_pem, timeout)
    if response is None:
        raise ConfigError(
            f"{unusable}. A key change died while saving its keys, and the registry does not "
            f"hold the new keys kept in {data_dir / PENDING_DIR}: enroll again with a fresh "
            "authorization code (rt-registry district rotate-code, then rt enroll --replace)"
        ) from unusable
    check_answer(
        response,
        keys,
        load_ca(ca_pem),
        replace(config, advertised_endpoints=keys.endpoints),
        clock(),
    )
    old_hpke = hpke_key_in(data_dir / HPKE_KEY_FILE)
    hpke = old_hpke is not None and old_hpke.private_bytes() != keys.hpke_key.private_bytes()
    if old_hpke is not None and hpke:
        window = timedelta(days=config.hpke_retired_key_days)
        retire_hpke_key(data_dir, old_hpke, clock() + window)
    new_signing = keys.signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        signing = (data_dir / SIGNING_KEY_FILE).read_bytes() != new_signing
    except OSError:
        signing = True
    identity = save_enrollment(
        data_dir, keys, bytes(response.certificate_pem), ca_pem, response.entry
    )
    clear_pending(data_dir)
    return Rotation(identity, tls=True, hpke=hpke, signing=signing, finished_earlier=True)


def _finish(
    config: DistrictConfig,
    current: DistrictIdentity,
    keys: DistrictKeys,
    clock: Clock,
    timeout: float,
    *,
    earlier: bool,
) -> Rotation:
    old = current.keys(config.advertised_endpoints)
    tls = _public(keys.tls_key) != _public(old.tls_key)
    hpke = keys.hpke_key.private_bytes() != old.hpke_key.private_bytes()
    signing = _public(keys.signing_key) != _public(old.signing_key)
    new_config = replace(config, advertised_endpoints=keys.endpoints)
    response = None
    if earlier:
        # The registry may already hold these keys (its answer was lost): ask it
        # again where keys it pins are answered, proven by the CSR's signature.
        response = _ask_again(config, keys, current.tls.ca_pem, timeout)
    if response is None:
        submitted = keys.to_proto(include_csr=tls)
        if not hpke:
            for name in ("hpke_kem", "hpke_kdf", "hpke_aead", "hpke_public_key"):
                submitted.ClearField(name)
        if not signing:
            submitted.ClearField("signing_public_key")
        if keys.endpoints == config.advertised_endpoints:
            submitted.ClearField("endpoints")
        request = registry_pb2.UpdateEntryRequest(district_code=current.code, keys=submitted)
        with registry_channel(
            config.registry_address, current.tls, config.registry_server_name
        ) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            response = registry_call(
                lambda: stub.UpdateEntry(request, timeout=timeout),
                config.registry_address,
                enrolling=False,
            )
    if os.environ.get("RT_TEST_CRASH_AT") == "rotate-answered":
        os._exit(99)  # tests: die as a power cut would, after the answer, before saving
    check_answer(response, keys, load_ca(current.tls.ca_pem), new_config, clock())
    if hpke:
        window = timedelta(days=config.hpke_retired_key_days)
        retire_hpke_key(config.data_dir, old.hpke_key, clock() + window)
    identity = save_enrollment(
        config.data_dir, keys, bytes(response.certificate_pem), current.tls.ca_pem, response.entry
    )
    clear_pending(config.data_dir)
    return Rotation(identity, tls=tls, hpke=hpke, signing=signing, finished_earlier=earlier)


def _ask_again(
    config: DistrictConfig, keys: DistrictKeys, ca_pem: bytes, timeout: float
) -> registry_pb2.EnrollResponse | None:
    """The registry's answer for keys it already pins, or None if it does not hold them."""
    request = registry_pb2.EnrollRequest(district_code=keys.code, keys=keys.to_proto())
    with server_only_channel(
        config.registry_enroll_address, ca_pem, config.registry_server_name
    ) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        try:
            return registry_call(
                lambda: stub.Enroll(request, timeout=timeout),
                config.registry_enroll_address,
                enrolling=True,
            )
        except (EnrollmentRefused, RegistryError):
            return None


def update_district_entry(
    config: DistrictConfig,
    *,
    rotate_tls_key: bool = False,
    rotate_hpke_key: bool = False,
    rotate_signing_key: bool = False,
    endpoints: Sequence[str] | None = None,
    clock: Clock = utc_now,
    timeout: float = _DEFAULT_TIMEOUT,
) -> DistrictIdentity:
    """``rotate_keys`` under its older name; returns the new identity."""
    return rotate_keys(
        config,
        tls=rotate_tls_key,
        hpke=rotate_hpke_key,
        signing=rotate_signing_key,
        endpoints=endpoints,
        clock=clock,
        timeout=timeout,
    ).identity
