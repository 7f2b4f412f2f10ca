"""bench/RESULTS.md is written by the benchmarks themselves: each replaces its own section.

    from results import record
    record("watcher", ["files/s delivered: 31,000", ...])
"""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEAD = "# Benchmark results\n\nWritten by the scripts in `bench/`; each run replaces its own section.\n"


def machine() -> str:
    """One line naming the machine: CPU model, cores, memory, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kb / 2**20:.0f} GiB"
    except OSError:
        mem = "?"
    return f"{cpu}, {os.cpu_count()} cores, {mem}, Python {platform.python_version()}"


def record(section: str, lines: list[str]) -> None:
    """Print ``lines`` and replace the ``## section`` of RESULTS.md with them."""
    for line in lines:
        print(line)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = f"## {section}\n\n_{stamp}; {machine()}_\n\n" + "".join(f"- {ln}\n" for ln in lines)
    text = RESULTS.read_text() if RESULTS.exists() else HEAD
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else text + "\n" + body
    RESULTS.write_text(text)
