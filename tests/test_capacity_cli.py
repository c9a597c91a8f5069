"""``renderledger pools …``, ``allocate`` and ``break-even`` as a newcomer types them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from service.cli.common import BOOKS
from service.cli.main import app


def test_pools_load_list_report_and_break_even(cli: CliRunner, tmp_path: Path) -> None:
    loaded = cli.invoke(app, ["pools", "load", str(BOOKS / "example_pools.toml")])
    assert loaded.exit_code == 0, loaded.output
    again = cli.invoke(app, ["pools", "load", str(BOOKS / "example_pools.toml")])
    assert "0 new of 3 pool(s)" in again.output
    listed = cli.invoke(app, ["pools", "list"], env={"COLUMNS": "200"})
    assert "a100-reserved" in listed.output
    assert "1100.00 USD" in listed.output
    book = cli.invoke(app, ["prices", "load", str(BOOKS / "whatif" / "sdxl-api-0004.toml")])
    assert book.exit_code == 0, book.output
    even = cli.invoke(
        app,
        [
            "break-even",
            "--pool",
            "a100-reserved",
            "--api-book",
            "sdxl-api-0004",
            "--from",
            "2026-10-01",
            "--to",
            "2026-11-01",
        ],
    )
    assert even.exit_code == 0, even.output
    assert "break-even: 275,000 renders/month" in even.output
    assert cli.invoke(app, ["allocate"]).exit_code == 0
    report = cli.invoke(app, ["pools", "report", "--from", "2026-10-01", "--to", "2026-11-01"])
    assert report.exit_code == 0, report.output


def test_bad_input_is_a_clear_error(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "pools.toml"
    bad.write_text('[pools.x]\ngpu_sku = "gpu.h100.second"\ngpus = 0\ncurrency = "USD"\n')
    result = cli.invoke(app, ["pools", "load", str(bad)])
    assert result.exit_code == 1
    assert "pools.x.gpus" in result.output
    backwards = cli.invoke(app, ["pools", "report", "--from", "2026-11-01", "--to", "2026-10-01"])
    assert backwards.exit_code == 2
    unknown = cli.invoke(
        app,
        [
            "break-even",
            "--pool",
            "nope",
            "--api-book",
            "x",
            "--from",
            "2026-10-01",
            "--to",
            "2026-11-01",
        ],
    )
    assert unknown.exit_code == 1
    assert "no pool named 'nope'" in unknown.output
