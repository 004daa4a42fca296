"""Certificate renewal and key pick-up for a running ``rt serve`` (DESIGN.md section 3).

District certificates are short-lived (the registry's ``certificate_validity_days``,
30 by default). ``CertificateRenewer`` checks the certificate every
``renewal_check_seconds``:

- with a third of its validity left, it renews: a new TLS key and certificate
  over ``UpdateEntry`` (``rt_client.rotation.rotate_keys``, crash-safe through
  ``pending-keys/``), then hands the new identity to the server, which swaps it
  into its listeners and outgoing channels without a restart. Until the
  registry holds the new key the old one stays in use; a failed renewal is
  logged and tried again at the next check.
- from ``ALERT_BEFORE`` (7 days) before expiry, every check logs a warning;
- a rotation an earlier run left pending is finished first;
- keys an admin rotated with ``rt keys rotate`` while the server ran are picked
  up within ``KEY_WATCH_SECONDS``: between checks the thread looks at the key
  and certificate files' sizes and times (a ``stat`` each, nothing read) and
  checks at once when they changed. ``rt keys rotate`` and this thread hold
  ``keystore.key_change_lock`` while they change or read keys, so neither
  sees the other's half-written files, and only one of them finishes a
  pending rotation. (Simplest safe choice: no new RPC on the registrar
  socket, and it works whoever changed the files.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Final

from rt_client.config import DistrictConfig
from rt_client.directory import Clock, utc_now
from rt_client.errors import RecordsTransferError
from rt_client.identity import KEY_FILES, TLS_CERT_FILE, DistrictIdentity, load_identity
from rt_client.keystore import PENDING_DIR, key_change_lock
from rt_client.rotation import finish_pending, rotate_keys

__all__ = [
    "ALERT_BEFORE",
    "KEY_WATCH_SECONDS",
    "RENEW_AT_FRACTION_LEFT",
    "CertificateRenewer",
    "renewal_due",
]

log = logging.getLogger("rt_server.renewal")

ALERT_BEFORE: Final = timedelta(days=7)
RENEW_AT_FRACTION_LEFT: Final = 1 / 3
# How often the key files are looked at for a change made by another process.
KEY_WATCH_SECONDS: Final = 2.0


def renewal_due(not_before: datetime, not_after: datetime, now: datetime) -> bool:
    """True once a third (or less) of the certificate's validity is left."""
    return not_after - now <= (not_after - not_before) * RENEW_AT_FRACTION_LEFT


class CertificateRenewer:
    """A background thread that keeps the district's certificate renewed; see the module."""

    def __init__(
        self,
        config: DistrictConfig,
        current: Callable[[], DistrictIdentity],
        use_identity: Callable[[DistrictIdentity], None],
        clock: Clock = utc_now,
        hold: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        """``hold``: entered around each renewal (the server holds its registry calls)."""
        self._hold = hold
        self._config = config
        self._current = current
        self._use_identity = use_identity
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="renewal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        every = self._config.renewal_check_seconds
        last_check = time.monotonic()
        seen = self._files()
        while not self._stop.wait(min(KEY_WATCH_SECONDS, every)):
            files = self._files()
            if time.monotonic() - last_check >= every:
                self.check()
                last_check, seen = time.monotonic(), files
            elif files != seen:
                self.check(reload_only=True)  # keys changed by another process: no renewal
                seen = files

    def _files(self) -> tuple[tuple[str, int, int], ...]:
        """Size and modification time of the key files, and whether a change is pending."""
        data_dir = self._config.data_dir
        found = []
        for name in (*KEY_FILES, TLS_CERT_FILE, PENDING_DIR):
            try:
                st = (data_dir / name).stat()
                found.append((name, st.st_size, st.st_mtime_ns))
            except OSError:
                found.append((name, -1, -1))
        return tuple(found)

    def check(self, *, reload_only: bool = False) -> str:
        """One check; returns what it did ("renewed", "alerted", "reloaded", "ok", "failed").

        ``reload_only``: take up keys changed on disk (and finish a pending
        rotation), but neither renew nor alert.
        """
        with self._lock:  # one at a time: the thread and a test (or admin) trigger
            try:
                return self._check(reload_only)
            except RecordsTransferError as exc:
                log.warning(
                    "district %s: certificate renewal failed, tried again in %.0f s: %s",
                    self._config.district_code,
                    self._config.renewal_check_seconds,
                    exc,
                )
                self._alert_if_near()
                return "failed"

    def _check(self, reload_only: bool) -> str:
        config = self._config
        if finish_pending(config) is not None:
            log.info("district %s: finished a key rotation left pending", config.district_code)
        with key_change_lock(config.data_dir):  # not while another process writes keys
            on_disk = load_identity(config.data_dir)
        did = "ok"
        if _changed(on_disk, self._current()):
            self._use_identity(on_disk)
            did = "reloaded"
        if reload_only:
            return did
        cert = on_disk.certificate
        now = self._clock()
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        if renewal_due(not_before, not_after, now):
            # The injected clock decides when; the answer is checked against real time.
            with self._hold():
                rotation = rotate_keys(config, tls=True)
                self._use_identity(rotation.identity)
            log.info(
                "district %s: certificate renewed (new TLS key), valid until %s",
                config.district_code,
                f"{rotation.identity.certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            )
            return "renewed"
        return "alerted" if self._alert_if_near() else did

    def _alert_if_near(self) -> bool:
        not_after = self._current().certificate.not_valid_after_utc
        if not_after - self._clock() > ALERT_BEFORE:
            return False
        log.warning(
            "district %s: the TLS certificate expires %s UTC and was not renewed; "
            "check that the registry is reachable (rt doctor)",
            self._config.district_code,
            f"{not_after:%Y-%m-%d %H:%M}",
        )
        return True


def _changed(a: DistrictIdentity, b: DistrictIdentity) -> bool:
    return (
        a.tls != b.tls
        or a.hpke_key.private_bytes() != b.hpke_key.private_bytes()
        or a.signing_key.public_key() != b.signing_key.public_key()
    )
