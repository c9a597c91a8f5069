"""Many series as one, so the detector measures thousands of them in one vectorised call.

The detector is vectorised over evaluation times of one series. Series laid end to end,
each shifted ``SPAN`` seconds (whole days, ≈ 2,900 years) after the one before, make one
series whose windows, hours and blocks never reach across from one to the next: evaluating
it at each series' "now" (shifted alike) measures every series at once. A pass uses that
to screen: only a series with something to open or resolve is then judged on its own
(unshifted), which is what names its cause and its change point — a few series, not
thousands, each paying the detector's fixed cost in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from reports.alerts.series import KEYS, Hourly, I, Series, to_hourly, to_renders

SPAN = 86_400 << 20  # whole days (hours and blocks stay aligned), ≈ 2,900 years apart


def _take(h: Hourly, lo: int, hi: int, shift: int) -> Hourly:
    return Hourly(
        h.hour[lo:hi] - shift,
        h.delivered[lo:hi],
        h.failed[lo:hi],
        h.delivered_nanos[lo:hi],
        h.stages[lo:hi],
        h.hits[lo:hi],
        h.lookups[lo:hi],
    )


@dataclass
class Stack:
    keys: list[tuple[str, str, str]]
    series: Series  # every series end to end, shifted
    bounds: tuple[I, I, I]  # where each series starts in renders, hourly and daily (+ end)

    def times(self, now: int) -> I:
        return now + SPAN * np.arange(len(self.keys), dtype=np.int64)

    def one(self, k: int) -> Series:
        """Series ``k`` on its own, at its own times."""
        rb, hb, db = (int(b[k]) for b in self.bounds)
        re, he, de = (int(b[k + 1]) for b in self.bounds)
        shift = k * SPAN
        renders = self.series.renders.take(slice(rb, re))
        renders.at = renders.at - shift
        daily = self.series.daily
        tenant, use_case, currency = self.keys[k]
        return Series(
            tenant,
            use_case,
            currency,
            renders,
            _take(self.series.hourly, hb, he, shift),
            None if daily is None else _take(daily, db, de, shift),
        )


def _grouped(frame: pl.DataFrame, index: pl.DataFrame, time: str) -> tuple[pl.DataFrame, I]:
    """Rows of the stacked series in order, and where each series' rows start."""
    rows = frame.join(index, on=KEYS, how="inner").sort("group", time)
    groups = rows["group"].to_numpy().astype(np.int64)
    bounds = np.searchsorted(groups, np.arange(index.height + 1), side="left")
    return rows, np.asarray(bounds, dtype=np.int64)


def _shift(values: I, rows: pl.DataFrame) -> I:
    return values + SPAN * rows["group"].to_numpy().astype(np.int64)


def stack(renders: pl.DataFrame, hourly: pl.DataFrame, daily: pl.DataFrame) -> Stack:
    """The series of every key in ``renders``, with their hours and day-long blocks."""
    keys = sorted({(str(t), str(u), str(c)) for t, u, c in renders.select(KEYS).unique().rows()})
    index = pl.DataFrame(keys, schema=dict.fromkeys(KEYS, pl.String), orient="row")
    index = index.with_row_index("group")
    r_rows, rb = _grouped(renders, index, "rendered_at")
    h_rows, hb = _grouped(hourly, index, "hour")
    d_rows, db = _grouped(daily, index, "hour")
    r = to_renders(r_rows, ordered=True)
    r.at = _shift(r.at, r_rows)
    h, d = to_hourly(h_rows, ordered=True), to_hourly(d_rows, ordered=True)
    h.hour, d.hour = _shift(h.hour, h_rows), _shift(d.hour, d_rows)
    combined = Series("*", "*", "*", r, h, d)
    return Stack(keys, combined, (rb, hb, db))
