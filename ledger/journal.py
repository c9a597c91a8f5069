"""The log's one definition: its columns, how an append writes them, every read of them.

A row of ``cost_events`` is a ``StoredEvent``: the SELECT of whole events and the append's
COPY both take their column lists from its fields, so they cannot drift apart. Narrow
reads return small typed rows whose fields are some of those columns. The two aggregates
the domains write themselves (the rollups' signed rows, a month's billed usage) name the
table as ``LOG`` and its columns as StoredEvent's fields.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, NamedTuple, TypeVar, get_args, get_origin, get_type_hints
from uuid import UUID

import psycopg
from psycopg.rows import RowMaker, class_row, scalar_row
from sqlalchemy import Engine

from ledger.connections import connection

LOG = "cost_events"

# Each column's type on the wire: the append's binary COPY must send exactly these.
Int8 = Annotated[int, "int8"]
Int4 = Annotated[int, "int4"]
Text = Annotated[str, "text"]
Uuid = Annotated[UUID, "uuid"]
Numeric = Annotated[Decimal, "numeric"]
Timestamptz = Annotated[datetime, "timestamptz"]
Jsonb = Annotated[dict[str, Any], "jsonb"]
Bytea = Annotated[bytes, "bytea"]


class StoredEvent(NamedTuple):
    """An event as the ledger holds it: the producer's fields plus position and price.

    A tuple, not a dataclass: ``verify`` makes one per row of the whole log.
    """

    seq: Int8
    event_id: Uuid
    tenant_id: Text
    use_case: Text
    render_id: Uuid
    stage: Text
    sku: Text
    quantity: Numeric
    occurred_at: Timestamptz
    cache: Text | None
    baseline_quantity: Numeric | None
    outcome: Text | None
    reverses: Uuid | None
    attributes: Jsonb
    price_version: Int4
    unit_price_nanos: Numeric
    cost_nanos: Int8
    baseline_cost_nanos: Int8 | None
    currency: Text
    content_hash: Bytea
    block_id: Int8
    recorded_at: Timestamptz  # the server's clock: the one column an append does not write


COLUMNS: tuple[str, ...] = StoredEvent._fields
WRITTEN: tuple[str, ...] = tuple(c for c in COLUMNS if c != "recorded_at")
"""The columns an append writes, in the order of its COPY rows (``ledger.store``)."""


def _wire_type(hint: Any) -> str:
    for t in (hint, *get_args(hint)):  # a nullable column's Annotated sits inside a union
        if get_origin(t) is Annotated:
            return str(t.__metadata__[0])
    raise TypeError(f"no wire type in {hint!r}")


_HINTS = get_type_hints(StoredEvent, include_extras=True)
COPY_TYPES: list[str] = [_wire_type(_HINTS[c]) for c in WRITTEN]
COPY_SQL = f"COPY {LOG} ({', '.join(WRITTEN)}) FROM STDIN (FORMAT BINARY)"

EventKey = tuple[str, UUID]
"""(tenant, event id): ids are unique per tenant (migration 0008), not across tenants."""
KEYS = "event_keys"
"""Every event's key, content hash and block, kept after its partition is pruned: the log is
partitioned by seq (migration 0018) and cannot hold a unique index on the key itself."""
EVENT_KEY = "event_keys_tenant_event"
"""The unique index behind ``EventKey``: a violation of it on append means a resend."""
KEYS_SQL = (
    f"INSERT INTO {KEYS} (tenant_id, event_id, content_hash, block_id, reverses, seq) "
    f"SELECT tenant_id, event_id, content_hash, block_id, reverses, seq FROM {LOG} "
    "WHERE seq BETWEEN %s AND %s"
)
"""The append's second write, in its transaction: the keys of the rows it just copied."""


# Narrow reads: each row a few of the log's columns, filled by name.


class StoredHash(NamedTuple):
    """An event's content hash, in the canonical form its block records."""

    tenant_id: str
    event_id: UUID
    content_hash: bytes
    content_version: int


class RenderOwner(NamedTuple):
    """The tenant and use case of a render's first event: a render belongs to them."""

    render_id: UUID
    tenant_id: str
    use_case: str


class _Reversal(NamedTuple):
    """A stored reversal: the key of the event it cancels."""

    tenant_id: str
    reverses: UUID


_SELECT = f"SELECT {', '.join(COLUMNS)} FROM {LOG}"


def _among(pair: str) -> str:
    """A condition that ``pair`` is one of the keys passed as two arrays (see ``_keys``)."""
    return f"({pair}) IN (SELECT * FROM unnest(%s::text[], %s::uuid[]))"


def _stored(_cursor: Any) -> RowMaker[StoredEvent]:
    # The SELECT lists StoredEvent's own fields in order: a row is the tuple as it comes.
    return StoredEvent._make


def _keys(keys: Sequence[EventKey]) -> tuple[list[str], list[UUID]]:
    return [tenant for tenant, _ in keys], [eid for _, eid in keys]


def _fetch(engine: Engine, where: str, params: tuple[Any, ...]) -> list[StoredEvent]:
    with connection(engine) as raw, raw.cursor(row_factory=_stored) as cur:
        return cur.execute(f"{_SELECT} {where}", params).fetchall()


def read_after(
    engine: Engine, after_seq: int, limit: int, tenant_id: str | None = None
) -> list[StoredEvent]:
    """The next ``limit`` events after a position; a follower that repeats this misses nothing,
    because appends are serialized and ``seq`` is assigned in commit order."""
    if tenant_id is None:
        return _fetch(engine, "WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit))
    return _fetch(
        engine,
        "WHERE seq > %s AND tenant_id = %s ORDER BY seq LIMIT %s",
        (after_seq, tenant_id, limit),
    )


def read_after_kept(
    engine: Engine, after_seq: int, limit: int, tenant_id: str | None = None
) -> tuple[int, list[StoredEvent]]:
    """``pruned_through`` and the next ``limit`` events after ``max(after_seq, it)``, read
    consistently: the lock waits out a prune in progress (its detach waits for us in turn),
    so no range can be dropped between the two reads and missed by a follower."""
    with connection(engine, transaction=True) as raw:
        raw.execute(f"LOCK TABLE {LOG} IN ACCESS SHARE MODE")
        pruned = pruned_through(raw)
        where = "WHERE seq > %s" + (" AND tenant_id = %s" if tenant_id is not None else "")
        params = (max(after_seq, pruned), *((tenant_id,) if tenant_id is not None else ()), limit)
        with raw.cursor(row_factory=_stored) as cur:
            rows = cur.execute(f"{_SELECT} {where} ORDER BY seq LIMIT %s", params).fetchall()
        return pruned, rows


def read_render(engine: Engine, render_id: UUID) -> list[StoredEvent]:
    """A render's events that PostgreSQL still holds (``read_render_kept``: and the rest)."""
    return _fetch(engine, "WHERE render_id = %s ORDER BY seq", (render_id,))


class RenderKept(NamedTuple):
    """A render as PostgreSQL knows it at one moment: its events still held, and where the
    archive holds the others (``reports.archive_events.read_render`` reads them there)."""

    owner: RenderOwner | None
    pruned_through: int
    pruned: list[int]  # the seqs of its pruned events, as prune recorded them
    unrecorded: list[tuple[int, int]]  # pruned ranges with no record of their renders
    kept: list[StoredEvent]


UNRECORDED = (
    "SELECT first_seq, last_seq FROM log_pruned WHERE first_seq NOT IN "
    "(SELECT first_seq FROM pruned_renders_recorded) ORDER BY first_seq"
)
"""The pruned ranges whose renders were not recorded (pruned before migration 0020)."""


def read_render_kept(engine: Engine, render_id: UUID) -> RenderKept:
    """A render's owner, its events still in the log, and the seqs of those pruned, read
    consistently (as ``read_after_kept``: the lock waits out a prune in progress and holds
    off the next, so no event is in both parts or in neither). One round trip."""
    with connection(engine, transaction=True) as raw:
        with raw.pipeline():
            raw.execute(f"LOCK TABLE {LOG} IN ACCESS SHARE MODE")
            owner = raw.cursor(row_factory=class_row(RenderOwner)).execute(
                "SELECT render_id, tenant_id, use_case FROM render_owners WHERE render_id = %s",
                (render_id,),
            )
            through = raw.cursor(row_factory=scalar_row).execute(
                "SELECT coalesce(max(last_seq), 0) FROM log_pruned"
            )
            pruned = raw.cursor(row_factory=scalar_row).execute(
                "SELECT seqs FROM pruned_renders WHERE render_id = %s ORDER BY first_seq",
                (render_id,),
            )
            unrecorded = raw.execute(UNRECORDED)
            kept = raw.cursor(row_factory=_stored).execute(
                f"{_SELECT} WHERE render_id = %s ORDER BY seq", (render_id,)
            )
        return RenderKept(
            owner.fetchone(),
            through.fetchone() or 0,
            [seq for seqs in pruned.fetchall() for seq in seqs],
            [(first, last) for first, last in unrecorded.fetchall()],
            kept.fetchall(),
        )


def stream(raw: psycopg.Connection[Any], after: int = 0) -> Generator[StoredEvent, None, None]:
    """Every event after ``after`` in ``seq`` order through one server-side cursor, so memory
    stays flat.

    Runs in the caller's transaction, inside whatever snapshot it set; close the generator
    before that transaction ends.
    """
    with raw.cursor(name="renderledger_journal", row_factory=_stored) as cur:
        cur.itersize = 20_000
        cur.execute(f"{_SELECT} WHERE seq > %s ORDER BY seq", (after,))
        yield from cur


def events_by_key(
    raw: psycopg.Connection[Any], keys: Sequence[EventKey]
) -> dict[EventKey, StoredEvent]:
    """The stored events of these keys; a key of another tenant's id finds nothing (nor
    does a pruned event's)."""
    # An array, not IN (subquery): the seqs are known before the log is read, so only the
    # partitions holding them are (run-time pruning).
    where = f"seq = ANY(ARRAY(SELECT seq FROM {KEYS} WHERE {_among('tenant_id, event_id')}))"
    with raw.cursor(row_factory=_stored) as cur:
        rows = cur.execute(f"{_SELECT} WHERE {where}", _keys(keys))
        return {(e.tenant_id, e.event_id): e for e in rows}


T = TypeVar("T")


def _typed(raw: psycopg.Connection[Any], row: type[T], sql: str, params: Any) -> list[T]:
    """The rows of a narrow read, each a ``row`` filled by column name."""
    with raw.cursor(row_factory=class_row(row)) as cur:
        return cur.execute(sql, params).fetchall()


def reversed_events(raw: psycopg.Connection[Any], keys: Sequence[EventKey]) -> set[EventKey]:
    """Of these keys, those a stored reversal of the same tenant already cancels (pruned
    reversals included)."""
    sql = (
        f"SELECT tenant_id, reverses FROM {KEYS} "
        f"WHERE reverses IS NOT NULL AND {_among('tenant_id, reverses')}"
    )
    return {(r.tenant_id, r.reverses) for r in _typed(raw, _Reversal, sql, _keys(keys))}


def stored_hashes(
    raw: psycopg.Connection[Any], keys: Sequence[EventKey]
) -> dict[EventKey, StoredHash]:
    """What the idempotency check compares a resend against, for the keys already stored,
    whether their rows are hot or pruned."""
    sql = (
        "SELECT tenant_id, event_id, content_hash, content_version "
        f"FROM {KEYS} JOIN blocks USING (block_id) WHERE {_among('tenant_id, event_id')}"
    )
    return {(h.tenant_id, h.event_id): h for h in _typed(raw, StoredHash, sql, _keys(keys))}


def render_owners(
    raw: psycopg.Connection[Any], render_ids: Sequence[UUID]
) -> dict[UUID, RenderOwner]:
    """The owner of each of these renders the ledger knows (its first event pruned or not)."""
    sql = "SELECT render_id, tenant_id, use_case FROM render_owners WHERE render_id = ANY(%s)"
    return {o.render_id: o for o in _typed(raw, RenderOwner, sql, (list(render_ids),))}


def claim_renders(
    raw: psycopg.Connection[Any], firsts: Sequence[RenderOwner]
) -> dict[UUID, RenderOwner]:
    """Claim each of these renders for the tenant and use case of its first event in a batch,
    unless it has an owner; return the owners it had before (so, the ones to check against).

    One statement, in the append's transaction, under its lock: the SELECT reads the
    snapshot from before the INSERT, so a render claimed here is not among those returned.
    A batch the check then refuses is rolled back with its claims.
    """
    ids = [o.render_id for o in firsts]
    sql = (
        "WITH claimed AS (INSERT INTO render_owners (render_id, tenant_id, use_case) "
        "SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[]) "
        "ON CONFLICT (render_id) DO NOTHING) "
        "SELECT render_id, tenant_id, use_case FROM render_owners WHERE render_id = ANY(%s)"
    )
    params = (ids, [o.tenant_id for o in firsts], [o.use_case for o in firsts], ids)
    return {o.render_id: o for o in _typed(raw, RenderOwner, sql, params)}


def known_keys(raw: psycopg.Connection[Any], keys: Sequence[EventKey]) -> set[EventKey]:
    """Of these keys, those the ledger holds or held (a pruned event's key stays)."""
    sql = f"SELECT tenant_id, event_id FROM {KEYS} WHERE {_among('tenant_id, event_id')}"
    with raw.cursor() as cur:
        return {(t, e) for t, e in cur.execute(sql, _keys(keys)).fetchall()}


def pruned_through(raw: psycopg.Connection[Any]) -> int:
    """The last seq dropped from PostgreSQL by ``archive prune`` (0: none); the rows up to it
    are in the archive only."""
    with raw.cursor(row_factory=scalar_row) as cur:
        last: int | None = cur.execute(
            "SELECT coalesce(max(last_seq), 0) FROM log_pruned"
        ).fetchone()
        return last or 0


def recorded_at(raw: psycopg.Connection[Any], seq: int) -> datetime | None:
    """When the event at ``seq`` was stored, if one is."""
    with raw.cursor(row_factory=scalar_row) as cur:
        at: datetime | None = cur.execute(
            f"SELECT recorded_at FROM {LOG} WHERE seq = %s", (seq,)
        ).fetchone()
        return at


def head(raw: psycopg.Connection[Any]) -> int:
    """The last position in the ledger: every event at or below it is committed."""
    with raw.cursor(row_factory=scalar_row) as cur:
        last: int | None = cur.execute("SELECT coalesce(max(last_seq), 0) FROM blocks").fetchone()
        return last or 0


def last_seq(engine: Engine) -> int:
    with connection(engine) as raw:
        return head(raw)
