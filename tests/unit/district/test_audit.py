"""The audit log (``rt_server.store.audit``) holds no student data."""

from __future__ import annotations

from sqlalchemy import Engine, select

from rt_server.store import disclosures, thread_messages
from rt_server.store.schema import AUDIT_LOG, REQUESTS, STUDENTS, THREAD_MESSAGES
from tests.unit.district._store_rows import decide


def test_audit_log_holds_no_student_data(
    engine: Engine, outbound: str, inbound: str, student_id: str
) -> None:
    decide(
        engine,
        inbound,
        approved=False,
        actor="registrar.a",
        envelope=b"d",
        reason="OTHER",
        reason_text="María Nuñez moved to Fresno",
    )
    disclosures.write_disclosure(
        engine,
        student_local_id=student_id,
        receiving_district="1964733",
        receiving_school="19647331932334",
        tables=["HIS"],
        request_id=outbound,
        acting_staff="registrar.a",
    )
    thread_messages.add_thread_message(
        engine,
        outbound,
        author="registrar.b",
        body="About María Nuñez",
        from_district="1964733",
        envelope=b"m",
    )
    with engine.connect() as conn:
        text = " ".join(str(v) for r in conn.execute(select(AUDIT_LOG)) for v in r)
        student = conn.execute(select(STUDENTS)).mappings().one()
    for secret in ("María", "Maria", "Nuñez", "José", "1234567890", "2010-05-17", "Fresno"):
        assert secret not in text
    assert student["last_name_key"] == "nunez"
    with engine.connect() as conn:
        assert (
            conn.execute(
                select(REQUESTS.c.reject_text).where(REQUESTS.c.request_id == inbound)
            ).scalar()
            == "María Nuñez moved to Fresno"
        )
        assert conn.execute(
            select(THREAD_MESSAGES.c.body).where(THREAD_MESSAGES.c.system.is_(True))
        ).all()
