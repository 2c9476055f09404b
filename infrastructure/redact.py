"""Credentials out of what is printed or logged: database URLs with their password masked."""

from __future__ import annotations

import logging
import re

import sqlalchemy as sa

MASK = "***"
# `scheme://user:password@host`
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]*(?=@)")
# libpq's keyword form: `password=...`, quoted or not
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)", re.I)


def mask_url(url: str | None) -> str:
    """`url` with its password replaced by `***` (any scheme; unparsable text is redacted)."""
    if not url:
        return ""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return redact(url)
    if parsed.password is None:
        return redact(url)  # nothing to hide, or a form SQLAlchemy did not see a password in
    return parsed.render_as_string(hide_password=True)


def redact(text: str) -> str:
    """Every URL password and `password=` value in free text (messages, tracebacks) masked."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return _KEYWORD_PASSWORD.sub(lambda m: m["head"] + MASK, text)


class RedactingFormatter(logging.Formatter):
    """Wraps a handler's formatter: its output, tracebacks included, with passwords masked."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def redact_logging(*logger_names: str) -> None:
    """Mask passwords in everything the root logger's (and the named loggers') handlers write."""
    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in logger_names)):
        for handler in logger.handlers:
            if not isinstance(handler.formatter, RedactingFormatter):
                handler.setFormatter(RedactingFormatter(handler.formatter))
