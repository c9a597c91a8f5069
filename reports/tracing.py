"""Spans around the jobs: the API's tracer provider (service/observability.py) exports them;
without one, OpenTelemetry's API makes them no-ops that cost a function call."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from opentelemetry import trace

P = ParamSpec("P")
R = TypeVar("R")
tracer = trace.get_tracer("renderledger.jobs")


def traced(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the function in a span named ``name`` (an exception is recorded on it)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with tracer.start_as_current_span(name):
                return fn(*args, **kwargs)

        return inner

    return wrap
