"""``renderledger alerts …``: the evaluation harness, a detection pass, listing, acknowledging."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from ledger.connections import connection
from service.cli.common import err, fail, open_ledger, out, plain
from service.settings import get_settings

alerts_app = typer.Typer(help="Anomaly alerts on cost per render.", no_args_is_help=True)

TARGETS = {
    "recall_15pct": (0.95, "recall, changes ≥ 15 %"),
    "precision": (0.90, "precision"),
    "stage_first_right": (0.90, "right stage named first"),
}


@alerts_app.command("evaluate")
def alerts_evaluate(
    tenants: Annotated[int, typer.Option(help="Tenants (two use cases each)")] = 6,
    days: Annotated[int, typer.Option(help="Days of history")] = 60,
    seed: Annotated[int, typer.Option(help="Same seed, same histories")] = 7,
    interval: Annotated[int, typer.Option(help="Minutes between detector runs")] = 15,
    show: Annotated[bool, typer.Option(help="List every injected change")] = False,
) -> None:
    """Generate histories with injected regressions, run the detector, print its score.

    Exits 1 when a target (recall ≥ 0.95, precision ≥ 0.9, stage ≥ 0.9, detection within two
    intervals of the minimum sample) is missed.
    """
    from reports.alerts.harness import evaluate

    if tenants < 1 or days < 25:
        raise fail("--tenants ≥ 1 and --days ≥ 25 (21 days of baseline plus room to inject)", 2)
    err.print(
        f"generating {tenants} tenants × 2 use cases × {days} days, detecting every {interval} min…"
    )
    result = evaluate(tenants=tenants, days=days, seed=seed, interval_minutes=interval)
    s = result.summary
    table = Table("measure", "value", "target")
    missed = []
    for key, (target, label) in TARGETS.items():
        ok = s[key] >= target
        missed += [] if ok else [label]
        table.add_row(label, f"{s[key]:.3f}", f"≥ {target}")
    slow = s["max_intervals_to_detect"] > 2
    missed += ["detection within two intervals"] if slow else []
    table.add_row(
        "median / max intervals to detect, after the minimum sample",
        f"{s['median_intervals_to_detect']:.2f} / {s['max_intervals_to_detect']:.2f}",
        "≤ 2",
    )
    table.add_row(
        "alerts opened / not explained by an injection",
        f"{s['alerts_opened']:.0f} / {s['false_alerts']:.0f}",
        "",
    )
    table.add_row("changes ≥ 15 % injected", f"{s['regressions_15pct']:.0f}", "")
    table.add_row(
        "changes < 15 % caught (no target)",
        f"{s['small_caught']:.0f} of {s['small_total']:.0f}",
        "",
    )
    table.add_row(
        "volume doublings alerted on (must be 0)", f"{s['volume_changes_alerted']:.0f}", "0"
    )
    out.print(table)
    if show:
        listing = Table(
            "tenant", "use case", "change", "size", "alerts", "stage named", "intervals"
        )
        for row in result.rows:
            inj = row["injection"]
            listing.add_row(
                plain(inj.tenant),
                plain(inj.use_case),
                inj.kind,
                f"{inj.size:+.1%}",
                ", ".join(a.signal for a in row.get("alerts", [])) or "—",
                row.get("stage_named") or "—",
                f"{row['intervals_to_detect']:.2f}" if "intervals_to_detect" in row else "—",
            )
        out.print(listing)
    if missed or s["volume_changes_alerted"]:
        raise fail(f"targets missed: {', '.join(missed) or 'a volume change alerted'}")


@alerts_app.command("run")
def alerts_run(
    backfill: Annotated[
        bool,
        typer.Option(
            help="Rebuild every hour of the hourly series a judgement reads (30 days), even "
            "those that agree with the rollups; hours that differ are rebuilt without it"
        ),
    ] = False,
) -> None:
    """One detection pass now (the API does this after every rollup), then pending webhooks."""
    from reports.alerts.config import rules, webhook
    from reports.alerts.service import run_detection
    from reports.alerts.webhooks import deliver_pending

    settings = get_settings()
    ledger = open_ledger(settings)
    result = run_detection(ledger.engine, rules(settings.alerts), backfill=backfill)
    if not result.ran:
        raise fail("another process is running detection; try again shortly", 3)
    for d in result.opened:
        out.print(f"[red]opened[/] {d.alert_id} {plain(d.detail['message'])}", highlight=False)
    for d in result.resolved:
        out.print(f"[green]resolved[/] {d.alert_id} {plain(d.signal)}", highlight=False)
    hook = webhook(settings.alerts)
    sent = deliver_pending(ledger.engine, hook) if hook else 0
    rebuilt = (
        f"; hours from {result.rebuilt_from:%Y-%m-%d %H:00} rebuilt" if result.rebuilt_from else ""
    )
    out.print(
        f"{result.series} series judged ({result.low_volume} low volume) in "
        f"{result.seconds:.2f}s; {len(result.opened)} opened, {len(result.resolved)} resolved; "
        f"{sent} webhook attempt(s){rebuilt}"
    )


@alerts_app.command("list")
def alerts_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
    status: Annotated[str | None, typer.Option(help="open, acknowledged or resolved")] = None,
) -> None:
    """Alerts, newest first."""
    from reports.alerts.store import STATUSES, alerts

    if status is not None and status not in STATUSES:
        raise fail(f"--status: one of {', '.join(STATUSES)}", 2)
    ledger = open_ledger(get_settings())
    with connection(ledger.engine) as raw:
        found = alerts(raw, tenant=tenant, status=status)
    # The alert's currency under its status: a column of its own would leave the message no
    # room in 80 columns.
    table = Table("status", "opened (UTC)", "message")
    table.add_column("id", no_wrap=True, min_width=36)  # whole, so it can be pasted into `ack`
    for a in found:
        opened = (a["opened_at"] or "")[:16].replace("T", " ")
        currency = a["currency"] or "—"  # none: logged before series had one, or a pool's
        status = f"{a['status']}\n{currency}"
        table.add_row(status, opened, plain(a["message"]), a["alert_id"])
    out.print(table if found else "no alerts")


@alerts_app.command("ack")
def alerts_ack(alert_id: Annotated[str, typer.Argument(help="The alert's id")]) -> None:
    """Acknowledge an alert; it stays open until cost returns to its baseline."""
    from reports.alerts.store import AlertError, acknowledge

    try:
        parsed = uuid.UUID(alert_id)
    except ValueError:
        raise fail(f"not an alert id: {alert_id!r}", 2) from None
    ledger = open_ledger(get_settings())
    try:
        with connection(ledger.engine) as raw:
            alert = acknowledge(raw, parsed, f"cli:{datetime.now(UTC).isoformat()}")
    except (AlertError, LookupError) as exc:
        raise fail(str(exc)) from None
    out.print(f"{alert['alert_id']}: {alert['status']}")
