"""The hash chain: each committed batch is a block over its rows, linked to the block before."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from ledger.connections import connection
from ledger.events import content_hash
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


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    blocks_checked: int
    events_checked: int
    broken_block: int | None = None
    reason: str | None = None


_EVENTS_SQL = """
SELECT seq, event_id, tenant_id, use_case, render_id, stage, sku, quantity, occurred_at, cache,
       baseline_quantity, outcome, reverses, attributes, price_version, unit_price_nanos,
       cost_nanos, baseline_cost_nanos, currency, content_hash, block_id
FROM cost_events ORDER BY seq
"""


def _rows(engine: Engine) -> Iterator[tuple[Any, ...]]:
    with connection(engine) as raw, raw.cursor(name="renderledger_verify") as cur:
        cur.itersize = 20_000
        cur.execute(_EVENTS_SQL)
        yield from cur


def _check_rows(
    rows: Iterator[tuple[Any, ...]], block_id: int, first: int, last: int, digests: list[bytes]
) -> str | None:
    for seq in range(first, last + 1):
        row = next(rows, None)
        if row is None or row[0] != seq:
            return f"event seq {seq} is missing"
        if row[20] != block_id:
            return f"event seq {seq} names block {row[20]}"
        recomputed = content_hash(*row[1:14])
        if recomputed != bytes(row[19]):
            return f"event seq {seq} ({row[1]}) does not match its content hash"
        tag = price_tag(row[14], row[15], row[18])
        digests.append(row_digest(recomputed, seq, row[16], row[17], tag))
    return None


def verify(engine: Engine, progress: Callable[[int], None] | None = None) -> VerifyResult:
    """Recompute every content hash and every block hash; name the first block that breaks.

    Reads the log once in ``seq`` order (a server-side cursor, so memory stays flat).
    """
    with connection(engine) as raw:
        chain = raw.execute(
            "SELECT block_id, prev_hash, hash, first_seq, last_seq, event_count "
            "FROM blocks ORDER BY block_id"
        ).fetchall()
    rows = _rows(engine)
    prev = GENESIS
    expected_seq = 1
    events = 0
    for n, (block_id, prev_hash, stored_hash, first_seq, last_seq, count) in enumerate(chain):
        problem = None
        if bytes(prev_hash) != prev:
            problem = "its prev_hash does not match the hash of the block before"
        elif first_seq != expected_seq or last_seq - first_seq + 1 != count:
            problem = f"it claims seq {first_seq}..{last_seq}; expected to start at {expected_seq}"
        else:
            digests: list[bytes] = []
            problem = _check_rows(rows, block_id, first_seq, last_seq, digests)
            if problem is None and block_hash(prev, block_id, digests) != bytes(stored_hash):
                problem = "its recomputed hash differs from the stored one"
        if problem:
            return VerifyResult(False, n, events, block_id, problem)
        events += count
        prev = bytes(stored_hash)
        expected_seq = last_seq + 1
        if progress:
            progress(count)
    extra = next(rows, None)
    if extra is not None:
        return VerifyResult(False, len(chain), events, None, f"event seq {extra[0]} is in no block")
    return VerifyResult(True, len(chain), events)
