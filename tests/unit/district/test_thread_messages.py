"""A request's thread (``rt_server.store.thread_messages``): ours queued, theirs stored once."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from rt_client.errors import Duplicate, InvalidInput, NotFound
from rt_server.store import thread_messages
from tests.unit.district._store_rows import outbox_rows

Snap = Callable[[], Any]


def test_thread_messages(engine: Engine, outbound: str, snapshot: Snap, now: dt.datetime) -> None:
    message_id = str(uuid.uuid4())
    ours = thread_messages.add_thread_message(
        engine,
        outbound,
        author="registrar.b",
        body="Could you include 2019 immunizations?",
        from_district="1964733",
        message_id=message_id,
        sent_at=now,
        envelope=b"signed-msg",
    )
    assert (ours.delivered, ours.system, ours.from_district) == (False, False, "1964733")
    assert outbox_rows(engine)[-1] == ("message", "0161192", b"signed-msg", "QUEUED")
    thread_messages.mark_message_delivered(engine, message_id)
    theirs = thread_messages.add_thread_message(
        engine,
        outbound,
        author="registrar.a",
        body="Sí, claro.",
        from_district="0161192",
        delivered=True,
    )
    thread = thread_messages.list_messages(engine, outbound)
    assert [m.body for m in thread[-2:]] == ["Could you include 2019 immunizations?", "Sí, claro."]
    assert thread[-2].delivered and thread[-1] == theirs
    before = snapshot()
    with pytest.raises(Duplicate):
        thread_messages.add_thread_message(
            engine,
            outbound,
            author="x",
            body="again",
            from_district="1964733",
            message_id=message_id,
        )
    for bad in ({"body": " "}, {"body": "x" * 4001}, {"from_district": "12"}):
        with pytest.raises(InvalidInput):
            thread_messages.add_thread_message(
                engine, outbound, **{"author": "x", "body": "hi", "from_district": "1964733", **bad}
            )
    with pytest.raises(NotFound):
        thread_messages.add_thread_message(
            engine, str(uuid.uuid4()), author="x", body="hi", from_district="1964733"
        )
    assert snapshot() == before
    with pytest.raises(NotFound):
        thread_messages.list_messages(engine, str(uuid.uuid4()))
