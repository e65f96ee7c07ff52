"""Smart monitoring (智能监控) of DRG/DIP payment: behaviour rules over grouped records.

:func:`monitor` runs the rule library (``monitoring_rules.csv``: rule id, kind, severity,
params, Chinese name, sentence templates in Chinese and English) over discharge records,
grouped or not (records without ``drg``/``adrg`` columns are grouped on the fly, batch by
batch, with the given scheme or the built-in teaching scheme), and returns one row per
finding (:data:`FINDING_SCHEMA`):

``id`` (deterministic: rule + the records or the hospital/doctor it is about), ``rule``,
``severity``, ``hospital_id``, ``doctor_id``, ``patient_id``, ``record_ids`` (``|``-joined,
in date order), ``figures`` (JSON of the numbers that triggered it and the thresholds),
``message_zh``, ``message_en``, ``status`` (``flagged`` or ``not_checked``) and ``reason``
(``MONITOR_FLAGGED`` or ``MONITOR_INPUT_MISSING``, see docs/reasons.md).

Kinds (docs/monitoring.md gives each formula and a worked example):

- ``split_admission`` 分解住院: the same patient back in the same hospital at most
  ``window_days`` after the previous discharge (0 = the same day), with the same principal
  diagnosis category (first ``category_chars`` characters), the same ADRG, or the same DIP
  group (``dip_group`` column, when the records carry one).
- ``overlapping_stay`` 重复/重叠住院: two stays of the same patient (any hospitals) whose
  dates overlap (admission before the other's discharge), or the same dates twice.
- ``low_standard`` 低标准入院: stay ≤ ``max_los`` days and cost ≤ ``max_cost_ratio`` × the
  group's mean cost, or a principal diagnosis in the policy's ``outpatient`` code ranges.
- ``under_service`` 服务不足/费用转移: cost ≤ ``max_cost_ratio`` × group mean cost and stay
  ≤ ``max_los_ratio`` × the group's mean stay.
- ``cc_share`` 高套分组: per hospital (or doctor), the share of cases in CC/MCC DRGs
  against the share expected from the region's share in the same ADRGs; normal
  approximation of the binomial, two-sided p-value ``erfc(|z|/√2)``.
- ``cc_share_history`` 高套分组（与本院历史比）: as ``cc_share``, but the expected share of
  each case is the hospital's own share in that ADRG in the ``history`` records (ADRGs with
  fewer than ``min_history_cases`` eligible history cases are left out); runs only when
  history is given.
- ``outpatient_shift`` 费用转移（入院前门诊）: a stay whose patient's outpatient costs (at
  the same hospital when ``same_hospital=1``) from ``days_before`` days before admission to
  the admission day reach ``min_share`` × the stay's cost; runs only with ``outpatient``
  records (``patient_id``, ``hospital_id``, ``visit_date``, ``total_cost``).
- ``cmi_z`` 高套分组: per hospital, observed Σ RW against Σ of the region's mean RW of
  each case's ADRG; z = (observed − expected) / √(Σ variance of RW within the ADRG).
- ``cost_concentration`` 高/低倍率病例集中: per hospital, the share of cases above ``k`` ×
  (or below ``k`` ×) the group mean cost against the region's share; binomial z-test.
- ``cc_without_cost`` 高套分组（病例）: in the hospitals (or doctors) that the ``of`` rule
  flagged, each case of a CC/MCC DRG whose cost is at most ``max_cost_ratio`` × the mean
  cost of the same ADRG's DRG without CC (suffix ``base_suffix``): the CC/MCC that moved
  the case up brought no cost with it.

Group norms (mean cost, mean stay, RW) come from a weight table (``drg, weight, mean_cost,
mean_los``) when given, else from the records themselves (RW = group mean cost / mean cost
of all grouped cases).

Scale: one pass reads the records batch by batch and keeps only a compact view (ids,
dates as day numbers, group, cost, stay); with ``partitions`` > 1 that view is split by a
hash of the patient id into files in a temporary folder, and each part is sorted and
checked alone (``pyarrow.compute.sort_indices`` + numpy), so memory is bounded by one part.
Hospital and doctor statistics are sums, merged over the parts.
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from drgdip.arrowio import (
    DEFAULT_BATCH_SIZE,
    InputError,
    as_table,
    canonical_columns,
    code_list,
    day_numbers,
    numeric,
    open_batches,
    text,
)
from drgdip.codesets.qc import parse_params

HERE = Path(__file__).parent
SEVERITIES = ("error", "warning", "info")
KINDS = ("split_admission", "overlapping_stay", "low_standard", "under_service", "cc_share", "cmi_z",
         "cost_concentration", "cc_without_cost", "cc_share_history", "outpatient_shift")
EPISODE_KINDS = ("split_admission", "overlapping_stay")
EPISODE_FIELDS = ("patient_id", "admission_date", "discharge_date", "hospital_id")
GROUPED_STATUSES = ("grouped", "ambiguous")

FINDING_SCHEMA = pa.schema([
    ("id", pa.string()), ("rule", pa.string()), ("severity", pa.string()), ("hospital_id", pa.string()),
    ("doctor_id", pa.string()), ("patient_id", pa.string()), ("record_ids", pa.string()),
    ("figures", pa.string()), ("message_zh", pa.string()), ("message_en", pa.string()),
    ("status", pa.string()), ("reason", pa.string())])

#: the compact view of a record that the rules read
_COMPACT = pa.schema([
    ("row", pa.int64()), ("id", pa.string()), ("patient_id", pa.string()), ("hospital_id", pa.string()),
    ("doctor_id", pa.string()), ("adm", pa.int32()), ("dis", pa.int32()), ("principal", pa.string()),
    ("adrg", pa.string()), ("drg", pa.string()), ("grouped", pa.bool_()), ("cost", pa.float64()),
    ("los", pa.float64()), ("dip_group", pa.string())])


@dataclass(frozen=True)
class Rule:
    """One monitoring rule (监控规则): a kind and its policy parameters."""
    rule: str
    kind: str
    severity: str
    params: dict
    zh_name: str
    zh: str
    en: str

    def num(self, key: str, default: float | None = None) -> float:
        v = self.params.get(key)
        if v in (None, ""):
            if default is None:
                raise InputError(f"monitoring rule {self.rule}: parameter {key} is missing")
            return default
        try:
            return float(v)
        except ValueError:
            raise InputError(f"monitoring rule {self.rule}: parameter {key}={v!r} is not a number") from None

    def items(self, key: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in (self.params.get(key) or "").split("|") if x.strip())


def load_rules(path: str | os.PathLike | None = None, extra: str | os.PathLike | None = None) -> tuple[Rule, ...]:
    """The rule library (default ``monitoring_rules.csv``); ``extra`` adds a region's own
    rules or replaces rules of the same id."""
    rules = list(_load(str(path or HERE / "monitoring_rules.csv")))
    if extra:
        by_id = {r.rule: i for i, r in enumerate(rules)}
        for r in _load(str(extra)):
            if r.rule in by_id:
                rules[by_id[r.rule]] = r
            else:
                rules.append(r)
    return tuple(rules)


@lru_cache(maxsize=8)
def _load(path: str) -> tuple[Rule, ...]:
    if not Path(path).is_file():
        raise InputError(f"{path}: no such monitoring rules file")
    out, seen = [], set()
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"rule", "kind", "severity", "params", "zh_name", "zh", "en"}
        if not need <= set(reader.fieldnames or ()):
            raise InputError(f"{path}: a monitoring rules file needs the columns {', '.join(sorted(need))}")
        for n, row in enumerate(reader, 2):
            if row["kind"] not in KINDS:
                raise InputError(f"{path}:{n}: rule {row['rule']} has unknown kind {row['kind']!r}")
            if row["severity"] not in SEVERITIES:
                raise InputError(f"{path}:{n}: rule {row['rule']} has unknown severity {row['severity']!r}")
            if row["rule"] in seen:
                raise InputError(f"{path}:{n}: rule {row['rule']} is listed twice")
            seen.add(row["rule"])
            out.append(Rule(row["rule"], row["kind"], row["severity"], parse_params(row["params"]),
                            row["zh_name"], row["zh"], row["en"]))
    return tuple(out)


# ---------------------------------------------------------------- reading

def _principal(lists: pa.ListArray) -> pa.Array:
    has = pc.greater(pc.fill_null(pc.list_value_length(lists), 0), 0)
    safe = pc.if_else(has, lists, pa.scalar([None], pa.list_(pa.string())))
    first = pc.list_element(safe, 0)
    return pc.if_else(has, pc.utf8_upper(pc.utf8_trim_whitespace(first)), pa.scalar(None, pa.string()))


def _compact(batch, start: int, grouper) -> pa.Table:
    """The columns the rules read, canonical names, from one batch of records."""
    n = batch.num_rows
    cols = canonical_columns(batch.schema)
    if grouper is not None and not {"drg", "adrg"} <= set(batch.schema.names):
        batch = grouper.group_batch(batch)
    names = set(batch.schema.names)

    def col(name):
        return batch.column(cols[name]) if name in cols else None

    ids = text(col("id"), n)
    if ids.null_count:      # no id: "#<row>" (1-based over the whole input), as the QC findings say
        rows = pc.cast(pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64)), pa.string())
        ids = pc.coalesce(ids, pc.binary_join_element_wise(pa.scalar("#"), rows, ""))
    status = text(batch.column("status"), n) if "status" in names else pa.nulls(n, pa.string())
    grouped = pc.fill_null(pc.is_in(status, pa.array(GROUPED_STATUSES)), False)
    if "status" not in names and "drg" in names:
        grouped = pc.fill_null(pc.not_equal(text(batch.column("drg"), n), "0000"), False)
    adrg = text(batch.column("adrg"), n) if "adrg" in names else pa.nulls(n, pa.string())
    drg = text(batch.column("drg"), n) if "drg" in names else pa.nulls(n, pa.string())
    cost = numeric(col("total_cost"), n)[0]
    los = numeric(col("los_days"), n)[0]
    return pa.table([
        pa.array(np.arange(start, start + n, dtype=np.int64)), ids, text(col("patient_id"), n),
        text(col("hospital_id"), n), text(col("doctor_id"), n), day_numbers(col("admission_date"), n),
        day_numbers(col("discharge_date"), n), _principal(code_list(col("diagnoses"), n)), adrg, drg, grouped, cost, los,
        text(batch.column("dip_group"), n) if "dip_group" in names else pa.nulls(n, pa.string()),
    ], schema=_COMPACT)


def _bucket(patient: pa.Array, k: int) -> np.ndarray:
    """Part of each record: a stable hash of the patient id (FNV-1a over its bytes) mod k."""
    if k == 1:
        return np.zeros(len(patient), dtype=np.int64)
    p = pc.fill_null(patient, "")
    offsets = np.asarray(p.buffers()[1]).view(np.int32)[p.offset:p.offset + len(p) + 1].astype(np.int64)
    data = np.frombuffer(p.buffers()[2], dtype=np.uint8) if p.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    h = np.full(len(p), 1469598103934665603, dtype=np.uint64)
    prime = np.uint64(1099511628211)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max()) if len(lengths) else 0):   # loop over characters, not rows
            alive = lengths > j
            b = data[offsets[:-1][alive] + j].astype(np.uint64)
            h[alive] = (h[alive] ^ b) * prime
    return (h % np.uint64(k)).astype(np.int64)


class _Parts:
    """The compact view, whole in memory (k = 1) or split by patient into k Parquet files."""

    def __init__(self, k: int, folder: str | None):
        self.k = k
        self.mem: list[pa.Table] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="drgdip-monitor-", dir=folder) if k > 1 else None
        self.writers: dict[int, pq.ParquetWriter] = {}

    def add(self, t: pa.Table) -> None:
        if self.k == 1:
            self.mem.append(t)
            return
        b = _bucket(t["patient_id"].combine_chunks(), self.k)
        order = np.argsort(b, kind="stable")
        bs = b[order]
        cut = np.searchsorted(bs, np.arange(self.k + 1))
        ts = t.take(pa.array(order))
        for j in range(self.k):
            if cut[j + 1] > cut[j]:
                w = self.writers.get(j)
                if w is None:
                    w = self.writers[j] = pq.ParquetWriter(os.path.join(self.tmp.name, f"{j}.parquet"), _COMPACT)
                w.write_table(ts.slice(cut[j], cut[j + 1] - cut[j]))

    def parts(self):
        if self.k == 1:
            yield pa.concat_tables(self.mem).combine_chunks() if self.mem else _COMPACT.empty_table()
            return
        for w in self.writers.values():
            w.close()
        self.writers = {}
        for j in range(self.k):
            path = os.path.join(self.tmp.name, f"{j}.parquet")
            if os.path.exists(path):
                yield pq.read_table(path).combine_chunks()

    def close(self):
        for w in self.writers.values():
            w.close()
        if self.tmp is not None:
            self.tmp.cleanup()


# ---------------------------------------------------------------- group norms

@dataclass
class Norms:
    """Per DRG: mean cost, mean stay, RW; per ADRG: mean and variance of RW, CC/MCC share."""
    drg: dict[str, tuple[float, float, float]]
    adrg_rw: dict[str, tuple[float, float]]
    adrg_cc: dict[str, tuple[int, int]]
    source: str


def _norms(parts: _Parts, weights: pa.Table | None, cc_suffixes, split_suffixes) -> Norms:
    acc = []
    for t in parts.parts():
        g = t.filter(pc.and_(t["grouped"], pc.is_valid(t["drg"])))
        cost_ok = pc.fill_null(pc.greater(g["cost"], 0), False)
        g = g.filter(cost_ok)
        # cents and hundredths of a day as integers: the sums do not depend on the order of the parts
        cost = pc.cast(pc.round(pc.multiply(g["cost"], 100.0)), pa.int64())
        los = pc.cast(pc.round(pc.multiply(pc.fill_null(g["los"], 0.0), 100.0)), pa.int64())
        has_los = pc.cast(pc.is_valid(g["los"]), pa.int64())
        acc.append(pa.table({"drg": g["drg"], "adrg": pc.fill_null(g["adrg"], ""), "cost": cost,
                             "los": los, "has_los": has_los, "one": pa.array(np.ones(g.num_rows, np.int64))})
                   .group_by(["drg", "adrg"], use_threads=False).aggregate([("cost", "sum"), ("los", "sum"), ("has_los", "sum"),
                                                         ("one", "sum")]))
    t = pa.concat_tables(acc).group_by(["drg", "adrg"], use_threads=False).aggregate(
        [("cost_sum", "sum"), ("los_sum", "sum"), ("has_los_sum", "sum"), ("one_sum", "sum")]) if acc else None
    rows = t.to_pylist() if t is not None else []
    rows.sort(key=lambda r: (r["drg"], r["adrg"]))
    n_all = sum(r["one_sum_sum"] for r in rows)
    overall = sum(r["cost_sum_sum"] for r in rows) / 100.0 / n_all if n_all else float("nan")
    drg: dict[str, tuple[float, float, float]] = {}
    count: dict[str, int] = {}
    adrg_of: dict[str, str] = {}
    for r in rows:
        c = count.get(r["drg"], 0)
        prev = drg.get(r["drg"], (0.0, 0.0, 0.0))
        drg[r["drg"]] = (prev[0] + r["cost_sum_sum"], prev[1] + r["los_sum_sum"], prev[2] + r["has_los_sum_sum"])
        count[r["drg"]] = c + r["one_sum_sum"]
        adrg_of.setdefault(r["drg"], r["adrg"] or r["drg"][:3])
    norms = {}
    for d, (cs, ls, nl) in drg.items():
        mean = cs / 100.0 / count[d]
        norms[d] = (mean, ls / 100.0 / nl if nl else float("nan"), mean / overall)
    source = "records"
    if weights is not None:
        source = "weight table"
        w = {r["drg"]: r for r in weights.to_pylist()}
        for d in list(norms) + [k for k in w if k not in norms]:
            r = w.get(d)
            if r is None:
                norms.pop(d, None)
                continue
            mc = r.get("mean_cost")
            ml = r.get("mean_los")
            own = norms.get(d, (float("nan"), float("nan"), float("nan")))
            norms[d] = (mc if mc is not None else own[0], ml if ml is not None else own[1],
                        r["weight"] if r.get("weight") is not None else own[2])
    adrg_rw: dict[str, tuple[float, float]] = {}
    adrg_cc: dict[str, tuple[int, int]] = {}
    per: dict[str, list] = {}
    for d, n in count.items():
        if d in norms and math.isfinite(norms[d][2]):
            per.setdefault(adrg_of[d], []).append((n, norms[d][2], d))
    for a, lst in sorted(per.items()):
        n = sum(x[0] for x in lst)
        m = sum(x[0] * x[1] for x in lst) / n
        v = max(sum(x[0] * x[1] ** 2 for x in lst) / n - m * m, 0.0)
        adrg_rw[a] = (m, v)
        split = [x for x in lst if x[2][-1:] in split_suffixes]
        if split:
            adrg_cc[a] = (sum(x[0] for x in split), sum(x[0] for x in split if x[2][-1:] in cc_suffixes))
    return Norms(norms, adrg_rw, adrg_cc, source)


# ---------------------------------------------------------------- findings

def _z_p(observed: np.ndarray, expected: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var > 0, (observed - expected) / np.sqrt(np.maximum(var, 1e-300)), 0.0)
    p = np.array([math.erfc(abs(x) / math.sqrt(2.0)) for x in z])   # one per hospital or doctor
    return z, p


def _fmt_day(d: int) -> str:
    return str(np.datetime64(int(d), "D"))


def _r(x: float, nd: int = 4):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), nd)


class _Out:
    """Collects findings as plain rows (few compared with the records) and formats them."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, rule: Rule, key: str, hospital, doctor, patient, record_ids, figures: dict, words: dict,
            status: str = "flagged"):
        fill = {**{k: ("" if v is None else v) for k, v in figures.items()}, **words,
                "hospital_id": hospital or "", "doctor_id": doctor or "", "patient_id": patient or ""}
        if status == "flagged":
            zh, en = rule.zh.format_map(_Blank(fill)), rule.en.format_map(_Blank(fill))
            reason = "MONITOR_FLAGGED"
        else:
            zh = f"{rule.zh_name}规则未能运行：病例{record_ids[0]}缺少{words['missing_zh']}"
            en = f"Rule {rule.rule} could not run on record {record_ids[0]}: {words['missing_en']} missing or unreadable"
            reason = "MONITOR_INPUT_MISSING"
        self.rows.append({"id": f"{rule.rule}:{key}", "rule": rule.rule,
                          "severity": rule.severity if status == "flagged" else "info",
                          "hospital_id": hospital, "doctor_id": doctor, "patient_id": patient,
                          "record_ids": "|".join(record_ids),
                          "figures": json.dumps(figures, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
                          "message_zh": zh, "message_en": en, "status": status, "reason": reason})

    def table(self, order: dict[str, int]) -> pa.Table:
        self.rows.sort(key=lambda r: (order[r["rule"]], r["status"] != "flagged", r["hospital_id"] or "",
                                      r["doctor_id"] or "", r["id"]))
        return pa.Table.from_pylist(self.rows, schema=FINDING_SCHEMA)


class _Blank(dict):
    def __missing__(self, key):
        return ""


_FIELD_ZH = {"patient_id": "人员编号", "admission_date": "入院时间", "discharge_date": "出院时间",
             "hospital_id": "定点医疗机构代码"}


def _not_run(t: pa.Table, rules: list[Rule], out: _Out) -> np.ndarray:
    """Findings for records the episode rules cannot read; returns the mask of usable rows."""
    miss = {"patient_id": pc.is_null(t["patient_id"]), "admission_date": pc.is_null(t["adm"]),
            "discharge_date": pc.is_null(t["dis"]), "hospital_id": pc.is_null(t["hospital_id"])}
    m = {k: np.asarray(v.to_numpy(zero_copy_only=False), dtype=bool) for k, v in miss.items()}
    bad = m["patient_id"] | m["admission_date"] | m["discharge_date"] | m["hospital_id"]
    adm, dis = _np(t["adm"], 0), _np(t["dis"], 0)
    order_bad = ~bad & (dis < adm)          # discharged before admitted: dates unusable
    bad |= order_bad
    rows = np.flatnonzero(bad)
    if len(rows) and rules:
        sub = t.take(pa.array(rows)).to_pylist()
        for i, r in zip(rows, sub):
            fields = [f for f in EPISODE_FIELDS if m[f][i]]
            if order_bad[i]:
                fields = ["admission_date", "discharge_date"]
            words = {"missing_zh": "、".join(_FIELD_ZH[f] for f in fields) + ("（出院早于入院）" if order_bad[i] else ""),
                     "missing_en": ", ".join(fields) + (" (discharge before admission)" if order_bad[i] else "")}
            for rule in rules:
                out.add(rule, r["id"], r["hospital_id"], r["doctor_id"], r["patient_id"], [r["id"]],
                        {"missing": fields}, words, status="not_checked")
    return ~bad


def _np(a, fill):
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    return np.asarray(pc.fill_null(a, fill).to_numpy(zero_copy_only=False))


def _codes(a: pa.Array) -> np.ndarray:
    """Integer codes of a string column, equal codes for equal values, −1 for null."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    enc = pc.dictionary_encode(a)
    return _np(enc.indices, -1).astype(np.int64)


def _split_admissions(t: pa.Table, rule: Rule, out: _Out) -> None:
    window = int(rule.num("window_days", 15))
    chars = int(rule.num("category_chars", 3))
    order = pc.sort_indices(t, sort_keys=[("patient_id", "ascending"), ("hospital_id", "ascending"),
                                          ("adm", "ascending"), ("dis", "ascending"), ("id", "ascending")])
    s = t.take(order)
    if s.num_rows < 2:
        return
    pid, hid = _codes(s["patient_id"]), _codes(s["hospital_id"])
    adm, dis = _np(s["adm"], 0).astype(np.int64), _np(s["dis"], 0).astype(np.int64)
    cat = _codes(pc.utf8_slice_codeunits(s["principal"], 0, chars))
    adrg = _codes(pc.if_else(s["grouped"], s["adrg"], pa.scalar(None, pa.string())))
    same = (pid[1:] == pid[:-1]) & (hid[1:] == hid[:-1])
    gap = adm[1:] - dis[:-1]
    same_cat = (cat[1:] == cat[:-1]) & (cat[1:] >= 0)
    same_adrg = (adrg[1:] == adrg[:-1]) & (adrg[1:] >= 0)
    dip = _codes(s["dip_group"])
    same_dip = (dip[1:] == dip[:-1]) & (dip[1:] >= 0)
    hit = np.flatnonzero(same & (gap >= 0) & (gap <= window) & (same_cat | same_adrg | same_dip))
    if not len(hit):
        return
    a = s.take(pa.array(hit)).to_pylist()
    b = s.take(pa.array(hit + 1)).to_pylist()
    for i, x, y in zip(hit, a, b):
        by_cat, by_adrg = bool(same_cat[i]), bool(same_adrg[i])
        match = "principal_category" if by_cat else ("adrg" if by_adrg else "dip_group")
        value = (x["principal"] or "")[:chars] if by_cat else (x["adrg"] if by_adrg else x["dip_group"])
        figures = {"gap_days": int(gap[i]), "window_days": window, "first_id": x["id"], "second_id": y["id"],
                   "first_discharge": _fmt_day(x["dis"]), "second_admission": _fmt_day(y["adm"]),
                   "match": match, "match_value": value, "also_same_adrg": by_adrg}
        words = {"match_zh": {"principal_category": "主要诊断类目", "adrg": "ADRG", "dip_group": "DIP病种"}[match],
                 "match_en": {"principal_category": "principal diagnosis category", "adrg": "ADRG",
                              "dip_group": "DIP group"}[match]}
        out.add(rule, f"{x['id']}>{y['id']}", x["hospital_id"], y["doctor_id"], x["patient_id"], [x["id"], y["id"]],
                figures, words)


def _overlapping_stays(t: pa.Table, rule: Rule, out: _Out) -> None:
    order = pc.sort_indices(t, sort_keys=[("patient_id", "ascending"), ("adm", "ascending"),
                                          ("dis", "ascending"), ("id", "ascending")])
    s = t.take(order)
    n = s.num_rows
    if n < 2:
        return
    pid = _codes(s["patient_id"])
    adm, dis = _np(s["adm"], 0).astype(np.int64), _np(s["dis"], 0).astype(np.int64)
    # running maximum of the discharge day within a patient, and the stay that holds it
    start = np.r_[True, pid[1:] != pid[:-1]]
    grp = np.cumsum(start) - 1
    key = grp * 10_000_000 + (dis - dis.min() if n else dis)
    acc = np.maximum.accumulate(key)
    holder = np.maximum.accumulate(np.where(key == acc, np.arange(n), 0))
    prev_max = np.r_[-1, acc[:-1]]
    prev_holder = np.r_[0, holder[:-1]]
    same = ~start
    overlap = same & (adm < prev_max - grp * 10_000_000 + dis.min())
    dup = same & (adm == np.r_[0, adm[:-1]]) & (dis == np.r_[0, dis[:-1]])
    hit = np.flatnonzero(overlap | dup)
    if not len(hit):
        return
    partner = np.where(overlap[hit], prev_holder[hit], hit - 1)
    b = s.take(pa.array(hit)).to_pylist()
    a = s.take(pa.array(partner)).to_pylist()
    for x, y in zip(a, b):
        days = max(min(x["dis"], y["dis"]) - max(x["adm"], y["adm"]), 0)
        figures = {"overlap_days": int(days), "first_id": x["id"], "second_id": y["id"],
                   "first_hospital": x["hospital_id"], "second_hospital": y["hospital_id"],
                   "first_admission": _fmt_day(x["adm"]), "first_discharge": _fmt_day(x["dis"]),
                   "second_admission": _fmt_day(y["adm"]), "second_discharge": _fmt_day(y["dis"])}
        hosp = x["hospital_id"] if x["hospital_id"] == y["hospital_id"] else f"{x['hospital_id']}|{y['hospital_id']}"
        out.add(rule, f"{x['id']}>{y['id']}", hosp, None, x["patient_id"], [x["id"], y["id"]], figures, {})


def _case_norms(t: pa.Table, norms: Norms) -> dict[str, np.ndarray]:
    nan3 = (float("nan"),) * 3
    # vectorised lookup: dictionary of the part's distinct DRGs → norm arrays
    enc = pc.dictionary_encode(t["drg"].combine_chunks() if isinstance(t["drg"], pa.ChunkedArray) else t["drg"])
    keys = enc.dictionary.to_pylist()
    table = np.array([norms.drg.get(k, nan3) for k in keys] + [nan3], dtype=float).reshape(-1, 3)
    idx = _np(enc.indices, len(keys)).astype(np.int64)
    grouped = _np(t["grouped"], False).astype(bool)
    idx[~grouped] = len(keys)
    arr = table[idx]
    return {"mean_cost": arr[:, 0], "mean_los": arr[:, 1], "rw": arr[:, 2]}


def _low_cost_rules(t: pa.Table, nm: dict, rules: list[Rule], out: _Out) -> None:
    cost, los = _np(t["cost"], np.nan).astype(float), _np(t["los"], np.nan).astype(float)
    cost[~(cost > 0)] = np.nan          # a missing, zero or negative cost is no evidence of a low cost
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = cost / nm["mean_cost"]
        los_ratio = los / nm["mean_los"]
    for rule in rules:
        if rule.kind == "low_standard":
            max_los, max_ratio = rule.num("max_los"), rule.num("max_cost_ratio")
            cond = (los <= max_los) & (ratio <= max_ratio)
            ranges = rule.items("outpatient")
            op = np.zeros(t.num_rows, dtype=bool)
            if ranges:
                from drgdip.codesets.qc import in_ranges
                pairs = [tuple(r.split("-", 1)) if "-" in r else (r, r) for r in ranges]
                op = _np(in_ranges(pc.fill_null(t["principal"], ""), pairs), False).astype(bool)
            hit = np.flatnonzero(np.nan_to_num(cond, nan=0).astype(bool) | op)
            extra = {"max_los": max_los, "max_cost_ratio": max_ratio}
        else:
            max_ratio, max_lr = rule.num("max_cost_ratio"), rule.num("max_los_ratio")
            cond = (ratio <= max_ratio) & (los_ratio <= max_lr)
            hit = np.flatnonzero(cond)
            op = np.zeros(t.num_rows, dtype=bool)
            extra = {"max_cost_ratio": max_ratio, "max_los_ratio": max_lr}
        if not len(hit):
            continue
        for i, r in zip(hit, t.take(pa.array(hit)).to_pylist()):
            figures = {"record_id": r["id"], "drg": r["drg"], "los_days": _r(los[i], 1), "total_cost": _r(cost[i], 2),
                       "group_mean_cost": _r(nm["mean_cost"][i], 2), "cost_ratio": _r(ratio[i], 4),
                       "group_mean_los": _r(nm["mean_los"][i], 2), "los_ratio": _r(los_ratio[i], 4), **extra}
            words = {}
            if rule.kind == "low_standard":
                figures["outpatient_diagnosis"] = r["principal"] if op[i] else None
                words = {"outpatient_zh": f"；主要诊断{r['principal']}属门诊可治疗病种" if op[i] else "",
                         "outpatient_en": f"; principal diagnosis {r['principal']} is on the policy's "
                                          f"outpatient-treatable list" if op[i] else ""}
            out.add(rule, r["id"], r["hospital_id"], r["doctor_id"], r["patient_id"], [r["id"]], figures, words)


def _unit_sums(t: pa.Table, nm: dict, rules: list[Rule]) -> pa.Table:
    """Per (hospital, doctor, drg, adrg) counts the statistical rules need, from one part.

    Integers only, so that merging the parts in any order gives the same sums; the float
    statistics are computed once, in a fixed order, by :func:`_unit_stats`."""
    grouped = _np(t["grouped"], False).astype(bool) & np.isfinite(nm["rw"])
    cost = _np(t["cost"], np.nan).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = cost / nm["mean_cost"]
    priced = grouped & np.isfinite(ratio) & (cost > 0)
    cols = {"hospital_id": pc.fill_null(t["hospital_id"], ""), "doctor_id": pc.fill_null(t["doctor_id"], ""),
            "drg": pc.fill_null(t["drg"], ""), "adrg": pc.fill_null(t["adrg"], ""),
            "cases": pa.array(grouped.astype(np.int64)), "priced": pa.array(priced.astype(np.int64))}
    for r in rules:
        if r.kind == "cost_concentration":
            k = r.num("k")
            flag = priced & ((ratio > k) if r.params.get("side") == "high" else (ratio < k))
            cols[f"flag_{r.rule}"] = pa.array(flag.astype(np.int64))
    tab = pa.table(cols).filter(pa.array(grouped))
    return _sum_by(tab, ["hospital_id", "doctor_id", "drg", "adrg"])


def _sum_by(tab: pa.Table, keys: list[str]) -> pa.Table:
    sums = [c for c in tab.column_names if c not in keys]
    g = tab.group_by(keys, use_threads=False).aggregate([(c, "sum") for c in sums])
    return g.rename_columns([c[:-4] if c.endswith("_sum") else c for c in g.column_names])


def _unit_stats(cells: pa.Table, norms: Norms, by_doctor: bool, cc_suf, split_suf) -> tuple[pa.Table, dict]:
    """Per hospital (or hospital and doctor): counts and the case-mix expectations, summed in
    sorted (hospital, doctor, drg, adrg) order; and the region's totals."""
    cells = cells.sort_by([(k, "ascending") for k in ("hospital_id", "doctor_id", "drg", "adrg")])
    drg = np.asarray(cells["drg"].to_pylist(), dtype=object)
    adrg = cells["adrg"].to_pylist()
    n = _np(cells["cases"], 0).astype(np.int64)
    last = np.array([d[-1:] for d in drg], dtype=object)
    eligible = np.isin(last, split_suf) & (n > 0)
    is_cc = eligible & np.isin(last, cc_suf)
    p_a = np.array([(lambda v: v[1] / v[0] if v[0] else 0.0)(norms.adrg_cc.get(a, (0, 0))) for a in adrg])
    m_a = np.array([norms.adrg_rw.get(a, (np.nan, 0.0))[0] for a in adrg])
    v_a = np.array([norms.adrg_rw.get(a, (np.nan, 0.0))[1] for a in adrg])
    rw = np.array([norms.drg.get(d, (np.nan,) * 3)[2] for d in drg])
    keys = ["hospital_id", "doctor_id"] if by_doctor else ["hospital_id"]
    unit_keys = list(zip(*(cells[k].to_pylist() for k in keys)))
    names = sorted(set(unit_keys))
    index = {u: i for i, u in enumerate(names)}
    uid = np.array([index[u] for u in unit_keys], dtype=np.int64)   # one per (unit, group) cell
    m = len(names)

    def tot(w):
        return np.bincount(uid, weights=w, minlength=m) if len(uid) else np.zeros(m)

    ne = np.where(eligible, n, 0)
    stats = {"cases": tot(n.astype(float)), "cc_eligible": tot(ne.astype(float)),
             "cc_cases": tot(np.where(is_cc, n, 0).astype(float)), "cc_expected": tot(ne * p_a),
             "cc_var": tot(ne * p_a * (1 - p_a)), "rw": tot(np.nan_to_num(n * rw)),
             "rw_expected": tot(np.nan_to_num(n * m_a)), "rw_var": tot(np.nan_to_num(n * v_a)),
             "priced": tot(_np(cells["priced"], 0).astype(float))}
    for c in cells.column_names:
        if c.startswith("flag_"):
            stats[c] = tot(_np(cells[c], 0).astype(float))
    out = {k: pa.array([u[i] for u in names], pa.string()) for i, k in enumerate(keys)}
    out.update({k: pa.array(v) for k, v in stats.items()})
    region = {k: float(v.sum()) for k, v in stats.items()}
    return pa.table(out), region


def _history_counts(history, scheme, batch_size: int, cc_suf, split_suf) -> dict:
    """(hospital, adrg) → (eligible cases, CC/MCC cases) in the history records."""
    grouper, acc = None, []
    for b in _batches(history, batch_size):
        if grouper is None and not {"drg", "adrg"} <= set(b.schema.names):
            from drgdip.grouper.drg.api import Grouper, load_scheme
            grouper = Grouper(load_scheme(scheme))
        t = _compact(b, 0, grouper)
        drg = pc.fill_null(t["drg"].combine_chunks(), "")
        last = pc.utf8_slice_codeunits(drg, -1, 1 << 20)
        elig = pc.and_(t["grouped"].combine_chunks(), pc.is_in(last, pa.array(split_suf, pa.string())))
        cc = pc.and_(elig, pc.is_in(last, pa.array(cc_suf, pa.string())))
        acc.append(_sum_by(pa.table({"hospital_id": pc.fill_null(t["hospital_id"], ""),
                                     "adrg": pc.fill_null(t["adrg"], ""),
                                     "n": pc.cast(elig, pa.int64()), "k": pc.cast(cc, pa.int64())}),
                           ["hospital_id", "adrg"]))
    if not acc:
        return {}
    t = _sum_by(pa.concat_tables(acc), ["hospital_id", "adrg"])
    return {(r["hospital_id"], r["adrg"]): (r["n"], r["k"]) for r in t.to_pylist()}


def _history_stats(cells: pa.Table, hist: dict, min_hist: float, cc_suf, split_suf) -> pa.Table:
    """Per hospital: eligible cases and CC/MCC cases in ADRGs with history, and the counts
    expected from the hospital's own history share in each ADRG."""
    cells = cells.sort_by([(k, "ascending") for k in ("hospital_id", "doctor_id", "drg", "adrg")])
    rows = cells.select(["hospital_id", "drg", "adrg", "cases"]).to_pylist()   # one per (unit, group) cell
    acc: dict[str, list] = {}
    for r in rows:
        n0, k0 = hist.get((r["hospital_id"], r["adrg"]), (0, 0))
        last = r["drg"][-1:]
        if n0 < min_hist or last not in split_suf or not r["cases"]:
            continue
        p = k0 / n0
        a = acc.setdefault(r["hospital_id"], [0.0, 0.0, 0.0, 0.0])
        a[0] += r["cases"]
        a[1] += r["cases"] if last in cc_suf else 0
        a[2] += r["cases"] * p
        a[3] += r["cases"] * p * (1 - p)
    names = sorted(acc)
    return pa.table({"hospital_id": pa.array(names, pa.string()),
                     **{c: pa.array([acc[h][j] for h in names], pa.float64())
                        for j, c in enumerate(("cc_eligible", "cc_cases", "cc_expected", "cc_var"))}})


def _statistical(cells: pa.Table, norms: Norms, rules: list[Rule], out: _Out, hist: dict | None = None) -> None:
    cells = _sum_by(cells, ["hospital_id", "doctor_id", "drg", "adrg"])
    if cells.num_rows == 0:
        return
    cc_rule = next((r for r in rules if r.kind == "cc_share"), None)
    cc_suf = cc_rule.items("cc_suffixes") if cc_rule else ("1", "3")
    split_suf = cc_rule.items("split_suffixes") if cc_rule else ("1", "3", "5")
    by_hosp, tot = _unit_stats(cells, norms, False, cc_suf, split_suf)
    by_doc, _ = _unit_stats(cells, norms, True, cc_suf, split_suf) \
        if any(r.params.get("by") == "doctor" for r in rules) else (by_hosp, tot)
    for rule in rules:
        unit = by_doc if rule.params.get("by") == "doctor" else by_hosp
        if rule.kind == "cc_share_history":
            if hist is None:
                continue
            unit = _history_stats(cells, hist, rule.num("min_history_cases", 10), rule.items("cc_suffixes"),
                                  rule.items("split_suffixes"))
        unit = unit.sort_by([(c, "ascending") for c in unit.column_names if c in ("hospital_id", "doctor_id")])
        u = {c: _np(unit[c], 0).astype(float) for c in unit.column_names if c not in ("hospital_id", "doctor_id")}
        hosp = unit["hospital_id"].to_pylist()
        doc = unit["doctor_id"].to_pylist() if "doctor_id" in unit.column_names else [None] * unit.num_rows
        min_cases = rule.num("min_cases", 30)
        if rule.kind in ("cc_share", "cc_share_history"):
            n, k, e, v = u["cc_eligible"], u["cc_cases"], u["cc_expected"], u["cc_var"]
            z, p = _z_p(k, e, v)
            with np.errstate(invalid="ignore", divide="ignore"):
                share, exp_share = k / n, e / n
            alpha, excess = rule.num("alpha"), rule.num("min_excess")
            hit = np.flatnonzero((n >= min_cases) & (z > 0) & (p < alpha) & (share - exp_share >= excess))
            for i in hit:
                figures = {"cases": int(n[i]), "cc_cases": int(k[i]), "share": _r(share[i]),
                           "expected_share": _r(exp_share[i]), "region_share": _r(tot["cc_cases"] / tot["cc_eligible"]),
                           "z": _r(z[i], 2), "p_value": float(f"{p[i]:.3g}"), "alpha": alpha, "min_excess": excess}
                key = hosp[i] if rule.params.get("by") != "doctor" else f"{hosp[i]}/{doc[i]}"
                out.add(rule, key, hosp[i] or None, (doc[i] or None) if rule.params.get("by") == "doctor" else None,
                        None, [], figures, {})
        elif rule.kind == "cmi_z":
            n, o, e, v = u["cases"], u["rw"], u["rw_expected"], u["rw_var"]
            z, _ = _z_p(o, e, v)
            with np.errstate(invalid="ignore", divide="ignore"):
                index = o / e
            zmin, imin = rule.num("z_min"), rule.num("min_index")
            hit = np.flatnonzero((n >= min_cases) & (z >= zmin) & (index >= imin))
            for i in hit:
                figures = {"cases": int(n[i]), "cmi": _r(o[i] / n[i]), "expected_cmi": _r(e[i] / n[i]),
                           "region_cmi": _r(tot["rw"] / tot["cases"]), "cmi_index": _r(index[i]), "z": _r(z[i], 2),
                           "z_min": zmin, "min_index": imin}
                key = hosp[i] if rule.params.get("by") != "doctor" else f"{hosp[i]}/{doc[i]}"
                out.add(rule, key, hosp[i] or None, (doc[i] or None) if rule.params.get("by") == "doctor" else None,
                        None, [], figures, {})
        elif rule.kind == "cost_concentration":
            n, k = u["priced"], u[f"flag_{rule.rule}"]
            p0 = tot[f"flag_{rule.rule}"] / tot["priced"] if tot["priced"] else 0.0
            z, p = _z_p(k, n * p0, n * p0 * (1 - p0))
            with np.errstate(invalid="ignore", divide="ignore"):
                share = k / n
            alpha, mr = rule.num("alpha"), rule.num("min_ratio")
            hit = np.flatnonzero((n >= min_cases) & (z > 0) & (p < alpha) & (share >= mr * p0))
            for i in hit:
                figures = {"cases": int(n[i]), "flagged_cases": int(k[i]), "share": _r(share[i]),
                           "region_share": _r(p0), "z": _r(z[i], 2), "p_value": float(f"{p[i]:.3g}"),
                           "k": rule.num("k"), "alpha": alpha, "min_ratio": mr}
                out.add(rule, hosp[i], hosp[i] or None, None, None, [], figures, {})


VISIT_DATE_COLUMNS = ("visit_date", "就诊日期", "begntime", "admission_date")


def _outpatient_view(outpatient, batch_size: int, same_hospital: bool):
    """Outpatient visits as (sorted unique keys, key code × 100000 + day sorted, cumulative cost)."""
    keys, days, costs = [], [], []
    for b in _batches(outpatient, batch_size):
        n = b.num_rows
        cols = canonical_columns(b.schema)
        date_col = next((c for c in VISIT_DATE_COLUMNS if c in b.schema.names), None)
        if "patient_id" not in cols or date_col is None or "total_cost" not in cols:
            raise InputError("outpatient records need patient_id, a visit date (visit_date) and total_cost columns")
        pat = text(b.column(cols["patient_id"]), n)
        if same_hospital:
            hosp = text(b.column(cols["hospital_id"]), n) if "hospital_id" in cols else pa.nulls(n, pa.string())
            pat = pc.binary_join_element_wise(pat, hosp, "\x00")
        day = day_numbers(b.column(date_col), n)
        cost = numeric(b.column(cols["total_cost"]), n)[0]
        ok = pc.and_(pc.and_(pc.is_valid(pat), pc.is_valid(day)), pc.is_valid(cost))
        keys.append(pat.filter(ok))
        days.append(day.filter(ok))
        costs.append(cost.filter(ok))
    if not keys:
        return np.zeros(0, object), np.zeros(0, np.int64), np.zeros(1)
    k = pa.chunked_array(keys, pa.string()).combine_chunks()
    uniq = pc.unique(k)
    uniq = uniq.take(pc.sort_indices(uniq))
    code = _np(pc.index_in(k, value_set=uniq), -1).astype(np.int64)
    comb = code * 100_000 + np.concatenate([_np(d, 0) for d in days]).astype(np.int64)
    order = np.argsort(comb, kind="stable")
    cost = np.concatenate([_np(c, 0.0) for c in costs]).astype(float)[order]
    cum = np.concatenate([[0], np.cumsum(np.round(cost * 100).astype(np.int64))])   # cents: exact sums
    return uniq, comb[order], cum


def _outpatient_shift(t: pa.Table, view, rule: Rule, out: _Out) -> None:
    uniq, comb, cum = view
    before = int(rule.num("days_before", 7))
    share_min = rule.num("min_share", 0.3)
    key = t["patient_id"]
    if rule.params.get("same_hospital", "1") == "1":
        key = pc.binary_join_element_wise(t["patient_id"], t["hospital_id"], "\x00")
    code = _np(pc.index_in(key, value_set=uniq), -1).astype(np.int64) if len(uniq) else np.full(t.num_rows, -1)
    adm = _np(t["adm"], 0).astype(np.int64)
    lo = np.searchsorted(comb, code * 100_000 + adm - before, side="left")
    hi = np.searchsorted(comb, code * 100_000 + adm, side="right")
    visits = np.where(code >= 0, hi - lo, 0)
    op_cost = (cum[hi] - cum[lo]) / 100.0
    cost = _np(t["cost"], np.nan).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = op_cost / cost
    hit = np.flatnonzero((visits > 0) & (cost > 0) & (share >= share_min))
    for i, r in zip(hit, t.take(pa.array(hit, pa.int64())).to_pylist()):
        figures = {"record_id": r["id"], "admission": _fmt_day(r["adm"]), "days_before": before,
                   "visits": int(visits[i]), "outpatient_cost": _r(op_cost[i], 2), "total_cost": _r(cost[i], 2),
                   "share": _r(share[i]), "min_share": share_min}
        out.add(rule, r["id"], r["hospital_id"], r["doctor_id"], r["patient_id"], [r["id"]], figures, {})


def _cc_candidates(t: pa.Table, norms: Norms, rule: Rule) -> pa.Table:
    """Cases of a CC/MCC DRG costing at most max_cost_ratio × the no-CC DRG's mean cost."""
    ratio_max = rule.num("max_cost_ratio", 1.0)
    drg = pc.fill_null(t["drg"].combine_chunks(), "")
    last = pc.utf8_slice_codeunits(drg, -1, 1 << 20)
    is_cc = pc.and_(t["grouped"].combine_chunks(), pc.is_in(last, pa.array(rule.items("cc_suffixes"), pa.string())))
    base = pc.binary_join_element_wise(pc.utf8_slice_codeunits(drg, 0, -1),
                                       pa.scalar(rule.params.get("base_suffix") or "5"), "")
    enc = pc.dictionary_encode(base)
    means = np.array([norms.drg.get(k, (np.nan,))[0] for k in enc.dictionary.to_pylist()] + [np.nan])
    mean = means[_np(enc.indices, len(means) - 1).astype(np.int64)]
    cost = _np(t["cost"], np.nan).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = cost / mean
    hit = np.flatnonzero(_np(is_cc, False).astype(bool) & (ratio <= ratio_max))
    take = pa.array(hit, pa.int64())
    sub = t.take(take).select(["id", "patient_id", "hospital_id", "doctor_id", "drg", "cost"])
    return sub.append_column("base_drg", base.take(take)) \
              .append_column("base_mean", pa.array(mean[hit], pa.float64())) \
              .append_column("ratio", pa.array(ratio[hit], pa.float64()))


def _cc_without_cost(rule: Rule, cands: list[pa.Table], out: _Out) -> None:
    of = rule.params.get("of", "")
    units = {(r["hospital_id"], r["doctor_id"]) for r in out.rows if r["rule"] == of and r["status"] == "flagged"}
    hosp_only = {h for h, d in units if d is None}
    if not units or not cands:
        return
    t = pa.concat_tables(cands)
    for r in sorted(t.to_pylist(), key=lambda x: x["id"]):
        if r["hospital_id"] not in hosp_only and (r["hospital_id"], r["doctor_id"]) not in units:
            continue
        figures = {"record_id": r["id"], "drg": r["drg"], "total_cost": _r(r["cost"], 2), "base_drg": r["base_drg"],
                   "base_mean_cost": _r(r["base_mean"], 2), "cost_ratio": _r(r["ratio"], 4),
                   "max_cost_ratio": rule.num("max_cost_ratio", 1.0), "of": of}
        out.add(rule, r["id"], r["hospital_id"], r["doctor_id"], r["patient_id"], [r["id"]], figures, {})


# ---------------------------------------------------------------- the entry points

@dataclass
class MonitorResult:
    findings: pa.Table
    records: int
    counts: dict            # rule → findings (flagged), and "not_checked" → findings
    norms_source: str
    skipped: list = field(default_factory=list)   # rules that could not run (their input absent)


def _batches(data, batch_size: int):
    if isinstance(data, (str, os.PathLike)):
        yield from open_batches(data, batch_size)
        return
    t = as_table(data)
    if t.num_rows == 0:
        yield from t.to_batches() or [pa.RecordBatch.from_pylist([], schema=t.schema)]
        return
    yield from t.to_batches(max_chunksize=batch_size)


#: rows of compact view per part when the number of parts is chosen automatically
ROWS_PER_PART = 2_000_000


def auto_partitions(records) -> int:
    """Parts for a records file: ⌈rows / ROWS_PER_PART⌉ for Parquet (footer row count), else 1."""
    if isinstance(records, (str, os.PathLike)) and str(records).lower().endswith(".parquet") \
            and Path(records).is_file():
        try:
            rows = pq.ParquetFile(records).metadata.num_rows
        except (pa.ArrowInvalid, OSError):
            return 1
        return max(1, math.ceil(rows / ROWS_PER_PART))
    return 1


def monitor(records, rules: tuple[Rule, ...] | str | os.PathLike | None = None, scheme=None,
            weights: pa.Table | None = None, batch_size: int = DEFAULT_BATCH_SIZE, partitions: int | None = None,
            tmp_dir: str | None = None, progress=None, history=None, outpatient=None) -> MonitorResult:
    """Run the monitoring rules over RECORDS (Arrow table, DataFrame or file path).

    ``rules``: a loaded rule tuple, a rules CSV, or None for the built-in library;
    ``scheme``: used to group records that carry no ``drg``/``adrg`` (None: teaching scheme);
    ``weights``: optional group table (``drg, weight, mean_cost, mean_los``) for the norms;
    ``partitions``: split the compact view by patient into this many temporary files
    (bounded memory for very large inputs; the findings do not depend on it); None: one
    part per :data:`ROWS_PER_PART` rows of a Parquet file (its row count is read from the
    footer), else 1. ``history``: earlier records (table or path) for the rules that compare a
    hospital with its own past (``cc_share_history``); without it those rules do not run
    and are listed in ``MonitorResult.skipped``. ``outpatient``: outpatient visits (table or
    path) for ``outpatient_shift``; held in memory as four columns, likewise optional."""
    rules = load_rules(rules) if rules is None or isinstance(rules, (str, os.PathLike)) else tuple(rules)
    if partitions is None:
        partitions = auto_partitions(records)
    if partitions < 1:
        raise InputError("partitions must be at least 1")
    order = {r.rule: i for i, r in enumerate(rules)}
    grouper = None
    parts = _Parts(partitions, tmp_dir)
    out = _Out()
    try:
        n = 0
        for b in _batches(records, batch_size):
            if grouper is None and not {"drg", "adrg"} <= set(b.schema.names):
                from drgdip.grouper.drg.api import Grouper, load_scheme
                grouper = Grouper(load_scheme(scheme))
            parts.add(_compact(b, n, grouper))
            n += b.num_rows
            if progress is not None:
                progress(b.num_rows)
        cc_rule = next((r for r in rules if r.kind == "cc_share"), None)
        cc_suf = cc_rule.items("cc_suffixes") if cc_rule else ("1", "3")
        split_suf = cc_rule.items("split_suffixes") if cc_rule else ("1", "3", "5")
        need_norms = any(r.kind not in EPISODE_KINDS for r in rules)
        norms = _norms(parts, weights, cc_suf, split_suf) if need_norms else Norms({}, {}, {}, "none")
        episode = [r for r in rules if r.kind in EPISODE_KINDS]
        cost_rules = [r for r in rules if r.kind in ("low_standard", "under_service")]
        stat_rules = [r for r in rules if r.kind in ("cc_share", "cmi_z", "cost_concentration", "cc_share_history")]
        hist_rules = [r for r in rules if r.kind == "cc_share_history"]
        hist = None
        if hist_rules and history is not None:
            hist = _history_counts(history, scheme, batch_size, hist_rules[0].items("cc_suffixes"),
                                   hist_rules[0].items("split_suffixes"))
        case_rules = [r for r in rules if r.kind == "cc_without_cost"]
        case_lists: dict[str, list] = {r.rule: [] for r in case_rules}
        op_rules = [r for r in rules if r.kind == "outpatient_shift"]
        op_views = {}
        if op_rules and outpatient is not None:
            for same in sorted({r.params.get("same_hospital", "1") == "1" for r in op_rules}):
                op_views[same] = _outpatient_view(outpatient, batch_size, same)
        units = []
        for t in parts.parts():
            if episode:
                ok = _not_run(t, episode, out)
                usable = t.filter(pa.array(ok))
                for r in episode:
                    (_split_admissions if r.kind == "split_admission" else _overlapping_stays)(usable, r, out)
            for r in op_rules if op_views else ():
                usable = t.filter(pc.and_(pc.is_valid(t["patient_id"]), pc.is_valid(t["adm"])))
                _outpatient_shift(usable, op_views[r.params.get("same_hospital", "1") == "1"], r, out)
            if cost_rules or stat_rules or case_rules:
                nm = _case_norms(t, norms)
                if cost_rules:
                    _low_cost_rules(t, nm, cost_rules, out)
                if stat_rules:
                    units.append(_unit_sums(t, nm, stat_rules))
                for r in case_rules:
                    case_lists[r.rule].append(_cc_candidates(t, norms, r))
        if stat_rules and units:
            _statistical(pa.concat_tables(units), norms, stat_rules, out, hist)
        for r in case_rules:
            _cc_without_cost(r, case_lists[r.rule], out)
    finally:
        parts.close()
    findings = out.table(order)
    counts: dict[str, int] = {}
    for r, s in zip(findings["rule"].to_pylist(), findings["status"].to_pylist()):
        key = r if s == "flagged" else "not_checked"
        counts[key] = counts.get(key, 0) + 1
    skipped = [r.rule for r in rules if (r.kind == "cc_share_history" and history is None)
               or (r.kind == "outpatient_shift" and outpatient is None)]
    return MonitorResult(findings, n, counts, norms.source, skipped)


def monitor_file(src, dst, **kwargs) -> MonitorResult:
    """:func:`monitor` over a records file, findings written atomically to DST."""
    from drgdip.arrowio import write_table
    result = monitor(src, **kwargs)
    write_table(result.findings, dst)
    return result
