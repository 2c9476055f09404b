"""Passwords never reach output: URLs, free text, log records and the settings' repr."""

from __future__ import annotations

import io
import logging

import pytest

from agent_ledger.infrastructure.redact import RedactingFormatter, mask_url, redact
from agent_ledger.infrastructure.settings import Settings


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:s3cr3t@127.0.0.1:5432/db", "postgresql://u:***@127.0.0.1:5432/db"),
        ("postgresql+psycopg://u:p%40ss@h/db", "postgresql+psycopg://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
        (None, ""),
    ],
)
def test_a_database_url_keeps_everything_but_its_password(url: str | None, masked: str) -> None:
    assert mask_url(url) == masked


def test_free_text_loses_url_passwords_and_password_keywords() -> None:
    text = "at postgresql://u:s3cr3t@h:1/db, or host=h password=s3cr3t user=u; http://h:80/x"
    assert redact(text) == (
        "at postgresql://u:***@h:1/db, or host=h password=*** user=u; http://h:80/x"
    )


def test_a_log_record_and_its_traceback_are_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(logging.Formatter("%(message)s")))
    logger = logging.getLogger("test_redact")
    logger.addHandler(handler)
    try:
        try:
            raise ConnectionError("no server at postgresql://u:s3cr3t@h/db")
        except ConnectionError:
            logger.exception("connecting to %s", "postgresql://u:s3cr3t@h/db")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "s3cr3t" not in written
    assert written.startswith("connecting to postgresql://u:***@h/db\n")
    assert written.endswith("ConnectionError: no server at postgresql://u:***@h/db\n")


def test_the_settings_repr_hides_the_password_and_secrets() -> None:
    settings = Settings(
        database_url="postgresql://u:s3cr3t@h/db", jwt_secret="s3cr3t", cipher_key="s3cr3t"
    )
    assert "s3cr3t" not in repr(settings)
    assert "postgresql://u:***@h/db" in repr(settings)
    assert settings.database_url == "postgresql://u:s3cr3t@h/db"
