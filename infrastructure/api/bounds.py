"""The ranges of the numbers the API takes, from the columns that hold them.

A number outside its column's range would fail in the database (a 500) or wait for a
position that can never come; bounded here, it is a 422 naming the parameter.
"""

from __future__ import annotations

INT32_MAX = 2**31 - 1
"""Process versions (`integer` columns)."""

INT64_MAX = 2**63 - 1
"""Store positions and event versions (`bigint` columns)."""
