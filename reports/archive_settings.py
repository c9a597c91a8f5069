"""Settings of the columnar history (issue 16): where the Iceberg table lives, what is old
enough to export, and how much goes into one commit.

``RENDERLEDGER_ARCHIVE__WAREHOUSE`` is a folder or ``s3://bucket/prefix`` (unset:
``<data_dir>/warehouse``); S3 is reached with the same endpoint and region as the rest of
the product (``S3_ENDPOINT_URL``, ``RENDERLEDGER_S3__REGION``) and the standard AWS
credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, a role).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from ledger.journal import LOG


class ArchiveSettings(BaseModel):
    # A folder or s3://bucket/prefix; unset: <data_dir>/warehouse.
    warehouse: str | None = None
    # Sealed blocks are exported once they are this old: late appends land in young blocks,
    # and a reader of the hot tail finds recent events where it expects them.
    lag_s: int = Field(default=3600, ge=0)
    # At most this many events per Iceberg commit (a block is never split, so one larger
    # block is a commit of its own); a kill loses at most one commit's unfinished files.
    commit_events: int = Field(default=500_000, ge=1)
    # How often the scheduler should run the export; 0: never (run `archive export`).
    interval_s: int = Field(default=900, ge=0)
    # Events per partition of the log that `archive prune` creates ahead of the head (the
    # first ones are migration 0018's): weeks of appends, not hours, as a read by render id
    # probes every partition kept.
    partition_events: int = Field(default=5_000_000, ge=1)
    namespace: str = "renderledger"
    table: str = LOG  # the Iceberg table is named after the log it holds


class _S3(Protocol):
    @property
    def region(self) -> str: ...


class HasArchive(Protocol):
    """What the export and the readers need of the composed settings (``service.settings``)."""

    @property
    def archive(self) -> ArchiveSettings: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def effective_s3_endpoint(self) -> str | None: ...

    @property
    def s3(self) -> _S3: ...
