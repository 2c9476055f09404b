"""Wiring of the audit trail: the Audit service on the configured store and read database."""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from datetime import UTC
from uuid import UUID

import psycopg
import sqlalchemy as sa
from eventsourcing.persistence import Cipher, Compressor, Notification
from eventsourcing.utils import Environment, resolve_topic

from agent_ledger.application.audit import (
    Audit,
    Unseal,
    Verification,
    unsealer,
    verify_stored_chains,
)
from agent_ledger.application.checkpoints import Checkpoint, CheckpointSigner
from agent_ledger.application.executions import Executions
from agent_ledger.domain.hash_chain import ChainHead, ChainVerdict, ChainVerifier
from agent_ledger.infrastructure.audit.sql import SqlAuditReadLog, SqlCheckpointStore
from agent_ledger.infrastructure.read_models.tables import audit_checkpoints
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import (
    EVENTS_TABLE,
    SQLITE_EVENTS_TABLE,
    event_store_env,
    libpq_dsn,
    open_executions,
    read_model_engine,
)


def checkpoint_signer(settings: Settings) -> CheckpointSigner | None:
    """The signer of the configured key, or None when no key is configured."""
    key = settings.audit_signing_key
    return CheckpointSigner(key) if key else None


def open_audit(settings: Settings, executions: Executions, read_engine: sa.Engine) -> Audit:
    """The Audit service over this process's store and read-model database."""
    return Audit(
        executions,
        SqlAuditReadLog(read_engine),
        SqlCheckpointStore(read_engine),
        checkpoint_signer(settings),
        chain_reader=ChainBySql(executions),
    )


class ChainBySql:
    """One execution's stored events after a version, by the primary key alone.

    Paging by version keeps the scan on (originator_id, originator_version): a condition
    on the notification id makes PostgreSQL walk that index across the whole table.
    """

    def __init__(self, executions: Executions):
        self.datastore = executions.recorder.datastore  # type: ignore[attr-defined]
        self.postgres = hasattr(self.datastore, "schema")

    def __call__(self, execution_id: UUID, after: int, limit: int) -> Sequence[Notification]:
        if self.postgres:
            statement = (
                "SELECT notification_id, originator_id, originator_version, topic, state "
                f"FROM {self.datastore.schema}.{EVENTS_TABLE} WHERE originator_id = %s "
                "AND originator_version > %s ORDER BY originator_version LIMIT %s"
            )
            params: tuple[object, ...] = (execution_id, after, limit)
        else:
            statement = (
                "SELECT rowid AS notification_id, originator_id, originator_version, topic, "
                f"state FROM {SQLITE_EVENTS_TABLE} WHERE originator_id = ? "
                "AND originator_version > ? ORDER BY originator_version LIMIT ?"
            )
            params = (execution_id.hex, after, limit)
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        return [
            Notification(
                id=row["notification_id"],
                originator_id=execution_id,
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in rows
        ]


def execution_heads(executions: Executions) -> dict[UUID, int]:
    """Every execution's newest version, straight from the events table."""
    datastore = executions.recorder.datastore  # type: ignore[attr-defined]
    postgres = hasattr(datastore, "schema")
    table = f"{datastore.schema}.{EVENTS_TABLE}" if postgres else SQLITE_EVENTS_TABLE
    statement = (
        f"SELECT originator_id, max(originator_version) AS version FROM {table} "
        "GROUP BY originator_id"
    )
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(statement)
        rows = cursor.fetchall()
    return {UUID(str(row["originator_id"])): int(row["version"]) for row in rows}


# -- the whole store at once -------------------------------------------------------------------

STORE_PAGE = 10_000
"""Rows per round trip of the server-side cursor that streams the events table."""


def verify_store(settings: Settings, *, workers: int = 2, slices: int = 32) -> list[Verification]:
    """Every execution's chain, verified in `workers` processes (PostgreSQL) or in turn.

    The same verdict as `Audit.verify` per execution, from one streaming scan of the events
    table split into `slices` ranges of execution ids; each chain is held against its newest
    checkpoint, and an execution whose checkpoint remains but whose events are all gone is
    reported too.
    """
    engine = read_model_engine(settings)
    try:
        checkpoints = latest_checkpoints(engine)
        heads = {str(k): (c.version, c.hash) for k, c in checkpoints.items()}
        if settings.uses_postgres:
            verdicts = _verify_slices(settings, heads, workers, slices)
        else:
            verdicts = {str(v.execution_id): v.verdict for v in _verify_in_turn(settings, engine)}
    finally:
        engine.dispose()
    for execution_id, head in heads.items():  # a checkpoint whose events were all deleted
        if execution_id not in verdicts:
            verdicts[execution_id] = ChainVerifier(ChainHead(*head)).verdict()
    signer = checkpoint_signer(settings)
    results = []
    for execution_id, verdict in sorted(verdicts.items()):
        checkpoint = checkpoints.get(UUID(execution_id))
        authentic = None
        if checkpoint is not None and signer is not None:
            authentic = signer.is_authentic(checkpoint)
        results.append(Verification(UUID(execution_id), verdict, checkpoint, authentic))
    return results


def _verify_slices(
    settings: Settings, heads: Mapping[str, tuple[int, str]], workers: int, slices: int
) -> dict[str, ChainVerdict]:
    bounds = [UUID(int=(index << 128) // slices) for index in range(1, slices)]
    ranges = list(zip([None, *bounds], [*bounds, None], strict=True))
    env = event_store_env(settings, create_tables=False)
    dsn, table = libpq_dsn(settings), f"{env.get('POSTGRES_SCHEMA', '') or 'public'}.{EVENTS_TABLE}"
    tasks = [
        (dsn, table, env, low, high, {k: h for k, h in heads.items() if _within(k, low, high)})
        for low, high in ranges
    ]
    verdicts: dict[str, ChainVerdict] = {}
    if workers <= 1:
        for task in tasks:
            verdicts.update(_verify_slice(*task))
        return verdicts
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for found in pool.imap_unordered(_verify_slice_task, tasks):
            verdicts.update(found)
    return verdicts


def _within(execution_id: str, low: UUID | None, high: UUID | None) -> bool:
    value = UUID(execution_id)
    return (low is None or value >= low) and (high is None or value < high)


def _verify_slice_task(
    task: tuple[str, str, dict[str, str], UUID | None, UUID | None, dict[str, tuple[int, str]]],
) -> dict[str, ChainVerdict]:
    return _verify_slice(*task)


def _verify_slice(
    dsn: str,
    table: str,
    env: Mapping[str, str],
    low: UUID | None,
    high: UUID | None,
    heads: Mapping[str, tuple[int, str]],
) -> dict[str, ChainVerdict]:
    """The verdicts of the executions whose ids fall in [low, high), from one ordered scan."""
    conditions = ["TRUE"]
    params: list[UUID] = []
    if low is not None:
        conditions.append("originator_id >= %s")
        params.append(low)
    if high is not None:
        conditions.append("originator_id < %s")
        params.append(high)
    statement = (  # on the primary key (originator_id, originator_version): no sort
        "SELECT originator_id::text AS execution_id, notification_id, originator_version, "
        "topic, state "
        f"FROM {table} WHERE {' AND '.join(conditions)} ORDER BY originator_id, originator_version"
    )
    checkpoints = {k: ChainHead(*head) for k, head in heads.items()}
    with (
        psycopg.connect(dsn) as connection,
        connection.cursor(name="agent_ledger_verify_store", binary=True) as cursor,
    ):
        connection.read_only = True
        cursor.itersize = STORE_PAGE
        cursor.execute(statement.encode(), params)
        return dict(verify_stored_chains(cursor, checkpoints, _unseal(env)))


def _unseal(env: Mapping[str, str]) -> Unseal | None:
    """Decryption and decompression as the store's mapper does them, from its environment."""
    environment = Environment(env=dict(env))
    cipher: Cipher | None = None
    if env.get("CIPHER_KEY") or env.get("CIPHER_TOPIC"):
        topic = env.get("CIPHER_TOPIC") or "eventsourcing.cipher:AESCipher"
        cipher = resolve_topic(topic)(environment)
    compressor: Compressor | None = None
    if env.get("COMPRESSOR_TOPIC"):
        found = resolve_topic(env["COMPRESSOR_TOPIC"])
        compressor = found() if isinstance(found, type) else found
    return unsealer(cipher, compressor)


def latest_checkpoints(engine: sa.Engine) -> dict[UUID, Checkpoint]:
    """Every execution's newest signed checkpoint, in one query."""
    table = audit_checkpoints
    query = sa.select(table).order_by(table.c.execution_id, table.c.version)
    latest: dict[UUID, Checkpoint] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            signed_at = row.signed_at
            if signed_at.tzinfo is None:  # SQLite keeps no zone; checkpoints are signed in UTC
                signed_at = signed_at.replace(tzinfo=UTC)
            latest[row.execution_id] = Checkpoint(
                row.execution_id, row.version, row.hash, signed_at, row.key_id, row.signature
            )
    return latest


def _verify_in_turn(settings: Settings, engine: sa.Engine) -> list[Verification]:
    executions = open_executions(settings)
    try:
        audit = open_audit(settings, executions, engine)
        heads = execution_heads(executions)
        return [audit.verify(execution_id, owner=None) for execution_id in sorted(heads, key=str)]
    finally:
        executions.close()
