"""The work queue in the event store's own database, changed in the events' transaction.

The recorders below extend the eventsourcing library's: when `Executions.save()` is
given `work=[...]`, those changes run inside the same transaction as the insert of the
events, so a lost lease (`Fence`) rolls the events back too. Times are epoch seconds
from the workers' clocks (hosts are expected to keep NTP time, as for any lease).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from agent_ledger.application.work import (
    Claim,
    Enqueue,
    Fence,
    Finish,
    LeaseLostError,
    Park,
    Renewal,
    Reschedule,
    Wake,
)
from agent_ledger.application.work_memory import PARKED_FOREVER
from agent_ledger.infrastructure.store.append_sql import CALL as APPEND_CALL
from agent_ledger.infrastructure.store.append_sql import append_arguments, append_ddl
from agent_ledger.infrastructure.store.histories import HistoriesBySql
from agent_ledger.infrastructure.store.postgres_recorder import PostgresStoreRecorder
from agent_ledger.infrastructure.store.sql_files import sql_file

WORK_TABLE = "execution_work"
WORK_CHANNEL = "agent_ledger_work"
"""Notified on commit when executions are queued or an ended one frees a slot its user's
next is waiting for (empty payload), or one is asked to cancel (the execution's id): what
wakes a worker on PostgreSQL, without reading any event."""
LEASE_LOST = "agent-ledger: lease lost"
_ADMISSION_LOCK = zlib.crc32(b"agent-ledger:admission")

_COLUMNS = """(
  execution_id {uuid} PRIMARY KEY,
  user_id TEXT NOT NULL,
  seq {serial},
  admitted BOOLEAN NOT NULL DEFAULT FALSE,
  ready_at DOUBLE PRECISION NOT NULL,
  lease_owner TEXT,
  lease_expires_at DOUBLE PRECISION,
  cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
  waiting BOOLEAN NOT NULL DEFAULT FALSE
)"""

POSTGRES_DDL = [
    f"CREATE TABLE IF NOT EXISTS {WORK_TABLE} " + _COLUMNS.format(uuid="uuid", serial="BIGSERIAL"),
    f"CREATE INDEX IF NOT EXISTS {WORK_TABLE}_ready ON {WORK_TABLE} (ready_at, seq)",
    f"CREATE INDEX IF NOT EXISTS {WORK_TABLE}_user ON {WORK_TABLE} (user_id, admitted)",
    # queues made before executions could wait for signals
    f"ALTER TABLE {WORK_TABLE} ADD COLUMN IF NOT EXISTS waiting BOOLEAN NOT NULL DEFAULT FALSE",
]

SQLITE_DDL = [
    f"CREATE TABLE IF NOT EXISTS {WORK_TABLE} " + _COLUMNS.format(uuid="TEXT", serial="INTEGER"),
    f"CREATE INDEX IF NOT EXISTS {WORK_TABLE}_ready ON {WORK_TABLE} (ready_at, seq)",
    f"CREATE INDEX IF NOT EXISTS {WORK_TABLE}_user ON {WORK_TABLE} (user_id, admitted)",
]

_ADMIT = f"""
UPDATE {WORK_TABLE} SET admitted = TRUE WHERE execution_id IN (
  SELECT execution_id FROM (
    SELECT q.execution_id, q.seq,
           row_number() OVER (PARTITION BY q.user_id ORDER BY q.seq) AS place,
           COALESCE(r.running, 0) AS running
    FROM {WORK_TABLE} q
    LEFT JOIN (SELECT user_id, count(*) AS running FROM {WORK_TABLE}
               WHERE admitted AND NOT waiting GROUP BY user_id) r ON r.user_id = q.user_id
    WHERE NOT q.admitted AND NOT q.cancel_requested
  ) c
  WHERE c.place + c.running <= {{p}}
  ORDER BY c.place, c.seq LIMIT {{p}}
)"""

_PICK = f"""
SELECT execution_id, lease_owner, ready_at, seq FROM {WORK_TABLE}
WHERE (admitted OR cancel_requested) AND ready_at <= {{p}}
  AND (lease_owner IS NULL OR lease_expires_at < {{p}})
ORDER BY ready_at, seq LIMIT {{p}}"""


def _fill(template: str, *names: str) -> str:
    """The template with its placeholders, in order, replaced by these plpgsql names."""
    text = template.format(p="%s")
    for name in names:
        text = text.replace("%s", name, 1)
    return text


def claim_ddl() -> str:
    """`agent_ledger_claim`: admit waiting executions within each user's limit, then lease
    the next ready ones, in one statement: every worker claims on every wake-up, so its
    round trips add up. Admission and picking are the SQLite claim's statements."""
    return sql_file(
        __package__,
        "agent_ledger_claim.sql",
        admission_lock=_ADMISSION_LOCK,
        admit=_fill(_ADMIT, "per_user", "wanted"),
        pick=_fill(_PICK, "now_", "now_", "wanted"),
        work_table=WORK_TABLE,
    )


# Rows that a write of this worker has locked are skipped, not waited for: that write may
# be waiting for one this renewal locked (a deadlock, broken only after deadlock_timeout,
# with the events table locked all along). A skipped row keeps its lease until the next
# renewal; what is held, and asked to cancel, is read from the statement's snapshot.
_RENEW = f"""
WITH renewed AS (
  UPDATE {WORK_TABLE} AS w SET lease_expires_at = %s
  FROM (SELECT execution_id FROM {WORK_TABLE}
        WHERE execution_id = ANY(%b) AND lease_owner = %s FOR UPDATE SKIP LOCKED) AS free
  WHERE w.execution_id = free.execution_id
  RETURNING w.execution_id)
SELECT execution_id, cancel_requested FROM {WORK_TABLE}
WHERE execution_id = ANY(%b) AND lease_owner = %s"""


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class PostgresWorkRecorder(PostgresStoreRecorder):
    """The PostgreSQL recorder, plus work-queue changes in the same transaction.

    Each write is one call of `agent_ledger_append` (see `work_append_sql`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.extend(SQL(s).format() for s in POSTGRES_DDL)
        self.sql_create_statements.append(SQL(claim_ddl()).format())
        events_table = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        ddl = append_ddl(
            work_table=WORK_TABLE,
            work_channel=WORK_CHANNEL,
            lease_lost=LEASE_LOST,
            events_table=events_table.as_string(None),
            events_channel=self.channel_name,
            lock_timeout=self.datastore.lock_timeout,
        )
        self.sql_create_statements.append(SQL(ddl).format())

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Save the events and the write's work changes (`work=`) in one statement."""
        arguments = append_arguments(kwargs.get("work", ()), stored_events, time.time())
        try:
            with self.datastore.get_connection() as connection, connection.cursor() as cursor:
                cursor.execute(APPEND_CALL, arguments, prepare=True)
                ids = [row["agent_ledger_append"] for row in cursor.fetchall()]
        except PersistenceError as error:
            if LEASE_LOST in str(error):
                raise LeaseLostError() from error
            raise
        return ids if stored_events else None


def _reschedule(p: str, release: bool) -> str:
    let_go = ", lease_owner = NULL, lease_expires_at = NULL" if release else ""
    return f"UPDATE {WORK_TABLE} SET ready_at = {p}{let_go} WHERE execution_id = {p}"


def _wake(p: str) -> str:
    return (
        f"UPDATE {WORK_TABLE} SET ready_at = LEAST(ready_at, {p}), "
        "admitted = admitted AND NOT waiting, waiting = FALSE, "
        f"cancel_requested = cancel_requested OR {p} WHERE execution_id = {p}"
    )


_PARK_SQLITE = (
    f"UPDATE {WORK_TABLE} SET ready_at = ?, waiting = TRUE, lease_owner = NULL, "
    "lease_expires_at = NULL WHERE execution_id = ?"
)


class SQLiteWorkRecorder(SQLiteApplicationRecorder):
    """The library's SQLite recorder, plus work-queue changes in the same transaction."""

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *SQLITE_DDL]

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"PRAGMA table_info({WORK_TABLE})")
            if "waiting" not in {row["name"] for row in cursor.fetchall()}:
                # a queue made before executions could wait for signals
                cursor.execute(
                    f"ALTER TABLE {WORK_TABLE} ADD COLUMN waiting BOOLEAN NOT NULL DEFAULT FALSE"
                )

    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        now = time.time()
        for change in kwargs.get("work", ()):
            match change:
                case Enqueue(execution_id, user_id):
                    c.execute(
                        f"INSERT OR IGNORE INTO {WORK_TABLE} (execution_id, user_id, ready_at) "
                        "VALUES (?, ?, ?)",
                        (execution_id.hex, user_id, now),
                    )
                case Fence(execution_id, owner):
                    c.execute(
                        f"SELECT 1 FROM {WORK_TABLE} WHERE execution_id = ? AND lease_owner = ?",
                        (execution_id.hex, owner),
                    )
                    if c.fetchone() is None:
                        raise LeaseLostError(execution_id)
                case Reschedule(execution_id, ready_at, release):
                    c.execute(_reschedule("?", release), (_epoch(ready_at), execution_id.hex))
                case Park(execution_id, ready_at):
                    when = PARKED_FOREVER if ready_at is None else _epoch(ready_at)
                    c.execute(_PARK_SQLITE, (when, execution_id.hex))
                case Finish(execution_id):
                    c.execute(
                        f"DELETE FROM {WORK_TABLE} WHERE execution_id = ?", (execution_id.hex,)
                    )
                case Wake(execution_id, cancel):
                    c.execute(_wake("?").replace("LEAST", "MIN"), (now, cancel, execution_id.hex))
        return super()._insert_events(c, stored_events, **kwargs)


CLAIM = (
    "SELECT * FROM agent_ledger_claim(%(owner)s, %(now)s, %(expires)s, %(per_user)s, %(wanted)s)"
)


def to_read(owner: str, claimed: Sequence[Any]) -> list[UUID]:
    """The claimed executions whose history is read right after the claim (by a statement
    of its own, so under a snapshot taken after the claim committed: it sees every write
    the claim saw, a signal's wake-up that made an execution ready, say): all but those
    taken over from another holder."""
    return [row["claimed_id"] for row in claimed if row["previous_owner"] in (None, owner)]


def claim_arguments(owner: str, limit: int, lease_seconds: float, per_user: int) -> dict[str, Any]:
    now = time.time()
    return {
        "owner": owner,
        "now": now,
        "expires": now + lease_seconds,
        "per_user": per_user,
        "wanted": limit,
    }


def claims_of(
    owner: str, claimed: Sequence[Any], histories: dict[UUID, list[StoredEvent]] | None = None
) -> list[Claim]:
    """Claims from the claim's rows, with the histories read with them: a previous owner
    other than `owner` means the execution is taken over, and its history is read again
    later (that holder's last write may have landed since)."""
    claims = []
    for row in claimed:
        execution_id = row["claimed_id"]
        previous = row["previous_owner"] if row["previous_owner"] not in (None, owner) else None
        history = None
        if histories is not None and previous is None:
            history = tuple(histories.get(execution_id, ()))
        claims.append(Claim(execution_id, previous, history))
    return claims


class SqlWorkQueue:
    """Claims, renews and releases leases (PostgreSQL: SKIP LOCKED; SQLite: one writer)."""

    def __init__(
        self,
        recorder: PostgresWorkRecorder | SQLiteWorkRecorder,
        per_user_limit: int,
        histories: HistoriesBySql | None = None,
    ):
        """With `histories` (PostgreSQL), a claim also reads what it claimed."""
        self.recorder = recorder
        self.per_user_limit = per_user_limit
        self.histories = histories
        self.postgres = isinstance(recorder, PostgresWorkRecorder)
        self.p = "%s" if self.postgres else "?"

    def _id(self, execution_id: UUID) -> Any:
        return execution_id if self.postgres else execution_id.hex

    def _uuid(self, value: Any) -> UUID:
        return value if isinstance(value, UUID) else UUID(str(value))

    def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        if limit <= 0:
            return []
        now = time.time()
        recorder = self.recorder
        if isinstance(recorder, PostgresWorkRecorder) and self.histories is not None:
            arguments = claim_arguments(owner, limit, lease_seconds, self.per_user_limit)
            with recorder.datastore.get_connection() as connection:
                claimed = connection.execute(CLAIM, arguments, prepare=True).fetchall()
                ids = to_read(owner, claimed)
                read = (
                    connection.execute(self.histories.statement, {"ids": ids}, prepare=True)
                    if ids
                    else None
                )
                histories = HistoriesBySql.histories_of(read.fetchall() if read else [])
            return claims_of(owner, claimed, histories)
        if isinstance(self.recorder, PostgresWorkRecorder):
            with self.recorder.datastore.get_connection() as connection:
                rows = connection.execute(
                    "SELECT * FROM agent_ledger_claim(%s, %s, %s, %s, %s)",
                    (owner, now, now + lease_seconds, self.per_user_limit, limit),
                    prepare=True,
                ).fetchall()
            picked = [(row["claimed_id"], row["previous_owner"]) for row in rows]
        else:
            picked = self._claim_on_sqlite(owner, limit, now + lease_seconds, now)
        return [
            Claim(self._uuid(execution_id), previous if previous not in (None, owner) else None)
            for execution_id, previous in picked
        ]

    def _claim_on_sqlite(
        self, owner: str, limit: int, expires: float, now: float
    ) -> list[tuple[Any, str | None]]:
        with self.recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(_ADMIT.format(p="?"), (self.per_user_limit, limit))
            cursor.execute(_PICK.format(p="?"), (now, now, limit))
            picked = [(row["execution_id"], row["lease_owner"]) for row in cursor.fetchall()]
            ids = [execution_id for execution_id, _ in picked]
            if ids:
                cursor.execute(
                    f"UPDATE {WORK_TABLE} SET lease_owner = ?, lease_expires_at = ?, "
                    f"waiting = FALSE WHERE execution_id IN ({', '.join('?' * len(ids))})",
                    (owner, expires, *ids),
                )
        return picked

    def renew(self, owner: str, execution_ids: list[UUID], lease_seconds: float) -> Renewal:
        held: set[UUID] = set()
        cancel: set[UUID] = set()
        if not execution_ids:
            return Renewal(frozenset(), frozenset())
        expires = time.time() + lease_seconds
        with self.recorder.datastore.transaction(commit=True) as cursor:
            if self.postgres:
                cursor.execute(_RENEW, (expires, execution_ids, owner, execution_ids, owner))
                found = [(r["execution_id"], r["cancel_requested"]) for r in cursor.fetchall()]
            else:
                found = []
                for execution_id in execution_ids:
                    cursor.execute(
                        f"UPDATE {WORK_TABLE} SET lease_expires_at = ? "
                        "WHERE execution_id = ? AND lease_owner = ? RETURNING cancel_requested",
                        (expires, execution_id.hex, owner),
                    )
                    row = cursor.fetchone()
                    if row is not None:
                        found.append((execution_id, row["cancel_requested"]))
        for execution_id, cancel_requested in found:
            held.add(self._uuid(execution_id))
            if cancel_requested:
                cancel.add(self._uuid(execution_id))
        return Renewal(frozenset(held), frozenset(cancel))

    def release(
        self, owner: str, execution_ids: list[UUID], ready_at: datetime | None = None
    ) -> None:
        p = self.p
        later = "" if ready_at is None else f", ready_at = {p}"
        before = () if ready_at is None else (_epoch(ready_at),)
        with self.recorder.datastore.transaction(commit=True) as cursor:
            for execution_id in execution_ids:
                cursor.execute(
                    f"UPDATE {WORK_TABLE} SET lease_owner = NULL, lease_expires_at = NULL{later} "
                    f"WHERE execution_id = {p} AND lease_owner = {p}",
                    (*before, self._id(execution_id), owner),
                )

    def next_ready_at(self) -> datetime | None:
        with self.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(  # executions parked until a signal have no time to wait for
                f"SELECT min(ready_at) AS ready FROM {WORK_TABLE} WHERE ready_at < {PARKED_FOREVER}"
            )
            row = cursor.fetchone()
        return None if row is None or row["ready"] is None else from_epoch(row["ready"])
