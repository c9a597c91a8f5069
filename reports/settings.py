"""The read path's settings groups: the rollup job and monthly invoice drafts."""

from __future__ import annotations

from pydantic import BaseModel, Field

from reports.billing.parties import Issuer


class ReportsSettings(BaseModel):
    rollup_interval_s: int = 60  # 0 turns the in-process scheduler off
    rollup_chunk_events: int = 1_000_000
    # Also expose cost per render converted to this currency in /metrics (FX rates needed).
    metrics_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


class BillingSettings(BaseModel):
    # Where the scheduler writes last month's drafts on the 1st: a folder or s3://bucket/prefix.
    # Unset: <data_dir>/invoices. "off" turns the monthly job off.
    drafts_to: str | None = None
    # Us, on every invoice: RENDERLEDGER_BILLING__ISSUER__LEGAL_NAME, __ADDRESS (a JSON list
    # of lines), __COUNTRY, __TAX_ID, __EMAIL, __LOGO (a PNG file), __PAYMENT_INSTRUCTIONS.
    # Invoices are not finalized without a legal name.
    issuer: Issuer | None = None
    # Invoice finalized / credit note issued, signed per Standard Webhooks; the secret is
    # ``whsec_<base64>``, and while rotating, the previous one signs beside it.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_previous_secret: str | None = None
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 2.0
    # Where the API is reached from outside: the links in webhooks and documents.
    public_url: str = "http://127.0.0.1:8000"
