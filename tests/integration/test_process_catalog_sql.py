"""The SQL process catalog: the latest version is looked up once for many waiting starts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.read_models.tables import metadata

PROCESS = {"name": "one", "steps": [{"id": "a", "type": "agent_task", "agent": "echo"}]}


def test_concurrent_gets_after_the_latest_expires_share_one_lookup(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    metadata.create_all(engine)
    catalog = SqlProcessCatalog(engine, latest_ttl=60)
    registered, _ = catalog.register(PROCESS)
    catalog._latest_seen.clear()  # as when the latest has expired
    lookups: list[str] = []

    def count(*args: Any) -> None:
        lookups.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", count)
    start = threading.Barrier(16)
    found: list[int] = []

    def get() -> None:
        start.wait()
        found.append(catalog.get("one").version)

    threads = [threading.Thread(target=get) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert found == [registered.version] * 16
    assert len(lookups) == 1
    engine.dispose()
