"""The producer client: events are fsync'd to a local spool, then delivered, exactly once.

A render is reported done only after its events are durable on local disk. Delivery
(in-process to the store, or over HTTP to the API) happens right away when the ledger is
up and later, with backoff, when it is not; a batch leaves the spool only after the ledger
acknowledged it. A crash between the two makes a resend, and a resend of the same
``event_id``s is a duplicate the ledger acknowledges without storing: never lost, never
doubled.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx
import orjson

from ledger.errors import LedgerError
from ledger.events import CostEvent

if TYPE_CHECKING:  # the store needs the server's libraries; a sender over HTTP does not
    from ledger.store import Ledger

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The ledger could not be reached or refused for a passing reason; try again later."""


class Rejected(Exception):
    """The ledger refused the batch for good (invalid or conflicting); retrying cannot help."""


class Transport(Protocol):
    def send(self, events: Sequence[CostEvent]) -> None: ...


@dataclass
class LedgerTransport:
    """In-process: append straight to the store."""

    ledger: Ledger

    def send(self, events: Sequence[CostEvent]) -> None:
        try:
            self.ledger.append(events)
        except LedgerError as exc:
            raise Rejected(str(exc)) from exc
        except Exception as exc:  # database down, network, pool exhausted: all passing
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc


def transient(status: int) -> bool:
    """408 and 429 ask us to come back later and a 5xx is the ledger's own trouble; any
    other refusal (a wrong key, another tenant's events, an invalid batch) would be refused
    again, so it must not hold up the batches behind it."""
    return status in (408, 429) or status >= 500


@dataclass
class HttpPoster:
    """POSTs bodies to the ledger on one client (one pooled connection) for every batch, so
    a flush of many does not pay a handshake per batch; a transient answer raises
    ``DeliveryFailed`` (retry), any other refusal ``Rejected`` (set aside)."""

    base_url: str
    timeout_s: float = 10.0
    api_key: str | None = None
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    def _http(self) -> httpx.Client:
        if self._client is None or self._client.is_closed:
            headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(
                base_url=self.base_url.rstrip("/"), headers=headers, timeout=self.timeout_s
            )
        return self._client

    def post(self, path: str, body: bytes, content_type: str) -> None:
        try:
            r = self._http().post(path, content=body, headers={"content-type": content_type})
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if r.is_success:
            return
        if transient(r.status_code):
            raise DeliveryFailed(f"HTTP {r.status_code}")
        raise Rejected(f"HTTP {r.status_code}: {r.text[:500]}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass
class HttpTransport(HttpPoster):
    """Over HTTP to ``POST /v1/events`` as NDJSON."""

    def send(self, events: Sequence[CostEvent]) -> None:
        body = b"".join(orjson.dumps(e.model_dump(mode="json")) + b"\n" for e in events)
        self.post("/v1/events", body, "application/x-ndjson")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A directory of NDJSON batches, each written to a temp file, fsync'd and renamed.

    Flushes take an exclusive ``flock`` on ``.lock`` in the directory: one flusher at a time
    across threads and processes (flock belongs to the open file, not the process), so no
    batch is sent twice at once nor unlinked under another flusher's feet.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rejected_dir = self.dir / "rejected"
        self.rejected_dir.mkdir(exist_ok=True)

    def write(self, events: Sequence[CostEvent]) -> Path:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.ndjson"
        tmp = self.dir / f".{name}.tmp"
        data = b"".join(orjson.dumps(e.model_dump(mode="json")) + b"\n" for e in events)
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.dir / name
        tmp.rename(final)
        _fsync_dir(self.dir)
        return final

    def pending(self) -> list[Path]:
        return sorted(self.dir.glob("*.ndjson"))

    def rejected(self) -> list[Path]:
        return sorted(self.rejected_dir.glob("*.ndjson"))

    def read(self, path: Path) -> list[CostEvent]:
        return [
            CostEvent.model_validate_json(line) for line in path.read_bytes().splitlines() if line
        ]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Held until the block ends; a second flusher waits here for the first to finish."""
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # which lets the lock go

    def _set_aside(self, path: Path, reason: str) -> None:
        """Into ``rejected/``, with the ledger's answer beside it for whoever looks."""
        note = self.rejected_dir / f"{path.name}.reason"
        note.write_text(f"{datetime.now(UTC).isoformat()} {reason}\n")
        path.rename(self.rejected_dir / path.name)

    def flush(self, transport: Transport) -> tuple[int, int]:
        """Deliver every pending batch in order; (batches delivered, batches still pending).

        Stops at the first passing failure, so batches keep their order. A batch refused for
        good is moved to ``rejected/`` for a person to look at, and the rest go on. Another
        flusher of the same spool (thread or process) is waited for.
        """
        delivered = 0
        with self._locked():
            for path in self.pending():
                try:
                    transport.send(self.read(path))
                except DeliveryFailed as exc:
                    log.info("ledger unreachable, %s stays spooled: %s", path.name, exc)
                    break
                except Rejected as exc:
                    log.error("ledger rejected %s; moved to rejected/: %s", path.name, exc)
                    self._set_aside(path, str(exc))
                    continue
                path.unlink()
                delivered += 1
            _fsync_dir(self.dir)
            return delivered, len(self.pending())

    def requeue(self) -> int:
        """Put the rejected batches back in line (after fixing a key, say); how many."""
        with self._locked():
            moved = self.rejected()
            for path in moved:
                path.rename(self.dir / path.name)
                (self.rejected_dir / f"{path.name}.reason").unlink(missing_ok=True)
            _fsync_dir(self.dir)
            return len(moved)


class Emitter:
    """Spool first, deliver next; a thread retries with backoff while the ledger is away."""

    def __init__(self, transport: Transport, spool: Spool, *, max_backoff_s: float = 30.0) -> None:
        self.transport = transport
        self.spool = spool
        self.max_backoff_s = max_backoff_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def emit(self, events: Sequence[CostEvent]) -> None:
        """Returns once the events are durable locally; delivery is attempted at once."""
        if not events:
            return
        self.spool.write(events)
        _, left = self.spool.flush(self.transport)
        if left:
            self._ensure_retrying()

    def _ensure_retrying(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._retry, name="spool-retry", daemon=True)
            self._thread.start()
        self._wake.set()

    def _retry(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            self._wake.clear()
            _, left = self.spool.flush(self.transport)
            if not left and not self._wake.is_set():  # set: an emit came in meanwhile
                return
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_backoff_s)

    def close(self, timeout_s: float = 5.0) -> int:
        """Stop retrying (after one last flush); returns how many batches remain spooled."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        left = self.spool.flush(self.transport)[1]
        if isinstance(self.transport, HttpTransport):
            self.transport.close()
        return left
