"""Case points (病例点数): case typing (normal, high-cost, low-cost, special review) and points.

Generic over the group key, so DRG and DIP share it: a group table gives each group a
base weight (DRG relative weight RW, or DIP score 分值) and optionally its mean cost.

- base points of a case = weight × ``base_points`` × hospital coefficient (医疗机构系数).
  DRG point form: ``base_points`` = the policy's 100 or 1000; rate form and DIP scores: 1.
- ``ratio`` = case total cost / group mean cost (the table's ``mean_cost``, or the mean of
  the cases being priced when ``deviation.group_mean = "period"``).
- special review (特例单议, :mod:`weights.settlement.special_review`): the policy's triggers (flag,
  单议病组, new technology, high/low cost multiple, long stay, small group, ungroupable),
  within the quota; paid per ``special_review.payment`` until decided: ``actual`` base ×
  ratio, ``normal`` base, ``hold`` no points; decided cases as the office decided.
- high-cost (高倍率): ratio > k_high of the weight band (or the weight table's ``high_k`` of the group); ``add_on`` base × (1 + share ×
  (ratio − k_high)), ``actual`` base × ratio, ``cap`` base × min(ratio, high_cap), ``none`` base.
- low-cost (低倍率): ratio < low_k (or the table's ``low_k`` of the group); ``proportional`` base × ratio, ``deduction``
  base × (1 − low_deduction), ``none`` base.
- otherwise normal: base.
- 基础病组 (policy ``[basic_groups]``): the hospital coefficient replaced by the policy's one.

Other payment methods in the same point pool (多元复合式), decided before the group
(:func:`_assign_methods`): per-diem wards 按床日 (``[per_diem]``: days × the ward's points
per day) and the fee-for-service fallback 按项目 (``[fee_for_service]``: cost converted to
points) for ambiguous, ungroupable or unweighted cases. ``payment_method`` says which
method priced each case (``drg``/``dip``/``per_diem``/``fee_for_service``, ``none``
without points). Precedence: docs/settlement.md "Payment methods in one point pool".
- incomplete stays, short stays and readmissions (policy ``[incomplete_stays]``,
  ``[readmission]``, off by default): :mod:`weights.settlement.stays`, one call after the types above.

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
    code_list,
    month_of,
    numeric,
    text,
)
from drgdip.weights.settlement import special_review as review_mod
from drgdip.weights.settlement.policy import Policy, PolicyError, band_value
from drgdip.weights.settlement.stays import price_stays

CASE_TYPES = ("normal", "high_cost", "low_cost", "special_review", "per_diem", "fee_for_service", "unpriced",
              "incomplete_stay", "short_stay", "readmission", "adjustment")
#: payment_method values (支付方式): the group method, 按床日, 按项目, or none (no points)
PAYMENT_METHODS = ("drg", "dip", "per_diem", "fee_for_service", "none")
#: reasons a per-diem ward or the fee-for-service fallback may overcome (they concern the group only)
GROUP_REASONS = ("NOT_GROUPED", "GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED")
PRICED_STATUSES = ("grouped", "ambiguous")
UNGROUPED_CODES = ("0000",)
TRUE_FLAGS = ("1", "true", "t", "yes", "y", "是")

#: columns price_cases adds (replacing input columns of the same name)
PRICE_COLUMNS = ("fund_key", "weight", "group_mean_cost", "cost_ratio", "coefficient", "base_points",
                 "case_type", "pricing_reason", "payment_method", "points", "review_trigger",
                 "review_status", "readmission_of")


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
    masks: dict[str, np.ndarray] = {}        # every reason that applies, whatever comes first

    def code_id(code: str) -> int:
        if code not in codes:
            codes.append(code)
        return codes.index(code)

    def unpriced(mask: np.ndarray, code: str):
        reason[mask & (reason == 0)] = code_id(code)
        masks[code] = masks[code] | mask if code in masks else mask.copy()

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
        # missing, empty or unreadable: nothing shows the case is in this period (it could be paid twice)
        unpriced(_np(pc.is_null(month), True), "BAD_DISCHARGE_DATE")
        inside = pc.starts_with(month, period) if len(period) == 4 else pc.equal(month, period)
        unpriced(~_np(inside, False), "OUT_OF_PERIOD")

    # --- hospital coefficient: looked up once per distinct hospital
    henc = pc.dictionary_encode(hosp)
    hnames = henc.dictionary.to_pylist()
    hco = np.array([policy.coefficient(h) for h in hnames] + [policy.coefficient_default], dtype=np.float64)
    coefficient = hco[_np(henc.indices, len(hnames)).astype(np.int64)]
    bg = policy.basic_groups
    basic = np.zeros(n, bool)
    if bg.enabled:                   # 基础病组: one coefficient whatever the hospital's level
        for c in bg.codes:
            basic |= _np(pc.starts_with(group, c), False)
        if bg.table_column and "basic_group" in group_weights.column_names:
            tflag = _flags(group_weights["basic_group"], group_weights.num_rows)
            basic |= found & (tflag[idx] if tflag.size else False)
        coefficient = np.where(basic, bg.coefficient, coefficient)

    sc = SimpleNamespace(n=n, codes=codes, reason=reason, code_id=code_id, unpriced=unpriced, found=found,
                         idx=idx, tw=tw, weight=weight, cost=cost, fund_key=fund_key, coefficient=coefficient,
                         basic=basic, masks=masks, los=los if "los_days" in cols else np.full(n, np.nan),
                         ward=np.full(n, -1, np.int64), per_diem=np.zeros(n, bool), ffs=np.zeros(n, bool))
    _assign_methods(sc, cases, cols, group, policy)
    sc.priceable = reason == 0
    return sc


def _assign_methods(sc: SimpleNamespace, cases: pa.Table, cols: dict, group: pa.Array, policy: Policy) -> None:
    """Which cases a per-diem ward (按床日) or the fee-for-service fallback (按项目) takes, in
    that order, before the group method; sets their reason (so they are not priced by group)
    and ``sc.per_diem``, ``sc.ward``, ``sc.ffs``. A case with any record problem (a reason not
    in GROUP_REASONS) is left unpriced with it: no method prices it. docs/settlement.md
    "Payment methods in one point pool"."""
    n, reason, code_id, masks = sc.n, sc.reason, sc.code_id, sc.masks
    none = np.zeros(n, bool)
    blocked = none.copy()
    for code, m in masks.items():
        if code not in GROUP_REASONS:
            blocked |= m
    pd, ff = policy.per_diem, policy.fee_for_service
    taken = none.copy()                 # decided here (per diem, or held back by a per-diem rule)
    wanted = none.copy()                # cases a method of this section would take, but for a record problem
    if pd.wards:
        dept = text(cases[cols["dept"]], n) if "dept" in cols else pa.nulls(n, pa.string())
        dx = _principal(cases[cols["diagnoses"]], n) if "diagnoses" in cols and any(
            w.diagnosis_prefixes for w in pd.wards) else pa.nulls(n, pa.string())
        los = sc.los
        for i in range(len(pd.wards) - 1, -1, -1):      # backwards: the first ward listed wins
            w = pd.wards[i]
            hit = none.copy()
            if w.departments:
                hit |= _np(pc.is_in(dept, pa.array(w.departments, pa.string())), False)
            for pre in w.diagnosis_prefixes:
                hit |= _np(pc.starts_with(dx, pre), False)
            for pre in w.groups:
                hit |= _np(pc.starts_with(group, pre), False)
            if not (w.departments or w.diagnosis_prefixes or w.groups):
                hit = ~none
            if w.longer_than_days > 0:
                hit &= los > w.longer_than_days
            sc.ward[hit] = i
        cand = (sc.ward >= 0) & ~blocked
        no_days = cand & ~(los > 0)
        reason[no_days] = code_id("PER_DIEM_NO_DAYS")
        short = cand & ~no_days & (los <= pd.short_stay_days) if pd.short_stay_days > 0 else none
        if pd.short_stay == "unpriced":
            reason[short] = code_id("PER_DIEM_SHORT_STAY")
            taken |= short
        sc.per_diem = cand & ~no_days & ~short
        reason[sc.per_diem] = code_id("PER_DIEM_WARD")
        taken |= sc.per_diem | no_days
        wanted |= (sc.ward >= 0) & blocked
        sc.ward[~sc.per_diem] = -1
    if ff.classes:
        free = ~blocked & ~taken
        not_grouped = masks.get("NOT_GROUPED", none)
        classes = {
            "ambiguous": _ambiguous(cases, group, n, ff.ambiguous_suffixes),
            "ungroupable": not_grouped,
            "unweighted": (masks.get("GROUP_NOT_IN_TABLE", none) | masks.get("GROUP_NOT_PRICED", none)) & ~not_grouped,
        }
        for cls, code in (("ambiguous", "FFS_AMBIGUOUS"), ("ungroupable", "FFS_UNGROUPABLE"),
                          ("unweighted", "FFS_UNWEIGHTED")):
            if cls not in ff.classes:
                continue
            wanted |= classes[cls] & blocked
            m = free & classes[cls]         # a cost of 0 is a record problem (ZERO_COST): never in ``free``
            reason[m] = code_id(code)
            sc.ffs |= m
            free &= ~m
    if wanted.any():                    # say the problem that stops them, not the group's
        todo = wanted.copy()
        for code, m in masks.items():
            if code not in GROUP_REASONS:
                reason[todo & m] = code_id(code)
                todo &= ~m


def _principal(array, n: int) -> pa.Array:
    """The principal diagnosis (the first code of each list; null for an empty or missing list), upper case."""
    first = pc.list_slice(code_list(array, n), 0, 1)
    rows = _np(pc.list_parent_indices(first), 0).astype(np.int64)
    codes = np.full(n, None, dtype=object)
    codes[rows] = pc.list_flatten(first).to_numpy(zero_copy_only=False)
    return pc.utf8_upper(pa.array(codes, pa.string()))


def _ambiguous(cases: pa.Table, group: pa.Array, n: int, suffixes) -> np.ndarray:
    """歧义病案: the grouper's status ``ambiguous``, or a group code ending in a policy suffix (QY)."""
    out = np.zeros(n, bool)
    if "status" in cases.column_names:
        out |= _np(pc.equal(text(cases["status"], n), "ambiguous"), False)
    up = pc.utf8_upper(group)
    for suf in suffixes:
        out |= _np(pc.ends_with(up, suf), False)
    return out


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


def group_cost_rows(cases: pa.Table, group_weights: pa.Table, policy: Policy, group_column: str = "drg",
                    weight_column: str = "weight", period: str | None = None,
                    duplicate_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """(weight-table row, cost) of each record, the row -1 when the record is not priceable: what
    :func:`add_group_costs` adds, row by row, for a caller that must add them in file order
    over data split another way (drgdip.spark)."""
    sc = _screen(cases, group_weights, policy, group_column, weight_column, period, duplicate_ids)
    return np.where(sc.priceable, sc.idx, -1), sc.cost


def price_cases(cases: pa.Table, group_weights: pa.Table, policy: Policy, group_column: str = "drg",
                weight_column: str = "weight", base_points: float | None = None,
                period: str | None = None, duplicate_ids: pa.Array | None = None,
                group_means: np.ndarray | None = None, method: str | None = None,
                review: review_mod.ReviewContext | None = None,
                readmissions: pa.Table | None = None) -> pa.Table:
    """The input table plus fund_key, weight, group_mean_cost, cost_ratio, coefficient,
    base_points, case_type, pricing_reason, payment_method and points (null when unpriced).

    ``method``: the payment_method written for cases priced by group, ``drg`` or ``dip``
    (None: ``dip`` when the group column's name starts with "dip" or "_dip", else ``drg``).
    Per-diem wards and the fee-for-service fallback (policy ``[per_diem]``,
    ``[fee_for_service]``) price their cases first (docs/settlement.md "Payment methods in
    one point pool").

    ``period`` ("YYYY-MM" or "YYYY"): cases discharged outside it are unpriced
    (OUT_OF_PERIOD). ``base_points`` None: the policy's base for the point form, 1 for the
    rate form. For a file priced batch by batch: ``duplicate_ids``, the settlement ids
    repeated anywhere in the file; ``group_means`` (``deviation.group_mean = "period"``),
    the file's mean cost per weight-table row (sums / counts of :func:`add_group_costs`);
    ``review``, the whole file's special-review facts and the office's decisions
    (:class:`weights.settlement.special_review.ReviewContext`; None: from this table alone);
    ``readmissions``, the file's readmission flags of these rows
    (:meth:`weights.settlement.readmission.Readmissions.batch`; None: found in ``cases`` alone). With
    ``[readmission]`` on, a column ``readmission_of`` (the earlier stay's id) is added."""
    if base_points is None:
        base_points = policy.base_points if policy.form == "point" else 1.0
    if method is None:
        method = "dip" if group_column.lower().startswith(("dip", "_dip")) else "drg"
    if method not in ("drg", "dip"):
        raise ValueError(f"method must be drg or dip, got {method!r}")
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

    # --- case types, in order of precedence: special review (特例单议), high, low, normal
    ungroupable = reason == codes.index("NOT_GROUPED") if "NOT_GROUPED" in codes else np.zeros(n, bool)
    trig, under, over, dec, dpts = review_mod.assess(cases, group_weights, sr, review, priceable=priceable,
                                                     ungroupable=ungroupable, found=found, idx=idx, ratio=ratio)
    rejected = under & (dec == review_mod.DECISIONS.index("reject"))
    special = under & ~rejected
    k_high = band_value(dv.high_bands, np.nan_to_num(weight, nan=0.0))
    low_k = np.full(n, dv.low_k)
    for col, arr in (("high_k", k_high), ("low_k", low_k)):     # the table's own thresholds, per group
        if col in group_weights.column_names and group_weights.num_rows:
            tk = _np(numeric(group_weights[col], group_weights.num_rows)[0], np.nan)[idx]
            own = found & np.isfinite(tk) & (tk > 0)
            arr[own] = tk[own]
    high = priceable & ~special & (ratio > k_high)
    low = priceable & ~special & ~high & (ratio < low_k)
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
    decided = special & (dec >= 0)
    for d, value in (("points", dpts), ("normal", base), ("actual", base * ratio)):
        m = decided & (dec == review_mod.DECISIONS.index(d))
        points[m] = value[m]
    decided &= np.isfinite(points)      # normal/actual of a case with no base (ungroupable): still held
    pd, ff = policy.per_diem, policy.fee_for_service
    if sc.per_diem.any():            # 按床日: days × the ward's points per day
        rate = np.array([w.points_per_day for w in pd.wards])[np.maximum(sc.ward, 0)]
        pp = sc.los * rate * (coefficient if pd.apply_coefficient else 1.0)
        points[sc.per_diem] = pp[sc.per_diem]
    if sc.ffs.any():                 # 按项目: cost converted to points
        fp = ff.points_of(cost) * (coefficient if ff.apply_coefficient else 1.0)
        points[sc.ffs] = fp[sc.ffs]

    case_type = np.full(n, CASE_TYPES.index("unpriced"), dtype=np.int8)
    for mask, name in ((normal, "normal"), (high, "high_cost"), (low, "low_cost"), (special, "special_review"),
                       (sc.per_diem, "per_diem"), (sc.ffs, "fee_for_service")):
        case_type[mask] = CASE_TYPES.index(name)
    pm = np.full(n, PAYMENT_METHODS.index(method), dtype=np.int8)
    pm[sc.per_diem] = PAYMENT_METHODS.index("per_diem")
    pm[sc.ffs] = PAYMENT_METHODS.index("fee_for_service")
    pm[~np.isfinite(points)] = PAYMENT_METHODS.index("none")
    reason[normal] = code_id("PRICED_NORMAL")
    reason[high] = code_id("HIGH_COST_CASE")
    reason[low] = code_id("LOW_COST_CASE")
    for t, name in enumerate(review_mod.TRIGGERS, start=1):
        reason[special & (trig == t)] = code_id(review_mod.TRIGGER_REASONS[name])
    if sr.payment == "hold":
        reason[special & ~decided] = code_id("SPECIAL_REVIEW_HOLD")
    reason[over & priceable] = code_id("SPECIAL_REVIEW_OVER_QUOTA")
    reason[rejected & priceable] = code_id("SPECIAL_REVIEW_REJECTED")
    for d, code in review_mod.DECIDED_REASONS.items():
        reason[decided & (dec == review_mod.DECISIONS.index(d))] = code_id(code)
    status = np.zeros(n, np.int8)                   # 0: not under review
    status[special & ~decided & ~np.isfinite(points)] = 1 + review_mod.STATUSES.index("held")
    status[special & ~decided & np.isfinite(points)] = 1 + review_mod.STATUSES.index("interim")
    status[decided | rejected] = 1 + review_mod.STATUSES.index("decided")
    status[over] = 1 + review_mod.STATUSES.index("over_quota")

    # --- incomplete stays, short stays, readmissions (policy [incomplete_stays], [readmission]): weights/settlement/stays.py
    points, adjust, stay_flags = price_stays(cases, policy, canonical_columns(cases.schema), priceable & ~special,
                                             base, ratio, points, group_column, readmissions, duplicate_ids)
    for mask, name, code in adjust:
        case_type[mask] = CASE_TYPES.index(name)
        reason[mask] = code_id(code)
    pm[~np.isfinite(points)] = PAYMENT_METHODS.index("none")     # e.g. a readmission left unpaid

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
        "payment_method": _decode(pm, PAYMENT_METHODS),
        "points": pa.array(points, pa.float64(), from_pandas=True),
        "review_trigger": _decode(trig, (None,) + review_mod.TRIGGERS),
        "review_status": _decode(status, (None,) + review_mod.STATUSES),
    }
    if stay_flags is not None:
        add["readmission_of"] = stay_flags["readmission_of"].combine_chunks()
    for name, arr in add.items():
        out = out.append_column(name, arr)
    return out
