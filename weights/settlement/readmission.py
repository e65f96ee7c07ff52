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
    """Compact arrays of a whole file, added batch by batch in file order; :meth:`finish` pairs them."""
    policy: object
    group_column: str = "drg"
    duplicate_ids: pa.Array | None = None
    _parts: list = field(default_factory=list)
    rows: int = 0

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
        self._parts.append((_hash(patient), _hash(hosp), _hash(key),
                            pc.fill_null(adm, 0).to_numpy(zero_copy_only=False).astype(np.int32),
                            pc.fill_null(dis, 0).to_numpy(zero_copy_only=False).astype(np.int32), usable))
        self.rows += n

    def finish(self) -> Readmissions:
        parts = list(zip(*self._parts)) if self._parts else [[np.zeros(0, np.uint64)]] * 3 + \
            [[np.zeros(0, np.int32)]] * 2 + [[np.zeros(0, bool)]]
        self._parts = []
        arrays = [np.concatenate(p) for p in parts]
        rp = self.policy.readmission
        earlier = find_readmissions(*arrays, days=rp.days, same_hospital=rp.same_hospital)
        later = np.flatnonzero(earlier >= 0)
        return Readmissions(self.rows, later, earlier[later])


@dataclass
class Readmissions:
    """The pairs of a file: ``later`` rows (sorted) and the ``earlier`` row of each; the earlier
    stays' settlement ids once :meth:`name_earlier` has read them."""
    rows: int
    later: np.ndarray
    earlier: np.ndarray
    earlier_ids: dict = field(default_factory=dict)

    @property
    def pairs(self) -> int:
        return int(self.later.size)

    def earlier_rows(self) -> np.ndarray:
        return np.unique(self.earlier)

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
        file row as ``row N`` when the file has no id) and ``has_readmission``."""
        lo, hi = np.searchsorted(self.later, [offset, offset + n])
        of = [None] * n
        for r, e in zip(self.later[lo:hi], self.earlier[lo:hi]):
            name = self.earlier_ids.get(int(e))
            of[int(r - offset)] = name if name is not None else f"row {int(e)}"
        has = np.zeros(n, bool)
        er = self.earlier_rows()
        a, b = np.searchsorted(er, [offset, offset + n])
        has[er[a:b] - offset] = True
        return pa.table({"readmission_of": pa.array(of, pa.string()), "has_readmission": pa.array(has)})


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
    points = points.copy()
    adjust = []
    if rp.payment == "halve_earlier":
        points[earlier] = points[earlier] * rp.share
        adjust.append((earlier & ~readm, "readmission", "READMISSION_EARLIER_STAY"))
    if rp.payment == "second_unpaid":          # not paid: outside the pool, listed for review
        points[readm] = np.nan
        adjust.append((readm, "unpriced", "READMISSION_UNPAID"))
    else:
        adjust.append((readm, "readmission", "READMISSION_WITHIN_DAYS"))
    return points, adjust
