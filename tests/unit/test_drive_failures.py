"""A worker's answer to an execution it could not drive: later and later, then failed."""

from __future__ import annotations

import uuid

from agent_ledger.application.drive_failures import DriveFailures, GiveUp, RetryLater


def test_each_failure_in_a_row_doubles_the_wait_up_to_the_cap_then_gives_up() -> None:
    failures = DriveFailures(first=0.5, cap=3.0, max_tries=5)
    execution = uuid.uuid4()
    verdicts = [failures.failed(execution, store_unavailable=False) for _ in range(5)]
    assert verdicts[:4] == [
        RetryLater(1, 0.5, grew=True),
        RetryLater(2, 1.0, grew=True),
        RetryLater(3, 2.0, grew=True),
        RetryLater(4, 3.0, grew=True),
    ]
    assert verdicts[4] == GiveUp(5)


def test_at_the_cap_the_wait_no_longer_grows_so_it_is_not_logged_again() -> None:
    failures = DriveFailures(first=1.0, cap=2.0, max_tries=100)
    execution = uuid.uuid4()
    grew = [failures.failed(execution, store_unavailable=False) for _ in range(5)]
    assert [v.grew for v in grew if isinstance(v, RetryLater)] == [True, True, False, False, False]


def test_an_execution_is_never_given_up_while_the_store_is_away() -> None:
    failures = DriveFailures(first=0.1, cap=1.0, max_tries=3)
    execution = uuid.uuid4()
    verdicts = [failures.failed(execution, store_unavailable=True) for _ in range(10)]
    assert all(isinstance(v, RetryLater) for v in verdicts)
    assert failures.failed(execution, store_unavailable=False) == GiveUp(11)


def test_a_success_or_giving_up_starts_the_count_again() -> None:
    failures = DriveFailures(first=0.1, cap=1.0, max_tries=3)
    execution = uuid.uuid4()
    failures.failed(execution, store_unavailable=False)
    failures.succeeded(execution)
    assert failures.failed(execution, store_unavailable=False) == RetryLater(1, 0.1, True)
    failures.forget(execution)
    assert failures.failed(execution, store_unavailable=False) == RetryLater(1, 0.1, True)


def test_only_so_many_executions_are_remembered() -> None:
    failures = DriveFailures(remembered=3)
    executions = [uuid.uuid4() for _ in range(5)]
    for execution in executions:
        failures.failed(execution, store_unavailable=False)
    # the oldest were forgotten: they start from one again
    assert failures.failed(executions[0], store_unavailable=False) == RetryLater(1, 0.5, True)
    assert failures.failed(executions[4], store_unavailable=False) == RetryLater(2, 1.0, True)
