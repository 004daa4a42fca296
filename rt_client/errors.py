"""The one exception tree of Records Transfer.

Callers react by subtree: a ``PeerAuthError`` means "refuse the peer", an
``IntegrityError`` means "the bytes are not what was signed or encrypted", a
``TransferError`` means "the flow cannot go on in this state". Only the CLI turns
these into exit codes, and only ``rt_client.status_codes`` turns them into gRPC
status codes and back.
"""

from __future__ import annotations


class RecordsTransferError(Exception):
    """Root of every error this project raises on purpose."""

    def diagnostics(self) -> str:
        """Text for a registrar or IT admin: what went wrong, what to do."""
        return str(self)


class ConfigError(RecordsTransferError):
    """A config file, data directory or key file is missing or malformed."""


class SchemaVersionError(ConfigError):
    """The database's schema revision is not the one this version of the code needs.

    The message says which way to go: upgrade the database (``rt db upgrade``,
    ``rt-registry db upgrade``) or the software (the database is newer).
    """


class RegistryError(RecordsTransferError):
    """The registry refused, or could not be reached, or served a bad entry."""


class EnrollmentRefused(RegistryError):
    """Wrong authorization code, locked out, or an unknown district."""


class DirectoryError(RegistryError):
    """A directory entry did not verify: bad signature, rollback, expired, revoked."""


class PeerAuthError(RecordsTransferError):
    """A peer is not who it claims to be, or may not do what it asked."""


class CallerNotAuthenticated(PeerAuthError):
    """The caller presented no usable district identity (as opposed to a refused one)."""


class IntegrityError(RecordsTransferError):
    """Bytes failed verification or decryption.

    Deliberately carries no detail of *which* check failed: every failed
    decryption or verification looks the same (as pyca's ``InvalidToken``).
    """

    def __init__(self, message: str = "verification failed") -> None:
        super().__init__(message)


class InvalidInput(RecordsTransferError):
    """A message or argument is malformed or out of bounds; nothing was changed."""


class Duplicate(InvalidInput):
    """Already received: a replayed or re-sent request, decision, notice or transfer.

    Nothing was changed. A sender retrying its own message treats it as delivered.
    """


class Overloaded(RecordsTransferError):
    """Too many concurrent streams or requests; try again later."""


class NotFound(RecordsTransferError):
    """The named student, request, transfer or district does not exist here."""


class TransferError(RecordsTransferError):
    """The flow cannot proceed: wrong status for the action, peer unreachable, ..."""


class WrongStatus(TransferError):
    """The action is not allowed in the request's current status."""


class PeerUnavailable(TransferError):
    """The other district (or the registry) could not be reached; retry later."""


class Conflict(TransferError):
    """Something else changed the same thing at the same moment (two deliveries of one
    transfer racing); this call changed nothing and may simply be tried again."""


class ImportConflict(RecordsTransferError):
    """An import could not be applied as asked (e.g. the transfer is not ready)."""


class RetrySoon(PeerUnavailable):
    """The other district is up but cannot take the call yet, and says when to try again.

    Today: it cannot verify us because its registry is unreachable and it holds
    no entry of ours. A sender tries again after ``retry_after`` seconds (short
    and bounded) rather than backing off as from a district that is down.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
