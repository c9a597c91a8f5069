"""The ``renderledger`` command against a migrated database of its own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from service.cli.main import DEFAULT_PRICES, app
from service.settings import get_settings


@pytest.fixture
def cli(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CliRunner]:
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_prices_sample_ingest_verify(cli: CliRunner, tmp_path: Path) -> None:
    loaded = cli.invoke(app, ["prices", "load", str(DEFAULT_PRICES)])
    assert loaded.exit_code == 0, loaded.output
    assert "loaded: version 1" in loaded.output
    assert "already loaded" in cli.invoke(app, ["prices", "load", str(DEFAULT_PRICES)]).output
    sample = tmp_path / "sample.ndjson"
    assert cli.invoke(app, ["sample", str(sample), "--renders", "50"]).exit_code == 0
    lines = sample.read_bytes().count(b"\n")
    ingested = cli.invoke(app, ["ingest", str(sample), "--batch-size", "100"])
    assert ingested.exit_code == 0, ingested.output
    assert f"{lines} rows: {lines} accepted, 0 duplicates" in ingested.output
    verified = cli.invoke(app, ["verify"])
    assert verified.exit_code == 0, verified.output
    assert f"{lines} events verified" in verified.output


def test_errors_exit_non_zero_with_a_message(cli: CliRunner, tmp_path: Path) -> None:
    bad_book = tmp_path / "bad.toml"
    bad_book.write_text(
        'name = "x"\neffective_from = 2026-01-01T00:00:00Z\ncurrency = "USD"\n'
        '[prices."a.b"]\nunit = "s"\nprice = 0.1\n'
    )
    result = cli.invoke(app, ["prices", "load", str(bad_book)])
    assert result.exit_code == 1
    assert "write the price as a string" in result.output
    missing = cli.invoke(app, ["ingest", str(tmp_path / "nope.ndjson")])
    assert missing.exit_code == 1
    assert "no such file" in missing.output
    assert cli.invoke(app, ["ingest", "x.ndjson", "--batch-size", "0"]).exit_code == 1


def test_render_command_and_weights_folder(cli: CliRunner, tmp_path: Path) -> None:
    from render.presets import build

    assert cli.invoke(app, ["prices", "load", str(DEFAULT_PRICES)]).exit_code == 0
    result = cli.invoke(
        app,
        [
            "render",
            "--tenant",
            "acme",
            "--use-case",
            "ecommerce",
            "--prompt",
            "white sneaker",
            "--n",
            "2",
            "--steps",
            "3",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 delivered, 0 failed; 16 cost events" in result.output  # no PUT to a folder
    assert len(list((tmp_path / "out" / "acme").glob("*.webp"))) == 2

    # A platform team's own diffusers folder: here the tiny pipeline, saved and loaded back.
    weights = tmp_path / "weights"
    build("tiny").pipe.save_pretrained(weights)
    result = cli.invoke(
        app,
        [
            "render",
            "--tenant",
            "acme",
            "--prompt",
            "red chair",
            "--weights",
            str(weights),
            "--steps",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 delivered" in result.output
    bad = cli.invoke(
        app, ["render", "--tenant", "acme", "--prompt", "x", "--weights", str(tmp_path)]
    )
    assert bad.exit_code == 1
    assert "not a diffusers folder" in bad.output


def test_keys_create_list_revoke(cli: CliRunner) -> None:
    made = cli.invoke(app, ["keys", "create", "--tenant", "acme", "--scopes", "ingest,read"])
    assert made.exit_code == 0, made.output
    key = made.output.strip()
    assert key.startswith("rlk_")
    key_id = key.split("_")[1]
    listed = cli.invoke(app, ["keys", "list"])
    assert key_id in listed.output
    assert key.split("_", 2)[2] not in listed.output  # the secret is never shown again
    assert cli.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    again = cli.invoke(app, ["keys", "revoke", key_id])
    assert again.exit_code == 1
    assert "no live key" in again.output
    bad = cli.invoke(app, ["keys", "create", "--tenant", "acme", "--scopes", "root"])
    assert bad.exit_code == 1
    assert "scopes must be some of" in bad.output
    assert cli.invoke(app, ["keys", "create", "--scopes", "read"]).exit_code == 1
    tenant_admin = cli.invoke(app, ["keys", "create", "--tenant", "acme", "--scopes", "admin"])
    assert tenant_admin.exit_code == 1
    assert "the admin scope reaches every tenant" in tenant_admin.output
    assert "admin" not in cli.invoke(app, ["keys", "list"]).output  # nothing was stored


def test_demo_opens_an_alert_then_a_sample_is_new_and_a_resend_says_why(
    cli: CliRunner, tmp_path: Path
) -> None:
    demo = cli.invoke(app, ["demo", "--no-serve", "--no-render-images", "--renders", "50"])
    assert demo.exit_code == 0, demo.output
    assert "1 series judged, 1 opened, 1 open" in demo.output
    assert "2 H100s held 4 h on 2026-10-20" in demo.output
    assert "acme/architecture cost per render +" in demo.output
    share = re.search(
        r"(\d+)% of the increase is `unet`; precision changed int8 → fp16", demo.output
    )
    assert share is not None, demo.output
    assert int(share[1]) >= 95  # the rest is the other stages' noise, rounded
    ran = cli.invoke(app, ["alerts", "run"])
    assert ran.exit_code == 0, ran.output
    assert "1 series judged" in ran.output  # still regressed, already open: nothing new
    listed = cli.invoke(app, ["alerts", "list", "--status", "open"])
    assert "acme/archite" in listed.output
    # Text of the user's own keeps its brackets (rich would read them as markup).
    finalized = cli.invoke(app, ["invoice", "finalize", "--month", "2026-10", "--tenant", "acme"])
    assert finalized.exit_code == 0, finalized.output
    reason = "outage [eu-west] on 10-14"
    note = ["invoice", "credit-note", "--tenant", "acme", "--month", "2026-10"]
    noted = cli.invoke(app, [*note, "--amount", "0.01", "--reason", reason])
    assert noted.exit_code == 0, noted.output
    assert reason in noted.output
    # The README's next step: a sample of the default seed is not the demo's events.
    sample = tmp_path / "s.ndjson"
    assert cli.invoke(app, ["sample", str(sample), "--renders", "20"]).exit_code == 0
    fresh = cli.invoke(app, ["ingest", str(sample)])
    assert fresh.exit_code == 0, fresh.output
    assert " 0 duplicates," in fresh.output
    assert cli.invoke(app, ["sample", str(sample), "--renders", "20", "--seed", "7"]).exit_code == 0
    resent = cli.invoke(app, ["ingest", str(sample)])
    assert resent.exit_code == 0, resent.output
    assert "duplicates (already in the ledger with the same event_id" in resent.output
    assert "0 accepted" in resent.output


def test_prices_list_shows_every_book_and_its_prices(cli: CliRunner) -> None:
    assert cli.invoke(app, ["prices", "list"]).exit_code == 1  # nothing loaded yet
    for book in (DEFAULT_PRICES, DEFAULT_PRICES.parent / "whatif" / "dalle3.toml"):
        assert cli.invoke(app, ["prices", "load", str(book)]).exit_code == 0
    listed = cli.invoke(app, ["prices", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "openai-dalle3-standard" in listed.output
    assert "what-if" in listed.output
    assert "gpu.h100.second" in listed.output
    assert "0.0011" in listed.output  # the H100's price per second, in USD
    one = cli.invoke(app, ["prices", "list", "--version", "openai-dalle3-standard"])
    assert "0.04" in one.output
    assert "gpu.h100.second" not in one.output
    missing = cli.invoke(app, ["prices", "list", "--version", "nope"])
    assert missing.exit_code == 1
    assert "no price book 'nope'" in missing.output


def _bad_sample(cli: CliRunner, tmp_path: Path) -> tuple[Path, int]:
    assert cli.invoke(app, ["prices", "load", str(DEFAULT_PRICES)]).exit_code == 0
    sample = tmp_path / "s.ndjson"
    assert cli.invoke(app, ["sample", str(sample), "--renders", "30"]).exit_code == 0
    lines = sample.read_bytes().splitlines()
    for n in range(2, 2 + 23):  # lines 3 … 25
        lines[n] = lines[n].replace(b'"stage":"', b'"stage":"x')
    sample.write_bytes(b"\n".join(lines) + b"\n")
    return sample, len(lines)


def test_ingest_skip_bad_reports_the_first_rows_and_exits_4(cli: CliRunner, tmp_path: Path) -> None:
    sample, total = _bad_sample(cli, tmp_path)
    stopped = cli.invoke(app, ["ingest", str(sample)])
    assert stopped.exit_code == 1
    assert "line 3, field stage" in stopped.output
    rejects = tmp_path / "rejects.ndjson"
    args = ["ingest", str(sample), "--rejects", str(rejects)]  # which implies --skip-bad
    skipped = cli.invoke(app, args)
    assert skipped.exit_code == 4, skipped.output
    assert "refused: line 3, field stage: Input should be 'text_encoder'" in skipped.output
    assert "refused: line 22," in skipped.output
    assert "refused: line 23," not in skipped.output  # the first 20, then a count
    assert f"… and 3 more refused rows (all in {rejects})" in skipped.output
    assert f"{total} rows: {total - 23} accepted, 0 duplicates, 23 refused" in skipped.output
    kept = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [r["line"] for r in kept] == list(range(3, 26))


def test_ingest_cdn_log_skips_its_bad_lines(cli: CliRunner, tmp_path: Path) -> None:
    sample, _ = _bad_sample(cli, tmp_path)
    good = orjson.loads(sample.read_bytes().splitlines()[0])
    assert cli.invoke(app, ["ingest", str(sample), "--skip-bad"]).exit_code == 4
    key = f"/{good['tenant_id']}/{good['render_id']}.webp"
    log = tmp_path / "E1.log"
    log.write_text(
        "#Fields: date time sc-bytes cs-uri-stem x-edge-request-id\n"
        f"2026-10-20\t10:00:00\t1000\t{key}\treq-1\n"
        f"2026-10-20\t10:00:01\t[x]\t{key}\treq-2\n"
        f"2026-10-20\t10:00:02\t2000\t{key}\treq-3\n"
    )
    result = cli.invoke(app, ["ingest", str(log), "--format", "cdn-log"])
    assert result.exit_code == 4, result.output
    assert "refused: line 3, field sc-bytes: not a byte count: '[x]'" in result.output
    assert "3 rows: 2 accepted, 0 duplicates, 1 refused" in result.output


def test_error_messages_keep_their_brackets(cli: CliRunner, tmp_path: Path) -> None:
    bad = cli.invoke(app, ["keys", "create", "--tenant", "Acme[x]", "--scopes", "read"])
    assert bad.exit_code == 1
    assert "tenant 'Acme[x]'" in bad.output
    missing = cli.invoke(app, ["ingest", str(tmp_path / "[bold]e.ndjson")])
    assert missing.exit_code == 1
    assert "[bold]e.ndjson" in missing.output
    book = tmp_path / "b.toml"
    book.write_text(
        'name = "x"\neffective_from = 2026-01-01T00:00:00Z\ncurrency = "USD"\n'
        '[prices."^[a-z]{0,62}$"]\nunit = "s"\nprice = 0.1\n'
    )
    refused = cli.invoke(app, ["prices", "load", str(book)])
    assert refused.exit_code == 1
    assert "^[a-z]{0,62}$" in refused.output
