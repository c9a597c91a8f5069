"""From settings to the detector's rules and the webhook."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace

from pydantic import BaseModel, Field
from sqlalchemy import Engine

from reports.alerts.detect import Rule
from reports.alerts.service import run_detection
from reports.alerts.webhooks import Webhook, deliver_pending
from reports.outbox import check_secret

log = logging.getLogger(__name__)


class AlertRule(BaseModel):
    """Thresholds for one tenant and/or use case; unset fields keep the defaults.

    A rule applies to each currency's series of its tenant × use case alike, and
    ``absolute_usd`` (named when series were all USD; kept so settings keep working) is in
    units of the judged series' currency: 0.001 is 0.001 EUR a render on an EUR series,
    never converted."""

    tenant: str | None = None
    use_case: str | None = None
    relative: float | None = None  # 0.10: a 10 % change in cost per delivered render
    absolute_usd: float | None = None  # and at least this much per render, series' currency
    z: float | None = None  # and this many spreads from the baseline
    min_renders: int | None = None  # delivered renders in 6 hours for the busy path
    low_z: float | None = None  # spreads on the low-volume path (it looks at 4 windows)
    # Failures matter when the money lost to them beyond the baseline rate (in the judged
    # window) reaches this, in the series' currency — or when their share rises 5 points.
    failed_waste_absolute: float | None = None


class AlertSettings(BaseModel):
    enabled: bool = True  # run detection after every rollup in the API process
    rules: list[AlertRule] = []  # JSON in RENDERLEDGER_ALERTS__RULES
    # How far back a low-volume series' windows reach (and how much alert_hourly a pass
    # keeps in step with the rollups beyond the 21 baseline days).
    horizon_days: int = Field(default=7, ge=1, le=28)
    webhook_url: str | None = None
    # whsec_<base64> (Standard Webhooks; `previous` signs beside it while rotating), or
    # any other string for the legacy X-Renderledger-Signature HMAC; required with a URL.
    webhook_secret: str | None = None
    webhook_previous_secret: str | None = None
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 2.0  # doubled after every failed attempt
    # A pool busy less than this share of an hour it held is a finding (None: not judged).
    utilisation_floor: float | None = 0.5


def _specificity(rule: AlertRule) -> int:
    return 2 * (rule.tenant is not None) + (rule.use_case is not None)


def rules(settings: AlertSettings) -> Callable[[str, str], Rule]:
    """The most specific matching rule wins: tenant + use case, tenant, use case, default."""
    ordered = sorted(settings.rules, key=_specificity)

    @functools.lru_cache(maxsize=1 << 16)  # a pass asks for each of thousands of series
    def rule_for(tenant: str, use_case: str) -> Rule:
        rule = Rule(horizon_hours=settings.horizon_days * 24)
        for r in ordered:
            if r.tenant not in (None, tenant) or r.use_case not in (None, use_case):
                continue
            if r.relative is not None:
                rule = replace(rule, relative=r.relative)
            if r.absolute_usd is not None:
                rule = replace(rule, absolute_nanos=r.absolute_usd * 1e9)
            if r.z is not None:
                rule = replace(rule, z=r.z)
            if r.min_renders is not None:
                rule = replace(rule, min_renders=r.min_renders)
            if r.low_z is not None:
                rule = replace(rule, low_z=r.low_z)
            if r.failed_waste_absolute is not None:
                rule = replace(rule, failed_waste_nanos=r.failed_waste_absolute * 1e9)
        return rule

    return rule_for


def webhook(settings: AlertSettings) -> Webhook | None:
    if not settings.webhook_url:
        return None
    variable = "RENDERLEDGER_ALERTS__WEBHOOK_"
    secret = settings.webhook_secret
    if not secret:
        raise ValueError(f"{variable}SECRET: a webhook needs a signing secret")
    previous = settings.webhook_previous_secret or None
    if secret.startswith("whsec_"):
        check_secret(secret, f"{variable}SECRET")
        if previous is not None:
            check_secret(previous, f"{variable}PREVIOUS_SECRET")
    elif previous is not None:
        raise ValueError(f"{variable}PREVIOUS_SECRET: rotation needs whsec_ secrets")
    return Webhook(
        settings.webhook_url,
        secret,
        settings.webhook_max_attempts,
        settings.webhook_backoff_s,
        previous_secret=previous,
    )


def after_rollup(engine: Engine, settings: AlertSettings) -> Callable[[], None]:
    """What the scheduler runs after every rollup: detection only. Webhooks go out from
    their own job (``deliver_webhooks``), so a slow receiver never holds up a rollup."""
    rule_for = rules(settings)

    def run() -> None:
        result = run_detection(engine, rule_for)
        if result.opened or result.resolved:
            log.info("alerts: %d opened, %d resolved", len(result.opened), len(result.resolved))

    return run


def deliver_webhooks(engine: Engine, settings: AlertSettings) -> Callable[[], None] | None:
    """The scheduler's webhook job, or None without a webhook URL."""
    hook = webhook(settings)
    if hook is None:
        return None

    def run() -> None:
        deliver_pending(engine, hook)

    return run
