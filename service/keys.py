"""API keys: made once, shown once, stored as a hash; revoked, never deleted."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine

from ledger.connections import connection
from ledger.events import TENANT_RE

SCOPES = ("ingest", "read", "admin")
PREFIX = "rlk"


class KeyRefused(ValueError):
    """A key that cannot be made as asked."""


@dataclass(frozen=True)
class Principal:
    """Who a request is: a tenant's key (``tenant_id`` set) or an admin key (``None``)."""

    key_id: str
    tenant_id: str | None
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """Every tenant's data: only a key without a tenant. A tenant key stored with the
        admin scope (``create_key`` refuses them now) is held to its tenant's other scopes."""
        return "admin" in self.scopes and self.tenant_id is None

    def has(self, scope: str) -> bool:
        return self.is_admin or (scope != "admin" and scope in self.scopes)

    def can_see(self, tenant_id: str) -> bool:
        return self.is_admin or self.tenant_id == tenant_id


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_key(engine: Engine, tenant: str | None, scopes: list[str], name: str = "") -> str:
    """A new key as ``rlk_<id>_<secret>``; only its hash is kept, so this is the one chance
    to see it."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise KeyRefused(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes)}")
    if tenant is None and "admin" not in scopes:
        raise KeyRefused("a key without --tenant must have the admin scope")
    if tenant is not None and "admin" in scopes:
        raise KeyRefused(
            "the admin scope reaches every tenant, so it is for keys without --tenant; "
            "a tenant's key takes ingest and/or read"
        )
    if tenant is not None and not TENANT_RE.match(tenant):
        raise KeyRefused(f"tenant {tenant!r}: lowercase letters, digits, '_' and '-' only")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with connection(engine, transaction=True) as raw:
        raw.execute(
            "INSERT INTO api_keys (key_id, secret_sha256, tenant_id, scopes, name) "
            "VALUES (%s, %s, %s, %s, %s)",
            (key_id, _digest(secret), tenant, sorted(set(scopes)), name),
        )
    return f"{PREFIX}_{key_id}_{secret}"


def revoke_key(engine: Engine, key_id: str) -> bool:
    """True if a live key was revoked; False if none such (unknown or already revoked)."""
    key_id = key_id.removeprefix(f"{PREFIX}_").split("_")[0]
    with connection(engine, transaction=True) as raw:
        cur = raw.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL",
            (key_id,),
        )
        return cur.rowcount == 1


def authenticate(engine: Engine, presented: str) -> Principal | None:
    """The principal behind a presented key, or None for a malformed, unknown or revoked one."""
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    with connection(engine) as raw:
        row = raw.execute(
            "SELECT secret_sha256, tenant_id, scopes FROM api_keys "
            "WHERE key_id = %s AND revoked_at IS NULL",
            (parts[1],),
        ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), _digest(parts[2])):
        return None
    return Principal(parts[1], row[1], frozenset(row[2]))


def list_keys(engine: Engine) -> list[tuple[str, str | None, list[str], str, str, str | None]]:
    with connection(engine) as raw:
        rows = raw.execute(
            "SELECT key_id, tenant_id, scopes, name, created_at::text, revoked_at::text "
            "FROM api_keys ORDER BY created_at"
        ).fetchall()
    return [tuple(r) for r in rows]
