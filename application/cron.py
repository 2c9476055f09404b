"""Cron expressions in a time zone: when a schedule's ticks fall (croniter, zoneinfo).

Five fields are the classic minute, hour, day of month, month and day of week; six put
seconds first (`*/5 * * * * *`: every five seconds); `@hourly`, `@daily`, `@weekly`,
`@monthly` and `@yearly` name the usual ones. Ticks are computed in the schedule's time zone
(a daily 09:00 stays at 09:00 across daylight-saving changes) and handled as UTC instants.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from croniter import (  # type: ignore[import-untyped]
    CroniterBadDateError,
    CroniterError,
    croniter,
)

ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
MAX_EXPRESSION = 200
_RESOLUTION = timedelta(microseconds=1)


class CronError(ValueError):
    """A cron expression or time zone that cannot be used; says which and why."""

    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field = field
        self.problem = problem


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (`Europe/Paris`, `UTC`), or a `CronError` on `timezone`."""
    if name not in _zone_names():
        raise CronError("timezone", f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Paris)")
    return ZoneInfo(name)


@dataclass(frozen=True)
class Cron:
    """A cron expression in a time zone."""

    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC", *, now: datetime | None = None) -> Cron:
        """Check `expression` (5 or 6 fields, or an alias) and `timezone`; a `CronError`
        naming the field says what is wrong, including an expression that never fires."""
        zone = time_zone(timezone)
        text = " ".join(expression.split())
        fields = text.split(" ")
        if len(text) > MAX_EXPRESSION or not (
            len(fields) in (5, 6) or (len(fields) == 1 and text in ALIASES)
        ):
            raise CronError(
                "cron",
                f"{expression!r} is not a cron expression: give 5 fields (minute hour day "
                "month weekday), 6 with seconds first, or one of " + ", ".join(sorted(ALIASES)),
            )
        cron = cls(text, zone)
        try:
            first = cron.next_after(now or datetime.now(UTC))
        except CroniterError as error:
            raise CronError("cron", f"{expression!r} is not a cron expression: {error}") from None
        if first is None:
            raise CronError("cron", f"{expression!r} never fires")
        return cron

    def _iterator(self, start: datetime) -> croniter:
        return croniter(self.expression, start.astimezone(self.zone), second_at_beginning=True)

    def next_after(self, instant: datetime) -> datetime | None:
        """The first tick after `instant` (None if there is none within 50 years)."""
        try:
            tick: datetime = self._iterator(instant).get_next(datetime)
        except CroniterBadDateError:
            return None
        return tick.astimezone(UTC)

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        """The last tick at or before `instant`."""
        try:
            tick: datetime = self._iterator(instant + _RESOLUTION).get_prev(datetime)
        except CroniterError:
            return None
        return tick.astimezone(UTC)

    def ticks(self, after: datetime, upto: datetime, limit: int) -> list[datetime]:
        """The ticks in (`after`, `upto`], oldest first, `limit` at most."""
        found: list[datetime] = []
        iterator = self._iterator(after)
        while len(found) < limit:
            try:
                tick = iterator.get_next(datetime).astimezone(UTC)
            except CroniterError:
                break
            if tick > upto:
                break
            found.append(tick)
        return found

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` ticks after `after`, in the schedule's time zone."""
        return [
            tick.astimezone(self.zone)
            for tick in self.ticks(after, datetime.max.replace(tzinfo=UTC), count)
        ]
