"""Settlement-list quality control (医保结算清单质控): rules as data, run vectorised.

Rules live in ``qc_rules.csv`` (rule id, kind, severity, fields, params, zh, en) and the
code ranges they name in ``qc_code_lists.csv``. Each *kind* is one vectorised check
below; a rule is a kind plus its parameters, so a region adds or tunes rules by editing
data. :func:`run_qc` returns one row per finding:

``id`` (the record's id), ``rule``, ``severity``, ``field`` (``diagnoses[2]`` names the
2nd code of the list), ``value`` (what was read, as text), ``message``.

A rule whose inputs are absent (no such column, no code table) does not run; it never
fires on missing inputs. Findings are ordered by record, then rule order, then field.
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError
from drgdip.codesets.fields import (
    GROUPER_NUMBERS,
    canonical_columns,
    code_list,
    grouper_limits,
    grouping_problems,
    numeric,
    pricing_problems,
    text,
)
from drgdip.codesets.normalize import normalize_codes, split_pairs
from drgdip.codesets.reasons import describe, reason_ids
from drgdip.codesets.record import FEE_COLUMNS
from drgdip.codesets.standards import validate_codes

FINDING_SCHEMA = pa.schema([("id", pa.string()), ("rule", pa.string()), ("severity", pa.string()),
                            ("field", pa.string()), ("value", pa.string()), ("message", pa.string())])
SEVERITIES = ("error", "warning")


@dataclass(frozen=True)
class Rule:
    rule: str
    kind: str
    severity: str
    fields: tuple[str, ...]
    params: dict
    zh: str
    en: str

    def message(self, lang: str) -> str:
        """The rule's text; a rule named by a reason code without text of its own says the reason's."""
        own = self.zh if lang == "zh" else self.en
        return own or describe(self.rule, lang)


def parse_params(text_: str) -> dict:
    """A rules table's ``params`` cell, ``key=value;key=value``, as a dict of strings."""
    out = {}
    for part in filter(None, (p.strip() for p in (text_ or "").split(";"))):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip()
    return out


def load_rules(path: str | os.PathLike | None = None) -> tuple[Rule, ...]:
    """The rules table (default: the package's ``qc_rules.csv``)."""
    return _load_rules(str(path or Path(__file__).with_name("qc_rules.csv")))


RULE_COLUMNS = ("rule", "kind", "severity", "fields", "params", "zh", "en")


@lru_cache(maxsize=8)
def _load_rules(path: str) -> tuple[Rule, ...]:
    rules = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in RULE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: not a QC rules table, missing column(s) {', '.join(missing)} "
                             f"(needs {', '.join(RULE_COLUMNS)})")
        for n, row in enumerate(reader, 2):
            if any(row[c] is None for c in RULE_COLUMNS):
                raise InputError(f"{path}:{n}: the row has fewer cells than the header")
            if row["kind"] not in KINDS:
                raise InputError(f"{path}:{n}: rule {row['rule']} has unknown kind {row['kind']!r}")
            if row["severity"] not in SEVERITIES:
                raise InputError(f"{path}:{n}: rule {row['rule']} has unknown severity {row['severity']!r}")
            if not (row["zh"] or row["en"]) and row["rule"] not in reason_ids():
                raise InputError(f"{path}:{n}: rule {row['rule']} has no message and is no reason code")
            rules.append(Rule(row["rule"], row["kind"], row["severity"],
                              tuple(f for f in row["fields"].split("|") if f),
                              parse_params(row["params"]), row["zh"], row["en"]))
    return tuple(rules)


@lru_cache(maxsize=8)
def code_lists(path: str | None = None) -> dict[str, tuple[tuple[str, str], ...]]:
    """list name → ((from, to), ...) code ranges, from ``qc_code_lists.csv``."""
    path = path or str(Path(__file__).with_name("qc_code_lists.csv"))
    out: dict[str, list] = {}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["list"], []).append((row["from"], row["to"]))
    return {k: tuple(v) for k, v in out.items()}


def in_ranges(codes: pa.Array, ranges) -> pa.Array:
    """True where a code's leading characters fall in one of the (from, to) ranges.

    Each range compares the code's first len(from) characters, so ``O00``–``O99`` holds
    every code of categories O00 to O99 and ``65``–``71`` every procedure of those
    2-digit categories."""
    hit = pa.array(np.zeros(len(codes), dtype=bool))
    for lo, hi in ranges:
        key = pc.utf8_slice_codeunits(codes, 0, len(lo))
        inside = pc.and_(pc.greater_equal(key, lo), pc.less_equal(key, hi))
        hit = pc.or_(hit, pc.fill_null(inside, False))
    return hit


def by_distinct(values: pa.Array, fn):
    """``fn(values)`` for an elementwise ``fn``, computed once per distinct value: the values are
    dictionary-encoded (a null as one more entry, so ``fn(null)`` is what a null gets) and the
    entries' results taken back. A batch lists the same few thousand codes (or dates) over and
    over; ``fn`` may return an array or a tuple of arrays."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(values) == 0:
        return fn(values)
    enc = values if pa.types.is_dictionary(values.type) else pc.dictionary_encode(values)
    distinct = enc.dictionary
    if len(distinct) * 2 > len(values):
        return fn(values.cast(distinct.type) if pa.types.is_dictionary(values.type) else values)
    idx = pc.fill_null(enc.indices, len(distinct))
    out = fn(pa.concat_arrays([distinct, pa.nulls(1, distinct.type)]))
    if isinstance(out, tuple):
        return tuple(o.take(idx) for o in out)
    return out.take(idx)


# ---------------------------------------------------------------- the record view

class _View:
    """Canonical, typed columns of one batch, built on demand and cached."""

    def __init__(self, batch: pa.Table, code_tables: dict | None, limits: dict | None = None,
                 grouping=None, fund_labels=None, seen_ids=None, first_row: int = 0):
        self.t = batch
        self.n = batch.num_rows
        self.cols = canonical_columns(batch.schema)
        for name in batch.schema.names:   # grouping outputs (mdc, drg...) keep their names
            self.cols.setdefault(name, name)
        self.code_tables = code_tables or {}
        self.limits = limits
        self.grouping = grouping
        self.fund_labels = fund_labels
        self.seen_ids = seen_ids
        self.first_row = first_row       # the batch's first record's number in its file (ids of a file without any)
        self._cache: dict = {}

    def grouped(self) -> pa.Table | None:
        """The grouping results of the batch (its own mdc/reason columns, else ``grouping(batch)``)."""
        if "grouped" not in self._cache:
            if "reason" in self.t.column_names or "mdc" in self.t.column_names:
                g = self.t
            elif self.grouping is not None and self.n:
                g = self.grouping(self.t)
            else:
                g = None
            self._cache["grouped"] = g
        return self._cache["grouped"]

    def problems(self, area: str) -> list:
        """The grouper's (``group``) or pricing's (``pricing``) failing record checks (codesets.fields)."""
        key = ("problems", area)
        if key not in self._cache:
            columns = {name: self.raw(name) for name in KIND_COLUMNS[f"{'grouper' if area == 'group' else area}_check"]
                       if name in self.cols}
            self._cache[key] = (grouping_problems(columns, self.n, self.limits) if area == "group"
                                else pricing_problems(columns, self.n, self.fund_labels))
        return self._cache[key]

    def has(self, name: str) -> bool:
        return name in self.cols

    def raw(self, name: str):
        return self.t.column(self.cols[name]) if name in self.cols else None

    def ids(self) -> pa.Array:
        if "ids" not in self._cache:
            ids = text(self.raw("id"), self.n)
            fallback = pa.array([f"#{i}" for i in range(self.first_row, self.first_row + self.n)],
                                pa.string()) if not self.has("id") else None
            self._cache["ids"] = fallback if fallback is not None else ids
        return self._cache["ids"]

    def codes(self, name: str) -> pa.ListArray:
        key = ("codes", name)
        if key not in self._cache:
            lists = code_list(self.raw(name), self.n)
            if lists.offset:                 # a slice: from_arrays takes no null bitmap at an offset
                lists = lists.take(pa.array(np.arange(len(lists))))
            # each distinct code normalised once (normalize_codes, value by value, gives the same lists)
            values = by_distinct(lists.values.cast(pa.string()), normalize_codes)
            self._cache[key] = pa.ListArray.from_arrays(lists.offsets, values, mask=lists.is_null())
        return self._cache[key]

    def flat(self, name: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """(codes, row index, 0-based position in the list) of every listed code."""
        key = ("flat", name)
        if key not in self._cache:
            lists = self.codes(name)
            values = pc.list_flatten(lists)
            parent = np.asarray(pc.list_parent_indices(lists), dtype=np.int64)
            first = np.searchsorted(parent, parent, side="left")
            pos = np.arange(len(parent), dtype=np.int64) - first
            self._cache[key] = (values, parent, pos)
        return self._cache[key]

    def number(self, name: str) -> pa.Array:
        key = ("num", name)
        if key not in self._cache:
            self._cache[key] = numeric(self.raw(name), self.n)[0]
        return self._cache[key]

    def string(self, name: str) -> pa.Array:
        key = ("str", name)
        if key not in self._cache:
            self._cache[key] = text(self.raw(name), self.n)
        return self._cache[key]

    def date(self, name: str) -> pa.Array:
        key = ("date", name)
        if key not in self._cache:
            raw = self.raw(name)
            if isinstance(raw, pa.ChunkedArray):
                raw = raw.combine_chunks()
            if pa.types.is_timestamp(raw.type) or pa.types.is_date(raw.type):
                d = raw.cast(pa.timestamp("s")) if pa.types.is_date(raw.type) else raw
            else:
                d = by_distinct(self.string(name), _read_dates)      # a batch has few distinct dates
            self._cache[key] = d
        return self._cache[key]


def _read_dates(s: pa.Array) -> pa.Array:
    """Text dates (``YYYY-MM-DD``, ``YYYY/MM/DD``, ``YYYYMMDD``, a time after them) as timestamps;
    null when unreadable or impossible."""
    s = pc.replace_substring(s, "/", "-")
    s = pc.replace_substring_regex(s, r"^(\d{4})(\d{2})(\d{2})", r"\1-\2-\3")
    s = pc.utf8_slice_codeunits(s, 0, 10)
    d = pc.strptime(s, format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls 2024-02-31 over to March: the day read must be the day written
    written = pc.cast(pc.utf8_slice_codeunits(pc.if_else(pc.is_valid(d), s, None), 8, 10), pa.int64())
    same = pc.equal(pc.day(d), written)
    return pc.if_else(pc.fill_null(same, False), d, pa.scalar(None, d.type))


# ---------------------------------------------------------------- findings

@dataclass
class _Hits:
    rows: np.ndarray           # record row index per finding
    field: object              # str or pa.Array
    value: pa.Array            # as text
    pos: np.ndarray | None = None
    detail: pa.Array | None = None   # optional reason code appended to the message


def _list_field(name: str, pos: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(pa.scalar(f"{name}["), pa.array(pos + 1).cast(pa.string()),
                                       pa.scalar("]"), "")


def _mask_rows(mask: pa.Array) -> np.ndarray:
    return np.flatnonzero(np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool))


def _k_code_format(v: _View, r: Rule):
    name = r.fields[0]
    if not v.has(name):
        return None
    values, parent, pos = v.flat(name)
    problem = by_distinct(values, lambda c: validate_codes(c, r.params["standard"], normalize=False))
    sel = _mask_rows(pc.is_valid(problem))
    return _Hits(parent[sel], _list_field(name, pos[sel]), values.take(sel), pos[sel], problem.take(sel))


def _k_code_unknown(v: _View, r: Rule):
    name = r.fields[0]
    table = v.code_tables.get(r.params["table"])
    if table is None or not v.has(name):
        return None
    values, parent, pos = v.flat(name)

    def unknown_code(c):
        well_formed = pc.is_null(validate_codes(c, r.params["standard"], normalize=False))
        return pc.and_(pc.and_(pc.is_valid(c), well_formed), pc.less(table.lookup(c, normalize=False), 0))
    sel = _mask_rows(by_distinct(values, unknown_code))
    return _Hits(parent[sel], _list_field(name, pos[sel]), values.take(sel), pos[sel])


def _k_list_empty(v: _View, r: Rule):
    name = r.fields[0]
    if not v.has(name):
        return None
    first = pc.list_element(pc.if_else(pc.greater(pc.fill_null(pc.list_value_length(v.codes(name)), 0), 0),
                                       v.codes(name), pa.scalar([None], pa.list_(pa.string()))), 0)
    rows = _mask_rows(pc.is_null(first))
    return _Hits(rows, f"{name}[1]", pa.nulls(len(rows), pa.string()))


def _principal(v: _View, name: str) -> pa.Array:
    lists = v.codes(name)
    has = pc.greater(pc.fill_null(pc.list_value_length(lists), 0), 0)
    return pc.if_else(has, pc.list_element(pc.if_else(has, lists, pa.scalar([None], pa.list_(pa.string()))), 0),
                      pa.scalar(None, pa.string()))


def _k_principal_in_list(v: _View, r: Rule):
    name = r.fields[0]
    if not v.has(name):
        return None
    principal = _principal(v, name)

    def listed(codes):
        head, tail = split_pairs(codes)
        hit = in_ranges(head, code_lists()[r.params["list"]])
        if r.params.get("asterisk") == "1":
            # a manifestation code written alone (with its * and no dagger code before it)
            lone = pc.and_(pc.is_null(tail), pc.fill_null(pc.ends_with(head, "*"), False))
            hit = pc.or_(hit, lone)
        return hit
    rows = _mask_rows(by_distinct(principal, listed))
    return _Hits(rows, f"{name}[1]", principal.take(rows))


def _sex(v: _View) -> pa.Array:
    return v.string("sex")


def _k_sex_code_list(v: _View, r: Rule):
    name = r.fields[1]
    if not (v.has("sex") and v.has(name)):
        return None
    values, parent, pos = v.flat(name)
    ranges = code_lists()[r.params["list"]]

    def listed(codes):
        head, tail = split_pairs(codes)
        return pc.or_(in_ranges(head, ranges), in_ranges(pc.fill_null(tail, ""), ranges))
    hit = by_distinct(values, listed)
    sex_of_code = _sex(v).take(pa.array(parent))
    hit = pc.and_(hit, pc.fill_null(pc.equal(sex_of_code, r.params["conflict_sex"]), False))
    sel = _mask_rows(hit)
    value = pc.binary_join_element_wise(pa.scalar("sex="), sex_of_code.take(sel), pa.scalar(" "),
                                        values.take(sel), "")
    return _Hits(parent[sel], _list_field(name, pos[sel]), value, pos[sel])


def _k_sex_mdc(v: _View, r: Rule):
    if not v.has("sex"):
        return None
    grouped = v.grouped()
    if grouped is None or "mdc" not in grouped.column_names:
        return None
    mdc = text(grouped.column("mdc"), v.n)
    mdc = pc.utf8_slice_codeunits(pc.replace_substring_regex(pc.utf8_upper(mdc), "^MDC", ""), 0, 1)
    sex = _sex(v)
    hit = pa.array(np.zeros(v.n, dtype=bool))
    for letter, required in r.params.items():
        conflict = pc.and_(pc.equal(mdc, letter), pc.and_(pc.is_in(sex, value_set=pa.array(["1", "2"])),
                                                          pc.not_equal(sex, required)))
        hit = pc.or_(hit, pc.fill_null(conflict, False))
    rows = _mask_rows(hit)
    value = pc.binary_join_element_wise(pa.scalar("sex="), sex.take(rows), pa.scalar(" mdc="), mdc.take(rows), "")
    return _Hits(rows, "sex", value)


def _k_age_code_list(v: _View, r: Rule):
    name = r.fields[-1]
    if not v.has(name) or not (v.has("age") or v.has("age_days")):
        return None
    values, parent, pos = v.flat(name)
    hit = by_distinct(values, lambda c: in_ranges(split_pairs(c)[0], code_lists()[r.params["list"]]))
    age = v.number("age") if v.has("age") else pa.nulls(v.n, pa.float64())
    days = v.number("age_days") if v.has("age_days") else pa.nulls(v.n, pa.float64())
    bad = pa.array(np.zeros(v.n, dtype=bool))
    if "max_age_days" in r.params:
        limit = float(r.params["max_age_days"])
        older = pc.or_(pc.fill_null(pc.greater(days, limit), False), pc.fill_null(pc.greater_equal(age, 1), False))
        bad = pc.or_(bad, older)
    if "min_age" in r.params:
        bad = pc.or_(bad, pc.fill_null(pc.less(age, float(r.params["min_age"])), False))
    if "max_age" in r.params:
        bad = pc.or_(bad, pc.fill_null(pc.greater(age, float(r.params["max_age"])), False))
    idx = pa.array(parent)
    hit = pc.and_(hit, bad.take(idx))
    sel = _mask_rows(hit)
    rows = parent[sel]
    value = pc.binary_join_element_wise(
        pa.scalar("age="), pc.fill_null(age.take(pa.array(rows)).cast(pa.string()), ""),
        pa.scalar(" age_days="), pc.fill_null(days.take(pa.array(rows)).cast(pa.string()), ""),
        pa.scalar(" "), values.take(sel), "")
    return _Hits(rows, _list_field(name, pos[sel]), value, pos[sel])


def _k_duplicate_codes(v: _View, r: Rule):
    name = r.fields[0]
    if not v.has(name):
        return None
    values, parent, pos = v.flat(name)
    if len(values) == 0:
        return _Hits(np.zeros(0, np.int64), name, pa.array([], pa.string()))
    t = pa.table({"row": parent, "code": values, "pos": pos}).filter(pc.is_valid(values))
    first = t.group_by(["row", "code"]).aggregate([("pos", "min"), ("pos", "count")])
    dup = first.filter(pc.greater(first["pos_count"], 1))
    # report every later occurrence of a code already listed in the same record
    later = t.join(dup, ["row", "code"], join_type="inner")
    later = later.filter(pc.greater(later["pos"], later["pos_min"]))
    later = later.sort_by([("row", "ascending"), ("pos", "ascending")])
    p = later["pos"].to_numpy()
    return _Hits(later["row"].to_numpy(), _list_field(name, p), later["code"].combine_chunks(), p)


def _k_not_positive(v: _View, r: Rule):
    name = r.fields[0]
    if not v.has(name):
        return None
    x = v.number(name)
    rows = _mask_rows(pc.less_equal(x, 0))
    return _Hits(rows, name, x.take(pa.array(rows)).cast(pa.string()))


def _k_date_order(v: _View, r: Rule):
    a, b = r.fields
    if not (v.has(a) and v.has(b)):
        return None
    rows = _mask_rows(pc.less(v.date(b), v.date(a)))
    idx = pa.array(rows)
    value = pc.binary_join_element_wise(v.string(a).take(idx), v.string(b).take(idx), " > ")
    return _Hits(rows, f"{a}|{b}", value)


def _k_cost_sum(v: _View, r: Rule):
    name = r.fields[0]
    fees = [f for f in FEE_COLUMNS if v.has(f)]
    if not v.has(name) or not fees:
        return None
    total = v.number(name)
    parts = [v.number(f) for f in fees]
    any_fee = parts[0].is_valid()
    acc = pc.fill_null(parts[0], 0.0)
    for p in parts[1:]:
        any_fee = pc.or_(any_fee, p.is_valid())
        acc = pc.add(acc, pc.fill_null(p, 0.0))
    # compare in cents so float noise never fires the rule
    diff = pc.abs(pc.subtract(pc.round(pc.multiply(total, 100)), pc.round(pc.multiply(acc, 100))))
    tol = round(float(r.params.get("tolerance", "0.01")) * 100)
    rows = _mask_rows(pc.and_(any_fee, pc.greater(diff, tol)))
    idx = pa.array(rows)
    value = pc.binary_join_element_wise(pc.round(total.take(idx), 2).cast(pa.string()),
                                        pc.round(acc.take(idx), 2).cast(pa.string()), " != ")
    return _Hits(rows, name, value)


def _k_field_format(v: _View, r: Rule):
    name = r.fields[0]
    if not v.has(name):
        return None
    problem = by_distinct(v.string(name), lambda c: validate_codes(c, r.params["standard"]))
    rows = _mask_rows(pc.is_valid(problem))
    idx = pa.array(rows)
    return _Hits(rows, name, v.string(name).take(idx), None, problem.take(idx))


def _k_fee_without_code(v: _View, r: Rule):
    fee, name = r.fields
    if not (v.has(fee) and v.has(name)):
        return None
    charged = pc.fill_null(pc.greater(v.number(fee), 0), False)
    principal = _principal(v, name)
    rows = _mask_rows(pc.and_(charged, pc.is_null(principal)))
    value = pc.binary_join_element_wise(pa.scalar(f"{fee}="), v.number(fee).take(pa.array(rows)).cast(pa.string()),
                                        pa.scalar(f" {name}[1]=(none)"), "")
    return _Hits(rows, f"{fee}|{name}[1]", value)


def _problem_hits(v: _View, r: Rule, area: str):
    """Records failing the grouper's or pricing's check named by the rule (codesets.fields)."""
    found = [p for p in v.problems(area) if p.reason == r.rule]
    if not found:
        return None
    rows, fields, values, order = [], [], [], []
    for k, p in enumerate(found):
        sel = np.flatnonzero(p.mask)
        rows.append(sel)
        fields.append(pa.array([p.field] * len(sel), pa.string()))
        values.append(p.value.take(pa.array(sel, pa.int64())).cast(pa.string()))
        order.append(np.full(len(sel), k, np.int64))
    return _Hits(np.concatenate(rows), pa.concat_arrays(fields), pa.concat_arrays(values), np.concatenate(order))


def _k_grouper_check(v: _View, r: Rule):
    return _problem_hits(v, r, "group")


def _k_pricing_check(v: _View, r: Rule):
    return _problem_hits(v, r, "pricing")


def _k_grouping_reason(v: _View, r: Rule):
    """Records the grouping results give this rule's reason (conflicts only the scheme can tell)."""
    grouped = v.grouped()
    if grouped is None or "reason" not in grouped.column_names:
        return None
    reason = text(grouped.column("reason"), v.n)
    rows = _mask_rows(pc.equal(reason, r.rule))
    idx = pa.array(rows, pa.int64())
    mdc = text(grouped.column("mdc"), v.n) if "mdc" in grouped.column_names else pa.nulls(v.n, pa.string())
    value = pc.binary_join_element_wise(pa.scalar("diagnoses[1]="), pc.fill_null(_principal(v, "diagnoses").take(idx)
                                        if v.has("diagnoses") else pa.nulls(len(rows), pa.string()), ""),
                                        pa.scalar(" mdc="), pc.fill_null(mdc.take(idx), ""), "")
    return _Hits(rows, "reason", value)


def _k_missing(v: _View, r: Rule):
    """A field left empty (a value present but unreadable is another rule's finding)."""
    name = r.fields[0]
    if not v.has(name):
        return None
    rows = _mask_rows(pc.is_null(v.string(name)))
    return _Hits(rows, name, pa.nulls(len(rows), pa.string()))


def _k_date_unreadable(v: _View, r: Rule):
    """A date present but not a calendar date in a layout the checks read."""
    rows, fields, values, order = [], [], [], []
    for k, name in enumerate(f for f in r.fields if v.has(f)):
        sel = _mask_rows(pc.and_(pc.is_valid(v.string(name)), pc.is_null(v.date(name))))
        rows.append(sel)
        fields.append(pa.array([name] * len(sel), pa.string()))
        values.append(v.string(name).take(pa.array(sel, pa.int64())))
        order.append(np.full(len(sel), k, np.int64))
    if not rows:
        return None
    return _Hits(np.concatenate(rows), pa.concat_arrays(fields), pa.concat_arrays(values), np.concatenate(order))


def _k_duplicate_id(v: _View, r: Rule):
    """Every later record with an id already met (in this batch, or in earlier batches of the file)."""
    if not v.has("id"):
        return None
    ids = v.string("id")
    n = v.n
    t = pa.table({"id": ids, "row": pa.array(np.arange(n, dtype=np.int64))}).filter(pc.is_valid(ids))
    first = t.group_by("id").aggregate([("row", "min")])
    later = t.join(first, "id", join_type="inner")
    dup = np.zeros(n, dtype=bool)
    lr = later["row"].to_numpy()
    dup[lr[lr > later["row_min"].to_numpy()]] = True
    if isinstance(v.seen_ids, RepeatedIds):
        dup |= v.seen_ids.met_before(ids, first["id"])
    elif v.seen_ids is not None:
        # the batch's distinct ids against those met before: work in the batch's size, not the file's
        distinct = first["id"].to_pylist()
        if v.seen_ids:
            seen = v.seen_ids
            before = np.fromiter((x in seen for x in distinct), dtype=bool, count=len(distinct))
            if before.any():
                dup |= _np_bool(pc.is_in(ids, value_set=pa.array([x for x, b in zip(distinct, before) if b],
                                                                  pa.string())))
        v.seen_ids.update(distinct)
    rows = np.flatnonzero(dup)
    return _Hits(rows, "id", ids.take(pa.array(rows, pa.int64())))


class RepeatedIds:
    """The duplicate-id state of one file in bounded memory (what :func:`check_file` keeps instead
    of every id met): the ids occurring more than once in the file, found first by a read of its
    id column alone (:func:`arrowio.repeated_values`), and which of them were met so far (a byte
    each). Memory grows with the file's repeated ids, not with its records."""

    def __init__(self, repeated: pa.Array):
        self.repeated = repeated
        self.met = np.zeros(len(repeated), dtype=bool)

    def met_before(self, ids: pa.Array, distinct) -> np.ndarray:
        """True for each of IDS (a batch's) met in an earlier batch; DISTINCT (the batch's distinct
        non-null ids) are then marked met."""
        if not len(self.repeated):
            return np.zeros(len(ids), dtype=bool)
        if isinstance(distinct, pa.ChunkedArray):
            distinct = distinct.combine_chunks()
        at = np.asarray(pc.index_in(distinct, value_set=self.repeated).drop_null().to_numpy(), np.int64)
        before = at[self.met[at]]
        self.met[at] = True
        if not before.size:
            return np.zeros(len(ids), dtype=bool)
        return _np_bool(pc.is_in(ids, value_set=self.repeated.take(pa.array(before, pa.int64()))))


def _np_bool(a) -> np.ndarray:
    return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool)


KINDS = {
    "code_format": _k_code_format, "code_unknown": _k_code_unknown, "list_empty": _k_list_empty,
    "principal_in_list": _k_principal_in_list, "sex_code_list": _k_sex_code_list,
    "sex_mdc": _k_sex_mdc, "age_code_list": _k_age_code_list,
    "duplicate_codes": _k_duplicate_codes, "not_positive": _k_not_positive,
    "date_order": _k_date_order, "cost_sum": _k_cost_sum, "field_format": _k_field_format,
    "fee_without_code": _k_fee_without_code, "grouper_check": _k_grouper_check,
    "pricing_check": _k_pricing_check, "grouping_reason": _k_grouping_reason, "missing": _k_missing,
    "date_unreadable": _k_date_unreadable, "duplicate_id": _k_duplicate_id,
}


# ---------------------------------------------------------------- running

def _as_table(batch_or_table) -> pa.Table:
    if isinstance(batch_or_table, pa.RecordBatch):
        return pa.Table.from_batches([batch_or_table])
    if isinstance(batch_or_table, pa.Table):
        return batch_or_table
    from drgdip.arrowio import as_table
    return as_table(batch_or_table)


def run_qc(batch_or_table, rules=None, code_tables: dict | None = None, *, lang: str = "en",
           scheme=None, only: set[str] | None = None, grouping=None, fund_labels=None,
           seen_ids: set | None = None) -> pa.Table:
    """Findings of the QC rules on one batch or table (schema :data:`FINDING_SCHEMA`).

    ``rules``: a sequence of :class:`Rule` or a path to a rules CSV (default: the
    package's). ``code_tables``: ``{"diagnosis": CodeTable, "procedure": CodeTable}``;
    without them the unknown-code rules do not run. ``scheme``: the CHS-DRG scheme whose
    validation limits the grouper checks use (default: the default rules file's).
    ``grouping``: a callable table → grouping results (``mdc``, ``reason`` columns, e.g.
    ``lambda t: grouper.drg.api.group_table(t, scheme)``) for the rules only the scheme can
    decide (SEX_CONFLICT, NO_MDC...); a table that already has ``mdc``/``reason`` columns
    is its own result. ``fund_labels``: the policy's fund labels (UNKNOWN_FUND runs only
    with them). ``seen_ids``: ids met in earlier batches (updated), for QC_DUPLICATE_ID
    across a file. ``only``: run just these rule ids."""
    out = _findings(_as_table(batch_or_table), rules, code_tables, lang, scheme, only,
                    grouping=grouping, fund_labels=fund_labels, seen_ids=seen_ids)
    return out.select(FINDING_SCHEMA.names).cast(FINDING_SCHEMA)


def _findings(table: pa.Table, rules, code_tables, lang, scheme, only, *, grouping=None, fund_labels=None,
              seen_ids=None, first_row: int = 0) -> pa.Table:
    """Findings with the helper column ``_row`` (row index in ``table``)."""
    if rules is None or isinstance(rules, (str, os.PathLike)):
        rules = load_rules(rules)
    limits = grouper_limits(getattr(scheme, "validation", None))
    view = _View(table, code_tables, limits, grouping, fund_labels, seen_ids, first_row)
    ids = view.ids()
    parts = []
    for order, rule in enumerate(rules):
        if only is not None and rule.rule not in only:
            continue
        hits = KINDS[rule.kind](view, rule)
        if hits is None or len(hits.rows) == 0:
            continue
        k = len(hits.rows)
        field = hits.field if isinstance(hits.field, pa.Array) else pa.array([hits.field] * k, pa.string())
        msg = pa.array([rule.message(lang)] * k, pa.string())
        if hits.detail is not None:
            reasons = {c: describe(c, lang) for c in pc.unique(hits.detail).to_pylist() if c}
            detail = pc.take(pa.array(list(reasons.values()), pa.string()),
                             pc.index_in(hits.detail, value_set=pa.array(list(reasons.keys()), pa.string())))
            msg = pc.binary_join_element_wise(msg, detail, ": ")
        parts.append(pa.table({
            "_row": pa.array(hits.rows, pa.int64()),
            "_order": pa.array(np.full(k, order, np.int64)),
            "_pos": pa.array(hits.pos if hits.pos is not None else np.full(k, -1, np.int64), pa.int64()),
            "id": ids.take(pa.array(hits.rows, pa.int64())),
            "rule": pa.array([rule.rule] * k, pa.string()),
            "severity": pa.array([rule.severity] * k, pa.string()),
            "field": field.cast(pa.string()),
            "value": hits.value.cast(pa.string()),
            "message": msg,
        }))
    if not parts:
        return pa.schema([("_row", pa.int64()), *FINDING_SCHEMA]).empty_table()
    out = pa.concat_tables(parts).sort_by([("_row", "ascending"), ("_order", "ascending"), ("_pos", "ascending")])
    return out.select(["_row", *FINDING_SCHEMA.names])


def rules_skipped(table_or_schema, rules=None, code_tables: dict | None = None, *, grouping=None,
                  fund_labels=None) -> list[str]:
    """Rules that cannot run on these columns / without these code tables, grouping
    results or fund labels (for reporting)."""
    schema = table_or_schema if isinstance(table_or_schema, pa.Schema) else table_or_schema.schema
    if rules is None or isinstance(rules, (str, os.PathLike)):
        rules = load_rules(rules)
    empty = schema.empty_table()
    if grouping is not None and "reason" not in schema.names:
        empty = empty.append_column("reason", pa.array([], pa.string())).append_column("mdc", pa.array([], pa.string()))
    view = _View(empty, code_tables, grouper_limits(), None, fund_labels, set())
    return [r.rule for r in rules if KINDS[r.kind](view, r) is None]


# ---------------------------------------------------------------- files and summaries

@dataclass
class CheckSummary:
    records: int
    findings: int
    by_rule: pa.Table        # rule, severity, findings, records
    by_hospital: pa.Table    # hospital_id, rule, severity, findings, records
    skipped: list


def _count(findings: pa.Table, hospital: pa.Array) -> pa.Table:
    t = pa.table({"hospital_id": pc.fill_null(hospital.take(findings["_row"]), "(none)"),
                  "rule": findings["rule"], "severity": findings["severity"], "_row": findings["_row"]})
    return t.group_by(["hospital_id", "rule", "severity"]).aggregate(
        [("_row", "count"), ("_row", "count_distinct")]).rename_columns(
        ["hospital_id", "rule", "severity", "findings", "records"])


def summarize(parts: list[pa.Table], rules) -> tuple[pa.Table, pa.Table]:
    """(by rule, by hospital and rule) from per-batch counts, in rule order then hospital."""
    order = {r.rule: i for i, r in enumerate(rules)}
    if parts:
        t = pa.concat_tables(parts).group_by(["hospital_id", "rule", "severity"]).aggregate(
            [("findings", "sum"), ("records", "sum")]).rename_columns(
            ["hospital_id", "rule", "severity", "findings", "records"])
    else:
        t = pa.table({"hospital_id": pa.array([], pa.string()), "rule": pa.array([], pa.string()),
                      "severity": pa.array([], pa.string()), "findings": pa.array([], pa.int64()),
                      "records": pa.array([], pa.int64())})
    t = t.append_column("_o", pa.array([order.get(r, len(order)) for r in t["rule"].to_pylist()], pa.int64()))
    by_h = t.sort_by([("hospital_id", "ascending"), ("_o", "ascending")]).drop_columns(["_o"])
    by_r = t.group_by(["rule", "severity", "_o"]).aggregate([("findings", "sum"), ("records", "sum")])
    by_r = by_r.sort_by([("_o", "ascending")]).drop_columns(["_o"]).rename_columns(
        ["rule", "severity", "findings", "records"])
    return by_r, by_h


def check_file(path, out=None, *, rules=None, code_tables=None, lang="en", only=None,
               batch_size: int | None = None, scheme=None, grouping=None, fund_labels=None,
               progress=None) -> CheckSummary:
    """Run the QC rules over a record file batch by batch; write findings to ``out``.

    ``progress``: called with the number of records of each batch done (a progress bar's update).

    ``scheme``, ``grouping``, ``fund_labels``: as for :func:`run_qc`. Duplicate ids are
    found across the whole file in bounded memory: a first read of the id column alone finds
    the ids the file repeats (:class:`RepeatedIds`; hash partitions spilled beside ``out``, or
    in the system's temporary folder), and the summary counts are merged batch by batch.
    A file without an id column numbers its records ``#0``, ``#1``... across the file.
    Files are read and written through the project's I/O module (``arrowio``, imported here only)."""
    from drgdip.arrowio import (
        DEFAULT_BATCH_SIZE,
        AtomicWriter,
        file_columns,
        open_batches,
    )
    if rules is None or isinstance(rules, (str, os.PathLike)):
        rules = load_rules(rules)
    counts, records, total, skipped = [], 0, 0, None
    names = file_columns(path)
    read = read_columns(names, rules, grouping is not None)
    seen = _file_repeats(path, names, rules, only, batch_size or DEFAULT_BATCH_SIZE, out)
    writer = AtomicWriter(out, FINDING_SCHEMA) if out else None
    ctx = writer if writer is not None else _Null()
    batches = open_batches(path, batch_size or DEFAULT_BATCH_SIZE, columns=read)
    end = object()
    # the next batch is read and the previous findings written in threads while a batch is checked
    # (Arrow releases the GIL for file I/O); at most one batch waits on each side
    with ctx as w, ThreadPoolExecutor(1, thread_name_prefix="drgdip-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="drgdip-write") as writing:
        pending_read, pending_write = reader.submit(next, batches, end), None
        while True:
            batch = pending_read.result()
            if batch is end:
                break
            pending_read = reader.submit(next, batches, end)
            table = pa.Table.from_batches([batch])
            if skipped is None:
                skipped = rules_skipped(table.schema, rules, code_tables, grouping=grouping, fund_labels=fund_labels)
            f = _findings(table, rules, code_tables, lang, scheme, only, grouping=grouping,
                          fund_labels=fund_labels, seen_ids=seen, first_row=records)
            cols = canonical_columns(table.schema)
            hospital = text(table.column(cols["hospital_id"]) if "hospital_id" in cols else None, table.num_rows)
            counts = [_merge_counts([*counts, _count(f, hospital)])]    # one table of counts, not one a batch
            if w is not None:
                if pending_write is not None:
                    pending_write.result()
                pending_write = writing.submit(w.write, f.select(FINDING_SCHEMA.names).cast(FINDING_SCHEMA))
            records += table.num_rows
            total += f.num_rows
            if progress is not None:
                progress(table.num_rows)
        if pending_write is not None:
            pending_write.result()
    by_rule, by_hospital = summarize(counts, rules)
    return CheckSummary(records, total, by_rule, by_hospital, skipped or [])


def _merge_counts(parts: list[pa.Table]) -> pa.Table:
    """Per-batch counts (:func:`_count`) summed into one table, groups in order of first appearance."""
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts).group_by(["hospital_id", "rule", "severity"], use_threads=False).aggregate(
        [("findings", "sum"), ("records", "sum")]).rename_columns(
        ["hospital_id", "rule", "severity", "findings", "records"])


def _file_repeats(path, names, rules, only, batch_size, out) -> RepeatedIds | None:
    """The file's repeated ids (a read of its id column alone) when a duplicate-id rule runs on it."""
    from drgdip.arrowio import open_batches, repeated_values
    if not any(r.kind == "duplicate_id" and (only is None or r.rule in only) for r in rules):
        return None
    id_column = canonical_columns(pa.schema([(n, pa.null()) for n in names])).get("id")
    if id_column is None:
        return None

    def ids():
        return (text(b.column(0), b.num_rows) for b in open_batches(path, batch_size, columns=[id_column]))
    spill = None
    if out is not None:
        spill = Path(out).absolute().parent
        while not spill.is_dir():
            spill = spill.parent
    return RepeatedIds(repeated_values(ids, spill)[0])


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def load_code_tables(folder=None, diagnosis=None, procedure=None) -> dict:
    """{"diagnosis": CodeTable, "procedure": CodeTable} from explicit paths or a folder
    holding ``ZD_INFO.dat`` / ``SS_INFO.dat``; missing ones are left out."""
    from drgdip.codesets.code_tables import load_code_table
    out = {}
    if folder:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder of code tables")
        for kind, name in (("diagnosis", "ZD_INFO.dat"), ("procedure", "SS_INFO.dat")):
            if (folder / name).exists():
                out[kind] = load_code_table(folder / name)
        if not out:
            raise InputError(f"{folder}: not a folder of code tables (neither ZD_INFO.dat nor SS_INFO.dat in it)")
    for label, path in (("diagnosis", diagnosis), ("procedure", procedure)):
        if path and not Path(path).is_file():
            raise InputError(f"{path}: no such {label} code table")
    if diagnosis:
        out["diagnosis"] = load_code_table(diagnosis)
    if procedure:
        out["procedure"] = load_code_table(procedure)
    return out


#: rule kinds that check codes only (what ``drgdip codes validate`` runs)
CODE_KINDS = ("code_format", "code_unknown", "field_format")


#: canonical columns a kind reads besides its rule's ``fields`` (the grouping results ``mdc`` and
#: ``reason`` are read whenever the file has them; with a ``grouping`` callable, the grouper's columns)
KIND_COLUMNS = {"age_code_list": ("age", "age_days"), "sex_code_list": ("sex",), "sex_mdc": ("sex",),
                "cost_sum": FEE_COLUMNS, "grouping_reason": ("diagnoses",),
                # what codesets.fields.grouping_problems / pricing_problems read (all their checks at once)
                "grouper_check": (*GROUPER_NUMBERS, "sex"),
                "pricing_check": ("total_cost", "personal_share", "fund", "hospital_id", "discharge_date")}


def read_columns(names, rules=None, grouping: bool = False, only: set[str] | None = None) -> list[str]:
    """The input columns :func:`check_file` reads of a file with columns NAMES, in file order: those
    its rules read (their ``fields`` and :data:`KIND_COLUMNS`), the id and hospital (findings and
    summary), the file's own ``mdc``/``reason``, and with ``grouping`` the grouper's
    (``codesets.record.GROUPING_COLUMNS``)."""
    from drgdip.codesets.record import GROUPING_COLUMNS
    if rules is None or isinstance(rules, (str, os.PathLike)):
        rules = load_rules(rules)
    roles = canonical_columns(pa.schema([(n, pa.null()) for n in names]))
    want = {"id", "hospital_id", "mdc", "reason"}
    for r in rules:
        if only is None or r.rule in only:
            want.update(r.fields)
            want.update(KIND_COLUMNS.get(r.kind, ()))
    if grouping:
        want.update(GROUPING_COLUMNS)
    need = {roles.get(c, c) for c in want}
    return [n for n in names if n in need]
