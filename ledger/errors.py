"""What an append can answer with besides a receipt; in every case nothing was written."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


class LedgerError(Exception):
    """Base of the errors an append can answer with; nothing was written."""


@dataclass(frozen=True, slots=True)
class FieldError:
    index: int
    field: str
    message: str


MAX_REPORTED_ERRORS = 100
"""An answer names this many errors at most: a garbage body must not make a huge reply."""


class BatchInvalid(LedgerError):
    def __init__(self, errors: list[FieldError], *, total: int | None = None) -> None:
        first = errors[0]
        self.total = max(total or 0, len(errors))
        self.errors = errors[:MAX_REPORTED_ERRORS]
        self.not_shown = self.total - len(self.errors)
        more = f" ({self.not_shown} more not shown)" if self.not_shown else ""
        super().__init__(
            f"{self.total} error(s); first at index {first.index}, "
            f"field {first.field}: {first.message}{more}"
        )


class BatchTooLarge(LedgerError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"batch of {size} events exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


class EventConflict(LedgerError):
    """Known ``event_id``s sent again with different content."""

    def __init__(self, event_ids: list[UUID]) -> None:
        shown = ", ".join(map(str, event_ids[:20]))
        more = f" and {len(event_ids) - 20} more" if len(event_ids) > 20 else ""
        super().__init__(f"event_id already recorded with different content: {shown}{more}")
        self.event_ids = event_ids
