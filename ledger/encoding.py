"""JSON text for documents and answers: orjson's speed, and any integer's size.

orjson refuses integers past 64 bits; sums of nanos may exceed that (a tenant's month at the
per-event limit), and one tenant's large month must not stop a batch for every tenant.
Below 2^64 the bytes are orjson's exactly, so hashes of existing documents do not move.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any, *, sort_keys: bool = False, indent: bool = False) -> bytes:
    option = (orjson.OPT_SORT_KEYS if sort_keys else 0) | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, option=option)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
    text = json.dumps(
        value,
        sort_keys=sort_keys,
        indent=2 if indent else None,
        separators=None if indent else (",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return text.encode()
