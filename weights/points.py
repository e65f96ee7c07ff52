"""Case points (病例点数): case typing (normal, high-cost, low-cost, special review) and points.

Generic over the group key, so DRG and DIP share it: a group table gives each group a
base weight (DRG relative weight RW, or DIP score 分值) and optionally its mean cost.

- base points of a case = weight × ``base_points`` × hospital coefficient (医疗机构系数).
  DRG point form: ``base_points`` = the policy's 100 or 1000; rate form and DIP scores: 1.
- ``ratio`` = case total cost / group mean cost (the table's ``mean_cost``, or the mean of
  the cases being priced when ``deviation.group_mean = "period"``).
- special review (特病单议): the record's flag column is true, or ratio above
  ``special_review.cost_multiple`` (when > 0); paid per ``special_review.payment``:
  ``actual`` base × ratio, ``normal`` base, ``hold`` no points until reviewed.
- high-cost (高倍率): ratio > k_high of the weight band; ``add_on`` base × (1 + share ×
  (ratio − k_high)), ``actual`` base × ratio, ``cap`` base × min(ratio, high_cap), ``none`` base.
- low-cost (低倍率): ratio < low_k; ``proportional`` base × ratio, ``deduction``
  base × (1 − low_deduction), ``none`` base.
- otherwise normal: base.
- incomplete stays, short stays and readmissions (policy ``[incomplete_stays]``,
  ``[readmission]``, off by default): :mod:`weights.stays`, one call after the types above.

A case that cannot be priced (not grouped, a group the table does not price, no cost or zero cost,
unknown fund, no hospital, discharged outside the period, an impossible discharge date, a
length of stay outside the policy's ``records`` limits, a settlement id (结算ID) that occurs
more than once in the file: every copy, since which one is right is for a person to decide) keeps ``points`` null, case type
``unpriced`` and a reason; it is listed for review with its money, never dropped and
never priced at zero.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import (
    InputError,
    canonical_columns,
    month_of,
    numeric,
    text,
)
from drgdip.weights.policy import Policy, PolicyError, band_value
from drgdip.weights.stays import price_stays

CASE_TYPES = ("normal", "high_cost", "low_cost", "special_review", "unpriced", "incomplete_stay", "short_stay",
              "readmission")
PRICED_STATUSES = ("grouped", "ambiguous")
UNGROUPED_CODES = ("0000",)
TRUE_FLAGS = ("1", "true", "t", "yes", "y", "是")

#: columns price_cases adds (replacing input columns of the same name)
PRICE_COLUMNS = ("fund_key", "weight", "group_mean_cost", "cost_ratio", "coefficient", "base_points",
                 "case_type", "pricing_reason", "points", "readmission_of")


def _flags(array, n: int) -> np.ndarray:
    s = pc.utf8_lower(text(array, n).cast(pa.string()))
    return pc.fill_null(pc.is_in(s, pa.array(TRUE_FLAGS)), False).to_numpy(zero_copy_only=False)


def _np(a: pa.Array, fill) -> np.ndarray:
    return pc.fill_null(a, fill).to_numpy(zero_copy_only=False)


def _decode(ids: np.ndarray, names) -> pa.Array:
    """Small integer ids → their names as a string array (no per-row Python)."""
    return pa.DictionaryArray.from_arrays(pa.array(ids.astype(np.int32)), pa.array(list(names), pa.string())
                                          ).cast(pa.string())


def _screen(cases: pa.Table, group_weights: pa.Table, policy: Policy, group_column: str,
            weight_column: str, period: str | None, duplicate_ids) -> SimpleNamespace:
    """Every check before the group mean cost: reasons so far, weight lookup, cost, fund, coefficient."""
    n = cases.num_rows
    cols = canonical_columns(cases.schema)
    if group_column not in cases.column_names:
        raise InputError(f"records have no {group_column!r} column: group them first")
    if group_column not in group_weights.column_names or weight_column not in group_weights.column_names:
        raise InputError(f"the weight table needs the columns {group_column} and {weight_column}")
    has_mean = "mean_cost" in group_weights.column_names
    if policy.deviation.group_mean == "table" and not has_mean:
        raise PolicyError(f"{policy.path or 'policy'}: deviation.group_mean is \"table\" but the weight table has "
                          "no mean_cost column (an official weight table); set deviation.group_mean = \"period\"")

    codes: list[str] = [""]                  # reason codes; index 0 = not decided yet
    reason = np.zeros(n, dtype=np.int16)

    def code_id(code: str) -> int:
        if code not in codes:
            codes.append(code)
        return codes.index(code)

    def unpriced(mask: np.ndarray, code: str):
        reason[mask & (reason == 0)] = code_id(code)

    # --- grouping outcome
    group = text(cases[group_column], n)
    if "status" in cases.column_names:
        st = text(cases["status"], n)
        unpriced(_np(pc.equal(st, "invalid"), False), "INVALID_RECORD")
        unpriced(~_np(pc.is_in(st, pa.array(PRICED_STATUSES)), False), "NOT_GROUPED")
    gnull = _np(pc.is_null(group), True) | _np(pc.is_in(group, pa.array(UNGROUPED_CODES)), False)
    unpriced(gnull, "NOT_GROUPED")

    # --- weight lookup (vectorised join on the group code)
    table_groups = text(group_weights[group_column], group_weights.num_rows)
    at = pc.index_in(group, value_set=table_groups)
    found = _np(pc.is_valid(at), False)
    idx = _np(at, 0).astype(np.int64)
    tw = _np(numeric(group_weights[weight_column], group_weights.num_rows)[0], np.nan)
    weight = np.where(found, tw[idx] if tw.size else np.nan, np.nan)
    unpriced(~found, "GROUP_NOT_IN_TABLE")
    unpriced(~(weight > 0), "GROUP_NOT_PRICED")

    # --- money, fund, hospital, period
    if "total_cost" not in cols:
        raise InputError("records have no total_cost column (or an alias of it)")
    cost_a, cost_bad = numeric(cases[cols["total_cost"]], n)
    cost = _np(cost_a, np.nan)
    unpriced(_np(cost_bad, False) | ~np.isfinite(cost) | (cost < 0), "BAD_COST")
    unpriced(cost == 0, "ZERO_COST")        # a stay that cost nothing is never priced (at zero or at all)
    if "personal_share" in cols:
        ps_a, ps_bad = numeric(cases[cols["personal_share"]], n)
        # missing counts as bad too: the point value counts every priced case's share
        unpriced(_np(ps_bad, False) | _np(pc.is_null(ps_a), True) | (_np(ps_a, 0.0) < 0), "BAD_PERSONAL_SHARE")
    if "fund" not in cols:
        raise InputError("records have no fund column (险种类型, insutype or an alias of it)")
    labels = policy.fund_of_label()
    fund_text = pc.utf8_lower(pc.fill_null(text(cases[cols["fund"]], n), ""))
    keys = pa.array(sorted(labels))
    fpos = pc.index_in(fund_text, value_set=keys)
    fund_names = np.array([labels[k] for k in keys.to_pylist()] + [None], dtype=object)
    fund_key = fund_names[_np(fpos, len(keys)).astype(np.int64)]
    unpriced(fund_key == None, "UNKNOWN_FUND")  # noqa: E711 (element-wise)
    if "hospital_id" not in cols:
        raise InputError("records have no hospital_id column (定点医疗机构代码, fixmedins_code or an alias)")
    hosp = text(cases[cols["hospital_id"]], n)
    unpriced(_np(pc.is_null(hosp), True), "MISSING_HOSPITAL")
    # --- record checks (policy [records]): length of stay, one settlement per id
    lim = policy.records
    if "los_days" in cols:
        los_a, los_bad = numeric(cases[cols["los_days"]], n)
        los = _np(los_a, np.nan)
        given = _np(pc.is_valid(los_a), False)
        unpriced(_np(los_bad, False) | (given & ~((los >= lim.los_min_days) & (los <= lim.los_max_days))), "BAD_LOS")
    if "id" in cols:
        sid = pc.dictionary_encode(text(cases[cols["id"]], n))
        ids = _np(sid.indices, -1).astype(np.int64)
        counts = np.bincount(ids[ids >= 0], minlength=len(sid.dictionary))
        dup = (ids >= 0) & (counts[np.maximum(ids, 0)] > 1)
        if duplicate_ids is not None and len(duplicate_ids):    # ids repeated elsewhere in the file
            dup |= _np(pc.is_in(sid.dictionary, value_set=duplicate_ids), False)[np.maximum(ids, 0)] & (ids >= 0)
        unpriced(dup, "DUPLICATE_SETTLEMENT_ID")
    if period is not None and "discharge_date" in cols:
        month = month_of(cases[cols["discharge_date"]])
        present = _np(pc.is_valid(text(cases[cols["discharge_date"]], n)), False)
        unpriced(present & _np(pc.is_null(month), True), "BAD_DISCHARGE_DATE")
        inside = pc.starts_with(month, period) if len(period) == 4 else pc.equal(month, period)
        unpriced(present & ~_np(inside, False), "OUT_OF_PERIOD")

    # --- hospital coefficient: looked up once per distinct hospital
    henc = pc.dictionary_encode(hosp)
    hnames = henc.dictionary.to_pylist()
    hco = np.array([policy.coefficient(h) for h in hnames] + [policy.coefficient_default], dtype=np.float64)
    coefficient = hco[_np(henc.indices, len(hnames)).astype(np.int64)]

    return SimpleNamespace(n=n, codes=codes, reason=reason, code_id=code_id, unpriced=unpriced, found=found,
                           idx=idx, tw=tw, weight=weight, cost=cost, fund_key=fund_key, coefficient=coefficient,
                           priceable=reason == 0)


def add_group_costs(cases: pa.Table, group_weights: pa.Table, policy: Policy, sums: np.ndarray,
                    counts: np.ndarray, group_column: str = "drg", weight_column: str = "weight",
                    period: str | None = None, duplicate_ids=None) -> None:
    """Add the batch's priceable cases to per-group cost ``sums`` and ``counts`` (arrays of
    the weight table's length), row by row in order, so that batch after batch they equal
    those of the whole file (the period's group mean cost, ``deviation.group_mean = "period"``)."""
    sc = _screen(cases, group_weights, policy, group_column, weight_column, period, duplicate_ids)
    gi = sc.idx[sc.priceable]
    np.add.at(sums, gi, sc.cost[sc.priceable])
    np.add.at(counts, gi, 1)


def price_cases(cases: pa.Table, group_weights: pa.Table, policy: Policy, group_column: str = "drg",
                weight_column: str = "weight", base_points: float | None = None,
                period: str | None = None, duplicate_ids: pa.Array | None = None,
                group_means: np.ndarray | None = None, readmissions: pa.Table | None = None) -> pa.Table:
    """The input table plus fund_key, weight, group_mean_cost, cost_ratio, coefficient,
    base_points, case_type, pricing_reason and points (null when unpriced).

    ``period`` ("YYYY-MM" or "YYYY"): cases discharged outside it are unpriced
    (OUT_OF_PERIOD). ``base_points`` None: the policy's base for the point form, 1 for the
    rate form. For a file priced batch by batch: ``duplicate_ids``, the settlement ids
    repeated anywhere in the file; ``group_means`` (``deviation.group_mean = "period"``),
    the file's mean cost per weight-table row (sums / counts of :func:`add_group_costs`);
    ``readmissions``, the file's readmission flags of these rows
    (:meth:`weights.readmission.Readmissions.batch`; None: found in ``cases`` alone). With
    ``[readmission]`` on, a column ``readmission_of`` (the earlier stay's id) is added."""
    if base_points is None:
        base_points = policy.base_points if policy.form == "point" else 1.0
    sc = _screen(cases, group_weights, policy, group_column, weight_column, period, duplicate_ids)
    n, codes, reason, code_id, unpriced = sc.n, sc.codes, sc.reason, sc.code_id, sc.unpriced
    found, idx, tw, weight, cost = sc.found, sc.idx, sc.tw, sc.weight, sc.cost
    fund_key, coefficient, priceable = sc.fund_key, sc.coefficient, sc.priceable

    # --- group mean cost
    if policy.deviation.group_mean == "table":
        tm = _np(numeric(group_weights["mean_cost"], group_weights.num_rows)[0], np.nan)
        gmean = np.where(found, tm[idx] if tm.size else np.nan, np.nan)
    elif group_means is not None:
        gmean = np.where(priceable, np.asarray(group_means, dtype=np.float64)[np.minimum(idx, len(tw) - 1)]
                         if len(tw) else np.nan, np.nan)
    else:
        gi = np.where(priceable, idx, len(tw))
        s = np.bincount(gi, np.where(priceable, cost, 0.0), len(tw) + 1)
        c = np.bincount(gi, minlength=len(tw) + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            period_mean = s / c
        gmean = np.where(priceable, period_mean[gi], np.nan)
    unpriced(priceable & ~(gmean > 0), "NO_GROUP_MEAN_COST")
    priceable = reason == 0

    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(priceable, cost / gmean, np.nan)
    base = weight * base_points * coefficient
    dv, sr = policy.deviation, policy.special_review

    # --- case types, in order of precedence: special review, high, low, normal
    flagged = _flags(cases[sr.flag_column], n) if sr.flag_column in cases.column_names else np.zeros(n, bool)
    by_cost = (ratio > sr.cost_multiple) if sr.cost_multiple > 0 else np.zeros(n, bool)
    special = priceable & (flagged | by_cost)
    k_high = band_value(dv.high_bands, np.nan_to_num(weight, nan=0.0))
    high = priceable & ~special & (ratio > k_high)
    low = priceable & ~special & ~high & (ratio < dv.low_k)
    normal = priceable & ~special & ~high & ~low

    points = np.full(n, np.nan)
    points[normal] = base[normal]
    if dv.high_payment == "add_on":
        hp = base * (1.0 + dv.high_add_on_share * (ratio - k_high))
    elif dv.high_payment == "actual":
        hp = base * ratio
    elif dv.high_payment == "cap":
        hp = base * np.minimum(ratio, dv.high_cap)
    else:
        hp = base
    points[high] = hp[high]
    if dv.low_payment == "proportional":
        lp = base * ratio
    elif dv.low_payment == "deduction":
        lp = base * (1.0 - dv.low_deduction)
    else:
        lp = base
    points[low] = lp[low]
    if sr.payment == "actual":
        points[special] = (base * ratio)[special]
    elif sr.payment == "normal":
        points[special] = base[special]

    case_type = np.full(n, CASE_TYPES.index("unpriced"), dtype=np.int8)
    for mask, name in ((normal, "normal"), (high, "high_cost"), (low, "low_cost"), (special, "special_review")):
        case_type[mask] = CASE_TYPES.index(name)
    reason[normal] = code_id("PRICED_NORMAL")
    reason[high] = code_id("HIGH_COST_CASE")
    reason[low] = code_id("LOW_COST_CASE")
    reason[special & flagged] = code_id("SPECIAL_REVIEW_FLAG")
    reason[special & ~flagged] = code_id("SPECIAL_REVIEW_COST")
    if sr.payment == "hold":
        reason[special] = code_id("SPECIAL_REVIEW_HOLD")

    # --- incomplete stays, short stays, readmissions (policy [incomplete_stays], [readmission]): weights/stays.py
    points, adjust, stay_flags = price_stays(cases, policy, canonical_columns(cases.schema), priceable & ~special,
                                             base, ratio, points, group_column, readmissions, duplicate_ids)
    for mask, name, code in adjust:
        case_type[mask] = CASE_TYPES.index(name)
        reason[mask] = code_id(code)

    out = cases.drop_columns([c for c in PRICE_COLUMNS if c in cases.column_names])
    add = {
        "fund_key": pa.array(fund_key.tolist(), pa.string()),
        "weight": pa.array(weight, pa.float64(), from_pandas=True),
        "group_mean_cost": pa.array(np.where(priceable, gmean, np.nan), pa.float64(), from_pandas=True),
        "cost_ratio": pa.array(ratio, pa.float64(), from_pandas=True),
        "coefficient": pa.array(coefficient, pa.float64()),
        "base_points": pa.array(np.where(priceable, base, np.nan), pa.float64(), from_pandas=True),
        "case_type": _decode(case_type, CASE_TYPES),
        "pricing_reason": _decode(reason, codes),
        "points": pa.array(points, pa.float64(), from_pandas=True),
    }
    if stay_flags is not None:
        add["readmission_of"] = stay_flags["readmission_of"].combine_chunks()
    for name, arr in add.items():
        out = out.append_column(name, arr)
    return out
