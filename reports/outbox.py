"""Pushing an outbox table to a webhook: what the alert and the billing webhooks share.

An event is pending until one attempt got a 2xx, or it has used up its attempts. Each call
makes at most one attempt per pending event whose backoff has passed (doubling from
``backoff_s``, an hour at most), and at most ``max_per_tick`` in all, so the scheduler's
tick is the retry loop and nothing here sleeps. Events older than ``max_age_s`` are history,
not news: never pushed.

An attempt is bounded as a whole (connect, send, the full answer) by ``timeout_s``: httpx's
timeouts are per read, which a receiver sending a byte a second never trips, so the request
runs under an asyncio deadline that cancels it. A receiver that times out or cannot be
reached ends the tick; the events behind it wait for the next one. Each attempt is logged
and committed before the next is made.

What is sent (body, headers, signature) is each webhook's own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import psycopg
from sqlalchemy import Engine
from standardwebhooks.webhooks import Webhook

from ledger.connections import connection, job_lock

Request = tuple[bytes, dict[str, str]]
"""A body and its headers, built as the attempt is made: a signature carries its time."""

Row = tuple[Any, ...]


class Policy(Protocol):
    """Where to and how hard: both webhooks' settings dataclasses have these fields."""

    @property
    def url(self) -> str: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def backoff_s(self) -> float: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def max_per_tick(self) -> int: ...
    @property
    def max_age_s(self) -> float: ...


def check_secret(secret: str | None, name: str) -> str:
    """``secret`` if it is a Standard Webhooks secret (``whsec_`` and 24-64 bytes in base64),
    else a ValueError naming ``name`` (never the secret)."""
    expected = "expected whsec_ followed by 24 to 64 bytes in base64"
    if not secret:
        raise ValueError(f"{name}: a webhook needs a signing secret ({expected})")
    if not secret.startswith("whsec_"):
        raise ValueError(f"{name}: not a webhook secret ({expected})")
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"{name}: not valid base64 after whsec_ ({expected})") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"{name}: the key is {len(key)} bytes ({expected})")
    return secret


def signed(secrets: Sequence[str], msg_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers: ``webhook-id`` (the same on every retry, for
    de-duplication), ``webhook-timestamp``, and ``webhook-signature`` (``v1,<base64>`` of
    HMAC-SHA256 over ``id.timestamp.body``) by each secret, space-separated: while one is
    rotated, a receiver holding either verifies."""
    sent = datetime.now(UTC)
    text = body.decode()
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(msg_id, sent, text) for s in secrets),
    }


def backoff(attempts: int, backoff_s: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts before the next."""
    return min(backoff_s * 2 ** (attempts - 1), 3600) if attempts else 0


async def post(
    client: httpx.AsyncClient, url: str, request: Request, timeout_s: float
) -> tuple[int | None, str | None]:
    """(status, error) of one POST, cancelled once ``timeout_s`` has passed."""
    body, headers = request
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(url, content=body, headers=headers)
    except TimeoutError:
        return None, f"no full answer within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return response.status_code, None


@dataclass(frozen=True)
class Outbox:
    """An events table (``event_id`` and ``at`` columns) and its attempts log (``event_id,
    attempt, at, url, status, error, ms``), delivered under the session lock ``lock``;
    ``columns`` of an event are what its request is built from."""

    events: str
    attempts: str
    lock: int
    columns: tuple[str, ...]

    def deliver_pending(
        self,
        engine: Engine,
        policy: Policy,
        request: Callable[[Row], Request],
        now: datetime | None = None,
    ) -> int:
        """Attempt the pending events whose backoff has passed; return how many were attempted.

        Skips (0) while another process delivers, so no event is pushed twice at once.
        """
        now = now or datetime.now(UTC)
        with job_lock(engine, self.lock) as raw:
            if raw is None:
                return 0
            due = self._due(raw, policy, now)
            raw.commit()  # not idle in a transaction while waiting on the receiver
            if not due:
                return 0
            return asyncio.run(self._deliver(raw, policy, request, due))

    def attempts_of(self, engine: Engine, event_id: int) -> list[dict[str, Any]]:
        with connection(engine) as raw:
            rows = raw.execute(
                f"SELECT attempt, at, url, status, error, ms FROM {self.attempts} "
                "WHERE event_id = %s ORDER BY attempt",
                (event_id,),
            ).fetchall()
        keys = ("attempt", "at", "url", "status", "error", "ms")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def _due(
        self, raw: psycopg.Connection[Any], policy: Policy, now: datetime
    ) -> list[tuple[int, int, Row]]:
        """(event id, attempts so far, the event's ``columns``) of what is due, oldest first."""
        columns = ", ".join(f"e.{c}" for c in self.columns)
        query = f"""
            SELECT e.event_id, count(a.attempt_id), max(a.at), {columns}
            FROM {self.events} e LEFT JOIN {self.attempts} a ON a.event_id = e.event_id
            WHERE e.at >= %(oldest)s
            GROUP BY e.event_id
            HAVING count(a.attempt_id) < %(max)s
               AND NOT bool_or(coalesce(a.status BETWEEN 200 AND 299, false))
            ORDER BY e.event_id
        """
        oldest = now - timedelta(seconds=policy.max_age_s)
        rows = raw.execute(query, {"oldest": oldest, "max": policy.max_attempts}).fetchall()
        due = []
        for event_id, attempts, last_at, *event in rows:
            wait = backoff(int(attempts), policy.backoff_s)
            if last_at is None or (now - last_at).total_seconds() >= wait:
                due.append((int(event_id), int(attempts), tuple(event)))
        return due[: policy.max_per_tick]

    async def _deliver(
        self,
        raw: psycopg.Connection[Any],
        policy: Policy,
        request: Callable[[Row], Request],
        due: list[tuple[int, int, Row]],
    ) -> int:
        attempted = 0
        async with httpx.AsyncClient(timeout=policy.timeout_s) as client:
            for event_id, attempts, event in due:
                started = time.perf_counter()
                status, error = await post(client, policy.url, request(event), policy.timeout_s)
                ms = (time.perf_counter() - started) * 1000
                raw.execute(
                    f"INSERT INTO {self.attempts} (event_id, attempt, url, status, error, ms) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (event_id, attempts + 1, policy.url, status, error, ms),
                )
                raw.commit()
                attempted += 1
                if status is None:  # unreachable or too slow: the next would be as well
                    break
        return attempted
