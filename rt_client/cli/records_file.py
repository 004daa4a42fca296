"""The records file of ``rt student add --records``: what a district already holds, as JSON.

The file is a JSON list of ``RecordBatch`` objects (protos/rt/v1/records.proto)
in protobuf's JSON form: each names its ``table`` (``HIS``, ``ENR``, ...) and
lists its rows under the table's field (``his``, ``enr``, ...), fields by their
proto names. The README shows an example (a test loads it through ``rt``).
"""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format

from protos.rt.v1 import records_pb2
from rt_client.cli.session import CliError

__all__ = ["read_records_file"]

_SHOWN = 200  # of a path in a message


def read_records_file(path: Path) -> list[records_pb2.RecordBatch]:
    """The batches in the records file ``path``. Raises ``CliError`` saying what is wrong."""
    where = str(path)[:_SHOWN]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(f"the records file {where} is not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"cannot read the records file {where}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CliError(f"the records file {where} is not JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise CliError(
            f"the records file {where} must hold a JSON list of record batches, "
            'e.g. [{"table": "HIS", "his": [{"sq": 1, ...}]}] (see the README)'
        )
    batches = []
    for number, item in enumerate(data, start=1):
        try:
            batches.append(json_format.ParseDict(item, records_pb2.RecordBatch()))
        except (json_format.ParseError, ValueError, TypeError) as exc:
            raise CliError(f"the records file {where}, batch {number}: {exc}") from None
    return batches
