"""The Registrar methods of the law's clocks and flags: calendars, due dates, student flags.

A mixin of ``RegistrarService`` (kept apart so each file stays one subject).
Translation only: proto in, ``rt_server.flows.compliance`` call, proto out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from protos.rt.v1 import registrar_pb2
from rt_server.flows import compliance
from rt_server.flows.compliance import LoadedCalendar
from rt_server.flows.district import District

__all__ = ["ComplianceRpcs", "flag_protos"]


def _calendar_view(c: LoadedCalendar, redated: int = 0) -> registrar_pb2.CalendarView:
    out = registrar_pb2.CalendarView(
        school=c.calendar.school, source=c.source, loaded_by=c.loaded_by, requests_redated=redated
    )
    out.loaded_at.FromDatetime(c.loaded_at)
    for t in c.calendar.terms:
        out.terms.add(
            first_day=t.first_day.isoformat(),
            last_day=t.last_day.isoformat(),
            school_days=t.school_days,
            closed_days=sorted(day.isoformat() for day in t.closed if day.weekday() < 5),
        )
    return out


def flag_protos(found: Sequence[Any]) -> list[registrar_pb2.StudentFlag]:
    out = []
    for f in found:
        item = registrar_pb2.StudentFlag(flag=f.flag.value, source=f.source, set_by=f.set_by)
        item.set_at.FromDatetime(f.set_at)
        out.append(item)
    return out


class ComplianceRpcs:
    _d: District
    # RegistrarService's, so a request's summary reads the same everywhere.
    _summaries: Callable[[Sequence[Any]], list[registrar_pb2.RequestSummary]]
    _student_detail_of: Callable[[str], registrar_pb2.StudentDetail]

    def LoadCalendar(
        self, request: registrar_pb2.LoadCalendarRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.CalendarView:
        loaded, redated = compliance.load_calendar(
            self._d,
            school=request.school,
            content=request.content,
            file_format=request.file_format,
            first_day=request.first_day,
            last_day=request.last_day,
            actor=request.actor or "unknown",
            file_name=request.file_name,
        )
        return _calendar_view(loaded, redated)

    def ShowCalendars(
        self, request: registrar_pb2.ShowCalendarsRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.CalendarList:
        loaded, without = compliance.calendars_of(self._d, request.school)
        return registrar_pb2.CalendarList(
            calendars=[_calendar_view(c) for c in loaded],
            schools_without=without,
            fallback=compliance.FALLBACK,
            today=compliance.today(self._d).isoformat(),
        )

    def ListDue(
        self, request: registrar_pb2.ListDueRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.ListDueResponse:
        today, found = compliance.due_list(
            self._d, overdue_only=request.overdue_only, limit=request.limit or 1000
        )
        return registrar_pb2.ListDueResponse(
            requests=self._summaries(found), today=today.isoformat()
        )

    def SetStudentFlag(
        self, request: registrar_pb2.SetStudentFlagRequest, context: grpc.ServicerContext
    ) -> registrar_pb2.StudentDetail:
        compliance.set_student_flag(
            self._d,
            request.local_id,
            request.flag,
            clear=request.clear,
            actor=request.actor or "unknown",
        )
        return self._student_detail_of(request.local_id)
