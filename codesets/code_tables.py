"""Diagnosis and procedure code tables (疾病诊断/手术操作编码库) and edition mappings (版本映射).

A code table is a text file of ``code name`` lines (first blank separates the code from
the name), e.g. ``ZD_INFO.dat`` (ICD-10 医保版 2.0 diagnoses) or ``SS_INFO.dat``
(ICD-9-CM-3 医保版 2.0 procedures), or a CSV whose first two columns are code and name.
A mapping table has ``source target`` lines (``ZD_MAP.dat``, ``SS_MAP.dat``) or two CSV
columns. Codes are normalised (:mod:`codesets.normalize`) when read, so lookups work on
normalised input. Nothing is dropped silently: lines that cannot be read, duplicate
codes and conflicting mappings are kept on the parsed object for the caller to report.

Parsed tables are cached per (path, size, modification time).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError
from drgdip.codesets.normalize import normalize_code, normalize_codes


class TableError(InputError):
    """A code or mapping table that cannot be used (one line, for a person)."""


@dataclass
class CodeTable:
    """A code set: official codes in file order, their names, and code → row index."""
    path: str
    codes: list[str]
    names: dict[str, str]
    index: dict[str, int]
    duplicates: list[str] = field(default_factory=list)       # listed twice; first kept
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, text)
    _value_set: pa.Array | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, code: str) -> bool:
        return normalize_code(code) in self.index

    @property
    def value_set(self) -> pa.Array:
        """The codes as an Arrow string array (row i is code i)."""
        if self._value_set is None:
            self._value_set = pa.array(self.codes, type=pa.string())
        return self._value_set

    def name(self, code: str | None) -> str | None:
        return self.names.get(normalize_code(code)) if code is not None else None

    def lookup(self, arr, normalize: bool = True):
        """Row index of each code (int32), -1 for a code not in the table, null for null.

        Works on string arrays and on list<string> arrays (→ list<int32>)."""
        return _over_values(arr, lambda v: self._lookup_flat(v, normalize))

    def _lookup_flat(self, values: pa.Array, normalize: bool) -> pa.Array:
        if normalize:
            values = normalize_codes(values)
        idx = pc.index_in(values, value_set=self.value_set)
        idx = pc.if_else(pc.is_valid(values), pc.fill_null(idx, -1), pa.scalar(None, pa.int32()))
        return idx.cast(pa.int32())

    def contains(self, arr, normalize: bool = True):
        """True where the code is in the table, False where not, null for null."""
        return _over_values(arr, lambda v: pc.greater_equal(self._lookup_flat(v, normalize), 0))

    def names_of(self, arr, normalize: bool = True):
        """The name of each code; null where the code is null or unknown."""
        names = pa.array([self.names[c] for c in self.codes], type=pa.string())

        def flat(v):
            idx = self._lookup_flat(v, normalize)
            idx = pc.if_else(pc.less(idx, 0), pa.scalar(None, pa.int32()), idx)
            return pc.take(names, idx)
        return _over_values(arr, flat)


@dataclass
class CodeMapping:
    """An edition mapping: normalised source code → normalised target code."""
    path: str
    pairs: dict[str, str]
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (source, kept, ignored)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    _arrays: tuple[pa.Array, pa.Array] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.pairs)

    def _keys_values(self) -> tuple[pa.Array, pa.Array]:
        if self._arrays is None:
            self._arrays = (pa.array(list(self.pairs.keys()), type=pa.string()),
                            pa.array(list(self.pairs.values()), type=pa.string()))
        return self._arrays

    def map(self, arr, normalize: bool = True):
        """(mapped, unmapped) for an array of codes.

        ``mapped`` holds the target code where the mapping has the source, and the
        (normalised) source code itself where it has none, so no code disappears;
        ``unmapped`` is True exactly there (False for null input). Works on string
        arrays and list<string> arrays (both results then are lists)."""
        keys, targets = self._keys_values()

        def flat(values):
            if normalize:
                values = normalize_codes(values)
            idx = pc.index_in(values, value_set=keys)
            hit = pc.is_valid(idx)
            mapped = pc.if_else(hit, pc.take(targets, idx), values)
            unmapped = pc.and_(pc.is_valid(values), pc.invert(hit))
            return pa.StructArray.from_arrays([mapped, unmapped], ["mapped", "unmapped"])
        out = _over_values(arr, flat)
        if isinstance(out, pa.StructArray):
            return out.field("mapped"), out.field("unmapped")
        # list of structs → two lists with the same offsets
        inner = out.values
        mask = out.is_null()
        offsets = out.offsets
        return (pa.ListArray.from_arrays(offsets, inner.field("mapped"), mask=mask),
                pa.ListArray.from_arrays(offsets, inner.field("unmapped"), mask=mask))


# ---------------------------------------------------------------- reading

def _stamp(path: str | os.PathLike) -> tuple[str, int, int]:
    p = Path(path)
    if not p.exists():
        raise TableError(f"{p}: no such code table")
    if p.is_dir():
        raise TableError(f"{p}: is a folder, not a code table")
    st = p.stat()
    return str(p.resolve()), st.st_size, st.st_mtime_ns


def _rows(path: str) -> list[tuple[int, list[str], str]]:
    """(line number, [first, rest], raw line) for each non-blank, non-comment line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = Path(path).read_text(encoding="gb18030")
        except UnicodeDecodeError:
            raise TableError(f"{path}: not UTF-8 or GB18030 text") from None
    out = []
    if Path(path).suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(text))
        for n, row in enumerate(reader, 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if n == 1 and row[0].strip().lower() in {"code", "source", "编码", "代码", "source_code"}:
                continue  # header line
            out.append((n, [c.strip() for c in row[:2]], ",".join(row)))
        return out
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        out.append((n, s.split(None, 1), line))
    return out


@lru_cache(maxsize=16)
def _load_code_table(key: str, size: int, mtime: int) -> CodeTable:
    codes, names, index, dups, rejected = [], {}, {}, [], []
    for n, parts, raw in _rows(key):
        code = normalize_code(parts[0])
        if code is None:
            rejected.append((n, raw))
            continue
        if code in index:
            dups.append(code)
            continue
        index[code] = len(codes)
        codes.append(code)
        names[code] = parts[1].strip() if len(parts) > 1 else ""
    if not codes:
        raise TableError(f"{key}: no codes read (expected 'code name' lines)")
    return CodeTable(key, codes, names, index, dups, rejected)


def load_code_table(path: str | os.PathLike) -> CodeTable:
    """Read (or fetch from the cache) a ``code name`` table."""
    return _load_code_table(*_stamp(path))


@lru_cache(maxsize=16)
def _load_mapping_table(key: str, size: int, mtime: int) -> CodeMapping:
    pairs, conflicts, rejected = {}, [], []
    for n, parts, raw in _rows(key):
        if len(parts) < 2:
            rejected.append((n, raw))
            continue
        src, dst = normalize_code(parts[0]), normalize_code(parts[1].split()[0] if parts[1].split() else "")
        if src is None or dst is None:
            rejected.append((n, raw))
            continue
        if src in pairs:
            if pairs[src] != dst:
                conflicts.append((src, pairs[src], dst))
            continue
        pairs[src] = dst
    if not pairs:
        raise TableError(f"{key}: no mappings read (expected 'source target' lines)")
    return CodeMapping(key, pairs, conflicts, rejected)


def load_mapping_table(path: str | os.PathLike) -> CodeMapping:
    """Read (or fetch from the cache) a ``source target`` mapping table, with its problems."""
    return _load_mapping_table(*_stamp(path))


def load_mapping(path: str | os.PathLike) -> dict[str, str]:
    """The mapping as a dict source → target (normalised codes; first line wins)."""
    return dict(load_mapping_table(path).pairs)


# ---------------------------------------------------------------- helpers

def _over_values(arr, fn):
    """Apply fn to the string values of a string array or of a list<string> array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not isinstance(arr, pa.Array):
        arr = pa.array(arr, type=pa.string())
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = arr.offsets
        if len(arr) == 0:
            start, stop = 0, 0
        else:
            start, stop = offsets[0].as_py(), offsets[-1].as_py()
        values = arr.values.slice(start, stop - start).cast(pa.string())
        result = fn(values)
        rebased = pc.subtract(offsets, offsets[0]) if len(arr) else offsets
        return pa.ListArray.from_arrays(rebased.cast(pa.int32()), result, mask=arr.is_null())
    if pa.types.is_dictionary(t) or not pa.types.is_string(t):
        arr = arr.cast(pa.string())
    return fn(arr)


# ---------------------------------------------------------------- mapping a record file

@dataclass
class MapSummary:
    codes: int               # codes read (not null)
    mapped: int              # codes the mapping had a target for
    unmapped: dict           # source code → occurrences, for codes the mapping lacks


def _unmapped_lists(codes: pa.ListArray, flags: pa.ListArray) -> pa.ListArray:
    """Per row, the codes whose flag is True (a list, empty when none)."""
    import numpy as np
    values, flat = pc.list_flatten(codes), pc.list_flatten(flags)
    parent = np.asarray(pc.list_parent_indices(codes), dtype=np.int64)
    keep = np.asarray(pc.fill_null(flat, False).to_numpy(zero_copy_only=False), dtype=bool)
    counts = np.bincount(parent[keep], minlength=len(codes))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values.filter(pa.array(keep)))


def map_file(path, out, mapping_path, columns=None, *, source_edition=None, target_edition=None,
             batch_size: int | None = None, progress=None) -> MapSummary:
    """Map the codes of record columns to another edition, streaming batch by batch
    (``progress``: called with each batch's record count).

    Output: the input columns unchanged, plus per mapped column ``<col>_mapped`` (the
    target codes; a code the mapping lacks is kept as it was) and ``<col>_unmapped``
    (the codes the mapping lacks). Nothing is dropped."""
    from drgdip.arrowio import (
        DEFAULT_BATCH_SIZE,
        AtomicWriter,
        InputError,
        canonical_columns,
        code_list,
        open_batches,
    )
    mapping = load_mapping_table(mapping_path)
    batches = open_batches(path, batch_size or DEFAULT_BATCH_SIZE)
    first = next(batches)
    cols = canonical_columns(first.schema)
    if not columns:
        for cand in ("diagnoses", "procedures", "code", "source"):
            if cand in cols or cand in first.schema.names:
                columns = [cand]
                break
        else:
            raise InputError(f"{path}: no diagnoses/procedures/code column; name one with --column")
    names = []
    for c in columns:
        name = cols.get(c, c)
        if name not in first.schema.names:
            raise InputError(f"{path}: no column {c!r}")
        names.append(name)
    n_codes = n_mapped = 0
    unmapped: dict[str, int] = {}
    meta = {b"drgdip.mapping": str(Path(mapping_path).name).encode()}
    if source_edition:
        meta[b"drgdip.map.from"] = source_edition.encode()
    if target_edition:
        meta[b"drgdip.map.to"] = target_edition.encode()

    def convert(batch):
        nonlocal n_codes, n_mapped
        t = pa.Table.from_batches([batch])
        for name in names:
            codes = normalize_codes(code_list(t.column(name), t.num_rows))
            mapped, flags = mapping.map(codes, normalize=False)
            lost = _unmapped_lists(codes, flags)
            t = t.append_column(f"{name}_mapped", mapped).append_column(f"{name}_unmapped", lost)
            flat = pc.list_flatten(codes)
            n_codes += len(flat) - flat.null_count
            lost_flat = pc.list_flatten(lost)
            n_mapped += len(flat) - flat.null_count - len(lost_flat)
            for row in pc.value_counts(lost_flat).to_pylist():
                unmapped[row["values"]] = unmapped.get(row["values"], 0) + row["counts"]
        if progress is not None:
            progress(t.num_rows)
        return t

    t0 = convert(first)
    schema = t0.schema.with_metadata(meta)
    with AtomicWriter(out, schema) as w:
        w.write(t0.replace_schema_metadata(meta))
        for b in batches:
            w.write(convert(b).replace_schema_metadata(meta))
    return MapSummary(n_codes, n_mapped, dict(sorted(unmapped.items())))
