"""The read path's settings groups: the rollup job and monthly invoice drafts."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReportsSettings(BaseModel):
    rollup_interval_s: int = 60  # 0 turns the in-process scheduler off
    rollup_chunk_events: int = 1_000_000
    # Also expose cost per render converted to this currency in /metrics (FX rates needed).
    metrics_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


class BillingSettings(BaseModel):
    # Where the scheduler writes last month's drafts on the 1st: a folder or s3://bucket/prefix.
    # Unset: <data_dir>/invoices. "off" turns the monthly job off.
    drafts_to: str | None = None
