"""Special case review (特例单议): which cases are held, the quota, and the office's decisions.

Pure functions over arrays and Arrow tables; :func:`weights.settlement.points.price_cases` calls
:func:`review_cases` at one point, after the ratio and before the high/low-cost typing.

1. **Triggers** (policy ``[special_review]``), in this order of precedence; a case gets the
   first that applies as its ``review_trigger``:
   ``flag`` (the record's flag column), ``review_group`` (the weight table's ``review_group``
   column, 单议病组), ``new_technology`` (a procedure code of ``new_technology_codes`` or the
   record's ``new_technology_column`` flag, 新技术), ``cost_high`` (ratio > ``cost_multiple``),
   ``cost_low`` (ratio < ``low_cost_multiple``), ``long_stay`` (``los_days`` >
   ``los_days_above``), ``small_group`` (fewer than ``min_group_cases`` priceable cases of the
   group in the period), ``ungroupable`` (a case that cannot be grouped, ``ungroupable = true``).
2. **Quota** (``quota_share`` region-wide, ``hospital_quota_share`` per hospital): at most
   floor(share × the period's reviewable cases) are accepted; candidates fill the quota by
   cost ratio descending (cases with no ratio last), then settlement id, then file order; a
   candidate is accepted when both its hospital's and the region's quota have room. Cases
   over the quota are priced by the ordinary rules, reason ``SPECIAL_REVIEW_OVER_QUOTA``.
3. **Decisions** (a CSV from the office: ``id, decision, points``): ``points`` (the decided
   points), ``normal`` (base points), ``actual`` (base × ratio) or ``reject`` (the ordinary
   rules, as if never sent). :func:`read_decisions` checks the file; a row that cannot be used
   gets a reason (``decisions.csv`` of the run), an unusable file an InputError.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, read_table, text

#: triggers in order of precedence (review_trigger values)
TRIGGERS = ("flag", "review_group", "new_technology", "cost_high", "cost_low", "long_stay", "small_group",
            "ungroupable")
#: the pricing reason of a case under review, by trigger
TRIGGER_REASONS = {"flag": "SPECIAL_REVIEW_FLAG", "review_group": "SPECIAL_REVIEW_GROUP",
                   "new_technology": "SPECIAL_REVIEW_NEW_TECH", "cost_high": "SPECIAL_REVIEW_COST",
                   "cost_low": "SPECIAL_REVIEW_LOW_COST", "long_stay": "SPECIAL_REVIEW_LONG_STAY",
                   "small_group": "SPECIAL_REVIEW_SMALL_GROUP", "ungroupable": "SPECIAL_REVIEW_UNGROUPABLE"}
#: what the office needs to decide, by trigger (review.csv ``needed``)
NEEDED = {"flag": "the hospital's application and the medical record",
          "review_group": "the medical record (every case of this group is reviewed)",
          "new_technology": "the new technology's approval and its itemised cost",
          "cost_high": "the medical record and the itemised bill (cost far above the group mean)",
          "cost_low": "the medical record and the itemised bill (cost far below the group mean)",
          "long_stay": "the clinical course of the stay (length of stay above the limit)",
          "small_group": "the medical record (too few cases in the group this period for a stable mean)",
          "ungroupable": "the coding of the case (it could not be grouped)"}
#: review_status values
STATUSES = ("held", "interim", "decided", "over_quota")
DECISIONS = ("points", "normal", "actual", "reject")
#: reason of a decided case, by decision
DECIDED_REASONS = {"points": "SPECIAL_REVIEW_DECIDED_POINTS", "normal": "SPECIAL_REVIEW_DECIDED_NORMAL",
                   "actual": "SPECIAL_REVIEW_DECIDED_ACTUAL", "reject": "SPECIAL_REVIEW_REJECTED"}


@dataclass
class Decisions:
    """The usable rows of a decisions file: ids (unique), decision index into DECISIONS, points."""
    ids: pa.Array
    decision: np.ndarray          # int8 index into DECISIONS
    points: np.ndarray            # float64, NaN unless decision == "points"
    rows: pa.Table                # every row of the file with status (usable/refused) and reason

    def lookup(self, case_ids: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position in the decisions or -1, decision index or -1, decided points) per case."""
        at = pc.index_in(case_ids, value_set=self.ids)
        pos = pc.fill_null(at, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        dec = np.where(pos >= 0, self.decision[np.maximum(pos, 0)] if len(self.ids) else -1, -1)
        pts = np.where(pos >= 0, self.points[np.maximum(pos, 0)] if len(self.ids) else np.nan, np.nan)
        return pos, dec.astype(np.int64), pts


@dataclass
class ReviewContext:
    """What a batch cannot know alone (whole-file facts, from the run's passes).

    ``group_counts``: priceable cases per weight-table row in the period (``small_group``);
    ``accepted``: per row of the batch, accepted within the quota (None: the quota is
    applied over the table being priced); ``decisions``: the office's decisions or None."""
    group_counts: np.ndarray | None = None
    accepted: np.ndarray | None = None
    decisions: Decisions | None = None


def quota_active(sr) -> bool:
    return sr.quota_share < 1.0 or sr.hospital_quota_share < 1.0


def needs_group_counts(sr) -> bool:
    return sr.min_group_cases > 0


def trigger_codes(sr, *, priceable, ungroupable, flagged, new_tech, review_group, ratio, los,
                  group_count) -> np.ndarray:
    """Per case 0 (no trigger) or 1 + the index in TRIGGERS of its first trigger."""
    n = len(priceable)
    with np.errstate(invalid="ignore"):
        tests = {
            "flag": priceable & flagged,
            "review_group": priceable & review_group if sr.review_groups else np.zeros(n, bool),
            "new_technology": priceable & new_tech,
            "cost_high": priceable & (ratio > sr.cost_multiple) if sr.cost_multiple > 0 else np.zeros(n, bool),
            "cost_low": priceable & (ratio < sr.low_cost_multiple) if sr.low_cost_multiple > 0 else np.zeros(n, bool),
            "long_stay": priceable & (los > sr.los_days_above) if sr.los_days_above > 0 else np.zeros(n, bool),
            "small_group": priceable & (group_count < sr.min_group_cases) if sr.min_group_cases > 0
            else np.zeros(n, bool),
            "ungroupable": ungroupable if sr.ungroupable else np.zeros(n, bool),
        }
    code = np.zeros(n, np.int8)
    for i, name in reversed(list(enumerate(TRIGGERS))):
        code[tests[name]] = i + 1
    return code


def fill_quota(hospital: np.ndarray, ratio: np.ndarray, ids: np.ndarray, hospital_base: np.ndarray,
               region_base: int, region_share: float, hospital_share: float) -> np.ndarray:
    """Which of the candidates (one entry each, in file order) are accepted within the quota.

    ``hospital``: each candidate's hospital code (an index into ``hospital_base``, the
    hospital's count of reviewable cases in the period); ``region_base``: the region's count.
    Caps: floor(share × count), the share as written (0.05 is 5/100). Order of filling: cost
    ratio descending (no ratio last), then id, then file order; a candidate is accepted when its
    hospital and the region both have room left."""
    from decimal import Decimal
    from fractions import Fraction
    k = len(hospital)
    accepted = np.zeros(k, bool)
    if k == 0:
        return accepted

    def cap(share: float, count: int) -> int:
        return int(Fraction(Decimal(repr(share))) * count)

    region_cap = cap(region_share, int(region_base))
    hosp_cap = [cap(hospital_share, int(c)) for c in np.asarray(hospital_base).tolist()]
    r = np.where(np.isfinite(ratio), ratio, -np.inf)
    order = np.lexsort((np.arange(k), np.asarray(ids).astype(str), -r))
    used_region, used = 0, [0] * len(hosp_cap)
    for i in order.tolist():
        h = int(hospital[i])
        if used_region < region_cap and used[h] < hosp_cap[h]:
            accepted[i] = True
            used_region += 1
            used[h] += 1
    return accepted


def quota_accept(candidate: np.ndarray, eligible: np.ndarray, hospital: np.ndarray, ratio: np.ndarray,
                 ids: np.ndarray, region_share: float, hospital_share: float) -> np.ndarray:
    """:func:`fill_quota` over whole arrays: per case, accepted for review within the quota.

    ``eligible``: the cases counted in the quota's base (priceable, or reviewable when ungroupable);
    ``hospital``: integer hospital codes; ``ids``: settlement ids as strings ('' when none)."""
    n = len(candidate)
    accepted = np.zeros(n, bool)
    if not candidate.any():
        return accepted
    base = np.bincount(hospital[eligible], minlength=int(hospital.max()) + 1)
    cand = np.flatnonzero(candidate)
    accepted[cand] = fill_quota(hospital[cand], ratio[cand], ids[cand], base, int(eligible.sum()),
                                region_share, hospital_share)
    return accepted


def review_cases(sr, *, trigger: np.ndarray, accepted: np.ndarray | None, decisions: Decisions | None,
                 case_ids: pa.Array | None):
    """The review outcome of each case: (under_review, over_quota, decision index or -1, decided points).

    ``accepted``: the quota's verdict (None = every candidate accepted)."""
    candidate = trigger > 0
    under = candidate if accepted is None else candidate & accepted
    over = candidate & ~under
    n = len(trigger)
    dec, pts = np.full(n, -1, np.int64), np.full(n, np.nan)
    if decisions is not None and case_ids is not None and under.any():
        _, d, p = decisions.lookup(case_ids)
        dec = np.where(under, d, -1)
        pts = np.where(under, p, np.nan)
    return under, over, dec, pts


def read_decisions(path) -> Decisions:
    """The office's decisions file (CSV or Parquet): ``id``, ``decision`` and ``points``.

    An unusable file (unreadable, no id column, neither decision nor points column) raises
    InputError; a row that cannot be used keeps a reason: DECISION_MALFORMED (no id, an
    unknown decision, points missing/not a number/negative for ``points``), DECISION_DUPLICATE_ID
    (every row of an id given twice). ``decision`` may be empty when ``points`` is given."""
    t = read_table(path)
    names = {c.strip().lower(): c for c in t.column_names}
    if "id" not in names:
        raise InputError(f"{path}: a decisions file needs an id column (the case's settlement id), "
                         f"and decision and/or points; it has {', '.join(t.column_names) or 'no columns'}")
    if "decision" not in names and "points" not in names:
        raise InputError(f"{path}: a decisions file needs a decision column (points, normal, actual, reject) "
                         "or a points column")
    n = t.num_rows
    ids = text(t[names["id"]], n)
    dec_text = (pc.utf8_lower(pc.utf8_trim_whitespace(text(t[names["decision"]], n)))
                if "decision" in names else pa.nulls(n, pa.string()))
    raw_pts = text(t[names["points"]], n) if "points" in names else pa.nulls(n, pa.string())
    id_list = [None if v is None else v.strip() or None for v in ids.to_pylist()]
    dec_list = dec_text.to_pylist()
    pts_list = raw_pts.to_pylist()
    seen: dict[str, int] = {}
    for v in id_list:
        if v is not None:
            seen[v] = seen.get(v, 0) + 1
    status, reason, decision, points = [], [], [], []
    for i in range(n):
        d = dec_list[i] or ("points" if pts_list[i] not in (None, "") else None)
        p = np.nan
        bad = id_list[i] is None or d not in DECISIONS
        if not bad and d == "points":
            try:
                p = float(str(pts_list[i]).strip())
            except (TypeError, ValueError):
                p = np.nan
            bad = not (np.isfinite(p) and p >= 0)
        if bad:
            status.append("refused")
            reason.append("DECISION_MALFORMED")
        elif seen[id_list[i]] > 1:
            status.append("refused")
            reason.append("DECISION_DUPLICATE_ID")
        else:
            status.append("usable")
            reason.append(None)
        decision.append(DECISIONS.index(d) if d in DECISIONS else -1)
        points.append(p)
    ok = np.array([s == "usable" for s in status], bool)
    rows = pa.table({"id": pa.array(id_list, pa.string()), "decision": dec_text,
                     "points": raw_pts, "status": pa.array(status, pa.string()),
                     "reason": pa.array(reason, pa.string())})
    return Decisions(pa.array([v for v, k in zip(id_list, ok) if k], pa.string()),
                     np.array(decision, np.int8)[ok], np.array(points, np.float64)[ok], rows)


def decision_results(decisions: Decisions, applied_ids: set[str], known_ids: set[str],
                     reviewed_ids: set[str] = frozenset()) -> pa.Table:
    """The decisions file's rows with the run's verdict: ``applied``, or ``refused`` with a reason
    (the file's own, DECISION_UNKNOWN_ID: no such case in the records, DECISION_NOT_UNDER_REVIEW:
    the case is not under special review this period, e.g. over the quota or no trigger;
    DECISION_NEEDS_POINTS: normal or actual for a case with no base points, still held)."""
    rows = decisions.rows
    status, reason = rows["status"].to_pylist(), rows["reason"].to_pylist()
    for i, cid in enumerate(rows["id"].to_pylist()):
        if status[i] != "usable":
            continue
        if cid in applied_ids:
            status[i] = "applied"
        else:
            status[i] = "refused"
            reason[i] = ("DECISION_NEEDS_POINTS" if cid in reviewed_ids else
                         "DECISION_NOT_UNDER_REVIEW" if cid in known_ids else "DECISION_UNKNOWN_ID")
    return rows.set_column(3, "status", pa.array(status, pa.string())).set_column(
        4, "reason", pa.array(reason, pa.string()))


def _true_flags(array, n: int) -> np.ndarray:
    from drgdip.weights.settlement.points import TRUE_FLAGS
    s = pc.utf8_lower(text(array, n).cast(pa.string()))
    return pc.fill_null(pc.is_in(s, pa.array(TRUE_FLAGS)), False).to_numpy(zero_copy_only=False)


def _has_code(procedures, n: int, codes: tuple[str, ...]) -> np.ndarray:
    """Per record: one of its procedure codes (a list column, or text split on , ; | or spaces) is in codes."""
    if not codes:
        return np.zeros(n, bool)
    col = procedures.combine_chunks() if isinstance(procedures, pa.ChunkedArray) else procedures
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        col = pc.split_pattern_regex(pc.fill_null(text(col, n), ""), r"[,;|\s]+")
    flat = pc.utf8_trim_whitespace(pc.list_flatten(col).cast(pa.string()))
    parent = pc.list_parent_indices(col).to_numpy(zero_copy_only=False).astype(np.int64)
    hit = pc.fill_null(pc.is_in(flat, pa.array(list(codes), pa.string())), False).to_numpy(zero_copy_only=False)
    out = np.zeros(n, bool)
    out[parent[hit]] = True
    return out


def assess(cases: pa.Table, group_weights: pa.Table, sr, context: ReviewContext | None, *, priceable: np.ndarray,
           ungroupable: np.ndarray, found: np.ndarray, idx: np.ndarray, ratio: np.ndarray):
    """Triggers, quota and decisions of a table of cases being priced (called by price_cases).

    Returns (trigger codes, under review, over the quota, decision index or -1, decided points)."""
    from drgdip.arrowio import canonical_columns, numeric
    n = cases.num_rows
    cols = canonical_columns(cases.schema)
    ctx = context or ReviewContext()

    def flag_col(name):
        return _true_flags(cases[name], n) if name in cases.column_names else np.zeros(n, bool)

    flagged = flag_col(sr.flag_column)
    new_tech = flag_col(sr.new_technology_column)
    if sr.new_technology_codes and "procedures" in cols:
        new_tech = new_tech | _has_code(cases[cols["procedures"]], n, sr.new_technology_codes)
    review_group = np.zeros(n, bool)
    if sr.review_groups and "review_group" in group_weights.column_names and group_weights.num_rows:
        tf = _true_flags(group_weights["review_group"], group_weights.num_rows)
        review_group = found & tf[np.minimum(idx, len(tf) - 1)]
    los = (numeric(cases[cols["los_days"]], n)[0].to_numpy(zero_copy_only=False).astype(np.float64)
           if "los_days" in cols and sr.los_days_above > 0 else np.full(n, np.nan))
    los = np.nan_to_num(los, nan=-np.inf)
    group_count = np.zeros(n, np.int64)
    if needs_group_counts(sr):
        k = group_weights.num_rows
        counts = ctx.group_counts
        if counts is None:
            counts = np.bincount(idx[priceable], minlength=k + 1)
        group_count = np.where(found, np.asarray(counts)[np.minimum(idx, max(k - 1, 0))], 0)
    trigger = trigger_codes(sr, priceable=priceable, ungroupable=ungroupable, flagged=flagged, new_tech=new_tech,
                            review_group=review_group, ratio=ratio, los=los, group_count=group_count)
    accepted = ctx.accepted
    ids = text(cases[cols["id"]], n) if "id" in cols else None
    if accepted is None and quota_active(sr):
        accepted = local_quota(cases, sr, trigger, priceable | ungroupable, ratio)
    under, over, dec, pts = review_cases(sr, trigger=trigger, accepted=accepted, decisions=ctx.decisions,
                                         case_ids=ids)
    return trigger, under, over, dec, pts


def quota_base(priced: pa.Table) -> np.ndarray:
    """Per priced case, whether it counts in the quota's base (特例单议比例的分母): it has a
    cost ratio, or it is an ungroupable case under review (docs/settlement.md "Special case
    review" 2). ``priced``: cases priced with every candidate accepted."""
    ratio = pc.fill_null(pc.is_valid(priced["cost_ratio"]), False).to_numpy(zero_copy_only=False)
    ungroupable = pc.fill_null(pc.equal(priced["review_trigger"], "ungroupable"), False)
    return ratio | ungroupable.to_numpy(zero_copy_only=False)


def quota_keys(cases: pa.Table) -> tuple[list, np.ndarray, np.ndarray]:
    """(hospital names, hospital code per row, id text per row) of a table, for the quota."""
    from drgdip.arrowio import canonical_columns
    n = cases.num_rows
    cols = canonical_columns(cases.schema)
    hosp = pc.fill_null(text(cases[cols["hospital_id"]], n), "") if "hospital_id" in cols \
        else pa.array([""] * n, pa.string())
    enc = pc.dictionary_encode(hosp)
    hcode = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64) if n else np.zeros(0, np.int64)
    ids = (np.asarray(pc.fill_null(text(cases[cols["id"]], n), "").to_numpy(zero_copy_only=False), dtype=object)
           if "id" in cols else np.full(n, "", dtype=object))
    return enc.dictionary.to_pylist(), hcode, ids


def local_quota(cases: pa.Table, sr, trigger: np.ndarray, eligible: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """:func:`quota_accept` over the one table being priced (the whole period)."""
    _, hcode, ids = quota_keys(cases)
    return quota_accept(trigger > 0, eligible, hcode, ratio, ids, sr.quota_share, sr.hospital_quota_share)


def review_columns(rows: pa.Table | pa.RecordBatch) -> pa.Table:
    """The review list's extra columns (review.csv): normal_points, actual_points, needed."""
    t = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
    if "review_trigger" not in t.column_names:
        return t
    n = t.num_rows
    base = pc.fill_null(t["base_points"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    ratio = pc.fill_null(t["cost_ratio"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    review = pc.is_valid(t["review_trigger"]).to_numpy(zero_copy_only=False) if n else np.zeros(0, bool)
    trig = t["review_trigger"].to_pylist()
    needed = [None if tr is None else "decision (points, normal, actual or reject) by id; " + NEEDED[tr]
              for tr in trig]
    return (t.append_column("normal_points", pa.array(np.where(review, base, np.nan), pa.float64(),
                                                      from_pandas=True))
             .append_column("actual_points", pa.array(np.where(review, base * ratio, np.nan), pa.float64(),
                                                      from_pandas=True))
             .append_column("needed", pa.array(needed, pa.string())))
