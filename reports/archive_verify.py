"""``verify`` for the archive: the Parquet rows judged against the chain in PostgreSQL.

Every archived row is turned back into the ``StoredEvent`` PostgreSQL would have returned
(attributes parsed from their JSONB text as psycopg parses them), and the chain's own
``verify_rows`` recomputes every content hash and block hash against the stored ``blocks``:
one altered quantity, cost or attribute in a Parquet file names its block. Each commit's
summary must agree with the blocks it claims (range, link, last hash, digest of the
hashes, row count), and the typed attribute columns must be what the row's own attributes
say, since the rollup reads those rather than the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine

from ledger.chain import BrokenBlock, VerifyResult, read_chain, verify_rows
from ledger.connections import connection
from ledger.journal import StoredEvent
from reports import history
from reports.archive import COLUMNS, Archived, ArchiveError, blocks_digest
from reports.archive_events import range_batches
from reports.archive_settings import HasArchive

_NANO = Decimal("1e-9")
_LABELS = ("model", "pipeline_version", "gpu_type", "precision")
_READ = ("latency_ms", "wall_s", *_LABELS)


def _jsonb_text(value: Any) -> str:
    """A parsed JSON value printed as PostgreSQL prints JSONB (``->>`` of a non-string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(v) for v in value) + "]"
    return (
        "{"
        + ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}: {_jsonb_text(v)}" for k, v in value.items()
        )
        + "}"
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def typed_attributes(attributes: dict[str, Any], text: str) -> dict[str, Any]:
    """The archive's typed attribute columns recomputed from a row's attributes, by the rules
    of ``reports.source``'s SQL (numbers exact, as JSONB keeps them)."""
    if any(isinstance(attributes.get(k), float | dict | list) for k in _READ):
        attributes = json.loads(text, parse_float=Decimal)
    latency: Any = attributes.get("latency_ms")
    wall: Any = attributes.get("wall_s")
    readable_latency = _number(latency) and abs(latency) < 10**15
    readable_wall = _number(wall) and 0 <= wall <= 10**9
    out: dict[str, Any] = {
        "latency_ms": float(latency) if readable_latency else None,
        "latency_ms_unreadable": "latency_ms" in attributes and not readable_latency,
        "wall_s": Decimal(wall).quantize(_NANO, ROUND_HALF_UP) if readable_wall else None,
        "wall_s_unreadable": wall is not None and not readable_wall,
    }
    for label in _LABELS:
        value = attributes.get(label)
        out[label] = value if value is None or isinstance(value, str) else _jsonb_text(value)
    return out


@dataclass(frozen=True)
class Span:
    """A seq range and where ``verify`` read it from."""

    first_seq: int
    last_seq: int
    first_block: int
    last_block: int
    source: str


@dataclass(frozen=True)
class ArchiveVerifyResult:
    ok: bool
    archive: Archived
    rows: VerifyResult
    problems: tuple[str, ...]  # the commits' summaries and the typed columns

    @property
    def events_checked(self) -> int:
        return self.rows.events_checked


def _summaries(state: Archived, chain: list[Any]) -> list[str]:
    by_id = {row[0]: row for row in chain}
    problems: list[str] = []
    for before, c in zip((None, *state.commits), state.commits, strict=False):
        name = f"archive commit {c.snapshot_id} (seq {c.first_seq}..{c.last_seq})"
        found = [by_id.get(b) for b in range(c.first_block, c.last_block + 1)]
        blocks = [b for b in found if b is not None]
        if before is not None and c.first_seq != before.last_seq + 1:
            problems.append(f"{name}: does not continue the commit before (seq {before.last_seq})")
        if len(blocks) != len(found) or not blocks:
            problems.append(
                f"{name}: names blocks {c.first_block}..{c.last_block} not in the chain"
            )
            continue
        first, last = blocks[0], blocks[-1]
        checks = {
            "its seq range differs from its blocks'": (c.first_seq, c.last_seq)
            == (first[3], last[4]),
            "its link (prev-hash) differs from the chain's": c.prev_hash == bytes(first[1]),
            "its last-hash differs from the stored block hash": c.last_hash == bytes(last[2]),
            "its blocks-sha256 differs from the stored block hashes": c.blocks_sha256
            == blocks_digest([bytes(b[2]) for b in blocks]),
            "it added a different number of rows than it holds events": c.records
            == c.events
            == c.last_seq - c.first_seq + 1,
        }
        problems.extend(f"{name}: {what}" for what, ok in checks.items() if not ok)
    return problems


def _stored_events(batches: Iterator[pa.RecordBatch], problems: list[str]) -> Iterator[StoredEvent]:
    typed = [c for c in COLUMNS if c not in StoredEvent._fields]
    for batch in batches:
        for row in batch.to_pylist():
            text = row["attributes"]
            try:
                attributes = json.loads(text)  # as psycopg loads JSONB
                row["unit_price_nanos"] = Decimal(row["unit_price_nanos"])
                expected = typed_attributes(attributes, text)
            except (ValueError, ArithmeticError, TypeError) as exc:  # a file altered by hand
                problems.append(f"event seq {row['seq']}: unreadable in the archive ({exc})")
                continue
            row["attributes"] = attributes
            wrong = [c for c in typed if row[c] != expected[c]]
            if wrong:
                problems.append(
                    f"event seq {row['seq']}: archived {', '.join(wrong)} differ from its "
                    "attributes"
                )
            yield StoredEvent(*(row[f] for f in StoredEvent._fields))


def verify_archive(
    engine: Engine,
    settings: HasArchive,
    progress: Callable[[int], None] | None = None,
    seqs: tuple[int, int] | None = None,
) -> ArchiveVerifyResult | None:
    """Judge the archive's rows against the chain; None when nothing was ever exported.

    With ``seqs`` (first, last), only the rows of the blocks holding that range are read,
    as ``archive prune`` does for the partitions it is about to drop (DESIGN.md says why
    that is enough); every commit's summary is judged either way."""
    with history.opened(engine, settings) as past:
        state = past.archive
        if past.table is None:
            return None
        with connection(engine) as raw:
            chain = read_chain(raw, state.last_block)
        problems = _summaries(state, chain)
        if chain and chain[-1][4] != state.last_seq:
            problems.append(
                f"the archive ends at seq {state.last_seq}, block {state.last_block} ends at "
                f"{chain[-1][4]}"
            )
        judged, batches = chain, history.archive_batches(past, COLUMNS)
        if seqs is not None:  # the blocks that hold any of first..last, whole
            first, last = seqs
            judged = [b for b in chain if b[4] >= first and b[3] <= last]
            if judged and judged[0][3] <= first and judged[-1][4] >= last:
                batches = range_batches(past, COLUMNS, judged[0][3], judged[-1][4])
            else:
                problems.append(f"the archive's blocks do not hold seq {first}..{last}")
                judged, batches = [], iter(())
        try:
            rows = verify_rows(judged, _stored_events(batches, problems), progress)
        except ArchiveError as exc:  # a missing, doubled or misordered file
            rows = VerifyResult(False, len(judged), 0, (BrokenBlock(None, str(exc)),))
        return ArchiveVerifyResult(rows.ok and not problems, state, rows, tuple(problems))


def spans(
    archive: Archived, head: int, head_block: int, hot_seq: int = 1, hot_block: int = 1
) -> list[Span]:
    """Where each range of the log is read from, for ``verify``'s report; rows before
    ``hot_seq`` (block ``hot_block``) were pruned from PostgreSQL."""
    out = []
    if hot_seq > 1:
        out.append(Span(1, hot_seq - 1, 1, hot_block - 1, "archive only (pruned from PostgreSQL)"))
    if archive.last_seq >= hot_seq:
        commits = len(archive.commits)
        out.append(
            Span(
                hot_seq,
                archive.last_seq,
                hot_block,
                archive.last_block,
                f"archive (Iceberg snapshot {archive.snapshot_id}, {commits} commit"
                f"{'s' if commits != 1 else ''}) and PostgreSQL",
            )
        )
    last = max(archive.last_seq, hot_seq - 1)
    if head > last:
        first_block = max(archive.last_block, hot_block - 1) + 1
        out.append(Span(last + 1, head, first_block, head_block, "PostgreSQL only"))
    return out
