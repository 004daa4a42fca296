"""Peers' messages processed once (``rt_server.store.seen_messages``)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from rt_client.errors import Duplicate
from rt_server.store import seen_messages


def test_remember_message(engine: Engine) -> None:
    seen_messages.remember_message(engine, "receipt-1", "receipt")
    with pytest.raises(Duplicate):
        seen_messages.remember_message(engine, "receipt-1", "receipt")
