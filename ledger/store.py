"""The append-only store: validate, rate and write one batch as one block, serialized."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import psycopg.errors
from sqlalchemy import Engine

from ledger import locks
from ledger.chain import GENESIS, block_hash, row_digest
from ledger.connections import connection
from ledger.copy_rows import CHUNK as _CHUNK
from ledger.copy_rows import FIELDS as _FIELDS
from ledger.copy_rows import SIGNATURE as _SIGNATURE
from ledger.copy_rows import TRAILER as _TRAILER
from ledger.copy_rows import Prepared
from ledger.copy_rows import head as _head
from ledger.copy_rows import int8 as _int8
from ledger.errors import BatchInvalid, BatchTooLarge, EventConflict, FieldError, LedgerError
from ledger.events import CONTENT_VERSION, CostEvent
from ledger.journal import (
    COPY_SQL,
    EVENT_KEY,
    KEYS_SQL,
    EventKey,
    RenderOwner,
    claim_renders,
    stored_hashes,
)
from ledger.price_books import read_price_book, read_version
from ledger.prices import PriceBook, PriceBookFile, PriceVersion, UnpricedSku
from ledger.rating import Rated, Unrateable, rate_all
from ledger.reversals import price_reversals

FOREIGN_RENDER = "this render_id cannot be used; render ids are chosen fresh for each render"


@dataclass(frozen=True, slots=True)
class Receipt:
    accepted: int
    duplicates: int
    first_seq: int | None
    last_seq: int | None
    block_id: int | None


class Ledger:
    """The application service over the events table; one per process, thread-safe."""

    def __init__(self, engine: Engine, *, max_batch_events: int = 10_000) -> None:
        self.engine = engine
        self.max_batch_events = max_batch_events
        self._book: PriceBook | None = None
        self._book_lock = threading.Lock()

    # -- price book -------------------------------------------------------------------

    def price_book(self, *, refresh: bool = False) -> PriceBook:
        with self._book_lock:
            if self._book is None or refresh:
                with connection(self.engine) as raw:
                    self._book = read_price_book(raw)
            return self._book

    def load_prices(self, book: PriceBookFile) -> tuple[PriceVersion, bool]:
        """Store a book as a new version; (version, False) if this very file was loaded before."""
        with connection(self.engine, transaction=True) as raw:
            # The append lock: a new version is ordered with the batches it rates.
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (locks.APPEND,))
            found = raw.execute(
                "SELECT version, source_sha256 FROM price_versions WHERE name = %s", (book.name,)
            ).fetchone()
            if found is not None:
                if found[1] != book.source_sha256:
                    raise LedgerError(
                        f"a price book named {book.name!r} is already loaded with other "
                        "content; give the new version a new name"
                    )
                existing = read_version(raw, book.name)
                assert existing is not None
                return existing, False
            (version,) = raw.execute(
                "INSERT INTO price_versions (name, effective_from, currency, source_sha256, kind) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING version",
                (book.name, book.effective_from, book.currency, book.source_sha256, book.kind),
            ).fetchone() or (0,)
            with raw.cursor() as cur:
                cur.executemany(
                    "INSERT INTO prices (version, sku, unit, unit_price_nanos, description) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [
                        (version, p.sku, p.unit, p.unit_price_nanos, p.description)
                        for p in book.prices
                    ],
                )
        self.price_book(refresh=True)
        prices = {p.sku: p for p in book.prices}
        return PriceVersion(version, book.name, book.effective_from, book.currency, prices), True

    def price_version(self, name: str) -> PriceVersion | None:
        """Any version by name, what-if books included (those never rate events)."""
        with connection(self.engine) as raw:
            return read_version(raw, name)

    # -- the write path ---------------------------------------------------------------

    def append(self, events: Sequence[CostEvent]) -> Receipt:
        """Write a batch all-or-nothing as one block; duplicates are acknowledged, not stored."""
        if len(events) > self.max_batch_events:
            raise BatchTooLarge(len(events), self.max_batch_events)
        if not events:
            return Receipt(0, 0, None, None, None)
        # Ids unique in the batch is enough (keys are per tenant, so this is stricter), and a
        # set of ids allocates no tuples: 10,000 of those woke the cyclic GC on every batch.
        # UUID's __hash__ is Python; its int's is not.
        if len({e.event_id.int for e in events}) == len(events) and not any(
            e.reverses for e in events
        ):
            # Resends are rare: let the unique index find them, then start again the long way.
            try:
                return self._append_new(events)
            except (UnpricedSku, Unrateable):
                pass  # the long way names every unpriced event, not just the first
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != EVENT_KEY:
                    raise
        return self._append_checked(events)

    def _append_new(self, events: Sequence[CostEvent]) -> Receipt:
        """The usual batch, every event new: priced while the COPY streams when the lock is
        free (the server indexes early rows while later ones are priced), before taking it
        when another append holds it (so it is held for the database's part alone)."""
        with connection(self.engine, transaction=True) as raw:
            prepared: Prepared | None = None
            early: PriceBook | None = None
            with raw.pipeline():  # BEGIN and the attempt in one round trip
                attempt = raw.execute("SELECT pg_try_advisory_xact_lock(%s)", (locks.APPEND,))
            if not (attempt.fetchone() or (False,))[0]:
                early = self.price_book()
                prepared = Prepared.rate_now(events, early)
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (locks.APPEND,))
            book, latest = self._under_lock(raw, events)
            if prepared is None or book is not early:  # a price book was loaded meanwhile
                prepared = Prepared.lazily(events, book)
            return _write_block(raw, prepared, events, 0, latest)

    def _append_checked(self, events: Sequence[CostEvent]) -> Receipt:
        """Any batch: resends acknowledged or refused by content, reversals checked."""
        with connection(self.engine, transaction=True) as raw:
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (locks.APPEND,))
            book, latest = self._under_lock(raw, events)
            rated = rate_all(events, book)
            fresh, duplicates = _split_duplicates(rated, {})
            # A resent reversal must count as a duplicate before it is judged as a reversal.
            fresh, stored_dups = _drop_stored(raw, fresh)
            price_reversals(raw, fresh)
            if not fresh:
                return Receipt(0, duplicates + stored_dups, None, None, None)
            rows = Prepared(fresh)
            dups = duplicates + stored_dups
            return _write_block(raw, rows, [r.event for r in fresh], dups, latest)

    def _under_lock(
        self, raw: psycopg.Connection[Any], events: Sequence[CostEvent]
    ) -> tuple[PriceBook, _Latest]:
        """The book in force (reloaded if a version was added since), the renders checked and
        claimed, the tenants known and the last block: what every append asks first under
        the lock, sent as one pipeline, so one round trip."""
        # Each render's first event in the batch, keyed by the uuid's int (hashed in C, where
        # a UUID's __hash__ is Python): reversed, so the first occurrence is the one kept.
        firsts = {e.render_id.int: e for e in reversed(events)}
        with raw.pipeline():
            version = raw.execute(
                "SELECT coalesce(max(version), 0) FROM price_versions WHERE kind = 'cost'"
            )
            last = raw.execute(
                "SELECT block_id, hash, last_seq FROM blocks ORDER BY block_id DESC LIMIT 1"
            )
            raw.execute(
                "INSERT INTO tenants (tenant_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (sorted({e.tenant_id for e in events}),),
            )
            # Last: reading its rows is what sends the pipeline, all four statements at once.
            known = claim_renders(
                raw, [RenderOwner(e.render_id, e.tenant_id, e.use_case) for e in firsts.values()]
            )
        _check_render_owners(events, known)
        book = self.price_book()
        latest_version = (version.fetchone() or (0,))[0]
        if latest_version != book.latest_version:
            book = self.price_book(refresh=True)
        return book, last.fetchone()


_Latest = tuple[int, bytes, int] | None
"""The last block's id, hash and last seq; None before the first."""


def _write_block(
    raw: psycopg.Connection[Any],
    rows: Prepared,
    events: Sequence[CostEvent],
    duplicates: int,
    latest: _Latest,
) -> Receipt:
    """COPY the prepared rows (``events`` are the same ones, for counting) as the block after
    ``latest``."""
    block_id, prev_hash, first_seq = 1, GENESIS, 1
    if latest is not None:
        latest_id, latest_hash, latest_last = latest
        block_id, prev_hash, first_seq = latest_id + 1, bytes(latest_hash), latest_last + 1
    digests = []
    tail = _int8(8, block_id)
    buffer = bytearray(_SIGNATURE)
    # Rows are sent in chunks as they are made, so the server indexes early rows while later
    # ones are priced and encoded (when they were not already, waiting for the lock).
    with raw.cursor() as cur, cur.copy(COPY_SQL) as copy:
        for seq, (r, tag, middle) in enumerate(rows, start=first_seq):
            digests.append(row_digest(r.content, seq, r.cost_nanos, r.baseline_cost_nanos, tag))
            buffer += _head(_FIELDS, 8, seq)
            buffer += middle
            buffer += tail
            if len(buffer) > _CHUNK:
                copy.write(buffer)
                buffer = bytearray()
        buffer += _TRAILER
        copy.write(buffer)
    last_seq = first_seq + len(events) - 1
    # The keys, read back from the rows just copied (in the server's cache): the unique
    # index that finds resends, even of pruned events, is event_keys' (migration 0018).
    # Both statements in one round trip; a resend's violation is raised at its end.
    with raw.pipeline():
        raw.execute(KEYS_SQL, (first_seq, last_seq))
        raw.execute(
            "INSERT INTO blocks (block_id, prev_hash, hash, first_seq, last_seq, event_count, "
            "content_version) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                block_id,
                prev_hash,
                block_hash(prev_hash, block_id, digests),
                first_seq,
                last_seq,
                len(events),
                CONTENT_VERSION,
            ),
        )
    return Receipt(len(events), duplicates, first_seq, last_seq, block_id)


def _copy_row(seq: int, r: Rated, block_id: int) -> tuple[Any, ...]:
    """One row of the COPY, in the order of ``journal.WRITTEN``; a tuple, as this is the
    append's hot loop (tests/test_journal.py holds the two orders together)."""
    e = r.event
    return (
        seq,
        e.event_id,
        e.tenant_id,
        e.use_case,
        e.render_id,
        e.stage,  # StrEnum members are str: no .value lookup on the hot path
        e.sku,
        e.quantity,
        e.occurred_at,
        e.cache,
        e.baseline_quantity,
        e.outcome,
        e.reverses,
        e.attributes,  # the connection's jsonb dumper is orjson (see _write_block)
        r.price_version,
        r.unit_price_nanos,
        r.cost_nanos,
        r.baseline_cost_nanos,
        r.currency,
        r.content,
        block_id,
    )


def _split_duplicates(rated: list[Rated], stored: dict[EventKey, bytes]) -> tuple[list[Rated], int]:
    """Split a batch into new events and acknowledged duplicates, or refuse on conflict.

    ``stored`` holds the content hashes already in the ledger for (tenant, id) keys of this
    batch; a key repeated inside the batch is judged against its first occurrence the same way.
    """
    seen: dict[EventKey, bytes] = {}
    fresh: list[Rated] = []
    duplicates = 0
    conflicts: dict[UUID, None] = {}
    for r in rated:
        key = (r.event.tenant_id, r.event.event_id)
        known = stored.get(key) or seen.get(key)
        if known is None:
            seen[key] = r.content
            fresh.append(r)
        elif known == r.content:
            duplicates += 1
        else:
            conflicts[key[1]] = None
    if conflicts:
        raise EventConflict(list(conflicts))
    return fresh, duplicates


def _drop_stored(raw: psycopg.Connection[Any], fresh: list[Rated]) -> tuple[list[Rated], int]:
    stored = stored_hashes(raw, [(r.event.tenant_id, r.event.event_id) for r in fresh])
    for r in fresh:
        found = stored.get((r.event.tenant_id, r.event.event_id))
        # A resend of an event stored under an older canonical form is judged in that form.
        if found is not None and found.content_version != CONTENT_VERSION:
            r.content = r.event.content_hash(found.content_version)
    return _split_duplicates(fresh, {k: bytes(h.content_hash) for k, h in stored.items()})


def _check_render_owners(events: Sequence[CostEvent], known: dict[UUID, RenderOwner]) -> None:
    """A render belongs to the tenant of its first event; another tenant's event on it is
    refused like any invalid event, with a message that does not say the render exists.

    ``known`` are the owners the renders had before this batch (``journal.claim_renders``,
    which claims the new ones under the append lock, so two tenants cannot both claim a new
    render at once): one lookup per render, however many partitions the log has, and still
    there once the render's events are pruned.
    """
    tenants = {e.tenant_id for e in events}
    if len(tenants) != 1 or not all(o.tenant_id in tenants for o in known.values()):
        owners = {render: owner.tenant_id for render, owner in known.items()}
        errors = [
            FieldError(i, "render_id", FOREIGN_RENDER)
            for i, e in enumerate(events)
            if owners.setdefault(e.render_id, e.tenant_id) != e.tenant_id
        ]
        if errors:
            raise BatchInvalid(errors)
