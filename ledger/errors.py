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


class BatchInvalid(LedgerError):
    def __init__(self, errors: list[FieldError]) -> None:
        first = errors[0]
        super().__init__(
            f"{len(errors)} invalid event(s); first at index {first.index}, "
            f"field {first.field}: {first.message}"
        )
        self.errors = errors


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
