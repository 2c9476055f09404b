"""Instants the API takes: RFC 3339 date-times with a time zone, as its OpenAPI document says.

Left to itself, pydantic also reads numbers as Unix times (`to=0.5`) and takes times
without a zone; both are refused here with a 422 naming the parameter, and so are
instants that only exist in their own zone (`0001-01-01T00:00:00+01:00` is before year 1
in UTC, where comparing it would fail).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):  # a JSON number too
        raise ValueError(
            "expected an RFC 3339 date-time with a time zone, e.g. 2025-06-01T12:00:00Z"
        )
    return value


def _in_utc_range(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is out of range in UTC") from None
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc_range)]
"""A date-time with a time zone, written as RFC 3339 says (`2025-06-01T12:00:00Z`)."""
