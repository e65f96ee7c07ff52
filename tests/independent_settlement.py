"""An independent recomputation of what ``drgdip demo`` writes for its settlement.

Written from the documentation alone (docs/settlement.md, docs/policy.md, docs/files.md,
docs/report.md, docs/reasons.md), without reading or importing ``drgdip.weights``: it
tests that someone could recompute every point and every cent from the docs. Only
pyarrow, pandas, decimal, fractions, math, sqlite3 and tomllib are used.

One function per documented step (settlement.md §1, §2):

    read_policy                 policy.md: defaults + the region's file; refuses rules it does not know
    step_personal_share         settlement.md "settle --benefits": the share from the benefits file
    step_fund                   policy.md [funds]
    step_unpriced_reason        settlement.md §1.2: why a case cannot be priced
    step_coefficient            policy.md [coefficients]
    step_case_points            settlement.md §1.2, policy.md [deviation], [special_review]
    step_case_amounts           settlement.md §1.3, §1.4, §2 (largest remainder per fund)
    step_hospitals              settlement.md §1.4, §5 (hospitals.csv)
    step_withholding            settlement.md §2 (largest remainder over a fund's hospitals)
    step_fund_summary           settlement.md §5 (summary.json)
    step_annual                 settlement.md §1.6, §2 (annual payments, bands)

A rule the policy turns on that this checker does not implement raises ``RuleNotCovered``
("rule X not covered") instead of mismatching silently. To add a rule (per-diem,
fee-for-service, incomplete stays, readmission, special-review decisions, reserve cap,
advance share, quality refund, DIP), add its fields to ``COVERED`` with a function of its
own and call it from ``recompute_month`` / ``recompute_year``.

``check_demo(folder)`` compares everything with the demo's outputs and returns a
``Report``: per output and column, values compared and values that differ (with examples).
Run as a script: ``python tests/independent_settlement.py DEMO_FOLDER``.
"""
from __future__ import annotations

import json
import math
import sqlite3
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
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
    "special_review": {"flag_column": "special_review", "cost_multiple": 0.0, "payment": "actual"},
    "records": {"los_min_days": 1, "los_max_days": 365},
    "settlement": {"withholding_share": 0.0, "surplus_bands": [{"hospital_keeps": 1.0}],
                   "overspend_bands": [{"fund_bears": 0.0}]},
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
    "deviation.group_mean": {"table"},
    "special_review.flag_column": None, "special_review.cost_multiple": None,
    "special_review.payment": {"actual", "normal", "hold"},
    "records.los_min_days": None, "records.los_max_days": None,
    "settlement.withholding_share": None, "settlement.surplus_bands": None,
    "settlement.overspend_bands": None,
    # weights are computed before settlement; the checker takes the demo's weight table as input
    "weights.year_weights": None, "weights.trim": None, "weights.trim_sd": None,
    "weights.trim_percentiles": None, "weights.min_cases": None, "weights.small_group_rule": None,
}

KNOWN_PRICING_REASONS = {
    "PRICED_NORMAL", "HIGH_COST_CASE", "LOW_COST_CASE", "SPECIAL_REVIEW_FLAG", "SPECIAL_REVIEW_COST",
    "SPECIAL_REVIEW_HOLD", "INVALID_RECORD", "NOT_GROUPED", "GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED",
    "BAD_COST", "BAD_PERSONAL_SHARE", "UNKNOWN_FUND", "MISSING_HOSPITAL", "BAD_DISCHARGE_DATE",
    "OUT_OF_PERIOD", "NO_GROUP_MEAN_COST", "BAD_LOS", "DUPLICATE_SETTLEMENT_ID",
}
KNOWN_CASE_TYPES = {"normal", "high_cost", "low_cost", "special_review", "unpriced"}
KNOWN_CASE_COLUMNS = ["fund_key", "weight", "group_mean_cost", "cost_ratio", "coefficient", "base_points",
                      "case_type", "pricing_reason", "points", "amount", "fund_amount"]


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
                    raise RuleNotCovered(f"rule {key} not covered (rate form)")
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
    # (drgdip prices such a case: reported, test_a_record_without_a_discharge_date_is_not_priced)
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


def step_case_points(weight: float, mean_cost: float, cost: float, coefficient: float, flag, policy):
    """settlement.md §1.2 and policy.md [deviation], [special_review]: base points, ratio,
    case type, pricing reason and points (float64, left to right as the docs write them)."""
    dev, sr = policy["deviation"], policy["special_review"]
    # settlement.md §1.2: base points of the policy (100 or 1000; 1 in the rate form)
    base_points = 1.0 if policy["region"]["form"] == "rate" else float(policy["region"]["base_points"])
    base = weight * base_points * coefficient
    ratio = cost / mean_cost
    k = _k_high(weight, policy)
    cm = float(sr["cost_multiple"])
    if _flagged(flag) or (cm > 0 and ratio > cm):
        reason = "SPECIAL_REVIEW_FLAG" if _flagged(flag) else "SPECIAL_REVIEW_COST"
        pay = sr["payment"]
        if pay == "hold":
            # listed, not paid: case type special_review without points (the docs do not name
            # the case type of a held case: ambiguity A14)
            return base, ratio, "special_review", "SPECIAL_REVIEW_HOLD", None
        points = base * ratio if pay == "actual" else base
        return base, ratio, "special_review", reason, points
    if ratio > k:
        pay = dev["high_payment"]
        if pay == "add_on":
            points = base * (1 + float(dev["high_add_on_share"]) * (ratio - k))
        elif pay == "actual":
            points = base * ratio
        elif pay == "cap":
            points = base * min(ratio, float(dev["high_cap"]))
        else:
            points = base
        return base, ratio, "high_cost", "HIGH_COST_CASE", points
    if ratio < float(dev["low_k"]):
        pay = dev["low_payment"]
        if pay == "proportional":
            points = base * ratio
        elif pay == "deduction":
            points = base * (1 - float(dev["low_deduction"]))
        else:
            points = base
        return base, ratio, "low_cost", "LOW_COST_CASE", points
    return base, ratio, "normal", "PRICED_NORMAL", base


def step_case_amounts(cases: list[dict], budget_cents: dict) -> dict:
    """settlement.md §1.3-1.4, §2: per fund T = budget + Σ personal share of the priced cases;
    case amount by largest remainder of T × pᵢ / Σ p (exact points), fund_amount = amount − share."""
    funds = {}
    for fund in [f for f in ("employee", "resident") if f in budget_cents]:
        idx = [i for i, c in enumerate(cases) if c["fund_key"] == fund and c["points"] is not None]
        if not idx:
            continue
        pts = [Fraction(cases[i]["points"]) for i in idx]
        sp = sum(pts)
        share = sum(cases[i]["share"] for i in idx)
        total = budget_cents[fund] + share
        cents = largest_remainder([total * p / sp for p in pts], total)
        for i, c in zip(idx, cents):
            cases[i]["amount"] = c
            cases[i]["fund_amount"] = c - cases[i]["share"]
        funds[fund] = {"budget": budget_cents[fund], "personal_share": share, "T": total,
                       "points_exact": sp, "points": float(sp),
                       "point_value": Fraction(total, 100) / sp,
                       # summary.json / ledger float64: (T / 100) / total_points in float64
                       "point_value_float": (total / 100) / float(sp), "cases": len(idx)}
    return funds


def recompute_cases(records: pd.DataFrame, benefits, weights: pd.DataFrame, policy, period: str) -> list[dict]:
    """Every case of a month: fund, reason, coefficient, weight, base points, points."""
    table = {g: {"weight": w, "mean_cost": m}
             for g, w, m in zip(weights["drg"], weights["weight"], weights["mean_cost"])}
    shares = step_personal_share(records, benefits)
    ids = records["id"] if "id" in records.columns else pd.Series([None] * len(records))
    counts = ids.value_counts()
    duplicates = set(counts[counts > 1].index)
    flag_col = policy["special_review"]["flag_column"]
    out = []
    for rec, share in zip(records.to_dict("records"), shares):
        fund = step_fund(rec.get("fund"), policy)
        reason = step_unpriced_reason(rec, fund, share, table, policy, period, duplicates)
        # the share as cases.parquet shows it: the one read (benefits or the record's own,
        # negative kept as written)
        shown = share if benefits is not None or isnull(rec.get("personal_share")) \
            else to_cents(rec.get("personal_share"))
        c = {"id": rec.get("id"), "hospital_id": rec.get("hospital_id"), "fund_key": fund, "shown_share": shown,
             "coefficient": step_coefficient(rec.get("hospital_id"), policy), "share": share,
             "cost": to_cents(rec.get("total_cost")), "weight": None, "group_mean_cost": None,
             "cost_ratio": None, "base_points": None, "points": None, "amount": None, "fund_amount": None}
        row = table.get(rec.get("drg"))
        if row is not None and not isnull(row["weight"]):
            c["weight"] = row["weight"]  # every case shows its group's weight when the table has the group
        if reason is None:
            c["weight"], c["group_mean_cost"] = row["weight"], row["mean_cost"]
            base, ratio, ctype, preason, points = step_case_points(
                row["weight"], row["mean_cost"], float(rec["total_cost"]), c["coefficient"], rec.get(flag_col), policy)
            c.update(base_points=base, cost_ratio=ratio, case_type=ctype, pricing_reason=preason, points=points)
        else:
            c.update(case_type="unpriced", pricing_reason=reason)
        out.append(c)
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
            "payment": 0, "cost": 0, "unpriced_cost": 0, "weight_sum_float": 0.0})
        if c["points"] is None:
            r["unpriced_cases"] += 1
            r["unpriced_cost"] += c["cost"] or 0
        else:
            r["cases"] += 1
            r["weights"].append(c["weight"])
            r["weight_sum_float"] += c["weight"]  # ledger: plain float64 sum in input order (A10)
            r["points_list"].append(c["points"])
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
    share = exact(policy["settlement"]["withholding_share"])
    for fund in ("employee", "resident"):
        keys = sorted(k for k in hospitals if k[1] == fund)
        amounts = [max(hospitals[k]["amount_due"], 0) * share for k in keys]
        total = half_away(sum(amounts, Fraction(0)))
        for k, w in zip(keys, largest_remainder(amounts, total) if keys else []):
            hospitals[k]["withheld"] = w
            hospitals[k]["paid"] = hospitals[k]["amount_due"] - w


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
                         withheld=sum(r["withheld"] for r in rows), paid=sum(r["paid"] for r in rows))
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


def recompute_month(records, benefits, weights, policy, period: str) -> dict:
    form = policy["region"]["form"]
    cases = recompute_cases(records, benefits, weights, policy, period)
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
    # with a budget and no rate, the rate form computes the rate like the point value
    # (summary.json then shows rate null and the computed rate as point_value)
    funds = step_case_amounts(cases, budgets)
    if form == "rate":
        for f in funds.values():
            f["rate"] = None
        funds.update(step_rate_amounts(cases, rates))
    hospitals = step_hospitals(cases)
    step_withholding(hospitals, policy)
    return {"cases": cases, "funds": funds, "hospitals": hospitals,
            "summary": step_fund_summary(funds, hospitals, cases)}


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


def step_annual(months: dict, policy, year: str) -> dict:
    """Annual payments by largest remainder of T × Pᵢ / Σ P (Pᵢ the sum of the hospital's
    monthly points, exact), bands, paid, balance."""
    hosp = defaultdict(lambda: {"cases": 0, "unpriced_cases": 0, "weight_sum": Fraction(0), "points": Fraction(0),
                                "personal_share": 0, "cost": 0, "unpriced_cost": 0, "monthly_paid": 0,
                                "monthly_withheld": 0, "weight_sum_float": 0.0})
    for period in sorted(months):
        for k, r in months[period]["hospitals"].items():
            a = hosp[k]
            for f in ("cases", "unpriced_cases", "personal_share", "cost", "unpriced_cost"):
                a[f] += r[f]
            a["weight_sum"] += Fraction(r["weight_sum"])
            a["weight_sum_month_floats"] = a.get("weight_sum_month_floats", Fraction(0)) + Fraction(r["weight_sum_float"])
            a["weight_sum_float"] = float(a["weight_sum_month_floats"])  # annual: fsum of the monthly floats
            a["points"] += Fraction(r["points"])
            a["monthly_paid"] += r["paid"]
            a["monthly_withheld"] += r["withheld"]
    hosp = dict(sorted(hosp.items()))
    funds = {}
    for fund in ("employee", "resident"):
        keys = [k for k in hosp if k[1] == fund]
        if not keys:
            continue
        sp = sum(hosp[k]["points"] for k in keys)
        share = sum(hosp[k]["personal_share"] for k in keys)
        budget = to_cents(policy["budget"][fund][year])
        total = budget + share
        pays = largest_remainder([total * hosp[k]["points"] / sp for k in keys], total)
        for k, p in zip(keys, pays):
            a = hosp[k]
            a["payment"] = p
            a["amount_due"] = p - a["personal_share"]
            a["adjustment"] = step_band_adjustment(p, a["cost"], policy)
            a["withheld"] = 0
            a["paid"] = a["amount_due"] + a["adjustment"]
            a["balance"] = a["paid"] - a["monthly_paid"]
            a["point_value"] = Fraction(total, 100) / sp
        rows = [hosp[k] for k in keys]
        points_float = math.fsum(float(hosp[k]["points"]) for k in keys)
        funds[fund] = {"budget": budget, "personal_share": share, "points_exact": sp, "points": points_float,
                       "point_value": Fraction(total, 100) / sp, "point_value_float": (total / 100) / points_float, "cases": sum(r["cases"] for r in rows),
                       "hospitals": len(rows), "unpriced_cases": sum(r["unpriced_cases"] for r in rows),
                       "unpriced_cost": sum(r["unpriced_cost"] for r in rows)}
        for f in ("payment", "amount_due", "adjustment", "monthly_paid", "paid", "balance"):
            funds[fund][f] = sum(r[f] for r in rows)
        funds[fund]["budget_spent"] = budget + funds[fund]["adjustment"]
    return {"hospitals": hosp, "funds": funds}


# ---------------------------------------------------------------------------------------
# Comparison with the demo's outputs.

@dataclass
class Report:
    compared: dict = field(default_factory=lambda: defaultdict(int))
    differ: dict = field(default_factory=lambda: defaultdict(int))
    examples: dict = field(default_factory=lambda: defaultdict(list))
    months: dict = field(default_factory=dict)  # the recomputed months (check_month)

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


def compare_cases(rep: Report, period: str, ours: list[dict], out: pd.DataFrame) -> None:
    unknown = set(out["case_type"].dropna()) - KNOWN_CASE_TYPES
    unknown |= set(out["pricing_reason"].dropna()) - KNOWN_PRICING_REASONS
    if unknown:
        raise RuleNotCovered(f"rule(s) {sorted(unknown)} not covered (case types / pricing reasons in the output)")
    extra = [c for c in out.columns if c in ("payment_method",)]
    if extra:
        raise RuleNotCovered(f"rule {extra[0]} not covered (column in cases.parquet)")
    if len(out) != len(ours):
        raise AssertionError(f"{period}: cases.parquet has {len(out)} rows, the records {len(ours)}")
    name = "cases.parquet"
    for c, r in zip(ours, out.to_dict("records")):
        key = f"{period} {c['id']}"
        rep.check(name, "id", key, c["id"], r["id"])
        rep.check(name, "fund_key", key, c["fund_key"], None if isnull(r["fund_key"]) else r["fund_key"])
        rep.check(name, "case_type", key, c["case_type"], r["case_type"])
        rep.check(name, "pricing_reason", key, c["pricing_reason"], r["pricing_reason"])
        rep.check(name, "coefficient", key, c["coefficient"], _num(r["coefficient"]))
        rep.check(name, "personal_share", key, c["shown_share"], _cents_or_none(r["personal_share"]))
        if c["points"] is None and c["case_type"] == "unpriced":  # (held cases: below, points None)
            # unpriced: no points and no money (settlement.md §1.2, §5); the weight is shown
            # when the group has one
            for col in ("group_mean_cost", "cost_ratio", "base_points", "points", "amount", "fund_amount"):
                rep.check(name, col, key, None, _num(r[col]))
            rep.check(name, "weight", key, c["weight"], _num(r["weight"]))
            continue
        for col in ("weight", "group_mean_cost", "cost_ratio", "base_points", "points"):
            rep.check(name, col, key, c[col], _num(r[col]))
        rep.check(name, "amount", key, c["amount"], _cents_or_none(r["amount"]))
        rep.check(name, "fund_amount", key, c["fund_amount"], _cents_or_none(r["fund_amount"]))


def compare_review(rep: Report, period: str, ours: list[dict], review: pd.DataFrame) -> None:
    """review.csv: the unpriced and special-review cases (settlement.md §1.2, policy.md)."""
    want = [c["id"] for c in ours if c["case_type"] in ("unpriced", "special_review")]
    got = list(review["id"])
    rep.check("review.csv", "ids (list)", period, want, got)
    listed = [c for c in ours if c["case_type"] in ("unpriced", "special_review")]
    for c, rid, reason, cost, share in zip(listed, review["id"], review["pricing_reason"], review["total_cost"],
                                           review["personal_share"]):
        rep.check("review.csv", "pricing_reason", f"{period} {rid}", c["pricing_reason"], reason)
        rep.check("review.csv", "total_cost", f"{period} {rid}", c["cost"], _cents_or_none(cost))
        rep.check("review.csv", "personal_share", f"{period} {rid}", c["shown_share"], _cents_or_none(share))


HOSP_MONEY = ("personal_share", "payment", "amount_due", "withheld", "paid", "cost", "unpriced_cost")
ANNUAL_MONEY = ("adjustment", "monthly_paid", "monthly_withheld", "balance")


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
        for col in money:
            rep.check(name, col, key, o.get(col), None if g.get(col) is None else text_cents(g[col]))
        for col in ("cases", "hospitals", "unpriced_cases"):
            rep.check(name, col, key, o[col], g.get(col))
        # float64 figures: the nearest float to the exact value (the docs do not say: A9)
        rep.check(name, "point_value", key, o["point_value_float"], g.get("point_value"))
        rep.check(name, "total_points", key, o["points"], g.get("total_points"))


def compare_reasons(rep: Report, name: str, cases: list[dict], summary: dict) -> None:
    counts = defaultdict(int)
    for c in cases:
        counts[c["pricing_reason"]] += 1
    rep.check(name, "reasons", name, dict(sorted(counts.items())), dict(sorted(summary.get("reasons", {}).items())))


LEDGER_CENTS = ("personal_share", "payment", "amount_due", "withheld", "paid", "cost", "unpriced_cost")


def compare_ledger(rep: Report, ledger: Path, months: dict, year_result: dict | None, year: str) -> None:
    con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        runs = {(p, k): rid for rid, p, k in con.execute(
            "select run_id, period, kind from runs where current = 1")}
        for (period, kind), rid in sorted(runs.items()):
            ours = months.get(period) if kind == "monthly" else year_result
            if ours is None:
                continue
            name = f"ledger {kind}"
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
                rep: Report | None = None) -> Report:
    """One ``drgdip settle PERIOD RECORDS`` run's outputs (cases, review, hospitals, summary)
    against the recomputation."""
    rep = rep or Report()
    policy = read_policy(policy_path)
    weights = pq.read_table(weights_path).to_pandas()
    benefits = pq.read_table(benefits_path).to_pandas() if benefits_path else None
    records = pq.read_table(records_path).to_pandas()
    month = recompute_month(records, benefits, weights, policy, period)
    out_dir = Path(out_dir)
    compare_cases(rep, period, month["cases"], pq.read_table(out_dir / "cases.parquet").to_pandas())
    compare_review(rep, period, month["cases"], _read_csv(out_dir / "review.csv"))
    hcsv = _read_csv(out_dir / "hospitals.csv")
    compare_hospitals(rep, "hospitals.csv (month)", month["hospitals"], hcsv)
    compare_month_point_value(rep, "hospitals.csv (month)", month, hcsv)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    compare_summary(rep, "summary.json (month)", month["summary"], summary)
    compare_reasons(rep, "summary.json (month)", month["cases"], summary)
    rep.months[period] = month
    return rep


def check_year(months: dict, policy_path, out_dir, year: str, rep: Report | None = None) -> Report:
    """One ``drgdip settle YEAR --final`` run's outputs against the recomputation from the
    recomputed months (``recompute_month`` results by period)."""
    rep = rep or Report()
    policy = read_policy(policy_path)
    if policy["region"]["form"] != "point":
        raise RuleNotCovered(f"rule region.form = {policy['region']['form']!r} (annual settlement) not covered")
    result = step_annual(months, policy, year)
    out_dir = Path(out_dir)
    compare_hospitals(rep, "hospitals.csv (year)", result["hospitals"], _read_csv(out_dir / "hospitals.csv"),
                      annual=True)
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    compare_summary(rep, "summary.json (year)", result["funds"], summary, annual=True)
    return rep


def check_demo(folder) -> Report:
    """Recompute the demo's settlement from its inputs and the docs; compare every output."""
    folder = Path(folder)
    policy = read_policy(folder / "policy.toml")
    weights = pq.read_table(folder / "weights.parquet").to_pandas()
    benefits_path = folder / "benefits.parquet"
    benefits = pq.read_table(benefits_path).to_pandas() if benefits_path.exists() else None
    rep = Report()
    months = {}
    settled = folder / "settled"
    periods = sorted(p.name for p in settled.iterdir() if len(p.name) == 7)
    years = sorted(p.name for p in settled.iterdir() if len(p.name) == 4)
    for period in periods:
        records = pq.read_table(folder / "data" / f"{period}.parquet").to_pandas()
        month = recompute_month(records, benefits, weights, policy, period)
        months[period] = month
        out = pq.read_table(settled / period / "cases.parquet").to_pandas()
        compare_cases(rep, period, month["cases"], out)
        compare_review(rep, period, month["cases"], _read_csv(settled / period / "review.csv"))
        hcsv = _read_csv(settled / period / "hospitals.csv")
        compare_hospitals(rep, "hospitals.csv (month)", month["hospitals"], hcsv)
        compare_month_point_value(rep, "hospitals.csv (month)", month, hcsv)
        summary = json.loads((settled / period / "summary.json").read_text(encoding="utf-8"))
        compare_summary(rep, "summary.json (month)", month["summary"], summary)
        compare_reasons(rep, "summary.json (month)", month["cases"], summary)
    year_result = None
    for year in years:
        in_year = {p: m for p, m in months.items() if p.startswith(year)}
        year_result = step_annual(in_year, policy, year)
        compare_hospitals(rep, "hospitals.csv (year)", year_result["hospitals"],
                          _read_csv(settled / year / "hospitals.csv"), annual=True)
        summary = json.loads((settled / year / "summary.json").read_text(encoding="utf-8"))
        compare_summary(rep, "summary.json (year)", year_result["funds"], summary, annual=True)
    if (folder / "ledger.db").exists():
        compare_ledger(rep, folder / "ledger.db", months, year_result, years[-1] if years else "")
    return rep


if __name__ == "__main__":
    report = check_demo(sys.argv[1] if len(sys.argv) > 1 else "demo")
    print(report.text())
    sys.exit(1 if report.total_differ else 0)
