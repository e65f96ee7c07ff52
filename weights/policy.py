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
from dataclasses import dataclass
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
STAY_PAYMENTS = ("proportional_capped", "normal", "review")
READMISSION_KEYS = ("adrg", "group", "principal_diagnosis")
READMISSION_PAYMENTS = ("flag_only", "halve_earlier", "second_unpaid")

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


@dataclass(frozen=True)
class RecordLimits:
    """病例数据校验: limits a record must meet to be priced."""
    los_min_days: float               # 住院天数 at least
    los_max_days: float               # 住院天数 at most


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


@dataclass(frozen=True)
class Settlement:
    withholding_share: float          # 质量保证金 share of the monthly amount due
    surplus_bands: tuple[Band, ...]   # 结余留用: share the hospital keeps, by surplus / payment
    overspend_bands: tuple[Band, ...]  # 超支分担: share the fund bears, by overspend / payment


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
        bound = "below" if key == "high_bands" else "up_to"
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


def parse_policy(data: dict, where: str = "policy", source: str = "") -> Policy:
    """Validate a policy given as a dict (the TOML parsed), laid over the defaults."""
    with _DEFAULTS.open("rb") as fh:
        merged = overlay(tomllib.load(fh), data)
    r = _Reader(where)
    sections = {"region", "funds", "budget", "rate", "coefficients", "deviation", "special_review",
                "records", "settlement", "weights", "incomplete_stays", "readmission"}
    r.known(merged, "", sections)
    for s in sections:
        r.table(merged, "", s)

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
    r.known(sr, "special_review", {"flag_column", "cost_multiple", "payment"})
    cost_multiple = r.number(sr, "special_review", "cost_multiple", 0.0)
    if 0 < cost_multiple <= max(b.value for b in high_bands):
        r.fail("special_review.cost_multiple", "must be 0 (off) or above every high-cost threshold k")
    special = SpecialReview(r.text(sr, "special_review", "flag_column"), cost_multiple,
                            r.choice(sr, "special_review", "payment", REVIEW_PAYMENTS))

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
                  incomplete_stays=parse_incomplete_stays(r, merged["incomplete_stays"]),
                  readmission=parse_readmission(r, merged["readmission"]), source=source, path=where)


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
    r.known(d, sec, {"days", "key", "adrg_chars", "diagnosis_chars", "same_hospital", "payment", "share"})
    same = d.get("same_hospital")
    if not isinstance(same, bool):
        r.fail(f"{sec}.same_hospital", f"must be true or false, got {same!r}")
    return Readmission(days=_whole(r, d, sec, "days", 0), key=r.choice(d, sec, "key", READMISSION_KEYS),
                       adrg_chars=_whole(r, d, sec, "adrg_chars", 1),
                       diagnosis_chars=_whole(r, d, sec, "diagnosis_chars", 0), same_hospital=same,
                       payment=r.choice(d, sec, "payment", READMISSION_PAYMENTS),
                       share=r.number(d, sec, "share", 0.0, 1.0))


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
