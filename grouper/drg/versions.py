"""Scheme versions by discharge date (分组方案版本按出院日期适用).

A region runs several schemes over time (CHS-DRG 1.1 until 2024, 2.0 from 2025, a local
refinement from a given month). A *region file* names them with their effective dates::

    # region.schemes.toml
    [[scheme]]
    version = "CHS-DRG 1.1"
    path = "chs11.drgscheme"          # compiled file or folder of tables; relative to this file
    from = "2022-01-01"               # first discharge date in force (inclusive)
    to = "2024-12-31"                 # last discharge date in force (inclusive; omit: open-ended)

    [[scheme]]
    version = "CHS-DRG 1.1 Beijing"
    path = "bj11.drgscheme"
    from = "2025-01-01"

Each record is grouped with the version in force on its discharge date; the output adds
``scheme_version``. A record whose discharge date is missing or unreadable is ``invalid``
with ``DISCHARGE_DATE_UNREADABLE``; one whose date no version covers is ``invalid`` with
``NO_SCHEME_FOR_DATE``. Periods may not overlap (the file is refused). See docs/versions.md.
"""
from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, as_table, canonical_columns

EPOCH = dt.date(1970, 1, 1)
OPEN_END = np.iinfo(np.int64).max


@dataclass(frozen=True)
class SchemeVersion:
    version: str
    path: str | None               # None: the built-in teaching scheme
    start: dt.date
    end: dt.date | None

    @property
    def days(self) -> tuple[int, int]:
        return (self.start - EPOCH).days, OPEN_END if self.end is None else (self.end - EPOCH).days


def _date(value, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from None


def load_region_schemes(path) -> list[SchemeVersion]:
    """The versions of a region file, checked: dates readable, from <= to, no overlap."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: region file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML: {exc}") from None
    entries = data.get("scheme")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{p}: no [[scheme]] entries (version, path, from, to)")
    out = []
    for i, e in enumerate(entries, 1):
        where = f"{p}: [[scheme]] #{i}"
        if not isinstance(e, dict) or "from" not in e or "version" not in e:
            raise InputError(f"{where}: needs version and from (and path, to)")
        unknown = set(e) - {"version", "path", "from", "to"}
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        raw = e.get("path")
        path_ = None if raw in (None, "teaching") else str((p.parent / raw) if not Path(raw).is_absolute() else raw)
        v = SchemeVersion(str(e["version"]), path_, _date(e["from"], where),
                          _date(e["to"], where) if e.get("to") is not None else None)
        if v.end is not None and v.end < v.start:
            raise InputError(f"{where}: to {v.end} is before from {v.start}")
        out.append(v)
    out.sort(key=lambda v: v.start)
    for a, b in zip(out, out[1:]):
        if a.end is None or a.end >= b.start:
            raise InputError(f"{p}: {a.version} ({a.start}..{a.end or 'open'}) overlaps {b.version} (from {b.start})")
    return out


def discharge_days(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(days since 1970-01-01 per record, True where the date is missing or unreadable).

    Dates, timestamps and text starting with YYYY-MM-DD are read; an impossible date such
    as 2024-02-30 is unreadable."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_timestamp(arr.type) or pa.types.is_date64(arr.type):
        arr = pc.cast(arr, pa.date32())
    elif not pa.types.is_date32(arr.type):
        s = pc.utf8_slice_codeunits(pc.cast(arr, pa.string()), 0, 10)
        ts = pc.strptime(s, format="%Y-%m-%d", unit="s", error_is_null=True)
        # strptime rolls impossible days over (2023-02-29 -> 03-01): keep a date only if it reads back the same
        same = pc.equal(pc.strftime(ts, format="%Y-%m-%d"), s)
        arr = pc.if_else(pc.fill_null(same, False), pc.cast(ts, pa.date32()), pa.scalar(None, pa.date32()))
    days = pc.fill_null(pc.cast(arr, pa.int32()), -(2 ** 31)).to_numpy(zero_copy_only=False).astype(np.int64)
    bad = days == -(2 ** 31)
    return days, bad


def version_of(days: np.ndarray, bad: np.ndarray, versions: list[SchemeVersion]) -> np.ndarray:
    """Index of the version in force per record; -1 none covers the date, -2 date unreadable."""
    which = np.full(days.size, -1, dtype=np.int64)
    for i, v in enumerate(versions):
        lo, hi = v.days
        which[(days >= lo) & (days <= hi) & ~bad] = i
    which[bad] = -2
    return which


class VersionedGrouper:
    """Groups each record with the scheme version in force at its discharge date."""

    def __init__(self, versions: list[SchemeVersion], codes=None):
        from drgdip.grouper.drg.api import load_scheme
        self.versions = versions
        self.codes = codes
        self.schemes = [load_scheme(v.path) for v in versions]
        self._groupers = None
        self.ungrouped: dict[str, int] = {}      # records no version could group, by reason

    @classmethod
    def from_file(cls, path, codes=None) -> "VersionedGrouper":
        return cls(load_region_schemes(path), codes)

    @property
    def groupers(self):
        if self._groupers is None:
            from drgdip.grouper.drg.api import Grouper
            self._groupers = [Grouper(s, self.codes) for s in self.schemes]
        return self._groupers

    def status_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.groupers:
            for k, v in g.status_counts().items():
                out[k] = out.get(k, 0) + v
        for k, v in self.ungrouped.items():
            out["invalid"] = out.get("invalid", 0) + v
        return out

    def group(self, data) -> pa.Table:
        table = as_table(data).combine_chunks()
        n = table.num_rows
        cols = canonical_columns(table.schema)
        if "discharge_date" not in cols:
            raise InputError("records have no discharge_date column (or an alias of it): "
                             "a region of several scheme versions picks the version by discharge date")
        days, bad = discharge_days(table[cols["discharge_date"]])
        which = version_of(days, bad, self.versions)
        parts, order = [], []
        for i, grouper in enumerate(self.groupers):
            idx = np.nonzero(which == i)[0]
            if idx.size:
                g = grouper.group_batch(table.take(pa.array(idx)))
                parts.append(g.append_column("scheme_version", pa.array([self.versions[i].version] * idx.size,
                                                                       pa.string())))
                order.append(idx)
        rest = np.nonzero(which < 0)[0]
        if rest.size or not parts:
            base = table.take(pa.array(rest))
            m = rest.size
            reason = np.where(which[rest] == -2, "DISCHARGE_DATE_UNREADABLE", "NO_SCHEME_FOR_DATE")
            for code in np.unique(reason):
                self.ungrouped[str(code)] = self.ungrouped.get(str(code), 0) + int((reason == code).sum())
            extra = {"mdc": pa.nulls(m, pa.string()), "adrg": pa.nulls(m, pa.string()),
                     "drg": pa.array(["0000"] * m, pa.string()), "status": pa.array(["invalid"] * m, pa.string()),
                     "reason": pa.array(reason.tolist(), pa.string()), "scheme_version": pa.nulls(m, pa.string())}
            keep = [c for c in base.column_names if c not in extra]
            base = base.select(keep)
            for k, v in extra.items():
                base = base.append_column(k, v)
            if parts:
                base = base.cast(parts[0].schema)
            parts.append(base)
            order.append(rest)
        out = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        back = np.empty(n, dtype=np.int64)
        back[np.concatenate(order)] = np.arange(n)
        return out.take(pa.array(back))


def group_region_file(src, dst, grouper: VersionedGrouper, batch_size: int | None = None, progress=None,
                      keep=None, encoding: str | None = None) -> dict:
    """Stream SRC into DST grouped by the version in force per record (as :func:`grouper.drg.api.group_file`:
    the key, the ``keep`` columns, the results, and ``scheme_version``). Returns counts by status."""
    from drgdip.arrowio import (
        DEFAULT_BATCH_SIZE,
        check_batch_size,
        file_columns,
        refuse_overwrite,
        transform_file,
    )
    from drgdip.grouper.drg.api import output_plan
    refuse_overwrite(src, dst)
    batch_size = check_batch_size(batch_size or DEFAULT_BATCH_SIZE)
    names = file_columns(src, encoding)
    read, write, add_row = output_plan(names, keep)
    roles = canonical_columns(pa.schema([(n, pa.null()) for n in names]))
    if "discharge_date" not in roles:
        raise InputError(f"{src}: no discharge_date column (or an alias of it): a region of several scheme "
                         "versions picks the version by discharge date")
    if read is not None and roles["discharge_date"] not in read:
        read = [n for n in names if n in set(read) | {roles["discharge_date"]}]
    seen = 0

    def group(batch):
        nonlocal seen
        out = grouper.group(batch)
        cols = write + ["mdc", "adrg", "drg", "status", "reason", "scheme_version"]
        t = out.select(cols)
        if add_row:
            t = t.add_column(0, "row", pa.array(np.arange(seen, seen + out.num_rows, dtype=np.int64)))
        seen += out.num_rows
        return t

    grouper.ungrouped = {}
    transform_file(src, dst, group, batch_size, progress, encoding=encoding, columns=read)
    return grouper.status_counts()
