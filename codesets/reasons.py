"""Status and reason vocabulary (状态与原因代码), one table for grouping, QC and pricing.

Every output row carries ``status`` and ``reason``; the meaning of each reason code,
in Chinese and English, lives in ``reasons.csv`` beside this module. Kernels return
small integers; :data:`REASONS` maps them back to the stable string codes.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

STATUSES = ("grouped", "ambiguous", "ungroupable", "invalid")


@dataclass(frozen=True)
class Reason:
    code: str
    area: str
    status: str
    zh: str
    en: str


@lru_cache(maxsize=1)
def reason_table() -> tuple[Reason, ...]:
    """All reason codes in file order; the index of a reason is its integer id."""
    path = Path(__file__).with_name("reasons.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [Reason(**row) for row in csv.DictReader(fh)]
    for r in rows:
        if r.status not in STATUSES and r.status != "":
            raise ValueError(f"reasons.csv: {r.code} has unknown status {r.status!r}")
    return tuple(rows)


@lru_cache(maxsize=1)
def reason_ids() -> dict[str, int]:
    return {r.code: i for i, r in enumerate(reason_table())}


def reason_id(code: str) -> int:
    """Integer id of a reason code (raises KeyError for an undocumented code)."""
    return reason_ids()[code]


def describe(code: str, lang: str = "en") -> str:
    r = reason_table()[reason_ids()[code]]
    return r.zh if lang == "zh" else r.en


def markdown_table() -> str:
    """The reason table as Markdown, for docs/reasons.md."""
    lines = ["| code | area | status | 中文 | English |", "|---|---|---|---|---|"]
    for r in reason_table():
        lines.append(f"| `{r.code}` | {r.area} | {r.status} | {r.zh} | {r.en} |")
    return "\n".join(lines) + "\n"
