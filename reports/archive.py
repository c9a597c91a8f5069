"""The columnar history: sealed blocks of the log in an Apache Iceberg table.

The table holds every column of the log (``ledger.journal.StoredEvent``), so
``verify`` can recompute content and block hashes from it, plus the attributes the
product reads, typed as the rollup's SQL reads them (``latency_ms``, ``wall_s``, the
pipeline labels), so that engines without PostgreSQL's JSON rules read the same values.
Both the export (``reports.archive_export``) and the hot tail's reader (``reports.history``)
take rows through one SELECT (``select_log``), so archived and hot rows have the same
columns and types by construction.

Here: the columns, reading them out of PostgreSQL, the catalog and the table, and what the
table holds (each export commit's snapshot summary: its seq range, blocks and hashes).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine

from ledger.database import libpq_url
from ledger.journal import LOG
from reports.archive_settings import HasArchive
from reports.source import _READABLE_LATENCY, _WALL

if TYPE_CHECKING:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table

CATALOG = "renderledger"
CATALOG_SCHEMA = "iceberg_catalog"  # migration 0017
PREFIX = "renderledger."
"""Snapshot summary keys of ours: what each commit holds."""


class ArchiveError(Exception):
    """The archive and the chain disagree, or the table is not one of ours."""


# name, Iceberg type name, required, SQL that reads it from the log (aliases ``e``, ``w``).
# Field ids are positions + 1 and never change: a new column goes at the end.
_COLUMNS: tuple[tuple[str, str, bool, str], ...] = (
    ("seq", "long", True, "seq"),
    ("event_id", "uuid", True, "event_id"),
    ("tenant_id", "string", True, "tenant_id"),
    ("use_case", "string", True, "use_case"),
    ("render_id", "uuid", True, "render_id"),
    ("stage", "string", True, "stage"),
    ("sku", "string", True, "sku"),
    # Ingest bounds quantities to 30 digits, 18 places; a wider stored value fails the export.
    ("quantity", "decimal", True, "quantity::text"),
    ("occurred_at", "timestamptz", True, "occurred_at"),
    ("cache", "string", False, "cache"),
    ("baseline_quantity", "decimal", False, "baseline_quantity::text"),
    ("outcome", "string", False, "outcome"),
    ("reverses", "uuid", False, "reverses"),
    # As PostgreSQL prints the JSONB: what a reader parses to the dict the content hash covers.
    ("attributes", "string", True, "attributes::text"),
    ("price_version", "int", True, "price_version"),
    # Exact text: a price may have any number of places, more than a decimal(38, s) holds.
    ("unit_price_nanos", "string", True, "unit_price_nanos::text"),
    ("cost_nanos", "long", True, "cost_nanos"),
    ("baseline_cost_nanos", "long", False, "baseline_cost_nanos"),
    ("currency", "string", True, "currency"),
    ("content_hash", "binary", True, "content_hash"),
    ("block_id", "long", True, "block_id"),
    ("recorded_at", "timestamptz", True, "recorded_at"),
    # The attributes the product reads, as the rollup's SQL reads them (reports/source.py):
    # absent when unreadable, and a flag that says it was there but could not be read.
    ("latency_ms", "double", False, f"CASE WHEN {_READABLE_LATENCY} THEN "
     "(attributes->>'latency_ms')::float8 END"),
    ("latency_ms_unreadable", "boolean", True,
     f"attributes ? 'latency_ms' AND NOT ({_READABLE_LATENCY})"),
    ("wall_s", "wall", False, f"({_WALL})::text"),
    ("wall_s_unreadable", "boolean", True,
     f"coalesce(jsonb_typeof(w) <> 'null' AND {_WALL} IS NULL, false)"),
    ("model", "string", False, "attributes->>'model'"),
    ("pipeline_version", "string", False, "attributes->>'pipeline_version'"),
    ("gpu_type", "string", False, "attributes->>'gpu_type'"),
    ("precision", "string", False, "attributes->>'precision'"),
)  # fmt: skip
COLUMNS: tuple[str, ...] = tuple(c[0] for c in _COLUMNS)
_SQL = {name: sql for name, _, _, sql in _COLUMNS}


def iceberg_schema() -> Schema:
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        BinaryType,
        BooleanType,
        DecimalType,
        DoubleType,
        IntegerType,
        LongType,
        NestedField,
        StringType,
        TimestamptzType,
        UUIDType,
    )

    types: dict[str, Any] = {
        "long": LongType(),
        "int": IntegerType(),
        "uuid": UUIDType(),
        "string": StringType(),
        "decimal": DecimalType(38, 18),
        "wall": DecimalType(38, 9),
        "timestamptz": TimestamptzType(),
        "binary": BinaryType(),
        "double": DoubleType(),
        "boolean": BooleanType(),
    }
    return Schema(
        *(
            NestedField(i + 1, name, types[kind], required=required)
            for i, (name, kind, required, _) in enumerate(_COLUMNS)
        ),
        identifier_field_ids=[1],
    )


def arrow_schema(columns: Sequence[str] = COLUMNS) -> pa.Schema:
    """The Arrow schema of these columns, as both the archive and the hot tail give them."""
    full = iceberg_schema().as_arrow()
    return pa.schema([full.field(c) for c in columns])


def select_log(columns: Sequence[str], lo: int, hi: int) -> str:
    """The log's rows ``lo <= seq <= hi`` in seq order, as the archive holds them."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not archive columns: {sorted(unknown)}")
    cols = ", ".join(f"{_SQL[c]} AS {c}" for c in columns)
    return (
        f"SELECT {cols} FROM (SELECT e.*, e.attributes->'wall_s' AS w FROM {LOG} AS e "
        f"WHERE e.seq BETWEEN {int(lo)} AND {int(hi)}) AS e ORDER BY seq"
    )


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch as PostgreSQL (ADBC) gives it, in the archive's Arrow types. A decimal that
    does not fit its column raises here (Arrow refuses to lose digits)."""
    arrays = []
    for field in schema:
        column = batch.column(field.name)
        if isinstance(column.type, pa.ExtensionType) and not isinstance(
            field.type, pa.ExtensionType
        ):
            column = column.storage
        arrays.append(column if column.type == field.type else pc.cast(column, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def log_reader(
    url: str, role: str | None, columns: Sequence[str], lo: int, hi: int
) -> Iterator[pa.RecordBatch]:
    """Stream rows ``lo..hi`` out of PostgreSQL over a connection of their own (binary COPY
    decoded to Arrow by ADBC, outside the GIL); each batch checked to continue the seq."""
    import adbc_driver_postgresql.dbapi as adbc

    schema = arrow_schema(columns)
    expected = lo
    with adbc.connect(url) as conn, conn.cursor() as cur:
        if role:
            cur.execute(f'SET ROLE "{role}"')
        cur.execute(select_log(columns if "seq" in columns else ("seq", *columns), lo, hi))
        for batch in cur.fetch_record_batch():
            if batch.num_rows:
                first = expected
                expected = check_seq(batch, expected)
                try:
                    yield conform(batch, schema)
                except pa.ArrowInvalid as exc:  # a stored value wider than its column
                    raise ArchiveError(f"seq {first}..{expected - 1}: {exc}") from exc
    if expected != hi + 1:
        raise ArchiveError(f"the log has no event at seq {expected} (reading {lo}..{hi})")


def log_ranges(
    url: str, role: str | None, columns: Sequence[str], lo: int, hi: int, chunk: int = 250_000
) -> Iterator[pa.RecordBatch]:
    """``log_reader`` over ``lo..hi`` in ranges of ``chunk``, two ranges in flight (two
    PostgreSQL backends computing rows while this thread consumes the range before)."""
    ranges = [(a, min(a + chunk - 1, hi)) for a in range(lo, hi + 1, chunk)]

    def read(a: int, b: int) -> list[pa.RecordBatch]:
        return list(log_reader(url, role, columns, a, b))

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="log-ranges") as pool:
        futures: deque[Future[list[pa.RecordBatch]]] = deque()
        for i in range(len(ranges)):
            for a, b in ranges[i : i + 2][len(futures) :]:
                futures.append(pool.submit(read, a, b))
            yield from futures.popleft().result()


def check_seq(batch: pa.RecordBatch, expected: int) -> int:
    """``seq`` is gapless: a batch must hold ``expected, expected + 1, …`` exactly. Returns
    the seq expected after it."""
    seq = batch.column("seq")
    n = batch.num_rows
    first, last = seq[0].as_py(), seq[n - 1].as_py()
    if first != expected or last != expected + n - 1:
        raise ArchiveError(f"expected seq {expected}.., found {first}..{last} in {n} rows")
    if n > 1 and not pc.all(pc.equal(pc.pairwise_diff(seq), 1)).as_py():
        raise ArchiveError(f"seq {first}..{last} is not in order")
    return int(last) + 1


# -- the catalog and the table ---------------------------------------------------------------


def warehouse_of(settings: HasArchive, *, create: bool = False) -> str:
    """The warehouse as a URI: ``s3://…`` as given, a folder as ``file://`` (made if asked)."""
    where = settings.archive.warehouse or str(settings.data_dir / "warehouse")
    if "://" in where:
        return where.rstrip("/")
    path = Path(where).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def roles(engine: Engine) -> tuple[str | None, str]:
    """The role the application runs as (None if the connecting one) and the libpq URL."""
    url = libpq_url(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        current, session = conn.exec_driver_sql("SELECT current_user, session_user").one()
    return (current if current != session else None), url


@contextmanager
def opened_catalog(
    engine: Engine, settings: HasArchive, *, create: bool = False
) -> Iterator[SqlCatalog]:
    """pyiceberg's SQL catalog on the ledger's own database (its tables in
    ``iceberg_catalog``, migration 0017), as the application role; disposed on exit."""
    from pyiceberg.catalog.sql import SqlCatalog

    role, _ = roles(engine)
    options = f"-c search_path={CATALOG_SCHEMA}" + (f" -c role={role}" if role else "")
    uri = engine.url.set(
        drivername="postgresql+psycopg", query={**engine.url.query, "options": options}
    )
    properties = {
        "uri": uri.render_as_string(hide_password=False),
        "warehouse": warehouse_of(settings, create=create),
        "init_catalog_tables": "false",
    }
    if properties["warehouse"].startswith("s3://"):
        properties["s3.region"] = settings.s3.region
        if settings.effective_s3_endpoint:
            properties["s3.endpoint"] = settings.effective_s3_endpoint
    catalog = SqlCatalog(CATALOG, **properties)
    try:
        yield catalog
    finally:
        catalog.engine.dispose()


def identifier(settings: HasArchive) -> tuple[str, str]:
    return settings.archive.namespace, settings.archive.table


def load_table(catalog: SqlCatalog, settings: HasArchive, *, create: bool = False) -> Table | None:
    from pyiceberg.exceptions import (
        NamespaceAlreadyExistsError,
        NoSuchTableError,
        TableAlreadyExistsError,
    )
    from pyiceberg.table.sorting import SortField, SortOrder
    from pyiceberg.transforms import IdentityTransform

    ident = identifier(settings)
    try:
        return catalog.load_table(ident)
    except NoSuchTableError:
        if not create:
            return None
    with suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(ident[0])
    try:
        return catalog.create_table(
            ident,
            schema=iceberg_schema(),
            # Unpartitioned, written in seq order: each file is a seq range, and its column
            # statistics let a reader skip files by seq (exactly) or by time (closely, as
            # occurred_at follows seq but for late events). See DESIGN.md.
            sort_order=SortOrder(SortField(source_id=1, transform=IdentityTransform())),
            properties={
                "write.parquet.compression-codec": "zstd",
                # Files of about 400,000 rows: a reader holds one file's columns at a time.
                "write.target-file-size-bytes": str(128 * 2**20),
                "renderledger.source": LOG,
            },
        )
    except TableAlreadyExistsError:  # another process created it first
        return catalog.load_table(ident)


# -- what the table holds ----------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    """One export commit as its snapshot summary records it."""

    snapshot_id: int
    committed_ms: int
    first_seq: int
    last_seq: int
    first_block: int
    last_block: int
    prev_hash: bytes  # the hash of the block before the first (the chain's link into it)
    last_hash: bytes  # the last block's hash: through the chain, it commits to every block
    blocks_sha256: bytes  # SHA-256 over the hashes of the blocks it holds, in order
    events: int
    records: int  # rows Iceberg says the commit added


@dataclass(frozen=True)
class Archived:
    """The archive as of one snapshot: seq 1..last_seq, blocks 1..last_block."""

    snapshot_id: int | None
    last_seq: int
    last_block: int
    last_hash: bytes | None
    commits: tuple[Commit, ...]


def blocks_digest(hashes: Sequence[bytes]) -> bytes:
    h = hashlib.sha256()
    for block_hash in hashes:
        h.update(block_hash)
    return h.digest()


def _commit(snapshot: Any) -> Commit | None:
    s = snapshot.summary
    if s is None or s[PREFIX + "last-seq"] is None:
        return None
    try:
        return Commit(
            snapshot_id=snapshot.snapshot_id,
            committed_ms=snapshot.timestamp_ms,
            first_seq=int(s[PREFIX + "first-seq"]),
            last_seq=int(s[PREFIX + "last-seq"]),
            first_block=int(s[PREFIX + "first-block"]),
            last_block=int(s[PREFIX + "last-block"]),
            prev_hash=bytes.fromhex(s[PREFIX + "prev-hash"]),
            last_hash=bytes.fromhex(s[PREFIX + "last-hash"]),
            blocks_sha256=bytes.fromhex(s[PREFIX + "blocks-sha256"]),
            events=int(s[PREFIX + "events"]),
            records=int(s["added-records"] or 0),
        )
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"snapshot {snapshot.snapshot_id}: unreadable summary ({exc})") from exc


def recorded_commits(raw: psycopg.Connection[Any]) -> tuple[Commit, ...]:
    """Commits whose snapshots ``archive prune`` expired, as it recorded them."""
    rows = raw.execute(
        "SELECT snapshot_id, committed_ms, first_seq, last_seq, first_block, last_block, "
        "prev_hash, last_hash, blocks_sha256, events, records FROM archive_commits "
        "ORDER BY first_seq"
    ).fetchall()
    return tuple(
        Commit(snapshot, at, first, last, first_block, last_block, bytes(prev), bytes(hash_),
               bytes(digest), events, records)
        for snapshot, at, first, last, first_block, last_block, prev, hash_, digest, events,
        records in rows
    )  # fmt: skip


def archived(
    table: Table | None, snapshot_id: int | None = None, recorded: Sequence[Commit] = ()
) -> Archived:
    """What the table (its current snapshot, or ``snapshot_id``) holds: the resume point.
    ``recorded``: commits whose snapshots were expired (``recorded_commits``)."""
    from pyiceberg.table.snapshots import ancestors_of

    if table is None:
        return Archived(None, 0, 0, None, ())
    snapshot = (
        table.current_snapshot() if snapshot_id is None else table.snapshot_by_id(snapshot_id)
    )
    if snapshot is None:
        return Archived(None, 0, 0, None, ())
    found = [c for s in ancestors_of(snapshot, table.metadata) if (c := _commit(s))]
    if not found:
        raise ArchiveError(f"snapshot {snapshot.snapshot_id} was not written by an export")
    found.reverse()
    # An expired commit's summary lives on in PostgreSQL; the snapshots left continue it.
    first = found[0].first_seq
    found = [c for c in recorded if c.last_seq < first] + found
    last = found[-1]
    return Archived(
        snapshot.snapshot_id, last.last_seq, last.last_block, last.last_hash, tuple(found)
    )
