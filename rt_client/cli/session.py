"""One ``rt`` invocation: the district's local ``Registrar`` stub, the output mode, the actor.

Also what every command shares: ``CliError`` (a problem the user fixes on the
command line), the exit codes, and finding the district config
(``district_config_path``, used by the server's own commands too).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console

from protos.rt.v1 import common_pb2, registrar_pb2, registrar_pb2_grpc
from rt_client.errors import RecordsTransferError

__all__ = [
    "DIRECTIONS",
    "EXIT_ERROR",
    "EXIT_OK",
    "STUDENT_FIELDS",
    "EXIT_USAGE",
    "REASONS",
    "RPC_TIMEOUT",
    "TABLE_NAMES",
    "CliError",
    "Session",
    "district_config_path",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
RPC_TIMEOUT = 60.0
REASONS = {
    "student-not-found": common_pb2.STUDENT_NOT_FOUND,
    "not-enrolled-here": common_pb2.NOT_ENROLLED_HERE,
    "records-withheld": common_pb2.RECORDS_WITHHELD,
    "duplicate-request": common_pb2.DUPLICATE_REQUEST,
    "other": common_pb2.OTHER,
}
DIRECTIONS: dict[str, registrar_pb2.Direction.ValueType] = {
    "in": registrar_pb2.INBOUND,
    "out": registrar_pb2.OUTBOUND,
}
TABLE_NAMES = [n for n in common_pb2.TableCode.keys() if n != "TABLE_CODE_UNSPECIFIED"]
# A student's fields as the commands name them (`rt student edit --last`, the columns of
# `rt request create --from-csv`) -> the Student message's fields.
STUDENT_FIELDS = {
    "ssid": "ssid",
    "first": "legal_first_name",
    "middle": "legal_middle_name",
    "last": "legal_last_name",
    "birth_date": "birth_date",
    "gender": "gender",
    "school": "school",
}
_SERVER_FAILED = (
    "the district server failed unexpectedly on this (a bug; its log says why): "
    "check with 'rt show' or 'rt requests' what was done before trying again, "
    "and tell your IT staff"
)


class CliError(RecordsTransferError):
    """A problem the user can fix by changing the command line or the config.

    ``code`` is the stable name ``--json`` reports it under (``rt_client.cli.errors``):
    ``usage`` unless the district refused (the status code's name, lower case).
    """

    def __init__(self, message: str, code: str = "usage") -> None:
        super().__init__(message)
        self.code = code


def district_config_path(args: argparse.Namespace) -> Path:
    """The district config file: ``--config``, else ``$RT_CONFIG``. Raises ``CliError``."""
    config_path = getattr(args, "config", None) or os.environ.get("RT_CONFIG")
    if not config_path:
        raise CliError("no district config: pass --config FILE or set RT_CONFIG", "config")
    return Path(config_path)


class Session:
    """One CLI invocation: the registrar stub, the output mode and the actor."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json = bool(getattr(args, "json", False))
        self.console = Console()
        self.err = Console(stderr=True)
        self.actor = args.actor or getpass.getuser()
        self._stub: registrar_pb2_grpc.RegistrarStub | None = None
        self._socket: str | None = None

    @property
    def stub(self) -> registrar_pb2_grpc.RegistrarStub:
        if self._stub is None:
            from rt_client.config import load_config

            config = load_config(district_config_path(self.args))
            self._socket = str(config.registrar_socket)
            channel = grpc.insecure_channel(f"unix:{self._socket}")
            self._stub = registrar_pb2_grpc.RegistrarStub(channel)
        return self._stub

    def call(self, method: str, request: Message, timeout: float = RPC_TIMEOUT) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in str(
                exc.details() if isinstance(exc, grpc.Call) else ""
            ):
                raise CliError(
                    f"the district server is not running (no answer on {self._socket}); "
                    "start it with 'rt serve'",
                    "server_not_running",
                ) from exc
            name = code.name.lower() if code else "internal"
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, None):
                raise CliError(_SERVER_FAILED, "internal") from exc
            detail = exc.details() if isinstance(exc, grpc.Call) else ""
            raise CliError(detail or f"the district refused this ({name})", name) from exc

    def emit(self, message: Message | list[Message], render: Callable[[], None]) -> None:
        if self.json:
            if isinstance(message, list):
                data: Any = [self._as_dict(m) for m in message]
            else:
                data = self._as_dict(message)
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            render()

    @staticmethod
    def _as_dict(message: Message) -> Any:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
