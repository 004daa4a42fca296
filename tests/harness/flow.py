"""The flow between two in-process districts, driven as their registrars drive it.

Helpers over a ``Pair`` (``tests.harness.world``): add a student with
records, create a request at B, approve it at A (waiting until B holds the
records and both outboxes are drained), review, import; and reading a
district's database through its own engine (``snapshot`` of every table,
``rows_of``, ``count``), so that a test can assert what changed and what did
not. Asynchronous effects are awaited by polling with a bounded deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from protos.rt.v1 import common_pb2, records_pb2, registrar_pb2
from rt_server.core.tables import ALL_TABLES, TABLES, row_to_proto
from rt_server.store.schema import METADATA, OUTBOX, RECORD_TABLES
from scripts import samples
from scripts.loopback import wait_for
from tests.harness.world import PRIOR_SCHOOL, Pair, Side

SSID = "1234567890"
FIRST, LAST = "Ana", "Nuñez"
BIRTH = "2011-04-02"
WAIT_SECONDS = 15.0
RPC_TIMEOUT = 10.0

Status = common_pb2.RequestStatus
Code = grpc.StatusCode


# --- waiting, refusals, database state ------------------------------------------------


def wait_until(what: str, probe: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    """Poll ``probe`` until it returns something truthy (an empty list, 0: not yet); fail
    with AssertionError after ``timeout`` seconds."""
    return wait_for(what, lambda: probe() or None, timeout, interval=0.02)


def get(side: Side, request_id: str) -> registrar_pb2.RequestDetail:
    return side.rpc.GetRequest(registrar_pb2.RequestRef(request_id=request_id), timeout=RPC_TIMEOUT)


def wait_status(
    side: Side, request_id: str, status: int, timeout: float = WAIT_SECONDS
) -> registrar_pb2.RequestDetail:
    """Poll GetRequest until the request has ``status``."""
    last: list[registrar_pb2.RequestDetail] = []

    def probe() -> registrar_pb2.RequestDetail | None:
        detail = get(side, request_id)
        last[:] = [detail]
        return detail if detail.summary.status == status else None

    try:
        return wait_until(f"{side.code} {request_id} to be {Status.Name(status)}", probe, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last[0] if last else None}") from None


def outbox_settled(side: Side) -> bool:
    """Nothing left for the delivery worker: every outbox item done or failed."""
    with side.engine.connect() as conn:
        return conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.status == "QUEUED")).first() is None


def settle(*sides: Side) -> None:
    for side in sides:
        wait_until(f"{side.code}'s outbox to drain", lambda s=side: outbox_settled(s))


def refused(call: Callable[..., Any], request: Any, code: grpc.StatusCode) -> str:
    """Call, expect ``code``; returns the status details (written for a registrar)."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=RPC_TIMEOUT)
    assert info.value.code() == code, f"{info.value.code()}: {info.value.details()}"
    details = info.value.details() or ""
    assert details and details != "internal error"
    return details


Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(side: Side) -> Snapshot:
    """Every row of every table of the district's database."""
    with side.engine.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for table in METADATA.sorted_tables
        }


def assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"tables changed: {changed}"


def rows_of(side: Side, code: str, pid: str) -> list[dict[str, Any]]:
    table = RECORD_TABLES[code]
    with side.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(table).where(table.c.PID == pid).order_by(table.c.SQ)
            ).mappings()
        ]


def count(side: Side, table: Any, *where: Any) -> int:
    with side.engine.connect() as conn:
        return len(conn.execute(select(table).where(*where)).all())


# --- students and records ----------------------------------------------------------------


def batches_of(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[records_pb2.RecordBatch]:
    out = []
    for code, rows in records.items():
        spec = TABLES[code]
        batch = records_pb2.RecordBatch(table=spec.enum)
        getattr(batch, spec.batch_field).extend(row_to_proto(spec, r) for r in rows)
        out.append(batch)
    return out


def add_student(
    side: Side,
    local_id: str,
    records: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    *,
    ssid: str = SSID,
    first: str = FIRST,
    last: str = LAST,
    birth: str = BIRTH,
    gender: str = "F",
    actor: str = "registrar",
) -> None:
    side.rpc.AddStudent(
        registrar_pb2.AddStudentRequest(
            student=registrar_pb2.Student(
                local_id=local_id,
                ssid=ssid,
                legal_first_name=first,
                legal_last_name=last,
                birth_date=birth,
                gender=gender,
                school=side.school,
            ),
            records=batches_of(records or {}),
            actor=actor,
        ),
        timeout=RPC_TIMEOUT,
    )


def small_records(seed: int, n: int = 4) -> dict[str, list[dict[str, Any]]]:
    return samples.sample_records(random.Random(seed), {code: n for code in ALL_TABLES})


INJECTION = "Robert'); DROP TABLE students;--"


# --- the flow, step by step -------------------------------------------------------------


def create_request(p: Pair, local_id: str = "B1", tables: Sequence[int] = ()) -> str:
    detail = p.b.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id=local_id, prior_school=PRIOR_SCHOOL, tables=list(tables), actor="bob"
        ),
        timeout=RPC_TIMEOUT,
    )
    # The registrar's call sends at once: A has it when the call returns.
    assert detail.summary.status == Status.PENDING, detail
    wait_status(p.a, detail.summary.request_id, Status.PENDING)
    return detail.summary.request_id


def approve(
    p: Pair, request_id: str, student: str = "", tables: Sequence[int] = ()
) -> registrar_pb2.RequestDetail:
    detail = p.a.rpc.ApproveRequest(
        registrar_pb2.ApproveRequestRequest(
            request_id=request_id, student_local_id=student, tables=list(tables), actor="alice"
        ),
        timeout=RPC_TIMEOUT,
    )
    assert detail.approved and detail.summary.status == Status.PENDING, detail
    received = wait_status(p.b, request_id, Status.DATA_RECEIVED)
    wait_status(p.a, request_id, Status.SENT)
    settle(p.a, p.b)
    return received


def review(p: Pair, request_id: str) -> dict[int, registrar_pb2.TableReview]:
    result = p.b.rpc.ReviewTransfer(
        registrar_pb2.RequestRef(request_id=request_id, actor="bob"), timeout=RPC_TIMEOUT
    )
    return {t.table: t for t in result.tables}


def import_(p: Pair, request_id: str, **kw: Any) -> registrar_pb2.ImportResult:
    return p.b.rpc.ImportTransfer(
        registrar_pb2.ImportTransferRequest(request_id=request_id, actor="bob", **kw),
        timeout=RPC_TIMEOUT,
    )


def counts(items: Sequence[common_pb2.TableCount]) -> dict[str, int]:
    return {common_pb2.TableCode.Name(c.table): c.rows for c in items}


def data_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("PID", "SQ", "SRC")}


def messages(side: Side, request_id: str) -> list[registrar_pb2.ThreadEntry]:
    return list(
        side.rpc.ListMessages(
            registrar_pb2.RequestRef(request_id=request_id), timeout=RPC_TIMEOUT
        ).messages
    )
