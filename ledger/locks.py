"""Every PostgreSQL advisory lock key the product takes, in one place.

Advisory keys share one space per database: two jobs that picked the same number by
accident would silently serialize (or skip) each other. Keeping them here, with who takes
each and why, is what makes them provably distinct (tests/test_definitions.py).

Fixed keys are four ASCII letters read as a big-endian int4, so ``pg_locks`` shows
something a person can decode. Keys for one row of many (a tenant, an alert) are
``hashtext('<namespace>:<id>')``: :func:`scoped` builds that text.
"""

from __future__ import annotations

from typing import Final

APPEND: Final = 0x52454E44  # "REND"
"""Transaction lock of every append to the event log (ledger/store.py): positions are
handed out in commit order, so a reader that stops at a position never misses one."""

ROLLUP: Final = 0x524F4C4C  # "ROLL"
"""Session lock of the rollup job (reports/jobs.py): one process moves the checkpoint."""

ALERTS: Final = 0x414C5254  # "ALRT"
"""Session lock of alert detection (reports/alerts/service.py): one detector, so an
anomaly opens one alert, not one per API process."""

WEBHOOKS: Final = 0x57484F4B  # "WHOK"
"""Session lock of webhook delivery (reports/alerts/webhooks.py): one deliverer over all
API processes, so a receiver is not sent the same alert event twice at once."""

MONTHLY: Final = 0x494E5643  # "INVC"
"""Session lock of the monthly draft job (reports/billing/monthly.py): one process writes
last month's drafts."""

INVOICE: Final = "invoice"
"""Namespace of the per-tenant transaction lock of finalization and credit notes
(reports/billing/lifecycle.py): a tenant's invoices are numbered and adjusted in order."""

ALERT: Final = "alert"
"""Namespace of the per-alert transaction lock of acknowledging (reports/alerts/store.py):
two people acknowledging one alert record one acknowledgement."""


def scoped(namespace: str, key: object) -> str:
    """The text whose ``hashtext`` is the lock key of ``key`` within ``namespace``."""
    return f"{namespace}:{key}"


ACTUALS: Final = 0x50414944  # "PAID"
"""Transaction lock of every append to ``actual_costs`` and of pool loads (ledger/capacity.py):
positions commit in order, so the allocation job's checkpoint never skips one."""

ALLOCATION: Final = 0x414C4C4F  # "ALLO"
"""Session lock of the allocation job (reports/allocation_job.py): one process allocates."""

NUMBERS: Final = 0x4E554D53  # "NUMS"
"""Transaction lock of taking the next document number (reports/billing/numbers.py): one
series for every tenant's invoices and credit notes, consecutive in commit order."""

BUDGETS: Final = 0x42554447  # "BUDG"
"""Session lock of budget judging (reports/budgets.py): one process opens a threshold's
alert, not one per API process."""

BILLING_WEBHOOKS: Final = 0x42484F4B  # "BHOK"
"""Session lock of billing webhook delivery (reports/billing/notices.py): one deliverer over
all API processes, so a receiver is not sent the same invoice event twice at once."""

ARCHIVE: Final = 0x41524348  # "ARCH"
"""Session lock of the archive export (reports/archive_export.py): one process writes the Iceberg
table's next files, so no other writes files that its commit would then refuse."""
