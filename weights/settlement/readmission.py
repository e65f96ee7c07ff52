"""Readmissions (再入院): a stay admitted within N days of an earlier discharge of the same patient.

Policy ``[readmission]`` (docs/policy.md): ``days`` (0 = off), the ``key`` that must be the same
(``adrg``, the ``group`` code, or the ``principal_diagnosis``), ``same_hospital``, and the
``payment``. docs/settlement.md "Incomplete stays and readmissions" has the rule and a worked
example.

Detection is a pure function over compact arrays (:func:`find_readmissions`); a whole file is
read for it batch by batch by :class:`ReadmissionIndex` (33 bytes per record, whatever the
batch size), so a pair split over two batches is found and the result does not depend on the
batches. A stay j is a readmission of stay i when both are usable, have the same patient, key
(and hospital, with ``same_hospital``), i is the stay just before j in the order (admission day,
discharge day, file row) among that patient's stays of the key, and
``0 <= admission day of j − discharge day of i <= days`` (exactly N days is within).
A stay admitted before the earlier one's discharge (overlapping stays) is not a readmission.
Usable: patient id, hospital, key, admission and discharge dates all present and readable,
admission not after discharge, and a settlement id that is not repeated in the file.

Across periods (``across_periods``, docs/settlement.md "Readmissions across months"): a settled
month keeps in the ledger the facts of its usable stays discharged in its last ``days`` days
(:class:`StayTail`: only those can be the earlier stay of a readmission admitted after the
month's end); the next month's pairing adds them (:class:`ReadmissionIndex` ``earlier``) to its
own stays and pairs by the same rule, keeping the pairs whose later stay is in its file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, canonical_columns, code_list, day_numbers, text

#: columns a readmission pass reads (canonical names), beside the group column
READ_COLUMNS = ("id", "patient_id", "hospital_id", "admission_date", "discharge_date")
UNGROUPED = ("0000",)
#: the facts of an earlier period's stay kept in the ledger (table readmission_tail), in this order
TAIL_COLUMNS = ("settlement_id", "patient_id", "hospital_id", "readmission_key", "admission_day", "discharge_day",
                "fund_key", "points", "cut")
TAIL_TYPES = (pa.string(), pa.string(), pa.string(), pa.string(), pa.int32(), pa.int32(), pa.string(),
              pa.float64(), pa.bool_())


def key_kind(policy) -> str:
    """What the readmission key of a policy is (kept with the ledger's stays: a month pairs only with
    earlier stays whose key was made the same way)."""
    rp = policy.readmission
    return {"adrg": f"adrg:{rp.adrg_chars}", "group": "group",
            "principal_diagnosis": f"principal_diagnosis:{rp.diagnosis_chars}"}[rp.key]


def tail_from(period: str, days: int) -> int:
    """The first discharge day (days since 1970-01-01) of a month's tail: the stays discharged on the
    month's last ``days`` days or later can be the earlier stay of a readmission admitted after the
    month's end (admitted on day a > end, paired when a − discharge ≤ days, so discharge ≥ end + 1 − days)."""
    import datetime as dt
    y, m = int(period[:4]), int(period[5:7])
    first_next = dt.date(y + (m == 12), m % 12 + 1, 1)
    return (first_next - dt.date(1970, 1, 1)).days - days


def empty_tail() -> pa.Table:
    return pa.table({c: pa.array([], t) for c, t in zip(TAIL_COLUMNS, TAIL_TYPES)})


def find_readmissions(patient: np.ndarray, hospital: np.ndarray, key: np.ndarray, admit: np.ndarray,
                      discharge: np.ndarray, usable: np.ndarray, days: int,
                      same_hospital: bool = True) -> np.ndarray:
    """For each row, the row of the earlier stay it is a readmission of, or -1.

    ``patient``, ``hospital``, ``key``: integer codes (e.g. 64-bit hashes) compared for
    equality; ``admit``, ``discharge``: day numbers; ``usable``: rows that take part."""
    n = len(usable)
    earlier = np.full(n, -1, np.int64)
    rows = np.flatnonzero(usable)
    if rows.size < 2 or days <= 0:
        return earlier
    hosp = hospital[rows] if same_hospital else np.zeros(rows.size, np.uint64)
    order = np.lexsort((rows, discharge[rows], admit[rows], key[rows], hosp, patient[rows]))
    s = rows[order]
    hs = hosp[order]
    same = (patient[s][1:] == patient[s][:-1]) & (key[s][1:] == key[s][:-1]) & (hs[1:] == hs[:-1])
    gap = admit[s][1:].astype(np.int64) - discharge[s][:-1].astype(np.int64)
    hit = same & (gap >= 0) & (gap <= days)
    earlier[s[1:][hit]] = s[:-1][hit]
    return earlier


def _hash(values: pa.Array) -> np.ndarray:
    import pandas as pd
    return pd.util.hash_array(np.asarray(pc.fill_null(values, "").to_numpy(zero_copy_only=False), dtype=object))


def key_of(batch: pa.Table, policy, group_column: str) -> pa.Array:
    """The readmission key of each record (null when it has none)."""
    rp = policy.readmission
    n = batch.num_rows
    cols = canonical_columns(batch.schema)
    if rp.key == "principal_diagnosis":
        if "diagnoses" not in cols:
            raise InputError("readmission.key is principal_diagnosis but the records have no diagnoses column")
        lists = code_list(batch.column(cols["diagnoses"]), n)
        has = pc.greater(pc.fill_null(pc.list_value_length(lists), 0), 0)
        first = pc.list_element(pc.if_else(has, lists, pa.scalar([None], pa.list_(pa.string()))), 0)
        k = pc.utf8_upper(pc.utf8_trim_whitespace(first))
        if rp.diagnosis_chars:
            k = pc.utf8_slice_codeunits(k, 0, rp.diagnosis_chars)
        return pc.if_else(has, k, pa.scalar(None, pa.string()))
    if group_column not in batch.column_names:
        raise InputError(f"records have no {group_column!r} column: group them first")
    group = text(batch.column(group_column), n)
    group = pc.if_else(pc.fill_null(pc.is_in(group, pa.array(UNGROUPED)), False), pa.scalar(None, pa.string()), group)
    if rp.key == "group":
        return group
    if "adrg" in batch.column_names:
        return pc.if_else(pc.is_null(group), pa.scalar(None, pa.string()), text(batch.column("adrg"), n))
    return pc.utf8_slice_codeunits(group, 0, rp.adrg_chars)


def check_columns(names, policy) -> None:
    """Refuse records that cannot be checked for readmissions while the policy asks for it."""
    cols = canonical_columns(pa.schema([(c, pa.string()) for c in names]))
    missing = [c for c in READ_COLUMNS[1:] if c not in cols]
    if missing:
        raise InputError(f"readmission.days = {policy.readmission.days} but the records have no "
                         f"{', '.join(missing)} column: readmissions cannot be found")


@dataclass
class ReadmissionIndex:
    """Compact arrays of a whole file, added batch by batch in file order; :meth:`finish` pairs them.

    ``tail_from`` (a day number, :func:`tail_from`): the usable stays discharged on that day or later
    are kept with their patient, hospital and key (:attr:`tail`, for the ledger's next months)."""
    policy: object
    group_column: str = "drg"
    duplicate_ids: pa.Array | None = None
    tail_from: int | None = None
    _parts: list = field(default_factory=list)
    rows: int = 0
    tail: list = field(default_factory=list)
    min_admission: int | None = None

    def add(self, batch: pa.Table) -> None:
        n = batch.num_rows
        cols = canonical_columns(batch.schema)
        check_columns(batch.column_names, self.policy)
        patient = text(batch.column(cols["patient_id"]), n)
        hosp = text(batch.column(cols["hospital_id"]), n)
        key = key_of(batch, self.policy, self.group_column)
        adm = day_numbers(batch.column(cols["admission_date"]), n)
        dis = day_numbers(batch.column(cols["discharge_date"]), n)
        usable = pc.and_(pc.and_(pc.is_valid(patient), pc.is_valid(hosp)),
                         pc.and_(pc.is_valid(key), pc.and_(pc.is_valid(adm), pc.is_valid(dis))))
        usable = pc.fill_null(pc.and_(usable, pc.less_equal(adm, dis)), False).to_numpy(zero_copy_only=False)
        if "id" in cols:
            ids = text(batch.column(cols["id"]), n)
            dup = pc.value_counts(ids)
            repeated = dup.field("values").filter(pc.greater(dup.field("counts"), 1))
            if self.duplicate_ids is not None and len(self.duplicate_ids):
                repeated = pa.concat_arrays([repeated.cast(pa.string()), self.duplicate_ids.cast(pa.string())])
            usable &= ~pc.fill_null(pc.is_in(ids, value_set=repeated), False).to_numpy(zero_copy_only=False)
        adm_np = pc.fill_null(adm, 0).to_numpy(zero_copy_only=False).astype(np.int32)
        dis_np = pc.fill_null(dis, 0).to_numpy(zero_copy_only=False).astype(np.int32)
        self._parts.append((_hash(patient), _hash(hosp), _hash(key), adm_np, dis_np, usable))
        if usable.any():
            low = int(adm_np[usable].min())
            self.min_admission = low if self.min_admission is None else min(self.min_admission, low)
        if self.tail_from is not None:
            keep = np.flatnonzero(usable & (dis_np >= self.tail_from))
            if keep.size:
                take = pa.array(keep)
                self.tail.append(pa.table({"row": pa.array(keep + self.rows, pa.int64()),
                                           "patient_id": patient.take(take), "hospital_id": hosp.take(take),
                                           "readmission_key": key.take(take).cast(pa.string()),
                                           "admission_day": pa.array(adm_np[keep]),
                                           "discharge_day": pa.array(dis_np[keep])}))
        self.rows += n

    def patients(self) -> np.ndarray:
        """The hashes of the usable stays' patients (to pick the earlier periods' stays that matter)."""
        return np.unique(np.concatenate([p[0][p[5]] for p in self._parts])) if self._parts else np.zeros(0, np.uint64)

    def finish(self, earlier: pa.Table | None = None) -> Readmissions:
        """The pairs of the file; ``earlier``: stays of earlier periods (:data:`TAIL_COLUMNS`, from the
        ledger), paired with the file's stays by the same rule (rows after the file's in the order's
        last tie-break) — only pairs whose later stay is in the file are kept."""
        parts = list(zip(*self._parts)) if self._parts else [[np.zeros(0, np.uint64)]] * 3 + \
            [[np.zeros(0, np.int32)]] * 2 + [[np.zeros(0, bool)]]
        self._parts = []
        if earlier is not None and earlier.num_rows:
            parts = [list(p) for p in parts]
            for i, c in enumerate(("patient_id", "hospital_id", "readmission_key")):
                parts[i].append(_hash(earlier[c].combine_chunks()))
            parts[3].append(earlier["admission_day"].to_numpy().astype(np.int32))
            parts[4].append(earlier["discharge_day"].to_numpy().astype(np.int32))
            parts[5].append(np.ones(earlier.num_rows, bool))
        arrays = [np.concatenate(p) for p in parts]
        rp = self.policy.readmission
        found = find_readmissions(*arrays, days=rp.days, same_hospital=rp.same_hospital)[:self.rows]
        later = np.flatnonzero(found >= 0)
        return Readmissions(self.rows, later, found[later], previous=earlier)

    def tail_rows(self) -> pa.Table:
        """The kept tail stays (row in the file, patient, hospital, key, admission and discharge days)."""
        if not self.tail:
            return pa.table({"row": pa.array([], pa.int64()), "patient_id": pa.array([], pa.string()),
                             "hospital_id": pa.array([], pa.string()), "readmission_key": pa.array([], pa.string()),
                             "admission_day": pa.array([], pa.int32()), "discharge_day": pa.array([], pa.int32())})
        return pa.concat_tables(self.tail)


@dataclass
class Readmissions:
    """The pairs of a file: ``later`` rows (sorted) and the ``earlier`` row of each; the earlier
    stays' settlement ids once :meth:`name_earlier` has read them.

    An ``earlier`` value ``rows + k`` is row k of ``previous``, a stay of an earlier period (from the
    ledger). ``earlier_points``: file row → the earlier stay's points by the usual rules, for
    ``payment = "combine"`` when the pair is split over two batches."""
    rows: int
    later: np.ndarray
    earlier: np.ndarray
    earlier_ids: dict = field(default_factory=dict)
    previous: pa.Table | None = None
    earlier_points: dict = field(default_factory=dict)
    tail: pa.Table | None = None          # the month's tail rows (ReadmissionIndex.tail_rows), across periods

    @property
    def pairs(self) -> int:
        return int(self.later.size)

    @property
    def across(self) -> int:
        """Pairs whose earlier stay is in an earlier period."""
        return int((self.earlier >= self.rows).sum())

    def earlier_rows(self) -> np.ndarray:
        """The file rows that are the earlier stay of a pair."""
        e = np.unique(self.earlier)
        return e[e < self.rows]

    def name_earlier(self, id_batches) -> None:
        """Keep the settlement id of every earlier stay, from the file's id column batch by batch."""
        want = self.earlier_rows()
        off = 0
        for ids in id_batches:
            lo, hi = np.searchsorted(want, [off, off + len(ids)])
            for r in want[lo:hi]:
                self.earlier_ids[int(r)] = ids[int(r - off)].as_py()
            off += len(ids)

    def batch(self, offset: int, n: int) -> pa.Table:
        """Rows offset … offset+n−1 of the file: ``readmission_of`` (the earlier stay's id, or its
        file row as ``row N`` when the file has no id), ``has_readmission``, ``earlier_period`` (the
        earlier stay's period when it is in an earlier period's file, else null), ``earlier_points``
        (its points by the usual rules when known, else NaN) and ``earlier_local`` (its row in this
        batch, −1 when elsewhere)."""
        lo, hi = np.searchsorted(self.later, [offset, offset + n])
        of = [None] * n
        period = [None] * n
        points = np.full(n, np.nan)
        local = np.full(n, -1, np.int64)
        prev = self.previous
        for r, e in zip(self.later[lo:hi], self.earlier[lo:hi]):
            i, e = int(r - offset), int(e)
            if e >= self.rows:
                k = e - self.rows
                of[i] = prev["settlement_id"][k].as_py()
                period[i] = prev["period"][k].as_py()
                p = prev["points"][k].as_py()
                points[i] = np.nan if p is None else p
                continue
            name = self.earlier_ids.get(e)
            of[i] = name if name is not None else f"row {e}"
            points[i] = self.earlier_points.get(e, np.nan)
            if offset <= e < offset + n:
                local[i] = e - offset
        has = np.zeros(n, bool)
        er = self.earlier_rows()
        a, b = np.searchsorted(er, [offset, offset + n])
        has[er[a:b] - offset] = True
        return pa.table({"readmission_of": pa.array(of, pa.string()), "has_readmission": pa.array(has),
                         "earlier_period": pa.array(period, pa.string()), "earlier_points": pa.array(points),
                         "earlier_local": pa.array(local)})


def detect_table(cases: pa.Table, policy, group_column: str = "drg", duplicate_ids=None) -> pa.Table:
    """:meth:`Readmissions.batch` of a whole table held in memory (the API's path)."""
    idx = ReadmissionIndex(policy, group_column, duplicate_ids)
    idx.add(cases)
    found = idx.finish()
    cols = canonical_columns(cases.schema)
    if "id" in cols:
        found.name_earlier([text(cases[cols["id"]], cases.num_rows)])
    return found.batch(0, cases.num_rows)


def price_readmissions(policy, eligible: np.ndarray, points: np.ndarray, flags: pa.Table):
    """(points, [(mask, case type, reason)]) after the policy's readmission payment.

    ``eligible``: cases priced by the group rules (not special review); ``flags``: the
    :meth:`Readmissions.batch` of the cases."""
    rp = policy.readmission
    readm = eligible & pc.is_valid(flags["readmission_of"]).to_numpy(zero_copy_only=False)
    earlier = eligible & flags["has_readmission"].to_numpy(zero_copy_only=False)
    usual = points
    points = points.copy()
    adjust = []
    if rp.payment == "combine":                # 合并结算: the pair paid once, the later the difference
        n = len(points)
        ep = (pc.fill_null(flags["earlier_points"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
              if "earlier_points" in flags.column_names else np.full(n, np.nan))
        if "earlier_local" in flags.column_names:
            loc = flags["earlier_local"].to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
            here = (loc >= 0) & ~np.isfinite(ep)
            ok = here.copy()
            ok[here] = eligible[loc[here]]
            ep[ok] = usual[loc[ok]]
        combined = readm & np.isfinite(ep)
        points[combined] = np.maximum(usual[combined] - ep[combined], 0.0)
        adjust.append((readm, "readmission", "READMISSION_WITHIN_DAYS"))
        adjust.append((combined, "readmission", "READMISSION_COMBINED"))
        return points, adjust
    if rp.payment == "halve_earlier":
        points[earlier] = points[earlier] * rp.share
        adjust.append((earlier & ~readm, "readmission", "READMISSION_EARLIER_STAY"))
    if rp.payment == "second_unpaid":          # not paid: outside the pool, listed for review
        points[readm] = np.nan
        adjust.append((readm, "unpriced", "READMISSION_UNPAID"))
    else:
        adjust.append((readm, "readmission", "READMISSION_WITHIN_DAYS"))
    return points, adjust


def eligible_of(priced: pa.Table) -> np.ndarray:
    """Cases a readmission payment applies to: priced (points) and not under special review."""
    pts = pc.fill_null(priced["points"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    other = pc.fill_null(pc.equal(priced["case_type"], "special_review"), False).to_numpy(zero_copy_only=False)
    return np.isfinite(pts) & ~other


class StayTail:
    """The month's stays kept in the ledger for the next months (:data:`TAIL_COLUMNS`): the
    index's tail rows, completed batch by batch from the priced cases (:meth:`take`).

    ``points``: the stay's points by the usual rules (before any readmission payment: ``usual``,
    file row → points, for ``combine``; else the points priced, which are the usual ones for a stay
    that is not cut), null when no readmission payment applies to it (unpriced, special review);
    ``cut``: the stay was paid × share as the earlier stay of a pair in its own month
    (``halve_earlier``; its points are then those paid)."""

    def __init__(self, rows: pa.Table, policy, period: str):
        self.rows, self.policy, self.period = rows, policy, period
        self.row = rows["row"].to_numpy() if rows.num_rows else np.zeros(0, np.int64)
        n = rows.num_rows
        self._ids: list = []          # Arrow chunks, in row order (never Python objects per stay)
        self._fund: list = []
        self.points = np.full(n, np.nan)
        self.cut = np.zeros(n, bool)

    def take(self, offset: int, priced: pa.Table, id_column: str | None, flags: pa.Table | None,
             usual: dict | None = None) -> None:
        lo, hi = np.searchsorted(self.row, [offset, offset + priced.num_rows])
        if lo == hi:
            return
        local = self.row[lo:hi] - offset
        take = pa.array(local)
        ok = eligible_of(priced)[local]
        pts = pc.fill_null(priced["points"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)[local]
        if usual is not None:
            pts = np.array([usual.get(int(r), np.nan) for r in self.row[lo:hi]])
        self.points[lo:hi] = np.where(ok, pts, np.nan)
        if flags is not None and self.policy.readmission.payment == "halve_earlier":
            self.cut[lo:hi] = ok & flags["has_readmission"].to_numpy(zero_copy_only=False)[local]
        fund = priced["fund_key"].take(take)
        self._fund.append(fund.combine_chunks() if isinstance(fund, pa.ChunkedArray) else fund)
        named = pa.array([f"{self.period} row {int(r)}" for r in self.row[lo:hi]], pa.string()) \
            if id_column is None else None
        if id_column is not None:
            ids = text(priced[id_column], priced.num_rows).take(take)
            if ids.null_count:
                names = pa.array([f"{self.period} row {int(r)}" for r in self.row[lo:hi]], pa.string())
                ids = pc.if_else(pc.is_valid(ids), ids, names)
            named = ids
        self._ids.append(named.cast(pa.string()))

    def table(self) -> pa.Table:
        r = self.rows
        ids = pa.concat_arrays(self._ids) if self._ids else pa.array([], pa.string())
        fund = pa.concat_arrays([f.cast(pa.string()) for f in self._fund]) if self._fund else pa.array([], pa.string())
        return pa.table({"settlement_id": ids, "patient_id": r["patient_id"],
                         "hospital_id": r["hospital_id"], "readmission_key": r["readmission_key"],
                         "admission_day": r["admission_day"], "discharge_day": r["discharge_day"],
                         "fund_key": fund, "points": pa.array(self.points, pa.float64(), from_pandas=True),
                         "cut": pa.array(self.cut)})


def recoveries(found: Readmissions, policy) -> pa.Table:
    """``halve_earlier`` with the earlier stay in an earlier (settled) period: one row per such pair
    whose earlier stay was priced and not cut in its month: the earlier stay's id, hospital, fund,
    the later stay's id and ``points`` = −(earlier points × (1 − share)), booked in this month's pool."""
    rp = policy.readmission
    prev = found.previous
    cols = {"settlement_id": [], "hospital_id": [], "fund_key": [], "period": [], "later": [], "points": []}
    if rp.payment == "halve_earlier" and prev is not None:
        cross = found.earlier >= found.rows
        for r, e in zip(found.later[cross], found.earlier[cross]):
            k = int(e - found.rows)
            p, cut = prev["points"][k].as_py(), prev["cut"][k].as_py()
            if p is None or cut or not np.isfinite(p) or p == 0:
                continue
            cols["settlement_id"].append(prev["settlement_id"][k].as_py())
            cols["hospital_id"].append(prev["hospital_id"][k].as_py())
            cols["fund_key"].append(prev["fund_key"][k].as_py())
            cols["period"].append(prev["period"][k].as_py())
            cols["later"].append(int(r))
            cols["points"].append(-(p * (1.0 - rp.share)))
    return pa.table({"settlement_id": pa.array(cols["settlement_id"], pa.string()),
                     "hospital_id": pa.array(cols["hospital_id"], pa.string()),
                     "fund_key": pa.array(cols["fund_key"], pa.string()),
                     "period": pa.array(cols["period"], pa.string()),
                     "later": pa.array(cols["later"], pa.int64()),
                     "points": pa.array(cols["points"], pa.float64())})


def recovery_cases(rec: pa.Table, later_ids: list, schema: pa.Schema) -> pa.Table:
    """The recovery rows of :func:`recoveries` as priced cases of ``schema`` (case type
    ``adjustment``, reason ``READMISSION_EARLIER_RECOVERED``): ``id`` the earlier stay's,
    ``readmission_of`` the readmission's that caused it, its hospital and fund, the negative
    points; every other column null (no cost, no personal share, counted in no case count)."""
    n = rec.num_rows
    cols = canonical_columns(schema)
    values = {"points": rec["points"], "fund_key": rec["fund_key"],
              "case_type": pa.array(["adjustment"] * n, pa.string()),
              "pricing_reason": pa.array(["READMISSION_EARLIER_RECOVERED"] * n, pa.string()),
              "payment_method": pa.array(["drg"] * n, pa.string()),
              "readmission_of": pa.array(later_ids, pa.string())}
    if "id" in cols:
        values[cols["id"]] = rec["settlement_id"]
    values[cols["hospital_id"]] = rec["hospital_id"]
    arrays = []
    for f in schema:
        v = values.get(f.name)
        if v is None:
            arrays.append(pa.nulls(n, f.type))
        else:
            v = v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
            arrays.append(v if v.type == f.type else pc.cast(v, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
