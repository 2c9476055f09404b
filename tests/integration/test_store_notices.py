"""A process listens to PostgreSQL on one connection whatever roles it runs: each channel's
notices reach that channel's subscribers, and a reconnect reaches every subscriber."""

from __future__ import annotations

import queue
import time

import psycopg
import pytest

from agent_ledger.infrastructure.feed.notices import StoreNotices
from agent_ledger.infrastructure.read_models.schedules import SCHEDULES_CHANNEL
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import EVENTS_TABLE, libpq_dsn
from agent_ledger.infrastructure.store.work_queue import WORK_CHANNEL

pytestmark = pytest.mark.postgres

SECRET = "store-notices-secret-" + "s" * 30


def listeners(connection: psycopg.Connection[tuple[int]], apart_from: int = 0) -> list[int]:
    """The backends of this database that have listened to something last."""
    rows = connection.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'LISTEN %%' AND pid NOT IN (pg_backend_pid(), %s)",
        (apart_from,),
    ).fetchall()
    return [pid for (pid,) in rows]


def one_listener(connection: psycopg.Connection[tuple[int]], apart_from: int = 0) -> int:
    deadline = time.monotonic() + 10
    while len(found := listeners(connection, apart_from)) != 1:
        assert time.monotonic() < deadline, f"listening backends: {found}"
        time.sleep(0.02)
    return found[0]


def test_each_channel_reaches_its_own_subscribers_and_a_reconnect_reaches_every_one(
    settings: Settings,
) -> None:
    heard: queue.Queue[tuple[str, str]] = queue.Queue()
    notices = StoreNotices(libpq_dsn(settings))
    for channel in ("first", "second"):
        notices.subscribe(
            channel,
            lambda payload, c=channel: heard.put((c, payload)),
            lambda c=channel: heard.put((c, "missed")),
        )
    notices.start()
    try:
        told = {heard.get(timeout=10), heard.get(timeout=10)}
        assert told == {("first", "missed"), ("second", "missed")}  # connected
        with psycopg.connect(libpq_dsn(settings), autocommit=True) as connection:
            listening = one_listener(connection)
            connection.execute("NOTIFY second, 'b'")
            connection.execute("NOTIFY first, 'a'")
            assert [heard.get(timeout=5), heard.get(timeout=5)] == [("second", "b"), ("first", "a")]

            connection.execute("SELECT pg_terminate_backend(%s)", (listening,))
            told = {heard.get(timeout=10), heard.get(timeout=10)}
            assert told == {("first", "missed"), ("second", "missed")}  # reconnected
            one_listener(connection, apart_from=listening)
            connection.execute("NOTIFY first, 'again'")
            assert heard.get(timeout=5) == ("first", "again")
            assert heard.empty()
    finally:
        notices.stop()


def test_a_worker_and_a_projector_in_one_process_share_one_listening_connection(
    settings: Settings,
) -> None:
    runtime = Runtime.start(settings, engine=True, projector=True, feed=False)
    try:
        assert runtime.notices is not None
        assert runtime.notices.channels == {EVENTS_TABLE, WORK_CHANNEL, SCHEDULES_CHANNEL}
        with psycopg.connect(libpq_dsn(settings), autocommit=True) as connection:
            one_listener(connection)
    finally:
        runtime.stop()
