"""DIP keys (病种组合键), vectorised over Arrow arrays.

A DIP key is the principal diagnosis's subcategory (亚目, ``K80.1``) × the sorted set of
procedures that count (``51.2300+54.5100``); procedures whose code starts with a prefix
the policy excludes (injections, routine tests…) are dropped first. Comprehensive groups
(综合病种) use the diagnosis category (类目, ``K80``) × the case's procedure type: the
highest type among its counted procedures (相关手术 surgery > 治疗性操作 therapeutic >
诊断性操作 diagnostic), 保守治疗 conservative when none counts.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError

try:  # the project's code normaliser (codesets/normalize.py)
    from drgdip.codesets.normalize import normalize_code as _normalize_code
    from drgdip.codesets.normalize import normalize_codes as _normalize_codes
except ImportError:  # pragma: no cover - minimal local fallback: trim + upper, extension marker x kept
    _normalize_code = _normalize_codes = None

#: procedure types in rank order; the index is the type id used by the kernels.
TYPES = ("conservative", "diagnostic", "therapeutic", "surgery")
TYPE_ZH = {"conservative": "保守治疗", "diagnostic": "诊断性操作", "therapeutic": "治疗性操作", "surgery": "相关手术"}
TYPE_ID = {t: i for i, t in enumerate(TYPES)}
PROCEDURE_TYPES_CSV = Path(__file__).with_name("dip_procedure_types.csv")
NO_PROCEDURE = "none"   # procedure part of a core key without counted procedures

_SUBCAT_RE = r"^(?P<cat>[A-Z][0-9]{2})\.?(?P<sub>[0-9A-Za-z])"


def normalize_scalar(code: str | None) -> str | None:
    if code is None:
        return None
    if _normalize_code is not None:
        return _normalize_code(code)
    s = "".join(str(code).split()).upper()
    s = s[:1] + s[1:].replace("X", "x")
    return s or None


def normalize_array(arr: pa.Array) -> pa.Array:
    """Normalise codes (string or list<string>), each distinct string once: a batch holds the
    same few thousand codes many times over, so the strings are dictionary-encoded, the
    dictionary normalised, and the rows take their entry's result."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        if arr.offset:                       # a slice: from_arrays takes no null bitmap at an offset
            arr = arr.take(pa.array(np.arange(len(arr))))
        return type(arr).from_arrays(arr.offsets, normalize_array(arr.values), mask=arr.is_null())
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr.cast(pa.string()))
    return _normalize_distinct(arr.dictionary.cast(pa.string())).take(arr.indices)


def _normalize_distinct(values: pa.Array) -> pa.Array:
    if _normalize_codes is not None:
        out = _normalize_codes(values)
        return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out
    s = pc.utf8_upper(pc.replace_substring_regex(values, r"\s+", ""))  # pragma: no cover
    s = pc.replace_substring_regex(s, r"(.)X", r"\1x")  # pragma: no cover
    return pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)  # pragma: no cover


def principal(diagnoses: pa.ListArray) -> pa.Array:
    """First diagnosis of each list (null for a null or empty list); dagger pairs keep the head."""
    n = pc.fill_null(pc.list_value_length(diagnoses), 0)
    first = pc.list_element(pc.if_else(pc.greater(n, 0), diagnoses, pa.scalar([""], diagnoses.type)), 0)
    first = pc.replace_substring_regex(first, r"\+.*$", "")
    return pc.if_else(pc.equal(first, ""), pa.scalar(None, pa.string()), first)


def secondary(diagnoses: pa.ListArray) -> tuple[np.ndarray, pa.Array]:
    """(row index per secondary diagnosis, the codes) — every diagnosis after the first."""
    values, parents = _flat(diagnoses)
    if len(values) == 0:
        return parents, values
    first = np.ones(len(parents), dtype=bool)
    first[1:] = parents[1:] != parents[:-1]
    keep = ~first
    return parents[keep], values.filter(pa.array(keep))


def diagnosis_subcategory(codes: pa.Array) -> pa.Array:
    """ICD-10 subcategory (亚目) ``K80.1`` of each code; null where none can be read."""
    parts = pc.extract_regex(pc.fill_null(codes, ""), _SUBCAT_RE)
    cat = pc.struct_field(parts, [0])
    sub = pc.struct_field(parts, [1])
    out = pc.binary_join_element_wise(cat, sub, ".")
    return pc.if_else(pc.is_valid(codes), out, pa.scalar(None, pa.string()))


def diagnosis_category(subcategory: pa.Array) -> pa.Array:
    """ICD-10 category (类目) ``K80`` of a subcategory."""
    return pc.utf8_slice_codeunits(subcategory, 0, 3)


def _flat(lists: pa.ListArray) -> tuple[pa.Array, np.ndarray]:
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, parents


def _rebuild(values: pa.Array, parents: np.ndarray, n: int) -> pa.ListArray:
    counts = np.bincount(parents, minlength=n) if len(parents) else np.zeros(n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values.cast(pa.string()))


def starts_with_any(values: pa.Array, prefixes) -> np.ndarray:
    """Bool mask: the code starts with one of PREFIXES."""
    mask = np.zeros(len(values), dtype=bool)
    for p in prefixes:
        mask |= pc.fill_null(pc.starts_with(values, p), False).to_numpy(zero_copy_only=False)
    return mask


def counted_procedures(procedures: pa.ListArray, excluded=()) -> pa.ListArray:
    """Each case's counted procedures: normalised, excluded prefixes and blanks dropped,
    sorted and de-duplicated (one list per row, empty for none)."""
    values, parents = _flat(procedures)
    n = len(procedures)
    if len(values) == 0:
        return _rebuild(pa.array([], pa.string()), parents, n)
    values = normalize_array(values.cast(pa.string()))
    keep = pc.is_valid(values).to_numpy(zero_copy_only=False)
    if excluded:
        keep &= ~starts_with_any(values, excluded)
    values = values.filter(pa.array(keep))
    parents = parents[keep]
    if len(values) == 0:
        return _rebuild(values, parents, n)
    t = pa.table({"p": pa.array(parents), "v": values})
    order = pc.sort_indices(t, sort_keys=[("p", "ascending"), ("v", "ascending")]).to_numpy()
    values = values.take(pa.array(order))
    parents = parents[order]
    vnp = pc.dictionary_encode(values).indices.to_numpy(zero_copy_only=False)
    dup = np.zeros(len(parents), dtype=bool)
    dup[1:] = (parents[1:] == parents[:-1]) & (vnp[1:] == vnp[:-1])
    return _rebuild(values.filter(pa.array(~dup)), parents[~dup], n)


def procedure_key(counted: pa.ListArray) -> pa.Array:
    """``51.2300+54.5100``; ``none`` for an empty set."""
    j = pc.binary_join(counted, "+")
    return pc.if_else(pc.fill_null(pc.equal(j, ""), True), pa.scalar(NO_PROCEDURE), j)


# ---------------------------------------------------------------- procedure types

def builtin_type_table() -> dict[str, str]:
    """The package's prefix → type table (a teaching table, not an official one)."""
    with PROCEDURE_TYPES_CSV.open(encoding="utf-8") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return {r["prefix"].strip(): r["type"].strip() for r in rows}


def read_type_table(path) -> dict[str, str]:
    """A user's prefix/code → type CSV (columns ``prefix`` or ``code``, and ``type``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: procedure type table not found")
    with p.open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    out = {}
    for i, r in enumerate(rows, start=2):
        key = (r.get("prefix") or r.get("code") or "").strip()
        typ = (r.get("type") or "").strip()
        if not key or typ not in TYPES[1:]:
            raise InputError(f"{p}: line {i}: expected a prefix/code and a type in {', '.join(TYPES[1:])}")
        out[normalize_scalar(key)] = typ
    return out


def procedure_types(values: pa.Array, table: dict[str, str]) -> np.ndarray:
    """Type id (1 diagnostic, 2 therapeutic, 3 surgery) of each code by longest prefix; -1 unknown."""
    out = np.full(len(values), -1, dtype=np.int8)
    if len(values) == 0:
        return out
    done = np.zeros(len(values), dtype=bool)
    by_len: dict[int, dict[str, str]] = {}
    for k, t in table.items():
        by_len.setdefault(len(k), {})[k] = t
    for length in sorted(by_len, reverse=True):
        keys = sorted(by_len[length])
        ids = np.array([TYPE_ID[by_len[length][k]] for k in keys], dtype=np.int8)
        head = pc.utf8_slice_codeunits(values, 0, length)
        idx = pc.index_in(head, value_set=pa.array(keys)).to_numpy(zero_copy_only=False)
        hit = ~np.isnan(idx.astype(np.float64)) & ~done
        out[hit] = ids[idx[hit].astype(np.int64)]
        done |= hit
    return out


def case_types(counted: pa.ListArray, table: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(type id per case: highest type of its counted procedures, 0 with none;
    count of procedures whose type is unknown per case)."""
    values, parents = _flat(counted)
    n = len(counted)
    t = np.zeros(n, dtype=np.int8)
    unknown = np.zeros(n, dtype=np.int64)
    if len(values):
        pt = procedure_types(values, table)
        np.maximum.at(t, parents, np.maximum(pt, 0).astype(np.int8))
        unknown = np.bincount(parents[pt < 0], minlength=n)
    return t, unknown
