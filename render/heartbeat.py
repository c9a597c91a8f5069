"""Capacity heartbeats: a renderer that holds a pool's GPU pays for it, busy or idle.

While a renderer holds a GPU, a background thread records a ``CapacityHeld`` every
``interval_s`` covering [last acknowledged end, now). A worker that stops stops paying; one
that renders nothing still pays. The spans are contiguous and never overlap, and their sum
is the time held (from ``start`` to ``close``).

Nothing is lost and nothing doubled, with no spool: a span's ``event_id`` is derived from
(worker id, span start), and a span the ledger may or may not have stored (a send that
failed) is kept in memory and resent verbatim on the next beat, before the rest of the
unacknowledged time goes as one new span from its end. A resend the ledger already holds
is a duplicate, acknowledged without storing. At most one span is ever pending, so the
memory a long outage takes is constant; after it, two records cover the whole gap.

Two sinks, as the renderer's cost events have two transports: straight to the ledger's
database (``LedgerCapacitySink``) or over HTTP to ``POST /v1/capacity`` with an admin key
(``HttpCapacitySink``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Protocol, Self
from uuid import UUID, uuid4, uuid5

import orjson
from sqlalchemy import Engine

from ingest.client import DeliveryFailed, HttpPoster, Rejected
from ledger import capacity
from ledger.actual_costs import MAX_SPAN, CapacityHeld
from ledger.errors import LedgerError
from ledger.pools import POOL_PATTERN

log = logging.getLogger(__name__)

_HEARTBEAT = UUID("0b8f3c1e-5d0a-4c57-9a51-2f6f1f7c9e3d")
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 3600.0


def heartbeat_event_id(worker_id: UUID, starts: datetime) -> UUID:
    """A span's id: the same worker's span from the same instant is the same record."""
    return uuid5(_HEARTBEAT, f"{worker_id}|{starts.astimezone(UTC).isoformat()}")


class CapacitySink(Protocol):
    """Where heartbeats go. ``send`` raises ``DeliveryFailed`` (try again later) or
    ``Rejected`` (the ledger refused it); it returns once the ledger acknowledged."""

    def send(self, records: Sequence[CapacityHeld]) -> None: ...

    def close(self) -> None: ...


@dataclass
class LedgerCapacitySink:
    """In-process: append to the actual-cost log with ``ledger.capacity.record``."""

    engine: Engine

    def send(self, records: Sequence[CapacityHeld]) -> None:
        try:
            capacity.record(self.engine, records)
        except LedgerError as exc:
            raise Rejected(str(exc)) from exc
        except Exception as exc:  # database down, network, pool exhausted: all passing
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        return None


@dataclass
class HttpCapacitySink(HttpPoster):
    """Over HTTP to ``POST /v1/capacity`` (a JSON array), with an admin key."""

    def send(self, records: Sequence[CapacityHeld]) -> None:
        body = orjson.dumps([r.model_dump(mode="json") for r in records])
        self.post("/v1/capacity", body, "application/json")


def steady_clock() -> Callable[[], datetime]:
    """UTC now, read once from the wall clock and then advanced by the monotonic clock: a
    wall clock stepped back (NTP) cannot make a span overlap the one before it."""
    wall, mono = datetime.now(UTC), time.monotonic_ns()

    def now() -> datetime:
        return wall + timedelta(microseconds=(time.monotonic_ns() - mono) // 1000)

    return now


class Heartbeat:
    """Records the capacity a worker holds, every ``interval_s``, from ``start`` to ``close``.

    Use it as a context manager, or ``start()`` then ``close()``. The thread is a daemon
    and stops by itself when ``close`` is called; ``close`` sends a final beat up to now.
    """

    def __init__(
        self,
        sink: CapacitySink,
        pool: str,
        *,
        gpus: Decimal = Decimal(1),
        interval_s: float = 60.0,
        worker_id: UUID | None = None,
        description: str = "",
        clock: Callable[[], datetime] | None = None,
        final_attempts: int = 3,
        retry_s: float = 0.2,
    ) -> None:
        if not re.match(POOL_PATTERN, pool):
            raise ValueError(f"pool {pool!r}: lowercase letters, digits, '_', '.' and '-' only")
        if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
            raise ValueError(f"interval_s must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S}")
        if gpus <= 0:
            raise ValueError("gpus must be above zero")
        self.sink = sink
        self.pool = pool
        self.gpus = gpus
        self.interval_s = interval_s
        self.worker_id = worker_id or uuid4()
        self.description = description or f"heartbeat of worker {self.worker_id}"
        self.final_attempts = max(1, final_attempts)
        self.retry_s = retry_s
        self._clock = clock
        self._now: Callable[[], datetime] = clock or steady_clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acked_until: datetime | None = None
        self._covered_until: datetime | None = None  # the latest beat's "now"
        self._pending: CapacityHeld | None = None
        self._stopped_at: datetime | None = None  # the first close: held no longer
        self.beats = 0  # records acknowledged (accepted or duplicate)
        self.failures = 0  # sends that failed
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        with self._lock:
            if self._acked_until is not None:
                raise RuntimeError("this heartbeat has already started")
            self._now = self._clock or steady_clock()
            self._acked_until = self._covered_until = self._now()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{self.pool}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # a bug must not end the beats: the next one covers the span
                log.exception("capacity heartbeat for pool %s failed", self.pool)

    def close(self, timeout_s: float = 10.0) -> timedelta:
        """Stop the thread, then a final beat up to now (retried ``final_attempts`` times);
        returns the held time left unrecorded (zero unless the ledger stayed away).

        The capacity is held until the first ``close``; calling it again only retries what
        the first could not deliver."""
        with self._lock:
            if self._acked_until is not None and self._stopped_at is None:
                self._stopped_at = self._now()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._acked_until is None:
            return timedelta(0)
        for attempt in range(self.final_attempts):
            if attempt:
                time.sleep(self.retry_s)
            if self.beat():
                break
        left = self.unacknowledged
        if left:
            log.error(
                "%s of capacity held on pool %s not recorded: %s", left, self.pool, self.last_error
            )
        self.sink.close()
        return left

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def acknowledged_until(self) -> datetime | None:
        return self._acked_until

    @property
    def unacknowledged(self) -> timedelta:
        """Held time up to the latest beat that the ledger has not acknowledged yet."""
        with self._lock:
            if self._acked_until is None or self._covered_until is None:
                return timedelta(0)
            return max(self._covered_until - self._acked_until, timedelta(0))

    # -- one beat ----------------------------------------------------------------------

    def beat(self) -> bool:
        """Record [last acknowledged end, now); True once all of it is acknowledged.

        A span whose send failed is resent as it was before anything newer is sent, so
        whichever way the failed send went, the ledger ends up with it exactly once."""
        with self._lock:
            if self._acked_until is None:
                return True
            now = self._held_until()
            self._covered_until = max(now, self._covered_until or now)
            if self._pending is not None:
                if not self._send(self._pending):
                    return False
                self._acked_until = self._pending.ends_at
                self._pending = None
                now = self._held_until()  # the resend took time, which the next span covers
                self._covered_until = max(now, self._covered_until)
            if now <= self._acked_until:
                return True
            # A span past the ledger's longest is cut there; the rest goes next beat.
            ends = min(now, self._acked_until + MAX_SPAN)
            span = CapacityHeld(
                event_id=heartbeat_event_id(self.worker_id, self._acked_until),
                pool=self.pool,
                starts_at=self._acked_until,
                ends_at=ends,
                gpus=self.gpus,
                source="heartbeat",
                description=self.description,
            )
            if not self._send(span):
                self._pending = span
                return False
            self._acked_until = ends
            return ends == now

    def _held_until(self) -> datetime:
        return self._stopped_at or self._now()

    def _send(self, span: CapacityHeld) -> bool:
        try:
            self.sink.send([span])
        except (DeliveryFailed, Rejected) as exc:
            self.failures += 1
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                level = logging.ERROR if isinstance(exc, Rejected) else logging.WARNING
                log.log(level, "capacity heartbeat for pool %s not recorded: %s", self.pool, exc)
            self.last_error = message
            return False
        self.beats += 1
        return True
