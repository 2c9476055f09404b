"""Why an event was parked, as operators read it: one printable line, no event data."""

from __future__ import annotations

import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.parked import MAX_ERROR_CHARS, describe


def test_a_database_error_is_described_by_the_driver_message_without_the_parameters() -> None:
    driver_error = ValueError('invalid byte sequence for encoding "UTF8": 0x00\nCONTEXT:  $5')
    error = sa.exc.DataError("INSERT INTO t VALUES (%s)", ("secret-input\x00",), driver_error)
    reason = describe(error)
    assert reason == 'ValueError: invalid byte sequence for encoding "UTF8": 0x00 CONTEXT: $5'
    assert "secret-input" not in reason


def test_unprintable_text_is_escaped_and_long_text_bounded() -> None:
    assert describe(KeyError("t\x00\ud800")) == "KeyError: 't\\x00\\ud800'"
    assert describe(ValueError("bad \x00 and \udc80")) == "ValueError: bad \\x00 and \\udc80"
    assert len(describe(ValueError("x" * 5000))) == MAX_ERROR_CHARS
