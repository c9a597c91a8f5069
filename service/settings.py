"""Settings from the environment and a ``.env`` file, in nested groups.

Each package owns its group (``ledger.settings``, ``render.settings``, ``reports.settings``,
``reports.alerts.config``); this composes them into the one object the face reads.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.settings import DatabaseSettings, IngestSettings
from render.settings import CaptionProvider, CaptionSettings, RenderSettings
from reports.alerts.config import AlertRule, AlertSettings
from reports.archive_settings import ArchiveSettings
from reports.settings import BillingSettings, ReportsSettings

__all__ = [
    "AlertRule",
    "AlertSettings",
    "BillingSettings",
    "CaptionProvider",
    "CaptionSettings",
    "DatabaseSettings",
    "IngestSettings",
    "RenderSettings",
    "ReportsSettings",
    "S3Settings",
    "Settings",
    "get_settings",
]


class S3Settings(BaseModel):
    endpoint_url: str | None = None
    region: str = "us-east-1"


class Settings(BaseSettings):
    """``DATABASE_URL``, ``RENDERLEDGER_DATA_DIR`` and ``S3_ENDPOINT_URL`` keep their short
    names; everything else is ``RENDERLEDGER_<GROUP>__<FIELD>``, e.g.
    ``RENDERLEDGER_INGEST__MAX_BATCH_EVENTS=5000``."""

    model_config = SettingsConfigDict(
        env_prefix="RENDERLEDGER_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    data_dir: Path = Field(
        default=Path(".renderledger"),
        validation_alias=AliasChoices("RENDERLEDGER_DATA_DIR", "data_dir"),
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    s3_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("S3_ENDPOINT_URL", "s3_endpoint_url")
    )
    # "json": structured log lines with the request id (what `serve` and `make run` use).
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    db: DatabaseSettings = DatabaseSettings()
    ingest: IngestSettings = IngestSettings()
    s3: S3Settings = S3Settings()
    caption: CaptionSettings = CaptionSettings()
    render: RenderSettings = RenderSettings()
    reports: ReportsSettings = ReportsSettings()
    billing: BillingSettings = BillingSettings()
    alerts: AlertSettings = AlertSettings()
    archive: ArchiveSettings = ArchiveSettings()

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def invoice_drafts_to(self) -> str | None:
        target = self.billing.drafts_to or str(self.data_dir / "invoices")
        return None if target == "off" else target

    @property
    def effective_s3_endpoint(self) -> str | None:
        return self.s3_endpoint_url or self.s3.endpoint_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
