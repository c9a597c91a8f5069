"""The hash chain: each committed batch is a block over its rows, linked to the block before."""

from __future__ import annotations

import hashlib
import inspect
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from operator import attrgetter
from typing import Any

import psycopg
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.events import content_hash
from ledger.journal import StoredEvent, pruned_through, stream
from ledger.money import canonical_decimal

GENESIS = bytes(32)
_NO_BASELINE = -(2**63)
_pack = struct.Struct(">qqq").pack


def price_tag(price_version: int, unit_price_nanos: Decimal, currency: str) -> bytes:
    """The pricing part of a row's digest; the same for every event of one SKU and version."""
    return f"{price_version}|{canonical_decimal(unit_price_nanos)}|{currency}|".encode()


def row_digest(
    content: bytes, seq: int, cost_nanos: int, baseline: int | None, tag: bytes
) -> bytes:
    """What a block commits to for one row: the producer's content and how it was priced."""
    return content + _pack(seq, cost_nanos, _NO_BASELINE if baseline is None else baseline) + tag


def block_hash(prev_hash: bytes, block_id: int, digests: list[bytes]) -> bytes:
    h = hashlib.sha256(prev_hash)
    h.update(struct.pack(">qi", block_id, len(digests)))
    # Rows are length-prefixed: the price tag is variable-length text.
    for d in digests:
        h.update(len(d).to_bytes(2, "big"))
        h.update(d)
    return h.digest()


@dataclass(frozen=True, slots=True)
class BrokenBlock:
    block_id: int | None  # None: rows that belong to no block
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    blocks_checked: int
    events_checked: int
    broken: tuple[BrokenBlock, ...] = ()
    first_block: int = 1  # where the rows read start; before: pruned, in the archive only
    first_seq: int = 1

    @property
    def broken_block(self) -> int | None:
        """The first broken block, the one a tamperer would have had to start from."""
        return self.broken[0].block_id if self.broken else None

    @property
    def reason(self) -> str | None:
        return self.broken[0].reason if self.broken else None


# The producer's fields a content hash covers, read off a stored row by the names
# ``content_hash`` takes them under.
_content = attrgetter(*(p for p in inspect.signature(content_hash).parameters if p != "version"))


class _Rows:
    """The log in seq order with one row of look-ahead, so a block can take exactly its own.

    The rows come from PostgreSQL (``journal.stream``) or from anywhere else that holds the
    log's rows, such as the columnar archive (``reports.archive_verify``)."""

    def __init__(self, rows: Iterator[StoredEvent]) -> None:
        self._it = rows
        self.taken = 0
        self.next: StoredEvent | None = next(self._it, None)

    def close(self) -> None:
        """Close the cursor now, inside the snapshot's transaction, not whenever GC runs."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def take_through(self, last_seq: int) -> list[StoredEvent]:
        out = []
        while self.next is not None and self.next.seq <= last_seq:
            out.append(self.next)
            self.taken += 1
            self.next = next(self._it, None)
        return out


def _row_digest(e: StoredEvent, block_id: int, version: int) -> tuple[bytes | None, str | None]:
    if e.block_id != block_id:
        return None, f"event seq {e.seq} names block {e.block_id}"
    try:
        recomputed = content_hash(*_content(e), version=version)
    except (TypeError, ValueError) as exc:  # a stored value no canonical form can spell
        return None, f"event seq {e.seq} ({e.event_id}) cannot be hashed: {exc}"
    if recomputed != bytes(e.content_hash):
        return None, f"event seq {e.seq} ({e.event_id}) does not match its content hash"
    tag = price_tag(e.price_version, e.unit_price_nanos, e.currency)
    return row_digest(recomputed, e.seq, e.cost_nanos, e.baseline_cost_nanos, tag), None


def _check_block(
    rows: list[StoredEvent], block_id: int, first: int, last: int, prev: bytes, version: int
) -> tuple[bytes, str | None]:
    """The recomputed block hash, and the first thing wrong with the block's rows."""
    digests: list[bytes] = []
    problem = None
    by_seq = {row.seq: row for row in rows}
    for seq in range(first, last + 1):
        row = by_seq.get(seq)
        if row is None:
            problem = problem or f"event seq {seq} is missing"
            continue
        digest, wrong = _row_digest(row, block_id, version)
        problem = problem or wrong
        if digest is not None:
            digests.append(digest)
    return block_hash(prev, block_id, digests), problem


def verify(engine: Engine, progress: Callable[[int], None] | None = None) -> VerifyResult:
    """Recompute every content hash and every block hash; name every block that breaks.

    Reads the log once in ``seq`` order (a server-side cursor, so memory stays flat). Each
    block is judged on its own against the stored hash of the block before it, so one bad
    block does not end tamper evidence for everything after it.
    """
    # One snapshot for the blocks and the rows: an append that commits between two reads
    # would otherwise show as rows "in no block", a false alarm on a live ledger.
    with connection(engine) as raw:
        raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        chain = read_chain(raw)
        # Blocks whose rows were pruned are the archive's to judge (reports.archive_verify);
        # the first block kept is still linked to the stored hash of the one before it.
        pruned = pruned_through(raw)
        start = next((i for i, b in enumerate(chain) if b[3] > pruned), len(chain))
        prev = bytes(chain[start - 1][2]) if start else GENESIS
        first = chain[start - 1][4] + 1 if start else 1
        chain = chain[start:]
        broken: list[BrokenBlock] = []
        rows: _Rows | None = None
        try:
            rows = _Rows(stream(raw, first - 1))
            found = _verify(chain, rows, progress, broken, prev=prev, expected_seq=first)
            return replace(found, first_block=start + 1, first_seq=first)
        except psycopg.DataError as exc:
            # A value no client can decode (a timestamp past year 9999, written behind the
            # ledger's back): say so and where, rather than crash.
            after = rows.next.seq if rows is not None and rows.next is not None else 0
            broken.append(
                BrokenBlock(None, f"a row after seq {after} cannot be read ({exc}); not checked on")
            )
            return VerifyResult(False, len(chain), rows.taken if rows else 0, tuple(broken))
        finally:
            if rows is not None:
                rows.close()


def read_chain(raw: psycopg.Connection[Any], through_block: int | None = None) -> list[Any]:
    """The rows of ``blocks`` in order (all, or those up to ``through_block``), in the shape
    ``verify_rows`` takes."""
    return raw.execute(
        "SELECT block_id, prev_hash, hash, first_seq, last_seq, event_count, content_version "
        "FROM blocks WHERE block_id <= %s ORDER BY block_id",
        (2**63 - 1 if through_block is None else through_block,),
    ).fetchall()


def verify_rows(
    chain: Sequence[Any],
    rows: Iterator[StoredEvent],
    progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Judge consecutive blocks (``read_chain``'s rows) against rows read from elsewhere, in
    seq order, by the same rules as ``verify``: every content hash and block hash recomputed,
    every missing, stray or altered row named. The first block is linked to the stored hash
    before it (its own ``prev_hash``); a slice need not start at block 1."""
    taken = _Rows(rows)
    try:
        prev = bytes(chain[0][1]) if chain else GENESIS
        first = chain[0][3] if chain else 1
        return _verify(chain, taken, progress, [], prev=prev, expected_seq=first)
    finally:
        taken.close()


def _verify(
    chain: Sequence[Any],
    rows: _Rows,
    progress: Callable[[int], None] | None,
    broken: list[BrokenBlock],
    *,
    prev: bytes = GENESIS,
    expected_seq: int = 1,
) -> VerifyResult:
    events = 0
    for block_id, prev_hash, stored_hash, first_seq, last_seq, count, version in chain:
        stray = [r.seq for r in rows.take_through(first_seq - 1)]
        if stray:
            broken.append(BrokenBlock(None, f"event seq {stray[0]} is in no block"))
        own = rows.take_through(last_seq)
        problem = None
        if bytes(prev_hash) != prev:
            problem = "its prev_hash does not match the hash of the block before"
        elif first_seq != expected_seq or last_seq - first_seq + 1 != count:
            problem = f"it claims seq {first_seq}..{last_seq}; expected to start at {expected_seq}"
        recomputed, wrong = _check_block(
            own, block_id, first_seq, last_seq, bytes(prev_hash), version
        )
        problem = problem or wrong
        if problem is None and recomputed != bytes(stored_hash):
            problem = "its recomputed hash differs from the stored one"
        if problem:
            broken.append(BrokenBlock(block_id, problem))
        events += len(own)
        prev = bytes(stored_hash)
        expected_seq = last_seq + 1
        if progress:
            progress(count)
    if rows.next is not None:
        broken.append(BrokenBlock(None, f"event seq {rows.next.seq} is in no block"))
    return VerifyResult(not broken, len(chain), events, tuple(broken))
