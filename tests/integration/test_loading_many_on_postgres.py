"""Loading many executions at once (a worker's claims): snapshots and the events after them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import InMemoryProcessCatalog
from agent_ledger.application.starter import StartRequest, start_execution
from tests.support.stores import postgres_store

pytestmark = pytest.mark.postgres

PROCESS = {
    "name": "chatty",
    "steps": [{"id": "talk", "type": "agent_task", "agent": "echo", "input": {}}],
}


@pytest.fixture(scope="module")
def executions(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executions]:
    with postgres_store(postgres_url, tmp_path_factory.mktemp("data")) as opened:
        yield opened


def started(executions: Executions) -> uuid.UUID:
    process, _ = InMemoryProcessCatalog().register(PROCESS)
    return start_execution(
        executions, StartRequest(user_id="loader", process=process, input={})
    ).execution_id


def test_a_long_execution_is_loaded_from_its_snapshot_and_later_events(
    executions: Executions,
) -> None:
    long_id, short_id = started(executions), started(executions)
    execution = executions.get_execution(long_id)
    execution.schedule_step("talk", 1)
    execution.start_step("talk", 1)
    execution.start_agent("talk", 1, "echo", {})
    for n in range(130):  # past the snapshot interval of 100 events
        execution.record_thinking("talk", 1, f"thought {n}")
        if n % 20 == 19:  # saved as the engine saves: collected events, many writes
            executions.save_collected([(execution, list(execution.collect_events()))])
    executions.save_collected([(execution, list(execution.collect_events()))])

    snapshots = list(executions.snapshots.get(long_id, desc=True, limit=1))  # type: ignore[union-attr]
    assert snapshots, "a snapshot was taken on the way"
    assert snapshots[0].originator_version == 100

    missing = uuid.uuid4()
    loaded = executions.get_executions([long_id, short_id, missing])

    assert set(loaded) == {long_id, short_id}
    assert executions.histories_reader is not None  # PostgreSQL reads them in one go
    for execution_id in (long_id, short_id):
        one = executions.get_execution(execution_id)
        assert loaded[execution_id].version == one.version
        assert loaded[execution_id].steps == one.steps
    assert loaded[long_id].version == 134


def test_a_load_reads_each_execution_through_the_index_not_a_scan_of_all_events(
    executions: Executions,
) -> None:
    for _ in range(300):  # a young table: thousands of events, no statistics yet
        started(executions)
    reader = executions.histories_reader
    assert reader is not None
    # the plan a worker's connection keeps once the statement is prepared
    statement = reader.statement.replace("%(ids)s", "$1")
    with reader.datastore.get_connection() as connection, connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE load_histories(uuid[]) AS {statement}")
        ids = ",".join(str(uuid.uuid4()) for _ in range(8))  # EXECUTE takes no parameters
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE load_histories('{{{ids}}}')")
        plan = json.dumps(cursor.fetchone()["QUERY PLAN"])
        cursor.execute("DEALLOCATE load_histories")
        cursor.execute("RESET plan_cache_mode")
    assert '"Seq Scan"' not in plan, plan


def test_a_claim_reads_what_it_claimed_in_the_same_statement_except_a_taken_over_one(
    executions: Executions,
) -> None:
    from agent_ledger.infrastructure.store.histories import HistoriesBySql
    from agent_ledger.infrastructure.store.work_queue import SqlWorkQueue

    reader = executions.histories_reader
    assert isinstance(reader, HistoriesBySql)
    queue = SqlWorkQueue(executions.recorder, 10_000, reader)  # type: ignore[arg-type]
    for _ in range(3):
        started(executions)

    claims = queue.claim("first", 10_000, lease_seconds=0)  # expired at once

    assert len(claims) >= 3
    for claim in claims:
        assert claim.taken_over_from is None
        assert claim.history is not None
        claimed = executions.from_history(claim.history)
        assert claimed is not None
        stored = executions.get_execution(claim.execution_id)
        assert (claimed.id, claimed.version, claimed.steps) == (
            stored.id,
            stored.version,
            stored.steps,
        )
    # the leases ran out: another worker takes them over and loads them itself, since
    # the first holder's last write may land after the claim's read
    taken = queue.claim("second", 10_000, lease_seconds=30)
    assert {c.execution_id for c in taken} == {c.execution_id for c in claims}
    assert all(c.taken_over_from == "first" and c.history is None for c in taken)
