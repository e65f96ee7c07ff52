"""An independent recomputation of what ``drgdip demo`` writes for its settlement.

Written from the documentation alone (docs/settlement.md, docs/policy.md, docs/files.md,
docs/report.md, docs/reasons.md), without reading or importing ``drgdip.weights``: it
tests that someone could recompute every point and every cent from the docs. Only
pyarrow, pandas, decimal, fractions, math, sqlite3 and tomllib are used.

One function per documented step (settlement.md §1, §2, "Payment methods in one point pool",
§7-§9, "DIP settlement"; policy.md):

    read_policy                 policy.md: defaults + the region's file; refuses rules it does not know
    step_personal_share         settlement.md "settle --benefits": the share from the benefits file
    step_fund                   policy.md [funds]
    step_unpriced_reason        settlement.md §1.2: why a case cannot be priced
    step_record_problem         "Which rule prices a case" 1: the record's own problems
    step_coefficient            policy.md [coefficients] (basic_codes: [basic_groups])
    step_per_diem_ward          policy.md [per_diem]: the first ward that matches
    step_per_diem               per-diem points, short stays, no days
    step_ffs_class              policy.md [fee_for_service]: ambiguous, ungroupable, unweighted
    step_fee_for_service        fee-for-service points (FFS_ZERO_COST)
    step_dip_group              "DIP settlement" 1-2: the catalogue's score, the reference mean
    step_case_points            settlement.md §1.2, [deviation] (the table's low_k / high_k),
                                [special_review], [dip_settlement] thresholds
    step_dip_total              "DIP settlement" 3: T = budget ÷ reimbursement ratio
    step_case_amounts           settlement.md §1.3, §1.4, §2 (largest remainder per fund)
    step_hospitals              settlement.md §1.4, §5 (hospitals.csv)
    step_withholding            settlement.md §2 (largest remainder over a fund's hospitals)
    step_advance                policy.md [advance], §7-§8: the months' held share
    step_fund_summary           settlement.md §5 (summary.json)
    step_incentives             policy.md [incentives], §9: indices and coefficients
    step_quality                policy.md [quality], §7-§8: refund by the scores file
    step_reserve_cap            policy.md [reserve], §7-§8: reserve, cap and its cut
    step_projected              policy.md [point_value]: the projected point value
    step_annual                 settlement.md §1.6, §1.7, §2 (annual payments, bands, the above)

A rule the policy turns on that this checker does not implement raises ``RuleNotCovered``
("rule X not covered") instead of mismatching silently; so do case types, pricing reasons and
payment methods in an output that it does not know. Covered since the first checker: per-diem,
fee-for-service, basic groups, the table's thresholds, [advance], [quality], [reserve],
[incentives], [point_value] "policy", DIP alone, [incomplete_stays] (proportional_capped,
normal), [readmission] (adrg or group key, flag_only, halve_earlier; for DIP the group is the DIP
group code and adrg is refused; across months: the earlier
months' kept stays and the recovery rows, settlement.md "Readmissions across months"), [special_review] triggers
flag, review_group, new_technology, cost_high, cost_low, long_stay with the quotas, hold / actual / normal and
the decisions read back from the run's decisions.csv (step_stay_rule, step_review_trigger,
step_review, read_decisions, decision_statuses, step_readmission). Covered since issue 12's
second round (tests/test_independent_rules.py runs each on real `drgdip settle` runs):

    step_small_groups           [special_review] min_group_cases (trigger small_group)
    step_review (ungroupable)   [special_review] ungroupable: held until decided points, over the
                                quota NOT_GROUPED (step_ungroupable_needs_points, _decided_method)
    step_stay_review            [incomplete_stays] payment / short_stay_payment = "review"
    step_readmission_diagnosis  [readmission] key = "principal_diagnosis", diagnosis_chars
    step_readmission_unpaid     [readmission] payment = "second_unpaid" (READMISSION_UNPAID)
    step_readmission_combined   [readmission] payment = "combine" (READMISSION_COMBINED), within a
                                month and across months (check_month's kept / tail_out; issue 12)
    step_projected_history      [point_value] projected = "history", growth
    step_method                 [dip_settlement] hospitals, pool = "separate" (SETTLED_BY_OTHER_METHOD)
                                and `--method mixed` (recompute_month(method="mixed"))
    step_points_factor          pool = "shared": DIP points × points_factor
    step_period_means           [deviation] group_mean = "period"
    step_annual_rate            the rate form's year with a published rate

Not covered: the `[dip]` catalogue build (the checker takes the catalogue as input, as it
takes the weight table). To add a rule, add its fields to ``COVERED`` with a function of its
own and call it from ``recompute_cases`` / ``recompute_month`` / ``step_annual``.

The DIP grouping itself (dip_group, dip_coefficient: dip.md) is taken from the output, as the
DRG region's drg is taken from the records; its score must be the catalogue's.
``dip_mean_times_coefficient`` (default, as settlement.md "DIP settlement" 2 says) compares
a DIP case's cost with the reference mean × its 辅助目录 coefficient; False reads the plain
reference mean (the docs' earlier wording, kept to show that the reading matters).

``check_demo(folder)`` compares everything with the demo's outputs and returns a
``Report``: per output and column, values compared and values that differ (with examples).
Run as a script: ``python tests/independent_settlement.py DEMO_FOLDER``.
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

# ---------------------------------------------------------------------------------------
# Policy (docs/policy.md): the documented defaults, field by field, and what is covered.


class RuleNotCovered(Exception):
    """The policy (or an output) uses a rule this checker does not implement."""


# Defaults as docs/policy.md states them (not read from weights/settlement/policy_defaults.toml).
DOC_DEFAULTS = {
    "region": {"name": "", "form": "point", "base_points": 100},
    "funds": {"employee": ["employee", "职工", "职工医保", "职工基本医疗保险", "310"],
              "resident": ["resident", "居民", "居民医保", "城乡居民基本医疗保险", "390"]},
    "budget": {"employee": {}, "resident": {}},
    "rate": {"employee": {}, "resident": {}},
    "coefficients": {"default": 1.0, "level": {}, "hospital_level": {}, "hospital": {}},
    "deviation": {"high_bands": [{"k": 3.0}], "high_payment": "add_on", "high_add_on_share": 1.0,
                  "high_cap": 5.0, "low_k": 0.4, "low_payment": "proportional", "low_deduction": 0.0,
                  "group_mean": "table"},
    "special_review": {"flag_column": "special_review", "cost_multiple": 0.0, "payment": "actual",
                       "low_cost_multiple": 0.0, "los_days_above": 0, "new_technology_codes": [],
                       "new_technology_column": "new_technology", "min_group_cases": 0, "review_groups": True,
                       "ungroupable": False, "quota_share": 1.0, "hospital_quota_share": 1.0},
    "incomplete_stays": {"dispositions": [], "payment": "proportional_capped", "short_stay_days": 0,
                         "short_stay_payment": "proportional_capped"},
    "readmission": {"days": 0, "key": "adrg", "adrg_chars": 3, "diagnosis_chars": 0, "same_hospital": True,
                    "payment": "flag_only", "share": 0.5, "across_periods": True},
    "records": {"los_min_days": 1, "los_max_days": 365},
    "settlement": {"withholding_share": 0.0, "surplus_bands": [{"hospital_keeps": 1.0}],
                   "overspend_bands": [{"fund_bears": 0.0}]},
    # settlement.md "Payment methods in one point pool", policy.md [per_diem] ... [basic_groups]
    "per_diem": {"wards": [], "short_stay_days": 0, "short_stay": "normal", "apply_coefficient": False},
    "fee_for_service": {"classes": [], "points_per_yuan": 0.0, "yuan_per_point": 0.0, "discount": 1.0,
                        "apply_coefficient": False, "ambiguous_suffixes": ["QY"]},
    "basic_groups": {"enabled": False, "coefficient": 1.0, "codes": [], "file": "", "column": "",
                     "table_column": True},
    # settlement.md §7-§9, policy.md "The fund's limits"
    "reserve": {"share": 0.0, "cap": "none"},
    "advance": {"share": 1.0},
    "point_value": {"projected": "none", "growth": 0.0, "projected_points": {}, "projected_personal_share": {}},
    "quality": {"bands": [{"refund": 1.0}], "missing_refund": 1.0},
    "incentives": {"index_form": "per_group"},
    # settlement.md "DIP settlement", policy.md [dip_settlement]
    "dip_settlement": {"point_value": "settlement", "reimbursement_ratio": {}, "high_k": 2.0,
                       "high_payment": "add_on", "high_add_on_share": 1.0, "low_k": 0.5,
                       "low_payment": "proportional", "reference_means": "", "hospitals": [],
                       "pool": "shared", "points_factor": 1.0},
    "weights": {"year_weights": [1], "trim": "sd", "trim_sd": 3.0, "trim_percentiles": [2.5, 97.5],
                "min_cases": 5, "small_group_rule": "adrg"},
}

# field -> the values this checker implements (None: any value). A field missing here is a
# rule the checker does not know.
COVERED = {
    "region.name": None, "region.form": {"point", "rate"}, "region.base_points": None,
    "funds.employee": None, "funds.resident": None,
    "budget.employee": None, "budget.resident": None,
    "rate.employee": None, "rate.resident": None,
    "coefficients.default": None, "coefficients.level": None, "coefficients.hospital_level": None,
    "coefficients.hospital": None,
    "deviation.high_bands": None, "deviation.high_payment": {"add_on", "actual", "cap", "none"},
    "deviation.high_add_on_share": None, "deviation.high_cap": None, "deviation.low_k": None,
    "deviation.low_payment": {"proportional", "deduction", "none"}, "deviation.low_deduction": None,
    "deviation.group_mean": {"table", "period"},
    "special_review.flag_column": None, "special_review.cost_multiple": None,
    "special_review.payment": {"actual", "normal", "hold"},
    "special_review.low_cost_multiple": None, "special_review.los_days_above": None,
    "special_review.hospital_quota_share": None, "special_review.quota_share": None,
    "special_review.review_groups": None,
    # not recomputed here: ungroupable cases sent to review
    "special_review.new_technology_codes": None, "special_review.new_technology_column": None,
    "special_review.min_group_cases": None,
    "special_review.ungroupable": None,
    "incomplete_stays.dispositions": None, "incomplete_stays.payment": {"proportional_capped", "normal", "review"},
    "incomplete_stays.short_stay_days": None,
    "incomplete_stays.short_stay_payment": {"proportional_capped", "normal", "review"},
    "readmission.days": None, "readmission.key": {"adrg", "group", "principal_diagnosis"},
    "readmission.adrg_chars": None, "readmission.diagnosis_chars": None,
    "readmission.same_hospital": None,
    "readmission.payment": {"flag_only", "halve_earlier", "second_unpaid", "combine"},
    "readmission.share": None, "readmission.across_periods": None,
    "records.los_min_days": None, "records.los_max_days": None,
    "settlement.withholding_share": None, "settlement.surplus_bands": None,
    "settlement.overspend_bands": None,
    "per_diem.wards": None, "per_diem.short_stay_days": None, "per_diem.short_stay": {"normal", "unpriced"},
    "per_diem.apply_coefficient": None,
    "fee_for_service.classes": None, "fee_for_service.points_per_yuan": None, "fee_for_service.yuan_per_point": None,
    "fee_for_service.discount": None, "fee_for_service.apply_coefficient": None,
    "fee_for_service.ambiguous_suffixes": None,
    "basic_groups.enabled": None, "basic_groups.coefficient": None, "basic_groups.codes": None,
    "basic_groups.file": None, "basic_groups.column": None, "basic_groups.table_column": None,
    "reserve.share": None, "reserve.cap": {"none", "budget", "budget_and_reserve"},
    "advance.share": None,
    # history: the previous year's annual run from the ledger (not recomputed here)
    "point_value.projected": {"none", "policy", "history"}, "point_value.growth": None,
    "point_value.projected_points": None, "point_value.projected_personal_share": None,
    "quality.bands": None, "quality.missing_refund": None,
    "incentives.cmi_bands": None, "incentives.cost_bands": None, "incentives.time_bands": None,
    "incentives.index_form": {"per_group", "per_weight"},
    # DIP alone (no DRG/DIP mix: hospitals = [], pool shared)
    "dip_settlement.point_value": {"settlement", "budget_personal"}, "dip_settlement.reimbursement_ratio": None,
    "dip_settlement.high_k": None, "dip_settlement.high_payment": {"add_on", "actual", "none"},
    "dip_settlement.high_add_on_share": None, "dip_settlement.low_k": None,
    "dip_settlement.low_payment": {"proportional", "none"}, "dip_settlement.reference_means": None,
    "dip_settlement.hospitals": None, "dip_settlement.pool": {"shared", "separate"},
    "dip_settlement.points_factor": None,
    # weights are computed before settlement; the checker takes the demo's weight table as input
    "weights.year_weights": None, "weights.trim": None, "weights.trim_sd": None,
    "weights.trim_percentiles": None, "weights.min_cases": None, "weights.small_group_rule": None,
}

KNOWN_PRICING_REASONS = {
    "PRICED_NORMAL", "HIGH_COST_CASE", "LOW_COST_CASE", "SPECIAL_REVIEW_FLAG", "SPECIAL_REVIEW_COST",
    "SPECIAL_REVIEW_HOLD", "INVALID_RECORD", "NOT_GROUPED", "GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED",
    "BAD_COST", "BAD_PERSONAL_SHARE", "UNKNOWN_FUND", "MISSING_HOSPITAL", "BAD_DISCHARGE_DATE",
    "OUT_OF_PERIOD", "NO_GROUP_MEAN_COST", "BAD_LOS", "DUPLICATE_SETTLEMENT_ID",
    "PER_DIEM_WARD", "PER_DIEM_SHORT_STAY", "PER_DIEM_NO_DAYS", "FFS_AMBIGUOUS", "FFS_UNGROUPABLE",
    "FFS_UNWEIGHTED", "FFS_ZERO_COST", "ZERO_COST", "INCOMPLETE_STAY", "SHORT_STAY", "READMISSION_WITHIN_DAYS",
    "READMISSION_EARLIER_STAY", "READMISSION_EARLIER_RECOVERED", "SPECIAL_REVIEW_OVER_QUOTA", "SPECIAL_REVIEW_DECIDED_POINTS",
    "SPECIAL_REVIEW_DECIDED_NORMAL", "SPECIAL_REVIEW_DECIDED_ACTUAL", "SPECIAL_REVIEW_REJECTED",
    "SPECIAL_REVIEW_GROUP", "SPECIAL_REVIEW_LOW_COST", "SPECIAL_REVIEW_LONG_STAY", "SPECIAL_REVIEW_NEW_TECH",
    "SPECIAL_REVIEW_SMALL_GROUP", "SPECIAL_REVIEW_UNGROUPABLE", "INCOMPLETE_STAY_REVIEW", "SHORT_STAY_REVIEW",
    "READMISSION_UNPAID", "READMISSION_COMBINED", "SETTLED_BY_OTHER_METHOD",
}
KNOWN_CASE_TYPES = {"normal", "high_cost", "low_cost", "special_review", "unpriced", "per_diem", "fee_for_service",
                    "incomplete_stay", "short_stay", "readmission", "adjustment"}
KNOWN_METHODS = {"drg", "dip", "per_diem", "fee_for_service", "none"}
KNOWN_CASE_COLUMNS = ["fund_key", "weight", "group_mean_cost", "cost_ratio", "coefficient", "base_points",
                      "case_type", "pricing_reason", "points", "amount", "fund_amount"]


def with_defaults(policy: dict) -> dict:
    """A policy given as a dict (the worked examples' parts) over the documented defaults."""
    out = json.loads(json.dumps(DOC_DEFAULTS))
    for section, fields in policy.items():
        out.setdefault(section, {}).update(fields)
    return out


def read_policy(path) -> dict:
    """The region's policy over the documented defaults; RuleNotCovered for unknown rules."""
    region = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    policy = json.loads(json.dumps(DOC_DEFAULTS))
    for section, fields in region.items():
        if not isinstance(fields, dict):
            raise RuleNotCovered(f"rule {section} not covered (top-level field {section!r})")
        if section not in policy:
            raise RuleNotCovered(f"rule {section} not covered (policy section [{section}])")
        for name, value in fields.items():
            key = f"{section}.{name}"
            if key not in COVERED:
                raise RuleNotCovered(f"rule {key} not covered")
            allowed = COVERED[key]
            if allowed == {"__empty__"}:
                if value:
                    raise RuleNotCovered(f"rule {key} not covered (a non-empty value)")
            elif allowed is not None and value not in allowed:
                raise RuleNotCovered(f"rule {key} = {value!r} not covered")
            policy[section][name] = value
    return policy


# ---------------------------------------------------------------------------------------
# Numbers (settlement.md §2 "Reading numbers").

def exact(x) -> Fraction:
    """A policy share or band bound 'as written': the shortest decimal of the float."""
    return Fraction(Decimal(repr(x)) if isinstance(x, float) else Decimal(x))


def to_cents(x) -> int | None:
    """Input money as written, to integer cents half away from zero; None when missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    d = Decimal(repr(float(x))) if not isinstance(x, str) else Decimal(x)
    return int((d * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def half_away(q: Fraction) -> int:
    """An exact amount (cents) rounded half away from zero."""
    n = abs(q)
    r = math.floor(n + Fraction(1, 2))
    return r if q >= 0 else -r


def largest_remainder(amounts: list[Fraction], total: int) -> list[int]:
    """settlement.md §2: floors, then the missing cents to the largest dropped fractions,
    ties to the earlier row."""
    floors = [math.floor(a) for a in amounts]
    missing = total - sum(floors)
    if missing < 0 or missing > len(amounts):
        raise ValueError(f"largest remainder cannot reach {total} from {sum(floors)}")
    order = sorted(range(len(amounts)), key=lambda i: (-(amounts[i] - floors[i]), i))
    for i in order[:missing]:
        floors[i] += 1
    return floors


def text_cents(s) -> int:
    """Money written as text with two decimals ('1234.50') or a JSON float."""
    if isinstance(s, float):
        return to_cents(s)
    return int(Decimal(str(s)) * 100)


def fmt(q, places: int) -> str:
    """A number shown with `places` decimals, half up (the docs do not say: ambiguity A8)."""
    d = Decimal(q.numerator) / Decimal(q.denominator) if isinstance(q, Fraction) else Decimal(q)
    return str(d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def isnull(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


# ---------------------------------------------------------------------------------------
# Per-case steps (settlement.md §1.2).

def step_personal_share(records: pd.DataFrame, benefits: pd.DataFrame | None) -> list[int | None]:
    """'settle --benefits': each record's share from the benefits file, joined by id; a stay
    invalid there has no share. Without benefits: the records' own column. A negative share
    is no share (BAD_PERSONAL_SHARE)."""
    if benefits is None:
        return [c if c is not None and c >= 0 else None for c in (to_cents(x) for x in records["personal_share"])]
    by_id = {}
    for rid, status, share in zip(benefits["id"], benefits["status"], benefits["personal_share"]):
        by_id[rid] = None if status == "invalid" else to_cents(share)
    missing = [r for r in records["id"] if r not in by_id]
    if missing:
        raise ValueError(f"record {missing[0]} has no row in the benefits file (the run is refused)")
    out = []
    for rid in records["id"]:
        c = by_id[rid]
        out.append(c if c is not None and c >= 0 else None)
    return out


def step_fund(label, policy) -> str | None:
    """policy.md [funds]: the label compared case-insensitively with each fund's list."""
    if isnull(label):
        return None
    lab = str(label).strip().lower()
    for fund in ("employee", "resident"):
        if lab in {str(x).lower() for x in policy["funds"][fund]}:
            return fund
    return None


def step_coefficient(hospital, policy) -> float:
    """policy.md [coefficients]: own coefficient, else its level's, else the default."""
    co = policy["coefficients"]
    if hospital in co["hospital"]:
        return float(co["hospital"][hospital])
    if hospital in co["hospital_level"]:
        return float(co["level"][co["hospital_level"][hospital]])
    return float(co["default"])


def _parse_date(s):
    if isnull(s):
        return None
    try:
        return date.fromisoformat(str(s)[:10])
    except ValueError:
        return None


def step_unpriced_reason(rec: dict, fund: str | None, share: int | None, table: dict, policy,
                         period: str, duplicates: set) -> str | None:
    """settlement.md §1.2: the reason a case cannot be priced, or None. When several apply,
    the first in this order (settlement.md §1.2 "Which reason"): the grouper's status, the
    weight table, the cost, the personal share, the fund, the hospital, the length of stay,
    a duplicate id, the discharge date, the group's mean cost."""
    status = rec.get("status")
    if status == "invalid":
        return "INVALID_RECORD"
    # an ambiguous case (歧义组 QY) has a group and is priced like any other when the table
    # has that group
    if status not in (None, "grouped", "ambiguous") or isnull(rec.get("drg")):
        return "NOT_GROUPED"
    row = table.get(rec["drg"])
    if row is None:
        return "GROUP_NOT_IN_TABLE"
    if isnull(row["weight"]) or row["weight"] <= 0:
        return "GROUP_NOT_PRICED"
    cost = rec.get("total_cost")
    if isnull(cost) or cost < 0:
        return "BAD_COST"
    if cost == 0:
        return "ZERO_COST"  # settlement.md "Incomplete stays and readmissions": refused, never priced at zero
    if share is None:
        return "BAD_PERSONAL_SHARE"
    if fund is None:
        return "UNKNOWN_FUND"
    if isnull(rec.get("hospital_id")) or str(rec["hospital_id"]).strip() == "":
        return "MISSING_HOSPITAL"
    los = rec.get("los_days")
    if not isnull(los):
        if los < policy["records"]["los_min_days"] or los > policy["records"]["los_max_days"]:
            return "BAD_LOS"
    if rec.get("id") in duplicates:
        return "DUPLICATE_SETTLEMENT_ID"
    # a missing date cannot show the case is in the period: BAD_DISCHARGE_DATE by the docs
    # (settlement.md "What happens to the cases the rules above do not name"; drgdip agrees since main 931d07b)
    d = _parse_date(rec.get("discharge_date"))
    if d is None:
        return "BAD_DISCHARGE_DATE"
    if f"{d.year:04d}-{d.month:02d}" != period:
        return "OUT_OF_PERIOD"
    if isnull(row["mean_cost"]) or row["mean_cost"] <= 0:
        return "NO_GROUP_MEAN_COST"
    return None


def _k_high(weight: float, policy) -> float:
    for band in policy["deviation"]["high_bands"]:
        if "below" not in band or weight < band["below"]:
            return float(band["k"])
    raise AssertionError("high_bands has no last band")


def _flagged(value) -> bool:
    return not isnull(value) and str(value).strip().lower() in {"1", "true", "yes", "是"}


def step_case_points(weight: float, mean_cost: float, cost: float, coefficient: float, flag, policy,
                     own_k: tuple = (None, None), dip_score: float | None = None):
    """settlement.md §1.2 and policy.md [deviation], [special_review]: base points, ratio,
    case type, pricing reason and points (float64, left to right as the docs write them).
    own_k: the weight table's (low_k, high_k) of the group (policy.md "Weight-table
    thresholds"); dip_score: a DIP case's adjusted score (settlement.md "DIP settlement" 2,
    thresholds and payments of [dip_settlement])."""
    dev, sr = policy["deviation"], policy["special_review"]
    if dip_score is not None:
        dip = policy["dip_settlement"]
        base = dip_score * 100 * coefficient  # weight (adjusted score ÷ 100) × 100 × coefficient
        k, low_k = float(dip["high_k"]), float(dip["low_k"])
        high_pay, share, low_pay = dip["high_payment"], float(dip["high_add_on_share"]), dip["low_payment"]
    else:
        # settlement.md §1.2: base points of the policy (100 or 1000; 1 in the rate form)
        base_points = 1.0 if policy["region"]["form"] == "rate" else float(policy["region"]["base_points"])
        base = weight * base_points * coefficient
        k = _k_high(weight, policy)
        low_k = float(dev["low_k"])
        if own_k[0] is not None and not isnull(own_k[0]) and own_k[0] > 0:
            low_k = float(own_k[0])
        if own_k[1] is not None and not isnull(own_k[1]) and own_k[1] > 0:
            k = float(own_k[1])
        high_pay, share, low_pay = dev["high_payment"], float(dev["high_add_on_share"]), dev["low_payment"]
    ratio = cost / mean_cost
    cm = float(sr["cost_multiple"])
    if _flagged(flag) or (cm > 0 and ratio > cm):
        reason = "SPECIAL_REVIEW_FLAG" if _flagged(flag) else "SPECIAL_REVIEW_COST"
        pay = sr["payment"]
        if pay == "hold":
            # listed, not paid: case type special_review without points (settlement.md §1.2)
            return base, ratio, "special_review", "SPECIAL_REVIEW_HOLD", None
        points = base * ratio if pay == "actual" else base
        return base, ratio, "special_review", reason, points
    if ratio > k:
        if high_pay == "add_on":
            points = base * ((ratio - k) * share + 1) if dip_score is not None else base * (1 + share * (ratio - k))
        elif high_pay == "actual":
            points = base * ratio
        elif high_pay == "cap":
            points = base * min(ratio, float(dev["high_cap"]))
        else:
            points = base
        return base, ratio, "high_cost", "HIGH_COST_CASE", points
    if ratio < low_k:
        if low_pay == "proportional":
            points = base * ratio
        elif low_pay == "deduction":
            points = base * (1 - float(dev["low_deduction"]))
        else:
            points = base
        return base, ratio, "low_cost", "LOW_COST_CASE", points
    return base, ratio, "normal", "PRICED_NORMAL", base


RECORD_REASONS = {"INVALID_RECORD", "BAD_COST", "ZERO_COST", "BAD_PERSONAL_SHARE", "UNKNOWN_FUND", "MISSING_HOSPITAL", "BAD_LOS",
                  "DUPLICATE_SETTLEMENT_ID", "BAD_DISCHARGE_DATE", "OUT_OF_PERIOD"}
GROUP_REASONS = {"NOT_GROUPED", "GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED"}


def step_record_problem(rec: dict, fund, share, policy, period: str, duplicates: set) -> str | None:
    """"Which rule prices a case" 1: the record problems, in §1.2's order without the group's."""
    stub = {"weight": 1.0, "mean_cost": 1.0}
    return step_unpriced_reason(dict(rec, status="grouped", drg="x"), fund, share, {"x": stub}, policy, period,
                                duplicates) if rec.get("status") != "invalid" else "INVALID_RECORD"


def _principal_diagnosis(rec) -> str:
    d = rec.get("diagnoses")
    if d is None or (isinstance(d, float) and math.isnan(d)):
        return ""
    if isinstance(d, str):
        return d.replace("|", ",").replace(";", ",").split(",")[0].strip()
    d = list(d)
    return str(d[0]) if d else ""


def step_per_diem_ward(rec: dict, group_code, policy) -> dict | None:
    """policy.md [per_diem]: the first ward that matches (any of its lists, and longer than
    longer_than_days when set)."""
    los = rec.get("los_days")
    for ward in policy["per_diem"]["wards"]:
        lists = [ward.get("departments", []), ward.get("diagnosis_prefixes", []), ward.get("groups", [])]
        if any(lists):
            dept = "" if isnull(rec.get("dept")) else str(rec.get("dept"))
            dx = _principal_diagnosis(rec).upper()
            g = "" if isnull(group_code) else str(group_code)
            meets = (dept in ward.get("departments", [])
                     or any(dx.startswith(x.upper()) for x in ward.get("diagnosis_prefixes", []))
                     or any(g.startswith(x) for x in ward.get("groups", []) if g))
        else:
            meets = True
        longer = float(ward.get("longer_than_days", 0))
        if longer > 0:
            meets = meets and not isnull(los) and los > longer
        if meets:
            return ward
    return None


def step_per_diem(rec: dict, ward: dict, coefficient: float, policy):
    """(reason, points) of a case a ward matched, or None when its short stay goes on to the
    next rules (short_stay = "normal")."""
    pd_ = policy["per_diem"]
    los = rec.get("los_days")
    if isnull(los) or los <= 0:
        return "PER_DIEM_NO_DAYS", None
    if pd_["short_stay_days"] and los <= pd_["short_stay_days"]:
        return None if pd_["short_stay"] == "normal" else ("PER_DIEM_SHORT_STAY", None)
    points = los * float(ward["points_per_day"])
    if pd_["apply_coefficient"]:
        points = points * coefficient
    return "PER_DIEM_WARD", points


def step_ffs_class(rec: dict, group_reason, group_code, policy) -> str | None:
    """policy.md [fee_for_service] classes, in the order ambiguous, ungroupable, unweighted."""
    ffs = policy["fee_for_service"]
    g = "" if isnull(group_code) else str(group_code).upper()
    if "ambiguous" in ffs["classes"] and (rec.get("status") == "ambiguous" or (
            g and any(g.endswith(x.upper()) for x in ffs["ambiguous_suffixes"]))):
        return "FFS_AMBIGUOUS"
    if "ungroupable" in ffs["classes"] and group_reason == "NOT_GROUPED" and rec.get("status") != "invalid":
        return "FFS_UNGROUPABLE"
    if "unweighted" in ffs["classes"] and group_reason in ("GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED"):
        return "FFS_UNWEIGHTED"
    return None


def step_fee_for_service(cost: float, coefficient: float, policy):
    """points = cost × points_per_yuan × discount, or cost ÷ yuan_per_point × discount;
    a cost of 0 is never priced (FFS_ZERO_COST)."""
    ffs = policy["fee_for_service"]
    if cost == 0:
        return None
    if float(ffs["points_per_yuan"]) > 0:
        points = cost * float(ffs["points_per_yuan"]) * float(ffs["discount"])
    else:
        points = cost / float(ffs["yuan_per_point"]) * float(ffs["discount"])
    if ffs["apply_coefficient"]:
        points = points * coefficient
    return points


def step_stay_rule(rec: dict, base, ratio, ordinary: tuple, policy) -> tuple:
    """policy.md [incomplete_stays]: an incomplete stay (its discharge_disposition listed), else
    a short stay (los_days < short_stay_days), paid base × min(ratio, 1) or base."""
    st = policy["incomplete_stays"]
    disp = rec.get("discharge_disposition")
    disp = None if isnull(disp) else str(disp).strip()
    los = rec.get("los_days")
    if disp is not None and disp in [str(d) for d in st["dispositions"]]:
        kind, reason, pay = "incomplete_stay", "INCOMPLETE_STAY", st["payment"]
    elif st["short_stay_days"] and not isnull(los) and los < st["short_stay_days"]:
        kind, reason, pay = "short_stay", "SHORT_STAY", st["short_stay_payment"]
    else:
        return ordinary
    if pay == "review":
        return step_stay_review(kind, base, ratio, policy)
    return kind, reason, base * min(ratio, 1) if pay == "proportional_capped" else base


def step_stay_review(kind: str, base, ratio, policy) -> tuple:
    """policy.md [incomplete_stays] payment / short_stay_payment = "review": the stay is sent to
    special review: case type special_review, reason INCOMPLETE_STAY_REVIEW (SHORT_STAY_REVIEW),
    paid meanwhile as special_review.payment says (hold: no points)."""
    reason = "INCOMPLETE_STAY_REVIEW" if kind == "incomplete_stay" else "SHORT_STAY_REVIEW"
    pay = policy["special_review"]["payment"]
    return "special_review", reason, None if pay == "hold" else (base * ratio if pay == "actual" else base)


def step_over_quota_stay_review(c: dict) -> bool:
    """A stay sent to review by its rule keeps its reason when a trigger of its own is over the quota."""
    return c.get("pricing_reason") in ("INCOMPLETE_STAY_REVIEW", "SHORT_STAY_REVIEW")


def step_ungroupable_needs_points(c: dict, decision: tuple) -> bool:
    """settlement.md "Special case review" 5: `normal` / `actual` for a case without base points
    (an ungroupable one) is DECISION_NEEDS_POINTS, the case stays held."""
    return c.get("base_points") is None and decision[0] in ("normal", "actual")


def step_ungroupable_decided_method(c: dict) -> str:
    """settlement.md "Special case review" 5: an ungroupable case paid its decided points is paid
    by the run's group method (drg, or dip)."""
    return c["group_method"]


def step_review_trigger(rec: dict, ratio, flag, row, policy) -> str | None:
    """policy.md [special_review]: the first trigger of flag, review_group, cost_high,
    cost_low, long_stay (new_technology, small_group and ungroupable are not covered)."""
    sr = policy["special_review"]
    los = rec.get("los_days")
    if _flagged(flag):
        return "flag"
    if sr["review_groups"] and row is not None and _flagged(row.get("review_group")):
        return "review_group"
    procs = rec.get("procedures")
    if isinstance(procs, str):
        procs = procs.replace(",", " ").replace(";", " ").replace("|", " ").split()
    procs = [] if procs is None or (isinstance(procs, float) and math.isnan(procs)) else [str(x) for x in procs]
    if any(p in [str(x) for x in sr["new_technology_codes"]] for p in procs) or _flagged(
            rec.get(sr["new_technology_column"])):
        return "new_technology"
    if float(sr["cost_multiple"]) > 0 and ratio > float(sr["cost_multiple"]):
        return "cost_high"
    if float(sr["low_cost_multiple"]) > 0 and ratio < float(sr["low_cost_multiple"]):
        return "cost_low"
    if sr["los_days_above"] and not isnull(los) and los > sr["los_days_above"]:
        return "long_stay"
    return None


INTERIM_REASON = {"small_group": "SPECIAL_REVIEW_SMALL_GROUP", "flag": "SPECIAL_REVIEW_FLAG", "review_group": "SPECIAL_REVIEW_GROUP", "cost_high": "SPECIAL_REVIEW_COST",
                  "cost_low": "SPECIAL_REVIEW_LOW_COST", "long_stay": "SPECIAL_REVIEW_LONG_STAY",
                  "new_technology": "SPECIAL_REVIEW_NEW_TECH"}


class Refused(Exception):
    """A policy the docs say a run refuses (the run stops before writing anything)."""


def step_review(cases: list[dict], policy, decisions: dict | None) -> None:
    """settlement.md "Special case review" 2-5: the quota (floor(share × reviewable cases), per
    hospital and region-wide; candidates by ratio descending, then id, then file order), the
    payment until decided, the decisions applied."""
    sr = policy["special_review"]
    reviewable = [c for c in cases if "trigger" in c]
    per_h = defaultdict(int)
    for c in reviewable:
        per_h[c["hospital_id"]] += 1
    cap_h = {h: math.floor(exact(sr["hospital_quota_share"]) * n) for h, n in per_h.items()}
    cap_r = math.floor(exact(sr["quota_share"]) * len(reviewable))
    # no ratio (an ungroupable case) last
    order = sorted((i for i, c in enumerate(cases) if c.get("trigger")),
                   key=lambda i: (cases[i]["cost_ratio"] is None, -(cases[i]["cost_ratio"] or 0), str(cases[i]["id"]), i))
    taken_h, taken = defaultdict(int), 0
    for i in order:
        c = cases[i]
        if taken_h[c["hospital_id"]] < cap_h[c["hospital_id"]] and taken < cap_r:
            taken_h[c["hospital_id"]] += 1
            taken += 1
            c["review_status"] = "accepted"
        else:
            c["review_status"] = "over_quota"
            # settlement.md "Special case review" 2: an incomplete or short stay keeps the stay's reason
            # (an ungroupable case stays unpriced, NOT_GROUPED: it has no ordinary price)
            if c.get("case_type") not in ("incomplete_stay", "short_stay") and not step_over_quota_stay_review(c) \
                    and c["trigger"] != "ungroupable":
                c["pricing_reason"] = "SPECIAL_REVIEW_OVER_QUOTA"
    for c in reviewable:
        if c.get("review_status") != "accepted":
            continue
        d = (decisions or {}).get(c["id"])
        base, ratio = c["base_points"], c["cost_ratio"]
        if d is not None and step_ungroupable_needs_points(c, d):
            d = None  # DECISION_NEEDS_POINTS: still held
        if d is not None:
            kind, pts = d
            c["review_status"] = "decided"
            if kind == "reject":
                # settlement.md "Special case review" 5: the ordinary rules; an incomplete or short
                # stay keeps its rule's reason, as over the quota (2)
                if c.get("case_type") not in ("incomplete_stay", "short_stay") and not step_over_quota_stay_review(c):
                    c["pricing_reason"] = "SPECIAL_REVIEW_REJECTED"
                continue
            c["case_type"] = "special_review"
            c["points"] = pts if kind == "points" else (base if kind == "normal" else base * ratio)
            if c["trigger"] == "ungroupable":
                c["method"] = step_ungroupable_decided_method(c)
            c["pricing_reason"] = {"points": "SPECIAL_REVIEW_DECIDED_POINTS", "normal": "SPECIAL_REVIEW_DECIDED_NORMAL",
                                   "actual": "SPECIAL_REVIEW_DECIDED_ACTUAL"}[kind]
            continue
        c["case_type"] = "special_review"
        if c["trigger"] == "ungroupable":
            # policy.md [special_review] ungroupable: held until decided points come, whatever the payment
            # (reason SPECIAL_REVIEW_HOLD under payment = "hold", as every held case: settlement.md §1.2)
            c.update(review_status="held", points=None, method="none",
                     pricing_reason="SPECIAL_REVIEW_HOLD" if sr["payment"] == "hold" else "SPECIAL_REVIEW_UNGROUPABLE")
        elif sr["payment"] == "hold":
            c.update(review_status="held", pricing_reason="SPECIAL_REVIEW_HOLD", points=None, method="none")
        else:
            c["review_status"] = "interim"
            # docs/reasons.md: the interim reason names the trigger
            c["pricing_reason"] = INTERIM_REASON[c["trigger"]]
            c["points"] = base * ratio if sr["payment"] == "actual" else base


def _day(x):
    if isnull(x):
        return None
    try:
        return date.fromisoformat(str(x)[:10])
    except ValueError:
        return None


def step_readmission(cases: list[dict], recs: list[dict], duplicates: set, policy, dip: bool,
                     period: str | None = None, kept: list | None = None, tail_out: list | None = None) -> None:
    """policy.md [readmission], settlement.md "Incomplete stays and readmissions": pairs over
    the file's usable stays; the earlier stay's points × share (halve_earlier).

    "Readmissions across months": ``kept``, the earlier months' kept stays (dicts), added after the
    file's stays in the order's last tie-break (those whose id is in the file dropped); a pair
    whose earlier stay is kept flags the readmission and (halve_earlier) appends a recovery row
    of −(its points × (1 − share)) after the file's cases, in the readmissions' file order.
    ``tail_out`` gets this month's kept stays (discharged on or after the day after the month's
    end − days), their points before the readmission payment (None: unpriced / special review)."""
    rd = policy["readmission"]
    if not rd["days"]:
        return
    share = float(rd["share"])
    usual = [(c["points"], c["case_type"]) for c in cases]
    if dip and rd["key"] == "adrg":
        raise Refused('readmission.key = "adrg": DIP has no ADRG (settlement.md "DIP settlement" 7)')
    rows = []
    for i, r in enumerate(recs):
        pid, hid = r.get("patient_id"), r.get("hospital_id")
        if rd["key"] == "adrg":
            key = r.get("adrg") if "adrg" in r else (None if isnull(r.get("drg")) else str(r["drg"])[:rd["adrg_chars"]])
        elif rd["key"] == "principal_diagnosis":
            key = step_readmission_diagnosis(r, rd)
        else:
            key = r.get("dip_group" if r.get("_method", "dip" if dip else "drg") == "dip" else "drg")
        adm, dis = _day(r.get("admission_date")), _day(r.get("discharge_date"))
        if any(isnull(x) or x == "" for x in (pid, hid, key)) or adm is None or dis is None or adm > dis \
                or r.get("id") in duplicates:
            continue
        if cases[i]["pricing_reason"] == "SETTLED_BY_OTHER_METHOD":
            continue  # settlement.md "DRG and DIP in one region": no readmission columns, pairs within what it prices
        rows.append(((str(pid), str(hid) if rd["same_hospital"] else "", str(key), adm, dis, i), i))
    file_rows = list(rows)
    n = len(recs)
    ids = {r.get("id") for r in recs}
    # "Readmissions across months": DRG settlement's monthly runs (the DIP region pairs within its file)
    across = bool(rd.get("across_periods", True)) and period is not None and not dip
    kept = [k for k in (kept or []) if k["id"] not in ids] if across else []
    for j, k in enumerate(kept):
        rows.append(((k["patient"], k["hospital"] if rd["same_hospital"] else "", k["key"], k["adm"], k["dis"],
                      n + j), n + j))
    rows.sort()
    cut = set()
    recover = []
    for (a, ia), (b, ib) in zip(rows, rows[1:]):
        if ib >= n or not (a[:3] == b[:3] and 0 <= (b[3] - a[4]).days <= rd["days"]):
            continue
        later = cases[ib]
        earlier = cases[ia] if ia < n else kept[ia - n]
        if later.get("pricing_reason") != "SETTLED_BY_OTHER_METHOD":   # settlement.md: no readmission columns
            later["readmission_of"] = earlier["id"]     # every stay paired (policy.md [readmission])
        if later["points"] is not None and later["case_type"] != "special_review":
            later.update(case_type="readmission", pricing_reason="READMISSION_WITHIN_DAYS")
            if rd["payment"] == "second_unpaid":
                step_readmission_unpaid(later)
            elif rd["payment"] == "combine":
                step_readmission_combined(later, usual[ib][0],
                                          usual[ia] if ia < n else (earlier["points"], "readmission"))
        if ia >= n:
            if rd["payment"] == "halve_earlier" and earlier["points"] is not None and not earlier["cut"] \
                    and earlier["points"] != 0:
                recover.append((ib, earlier))
            continue
        if rd["payment"] == "halve_earlier" and earlier["points"] is not None \
                and earlier["case_type"] != "special_review":
            earlier["points"] = earlier["points"] * share
            earlier["case_type"] = "readmission"
            cut.add(ia)
            if earlier["pricing_reason"] != "READMISSION_WITHIN_DAYS":
                earlier["pricing_reason"] = "READMISSION_EARLIER_STAY"
    for ib, k in sorted(recover, key=lambda x: x[0]):
        cases.append({"id": k["id"], "hospital_id": k["hospital_id"], "fund_key": k["fund"], "shown_share": None,
                      "coefficient": None, "share": 0, "los": None, "cost": None, "weight": None,
                      "group_mean_cost": None, "cost_ratio": None, "base_points": None,
                      "points": -(k["points"] * (1.0 - share)), "amount": None, "fund_amount": None,
                      "case_type": "adjustment", "pricing_reason": "READMISSION_EARLIER_RECOVERED", "method": "drg",
                      "readmission_of": cases[ib]["id"]})
    if across and tail_out is not None:
        y, m = int(period[:4]), int(period[5:7])
        start = date(y + (m == 12), m % 12 + 1, 1) - timedelta(days=int(rd["days"]))
        for key, i in sorted(file_rows, key=lambda x: x[1]):
            if key[4] < start:
                continue
            pts, ctype = usual[i]
            ok = pts is not None and ctype != "special_review"
            if i in cut:            # a stay cut in its month keeps the points paid (× share)
                pts = cases[i]["points"]
            tail_out.append({"id": recs[i].get("id") if not isnull(recs[i].get("id")) else f"{period} row {i}",
                             "patient": key[0], "hospital": str(recs[i].get("hospital_id")),
                             "hospital_id": recs[i].get("hospital_id"), "key": key[2], "adm": key[3], "dis": key[4],
                             "fund": cases[i]["fund_key"], "points": pts if ok else None,
                             "cut": i in cut, "period": period})


def step_readmission_diagnosis(r: dict, rd: dict) -> str | None:
    """policy.md [readmission] key = "principal_diagnosis": the first code of `diagnoses`, its
    first `diagnosis_chars` characters (0: the whole code)."""
    dx = _principal_diagnosis(r)
    if not dx:
        return None
    n = int(rd["diagnosis_chars"])
    return dx[:n] if n > 0 else dx


def step_readmission_combined(later: dict, later_points: float, earlier: tuple) -> None:
    """policy.md [readmission] payment = "combine" (合并结算), settlement.md "Incomplete stays and
    readmissions": the readmission is paid max(0, its points − the earlier stay's points), both
    by the usual rules (before any readmission payment; a chain's middle stay by its own points),
    reason READMISSION_COMBINED; ``earlier`` is (its points, case type), for an earlier month's
    kept stay its kept points ("Readmissions across months"). An earlier stay without a
    readmission payment (unpriced, special review: no points) leaves the readmission flagged."""
    points, ctype = earlier
    if points is None or ctype == "special_review":
        return
    later.update(points=max(0.0, later_points - points), pricing_reason="READMISSION_COMBINED")


def step_readmission_unpaid(later: dict) -> None:
    """policy.md [readmission] payment = "second_unpaid": the readmission has no points (case
    type unpriced, READMISSION_UNPAID): outside the point pool, its personal share not counted;
    it keeps its group mean, ratio and base points (settlement.md §1.2)."""
    later.update(case_type="unpriced", pricing_reason="READMISSION_UNPAID", points=None, method="none")


def basic_codes(policy, policy_dir: Path | None) -> list[str]:
    """policy.md [basic_groups]: codes + the file's codes."""
    bg = policy["basic_groups"]
    if not bg["enabled"]:
        return []
    codes = [str(c) for c in bg["codes"]]
    if bg["file"]:
        df = pd.read_csv(Path(policy_dir or ".") / bg["file"], dtype=str, keep_default_na=False)
        col = bg["column"] or next(c for c in ("drg", "code", "adrg", "group", "dip_group") if c in df.columns)
        codes += [c.strip() for c in df[col] if c.strip()]
    return codes


def step_dip_total(budget_cents: int, ratio) -> int:
    """settlement.md "DIP settlement" 3: T = budget ÷ reimbursement ratio, exactly, half up."""
    return half_away(Fraction(budget_cents) / exact(ratio))


def step_case_amounts(cases: list[dict], budget_cents: dict, totals: dict | None = None) -> dict:
    """settlement.md §1.3-1.4, §2: per fund T = budget + Σ personal share of the priced cases
    (DIP's 结算点值: ``totals``, T = budget ÷ ratio); case amount by largest remainder of
    T × pᵢ / Σ p (exact points), fund_amount = amount − share."""
    funds = {}
    for fund in [f for f in ("employee", "resident") if f in budget_cents]:
        idx = [i for i, c in enumerate(cases) if c["fund_key"] == fund and c["points"] is not None]
        if not idx:
            continue
        pts = [Fraction(cases[i]["points"]) for i in idx]
        sp = sum(pts)
        share = sum(cases[i]["share"] for i in idx)
        total = budget_cents[fund] + share if totals is None else totals[fund]
        cents = largest_remainder([total * p / sp for p in pts], total)
        for i, c in zip(idx, cents):
            cases[i]["amount"] = c
            cases[i]["fund_amount"] = c - cases[i]["share"]
        funds[fund] = {"budget": budget_cents[fund], "personal_share": share, "T": total,
                       "points_exact": sp, "points": float(sp),
                       "point_value": Fraction(total, 100) / sp,
                       # summary.json / ledger float64: (T / 100) / total_points in float64
                       "point_value_float": (total / 100) / float(sp),
                       "cases": sum(1 for i in idx if cases[i].get("case_type") != "adjustment")}
    return funds


def dip_table(catalog: pd.DataFrame, reference_means: pd.DataFrame | None, policy) -> dict:
    """settlement.md "DIP settlement" 2: each group's score and its reference mean by level
    (the catalogue's mean_cost where the file has no row)."""
    refs = {}
    if reference_means is not None:
        for g, lv, m in zip(reference_means["group_key"], reference_means["level"], reference_means["mean_cost"]):
            refs[(str(g), str(lv))] = float(m)
    return {"groups": {g: {"score": float(sc), "mean_cost": float(m)}
                       for g, sc, m in zip(catalog["group_key"], catalog["score"], catalog["mean_cost"])},
            "refs": refs, "levels": policy["coefficients"]["hospital_level"]}


def step_dip_group(rec: dict, dip: dict, rep=None, key=None):
    """A DIP case's group, score and reference mean. The grouping (dip_group, dip_coefficient)
    is the DIP grouper's (dip.md), taken from the output; the score must be the catalogue's
    and dip_adjusted_score = score × dip_coefficient, rounded half up to 4 decimals."""
    g = rec.get("dip_group")
    if rec.get("dip_status") == "invalid":
        return "INVALID_RECORD", None
    if rec.get("dip_status") != "grouped" or isnull(g) or g not in dip["groups"]:
        return "NOT_GROUPED", None
    row = dip["groups"][g]
    dipc = float(rec["dip_coefficient"])
    adjusted = float(fmt(Fraction(row["score"]) * Fraction(Decimal(repr(dipc))), 4))
    if rep is not None:
        rep.check("cases.parquet (dip)", "dip_score", key, row["score"], _num(rec.get("dip_score")))
        rep.check("cases.parquet (dip)", "dip_adjusted_score", key, adjusted, _num(rec.get("dip_adjusted_score")))
    level = dip["levels"].get(rec.get("hospital_id"))
    mean = dip["refs"].get((g, str(level))) if level is not None else None
    mean = row["mean_cost"] if mean is None else mean
    if dip.get("mean_times_coefficient"):
        # settlement.md "DIP settlement" 2: the reference mean × the 辅助目录 coefficient
        mean = mean * dipc
    # the points use the unrounded score × coefficient (dip_adjusted_score shows it to 4 decimals)
    return None, {"score": row["score"] * dipc, "mean_cost": mean}


def step_method(rec: dict, policy, method: str) -> str | None:
    """settlement.md "DRG and DIP in one region": the method of a case's hospital. ``method`` is
    the run's (`drg`, `dip`, `mixed`); with `[dip_settlement] hospitals` the listed hospitals
    are DIP's, the others DRG's. None: the other method's pool settles it (pool = "separate":
    SETTLED_BY_OTHER_METHOD)."""
    listed = {str(h) for h in policy["dip_settlement"]["hospitals"]}
    if not listed:
        return "dip" if method == "dip" else "drg"
    own = "dip" if str(rec.get("hospital_id")) in listed else "drg"
    if method == "mixed":
        return own
    return method if own == method else None


def step_period_means(pending: list, recs: list[dict]) -> dict:
    """policy.md [deviation] group_mean = "period": the mean cost of each group over the cases
    priced by their group (step 4 of "Which rule prices a case"), summed in file order as
    float64 and divided by their number."""
    sums, counts = defaultdict(float), defaultdict(int)
    for i, rec, _row in pending:
        sums[rec["drg"]] += float(rec["total_cost"])
        counts[rec["drg"]] += 1
    return {g: sums[g] / counts[g] for g in sums}


def step_small_groups(pending: list, policy) -> set:
    """policy.md [special_review] min_group_cases: the groups with fewer priceable cases (those
    priced by their group, step 4) in the file than the minimum (trigger small_group)."""
    n = int(policy["special_review"]["min_group_cases"])
    if n <= 0:
        return set()
    counts = defaultdict(int)
    for _i, rec, _row in pending:
        counts[_group_of(rec)] += 1
    return {g for g, k in counts.items() if k < n}


def _group_of(rec: dict):
    return rec.get("dip_group") if rec.get("_method") == "dip" else rec.get("drg")


def step_group_case(c: dict, rec: dict, row: dict, policy, flag_col: str, mean=None, small=frozenset()) -> None:
    """Step 4 of "Which rule prices a case": the group's points (settlement.md §1.2), the stay
    rules, the review trigger. ``mean``: the period's group mean (group_mean = "period")."""
    ordinary_policy = with_defaults(dict(policy, special_review=dict(policy["special_review"], cost_multiple=0.0)))
    if rec.get("_method") != "dip":
        gm = row["mean_cost"] if mean is None else mean
        c["weight"], c["group_mean_cost"] = row["weight"], gm
        base, ratio, ctype, preason, points = step_case_points(
            row["weight"], gm, float(rec["total_cost"]), c["coefficient"], None,
            ordinary_policy, own_k=(row["low_k"], row["high_k"]))
    else:
        c["group_mean_cost"] = row["mean_cost"]
        base, ratio, ctype, preason, points = step_case_points(
            None, row["mean_cost"], float(rec["total_cost"]), c["coefficient"], None, ordinary_policy,
            dip_score=c["weight"])
    c.update(base_points=base, cost_ratio=ratio, method="dip" if rec.get("_method") == "dip" else "drg")
    ctype, preason, points = step_stay_rule(rec, base, ratio, (ctype, preason, points), policy)
    trigger = step_review_trigger(rec, ratio, rec.get(flag_col), row, policy)
    if trigger is None and _group_of(rec) in small:
        trigger = "small_group"
    c.update(case_type=ctype, pricing_reason=preason, points=points, trigger=trigger)


def step_points_factor(cases: list[dict], policy) -> None:
    """settlement.md "DRG and DIP in one region", pool = "shared": a DIP case's points (and base
    points) × points_factor join the DRG pool; a per-diem or fee-for-service case's are the
    pool's own."""
    factor = float(policy["dip_settlement"]["points_factor"])
    for c in cases:
        if c.get("_dip") and c.get("method") not in ("per_diem", "fee_for_service"):
            for col in ("points", "base_points"):
                if c[col] is not None:
                    c[col] = c[col] * factor


def recompute_cases(records: pd.DataFrame, benefits, weights: pd.DataFrame | None, policy, period: str,
                    dip: dict | None = None, grouping: pd.DataFrame | None = None, rep=None,
                    policy_dir: Path | None = None, decisions: dict | None = None,
                    method: str | None = None, kept: list | None = None,
                    tail_out: list | None = None) -> list[dict]:
    """Every case of a month: fund, reason, coefficient, weight, base points, points, method
    (settlement.md §1.2 and "Which rule prices a case"). With ``dip``: the DIP region
    (``grouping``: the DIP grouper's columns of each record); ``method`` "mixed": both, by
    hospital (``dip`` and ``weights``)."""
    method = method or ("dip" if dip is not None else "drg")
    if weights is not None:
        own = {c: weights[c] if c in weights.columns else [None] * len(weights) for c in ("low_k", "high_k")}
        basic_flag = weights["basic_group"] if "basic_group" in weights.columns else [None] * len(weights)
        review_flag = weights["review_group"] if "review_group" in weights.columns else [None] * len(weights)
        table = {g: {"weight": w, "mean_cost": m, "low_k": lo, "high_k": hi, "basic": _flagged(b), "review_group": rg}
                 for g, w, m, lo, hi, b, rg in zip(weights["drg"], weights["weight"], weights["mean_cost"],
                                                   own["low_k"], own["high_k"], basic_flag, review_flag)}
    period_mean = policy["deviation"]["group_mean"] == "period"
    codes = basic_codes(policy, policy_dir)
    bg = policy["basic_groups"]
    shares = step_personal_share(records, benefits)
    ids = records["id"] if "id" in records.columns else pd.Series([None] * len(records))
    counts = ids.value_counts()
    duplicates = set(counts[counts > 1].index)
    flag_col = policy["special_review"]["flag_column"]
    sr = policy["special_review"]
    recs = records.to_dict("records")
    for r in recs:
        r["_method"] = step_method(r, policy, method)
    if grouping is not None:
        for r, gr in zip(recs, grouping.to_dict("records")):
            if r["_method"] != "dip":
                continue
            r.update(gr)
            # the DIP region's status is the DIP grouper's (a drg/status column of the records is not used)
            r["status"] = {"grouped": "grouped", "invalid": "invalid"}.get(gr.get("dip_status"), "ungroupable")
    out, pending = [], []
    for rec, share in zip(recs, shares):
        fund = step_fund(rec.get("fund"), policy)
        key = f"{period} {rec.get('id')}"
        is_dip = rec["_method"] == "dip"
        if rec["_method"] is None:
            # pool = "separate": the other method's run settles this hospital's cases
            c = {"id": rec.get("id"), "hospital_id": rec.get("hospital_id"), "fund_key": fund,
                 "shown_share": share if benefits is not None or isnull(rec.get("personal_share"))
                 else to_cents(rec.get("personal_share")), "coefficient": step_coefficient(rec.get("hospital_id"),
                                                                                           policy),
                 "share": share, "los": rec.get("los_days"), "cost": to_cents(rec.get("total_cost")), "weight": None,
                 "group_mean_cost": None, "cost_ratio": None, "base_points": None, "points": None, "amount": None,
                 "fund_amount": None, "case_type": "unpriced", "pricing_reason": "SETTLED_BY_OTHER_METHOD",
                 "method": "none"}
            out.append(c)
            continue
        if not is_dip:
            group_code = rec.get("drg")
            old = step_unpriced_reason(rec, fund, share, table, policy, period, duplicates)
            if period_mean and old == "NO_GROUP_MEAN_COST":
                old = None  # the period's mean replaces the table's
            row = table.get(group_code)
        else:
            group_code = rec.get("dip_group")
            greason, row = step_dip_group(rec, dip, rep, key)
            # §1.2's order: the grouper's status first, then the record's problems
            old = greason if greason is not None else step_record_problem(rec, fund, share, policy, period,
                                                                             duplicates)
        coefficient = step_coefficient(rec.get("hospital_id"), policy)
        is_basic = bool(codes or bg["enabled"]) and bg["enabled"] and not isnull(group_code) and (
            any(str(group_code).startswith(c) for c in codes)
            or (bg["table_column"] and not is_dip and row is not None and row.get("basic")))
        if is_basic:
            coefficient = float(bg["coefficient"])
        # the share as cases.parquet shows it: the one read (benefits or the record's own,
        # negative kept as written)
        shown = share if benefits is not None or isnull(rec.get("personal_share")) \
            else to_cents(rec.get("personal_share"))
        c = {"_dip": is_dip, "id": rec.get("id"), "hospital_id": rec.get("hospital_id"), "fund_key": fund,
             "shown_share": shown,
             "group": None if isnull(group_code) else str(group_code),
             "coefficient": coefficient, "share": share, "los": rec.get("los_days"),
             "cost": to_cents(rec.get("total_cost")), "weight": None, "group_mean_cost": None,
             "cost_ratio": None, "base_points": None, "points": None, "amount": None, "fund_amount": None}
        if not is_dip:
            if row is not None and not isnull(row["weight"]):
                c["weight"] = row["weight"]  # every case shows its group's weight when the table has the group
        elif row is not None:
            c["weight"] = row["score"] / 100  # the DIP case's weight: its adjusted score ÷ 100 (A15)
        record = step_record_problem(rec, fund, share, policy, period, duplicates)
        # 1. a record problem: no method prices the case
        if old in RECORD_REASONS:
            c.update(case_type="unpriced", pricing_reason=old, method="none")
            out.append(c)
            continue
        # 2. per-diem wards
        ward = step_per_diem_ward(rec, group_code, policy)
        priced = None
        if ward is not None:
            if record is not None:
                c.update(case_type="unpriced", pricing_reason=record, method="none")
                out.append(c)
                continue
            priced = step_per_diem(rec, ward, c["coefficient"], policy)
            if priced is not None:
                reason, points = priced
                if points is None:
                    c.update(case_type="unpriced", pricing_reason=reason, method="none")
                else:
                    c.update(case_type="per_diem", pricing_reason=reason, method="per_diem", points=points)
                out.append(c)
                continue
        # 3. the fee-for-service fallback
        cls = step_ffs_class(rec, old if old in GROUP_REASONS else None, group_code, policy)
        if cls is not None:
            if record is not None:
                c.update(case_type="unpriced", pricing_reason=record, method="none")
            else:
                points = step_fee_for_service(float(rec["total_cost"]), c["coefficient"], policy)
                if points is None:
                    c.update(case_type="unpriced", pricing_reason="FFS_ZERO_COST", method="none")
                else:
                    c.update(case_type="fee_for_service", pricing_reason=cls, method="fee_for_service",
                             points=points)
            out.append(c)
            continue
        # 4. the group (priced below, once the file's period means and small groups are known);
        # 5. otherwise unpriced with the group's reason
        if old is None:
            pending.append((len(out), rec, row))
        else:
            c.update(case_type="unpriced", pricing_reason=old, method="none")
            if old == "NOT_GROUPED" and sr["ungroupable"] and record is None:
                c["trigger"] = "ungroupable"  # policy.md [special_review] ungroupable
                c["group_method"] = "dip" if is_dip else "drg"
        out.append(c)
    means = step_period_means([p for p in pending if p[1]["_method"] != "dip"], recs) if period_mean else {}
    small = step_small_groups(pending, policy)
    for i, rec, row in pending:
        step_group_case(out[i], rec, row, policy, flag_col, means.get(rec.get("drg")) if not rec["_method"] == "dip"
                        else None, small)
    step_review(out, policy, decisions)
    step_readmission(out, recs, duplicates, policy, dip is not None, period, kept, tail_out)
    if method == "mixed":
        step_points_factor(out, policy)
    return out


# ---------------------------------------------------------------------------------------
# Per hospital (settlement.md §1.4, §5) and withholding (§2).

def step_hospitals(cases: list[dict]) -> dict:
    """Per (hospital, fund): cases, unpriced, weight sum, points (fsum), share, payment, cost."""
    h = {}
    for c in cases:
        if c["fund_key"] is None:
            continue  # report.md: cases of no known fund are in no fund's row and no hospital's
        # a case without a hospital code is counted in a row with an empty hospital_id (the
        # docs are silent: ambiguity A12)
        hid = "" if isnull(c["hospital_id"]) else c["hospital_id"]
        r = h.setdefault((hid, c["fund_key"]), {
            "cases": 0, "unpriced_cases": 0, "weights": [], "points_list": [], "personal_share": 0,
            "payment": 0, "cost": 0, "unpriced_cost": 0, "weight_sum_float": 0.0, "los": Fraction(0),
            "weight_exact": Fraction(0), "held_cases": 0, "held_cost": 0, "groups": {}})
        if c["points"] is None:
            r["unpriced_cases"] += 1
            r["unpriced_cost"] += c["cost"] or 0
            if c.get("review_status") == "held":
                r["held_cases"] += 1
                r["held_cost"] += c["cost"] or 0
        elif c.get("case_type") == "adjustment":     # "Readmissions across months": points and payment only
            r["points_list"].append(c["points"])
            r["payment"] += c["amount"]
        else:
            r["cases"] += 1
            # a fee-for-service case without a weight counts 0 ("Payment methods", CMI)
            w = 0.0 if c["weight"] is None else c["weight"]
            r["weights"].append(w)
            r["weight_exact"] += Fraction(w)
            r["weight_sum_float"] += w  # ledger: plain float64 sum in input order (A10)
            r["los"] += Fraction(0 if isnull(c["los"]) else float(c["los"]))
            r["points_list"].append(c["points"])
            # settlement.md §9 per_group: cases, cost and length of stay by (payment method, group)
            g = r["groups"].setdefault((c.get("method"), c.get("group") or ""), [0, 0, Fraction(0)])
            g[0] += 1
            g[1] += c["cost"]
            g[2] += Fraction(0 if isnull(c["los"]) else float(c["los"]))
            r["personal_share"] += c["share"]
            r["payment"] += c["amount"]
            r["cost"] += c["cost"]
    for r in h.values():
        r["weight_sum"] = math.fsum(r.pop("weights"))
        r["points"] = math.fsum(r.pop("points_list"))
        r["amount_due"] = r["payment"] - r["personal_share"]
    return dict(sorted(h.items()))


def step_withholding(hospitals: dict, policy) -> None:
    """§2: withheld by largest remainder of max(due, 0) × share over a fund's hospitals by id."""
    policy = with_defaults(policy)
    share = exact(policy["settlement"]["withholding_share"])
    for fund in ("employee", "resident"):
        keys = sorted(k for k in hospitals if k[1] == fund)
        amounts = [max(hospitals[k]["amount_due"], 0) * share for k in keys]
        total = half_away(sum(amounts, Fraction(0)))
        for k, w in zip(keys, largest_remainder(amounts, total) if keys else []):
            hospitals[k]["withheld"] = w
            hospitals[k]["paid"] = hospitals[k]["amount_due"] - w


def step_advance(hospitals: dict, policy) -> None:
    """policy.md [advance], settlement.md §7-§8: held = (1 − share) × (amount due − withheld)
    of each hospital with a positive amount, the fund's total half up, largest remainder;
    paid = amount due − withheld − held."""
    share = exact(with_defaults(policy)["advance"]["share"])
    for k, h in hospitals.items():
        h["held"] = 0
    if share >= 1:
        return
    for fund in ("employee", "resident"):
        keys = sorted(k for k in hospitals if k[1] == fund)
        amounts = [max(hospitals[k]["amount_due"] - hospitals[k]["withheld"], 0) * (1 - share) for k in keys]
        total = half_away(sum(amounts, Fraction(0)))
        for k, held in zip(keys, largest_remainder(amounts, total) if keys else []):
            hospitals[k]["held"] = held
            hospitals[k]["paid"] = hospitals[k]["amount_due"] - hospitals[k]["withheld"] - held


def step_fund_summary(funds: dict, hospitals: dict, cases: list[dict]) -> dict:
    """summary.json per fund (§5)."""
    out = {}
    for fund, f in funds.items():
        rows = [r for k, r in hospitals.items() if k[1] == fund]
        out[fund] = dict(f, hospitals=len(rows),
                         unpriced_cases=sum(r["unpriced_cases"] for r in rows),
                         unpriced_cost=sum(r["unpriced_cost"] for r in rows),
                         payment=sum(r["payment"] for r in rows),
                         amount_due=sum(r["amount_due"] for r in rows),
                         withheld=sum(r["withheld"] for r in rows), paid=sum(r["paid"] for r in rows),
                         held=sum(r["held"] for r in rows), held_cases=sum(r["held_cases"] for r in rows),
                         held_cost=sum(r["held_cost"] for r in rows))
    return out


def step_rate_amounts(cases: list[dict], rates: dict) -> dict:
    """settlement.md §1.3, §2, rate form (费率法) with a published rate: amount = pᵢ × rate,
    largest remainder to Σ pᵢ × rate rounded half up; point value = rate."""
    funds = {}
    for fund, rate in rates.items():
        idx = [i for i, c in enumerate(cases) if c["fund_key"] == fund and c["points"] is not None]
        if not idx:
            continue
        pts = [Fraction(cases[i]["points"]) for i in idx]
        r = exact(rate)
        exact_cents = [p * r * 100 for p in pts]
        total = half_away(sum(exact_cents, Fraction(0)))
        for i, c in zip(idx, largest_remainder(exact_cents, total)):
            cases[i]["amount"] = c
            cases[i]["fund_amount"] = c - cases[i]["share"]
        sp = sum(pts)
        funds[fund] = {"budget": None, "personal_share": sum(cases[i]["share"] for i in idx), "T": total,
                       "points_exact": sp, "points": float(sp), "point_value": r, "point_value_float": float(rate),
                       "rate": float(rate), "cases": len(idx)}
    return funds


def recompute_month(records, benefits, weights, policy, period: str, dip: dict | None = None, grouping=None,
                    rep=None, policy_dir=None, decisions: dict | None = None, method: str | None = None,
                    kept: list | None = None, tail_out: list | None = None) -> dict:
    policy = with_defaults(policy)
    form = policy["region"]["form"]
    method = method or ("dip" if dip is not None else "drg")
    cases = recompute_cases(records, benefits, weights, policy, period, dip, grouping, rep, policy_dir, decisions,
                            method, kept, tail_out)
    budgets, rates = {}, {}
    for fund in ("employee", "resident"):
        if any(c["fund_key"] == fund and c["points"] is not None for c in cases):
            rate = policy["rate"][fund].get(period, policy["rate"][fund].get(period[:4])) if form == "rate" else None
            if rate is not None:
                rates[fund] = rate
                continue
            b = policy["budget"][fund].get(period)
            if b is None:
                raise ValueError(f"budget.{fund} has no {period}")
            budgets[fund] = to_cents(b)
    totals = None
    if method == "dip" and policy["dip_settlement"]["point_value"] == "settlement":
        totals = {f: step_dip_total(b, policy["dip_settlement"]["reimbursement_ratio"][f]) for f, b in budgets.items()}
    # with a budget and no rate, the rate form computes the rate like the point value
    # (summary.json then shows rate null and the computed rate as point_value)
    funds = step_case_amounts(cases, budgets, totals)
    if form == "rate":
        for f in funds.values():
            f["rate"] = None
        funds.update(step_rate_amounts(cases, rates))
    hospitals = step_hospitals(cases)
    step_withholding(hospitals, policy)
    step_advance(hospitals, policy)
    summary = step_fund_summary(funds, hospitals, cases)
    if exact(policy["advance"]["share"]) < 1:
        for f in summary.values():
            f["advance_share"] = policy["advance"]["share"]
    return {"cases": cases, "funds": funds, "hospitals": hospitals, "summary": summary}


# ---------------------------------------------------------------------------------------
# The year (settlement.md §1.6, §2).

def _bands_part(s: Fraction, lo: Fraction, hi: Fraction | None) -> Fraction:
    top = s if hi is None else min(s, hi)
    return max(top - lo, Fraction(0))


def step_band_adjustment(payment: int, cost: int, policy) -> int:
    """§2 'Half away from zero': surplus kept / overspend borne by bands of the payment."""
    s = payment - cost
    st = policy["settlement"]
    bands, key = (st["surplus_bands"], "hospital_keeps") if s > 0 else (st["overspend_bands"], "fund_bears")
    amount = Fraction(abs(s))
    lo, acc = Fraction(0), Fraction(0)
    for b in bands:
        hi = exact(b["up_to"]) * payment if "up_to" in b else None
        acc += exact(b[key]) * _bands_part(amount, lo, hi)
        if hi is None:
            break
        lo = hi
    return half_away(acc - s) if s > 0 else half_away(acc)


def _band_value(bands: list, x):
    for band in bands:
        if "below" not in band or x < exact(band["below"]):
            return band
    raise AssertionError("bands have no last band")


def step_incentives(hosp: dict, policy) -> dict:
    """policy.md [incentives], settlement.md §9: per hospital (both funds together) the CMI,
    cost and time indices against the region, each half up to 4 decimals, their bands'
    coefficients multiplied exactly. Returns {hospital_id: {...}} (empty when off)."""
    inc = policy["incentives"]
    if not any(inc.get(k) for k in ("cmi_bands", "cost_bands", "time_bands")):
        return {}
    per = defaultdict(lambda: {"cases": 0, "w": Fraction(0), "cost": 0, "los": Fraction(0), "groups": {}})
    for (hid, _fund), a in hosp.items():
        p = per[hid]
        p["cases"] += a["cases"]
        p["w"] += a["weight_exact"]
        p["cost"] += a["cost"]
        p["los"] += a["los"]
        for g, v in a.get("groups", {}).items():
            t = p["groups"].setdefault(g, [0, 0, Fraction(0)])
            for i in range(3):
                t[i] += v[i]
    region = {f: sum((p[f] for p in per.values()), Fraction(0)) for f in ("cases", "w", "cost", "los")}
    # §9 per_group: the region's cases, cost and length of stay in each (method, group), all
    # hospitals and both funds; only the cases priced by their group (drg or dip)
    region_g = {}
    for p in per.values():
        for g, v in p["groups"].items():
            if g[0] in ("drg", "dip"):
                t = region_g.setdefault(g, [0, 0, Fraction(0)])
                for i in range(3):
                    t[i] += v[i]

    def per_group(p, i):
        """Σ_g n_hg × k_hg ÷ Σ_g n_hg, k_hg = (hospital's mean in g) ÷ (region's mean in g);
        groups whose region total is 0 left out of both sums; None when none is left."""
        num, den = Fraction(0), 0
        for g, v in p["groups"].items():
            if g[0] not in ("drg", "dip") or not region_g[g][i]:
                continue
            n_r, tot_r = region_g[g][0], region_g[g][i]
            num += v[0] * (Fraction(v[i]) / v[0]) / (Fraction(tot_r) / n_r)
            den += v[0]
        return num / den if den else None

    def q4(x: Fraction) -> Fraction:
        return Fraction(Decimal(fmt(x, 4)))
    out = {}
    for hid, p in per.items():
        r = {"coefficient": Fraction(1), "reason": "INCENTIVE_BANDS"}
        if p["cases"]:
            # priced cases all without weight (fee for service): CMI index 0, no index per weight
            r["cmi_index"] = q4((p["w"] / p["cases"]) / (region["w"] / region["cases"]))
        if p["cases"] and p["w"]:
            r["cost_index"] = q4((Fraction(p["cost"]) / p["w"]) / (region["cost"] / region["w"]))
            r["time_index"] = q4((p["los"] / p["w"]) / (region["los"] / region["w"])) if region["los"] else None
        if inc.get("index_form", "per_group") == "per_group":
            ci, ti = per_group(p, 1), per_group(p, 2)
            r["cost_index"] = None if ci is None else q4(ci)
            r["time_index"] = None if ti is None else q4(ti)
        # no time index (a ledger without lengths of stay), or a hospital without priced cases in
        # the year (no index at all, coefficient 1): INCENTIVE_NO_TIME_INDEX
        if inc.get("cost_bands") and r.get("cost_index") is None:
            r["reason"] = "INCENTIVE_NO_COST_INDEX"
        if inc.get("time_bands") and r.get("time_index") is None:
            r["reason"] = "INCENTIVE_NO_TIME_INDEX"
        for name, bands in (("cmi_index", "cmi_bands"), ("cost_index", "cost_bands"), ("time_index", "time_bands")):
            if inc.get(bands) and r.get(name) is not None:
                r["coefficient"] *= exact(_band_value(inc[bands], r[name])["coefficient"])
        out[hid] = r
    return out


def step_quality(a: dict, hid: str, scores: dict | None, policy) -> None:
    """policy.md [quality], settlement.md §7-§8: refund = the score's band share (or score ÷
    100) × Σ monthly withheld, half up; quality_kept the rest."""
    q = policy["quality"]
    score = None if scores is None else scores.get(hid)
    if score is None:
        share, a["quality_reason"] = exact(q["missing_refund"]), "QUALITY_SCORE_MISSING"
    else:
        band = _band_value(q["bands"], score)
        share = score / 100 if band["refund"] == "proportional" else exact(band["refund"])
        a["quality_reason"] = "QUALITY_SCORE_BAND"
    a["quality_score"] = score
    a["quality_refund"] = half_away(share * a["monthly_withheld"])
    a["quality_kept"] = a["monthly_withheld"] - a["quality_refund"]


def step_reserve_cap(keys: list, hosp: dict, budget: int, policy) -> dict:
    """policy.md [reserve], settlement.md §7-§8: reserve = share × budget half up; the year's
    total due (amount due + adjustment − quality kept) above the cap is cut from the positive
    adjustments in proportion, largest remainder; paid, and what the reserve covers."""
    rs = policy["reserve"]
    reserve = half_away(exact(rs["share"]) * budget)
    before = sum(hosp[k]["amount_due"] + hosp[k]["adjustment"] - hosp[k]["quality_kept"] for k in keys)
    cap = {"none": None, "budget": budget, "budget_and_reserve": budget + reserve}[rs["cap"]]
    excess = 0 if cap is None else max(before - cap, 0)
    pos = [k for k in keys if hosp[k]["adjustment"] > 0]
    for k in keys:
        hosp[k]["cap_cut"] = 0
    if excess:
        total_pos = sum(hosp[k]["adjustment"] for k in pos)
        if excess > total_pos:
            raise RuleNotCovered("rule reserve.cap with a cut above the positive adjustments not covered (docs silent)")
        for k, cut in zip(pos, largest_remainder([Fraction(excess * hosp[k]["adjustment"], total_pos) for k in pos],
                                                 excess)):
            hosp[k]["cap_cut"] = cut
    after = before - excess
    return {"reserve": reserve, "reserve_cap": rs["cap"], "spend_before_cap": before, "cap_cut": excess,
            "reserve_used": min(max(after - budget, 0), reserve),
            "over_budget_unfunded": max(after - budget - reserve, 0)}


def step_projected(fund: str, year: str, budget: int, policy) -> dict | None:
    """policy.md [point_value] projected = "policy": (budget + projected personal share) ÷
    projected points, an exact quotient shown as a float."""
    pv = policy["point_value"]
    if pv["projected"] != "policy":
        return None
    points = pv["projected_points"].get(fund, {}).get(year)
    share = to_cents(pv["projected_personal_share"].get(fund, {}).get(year, 0))
    if points is None:
        return None
    return {"projected_point_value": float(Fraction(budget + share, 100) / exact(points)),
            "projected_points": float(points), "projected_personal_share": share, "projected_source": "policy"}


def step_annual_rate(keys: list, priced: dict, rate) -> tuple:
    """The rate form's year (费率法) with a published rate for the year (`rate.<fund>."YYYY"`):
    each hospital's payment = its year's points × rate, by largest remainder of Pᵢ × rate × 100
    to their sum rounded half up, as the month's cases (settlement.md §2); no budget (and so
    no reserve or cap, §7). Returns (budget None, payments, the rate as point value)."""
    r = exact(rate)
    exact_cents = [priced[k] * r * 100 for k in keys]
    return None, largest_remainder(exact_cents, half_away(sum(exact_cents, Fraction(0)))), r


def step_projected_history(fund: str, year: str, budget: int, policy, previous: dict | None) -> dict:
    """policy.md [point_value] projected = "history": the previous year's annual settlement (its
    total points and personal share) × (1 + growth); projected point value = (budget + that
    share) ÷ those points, an exact quotient shown as a float; the share in cents half up
    (settlement.md §7: 1,000 points, 15,000.00, growth 0.25 → 1,250, 18,750.00, 63.00)."""
    f = (previous or {}).get("funds", {}).get(fund)
    if f is None:
        # policy.md: no such settlement, no projected value, and the summary says why
        return {"projected_point_value": None,
                "projected_source": f"history: no annual settlement of {int(year) - 1} for {fund}"}
    g = 1 + exact(policy["point_value"]["growth"])
    points = Fraction(f["points"]) * g
    share = half_away(f["personal_share"] * g)
    return {"projected_point_value": float(Fraction(budget + share, 100) / points), "projected_points": float(points),
            "projected_personal_share": share,
            "projected_source": f"history: {int(year) - 1} × (1 + {policy['point_value']['growth']!r})"}


def step_annual(months: dict, policy, year: str, scores: dict | None = None, dip: bool = False,
                previous: dict | None = None) -> dict:
    """Annual payments by largest remainder of T × Pᵢ / Σ P (Pᵢ the sum of the hospital's
    monthly points, exact; × its incentive coefficient, §9), bands, quality refund, reserve
    and cap (§7), paid, balance. ``dip``: T = budget ÷ reimbursement ratio."""
    policy = with_defaults(policy)
    hosp = defaultdict(lambda: {"cases": 0, "unpriced_cases": 0, "weight_sum": Fraction(0), "points": Fraction(0),
                                "personal_share": 0, "cost": 0, "unpriced_cost": 0, "monthly_paid": 0,
                                "monthly_withheld": 0, "weight_sum_float": 0.0, "monthly_held": 0,
                                "los": Fraction(0), "weight_exact": Fraction(0)})
    for period in sorted(months):
        for k, r in months[period]["hospitals"].items():
            a = hosp[k]
            for f in ("cases", "unpriced_cases", "personal_share", "cost", "unpriced_cost"):
                a[f] += r[f]
            a["weight_sum"] += Fraction(r["weight_sum"])
            a["weight_exact"] += r.get("weight_exact", Fraction(r["weight_sum"]))
            a["los"] += r.get("los", Fraction(0))
            for g, v in r.get("groups", {}).items():
                t = a.setdefault("groups", {}).setdefault(g, [0, 0, Fraction(0)])
                for i in range(3):
                    t[i] += v[i]
            a["weight_sum_month_floats"] = a.get("weight_sum_month_floats", Fraction(0)) + Fraction(r["weight_sum_float"])
            a["weight_sum_float"] = float(a["weight_sum_month_floats"])  # annual: fsum of the monthly floats
            a["points"] += Fraction(r["points"])
            a["monthly_paid"] += r["paid"]
            a["monthly_withheld"] += r["withheld"]
            a["monthly_held"] += r.get("held", 0)
            a["held_cases"] = a.get("held_cases", 0) + r.get("held_cases", 0)
            a["held_cost"] = a.get("held_cost", 0) + r.get("held_cost", 0)
    hosp = dict(sorted(hosp.items()))
    incentives = step_incentives(hosp, policy)
    for (hid, _f), a in hosp.items():
        if incentives:
            i = incentives[hid]
            a["incentive"] = i
            # the hospital's points (the fsum of its months, a float) × coefficient, exactly, to the nearest float
            a["settled_points"] = float(Fraction(float(a["points"])) * i["coefficient"])
        else:
            a["settled_points"] = None
    funds = {}
    for fund in ("employee", "resident"):
        keys = [k for k in hosp if k[1] == fund]
        if not keys:
            continue
        priced = {k: Fraction(hosp[k]["settled_points"]) if incentives else hosp[k]["points"] for k in keys}
        sp = sum(priced.values())
        share = sum(hosp[k]["personal_share"] for k in keys)
        rate = policy["rate"][fund].get(year) if policy["region"]["form"] == "rate" else None
        if rate is not None:
            budget, pays, pv = step_annual_rate(keys, priced, rate)
        else:
            budget = to_cents(policy["budget"][fund][year])
            if dip and policy["dip_settlement"]["point_value"] == "settlement":
                total = step_dip_total(budget, policy["dip_settlement"]["reimbursement_ratio"][fund])
            else:
                total = budget + share
            pays = largest_remainder([total * priced[k] / sp for k in keys], total)
            pv = Fraction(total, 100) / sp
        for k, p in zip(keys, pays):
            a = hosp[k]
            a["payment"] = p
            a["amount_due"] = p - a["personal_share"]
            a["adjustment"] = step_band_adjustment(p, a["cost"], policy)
            a["withheld"] = 0
            a["point_value"] = pv
            step_quality(a, k[0], scores, policy)
        if rate is None:
            limits = step_reserve_cap(keys, hosp, budget, policy)
        else:  # no budget: no reserve and no cap
            limits = {}
            for k in keys:
                hosp[k]["cap_cut"] = 0
        for k in keys:
            a = hosp[k]
            a["paid"] = a["amount_due"] + a["adjustment"] - a["quality_kept"] - a["cap_cut"]
            a["balance"] = a["paid"] - a["monthly_paid"]
        rows = [hosp[k] for k in keys]
        points_float = math.fsum(float(priced[k]) for k in keys)
        funds[fund] = {"budget": budget, "personal_share": share, "points_exact": sp, "points": points_float,
                       "point_value": pv, "point_value_float": float(rate) if rate is not None else
                       (total / 100) / points_float,
                       "cases": sum(r["cases"] for r in rows),
                       "hospitals": len(rows), "unpriced_cases": sum(r["unpriced_cases"] for r in rows),
                       "unpriced_cost": sum(r["unpriced_cost"] for r in rows)}
        for f in ("payment", "amount_due", "adjustment", "monthly_paid", "paid", "balance", "quality_refund",
                  "quality_kept", "monthly_held", "held_cases", "held_cost"):
            funds[fund][f] = sum(r[f] for r in rows)
        funds[fund].update(limits)
        if policy["region"]["form"] == "rate":
            funds[fund]["rate"] = None if rate is None else float(rate)
        # the year's spend: Σ paid (= budget + Σ adjustment without §7's quality and cap)
        funds[fund]["budget_spent"] = funds[fund]["paid"]
        proj = step_projected(fund, year, budget, policy) if budget is not None else None
        if policy["point_value"]["projected"] == "history":
            proj = step_projected_history(fund, year, budget, policy, previous)
        if proj:
            funds[fund].update(proj)
    return {"hospitals": hosp, "funds": funds, "incentives": bool(incentives)}


# ---------------------------------------------------------------------------------------
# Comparison with the demo's outputs.

@dataclass
class Report:
    compared: dict = field(default_factory=lambda: defaultdict(int))
    differ: dict = field(default_factory=lambda: defaultdict(int))
    examples: dict = field(default_factory=lambda: defaultdict(list))
    months: dict = field(default_factory=dict)  # the recomputed months (check_month)
    years: dict = field(default_factory=dict)  # the recomputed years (check_year)

    def check(self, output: str, column: str, key, ours, theirs) -> None:
        self.compared[(output, column)] += 1
        if ours != theirs:
            self.differ[(output, column)] += 1
            if len(self.examples[(output, column)]) < 5:
                self.examples[(output, column)].append((key, ours, theirs))

    @property
    def total_compared(self) -> int:
        return sum(self.compared.values())

    @property
    def total_differ(self) -> int:
        return sum(self.differ.values())

    def text(self) -> str:
        lines = [f"{'output':<22} {'column':<18} {'compared':>9} {'differ':>7}"]
        by_output = defaultdict(lambda: [0, 0])
        for (o, c), n in sorted(self.compared.items()):
            by_output[o][0] += n
            by_output[o][1] += self.differ[(o, c)]
            lines.append(f"{o:<22} {c:<18} {n:>9} {self.differ[(o, c)]:>7}")
            for key, ours, theirs in self.examples[(o, c)]:
                lines.append(f"    {key}: docs {ours!r} vs output {theirs!r}")
        lines.append("")
        for o, (n, d) in sorted(by_output.items()):
            lines.append(f"{o:<22} {'(all)':<18} {n:>9} {d:>7}")
        lines.append(f"{'TOTAL':<22} {'':<18} {self.total_compared:>9} {self.total_differ:>7}")
        return "\n".join(lines)


def _num(x):
    return None if isnull(x) else float(x)


def _cents_or_none(x):
    return None if isnull(x) or x == "" else to_cents(float(x))


def compare_cases(rep: Report, period: str, ours: list[dict], out: pd.DataFrame, name: str = "cases.parquet") -> None:
    unknown = set(out["case_type"].dropna()) - KNOWN_CASE_TYPES
    unknown |= set(out["pricing_reason"].dropna()) - KNOWN_PRICING_REASONS
    if unknown:
        raise RuleNotCovered(f"rule(s) {sorted(unknown)} not covered (case types / pricing reasons in the output)")
    if "payment_method" in out.columns and set(out["payment_method"].dropna()) - KNOWN_METHODS:
        raise RuleNotCovered(f"rule(s) {sorted(set(out['payment_method'].dropna()) - KNOWN_METHODS)} not covered "
                             "(payment methods in the output)")
    if len(out) != len(ours):
        raise AssertionError(f"{period}: cases.parquet has {len(out)} rows, the records {len(ours)}")
    for c, r in zip(ours, out.to_dict("records")):
        key = f"{period} {c['id']}"
        rep.check(name, "id", key, c["id"], r["id"])
        rep.check(name, "fund_key", key, c["fund_key"], None if isnull(r["fund_key"]) else r["fund_key"])
        rep.check(name, "case_type", key, c["case_type"], r["case_type"])
        rep.check(name, "pricing_reason", key, c["pricing_reason"], r["pricing_reason"])
        rep.check(name, "coefficient", key, c["coefficient"], _num(r["coefficient"]))
        rep.check(name, "personal_share", key, c["shown_share"], _cents_or_none(r["personal_share"]))
        if "payment_method" in r:
            rep.check(name, "payment_method", key, c.get("method", "none") if c["points"] is not None else "none",
                      r["payment_method"])
        if "review_trigger" in r:
            rep.check(name, "review_trigger", key, c.get("trigger") if c.get("review_status") else None,
                      None if isnull(r["review_trigger"]) else r["review_trigger"])
            rep.check(name, "review_status", key, c.get("review_status"),
                      None if isnull(r["review_status"]) else r["review_status"])
        if "readmission_of" in r:
            rep.check(name, "readmission_of", key, c.get("readmission_of"),
                      None if isnull(r["readmission_of"]) else r["readmission_of"])
        if c["points"] is None and c["case_type"] == "unpriced" and c["pricing_reason"] != "READMISSION_UNPAID":
            # (held cases and readmissions left unpaid: below, points None)
            # unpriced: no points and no money (settlement.md §1.2, §5); the weight is shown
            # when the group has one; an unpaid readmission keeps its mean, ratio and base points
            kept = ("group_mean_cost", "cost_ratio", "base_points") if c["pricing_reason"] == "READMISSION_UNPAID" \
                else ()
            for col in ("group_mean_cost", "cost_ratio", "base_points", "points", "amount", "fund_amount"):
                rep.check(name, col, key, c[col] if col in kept else None, _num(r[col]))
            rep.check(name, "weight", key, c["weight"], _num(r["weight"]))
            continue
        for col in ("weight", "group_mean_cost", "cost_ratio", "base_points", "points"):
            rep.check(name, col, key, c[col], _num(r[col]))
        rep.check(name, "amount", key, c["amount"], _cents_or_none(r["amount"]))
        rep.check(name, "fund_amount", key, c["fund_amount"], _cents_or_none(r["fund_amount"]))


def compare_review(rep: Report, period: str, ours: list[dict], review: pd.DataFrame, name: str = "review.csv") -> None:
    """review.csv: the unpriced and special-review cases (settlement.md §1.2, policy.md)."""
    listed = [c for c in ours if c["case_type"] in ("unpriced", "special_review", "adjustment")
              or c.get("review_status")]
    want = [c["id"] for c in listed]
    got = list(review["id"])
    rep.check(name, "ids (list)", period, want, got)
    for c, rid, reason, cost, share in zip(listed, review["id"], review["pricing_reason"], review["total_cost"],
                                           review["personal_share"]):
        rep.check(name, "pricing_reason", f"{period} {rid}", c["pricing_reason"], reason)
        rep.check(name, "total_cost", f"{period} {rid}", c["cost"], _cents_or_none(cost))
        rep.check(name, "personal_share", f"{period} {rid}", c["shown_share"], _cents_or_none(share))


HOSP_MONEY = ("personal_share", "payment", "amount_due", "withheld", "paid", "cost", "unpriced_cost")
ANNUAL_MONEY = ("adjustment", "monthly_paid", "monthly_withheld", "balance")


def _text_or_empty(x, places):
    return "" if x is None else fmt(x, places)


def compare_hospitals(rep: Report, name: str, ours: dict, csv: pd.DataFrame, annual=False) -> None:
    rep.check(name, "rows (hospital, fund)", name, list(ours), list(zip(csv["hospital_id"], csv["fund"])))
    for r in csv.to_dict("records"):
        k = (r["hospital_id"], r["fund"])
        o = ours.get(k)
        if o is None:
            rep.check(name, "row", k, None, k)
            continue
        key = f"{name} {k[0]} {k[1]}"
        rep.check(name, "cases", key, o["cases"], int(r["cases"]))
        rep.check(name, "unpriced_cases", key, o["unpriced_cases"], int(r["unpriced_cases"]))
        ws = Fraction(o["weight_sum"])
        rep.check(name, "weight_sum", key, fmt(ws, 4), str(r["weight_sum"]))
        rep.check(name, "cmi", key, fmt(ws / o["cases"], 4) if o["cases"] else "", str(r["cmi"]))
        rep.check(name, "points", key, fmt(Fraction(o["points"]), 4), str(r["points"]))
        if annual:
            rep.check(name, "point_value", key, fmt(o["point_value"], 6), str(r["point_value"]))
        for col in HOSP_MONEY + (ANNUAL_MONEY if annual else ()):
            rep.check(name, col, key, o[col], text_cents(r[col]))
        if not annual and "held" in r:
            rep.check(name, "held", key, o["held"], text_cents(r["held"]))
        if "held_cases" in r:
            rep.check(name, "held_cases", key, o.get("held_cases", 0), int(r["held_cases"]))
            rep.check(name, "held_cost", key, o.get("held_cost", 0), text_cents(r["held_cost"]))
        if annual:
            for col in ("monthly_held", "cap_cut", "quality_refund", "quality_kept"):
                if col in r:
                    rep.check(name, col, key, o[col], text_cents(r[col]))
            if "quality_reason" in r:
                rep.check(name, "quality_reason", key, o["quality_reason"], r["quality_reason"])
                rep.check(name, "quality_score", key, "" if o["quality_score"] is None else o["quality_score"],
                          "" if r["quality_score"] == "" else Fraction(Decimal(r["quality_score"])))
            inc = o.get("incentive")
            if "incentive_coefficient" in r or inc:
                inc = inc or {}
                for col in ("cmi_index", "cost_index", "time_index"):
                    rep.check(name, col, key, _text_or_empty(inc.get(col), 4), r.get(col))
                # shown with 4 decimals, half up (settled_points uses the exact product)
                rep.check(name, "incentive_coefficient", key, _text_or_empty(inc.get("coefficient"), 4),
                          r.get("incentive_coefficient"))
                rep.check(name, "settled_points", key, fmt(Fraction(o["settled_points"]), 4), r.get("settled_points"))
                rep.check(name, "incentive_reason", key, inc.get("reason"), r.get("incentive_reason"))


def compare_month_point_value(rep: Report, name: str, month: dict, csv: pd.DataFrame) -> None:
    for r in csv.to_dict("records"):
        f = month["funds"].get(r["fund"])
        rep.check(name, "point_value", f"{name} {r['hospital_id']} {r['fund']}",
                  fmt(f["point_value"], 6) if f else None, str(r["point_value"]))


def compare_summary(rep: Report, name: str, ours: dict, summary: dict, annual=False) -> None:
    got = summary["funds"]
    rep.check(name, "funds", name, sorted(ours), sorted(got))
    for fund, o in ours.items():
        g = got.get(fund, {})
        key = f"{name} {fund}"
        if "rate" in g or "rate" in o:
            rep.check(name, "rate", key, o.get("rate"), g.get("rate"))
        money = ["budget", "personal_share", "unpriced_cost", "payment", "amount_due"]
        money += ["adjustment", "monthly_paid", "balance", "budget_spent"] if annual else ["withheld", "paid"]
        if not annual and "held" in g:
            money.append("held")
        if "held_cost" in g:
            money.append("held_cost")
            rep.check(name, "held_cases", key, o.get("held_cases", 0), g.get("held_cases"))
        if annual:
            money += [c for c in ("monthly_held", "quality_refund", "quality_kept", "reserve", "spend_before_cap",
                                  "reserve_used", "over_budget_unfunded", "cap_cut", "projected_personal_share")
                      if c in g or c in o]
            for col in ("reserve_cap", "projected_source", "projected_points", "projected_point_value"):
                if col in g or col in o:
                    rep.check(name, col, key, o.get(col), g.get(col))
        for col in money:
            rep.check(name, col, key, o.get(col), None if g.get(col) is None else text_cents(g[col]))
        for col in ("cases", "hospitals", "unpriced_cases"):
            rep.check(name, col, key, o[col], g.get(col))
        if "advance_share" in g:
            rep.check(name, "advance_share", key, o.get("advance_share"), g.get("advance_share"))
        # float64 figures: the nearest float to the exact value (the docs do not say: A9)
        rep.check(name, "point_value", key, o["point_value_float"], g.get("point_value"))
        rep.check(name, "total_points", key, o["points"], g.get("total_points"))


def compare_reasons(rep: Report, name: str, cases: list[dict], summary: dict) -> None:
    counts = defaultdict(int)
    for c in cases:
        counts[c["pricing_reason"]] += 1
    rep.check(name, "reasons", name, dict(sorted(counts.items())), dict(sorted(summary.get("reasons", {}).items())))


LEDGER_CENTS = ("personal_share", "payment", "amount_due", "withheld", "paid", "cost", "unpriced_cost")


def compare_ledger(rep: Report, ledger: Path, months: dict, year_result: dict | None, year: str, tag: str = "") -> None:
    con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        runs = {(p, k): rid for rid, p, k in con.execute(
            "select run_id, period, kind from runs where current = 1")}
        for (period, kind), rid in sorted(runs.items()):
            ours = months.get(period) if kind == "monthly" else year_result
            if ours is None:
                continue
            name = f"ledger {kind}{tag}"
            for row in con.execute(
                    "select hospital_id, fund, cases, unpriced_cases, personal_share_cents, payment_cents, "
                    "amount_due_cents, withheld_cents, paid_cents, cost_cents, unpriced_cost_cents, "
                    "adjustment_cents, monthly_paid_cents, balance_cents, points, weight_sum, point_value "
                    "from hospital_results where run_id = ? order by hospital_id, fund", (rid,)):
                k = (row[0], row[1])
                o = ours["hospitals"].get(k)
                key = f"{period} {k[0]} {k[1]}"
                if o is None:
                    rep.check(name, "row", key, None, k)
                    continue
                rep.check(name, "cases", key, o["cases"], row[2])
                rep.check(name, "unpriced_cases", key, o["unpriced_cases"], row[3])
                for col, v in zip(LEDGER_CENTS, row[4:11]):
                    rep.check(name, col + "_cents", key, o[col], v)
                if kind == "annual":
                    for col, v in zip(("adjustment", "monthly_paid", "balance"), row[11:14]):
                        rep.check(name, col + "_cents", key, o[col], v)
                rep.check(name, "points", key, float(o["points"]), row[14])
                rep.check(name, "weight_sum", key, o["weight_sum_float"], row[15])
            for fund, budget, share, cases, points, value in con.execute(
                    "select fund, budget_cents, personal_share_cents, cases, total_points, point_value "
                    "from fund_results where run_id = ?", (rid,)):
                f = ours["funds"].get(fund)
                key = f"{period} {fund}"
                rep.check(name, "total_points", key, f and f["points"], points)
                rep.check(name, "point_value", key, f and f["point_value_float"], value)
                rep.check(name, "budget_cents", key, f and f["budget"], budget)
                rep.check(name, "personal_share_cents", key, f and f["personal_share"], share)
                rep.check(name, "fund cases", key, f and f["cases"], cases)
    finally:
        con.close()


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def check_month(records_path, weights_path, policy_path, out_dir, period: str, benefits_path=None,
                rep: Report | None = None, method: str = "drg", catalog_path=None, decisions_path=None,
                kept: list | None = None, tail_out: list | None = None) -> Report:
    """One ``drgdip settle PERIOD RECORDS`` run's outputs (cases, review, hospitals, summary,
    decisions) against the recomputation. ``method`` as ``settle --method`` (dip and mixed: the
    DIP grouping taken from the output's dip_* columns, the scores from ``catalog_path``);
    ``decisions_path``: the run's ``--decisions`` file. Months settled into one ledger: ``kept``
    the earlier months' kept stays, ``tail_out`` gets this month's (step_readmission)."""
    rep = rep or Report()
    policy = read_policy(policy_path)
    policy_dir = Path(policy_path).parent
    weights = pq.read_table(weights_path).to_pandas() if weights_path else None
    benefits = pq.read_table(benefits_path).to_pandas() if benefits_path else None
    records = pq.read_table(records_path).to_pandas()
    out_dir = Path(out_dir)
    out = pq.read_table(out_dir / "cases.parquet").to_pandas()
    dip_ctx = grouping = None
    if method in ("dip", "mixed"):
        catalog = pq.read_table(catalog_path).to_pandas()
        ref = policy["dip_settlement"]["reference_means"]
        dip_ctx = dip_table(catalog, _read_csv(policy_dir / ref) if ref else None, policy)
        dip_ctx["mean_times_coefficient"] = True
        grouping = out[[c for c in out.columns if c.startswith("dip_")]]
    decisions, drows = read_decisions(Path(decisions_path)) if decisions_path else (None, [])
    month = recompute_month(records, benefits, weights, policy, period, dip_ctx, grouping, rep, policy_dir, decisions,
                            method, kept, tail_out)
    if decisions_path:
        got = _read_csv(out_dir / "decisions.csv")
        rep.check("decisions.csv", "rows (id, status, reason)", period, decision_statuses(drows, month["cases"]),
                  list(zip(got["id"], got["status"], got["reason"])))
    compare_cases(rep, period, month["cases"], out)
    compare_review(rep, period, month["cases"], _read_csv(out_dir / "review.csv"))
    hcsv = _read_csv(out_dir / "hospitals.csv")
    compare_hospitals(rep, "hospitals.csv (month)", month["hospitals"], hcsv)
    compare_month_point_value(rep, "hospitals.csv (month)", month, hcsv)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    compare_summary(rep, "summary.json (month)", month["summary"], summary)
    compare_reasons(rep, "summary.json (month)", month["cases"], summary)
    rep.months[period] = month
    return rep


def check_year(months: dict, policy_path, out_dir, year: str, rep: Report | None = None, scores_path=None,
               dip: bool = False, previous: dict | None = None) -> Report:
    """One ``drgdip settle YEAR --final`` run's outputs against the recomputation from the
    recomputed months (``recompute_month`` results by period). ``previous``: the previous year's
    ``step_annual`` result (point_value.projected = "history")."""
    rep = rep or Report()
    policy = read_policy(policy_path)
    months = {p: m for p, m in months.items() if isinstance(p, str) and p.startswith(year)}
    result = step_annual(months, policy, year, read_scores(scores_path) if scores_path else None, dip=dip,
                         previous=previous)
    rep.years[year] = result
    out_dir = Path(out_dir)
    compare_hospitals(rep, "hospitals.csv (year)", result["hospitals"], _read_csv(out_dir / "hospitals.csv"),
                      annual=True)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    compare_summary(rep, "summary.json (year)", result["funds"], summary, annual=True)
    return rep


def read_scores(path: Path | None) -> dict | None:
    """policy.md [quality]: the scores file (hospital_id, score as written)."""
    if path is None or not Path(path).exists():
        return None
    df = _read_csv(Path(path))
    return {h: Fraction(Decimal(v)) for h, v in zip(df["hospital_id"], df["score"])}


def compare_dip_summary(rep: Report, name: str, catalog: pd.DataFrame, summary: dict) -> None:
    """settlement.md "DIP settlement" 3: the catalogue's 预算点值 Σ(cases × mean_cost) ÷ Σ(cases × score),
    shown with 6 decimals (A16)."""
    bpv = Fraction(0), Fraction(0)
    num = sum((Fraction(int(n)) * Fraction(Decimal(repr(float(m)))) for n, m in zip(catalog["cases"], catalog["mean_cost"])),
              Fraction(0))
    den = sum((Fraction(int(n)) * Fraction(Decimal(repr(float(sc)))) for n, sc in zip(catalog["cases"], catalog["score"])),
              Fraction(0))
    del bpv
    rep.check(name, "dip.budget_point_value", name, float(fmt(num / den, 6)), summary.get("dip", {}).get("budget_point_value"))


DECISIONS = {"points", "normal", "actual", "reject"}


def read_decisions(path: Path) -> tuple[dict, list]:
    """settlement.md "Special case review" 5: the decisions file as the run's decisions.csv
    repeats it (id, decision, points). Returns the usable decisions {id: (kind, points)} and each
    row's (id, status, reason) but for the case checks (DECISION_UNKNOWN_ID,
    DECISION_NOT_UNDER_REVIEW, DECISION_NEEDS_POINTS), left to ``decision_statuses``."""
    df = _read_csv(path)
    ids = list(df["id"])
    rows, usable = [], {}
    for rid, dec, pts in zip(df["id"], df.get("decision", [""] * len(df)), df.get("points", [""] * len(df))):
        dec = dec.strip().lower()
        kind = dec or ("points" if pts.strip() else "")
        bad = not rid.strip() or kind not in DECISIONS
        value = None
        if kind == "points":
            try:
                value = float(pts)
                bad = bad or not math.isfinite(value) or value < 0
            except ValueError:
                bad = True
        if bad:
            rows.append((rid, "refused", "DECISION_MALFORMED"))
        elif ids.count(rid) > 1:
            rows.append((rid, "refused", "DECISION_DUPLICATE_ID"))
        else:
            rows.append((rid, None, None))
            usable[rid] = (kind, value)
    return usable, rows


def decision_statuses(rows: list, cases: list[dict]) -> list:
    by_id = {c["id"]: c for c in cases}
    out = []
    for rid, status, reason in rows:
        if status is None:
            c = by_id.get(rid)
            if c is None:
                status, reason = "refused", "DECISION_UNKNOWN_ID"
            elif c.get("review_status") != "decided":
                status, reason = "refused", "DECISION_NOT_UNDER_REVIEW" if c.get("review_status") in (
                    None, "over_quota") else "DECISION_NEEDS_POINTS"
            else:
                status, reason = "applied", ""
        out.append((rid, status, reason))
    return out


def check_region(folder: Path, region: Path, rep: Report, dip: bool = False,
                 dip_mean_times_coefficient: bool = False) -> Report:
    """One region of the demo: ``region`` holds policy.toml, settled/ and ledger.db; the records
    (data/), benefits and scores are the demo folder's."""
    policy = read_policy(region / "policy.toml")
    benefits_path = folder / "benefits.parquet"
    benefits = pq.read_table(benefits_path).to_pandas() if benefits_path.exists() else None
    weights = None if dip else pq.read_table(folder / "weights.parquet").to_pandas()
    dip_ctx = catalog = None
    if dip:
        catalog = pq.read_table(region / "catalog.parquet").to_pandas()
        ref = policy["dip_settlement"]["reference_means"]
        dip_ctx = dip_table(catalog, _read_csv(region / ref) if ref else None, policy)
        dip_ctx["mean_times_coefficient"] = dip_mean_times_coefficient
    months = {}
    settled = region / "settled"
    periods = sorted(p.name for p in settled.iterdir() if len(p.name) == 7)
    years = sorted(p.name for p in settled.iterdir() if len(p.name) == 4)
    tag = " (dip)" if dip else ""
    kept: list = []          # settlement.md "Readmissions across months": the months' kept stays
    for period in periods:
        records = pq.read_table(folder / "data" / f"{period}.parquet").to_pandas()
        out = pq.read_table(settled / period / "cases.parquet").to_pandas()
        grouping = out[[c for c in out.columns if c.startswith("dip_")]] if dip else None
        dpath = settled / period / "decisions.csv"
        decisions, drows = read_decisions(dpath) if dpath.exists() else (None, [])
        tail: list = []
        month = recompute_month(records, benefits, weights, policy, period, dip_ctx, grouping, rep, region, decisions,
                                kept=kept, tail_out=tail)
        kept += tail
        if dpath.exists():
            got = _read_csv(dpath)
            rep.check("decisions.csv" + tag, "rows (id, status, reason)", period,
                      decision_statuses(drows, month["cases"]), list(zip(got["id"], got["status"], got["reason"])))
        months[period] = month
        compare_cases(rep, period, month["cases"], out, "cases.parquet" + tag)
        compare_review(rep, period, month["cases"], _read_csv(settled / period / "review.csv"), "review.csv" + tag)
        hcsv = _read_csv(settled / period / "hospitals.csv")
        compare_hospitals(rep, "hospitals.csv (month)" + tag, month["hospitals"], hcsv)
        compare_month_point_value(rep, "hospitals.csv (month)" + tag, month, hcsv)
        summary = json.loads((settled / period / "summary.json").read_text(encoding="utf-8"))
        compare_summary(rep, "summary.json (month)" + tag, month["summary"], summary)
        compare_reasons(rep, "summary.json (month)" + tag, month["cases"], summary)
        if dip:
            compare_dip_summary(rep, "summary.json (month)" + tag, catalog, summary)
    year_result = None
    for year in years:
        in_year = {p: m for p, m in months.items() if p.startswith(year)}
        summary = json.loads((settled / year / "summary.json").read_text(encoding="utf-8"))
        # the scores file the year was settled with (its hash in summary.json's inputs)
        scores_path = folder / "scores.csv"
        used = "scores" in summary.get("inputs", {})
        if used and hashlib.sha256(scores_path.read_bytes()).hexdigest() != summary["inputs"]["scores"]:
            raise AssertionError(f"{year}: the year was settled with a scores file other than {scores_path}")
        year_result = step_annual(in_year, policy, year, read_scores(scores_path) if used else None, dip=dip)
        compare_hospitals(rep, "hospitals.csv (year)" + tag, year_result["hospitals"],
                          _read_csv(settled / year / "hospitals.csv"), annual=True)
        compare_summary(rep, "summary.json (year)" + tag, year_result["funds"], summary, annual=True)
    if (region / "ledger.db").exists():
        compare_ledger(rep, region / "ledger.db", months, year_result, years[-1] if years else "", tag)
    rep.months.update({("dip", p) if dip else p: m for p, m in months.items()})
    return rep


def check_demo(folder, dip_mean_times_coefficient: bool = True) -> Report:
    """Recompute the demo's settlement (the DRG region, and the DIP region of demo/dip/ when
    there is one) from its inputs and the docs; compare every output."""
    folder = Path(folder)
    rep = Report()
    check_region(folder, folder, rep)
    if (folder / "dip" / "settled").exists():
        check_region(folder, folder / "dip", rep, dip=True, dip_mean_times_coefficient=dip_mean_times_coefficient)
    return rep


if __name__ == "__main__":
    report = check_demo(sys.argv[1] if len(sys.argv) > 1 else "demo")
    print(report.text())
    sys.exit(1 if report.total_differ else 0)
