"""What text the store can hold: no NUL character and no lone surrogate, anywhere.

PostgreSQL refuses NUL in `text` and `jsonb` and UTF-8 cannot encode a lone surrogate
(U+D800 to U+DFFF), so such a string accepted by the API would fail later, in a reader
that cannot refuse it. Values are checked once, where they enter.
"""

from __future__ import annotations

from typing import Any


class UnstorableTextError(ValueError):
    """A string (or a key) that the store cannot hold; `field` says where it is."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


def text_problem(text: str) -> str | None:
    """Why the store cannot hold `text`, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (U+D800 to U+DFFF), which is not Unicode text"
    return None


def check_storable(value: Any, field: str) -> None:
    """Raise `UnstorableTextError` for the first unstorable string or key in a JSON value.

    Walks iteratively, so that a deeply nested document cannot exhaust the stack.
    """
    pending: list[tuple[Any, str]] = [(value, field)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise UnstorableTextError(where, problem)
        elif isinstance(item, dict):
            for key in item:
                problem = text_problem(key) if isinstance(key, str) else None
                if problem is not None:
                    raise UnstorableTextError(f"a key of {where}", problem)
            # reversed onto the stack: the first offender in document order is the one named
            pending.extend((item[key], f"{where}.{key}") for key in reversed(list(item)))
        elif isinstance(item, list | tuple):
            pending.extend(
                (item[index], f"{where}[{index}]") for index in reversed(range(len(item)))
            )
