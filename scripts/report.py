"""Shared by the benchmark scripts: print a markdown table and, when asked, write it to a report file."""

from __future__ import annotations

from pathlib import Path


def emit(table: str, out: Path | None) -> str:
    """Print ``table``; also write it to ``out`` (parents created) when given. Returns the table."""
    print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n")
    return table
