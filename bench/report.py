"""Writing a benchmark's section into BENCHMARKS.md with the command, machine and date."""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}"


def write_section(path: Path, key: str, body: str, command: str) -> None:
    """Replace (or add) the section between this key's markers; other sections stay."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- {key}:start -->\n{body.rstrip()}\n\n"
        f"Command: `{command}`  \nMachine: {machine()}  \nDate: {stamp}\n<!-- {key}:end -->"
    )
    title = "Reliability" if path.name.startswith("RELIABILITY") else "Benchmarks"
    text = path.read_text() if path.exists() else f"# {title}\n\nWritten by `{command}`.\n"
    pattern = re.compile(rf"<!-- {key}:start -->.*?<!-- {key}:end -->", re.DOTALL)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text}\n{section}\n"
    path.write_text(text)
