"""Structured JSON logs of real ``rt serve`` processes through a whole transfer.

One district logs JSON because its config says ``log_format = "json"``, the
other because it is started with ``rt serve --log-json``: every line each
writes to its log is one JSON object with the fixed fields, and no line names
the student (name, SSID, birth date) or her records.
"""

from __future__ import annotations

import json

from tests.faults.conftest import (
    Cluster,
    add_new_student,
    approve,
    create_request,
    import_records,
    seed_student,
    small_records,
)
from tests.harness.processes import Status
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL

SSID = "3141592653"
FIELDS = {"ts", "level", "logger", "event", "district", "request"}


def json_lines(log: str) -> list[dict[str, object]]:
    """The log's lines as JSON objects; only the harness's banner and the ready line are not."""
    lines = []
    for text in log.splitlines():
        if not text or text.startswith("=====") or " ready: " in text:
            continue
        line = json.loads(text)  # fails the test on any line that is not JSON
        assert isinstance(line, dict) and FIELDS <= set(line), text
        lines.append(line)
    return lines


def test_a_transfer_logs_json_lines_without_student_data(cluster: Cluster) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL, log_format="json")
    b = cluster.district(NEW, NEW_SCHOOL)
    records = small_records(5)
    seed_student(a, "A1", ssid=SSID, records=records)
    a.start()
    b.start(args=["--log-json"])
    add_new_student(b, "B1", SSID)
    request_id = create_request(b, "B1", PRIOR_SCHOOL)
    a.wait_status(request_id, Status.Value("PENDING"))
    approve(a, request_id, "A1")
    b.wait_status(request_id, Status.Value("DATA_RECEIVED"))
    import_records(b, request_id)
    a.wait_status(request_id, Status.Value("COMPLETE"))

    for district in (a, b):
        log = district.log()
        lines = json_lines(log)
        assert len(lines) >= 3
        assert {line["district"] for line in lines} == {district.code}
        assert {line["level"] for line in lines} <= {"DEBUG", "INFO", "WARNING", "ERROR"}
        for secret in (SSID, "Ana", "Nuñez", "2011-04-02", "2011, 4, 2"):
            assert secret not in log, secret
        values = [str(v) for rows in records.values() for row in rows for v in row.values()]
        for v in values:
            if len(v) >= 6:
                assert v not in log, v
    assert any(line["request"] == request_id for line in json_lines(a.log()))
