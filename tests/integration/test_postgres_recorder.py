"""The recorder reads the log exactly as the library does, and writes without its pitfalls."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from agent_ledger.application.event_log import topics_by_type
from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import InMemoryProcessCatalog
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.application.work import Fence, LeaseLostError
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions
from agent_ledger.infrastructure.store.postgres_recorder import PostgresStoreRecorder
from tests.support.stores import postgres_store

pytestmark = pytest.mark.postgres

PROCESS = {
    "name": "tiny",
    "steps": [{"id": "only", "type": "agent_task", "agent": "echo", "input": {}}],
}


@pytest.fixture(scope="module")
def executions(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executions]:
    with postgres_store(postgres_url, tmp_path_factory.mktemp("data")) as opened:
        process, _ = InMemoryProcessCatalog().register(PROCESS)
        for n in range(6):  # a few executions, each with a step scheduled: two topics in the log
            started = start_execution(
                opened, StartRequest(user_id=f"user-{n % 2}", process=process, input={})
            )
            execution = opened.get_execution(started.execution_id)
            execution.schedule_step("only", 1)
            opened.save_collected([(execution, list(execution.collect_events()))])
        yield opened


def test_every_kind_of_log_read_matches_the_library(executions: Executions) -> None:
    recorder = executions.recorder
    assert isinstance(recorder, PostgresStoreRecorder)
    started_topic = topics_by_type()["execution_started"]
    head = recorder.max_notification_id()
    assert head == PostgresApplicationRecorder.max_notification_id(recorder) == 12

    for start, inclusive, stop, topics, limit in itertools.product(
        (None, 1, 4), (True, False), (None, 9), ((), (started_topic,)), (3, 100)
    ):
        arguments = {"stop": stop, "topics": topics, "inclusive_of_start": inclusive}
        ours = recorder.select_notifications(start, limit, **arguments)
        library = PostgresApplicationRecorder.select_notifications(
            recorder, start, limit, **arguments
        )
        assert ours == library, (start, inclusive, stop, topics, limit)
        assert ours, "every combination finds something"


def test_refused_writes_report_their_own_error_and_leave_the_connection_usable(
    postgres_url: str, tmp_path: Path
) -> None:
    """Refusals in psycopg's pipeline mode (the library's way) could leave a connection
    reporting a later version conflict as `OperationalError('pipeline aborted')`, or naming
    a prepared statement the server never had (seen after many refusals, not every time)."""
    settings = Settings(
        database_url=postgres_url,
        jwt_secret="x" * 40,
        data_dir=tmp_path,
        db_pool_size=1,
        db_max_overflow=0,
    )
    initialize_schema(settings)
    executions = open_executions(settings)
    recorder = executions.recorder
    taken = _stored_event()
    try:
        recorder.insert_events([taken])
        for _ in range(4):
            with pytest.raises(LeaseLostError):  # nobody holds this lease
                recorder.insert_events([_stored_event()], work=[Fence(uuid4(), "not-me")])
        with pytest.raises(IntegrityError):  # that version is stored already
            recorder.insert_events([taken])
        for _ in range(6):
            (position,) = recorder.insert_events([_stored_event()]) or ()
            assert position > 0
        assert len(recorder.select_notifications(None, 100, topics=["test"])) == 7
    finally:
        executions.close()


def _stored_event() -> StoredEvent:
    return StoredEvent(uuid4(), 1, "test", b"{}")
