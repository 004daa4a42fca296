"""Which of our students a request may be about: the students ``rt_server.core.matching`` ranks.

Reads the student holding the request's SSID and the students sharing its last
name key or birth date (both indexed), and lets the core score them. Also the
one conversion of a ``students`` row into a ``StudentRecord``.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import RowMapping, or_, select

from rt_server.core.matching import Candidate, name_key, rank_candidates
from rt_server.core.model import StudentIdentity, StudentRecord
from rt_server.store._db import Bind, reading
from rt_server.store._rows import record_from_row
from rt_server.store.schema import STUDENTS

__all__ = ["match_student", "student_from_row"]

# Students sharing a birth date or a last name with the request are scored;
# this bounds that work for a very large district.
_MAX_SCORED: Final = 500


def student_from_row(row: RowMapping) -> StudentRecord:
    """A ``StudentRecord`` from a ``students`` row mapping."""
    return record_from_row(StudentRecord, row)


def match_student(bind: Bind, identity: StudentIdentity) -> list[Candidate]:
    """Our students that may be ``identity``, best first (``matching.rank_candidates``).

    Two queries in one read transaction: the student with the request's SSID,
    then at most 500 students (by local id) sharing its last name key or birth
    date. With neither, only an SSID match can be proposed.
    """
    by_ssid: StudentRecord | None = None
    with reading(bind) as conn:
        if identity.ssid:
            row = (
                conn.execute(select(STUDENTS).where(STUDENTS.c.ssid == identity.ssid))
                .mappings()
                .first()
            )
            if row is not None:
                by_ssid = student_from_row(row)

        conditions = []
        last = name_key(identity.legal_last_name)
        if last:
            conditions.append(STUDENTS.c.last_name_key == last)
        if identity.birth_date is not None:
            conditions.append(STUDENTS.c.birth_date == identity.birth_date)
        rows = (
            conn.execute(
                select(STUDENTS)
                .where(or_(*conditions))
                .order_by(STUDENTS.c.local_id)
                .limit(_MAX_SCORED)
            )
            .mappings()
            .all()
            if conditions
            else []
        )
    return rank_candidates(identity, by_ssid, [student_from_row(r) for r in rows])
