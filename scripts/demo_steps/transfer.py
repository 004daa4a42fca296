"""The transfer, steps 5 to 11 of ``scripts/demo.py``: the student enrolls at the new
district, whose registrar finds the prior school and asks for the records; the prior
registrar matches and approves (the records stream, end-to-end encrypted); the new
registrar reviews and imports, and the prior district sees the transfer COMPLETE.
"""

from __future__ import annotations

from scripts.demo_steps.commands import Demo, DemoError, console, wait_for
from scripts.demo_steps.sis import SampleStudent
from scripts.demo_steps.world import (
    NEW_SCHOOL,
    NEW_SCHOOL_NAME,
    PRIOR_CODE,
    PRIOR_SCHOOL_NAME,
    DistrictRun,
)

FLOW_TIMEOUT = 30.0  # seconds for a state the flow waits for


def step_new_student(demo: Demo, new: DistrictRun, student: SampleStudent) -> str:
    """The student enrolls at the new district (no records yet)."""
    middle = ["--middle", student.middle] if student.middle else []
    args = [
        "--ssid", student.ssid, "--first", student.first, *middle,
        "--last", student.last, "--birth-date", student.birth_date,
        "--gender", student.gender, "--school", NEW_SCHOOL,
    ]  # fmt: skip
    reply = demo.rt_json(new, "student add", *args)
    local_id = str(reply["local_id"])
    console.print(
        f"  enrolled {student.first} {student.last} (born {student.birth_date}) "
        f"at {NEW_SCHOOL_NAME} as [bold]{local_id}[/bold]"
    )
    return local_id


def step_search(demo: Demo, new: DistrictRun) -> str:
    """The new registrar looks up the prior school by name in the directory."""
    demo.rt(new, "schools search", PRIOR_SCHOOL_NAME)
    found = demo.rt_json(new, "schools search", PRIOR_SCHOOL_NAME)
    matches = [s for s in found if s.get("district_code") == PRIOR_CODE]
    if not matches:
        raise DemoError(f"the directory search for {PRIOR_SCHOOL_NAME!r} did not find it")
    return str(matches[0]["cds_code"])


def step_request(demo: Demo, new: DistrictRun, student_id: str, school: str) -> str:
    """The new registrar requests the records from the prior school."""
    detail = demo.rt_json(
        new, "request create", "--student", student_id,
        "--prior-school", school,
    )  # fmt: skip
    request_id = str(detail["summary"]["request_id"])
    demo.rt(new, "show", request_id)
    return request_id


def step_inbound(demo: Demo, prior: DistrictRun, request_id: str) -> None:
    """The prior registrar sees the request arrive."""

    def arrived() -> bool | None:
        listed = demo.rt_json(prior, "requests", "--direction", "in")
        return True if any(r.get("request_id") == request_id for r in listed) else None

    wait_for(f"request {request_id} to reach district {prior.code}", arrived, FLOW_TIMEOUT)
    demo.rt(prior, "requests", "--direction", "in")


def step_match_approve(demo: Demo, prior: DistrictRun, request_id: str, expected: str) -> str:
    """The prior registrar matches the request to a local student and approves it."""
    demo.rt(prior, "match", request_id)
    candidates = demo.rt_json(prior, "match", request_id)
    if not candidates:
        raise DemoError("no local student matches the request")
    local_id = str(candidates[0]["student"]["local_id"])
    if local_id != expected:
        raise DemoError(f"the best match is {local_id}, not the student who moved ({expected})")
    demo.rt(prior, "approve", request_id, "--student", local_id, "--wait")
    return local_id


def _status(demo: Demo, district: DistrictRun, request_id: str) -> str:
    detail = demo.rt_json(district, "show", request_id)
    return str(detail["summary"]["status"])


def wait_status(demo: Demo, district: DistrictRun, request_id: str, wanted: str) -> None:
    last: list[str] = []

    def reached() -> bool | None:
        status = _status(demo, district, request_id)
        last[:] = [status]
        if status in ("REJECTED", "FAILED", "EXPIRED") and status != wanted:
            raise DemoError(f"request {request_id} at district {district.code} is {status}")
        return True if status == wanted else None

    try:
        wait_for(f"request {request_id} to be {wanted} at district {district.code}",
                 reached, FLOW_TIMEOUT)  # fmt: skip
    except DemoError as exc:
        raise DemoError(f"{exc} (last status: {last[0] if last else 'unknown'})") from None


def step_review_import(demo: Demo, new: DistrictRun, request_id: str) -> dict[str, int]:
    """The new registrar checks what arrived, reviews it against local records, imports."""
    wait_status(demo, new, request_id, "DATA_RECEIVED")
    demo.rt(new, "show", request_id)
    demo.rt(new, "review", request_id)
    demo.rt(new, "import", request_id)
    detail = demo.rt_json(new, "show", request_id)
    if detail["summary"]["status"] != "IMPORTED":
        raise DemoError(f"after the import the request is {detail['summary']['status']}")
    return {str(c["table"]): int(c.get("rows", 0)) for c in detail.get("received", [])}


def step_complete(demo: Demo, prior: DistrictRun, request_id: str) -> None:
    """The prior district hears of the import (COMPLETE) and logs the disclosure."""
    wait_status(demo, prior, request_id, "COMPLETE")
    demo.rt(prior, "show", request_id)
    demo.rt(prior, "disclosures")
