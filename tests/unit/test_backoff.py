"""Back-off of loops that outlive store outages: bounded delays, one log line per step."""

from __future__ import annotations

import logging

import pytest
from eventsourcing.persistence import OperationalError

from agent_ledger.application.backoff import Backoff

log = logging.getLogger("tests.backoff")


def test_delays_double_up_to_the_cap_and_start_over_after_a_success() -> None:
    backoff = Backoff("reading", log, first=0.1, cap=1.0)

    delays = [backoff.failed(OperationalError("down")) for _ in range(8)]
    backoff.succeeded()

    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert backoff.failed(OperationalError("down again")) == 0.1


def test_an_outage_is_logged_once_per_step_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff = Backoff("reading", log, first=0.1, cap=1.0)

    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(100):
            backoff.failed(OperationalError("connection refused\nwith details"))
        backoff.succeeded()

    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 6  # 0.1, 0.2, 0.4, 0.8, 1 and the recovery
    assert lines[0] == (
        "reading failed (OperationalError: connection refused); retrying every 0.1s"
    )
    assert lines[4].endswith("retrying every 1s from now on")
    assert lines[5].startswith("reading works again after ")
    assert lines[5].endswith("(100 failed tries)")
    assert all(record.exc_info is None for record in caplog.records)  # an outage: no traceback


def test_an_unexpected_error_logs_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    backoff = Backoff("reading", log, first=0.1, cap=0.2)

    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(5):
            backoff.failed(ValueError("a bug"))

    assert [record.exc_info is not None for record in caplog.records] == [True, False]
