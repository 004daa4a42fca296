"""School calendars: each school's terms (school years) and the weekdays without school.

Loading a calendar replaces the school's terms that overlap the loaded ones
(a corrected file replaces last month's), keeps the others (last year's), and
writes an audit row, in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from rt_server.core.calendars import SchoolCalendar, SchoolTerm
from rt_server.store._db import Bind, aware, reading, transaction
from rt_server.store.audit import write_audit
from rt_server.store.schema import SCHOOL_CALENDARS

__all__ = ["LoadedCalendar", "calendar_of", "loaded_calendars", "save_calendar"]


@dataclass(frozen=True)
class LoadedCalendar:
    """A school's calendar with where its newest term came from."""

    calendar: SchoolCalendar
    source: str
    loaded_at: dt.datetime
    loaded_by: str


def save_calendar(
    bind: Bind,
    school: str,
    terms: Sequence[SchoolTerm],
    *,
    source: str,
    actor: str,
    now: dt.datetime,
) -> None:
    """Store ``terms`` for ``school``, replacing the ones they overlap."""
    at = aware(now)
    with transaction(bind) as conn:
        for term in terms:
            conn.execute(
                delete(SCHOOL_CALENDARS).where(
                    SCHOOL_CALENDARS.c.school == school,
                    SCHOOL_CALENDARS.c.first_day <= term.last_day,
                    SCHOOL_CALENDARS.c.last_day >= term.first_day,
                )
            )
        conn.execute(
            insert(SCHOOL_CALENDARS),
            [
                {
                    "school": school,
                    "first_day": t.first_day,
                    "last_day": t.last_day,
                    "closed_days": ",".join(sorted(d.isoformat() for d in t.closed)),
                    "source": source[:200],
                    "loaded_at": at,
                    "loaded_by": actor,
                }
                for t in terms
            ],
        )
        write_audit(
            conn,
            actor=actor,
            action="calendar.load",
            request_id=None,
            detail=f"school {school}: " + ", ".join(f"{t.first_day}..{t.last_day}" for t in terms),
            now=at,
        )


def loaded_calendars(bind: Bind, school: str | None = None) -> list[LoadedCalendar]:
    """Every school's calendar (or one school's), by school."""
    query = select(SCHOOL_CALENDARS).order_by(
        SCHOOL_CALENDARS.c.school, SCHOOL_CALENDARS.c.first_day
    )
    if school is not None:
        query = query.where(SCHOOL_CALENDARS.c.school == school)
    with reading(bind) as conn:
        rows = conn.execute(query).mappings().all()
    by_school: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_school.setdefault(row["school"], []).append(dict(row))
    out: list[LoadedCalendar] = []
    for code, found in by_school.items():
        terms = tuple(
            SchoolTerm(
                r["first_day"],  # type: ignore[arg-type]
                r["last_day"],  # type: ignore[arg-type]
                frozenset(dt.date.fromisoformat(d) for d in str(r["closed_days"]).split(",") if d),
            )
            for r in found
        )
        newest = max(found, key=lambda r: r["loaded_at"])  # type: ignore[arg-type,return-value]
        out.append(
            LoadedCalendar(
                SchoolCalendar(code, terms),
                str(newest["source"]),
                newest["loaded_at"],  # type: ignore[arg-type]
                str(newest["loaded_by"]),
            )
        )
    return out


def calendar_of(bind: Bind, school: str) -> SchoolCalendar | None:
    """``school``'s calendar, or None when none is loaded."""
    found = loaded_calendars(bind, school)
    return found[0].calendar if found else None
