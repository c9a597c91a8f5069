"""The light sender: installed alone it needs few packages, and it meters a pipeline of its
own into the real API with none of the server's libraries importable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from ledger.connections import connection
from ledger.store import Ledger
from service.keys import create_key

ROOT = Path(__file__).resolve().parents[1]
HEAVY = [
    "sqlalchemy",
    "psycopg",
    "polars",
    "numpy",
    "pyarrow",
    "fastapi",
    "uvicorn",
    "torch",
    "diffusers",
    "reportlab",
    "typer",
    "apscheduler",
    "boto3",
]


def test_the_base_install_is_the_sender_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {Requirement(d).name for d in project["dependencies"]}
    assert names == {"pydantic", "orjson", "httpx"}
    extras = project["optional-dependencies"]
    assert {"server", "render", "all"} <= set(extras)
    assert any(Requirement(d).name == "torch" for d in extras["render"])


def test_meter_sends_a_pipeline_without_the_server_libraries(
    api_base: str, ledger: Ledger, tenant: str, tmp_path: Path
) -> None:
    key = create_key(ledger.engine, tenant, ["ingest"])
    script = textwrap.dedent(
        f"""
        import sys
        for name in {HEAVY!r}:
            sys.modules[name] = None  # importing any of them now raises ImportError
        from ingest.meter import Meter

        meter = Meter({api_base!r}, api_key={key!r}, tenant={tenant!r}, use_case="sdk",
                      spool_dir={str(tmp_path / "spool")!r}, model="my-own-sd")
        with meter.render() as render:
            with render.stage("text_encoder", "gpu.h100.second"):
                sum(range(10_000))
            with render.stage("unet", "gpu.h100.second"):
                sum(range(100_000))
        try:
            with meter.render() as failing:
                with failing.stage("unet", "gpu.h100.second"):
                    raise RuntimeError("out of memory")
        except RuntimeError:
            pass
        assert meter.close() == 0, "batches left in the spool"
        print(render.render_id, failing.render_id)
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    delivered, failed = ran.stdout.split()
    with connection(ledger.engine) as raw:
        rows = raw.execute(
            "SELECT render_id::text, stage, outcome, quantity, attributes->>'model' "
            "FROM cost_events WHERE tenant_id = %s ORDER BY seq",
            (tenant,),
        ).fetchall()
    by_render = {r: [row[1:] for row in rows if row[0] == r] for r in (delivered, failed)}
    assert [s for s, *_ in by_render[delivered]] == ["text_encoder", "unet", "render"]
    assert by_render[delivered][-1][1] == "delivered"
    assert all(q > 0 and m == "my-own-sd" for _, _, q, m in by_render[delivered])
    assert [(s, o) for s, o, *_ in by_render[failed]] == [("unet", None), ("render", "failed")]
