"""The monthly job: on the 1st, draft every tenant's invoice for the month just ended.

Drafts are written (PDF, CSV, JSON) to the configured folder or S3 prefix under
``<month>/``, for people to review before ``renderledger invoice finalize``. Finalizing
stays a human decision. A session advisory lock lets only one process run the job.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from ledger.connections import job_lock
from ledger.locks import MONTHLY
from reports import history
from reports.archive_settings import HasArchive
from reports.billing.exports import Exported, export
from reports.billing.lifecycle import draft_all
from reports.billing.months import month, previous_month
from reports.billing.parties import Issuer
from reports.tracing import traced

log = logging.getLogger(__name__)


@traced("invoices.draft_last_month")
def draft_last_month(
    engine: Engine,
    target: str,
    s3: Any = None,
    now: datetime | None = None,
    issuer: Issuer | None = None,
    archive: HasArchive | None = None,
) -> list[Exported] | None:
    """None when another process holds the job; else what was written. The drafts read
    archived history from ``archive``'s Iceberg table when given."""
    period = previous_month((now or datetime.now(UTC)).date().replace(day=1))
    with job_lock(engine, MONTHLY) as raw:
        if raw is None:
            return None
        refused: dict[str, str] = {}
        with history.opened(engine, archive) as past:
            docs = draft_all(raw, period, issuer=issuer, refused=refused, past=past)
        logo = issuer.logo if issuer else None
        written = export(docs, f"{target.rstrip('/')}/{month(period)}", s3, logo=logo)
    log.info("drafted %d invoices for %s into %s", len(docs), month(period), target)
    for tenant, why in sorted(refused.items()):  # one tenant never stops the others
        log.warning("no draft for %s %s: %s", tenant, month(period), why)
    return written
