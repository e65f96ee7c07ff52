"""A region's payment policy (医保支付政策): one TOML file, read and validated here.

Every regional number (budgets, rates, coefficients, deviation thresholds, withholding,
surplus and overspend bands, weighting of history years, trimming) lives in the policy
file; this module only reads it, lays it over ``policy_defaults.toml`` and checks it.
A bad field stops with one line naming the file and the field. Field by field
documentation, with the Chinese terms: ``docs/policy.md``.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from drgdip.arrowio import InputError

FUNDS = ("employee", "resident")
FORMS = ("point", "rate")
HIGH_PAYMENTS = ("add_on", "actual", "cap", "none")
LOW_PAYMENTS = ("proportional", "deduction", "none")
GROUP_MEANS = ("table", "period")
REVIEW_PAYMENTS = ("actual", "normal", "hold")
TRIMS = ("sd", "percentile", "none")
SMALL_GROUP_RULES = ("adrg", "raw", "none")
RESERVE_CAPS = ("none", "budget", "budget_and_reserve")
PROJECTIONS = ("none", "policy", "history")
INDICATORS = ("cmi", "cost", "time")
INDEX_FORMS = ("per_group", "per_weight")     # [incentives] index_form: 消耗指数 group by group, or per unit of weight
SHORT_STAY_RULES = ("normal", "unpriced")
FFS_CLASSES = ("ambiguous", "ungroupable", "unweighted")
CODE_COLUMNS = ("drg", "code", "adrg", "group", "dip_group")   # a basic-groups file's code column, first found
STAY_PAYMENTS = ("proportional_capped", "normal", "review")
READMISSION_KEYS = ("adrg", "group", "principal_diagnosis")
READMISSION_PAYMENTS = ("flag_only", "halve_earlier", "second_unpaid", "combine")

_DEFAULTS = Path(__file__).with_name("policy_defaults.toml")
_PERIOD = re.compile(r"^\d{4}(-(0[1-9]|1[0-2]))?$")


class PolicyError(InputError):
    """A policy file that cannot be used; one line naming the field."""


@dataclass(frozen=True)
class Band:
    """One band of a piecewise rule: applies to values below ``below`` (None = the rest)."""
    below: float | None
    value: float


@dataclass(frozen=True)
class Deviation:
    """偏差病例: thresholds and how high- and low-cost cases are paid."""
    high_bands: tuple[Band, ...]      # k_high by weight band (高倍率界值)
    high_payment: str
    high_add_on_share: float
    high_cap: float
    low_k: float                      # 低倍率界值
    low_payment: str
    low_deduction: float
    group_mean: str


@dataclass(frozen=True)
class SpecialReview:
    """特病单议: which cases are set aside for review and how they are paid meanwhile."""
    flag_column: str
    cost_multiple: float
    payment: str
    low_cost_multiple: float = 0.0             # below this multiple of the group mean: review (0 = off)
    los_days_above: float = 0.0                # stays longer than this: review (0 = off)
    new_technology_codes: tuple[str, ...] = ()  # 新技术 procedure codes
    new_technology_column: str = "new_technology"
    min_group_cases: int = 0                   # groups with fewer priceable cases in the period (0 = off)
    review_groups: bool = True                 # the weight table's review_group flag (单议病组)
    ungroupable: bool = False                  # ungroupable cases go to review
    quota_share: float = 1.0                   # region-wide quota (share of the period's cases)
    hospital_quota_share: float = 1.0          # per-hospital quota


@dataclass(frozen=True)
class RecordLimits:
    """病例数据校验: limits a record must meet to be priced."""
    los_min_days: float               # 住院天数 at least
    los_max_days: float               # 住院天数 at most


@dataclass(frozen=True)
class Ward:
    """One per-diem ward (按床日付费病房): which cases it takes and its day rate in points."""
    name: str
    points_per_day: float             # 床日点数
    departments: tuple[str, ...]      # the record's dept, exactly
    diagnosis_prefixes: tuple[str, ...]   # principal diagnosis code starts with one of these
    groups: tuple[str, ...]           # group code starts with one of these (an ADRG matches its DRGs)
    longer_than_days: float           # and the stay is longer than this (0 = any length)


@dataclass(frozen=True)
class PerDiem:
    """按床日付费: wards in order of precedence (the first that matches prices the case)."""
    wards: tuple[Ward, ...] = ()
    short_stay_days: float = 0.0      # stays of at most this many days are not paid by bed day (0 = off)
    short_stay: str = "normal"        # normal: priced as if no ward matched; unpriced: listed with a reason
    apply_coefficient: bool = False   # × the case's coefficient (医疗机构系数)


@dataclass(frozen=True)
class FeeForService:
    """按项目付费 fallback: cases of these classes get points from their cost."""
    classes: tuple[str, ...] = ()     # of FFS_CLASSES
    points_per_yuan: float = 0.0      # points = cost × points_per_yuan × discount, or
    yuan_per_point: float = 0.0       # points = cost ÷ yuan_per_point × discount (exactly one > 0)
    discount: float = 1.0             # 折算系数
    apply_coefficient: bool = False
    ambiguous_suffixes: tuple[str, ...] = ("QY",)   # group codes ending so are ambiguous (歧义组)

    def points_of(self, cost):
        """Points for a cost (yuan, a float or numpy array), before any coefficient."""
        if self.points_per_yuan > 0:
            return cost * self.points_per_yuan * self.discount
        return cost / self.yuan_per_point * self.discount


@dataclass(frozen=True)
class BasicGroups:
    """基础病组 / 基层病组: groups paid at one coefficient whatever the hospital's level."""
    enabled: bool = False
    coefficient: float = 1.0
    codes: tuple[str, ...] = ()       # group codes; a shorter code (an ADRG) matches every group starting with it
    table_column: bool = True         # also the weight table's basic_group column, when it has one

    def matches(self, code: str) -> bool:
        return any(code.startswith(c) for c in self.codes)


@dataclass(frozen=True)
class IncompleteStays:
    """非完整住院: transfers, deaths, discharges against advice (离院方式) and short stays (低住院天数)."""
    dispositions: tuple[str, ...] = ()        # 离院方式 codes priced by ``payment``; empty = off
    payment: str = "proportional_capped"
    short_stay_days: float = 0.0              # 住院天数 below this is a short stay; 0 = off
    short_stay_payment: str = "proportional_capped"


@dataclass(frozen=True)
class Readmission:
    """再入院: a stay admitted within ``days`` of an earlier discharge of the same patient."""
    days: int = 0                             # 0 = off
    key: str = "adrg"                         # what must be the same: adrg | group | principal_diagnosis
    adrg_chars: int = 3                       # ADRG = the group code's first characters (no adrg column)
    diagnosis_chars: int = 0                  # principal_diagnosis: characters compared (0 = all)
    same_hospital: bool = True
    payment: str = "flag_only"
    share: float = 0.5                        # halve_earlier: share of the earlier stay's points paid
    across_periods: bool = True               # pair with the earlier periods' stays kept in the ledger


@dataclass(frozen=True)
class Settlement:
    withholding_share: float          # 质量保证金 share of the monthly amount due
    surplus_bands: tuple[Band, ...]   # 结余留用: share the hospital keeps, by surplus / payment
    overspend_bands: tuple[Band, ...]  # 超支分担: share the fund bears, by overspend / payment


@dataclass(frozen=True)
class QualityBand:
    """质量保证金返还: refund share for assessment scores below ``below`` (None = the rest);
    ``refund`` a share, or None for proportional (score / 100)."""
    below: float | None
    refund: float | None


@dataclass(frozen=True)
class FundLimits:
    """The fund's limits and the year's clearing (docs/policy.md [reserve] … [incentives])."""
    reserve_share: float = 0.0                          # 调剂金比例 of the year's budget
    reserve_cap: str = "none"                           # 年度支付上限: none | budget | budget_and_reserve
    advance_share: float = 1.0                          # 月度预拨比例
    projected: str = "none"                             # 预算点值: none | policy | history
    projected_points: dict = field(default_factory=dict)          # fund → year → points
    projected_personal_share: dict = field(default_factory=dict)  # fund → year → yuan
    projected_growth: float = 0.0                       # history: growth of the previous year's points
    quality_bands: tuple[QualityBand, ...] = (QualityBand(None, 1.0),)   # 考核得分 → 返还比例
    quality_missing_refund: float = 1.0                 # a hospital without a score
    incentive_bands: dict = field(default_factory=dict)  # indicator → tuple[Band] (激励系数)
    index_form: str = "per_group"                       # 消耗指数: per_group (DRG 绩效评价) | per_weight

    @property
    def quality_on(self) -> bool:
        return self.quality_bands != (QualityBand(None, 1.0),) or self.quality_missing_refund != 1.0


@dataclass(frozen=True)
class WeightRules:
    year_weights: tuple[float, ...]   # oldest → newest
    trim: str
    trim_sd: float
    trim_percentiles: tuple[float, float]
    min_cases: int
    small_group_rule: str


@dataclass(frozen=True)
class Policy:
    name: str
    form: str                                  # point 点数法 | rate 费率法
    base_points: float                         # 基准点数
    fund_labels: dict[str, tuple[str, ...]]
    budget: dict[str, dict[str, float]]        # fund → period → yuan (统筹基金预算)
    rate: dict[str, dict[str, float]]          # fund → period → yuan per weight (费率)
    coefficient_default: float
    coefficient_level: dict[str, float]
    hospital_level: dict[str, str]
    coefficient_hospital: dict[str, float]
    deviation: Deviation
    special_review: SpecialReview
    settlement: Settlement
    weights: WeightRules
    records: RecordLimits = RecordLimits(1.0, 365.0)
    fund_limits: FundLimits = FundLimits()
    dip_settlement: "DipSettlement | None" = None   # [dip_settlement] (parse_dip_settlement)
    per_diem: PerDiem = PerDiem()
    fee_for_service: FeeForService = FeeForService()
    basic_groups: BasicGroups = BasicGroups()
    incomplete_stays: IncompleteStays = IncompleteStays()
    readmission: Readmission = Readmission()
    source: str = ""                           # the policy file's text, as read
    path: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def budget_for(self, fund: str, period: str) -> float:
        """The fund's budget for a period ("YYYY-MM" or "YYYY"), or a PolicyError."""
        try:
            return self.budget[fund][period]
        except KeyError:
            raise PolicyError(f"{self.path or 'policy'}: budget.{fund} has no entry for period {period}") from None

    def has_money_for(self, fund: str, period: str) -> bool:
        """Whether the policy gives the fund a budget (or, in the rate form, a rate) for the period."""
        if period in self.budget.get(fund, {}):
            return True
        return self.form == "rate" and self.rate_for(fund, period) is not None

    def rate_for(self, fund: str, period: str) -> float | None:
        """The published rate for a period (month first, then its year), or None."""
        table = self.rate.get(fund, {})
        if period in table:
            return table[period]
        return table.get(period[:4])

    def coefficient(self, hospital_id: str) -> float:
        """医疗机构系数: the hospital's own, else its level's, else the default."""
        if hospital_id in self.coefficient_hospital:
            return self.coefficient_hospital[hospital_id]
        level = self.hospital_level.get(hospital_id)
        if level is not None:
            return self.coefficient_level[level]
        return self.coefficient_default

    def fund_of_label(self) -> dict[str, str]:
        """record label (lower case) → fund."""
        return {lab.lower(): f for f, labels in self.fund_labels.items() for lab in labels}


# ---------------------------------------------------------------- reading

def overlay(base: dict, over: dict) -> dict:
    """BASE with OVER laid over it, table by table (a policy file over its defaults)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _Reader:
    def __init__(self, where: str):
        self.where = where

    def fail(self, name: str, msg: str):
        raise PolicyError(f"{self.where}: {name} {msg}")

    def number(self, d: dict, sec: str, key: str, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> float:
        name = f"{sec}.{key}" if sec else key
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(name, f"must be a number, got {v!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            self.fail(name, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            self.fail(name, f"must be <= {hi}, got {v}")
        return float(v)

    def choice(self, d: dict, sec: str, key: str, choices: tuple[str, ...]) -> str:
        v = d.get(key)
        if v not in choices:
            self.fail(f"{sec}.{key}", f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def text(self, d: dict, sec: str, key: str) -> str:
        v = d.get(key)
        if not isinstance(v, str):
            self.fail(f"{sec}.{key}", f"must be text, got {v!r}")
        return v

    def flag(self, d: dict, sec: str, key: str) -> bool:
        v = d.get(key)
        if not isinstance(v, bool):
            self.fail(f"{sec}.{key}", f"must be true or false, got {v!r}")
        return v

    def texts(self, d: dict, sec: str, key: str) -> tuple[str, ...]:
        v = d.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            self.fail(f"{sec}.{key}", f"must be a list of non-empty texts, got {v!r}")
        return tuple(x.strip() for x in v)

    def table(self, d: dict, sec: str, key: str) -> dict:
        v = d.get(key, {})
        if not isinstance(v, dict):
            self.fail(f"{sec}.{key}", "must be a table")
        return v

    def known(self, d: dict, sec: str, keys: set[str]) -> None:
        for k in d:
            if k not in keys:
                self.fail(f"{sec}.{k}" if sec else k, f"is not a policy field (known here: {', '.join(sorted(keys))})")

    def bands(self, d: dict, sec: str, key: str, value_key: str, lo: float, hi: float | None) -> tuple[Band, ...]:
        name = f"{sec}.{key}"
        v = d.get(key)
        bound = "below" if key == "high_bands" or sec == "incentives" else "up_to"
        if not isinstance(v, list) or not v:
            self.fail(name, "must be a non-empty list of tables")
        out, last = [], -math.inf
        for i, item in enumerate(v):
            here = f"{name}[{i}]"
            if not isinstance(item, dict):
                self.fail(here, "must be a table such as { " + bound + " = 1.0, " + value_key + " = 2.0 }")
            self.known(item, here, {bound, value_key})
            b = item.get(bound)
            if b is None and i != len(v) - 1:
                self.fail(here, f"needs '{bound}': only the last band is open-ended")
            if b is not None:
                b = self.number(item, here, bound)
                if b <= last:
                    self.fail(here, f"{bound} must increase from band to band")
                last = b
            out.append(Band(b, self.number(item, here, value_key, lo, hi)))
        if out[-1].below is not None:
            self.fail(name, f"the last band must have no '{bound}' (it covers the rest)")
        return tuple(out)

    def periods(self, d: dict, sec: str, positive: bool) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for fund, table in d.items():
            if fund not in FUNDS:
                self.fail(f"{sec}.{fund}", f"is not a fund (use {' or '.join(FUNDS)})")
            if not isinstance(table, dict):
                self.fail(f"{sec}.{fund}", 'must be a table of period = amount, e.g. "2026-10" = 85000000.00')
            out[fund] = {}
            for period, amount in table.items():
                if not _PERIOD.match(period):
                    self.fail(f"{sec}.{fund}.{period}", 'is not a period: use "YYYY-MM" for a month or "YYYY" for a year')
                out[fund][period] = self.number(table, f"{sec}.{fund}", period, 0.0, lo_open=positive)
        return out


def _special_review(r: _Reader, sr: dict, high_bands, low_k: float) -> SpecialReview:
    """[special_review] 特例单议: triggers, quota, payment meanwhile (docs/policy.md)."""
    sec = "special_review"
    r.known(sr, sec, {"flag_column", "cost_multiple", "payment", "low_cost_multiple", "los_days_above",
                      "new_technology_codes", "new_technology_column", "min_group_cases", "review_groups",
                      "ungroupable", "quota_share", "hospital_quota_share"})
    cost_multiple = r.number(sr, sec, "cost_multiple", 0.0)
    if 0 < cost_multiple <= max(b.value for b in high_bands):
        r.fail("special_review.cost_multiple", "must be 0 (off) or above every high-cost threshold k")
    low = r.number(sr, sec, "low_cost_multiple", 0.0)
    if low >= low_k and low > 0:
        r.fail("special_review.low_cost_multiple", f"must be 0 (off) or below deviation.low_k ({low_k})")
    codes = sr.get("new_technology_codes")
    if not isinstance(codes, list) or not all(isinstance(c, str) and c.strip() for c in codes):
        r.fail("special_review.new_technology_codes", f"must be a list of procedure codes, got {codes!r}")
    min_cases = r.number(sr, sec, "min_group_cases", 0.0)
    if min_cases != int(min_cases):
        r.fail("special_review.min_group_cases", f"must be a whole number, got {min_cases}")
    flags = {}
    for key in ("review_groups", "ungroupable"):
        if not isinstance(sr.get(key), bool):
            r.fail(f"special_review.{key}", f"must be true or false, got {sr.get(key)!r}")
        flags[key] = sr[key]
    return SpecialReview(
        r.text(sr, sec, "flag_column"), cost_multiple, r.choice(sr, sec, "payment", REVIEW_PAYMENTS),
        low_cost_multiple=low, los_days_above=r.number(sr, sec, "los_days_above", 0.0),
        new_technology_codes=tuple(c.strip() for c in codes),
        new_technology_column=r.text(sr, sec, "new_technology_column"), min_group_cases=int(min_cases),
        review_groups=flags["review_groups"], ungroupable=flags["ungroupable"],
        quota_share=r.number(sr, sec, "quota_share", 0.0, 1.0),
        hospital_quota_share=r.number(sr, sec, "hospital_quota_share", 0.0, 1.0))


def parse_policy(data: dict, where: str = "policy", source: str = "") -> Policy:
    """Validate a policy given as a dict (the TOML parsed), laid over the defaults."""
    with _DEFAULTS.open("rb") as fh:
        merged = overlay(tomllib.load(fh), data)
    r = _Reader(where)
    sections = {"region", "funds", "budget", "rate", "coefficients", "deviation", "special_review",
                "records", "settlement", "weights", "reserve", "advance", "point_value", "quality", "incentives",
                "dip", "dip_settlement", "weight_table",
                "per_diem", "fee_for_service", "basic_groups",
                "incomplete_stays", "readmission"}
    r.known(merged, "", sections)
    for s in sections:
        r.table(merged, "", s)
    weight_table_map(merged["weight_table"], where)

    reg = merged["region"]
    r.known(reg, "region", {"name", "form", "base_points"})
    name = r.text(reg, "region", "name")
    form = r.choice(reg, "region", "form", FORMS)
    base = r.number(reg, "region", "base_points", 0.0, lo_open=True)

    funds = merged["funds"]
    r.known(funds, "funds", set(FUNDS))
    labels: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for f in FUNDS:
        v = funds.get(f)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            r.fail(f"funds.{f}", "must be a list of labels (text)")
        for lab in v:
            if seen.setdefault(lab.lower(), f) != f:
                r.fail(f"funds.{f}", f"label {lab!r} is also a label of funds.{seen[lab.lower()]}")
        labels[f] = tuple(v)

    budget = r.periods(merged["budget"], "budget", positive=False)
    rate = r.periods(merged["rate"], "rate", positive=True)
    if form == "point" and not budget:
        r.fail("budget", "is missing: the point form needs a budget per fund and period")
    if form == "rate" and not rate and not budget:
        r.fail("rate", "is missing: the rate form needs a published rate or a budget per fund and period")

    co = merged["coefficients"]
    r.known(co, "coefficients", {"default", "level", "hospital_level", "hospital"})
    co_default = r.number(co, "coefficients", "default", 0.0, lo_open=True)
    co_level = {k: r.number(co["level"], "coefficients.level", k, 0.0, lo_open=True)
                for k in r.table(co, "coefficients", "level")}
    hosp_level = r.table(co, "coefficients", "hospital_level")
    for h, lev in hosp_level.items():
        if not isinstance(lev, str) or lev not in co_level:
            r.fail(f"coefficients.hospital_level.{h}", f"names level {lev!r}, which coefficients.level does not define")
    co_hosp = {k: r.number(co["hospital"], "coefficients.hospital", k, 0.0, lo_open=True)
               for k in r.table(co, "coefficients", "hospital")}

    dv = merged["deviation"]
    r.known(dv, "deviation", {"high_bands", "high_payment", "high_add_on_share", "high_cap", "low_k",
                              "low_payment", "low_deduction", "group_mean"})
    high_bands = r.bands(dv, "deviation", "high_bands", "k", 1.0, None)
    low_k = r.number(dv, "deviation", "low_k", 0.0, 1.0)
    if low_k >= min(b.value for b in high_bands):
        r.fail("deviation.low_k", "must be below every high-cost threshold k")
    deviation = Deviation(
        high_bands=high_bands,
        high_payment=r.choice(dv, "deviation", "high_payment", HIGH_PAYMENTS),
        high_add_on_share=r.number(dv, "deviation", "high_add_on_share", 0.0, 1.0),
        high_cap=r.number(dv, "deviation", "high_cap", 1.0),
        low_k=low_k,
        low_payment=r.choice(dv, "deviation", "low_payment", LOW_PAYMENTS),
        low_deduction=r.number(dv, "deviation", "low_deduction", 0.0, 1.0),
        group_mean=r.choice(dv, "deviation", "group_mean", GROUP_MEANS),
    )

    sr = merged["special_review"]
    special = _special_review(r, sr, high_bands, low_k)

    st = merged["settlement"]
    r.known(st, "settlement", {"withholding_share", "surplus_bands", "overspend_bands"})
    settlement = Settlement(
        withholding_share=r.number(st, "settlement", "withholding_share", 0.0, 1.0),
        surplus_bands=r.bands(st, "settlement", "surplus_bands", "hospital_keeps", 0.0, 1.0),
        overspend_bands=r.bands(st, "settlement", "overspend_bands", "fund_bears", 0.0, 1.0),
    )

    rc = merged["records"]
    r.known(rc, "records", {"los_min_days", "los_max_days"})
    los_min = r.number(rc, "records", "los_min_days", 0.0)
    los_max = r.number(rc, "records", "los_max_days", los_min)
    records = RecordLimits(los_min, los_max)

    w = merged["weights"]
    r.known(w, "weights", {"year_weights", "trim", "trim_sd", "trim_percentiles", "min_cases", "small_group_rule"})
    yw = w.get("year_weights")
    if not isinstance(yw, list) or not yw:
        r.fail("weights.year_weights", "must be a non-empty list of numbers, oldest year first, e.g. [1, 2, 7]")
    year_weights = tuple(r.number({"x": x}, "weights.year_weights", "x", 0.0) for x in yw)
    if sum(year_weights) <= 0:
        r.fail("weights.year_weights", "must not be all zero")
    tp = w.get("trim_percentiles")
    if not isinstance(tp, list) or len(tp) != 2:
        r.fail("weights.trim_percentiles", "must be [low, high] percentiles, e.g. [2.5, 97.5]")
    lo_p = r.number({"low": tp[0]}, "weights.trim_percentiles", "low", 0.0, 100.0)
    hi_p = r.number({"high": tp[1]}, "weights.trim_percentiles", "high", 0.0, 100.0)
    if lo_p >= hi_p:
        r.fail("weights.trim_percentiles", "low must be below high")
    mc = w.get("min_cases")
    if isinstance(mc, bool) or not isinstance(mc, int) or mc < 1:
        r.fail("weights.min_cases", f"must be a whole number >= 1, got {mc!r}")
    rules = WeightRules(year_weights, r.choice(w, "weights", "trim", TRIMS),
                        r.number(w, "weights", "trim_sd", 0.0, lo_open=True), (lo_p, hi_p), mc,
                        r.choice(w, "weights", "small_group_rule", SMALL_GROUP_RULES))

    return Policy(name=name, form=form, base_points=base, fund_labels=labels, budget=budget, rate=rate,
                  coefficient_default=co_default, coefficient_level=co_level,
                  hospital_level=dict(hosp_level), coefficient_hospital=co_hosp, deviation=deviation,
                  special_review=special, settlement=settlement, weights=rules, records=records,
                  fund_limits=parse_fund_limits(merged, r), **parse_methods(merged, r, where),
                  incomplete_stays=parse_incomplete_stays(r, merged["incomplete_stays"]),
                  readmission=parse_readmission(r, merged["readmission"]),
                  dip_settlement=parse_dip_settlement(merged["dip_settlement"], r), source=source, path=where)


def parse_fund_limits(merged: dict, r: _Reader) -> FundLimits:
    """[reserve] 调剂金, [advance] 月度预拨, [point_value] 预算点值, [quality] 质量保证金返还,
    [incentives] 激励系数 (docs/policy.md)."""
    rs = merged["reserve"]
    r.known(rs, "reserve", {"share", "cap"})
    ad = merged["advance"]
    r.known(ad, "advance", {"share"})
    pv = merged["point_value"]
    r.known(pv, "point_value", {"projected", "growth", "projected_points", "projected_personal_share"})
    projected = r.choice(pv, "point_value", "projected", PROJECTIONS)
    pts = r.periods(r.table(pv, "point_value", "projected_points"), "point_value.projected_points", positive=True)
    pps = r.periods(r.table(pv, "point_value", "projected_personal_share"), "point_value.projected_personal_share",
                    positive=False)
    for sec, tab in (("projected_points", pts), ("projected_personal_share", pps)):
        for f, t in tab.items():
            for period in t:
                if len(period) != 4:
                    r.fail(f"point_value.{sec}.{f}.{period}", 'is not a year: use "YYYY"')
    q = merged["quality"]
    r.known(q, "quality", {"bands", "missing_refund"})
    bands = q.get("bands")
    if not isinstance(bands, list) or not bands:
        r.fail("quality.bands", "must be a non-empty list of tables such as { below = 60, refund = 0.0 }")
    qb, last = [], -math.inf
    for i, item in enumerate(bands):
        here = f"quality.bands[{i}]"
        if not isinstance(item, dict):
            r.fail(here, "must be a table such as { below = 90, refund = \"proportional\" }")
        r.known(item, here, {"below", "refund"})
        b = item.get("below")
        if b is None and i != len(bands) - 1:
            r.fail(here, "needs 'below': only the last band is open-ended")
        if b is not None:
            b = r.number(item, here, "below", 0.0, 100.0)
            if b <= last:
                r.fail(here, "below must increase from band to band")
            last = b
        refund = None if item.get("refund") == "proportional" else r.number(item, here, "refund", 0.0, 1.0)
        qb.append(QualityBand(b, refund))
    if qb[-1].below is not None:
        r.fail("quality.bands", "the last band must have no 'below' (it covers the rest)")
    inc = merged["incentives"]
    r.known(inc, "incentives", {f"{k}_bands" for k in INDICATORS} | {"index_form"})
    incentive = {k: r.bands(inc, "incentives", f"{k}_bands", "coefficient", 0.0, None)
                 for k in INDICATORS if f"{k}_bands" in inc}
    incentive = {k: v for k, v in incentive.items() if v != (Band(None, 1.0),)}
    return FundLimits(
        reserve_share=r.number(rs, "reserve", "share", 0.0, 1.0),
        reserve_cap=r.choice(rs, "reserve", "cap", RESERVE_CAPS),
        advance_share=r.number(ad, "advance", "share", 0.0, 1.0),
        projected=projected, projected_points=pts, projected_personal_share=pps,
        projected_growth=r.number(pv, "point_value", "growth", -1.0),
        quality_bands=tuple(qb), quality_missing_refund=r.number(q, "quality", "missing_refund", 0.0, 1.0),
        incentive_bands=incentive, index_form=r.choice(inc, "incentives", "index_form", INDEX_FORMS))


def weight_table_map(section: dict, where: str = "policy") -> dict:
    """The policy's ``[weight_table]`` column map for official weight tables (官方权重表), checked
    (PolicyError naming the field); {} when the policy has none. Used by ``drgdip weights
    import --region-columns POLICY`` (drgdip.weights.official_tables)."""
    from drgdip.weights.official_tables import check_column_map
    try:
        return check_column_map(section, where)
    except PolicyError:
        raise
    except InputError as exc:
        raise PolicyError(str(exc)) from None


def parse_methods(merged: dict, r: _Reader, where: str) -> dict:
    """The payment-method sections (多元复合式支付): ``[per_diem]``, ``[fee_for_service]``,
    ``[basic_groups]``, as Policy keyword arguments (docs/policy.md)."""
    pd = merged["per_diem"]
    r.known(pd, "per_diem", {"wards", "short_stay_days", "short_stay", "apply_coefficient"})
    wards_in = pd.get("wards", [])
    if not isinstance(wards_in, list):
        r.fail("per_diem.wards", "must be a list of tables such as { name = \"精神科\", points_per_day = 30.0, "
               "departments = [\"精神科\"] }")
    wards, names = [], set()
    for i, w in enumerate(wards_in):
        here = f"per_diem.wards[{i}]"
        if not isinstance(w, dict):
            r.fail(here, "must be a table such as { name = \"精神科\", points_per_day = 30.0, departments = [\"精神科\"] }")
        r.known(w, here, {"name", "points_per_day", "departments", "diagnosis_prefixes", "groups", "longer_than_days"})
        name = r.text(w, here, "name")
        if not name.strip() or name in names:
            r.fail(f"{here}.name", f"must be a non-empty name of its own, got {name!r}")
        names.add(name)
        ward = Ward(name=name, points_per_day=r.number(w, here, "points_per_day", 0.0, lo_open=True),
                    departments=r.texts(w, here, "departments"),
                    diagnosis_prefixes=tuple(x.upper() for x in r.texts(w, here, "diagnosis_prefixes")),
                    groups=r.texts(w, here, "groups"),
                    longer_than_days=r.number(w, here, "longer_than_days", 0.0) if "longer_than_days" in w else 0.0)
        if not (ward.departments or ward.diagnosis_prefixes or ward.groups or ward.longer_than_days > 0):
            r.fail(here, "matches no case: give departments, diagnosis_prefixes, groups and/or longer_than_days")
        wards.append(ward)
    per_diem = PerDiem(tuple(wards), r.number(pd, "per_diem", "short_stay_days", 0.0),
                       r.choice(pd, "per_diem", "short_stay", SHORT_STAY_RULES),
                       r.flag(pd, "per_diem", "apply_coefficient"))

    ff = merged["fee_for_service"]
    r.known(ff, "fee_for_service", {"classes", "points_per_yuan", "yuan_per_point", "discount",
                                    "apply_coefficient", "ambiguous_suffixes"})
    classes = r.texts(ff, "fee_for_service", "classes")
    for c in classes:
        if c not in FFS_CLASSES:
            r.fail("fee_for_service.classes", f"names {c!r}; use some of {', '.join(FFS_CLASSES)}")
    ppy = r.number(ff, "fee_for_service", "points_per_yuan", 0.0)
    ypp = r.number(ff, "fee_for_service", "yuan_per_point", 0.0)
    if classes and (ppy > 0) == (ypp > 0):
        r.fail("fee_for_service", "needs exactly one of points_per_yuan and yuan_per_point above 0 "
               f"when classes is not empty (got {ppy} and {ypp})")
    ffs = FeeForService(classes, ppy, ypp, r.number(ff, "fee_for_service", "discount", 0.0, lo_open=True),
                        r.flag(ff, "fee_for_service", "apply_coefficient"),
                        tuple(x.upper() for x in r.texts(ff, "fee_for_service", "ambiguous_suffixes")))

    bg = merged["basic_groups"]
    r.known(bg, "basic_groups", {"enabled", "coefficient", "codes", "file", "column", "table_column"})
    codes = list(r.texts(bg, "basic_groups", "codes"))
    file = r.text(bg, "basic_groups", "file")
    column = r.text(bg, "basic_groups", "column")
    if file:
        codes += _basic_group_file(file, column, where, r)
    basic = BasicGroups(r.flag(bg, "basic_groups", "enabled"),
                        r.number(bg, "basic_groups", "coefficient", 0.0, lo_open=True),
                        tuple(dict.fromkeys(codes)), r.flag(bg, "basic_groups", "table_column"))
    return {"per_diem": per_diem, "fee_for_service": ffs, "basic_groups": basic}


def _basic_group_file(file: str, column: str, where: str, r: _Reader) -> list[str]:
    """The group codes of a basic-groups CSV (UTF-8), a path relative to the policy file."""
    import csv
    p = Path(file)
    if not p.is_absolute():
        base = Path(where).parent if where not in ("", "policy") else Path(".")
        p = base / p
    if not p.is_file():
        r.fail("basic_groups.file", f"names {file!r}: no such file ({p})")
    try:
        with p.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
            header = [h.strip() for h in (rows[0].keys() if rows else [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        r.fail("basic_groups.file", f"{p} is not a readable UTF-8 CSV: {exc}")
    col = column or next((c for c in CODE_COLUMNS if c in header), "")
    if not col or col not in header:
        r.fail("basic_groups.column" if column else "basic_groups.file",
               f"{p} has no code column {column or ' / '.join(CODE_COLUMNS)} (columns: {', '.join(header)})")
    codes = [(row.get(col) or "").strip() for row in rows]
    if not any(codes):
        r.fail("basic_groups.file", f"{p} lists no group codes in column {col}")
    return [c for c in codes if c]


def _whole(r: _Reader, d: dict, sec: str, key: str, lo: int) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        r.fail(f"{sec}.{key}", f"must be a whole number >= {lo}, got {v!r}")
    return v


def parse_incomplete_stays(r: _Reader, d: dict) -> IncompleteStays:
    """[incomplete_stays] 非完整住院 (docs/policy.md)."""
    sec = "incomplete_stays"
    r.known(d, sec, {"dispositions", "payment", "short_stay_days", "short_stay_payment"})
    disp = d.get("dispositions")
    if not isinstance(disp, list) or not all(isinstance(x, str) and x.strip() for x in disp):
        r.fail(f"{sec}.dispositions", f'must be a list of 离院方式 codes (text), e.g. ["2", "4", "5"]; got {disp!r}')
    return IncompleteStays(tuple(x.strip() for x in disp), r.choice(d, sec, "payment", STAY_PAYMENTS),
                           r.number(d, sec, "short_stay_days", 0.0),
                           r.choice(d, sec, "short_stay_payment", STAY_PAYMENTS))


def parse_readmission(r: _Reader, d: dict) -> Readmission:
    """[readmission] 再入院 (docs/policy.md)."""
    sec = "readmission"
    r.known(d, sec, {"days", "key", "adrg_chars", "diagnosis_chars", "same_hospital", "payment", "share",
                     "across_periods"})
    same, across = d.get("same_hospital"), d.get("across_periods", True)
    for name, v in (("same_hospital", same), ("across_periods", across)):
        if not isinstance(v, bool):
            r.fail(f"{sec}.{name}", f"must be true or false, got {v!r}")
    return Readmission(days=_whole(r, d, sec, "days", 0), key=r.choice(d, sec, "key", READMISSION_KEYS),
                       adrg_chars=_whole(r, d, sec, "adrg_chars", 1),
                       diagnosis_chars=_whole(r, d, sec, "diagnosis_chars", 0), same_hospital=same,
                       payment=r.choice(d, sec, "payment", READMISSION_PAYMENTS),
                       share=r.number(d, sec, "share", 0.0, 1.0), across_periods=across)


def read_policy_file(path: str | os.PathLike, error=None) -> tuple[dict, str]:
    """(the TOML parsed, its text) of a policy file; ``error`` (default PolicyError) with a
    one-line message when the file is missing or not TOML."""
    error = error or PolicyError
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: no such policy file")
    text = p.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{p}: not valid TOML: {exc}") from None


def load_policy(path: str | os.PathLike) -> Policy:
    """Read and validate a policy TOML file (PolicyError with a one-line message if unusable)."""
    data, text = read_policy_file(path)
    return parse_policy(data, str(Path(path)), text)


def band_value(bands: tuple[Band, ...], x):
    """The band value for each x (numpy array): the first band with x < below, else the last."""
    import numpy as np
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, bands[-1].value)
    for b in reversed(bands[:-1]):
        out = np.where(x < b.below, b.value, out)
    return out


# ---------------------------------------------------------------- [dip_settlement]

DIP_POINT_VALUES = ("settlement", "budget_personal")
DIP_POOLS = ("shared", "separate")


@dataclass(frozen=True)
class DipSettlement:
    """[dip_settlement]: settling DIP (按病种分值付费) cases, the DIP 技术规范's forms (docs/policy.md)."""
    point_value: str                     # settlement 结算点值 = budget ÷ reimbursement ratio ÷ Σ points | budget_personal
    reimbursement_ratio: dict[str, float]  # fund → 统筹基金实际报销比例
    high_k: float                        # 高倍率: cost above high_k × reference mean cost
    high_payment: str
    high_add_on_share: float
    low_k: float                         # 低倍率: cost below low_k × reference mean cost
    low_payment: str
    reference_means: str                 # 上一年度同级别定点医疗机构次均费用 file ("" → the catalogue's mean_cost)
    hospitals: tuple[str, ...]           # hospitals settled by DIP where the region settles both methods
    pool: str                            # shared 同一点数池 | separate 分别结算
    points_factor: float                 # DRG points per DIP point in a shared pool (折算系数)


def parse_dip_settlement(d: dict, r: _Reader) -> DipSettlement:
    """Validate the [dip_settlement] table (laid over its defaults)."""
    sec = "dip_settlement"
    r.known(d, sec, {"point_value", "reimbursement_ratio", "high_k", "high_payment", "high_add_on_share",
                     "low_k", "low_payment", "reference_means", "hospitals", "pool", "points_factor"})
    ratio_t = r.table(d, sec, "reimbursement_ratio")
    for f in ratio_t:
        if f not in FUNDS:
            r.fail(f"{sec}.reimbursement_ratio.{f}", f"is not a fund (use {' or '.join(FUNDS)})")
    ratio = {f: r.number(ratio_t, f"{sec}.reimbursement_ratio", f, 0.0, 1.0, lo_open=True) for f in sorted(ratio_t)}
    high_k = r.number(d, sec, "high_k", 1.0)
    low_k = r.number(d, sec, "low_k", 0.0, 1.0)
    if low_k >= high_k:
        r.fail(f"{sec}.low_k", "must be below high_k")
    hosp = d.get("hospitals")
    if not isinstance(hosp, list) or not all(isinstance(h, str) and h for h in hosp):
        r.fail(f"{sec}.hospitals", f"must be a list of hospital ids (text), got {hosp!r}")
    ref = r.text(d, sec, "reference_means")
    return DipSettlement(
        point_value=r.choice(d, sec, "point_value", DIP_POINT_VALUES), reimbursement_ratio=ratio,
        high_k=high_k, high_payment=r.choice(d, sec, "high_payment", HIGH_PAYMENTS),
        high_add_on_share=r.number(d, sec, "high_add_on_share", 0.0, 1.0),
        low_k=low_k, low_payment=r.choice(d, sec, "low_payment", LOW_PAYMENTS),
        reference_means=ref, hospitals=tuple(sorted(set(hosp))), pool=r.choice(d, sec, "pool", DIP_POOLS),
        points_factor=r.number(d, sec, "points_factor", 0.0, lo_open=True))
