"""The rollup's signed rows of the whole history, read through ``reports.history``.

``signed_frames`` gives the rollup's signed rows (``reports.source.EVENT_SCHEMA``): the
archive's rows through ``signed``, the SQL's rules in Polars (the typed attribute columns were
computed by that SQL's own expressions, and a reversal takes the wall time of the event it
reverses, found in a first pass over the rare archived reversals), then the tail by the
rollup's own SQL reading of PostgreSQL.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ledger.events import Stage
from reports.history import ROLLUP_COLUMNS, History, ahead, archive_tables_in
from reports.source import EVENT_SCHEMA, _counted, read_events_adbc

# Columns the rollup reads as dictionary-encoded (Polars: Categorical): a file's strings are
# a handful of distinct values, decoded once per file instead of once per row.
_DICTIONARY = (
    "tenant_id",
    "use_case",
    "stage",
    "sku",
    "cache",
    "outcome",
    "currency",
    "model",
    "pipeline_version",
    "gpu_type",
    "precision",
)
ROLLUP_SCHEMA: dict[str, Any] = {
    **EVENT_SCHEMA,
    "render_id": pl.Binary,
    **{c: pl.Categorical for c in _DICTIONARY if c in EVENT_SCHEMA},
}
"""The rollup's signed rows as the rebuild aggregates them: ``EVENT_SCHEMA`` with the render
id as its 16 bytes and the repeated strings as categoricals (``signed_frames`` gives them back
as ``EVENT_SCHEMA``)."""


def _tables_as_frames(source: Iterator[pa.Table]) -> Iterator[pl.DataFrame]:
    for data in source:
        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)
        yield frame


def reversal_targets(history: History) -> pl.DataFrame:
    """(tenant_id, event_id) of every event an archived reversal cancels: a few rows, read
    from the files whose null counts say they hold a reversal."""
    from pyiceberg.expressions import AlwaysTrue, NotNull, Reference
    from pyiceberg.io.pyarrow import ArrowScan

    parts = [pl.DataFrame(schema={"tenant_id": pl.String, "reverses": pl.Binary})]
    table, state = history.table, history.archive
    if table is not None and state.snapshot_id is not None:
        scan = table.scan(
            snapshot_id=state.snapshot_id,
            row_filter=NotNull(term=Reference("reverses")),  # prunes files by null counts
            selected_fields=("tenant_id", "reverses"),
        )
        # The filter is applied here, not by pyiceberg: Arrow has no comparison kernel for
        # its uuid type, which its residual filter would need.
        reader = ArrowScan(table.metadata, table.io, scan.projection(), AlwaysTrue())
        for batch in reader.to_record_batches(scan.plan_files()):
            kept = batch.filter(pc.is_valid(batch.column("reverses").storage))
            frame = pl.from_arrow(kept.select(["tenant_id", "reverses"]))
            assert isinstance(frame, pl.DataFrame)
            parts.append(frame.cast({"reverses": pl.Binary}))
    return pl.concat(parts).rename({"reverses": "event_id"}).unique()


def signed_frames(
    history: History, rows: int = 400_000, progress: Callable[[int], None] | None = None
) -> Iterator[pl.DataFrame]:
    """The rollup's signed rows (``EVENT_SCHEMA``) of the whole history, in seq order: what
    the rebuild aggregates (``rollup_frames``), render ids in hex and strings as strings, as
    ``reports.source.read_events_adbc`` reads them from PostgreSQL alone."""
    for frame in rollup_frames(history, rows, progress):
        yield frame.with_columns(pl.col("render_id").bin.encode("hex")).cast(
            EVENT_SCHEMA  # type: ignore[arg-type]
        )


def rollup_frames(
    history: History, rows: int = 400_000, progress: Callable[[int], None] | None = None
) -> Iterator[pl.DataFrame]:
    """The rollup's signed rows (``ROLLUP_SCHEMA``) of the whole history, in seq order: the
    archive's rows a file at a time (``history.archive_tables_in``, read one file ahead) through
    ``signed`` (Polars), then the tail by the rollup's own SQL reading of PostgreSQL
    (``read_events_adbc``, two ranges in flight), which is what a rebuild without an archive
    always did.

    A tail reversal finds the wall time of the event it reverses by a subquery on the log,
    or in ``pruned_walls`` once ``archive prune`` dropped that event's partition."""
    targets = reversal_targets(history)
    columns = ROLLUP_COLUMNS if targets.is_empty() else (*ROLLUP_COLUMNS, "event_id")
    walls: list[pl.DataFrame] = []
    # One file read ahead by pyarrow while the one before is turned into a frame, and that
    # frame ahead of the one being aggregated: three files in memory at most.
    archived = archive_tables_in(history, columns, dictionary=_DICTIONARY, depth=1)
    for frame in ahead(_tables_as_frames(archived)):
        if not targets.is_empty():
            walls.append(
                frame.with_columns(pl.col("tenant_id").cast(pl.String))
                .join(targets, on=["tenant_id", "event_id"], how="semi")
                .select(
                    "tenant_id",
                    pl.col("event_id").alias("reverses"),
                    pl.col("wall_s").alias("reversed_wall"),
                )
            )
        yield _counted(signed(frame, pl.concat(walls) if walls else None))
        if progress:
            progress(int(frame["seq"][-1]))
    lo, hi = history.tail_from, history.head
    ranges = [(a, min(a + rows - 1, hi)) for a in range(lo, hi + 1, rows)]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="history-tail") as pool:
        futures: deque[Future[pl.DataFrame]] = deque()
        for i in range(len(ranges)):
            for a, b in ranges[i : i + 3][len(futures) :]:
                futures.append(
                    pool.submit(read_events_adbc, history.url, a, b, history.role, hex_ids=False)
                )
            frame = futures.popleft().result().cast(ROLLUP_SCHEMA)  # type: ignore[arg-type]
            yield frame
            if progress:
                progress(int(frame["seq"][-1]))


def signed(frame: pl.DataFrame, walls: pl.DataFrame | None = None) -> pl.DataFrame:
    """Log rows (archive columns) as the rollup's signed rows (``ROLLUP_SCHEMA``):
    ``reports.source._SELECT`` in Polars. ``walls``: the ``wall_s`` of reversed events, by
    (tenant_id as a string, reverses)."""
    render = pl.col("stage") == Stage.RENDER.value
    reversal = pl.col("reverses").is_not_null()
    sign = pl.when(reversal).then(-1).otherwise(1).cast(pl.Int64)
    if walls is not None:
        tenant = pl.col("tenant_id").cast(pl.String)
        frame = frame.with_columns(tenant.alias("tenant_key")).join(
            walls.rename({"tenant_id": "tenant_key"}),
            on=["tenant_key", "reverses"],
            how="left",
            maintain_order="left",
        )
        wall = pl.when(reversal).then(pl.col("reversed_wall")).otherwise(pl.col("wall_s"))
    else:
        wall = pl.when(reversal).then(None).otherwise(pl.col("wall_s"))
    at = pl.col("occurred_at").dt.convert_time_zone("UTC")
    return frame.select(
        "seq",
        "tenant_id",
        "use_case",
        pl.col("render_id").cast(pl.Binary),
        "stage",
        "sku",
        pl.col("outcome").cast(pl.String).fill_null(""),
        "currency",
        at.dt.date().alias("day"),
        pl.when(render).then(at.dt.replace_time_zone(None)).alias("at"),
        sign.alias("sign"),
        pl.when(reversal).then(-pl.col("quantity")).otherwise(pl.col("quantity")).alias("quantity"),
        "cost_nanos",
        pl.coalesce("baseline_cost_nanos", "cost_nanos").alias("baseline_nanos"),
        ((pl.col("cache") == "hit").fill_null(False).cast(pl.Int64) * sign).alias("cache_hit"),
        ((pl.col("cache") == "miss").fill_null(False).cast(pl.Int64) * sign).alias("cache_miss"),
        pl.when(~render)
        .then(wall)
        .otherwise(None)
        .fill_null(0)
        .cast(pl.Decimal(38, 9))
        .mul(sign)
        .alias("wall_s"),
        pl.when(render & ~reversal).then(pl.col("latency_ms")).alias("latency_ms"),
        *(
            pl.when(render).then(pl.col(c)).alias(c)
            for c in ("model", "pipeline_version", "gpu_type", "precision")
        ),
        (render & pl.col("latency_ms_unreadable")).cast(pl.Int64).alias("unreadable"),
        (~render & ~reversal & pl.col("wall_s_unreadable")).cast(pl.Int64).alias("unreadable_wall"),
    ).cast(ROLLUP_SCHEMA)  # type: ignore[arg-type]
