"""Settings from the environment and a ``.env`` file, in nested groups."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseModel):
    url: str | None = None
    # The role the application runs as: it may INSERT and SELECT events, nothing more.
    app_role: str = "renderledger_app"
    pool_size: int = 8


class IngestSettings(BaseModel):
    max_batch_events: int = 10_000
    # 10,000 events of ~600 bytes with room for attributes.
    max_body_bytes: int = 32 * 1024 * 1024
    import_batch_size: int = 5_000


class CaptionProvider(BaseModel):
    """One OpenAI-compatible chat-completions endpoint, tried in list order."""

    name: str
    base_url: str
    model: str
    sku_prefix: str  # e.g. "llm.gpt-4o-mini": events go to <prefix>.input_token / .output_token
    api_key: str | None = None
    timeout_s: float = 10.0


class CaptionSettings(BaseModel):
    # JSON in RENDERLEDGER_CAPTION__PROVIDERS; empty means the built-in offline rewriter.
    providers: list[CaptionProvider] = []
    retries: int = 2


class RenderSettings(BaseModel):
    bucket: str | None = None  # S3 bucket for images; without one, --out DIR
    ledger_url: str | None = None  # emit over HTTP to this API instead of in-process
    ledger_api_key: str | None = None  # an ingest key for that API
    storage_months: Decimal = Decimal(1)  # how long an image is kept, for GB-month metering
    gpu_sku: str | None = None  # when the GPU's name maps to no known SKU


class ReportsSettings(BaseModel):
    rollup_interval_s: int = 60  # 0 turns the in-process scheduler off
    rollup_chunk_events: int = 1_000_000


class BillingSettings(BaseModel):
    # Where the scheduler writes last month's drafts on the 1st: a folder or s3://bucket/prefix.
    # Unset: <data_dir>/invoices. "off" turns the monthly job off.
    drafts_to: str | None = None


class AlertRule(BaseModel):
    """Thresholds for one tenant and/or use case; unset fields keep the defaults."""

    tenant: str | None = None
    use_case: str | None = None
    relative: float | None = None  # 0.10: a 10 % change in cost per delivered render
    absolute_usd: float | None = None  # and at least this much per render
    z: float | None = None  # and this many spreads from the baseline
    min_renders: int | None = None  # delivered renders needed before judging


class AlertSettings(BaseModel):
    enabled: bool = True  # run detection after every rollup in the API process
    rules: list[AlertRule] = []  # JSON in RENDERLEDGER_ALERTS__RULES
    webhook_url: str | None = None
    webhook_secret: str | None = None  # HMAC-SHA256 key; required with a webhook_url
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 2.0  # doubled after every failed attempt


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
    db: DatabaseSettings = DatabaseSettings()
    ingest: IngestSettings = IngestSettings()
    s3: S3Settings = S3Settings()
    caption: CaptionSettings = CaptionSettings()
    render: RenderSettings = RenderSettings()
    reports: ReportsSettings = ReportsSettings()
    billing: BillingSettings = BillingSettings()
    alerts: AlertSettings = AlertSettings()

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
