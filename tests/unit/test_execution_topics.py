"""Stored topics of the Execution aggregate resolve in a process that has only imported it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent_ledger.application.event_log import topics_by_type
from agent_ledger.domain.executions import Execution

ROOT = Path(__file__).resolve().parents[2]

FRESH_PROCESS = """
import json, sys
from eventsourcing.utils import resolve_topic
import agent_ledger.domain.executions
print(json.dumps({t: resolve_topic(t).__qualname__ for t in json.loads(sys.argv[1])}))
"""


def test_every_stored_topic_resolves_to_its_class_in_a_fresh_process() -> None:
    expected = {str(getattr(cls, "TOPIC")): cls.__qualname__ for cls in _stored_classes()}  # noqa: B009

    ran = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, json.dumps(sorted(expected))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert json.loads(ran.stdout) == expected


def test_events_keep_their_names_and_topics_on_the_aggregate() -> None:
    for wire_type, topic in topics_by_type().items():
        name = topic.removeprefix("agent_ledger.execution.")
        cls = getattr(Execution, name)
        assert cls.__qualname__ == f"Execution.{name}", wire_type
        assert cls.__module__ == "agent_ledger.domain.executions", wire_type


def _stored_classes() -> list[type]:
    """The aggregate, its snapshot and every event the store records."""
    events = [
        getattr(Execution, t.removeprefix("agent_ledger.execution."))
        for t in topics_by_type().values()
    ]
    return [Execution, Execution.Snapshot, *events]
