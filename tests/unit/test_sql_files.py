"""PL/pgSQL kept in `.sql` files: filled by name, its own `$` signs left as they are."""

from __future__ import annotations

import pytest

from agent_ledger.infrastructure.audit.sql import audit_append_only_ddl
from agent_ledger.infrastructure.store.append_sql import append_ddl
from agent_ledger.infrastructure.store.persistence import append_only_ddl
from agent_ledger.infrastructure.store.sql_files import sql_file
from agent_ledger.infrastructure.store.work_queue import WORK_TABLE, claim_ddl


def appended() -> str:
    return append_ddl(
        work_table=WORK_TABLE,
        work_channel="agent_ledger_work",
        lease_lost="agent-ledger: lease lost",
        events_table='"public"."executions_events"',
        events_channel="executions_events",
        lock_timeout=5,
    )


def test_the_functions_are_filled_in_with_their_dollar_quotes_kept() -> None:
    assert "${" not in audit_append_only_ddl()
    for ddl in (appended(), claim_ddl(), append_only_ddl()):
        assert "${" not in ddl
        assert ddl.count("$$") == 2
    assert "SET LOCAL lock_timeout = '5s';" in appended()
    assert 'LOCK TABLE "public"."executions_events" IN EXCLUSIVE MODE;' in appended()
    assert "PERFORM pg_notify('executions_events', notice);" in appended()
    assert "FOR UPDATE SKIP LOCKED" in claim_ddl()
    assert f"UPDATE {WORK_TABLE} AS w SET lease_owner = owner" in claim_ddl()


def test_a_field_left_out_or_one_too_many_is_refused() -> None:
    with pytest.raises(ValueError, match="events_table"):
        sql_file("agent_ledger.infrastructure.store", "append_only_triggers.sql")
    with pytest.raises(ValueError, match="events_table"):
        sql_file(
            "agent_ledger.infrastructure.store",
            "append_only_triggers.sql",
            events_table="t",
            extra=1,
        )
