"""Billing months: their bounds, their parsing, and the UTC window each one bills.

Pure functions (no database), so that the rule "consecutive windows meet exactly" can be
checked over any plan history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from ledger.events import EARLIEST

# The earliest event (2000-01-01 UTC) is still December 1999 west of UTC. The last month
# keeps every computation (next month, a window's end in any zone) far from year 9999.
FIRST_MONTH = date(EARLIEST.year - 1, 12, 1)
LAST_MONTH = date(2999, 12, 1)


class MonthError(ValueError):
    """A month that is malformed or outside the months anything can be billed in."""


@dataclass(frozen=True, slots=True)
class Window:
    """A billing month as UTC instants [start, end); ``timezone`` is its plan's."""

    period: date
    timezone: str
    start: datetime
    end: datetime
    finalized: bool = False  # as a finalized invoice recorded it


def next_month(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def previous_month(period: date) -> date:
    return date(period.year - (period.month == 1), (period.month - 2) % 12 + 1, 1)


def month(period: date) -> str:
    return period.strftime("%Y-%m")


def check_month(day: date) -> date:
    """``day`` itself if billing can reach its month, else a MonthError naming the range."""
    if not FIRST_MONTH <= day.replace(day=1) <= LAST_MONTH:
        raise MonthError(
            f"{day.isoformat()} is outside the billing months "
            f"{month(FIRST_MONTH)} to {month(LAST_MONTH)}"
        )
    return day


def parse_period(text: str) -> date:
    """``2026-10`` → 2026-10-01; anything else is a MonthError naming the format or range."""
    try:
        year, mm = text.split("-")
        if len(year) != 4 or len(mm) != 2 or not (year + mm).isdigit():
            raise ValueError
        period = date(int(year), int(mm), 1)
    except ValueError:
        raise MonthError(f"month: expected YYYY-MM, got {text!r}") from None
    try:
        return check_month(period)
    except MonthError as exc:
        raise MonthError(f"month: {exc}") from None


def midnight(period: date, zone: str) -> datetime:
    """The instant the 1st of ``period`` begins in ``zone``."""
    return datetime(period.year, period.month, 1, tzinfo=ZoneInfo(zone)).astimezone(UTC)


Recorded = Mapping[date, tuple[datetime, datetime]]


def window(period: date, zone_of: Callable[[date], str], recorded: Recorded) -> Window:
    """The instants ``period`` bills, given each month's plan time zone and the windows
    finalized invoices recorded.

    A month begins where its predecessor ends: at the local midnight of the 1st in the
    zone of the month that begins (so a plan's zone change moves the boundary into the new
    zone, never leaving a gap or an overlap). A finalized invoice's window is a fact: it is
    returned as recorded, and its neighbours meet it there even if a plan changed since.
    """
    if period in recorded:
        start, end = recorded[period]
        return Window(period, zone_of(period), start, end, finalized=True)
    following = next_month(period)
    if previous_month(period) in recorded:
        start = recorded[previous_month(period)][1]
    else:
        start = midnight(period, zone_of(period))
    if following in recorded:
        end = recorded[following][0]
    else:
        end = midnight(following, zone_of(following))
    return Window(period, zone_of(period), start, end)


def utc_window(period: date) -> Window:
    return Window(period, "UTC", midnight(period, "UTC"), midnight(next_month(period), "UTC"))


def latest_start(period: date) -> datetime:
    """The last instant any window of ``period`` can begin: midnight of the 1st at UTC−12,
    the westernmost offset (a recorded start is an earlier midnight, so it is earlier)."""
    return midnight(period, "Etc/GMT+12")
