"""The patient's side of a stay (三重制度综合保障): basic insurance (inpatient, and outpatient
chronic/special disease 门诊慢特病), critical-illness insurance (for employees its counterpart, the
large-claim top-up 职工大额医疗费用补助) and medical assistance, for one stay and for a year of stays
per person.

API:

``load_benefit_policy(path=None) -> BenefitPolicy`` / ``parse_benefit_policy(dict)``
    The policy: ``weights/settlement/benefits_policy.toml`` (national floors of seeds 002/003 and
    illustrative regional values) with the region's file laid over it. A value that breaks a
    national floor, or a table the loader does not know, raises :class:`BenefitPolicyError`.

``benefits_of_stay(stay, person=None, policy=None) -> dict``
    The same for one stay (a dict of record columns) of one person (a dict, or None).

``compute_benefits(records, persons=None, policy=None) -> Benefits``
    ``records``: stays (Arrow table, DataFrame or path) with patient_id, fund (险种类型),
    discharge_date (出院时间), total_cost (医疗总费用) and, where known, id, admission_date,
    hospital_id, hospital_level (医院等级), in_policy_cost (政策范围内费用, default: the whole
    cost), region_status (异地就医: local, filed 已备案, unfiled 未备案), in_province,
    referred (规范转诊), visit_type (inpatient or outpatient_chronic 门诊慢特病) and, for
    outpatient rows, fund_paid (统筹基金支付). ``persons``: one row per person (or per person
    and year) with assistance_class (救助对象类别) and the enrolment facts (see docs/benefits.md).
    Returns ``Benefits(stays, persons)``: per stay, in input order, the amount each tier pays,
    the patient's remainder and every limit that bit; per person and year, the totals.

Money is int64 cents throughout. Each rate is applied to an integer amount of cents and
rounded half up to the cent: ``(cents × basis_points + 5000) // 10000``. Critical-illness
insurance and assistance are functions of the year's accumulated amount, so a stay's share
is F(accumulated after) − F(accumulated before): the year's total is the rounding of the
year's amount, whatever the order of rounding. Per stay, exactly:
``fund_basic + fund_critical + assistance + patient = total_cost``.

The accumulation runs per person and year in date order (discharge date, then admission
date, then id, then input order); it is sequential by nature and runs in a numba kernel
(``_accumulate``) over arrays sorted that way, arrays in and arrays out (rows/s measured in
docs/benefits.md).
"""
from __future__ import annotations

import calendar
import datetime as _dt
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from drgdip.arrowio import InputError, as_table, canonical_columns, numeric, text
from drgdip.weights.settlement.policy import overlay, read_policy_file
from drgdip.weights.settlement.settle import to_cents

_DEFAULTS = Path(__file__).with_name("benefits_policy.toml")
FUNDS = ("employee", "resident")
LEVELS = ("1", "2", "3")
REGION_STATUSES = ("local", "filed", "unfiled")
BP = 10000  # basis points: every ratio and share is held as an integer number of 1/10000


class BenefitPolicyError(InputError):
    """A benefit policy that cannot be used (one readable line)."""


# ---------------------------------------------------------------- money

def half_up(numerator: int, denominator: int = BP) -> int:
    """``numerator / denominator`` rounded half up, for numerator ≥ 0 (integers, exact)."""
    return (numerator + denominator // 2) // denominator


def apply_rate(cents: int, bp: int) -> int:
    """A rate (basis points) applied to an amount of cents, rounded half up to the cent."""
    return half_up(cents * bp) if cents > 0 else 0


def cents_of(yuan: float) -> int:
    """Yuan → integer cents, half up (amounts given to 0.01 stay exact)."""
    return int(np.floor(abs(yuan) * 100.0 + 0.5 + 1e-9)) * (1 if yuan >= 0 else -1)


def money_text(cents: int | None) -> str:
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


# ---------------------------------------------------------------- policy

@dataclass(frozen=True)
class AssistanceClass:
    code: str
    zh: str
    aliases: tuple[str, ...]
    threshold_share_bp: int
    ratio_bp: int
    annual_limit: int           # cents


@dataclass(frozen=True)
class BenefitPolicy:
    fund_labels: dict[str, tuple[str, ...]]
    level_labels: dict[str, str]                       # label (lower case) → "1" | "2" | "3"
    region_labels: dict[str, str]                      # label (lower case) → local | filed | unfiled
    inpatient_labels: tuple[str, ...]
    hospital_level: dict[str, str]
    admission_factors_bp: tuple[int, ...]
    ratio_cut_bp: dict[str, int]                       # region status → points off
    basic_cap: dict[str, int]                          # fund → cents
    basic_levels: dict[str, dict[str, tuple[int, int]]]  # fund → level → (deductible cents, ratio bp)
    outpatient_types: tuple[str, ...]
    outpatient_basic: dict[str, tuple[int, int, int]]  # fund → (annual deductible cents, ratio bp, limit cents)
    outpatient_in_cap: bool
    critical_funds: tuple[str, ...]
    critical_threshold: int
    critical_cap: int
    critical_bands: tuple[tuple[int | None, int], ...]  # (up_to cents or None, ratio bp)
    large_funds: tuple[str, ...]                       # 职工大额医疗费用补助
    large_threshold: int
    large_cap: int
    large_bands: tuple[tuple[int | None, int], ...]
    tilt_classes: tuple[str, ...]
    tilt_threshold_bp: int
    tilt_ratio_add_bp: int
    tilt_no_cap: bool
    incentive_from_year: int
    incentive_funds: tuple[str, ...]
    incentive_after_years: int
    continuous_step: int
    zero_claim_step: int
    incentive_max_bp: int
    zero_claim_clear_on_any: bool                      # the credit clears once any raise is used
    reenrolled_cut_bp: int
    waiting_from_year: int
    waiting_funds: tuple[str, ...]
    waiting_fixed: int
    waiting_per_break_year: int
    waiting_repaid_per_year: int
    long_break_years: int
    long_break_min: int
    per_capita_income: int
    unfiled_covered: bool
    classes: dict[str, AssistanceClass]
    relief_classes: tuple[str, ...]
    relief_heavy: int
    relief_ratio_bp: int
    relief_limit: int
    source: str = ""

    def fund_of_label(self) -> dict[str, str]:
        return {lab.lower(): f for f, labs in self.fund_labels.items() for lab in labs}

    def class_of_label(self) -> dict[str, str]:
        out = {}
        for c in self.classes.values():
            for lab in (c.code, c.zh, *c.aliases):
                out[lab.strip().lower()] = c.code
        return out

    def assistance_threshold(self, code: str) -> int:
        """The class's annual assistance threshold in cents (share of per-capita income, half up)."""
        return apply_rate(self.per_capita_income, self.classes[code].threshold_share_bp)


class _R:
    """Reads one policy value at a time; every failure names the key."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, msg: str):
        raise BenefitPolicyError(f"{self.where}: {key} {msg}")

    def table(self, d: dict, key: str, name: str, known: set[str] | None = None) -> dict:
        v = d.get(name)
        if not isinstance(v, dict):
            self.fail(f"{key}.{name}".lstrip("."), "must be a table")
        if known is not None:
            for k in v:
                if k not in known:
                    self.fail(f"{key}.{name}.{k}".lstrip("."), f"is not a known setting (use {', '.join(sorted(known))})")
        return v

    def num(self, d: dict, key: str, name: str, lo: float = 0.0, hi: float | None = None) -> float:
        v = d.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(f"{key}.{name}", "must be a number")
        if v < lo or (hi is not None and v > hi):
            self.fail(f"{key}.{name}", f"must be between {lo:g} and {hi:g}" if hi is not None else f"must be ≥ {lo:g}")
        return float(v)

    def money(self, d, key, name) -> int:
        v = self.num(d, key, name)
        c = cents_of(v)
        if abs(c / 100.0 - v) > 1e-7:
            self.fail(f"{key}.{name}", "must be yuan to 0.01")
        return c

    def rate(self, d, key, name, hi: float = 1.0) -> int:
        v = self.num(d, key, name, 0.0, hi)
        b = int(round(v * BP))
        if abs(b / BP - v) > 1e-9:
            self.fail(f"{key}.{name}", "must have at most 4 decimals")
        return b

    def int_(self, d, key, name, lo: int = 0) -> int:
        v = d.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            self.fail(f"{key}.{name}", f"must be a whole number ≥ {lo}")
        return v

    def texts(self, d, key, name) -> tuple[str, ...]:
        v = d.get(name)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.fail(f"{key}.{name}", "must be a list of text")
        return tuple(v)

    def flag(self, d, key, name) -> bool:
        v = d.get(name)
        if not isinstance(v, bool):
            self.fail(f"{key}.{name}", "must be true or false")
        return v


def _bands(r: _R, t: dict, key: str) -> list:
    """[(up_to cents or None for the open last band, ratio bp)] of a banded tier."""
    bands_in = t.get("bands")
    if not isinstance(bands_in, list) or not bands_in:
        r.fail(f"{key}.bands", "must be a list of { up_to, ratio } with the last band open")
    bands, prev = [], 0
    for i, b in enumerate(bands_in):
        bkey = f"{key}.bands[{i}]"
        if not isinstance(b, dict) or set(b) - {"up_to", "ratio"}:
            r.fail(bkey, "must be { up_to = yuan, ratio = fraction } (the last band: ratio only)")
        last = i == len(bands_in) - 1
        if last != ("up_to" not in b):
            r.fail(bkey, "every band but the last needs up_to; the last has none")
        up = None if last else r.money(b, bkey, "up_to")
        if up is not None and up <= prev:
            r.fail(f"{bkey}.up_to", "must rise from band to band")
        prev = up or prev
        bands.append((up, r.rate(b, bkey, "ratio")))
    return bands


def parse_benefit_policy(data: dict, where: str = "benefit policy", source: str = "") -> BenefitPolicy:
    """Validate a policy given as a dict (the TOML parsed), laid over the defaults."""
    with _DEFAULTS.open("rb") as fh:
        m = overlay(tomllib.load(fh), data)
    r = _R(where)
    top = {"funds", "labels", "hospital_level", "basic", "outpatient", "critical", "large_claim", "waiting",
           "assistance"}
    for k in m:
        if k not in top:
            r.fail(k, f"is not a known section (use {', '.join(sorted(top))})")
    funds = r.table(m, "", "funds", set(FUNDS))
    labels = {f: r.texts(funds, "funds", f) for f in FUNDS}
    lab = r.table(m, "", "labels", {"level", "region_status", "inpatient"})
    level_labels, region_labels = {}, {}
    for name, codes, out in (("level", LEVELS, level_labels), ("region_status", REGION_STATUSES, region_labels)):
        t = r.table(lab, "labels", name, set(codes))
        for code in codes:
            for x in r.texts(t, f"labels.{name}", code) if code in t else (code,):
                out[x.strip().lower()] = code
    inpatient_labels = tuple(x.lower() for x in r.texts(lab, "labels", "inpatient"))
    hl = r.table(m, "", "hospital_level")
    for h, lev in hl.items():
        if str(lev) not in LEVELS:
            r.fail(f"hospital_level.{h}", f"must be one of {', '.join(LEVELS)}")
    basic = r.table(m, "", "basic", {"admission_deductible_factors", "out_of_region_ratio_cut", *FUNDS})
    facs = basic.get("admission_deductible_factors")
    if not isinstance(facs, list) or not facs:
        r.fail("basic.admission_deductible_factors", "must be a non-empty list of factors")
    fac_bp = tuple(r.rate({"f": x}, "basic.admission_deductible_factors", "f") for x in facs)
    cut_t = r.table(basic, "basic", "out_of_region_ratio_cut", {"filed", "unfiled"})
    cut = {"local": 0, **{k: r.rate(cut_t, "basic.out_of_region_ratio_cut", k) for k in ("filed", "unfiled")}}
    caps, levels = {}, {}
    for f in FUNDS:
        ft = r.table(basic, "basic", f, {"annual_cap", "levels"})
        caps[f] = r.money(ft, f"basic.{f}", "annual_cap")
        lt = r.table(ft, f"basic.{f}", "levels", set(LEVELS))
        levels[f] = {}
        for lev in LEVELS:
            t = r.table(lt, f"basic.{f}.levels", lev, {"deductible", "ratio"})
            levels[f][lev] = (r.money(t, f"basic.{f}.levels.{lev}", "deductible"),
                              r.rate(t, f"basic.{f}.levels.{lev}", "ratio"))
    out_t = r.table(m, "", "outpatient", {"visit_types", "counts_against_inpatient_cap", *FUNDS})
    out_basic = {}
    for f in FUNDS:
        t = r.table(out_t, "outpatient", f, {"deductible", "ratio", "annual_limit"})
        out_basic[f] = (r.money(t, f"outpatient.{f}", "deductible"), r.rate(t, f"outpatient.{f}", "ratio"),
                        r.money(t, f"outpatient.{f}", "annual_limit"))
    crit = r.table(m, "", "critical", {"funds", "threshold", "annual_cap", "bands", "tilt", "incentive"})
    large = r.table(m, "", "large_claim", {"funds", "threshold", "annual_cap", "bands"})
    cfunds, lfunds = r.texts(crit, "critical", "funds"), r.texts(large, "large_claim", "funds")
    for key, names in (("critical.funds", cfunds), ("large_claim.funds", lfunds)):
        for f in names:
            if f not in FUNDS:
                r.fail(key, f"names {f!r}, not a fund (use {' or '.join(FUNDS)})")
            if key == "large_claim.funds" and f in cfunds:
                r.fail(key, f"names {f!r}, which critical.funds names too (a fund has one second tier)")
    bands = _bands(r, crit, "critical")
    large_bands = _bands(r, large, "large_claim")
    tilt = r.table(crit, "critical", "tilt", {"classes", "threshold_factor", "ratio_add", "no_cap"})
    inc = r.table(crit, "critical", "incentive", {"from_year", "funds", "after_years", "continuous_step",
                                                  "zero_claim_step", "max_share_of_cap", "reenrolled_cap_cut",
                                                  "zero_claim_cleared_by"})
    steps = {}
    for s in ("continuous_step", "zero_claim_step"):
        steps[s] = r.money(inc, "critical.incentive", s)
        if steps[s] < 100000:
            r.fail(f"critical.incentive.{s}", "must be at least 1000.00 yuan (seed 003: 每次提高限额均不低于1000元)")
    inc_max = r.rate(inc, "critical.incentive", "max_share_of_cap")
    cleared_by = inc.get("zero_claim_cleared_by")
    if cleared_by not in ("zero_claim_layer", "any_raise"):
        r.fail("critical.incentive.zero_claim_cleared_by", "must be \"zero_claim_layer\" or \"any_raise\"")
    if inc_max > 2000:
        r.fail("critical.incentive.max_share_of_cap", "must be at most 0.20 (seed 003: 累计提高总额不超过原封顶线的20%)")
    wait = r.table(m, "", "waiting", {"from_year", "funds", "fixed_months", "months_per_break_year",
                                      "months_repaid_per_year", "long_break_years", "long_break_min_months"})
    assist = r.table(m, "", "assistance", {"per_capita_income", "unfiled_out_of_region_covered", "classes", "tilt"})
    ctab = r.table(assist, "assistance", "classes")
    classes = {}
    for code, t in ctab.items():
        key = f"assistance.classes.{code}"
        if not isinstance(t, dict):
            r.fail(key, "must be a table")
        for k in t:
            if k not in {"zh", "aliases", "threshold_share", "ratio", "annual_limit"}:
                r.fail(f"{key}.{k}", "is not a known setting (use aliases, annual_limit, ratio, threshold_share, zh)")
        zh = t.get("zh", "")
        if not isinstance(zh, str):
            r.fail(f"{key}.zh", "must be text")
        c = AssistanceClass(code, zh, r.texts(t, key, "aliases") if "aliases" in t else (),
                            r.rate(t, key, "threshold_share"), r.rate(t, key, "ratio"), r.money(t, key, "annual_limit"))
        if code in ("extreme_poverty", "minimum_living"):
            if c.threshold_share_bp > 500:
                r.fail(f"{key}.threshold_share", "must be at most 0.05 (seed 002 article (五): 不得高于上年居民人均可支配收入的5%)")
            if c.ratio_bp < 7000:
                r.fail(f"{key}.ratio", "must be at least 0.70 (seed 002 article (五): 按不低于70%的比例救助)")
        classes[code] = c
    tilt_classes = r.texts(tilt, "critical.tilt", "classes")
    rel = r.table(assist, "assistance", "tilt", {"classes", "heavy_burden", "ratio", "annual_limit"})
    rel_classes = r.texts(rel, "assistance.tilt", "classes")
    for key, names in (("critical.tilt.classes", tilt_classes), ("assistance.tilt.classes", rel_classes)):
        for c in names:
            if c not in classes:
                r.fail(key, f"names {c!r}, not an assistance class (use {', '.join(sorted(classes))})")
    wfunds, ifunds = r.texts(wait, "waiting", "funds"), r.texts(inc, "critical.incentive", "funds")
    return BenefitPolicy(
        fund_labels=labels, level_labels=level_labels, region_labels=region_labels,
        inpatient_labels=inpatient_labels, hospital_level={str(k): str(v) for k, v in hl.items()},
        admission_factors_bp=fac_bp, ratio_cut_bp=cut, basic_cap=caps, basic_levels=levels,
        outpatient_types=tuple(x.lower() for x in r.texts(out_t, "outpatient", "visit_types")),
        outpatient_basic=out_basic,
        outpatient_in_cap=r.flag(out_t, "outpatient", "counts_against_inpatient_cap"),
        critical_funds=cfunds, critical_threshold=r.money(crit, "critical", "threshold"),
        critical_cap=r.money(crit, "critical", "annual_cap"), critical_bands=tuple(bands),
        large_funds=lfunds, large_threshold=r.money(large, "large_claim", "threshold"),
        large_cap=r.money(large, "large_claim", "annual_cap"), large_bands=tuple(large_bands),
        tilt_classes=tilt_classes, tilt_threshold_bp=r.rate(tilt, "critical.tilt", "threshold_factor"),
        tilt_ratio_add_bp=r.rate(tilt, "critical.tilt", "ratio_add"), tilt_no_cap=r.flag(tilt, "critical.tilt", "no_cap"),
        incentive_from_year=r.int_(inc, "critical.incentive", "from_year"), incentive_funds=ifunds,
        incentive_after_years=r.int_(inc, "critical.incentive", "after_years"),
        continuous_step=steps["continuous_step"], zero_claim_step=steps["zero_claim_step"],
        incentive_max_bp=inc_max, zero_claim_clear_on_any=cleared_by == "any_raise",
        reenrolled_cut_bp=r.rate(inc, "critical.incentive", "reenrolled_cap_cut"),
        waiting_from_year=r.int_(wait, "waiting", "from_year"), waiting_funds=wfunds,
        waiting_fixed=r.int_(wait, "waiting", "fixed_months"),
        waiting_per_break_year=r.int_(wait, "waiting", "months_per_break_year"),
        waiting_repaid_per_year=r.int_(wait, "waiting", "months_repaid_per_year"),
        long_break_years=r.int_(wait, "waiting", "long_break_years", 1),
        long_break_min=r.int_(wait, "waiting", "long_break_min_months"),
        per_capita_income=r.money(assist, "assistance", "per_capita_income"),
        unfiled_covered=r.flag(assist, "assistance", "unfiled_out_of_region_covered"),
        classes=classes, relief_classes=rel_classes, relief_heavy=r.money(rel, "assistance.tilt", "heavy_burden"),
        relief_ratio_bp=r.rate(rel, "assistance.tilt", "ratio"), relief_limit=r.money(rel, "assistance.tilt", "annual_limit"),
        source=source)


def load_benefit_policy(path: str | os.PathLike | None = None) -> BenefitPolicy:
    """The default policy, or a region's file laid over it (BenefitPolicyError if unusable)."""
    if path is None:
        return parse_benefit_policy({}, str(_DEFAULTS))
    data, src = read_policy_file(path, BenefitPolicyError)
    return parse_benefit_policy(data, str(Path(path)), src)


# ---------------------------------------------------------------- enrolment

def add_months(d: _dt.date, months: int) -> _dt.date:
    """The same day ``months`` later (the month's last day where it has fewer days)."""
    y, mo = divmod(d.month - 1 + months, 12)
    y += d.year
    return _dt.date(y, mo + 1, min(d.day, calendar.monthrange(y, mo + 1)[1]))


def waiting_months(policy: BenefitPolicy, collective: bool, break_years: int, repaid_years: int) -> int:
    """待遇等待期 in months (seed 003): 0 for on-time, unbroken enrolment; else fixed + variable,
    the variable part reduced by the years paid back, and ≥ the long-break floor after a long break."""
    if collective and break_years <= 0:
        return 0
    variable = max(0, break_years * policy.waiting_per_break_year
                   - max(0, min(repaid_years, break_years)) * policy.waiting_repaid_per_year)
    months = policy.waiting_fixed + variable
    if break_years >= policy.long_break_years:
        months = max(months, policy.long_break_min)
    return months


def critical_cap_layers(policy: BenefitPolicy, fund: str, year: int, continuous_years: int,
                        zero_claim_years: int, reenrolled: bool, tilted: bool) -> tuple[int | None, int, int]:
    """(cap or None for no cap, continuous raise, zero-claim raise) in cents, for one person-year.

    The original cap (cut for a person re-enrolled after a break) is raised by
    ``continuous_step`` for each year of continuous enrolment past ``after_years`` and by
    ``zero_claim_step`` per accumulated zero-claim year; the raises together stay within
    ``max_share_of_cap`` of the original cap, the continuous raise counting first."""
    if tilted and policy.tilt_no_cap:
        return None, 0, 0
    base = policy.critical_cap - apply_rate(policy.critical_cap, policy.reenrolled_cut_bp) if reenrolled \
        else policy.critical_cap
    if fund not in policy.incentive_funds or year < policy.incentive_from_year:
        return base, 0, 0
    room = apply_rate(policy.critical_cap, policy.incentive_max_bp)
    cont = min(max(0, continuous_years - policy.incentive_after_years) * policy.continuous_step, room)
    zero = min(max(0, zero_claim_years) * policy.zero_claim_step, room - cont)
    return base + cont + zero, cont, zero


# ---------------------------------------------------------------- inputs

_TRUE = {"1", "true", "t", "yes", "y", "是"}
_FALSE = {"0", "false", "f", "no", "n", "否", ""}


def _dates(col, n) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(date32 array, mask of values present but unreadable, days since 1970 or int64 min)."""
    none_day = np.iinfo(np.int64).min
    if col is None:
        return pa.nulls(n, pa.date32()), np.zeros(n, bool), np.full(n, none_day, np.int64)
    s = text(col, n)
    head = pc.utf8_slice_codeunits(s, 0, 10)
    head = pc.replace_substring_regex(head, r"^(\d{4})(\d{2})(\d{2})$", r"\1-\2-\3")
    d = pc.strptime(head, format="%Y-%m-%d", unit="s", error_is_null=True).cast(pa.date32())
    bad = np.asarray(pc.and_(pc.is_valid(s), pc.is_null(d)).to_numpy(zero_copy_only=False), bool)
    days = pc.fill_null(d.cast(pa.int32()).cast(pa.int64()), none_day).to_numpy(zero_copy_only=False)
    return d, bad, days.astype(np.int64)


def _texts(col, n) -> list:
    return text(col, n).to_pylist() if col is not None else [None] * n


def _flags(col, n, default: bool) -> tuple[list, np.ndarray]:
    if col is None:
        return [default] * n, np.zeros(n, bool)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_boolean(col.type):
        return [default if v is None else v for v in col.to_pylist()], np.zeros(n, bool)
    vals, bad = [], np.zeros(n, bool)
    for i, v in enumerate(_texts(col, n)):
        t = (v or "").strip().lower()
        if t in _TRUE:
            vals.append(True)
        elif t in _FALSE:
            vals.append(default if t == "" else False)
        else:
            vals.append(default)
            bad[i] = True
    return vals, bad


def _numbers(col, n) -> tuple[np.ndarray, np.ndarray]:
    v, bad = numeric(col, n)
    return (pc.fill_null(v, np.nan).to_numpy(zero_copy_only=False).astype(np.float64),
            np.asarray(bad.to_numpy(zero_copy_only=False), bool))


_RECORD_EXTRA = {
    "in_policy_cost": ("in_policy_cost", "政策范围内费用", "inscp_amt", "inscp_scp_amt"),
    "hospital_level": ("hospital_level", "医院等级", "hosp_lv", "medins_lv"),
    "region_status": ("region_status", "异地就医", "异地就医备案"),
    "in_province": ("in_province", "省内就医"),
    "referred": ("referred", "规范转诊"),
    "visit_type": ("visit_type", "就诊类型", "med_type"),
}
_PERSON = {
    "patient_id": ("patient_id", "psn_no", "人员编号"),
    "year": ("year", "年度"),
    "assistance_class": ("assistance_class", "救助对象类别", "class"),
    "enrolment_date": ("enrolment_date", "参保日期", "enrollment_date"),
    "collective_period": ("collective_period", "集中参保期参保"),
    "break_years": ("break_years", "断保年数"),
    "repaid_years": ("repaid_years", "补缴年数"),
    "waiting_exempt": ("waiting_exempt", "免等待期"),
    "continuous_years": ("continuous_years", "连续参保年数"),
    "zero_claim_years": ("zero_claim_years", "零报销年数"),
    "reenrolled": ("reenrolled", "断保后再参保"),
}


def _find(table: pa.Table, names) -> pa.ChunkedArray | None:
    lower = {c.strip().lower(): c for c in table.column_names}
    for nm in names:
        if nm.lower() in lower:
            return table[lower[nm.lower()]]
    return None


@dataclass
class _Person:
    cls: str | None = None
    start: _dt.date | None = None        # first day of benefits after the waiting period
    waiting: int = 0
    continuous: int = 0
    zero_claim: int = 0
    reenrolled: bool = False
    error: str | None = None


def _persons(persons, policy: BenefitPolicy) -> dict:
    if persons is None:
        return {}
    t = as_table(persons)
    n = t.num_rows
    col = {k: _find(t, v) for k, v in _PERSON.items()}
    if col["patient_id"] is None:
        raise InputError("persons have no patient_id column (人员编号, psn_no)")
    pid = _texts(col["patient_id"], n)
    years, ybad = _numbers(col["year"], n)
    cls = _texts(col["assistance_class"], n)
    enrol_a, ebad, _ = _dates(col["enrolment_date"], n)
    enrol = enrol_a.to_pylist()
    coll, cbad = _flags(col["collective_period"], n, True)
    exempt, xbad = _flags(col["waiting_exempt"], n, False)
    reen, rbad = _flags(col["reenrolled"], n, False)
    ints = {}
    for k in ("break_years", "repaid_years", "continuous_years", "zero_claim_years"):
        v, bad = _numbers(col[k], n)
        v = np.where(np.isnan(v), 0.0, v)
        ints[k] = (v, bad | (v < 0) | (v != np.floor(v)))
    labels = policy.class_of_label()
    out: dict = {}
    for i in range(n):
        if pid[i] is None:
            continue
        y = None if np.isnan(years[i]) else int(years[i])
        key = (pid[i], y)
        p = _Person()
        c = (cls[i] or "").strip().lower()
        if c and c not in ("none", "无"):
            p.cls = labels.get(c)
            if p.cls is None:
                p.error = "BEN_UNKNOWN_CLASS"
        if ybad[i] or ebad[i] or cbad[i] or xbad[i] or rbad[i] or any(ints[k][1][i] for k in ints):
            p.error = p.error or "BEN_BAD_PERSON"
        brk, rep = int(ints["break_years"][0][i]), int(ints["repaid_years"][0][i])
        p.continuous, p.zero_claim = int(ints["continuous_years"][0][i]), int(ints["zero_claim_years"][0][i])
        p.reenrolled = bool(reen[i])
        if enrol[i] is not None and enrol[i].year >= policy.waiting_from_year and not exempt[i]:
            p.waiting = waiting_months(policy, bool(coll[i]), brk, rep)
            p.start = add_months(enrol[i], p.waiting) if p.waiting else None
        if key in out:
            p.error = "BEN_BAD_PERSON"
        out[key] = p
    return out


# ---------------------------------------------------------------- the computation

STAY_MONEY = ("total_cost_cents", "in_policy_cents", "fund_basic_cents", "fund_critical_cents",
              "assistance_cents", "assistance_relief_cents", "patient_cents")


@dataclass
class Benefits:
    """Per-stay amounts (input order) and per person-year totals (patient_id, year order)."""
    stays: pa.Table
    persons: pa.Table
    notes: list[str] = field(default_factory=list)


# reason bits of the kernel, in the order a stay's reasons are listed
_FLAG_BITS = ("BEN_WAITING_PERIOD", "BEN_OUT_OF_POLICY", "BEN_OUT_OF_REGION_CUT", "BEN_BASIC_DEDUCTIBLE",
              "BEN_BASIC_CAP", "BEN_OUTPATIENT_LIMIT", "BEN_CRITICAL_TILT", "BEN_CRITICAL_THRESHOLD",
              "BEN_CRITICAL_CAP", "BEN_CAP_INCENTIVE_USED", "BEN_ZERO_CLAIM_CLEARED", "BEN_LARGE_CLAIM_THRESHOLD",
              "BEN_LARGE_CLAIM_CAP", "BEN_ASSIST_NOT_REFERRED", "BEN_ASSIST_THRESHOLD",
              "BEN_ASSIST_LIMIT", "BEN_RELIEF_LIMIT", "BEN_RELIEF_PAID", "BEN_PERSON_NOT_LISTED")
(F_WAIT, F_OOP, F_REGION, F_DED, F_BCAP, F_OLIM, F_TILT, F_CTHR, F_CCAP, F_INC, F_ZERO, F_LTHR, F_LCAP, F_NOREF,
 F_ATHR, F_ALIM, F_RLIM, F_RPAID, F_NOTLISTED) = (1 << b for b in range(len(_FLAG_BITS)))


@njit(cache=True)
def _rate(cents, bp):
    return (cents * bp + BP // 2) // BP if cents > 0 else 0


@njit(cache=True)
def _banded_nb(amount, threshold, band_up, band_bp, add_bp):
    num = 0
    lo = threshold
    for b in range(band_up.size):
        up = band_up[b]
        hi = amount if up < 0 else min(amount, up)
        if hi > lo:
            num += (hi - lo) * min(BP, band_bp[b] + add_bp)
        if up >= 0:
            lo = max(lo, up)
    return (num + BP // 2) // BP


@njit(cache=True)
def _accumulate(order, grp, ok, outp, fund, level, region, referred, in_prov, start_day, dis_day, wait_start,
                tc, ip, paid, paid_given, cls, tilted, crit_cap, crit_cont, crit_zero,
                ded_t, ratio_t, basic_cap, factors, cut, op_basic, op_in_cap, clear_on_any,
                tier2, thr_normal, thr_tilt, band_up, band_bp, band_n, tilt_add,
                c_thr, c_ratio, c_limit, c_relief, unfiled_covered, relief_heavy, relief_bp, relief_limit, ngroups):
    """The per person-year accumulation over stays sorted by (person, year, date); see the module doc.

    ``tier2[f]``: the second tier of fund f (0 none, 1 critical-illness insurance, 2 职工大额医疗费用补助),
    with its threshold and bands (row f of ``band_up``/``band_bp``, ``band_n[f]`` of them);
    ``op_basic[f]``: the outpatient chronic rules (annual deductible, ratio bp, annual limit).
    status: 0 paid, 1 waiting, 2 invalid (checked before), 3 overlapping stay."""
    n = order.size
    basic_o = np.zeros(n, np.int64)
    crit_o = np.zeros(n, np.int64)
    assist_o = np.zeros(n, np.int64)
    relief_o = np.zeros(n, np.int64)
    ded_o = np.zeros(n, np.int64)
    status = np.full(n, 2, np.int64)
    flags = np.zeros(n, np.int64)
    cap_o = np.full(n, -1, np.int64)
    g_cap = np.full(ngroups, -1, np.int64)
    g_cleared = np.zeros(ngroups, np.bool_)
    none_day = np.iinfo(np.int64).min
    basic_paid = np.zeros(2, np.int64)
    op_ded_used = np.zeros(2, np.int64)
    op_paid = np.zeros(2, np.int64)
    crit_base = np.zeros(2, np.int64)
    crit_paid = np.zeros(2, np.int64)
    cap_known = np.zeros(2, np.bool_)
    cap = np.zeros(2, np.int64)
    base_cap = np.zeros(2, np.int64)
    floor = np.zeros(2, np.int64)
    zero = np.zeros(2, np.int64)
    prev = -1
    admissions = assist_base = assist_paid = relief_base = relief_paid = 0
    last_dis = none_day
    for k in range(n):
        i = order[k]
        g = grp[k]
        if g != prev:
            prev = g
            admissions = assist_base = assist_paid = relief_base = relief_paid = 0
            basic_paid[:] = 0
            op_ded_used[:] = 0
            op_paid[:] = 0
            crit_base[:] = 0
            crit_paid[:] = 0
            cap_known[:] = False
            last_dis = none_day
        if not ok[i]:
            continue
        if not outp[i] and last_dis != none_day and start_day[i] < last_dis:
            status[i] = 3
            continue
        f = fund[i]
        fl = 0
        if wait_start[i] != none_day and start_day[i] < wait_start[i]:
            status[i] = 1
            flags[i] = F_WAIT
            if not outp[i]:
                last_dis = dis_day[i]
            continue
        status[i] = 0
        if tc[i] > ip[i]:
            fl |= F_OOP
        cap_left = basic_cap[f] - basic_paid[f]
        if outp[i]:
            if paid_given[i]:
                basic = paid[i]
            else:
                under = min(ip[i], op_basic[f, 0] - op_ded_used[f])
                op_ded_used[f] += under
                ded_o[i] = under
                if under > 0:
                    fl |= F_DED
                basic = _rate(ip[i] - under, op_basic[f, 1])
                if basic > op_basic[f, 2] - op_paid[f]:
                    basic = max(0, op_basic[f, 2] - op_paid[f])
                    fl |= F_OLIM
                op_paid[f] += basic
            if op_in_cap and basic > cap_left:
                basic = max(0, cap_left)
                fl |= F_BCAP
        else:
            admissions += 1
            fac = factors[min(admissions, factors.size) - 1]
            ded = _rate(ded_t[f, level[i]], fac)
            ratio = max(0, ratio_t[f, level[i]] - cut[region[i]])
            if cut[region[i]] > 0:
                fl |= F_REGION
            under = min(ip[i], ded)
            ded_o[i] = under
            if under > 0:
                fl |= F_DED
            basic = _rate(ip[i] - under, ratio)
            if basic > cap_left:
                basic = max(0, cap_left)
                fl |= F_BCAP
        if op_in_cap or not outp[i]:
            basic_paid[f] += basic
        crit = 0
        if not outp[i] and tier2[f] > 0:
            if not cap_known[f]:
                cap_known[f] = True
                cap[f] = crit_cap[i]
                zero[f] = crit_zero[i]
                base_cap[f] = cap[f] - zero[f] - crit_cont[i]
                floor[f] = base_cap[f] if clear_on_any else cap[f] - zero[f]
                if g_cap[g] < 0:
                    g_cap[g] = cap[f]
            tilt = tilted[i] and tier2[f] == 1
            thr = thr_tilt[f] if tilt else thr_normal[f]
            add = tilt_add if tilt else 0
            if tilt:
                fl |= F_TILT
            nb = band_n[f]
            elig = ip[i] - basic
            before = crit_base[f]
            after = crit_base[f] + elig
            crit = _banded_nb(after, thr, band_up[f, :nb], band_bp[f, :nb], add) \
                - _banded_nb(before, thr, band_up[f, :nb], band_bp[f, :nb], add)
            if before < thr and elig > 0:
                fl |= F_CTHR if tier2[f] == 1 else F_LTHR
            crit_base[f] = after
            if cap[f] >= 0:
                if crit_paid[f] + crit > cap[f]:
                    crit = max(0, cap[f] - crit_paid[f])
                    fl |= F_CCAP if tier2[f] == 1 else F_LCAP
                new = crit_paid[f] + crit
                if new > base_cap[f] and crit > 0:
                    fl |= F_INC
                if zero[f] > 0 and new > floor[f] and not g_cleared[g]:
                    g_cleared[g] = True
                    fl |= F_ZERO
            crit_paid[f] += crit
            cap_o[i] = cap[f]
        assist = 0
        relief = 0
        remaining = ip[i] - basic - crit
        c = cls[i]
        if c >= 0:
            if region[i] == 2 and not unfiled_covered:
                fl |= F_NOREF
            else:
                thr = c_thr[c]
                before = assist_base
                after = assist_base + remaining
                assist = _rate(max(0, after - thr), c_ratio[c]) - _rate(max(0, before - thr), c_ratio[c])
                if before < thr and remaining > 0:
                    fl |= F_ATHR
                assist_base = after
                if assist_paid + assist > c_limit[c]:
                    assist = max(0, c_limit[c] - assist_paid)
                    fl |= F_ALIM
                assist_paid += assist
                if c_relief[c]:
                    before = relief_base
                    after = relief_base + remaining - assist
                    relief_base = after
                    if not outp[i] and referred[i] and in_prov[i]:
                        relief = _rate(max(0, after - relief_heavy), relief_bp) \
                            - _rate(max(0, before - relief_heavy), relief_bp)
                        if relief_paid + relief > relief_limit:
                            relief = max(0, relief_limit - relief_paid)
                            fl |= F_RLIM
                        if relief > 0:
                            fl |= F_RPAID
                        relief_paid += relief
        if not outp[i]:
            last_dis = dis_day[i]
        basic_o[i] = basic
        crit_o[i] = crit
        assist_o[i] = assist
        relief_o[i] = relief
        flags[i] = fl
    return basic_o, crit_o, assist_o, relief_o, ded_o, status, flags, cap_o, g_cap, g_cleared


# reasons found before the accumulation, one bit each (a row with any is invalid)
_INVALID_BITS = ("BEN_NO_PATIENT", "BEN_UNKNOWN_FUND", "BEN_DATE_ORDER", "BEN_BAD_COST", "BEN_NO_LEVEL",
                 "BEN_BAD_REGION_STATUS", "BEN_BAD_VISIT_TYPE", "BEN_BAD_FLAG", "BEN_UNKNOWN_CLASS",
                 "BEN_BAD_PERSON", "BEN_OVERLAPPING_STAY")
_ALL_BITS = _FLAG_BITS + _INVALID_BITS


def _lookup(values: pa.Array, keys: list, default: int = -1) -> np.ndarray:
    """Index of each value in ``keys`` (default where null or absent)."""
    pos = pc.index_in(values, value_set=pa.array(keys, pa.string()))
    return pc.fill_null(pos, default).to_numpy(zero_copy_only=False).astype(np.int64)


def _rank(values: pa.Array) -> np.ndarray:
    """Dense rank of each text value in sorted order (null, as "", first)."""
    return pc.rank(pc.fill_null(values, ""), sort_keys="ascending", tiebreaker="dense").to_numpy(
        zero_copy_only=False).astype(np.int64)


def _reason_texts(mask: np.ndarray) -> tuple[list, list]:
    """(first reason, all reasons |-joined) for each row's reason bits."""
    uniq, inv = np.unique(mask, return_inverse=True)
    names = [[c for b, c in enumerate(_ALL_BITS) if (int(u) >> b) & 1] or ["BEN_PAID"] for u in uniq]
    first = np.array([x[0] for x in names], dtype=object)[inv.reshape(-1)]
    joined = np.array(["|".join(x) for x in names], dtype=object)[inv.reshape(-1)]
    return first.tolist(), joined.tolist()


def compute_benefits(records, persons=None, policy: BenefitPolicy | None = None) -> Benefits:
    """Split every stay's cost between the three tiers and the patient (see the module doc)."""
    policy = policy or load_benefit_policy()
    t = as_table(records)
    n = t.num_rows
    cols = canonical_columns(t.schema)

    def c(name):
        return t[cols[name]] if name in cols else None

    for need in ("patient_id", "fund", "discharge_date", "total_cost"):
        if need not in cols:
            raise InputError(f"records have no {need} column (or an alias of it)")
    extra = {k: _find(t, v) for k, v in _RECORD_EXTRA.items()}
    none_day = np.iinfo(np.int64).min
    bit = {code: np.int64(1) << np.int64(b) for b, code in enumerate(_ALL_BITS)}
    bad = np.zeros(n, np.int64)

    def flag(mask, code):
        nonlocal bad
        bad = bad | np.where(mask, bit[code], 0)

    ids_a = text(c("id"), n)
    ids = ids_a.to_pylist()
    pid_a = text(c("patient_id"), n)
    pid = pid_a.to_pylist()
    flag(pc.is_null(pid_a).to_numpy(zero_copy_only=False), "BEN_NO_PATIENT")
    labels = policy.fund_of_label()
    lab_keys = sorted(labels)
    fund_pos = _lookup(pc.utf8_lower(text(c("fund"), n)), lab_keys)
    fund_i = np.array([FUNDS.index(labels[k]) for k in lab_keys] + [-1], np.int64)[fund_pos]
    flag(fund_i < 0, "BEN_UNKNOWN_FUND")
    _, adm_bad, adm_days = _dates(c("admission_date"), n)
    _, dis_bad, dis_days = _dates(c("discharge_date"), n)
    flag((dis_days == none_day) | dis_bad | adm_bad | ((adm_days != none_day) & (adm_days > dis_days)),
         "BEN_DATE_ORDER")
    known = dis_days != none_day
    year_a = np.where(known, np.where(known, dis_days, 0).astype("datetime64[D]").astype("datetime64[Y]")
                      .astype(np.int64) + 1970, -1)
    year = [None if y < 0 else int(y) for y in year_a.tolist()]
    total, total_bad = _numbers(c("total_cost"), n)
    if extra["in_policy_cost"] is not None:
        inpol, inpol_bad = _numbers(extra["in_policy_cost"], n)
    else:
        inpol, inpol_bad = total.copy(), np.zeros(n, bool)
    paid_out, paid_bad = _numbers(c("fund_paid"), n)
    vt = pc.utf8_lower(text(extra["visit_type"], n))
    outp = np.asarray(pc.fill_null(pc.is_in(vt, value_set=pa.array(list(policy.outpatient_types), pa.string())),
                                   False).to_numpy(zero_copy_only=False), bool)
    vt_ok = pc.or_(pc.is_null(vt), pc.is_in(vt, value_set=pa.array([*policy.inpatient_labels, *policy.outpatient_types])))
    flag(~np.asarray(vt_ok.to_numpy(zero_copy_only=False), bool), "BEN_BAD_VISIT_TYPE")
    tc_c, ip_c, paid_c = (to_cents(np.nan_to_num(x)) for x in (total, inpol, paid_out))
    paid_given = np.isfinite(paid_out)
    cost_bad = (total_bad | inpol_bad | ~np.isfinite(total) | ~np.isfinite(inpol) | (total < 0) | (inpol < 0)
                | (ip_c > tc_c) | (outp & (paid_bad | (paid_given & ((paid_c < 0) | (paid_c > ip_c))))))
    flag(cost_bad, "BEN_BAD_COST")
    level_a = text(extra["hospital_level"], n)
    if policy.hospital_level:
        hk = sorted(policy.hospital_level)
        from_map = pa.array([policy.hospital_level[k] for k in hk] + [None], pa.string()).take(
            pa.array(_lookup(text(c("hospital_id"), n), hk, len(hk))))
        level_a = pc.coalesce(level_a, from_map)
    lk = sorted(policy.level_labels)
    level_i = np.array([LEVELS.index(policy.level_labels[k]) for k in lk] + [-1], np.int64)[
        _lookup(pc.utf8_lower(level_a), lk, len(lk))]
    flag(~outp & (level_i < 0), "BEN_NO_LEVEL")
    reg_keys = sorted(policy.region_labels)
    reg_text = pc.utf8_lower(text(extra["region_status"], n))
    region_i = np.array([REGION_STATUSES.index(policy.region_labels[k]) for k in reg_keys] + [-1], np.int64)[
        _lookup(reg_text, reg_keys, len(reg_keys))]
    region_i = np.where(pc.is_null(reg_text).to_numpy(zero_copy_only=False), 0, region_i)
    flag(~outp & (region_i < 0), "BEN_BAD_REGION_STATUS")
    region_i = np.maximum(region_i, 0)
    in_prov, prov_bad = _flags(extra["in_province"], n, True)
    referred, ref_bad = _flags(extra["referred"], n, False)
    flag(prov_bad | ref_bad, "BEN_BAD_FLAG")

    # the person of each row: assistance class, waiting start, critical-illness cap layers
    people = _persons(persons, policy)
    class_codes = list(policy.classes)
    cls_index = {code: j for j, code in enumerate(class_codes)}
    cls = np.full(n, -1, np.int64)
    wait_start = np.full(n, none_day, np.int64)
    crit_cap, crit_cont, crit_zero = np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    not_listed = np.zeros(n, bool)
    person_bad = np.zeros(n, np.int64)
    epoch = _dt.date(1970, 1, 1)
    layers: dict = {}
    fund_names = [FUNDS[f] if f >= 0 else None for f in fund_i.tolist()]
    row_person: list = [None] * n
    ordinary = _Person()     # a patient not in the person file: no class, no incentive, no waiting
    for i in range(n):
        p = people.get((pid[i], year[i])) or people.get((pid[i], None))
        if p is None:
            not_listed[i] = True
            p = ordinary
        else:
            row_person[i] = p
        if p.error:
            person_bad[i] = bit[p.error]
        if p.cls is not None:
            cls[i] = cls_index[p.cls]
        f = fund_names[i]
        if p.start is not None and f in policy.waiting_funds:
            wait_start[i] = (p.start - epoch).days
        if f in policy.large_funds:
            crit_cap[i] = policy.large_cap
        elif f in policy.critical_funds and year[i] is not None:
            key = (f, year[i], id(p))
            if key not in layers:
                layers[key] = critical_cap_layers(policy, f, year[i], p.continuous, p.zero_claim,
                                                  p.reenrolled, p.cls in policy.tilt_classes)
            cap, cont, zero = layers[key]
            crit_cap[i], crit_cont[i], crit_zero[i] = (-1 if cap is None else cap), cont, zero
    bad = bad | person_bad
    tilted = np.isin(cls, [j for j, code in enumerate(class_codes) if code in policy.tilt_classes])

    # the sequential pass: arrays sorted by (person, year, discharge, admission, id, input order)
    start_day = np.where(adm_days != none_day, adm_days, dis_days)
    pid_rank = _rank(pid_a)
    order = np.lexsort((np.arange(n), _rank(ids_a), start_day, dis_days, year_a, pid_rank)).astype(np.int64)
    change = np.ones(n, bool)
    if n:
        change[1:] = (pid_rank[order][1:] != pid_rank[order][:-1]) | (year_a[order][1:] != year_a[order][:-1])
    grp = np.cumsum(change).astype(np.int64) - 1
    ngroups = int(grp[-1]) + 1 if n else 0
    # the second tier of each fund: 1 critical-illness insurance, 2 职工大额医疗费用补助, 0 none
    tier2 = np.array([1 if f in policy.critical_funds else 2 if f in policy.large_funds else 0 for f in FUNDS],
                     np.int64)
    tier_bands = [policy.critical_bands if t == 1 else policy.large_bands if t == 2 else () for t in tier2]
    width = max(1, max(len(b) for b in tier_bands))
    band_up, band_bp = np.full((2, width), -1, np.int64), np.zeros((2, width), np.int64)
    for f, b in enumerate(tier_bands):
        for j, (up, bp) in enumerate(b):
            band_up[f, j], band_bp[f, j] = (-1 if up is None else up), bp
    thr2 = np.array([policy.critical_threshold if t == 1 else policy.large_threshold if t == 2 else 0
                     for t in tier2], np.int64)
    thr2_tilt = np.where(tier2 == 1, apply_rate(policy.critical_threshold, policy.tilt_threshold_bp), thr2)
    basic, crit, assist, relief, ded, st, flags, cap_row, g_cap, g_cleared = _accumulate(
        order, grp, bad == 0, outp, fund_i, np.maximum(level_i, 0), region_i, np.array(referred, bool),
        np.array(in_prov, bool), start_day, dis_days, wait_start, tc_c, ip_c, paid_c, paid_given, cls, tilted,
        crit_cap, crit_cont, crit_zero,
        np.array([[policy.basic_levels[f][lv][0] for lv in LEVELS] for f in FUNDS], np.int64),
        np.array([[policy.basic_levels[f][lv][1] for lv in LEVELS] for f in FUNDS], np.int64),
        np.array([policy.basic_cap[f] for f in FUNDS], np.int64), np.array(policy.admission_factors_bp, np.int64),
        np.array([policy.ratio_cut_bp[k] for k in ("local", "filed", "unfiled")], np.int64),
        np.array([policy.outpatient_basic[f] for f in FUNDS], np.int64), policy.outpatient_in_cap,
        policy.zero_claim_clear_on_any,
        tier2, thr2, thr2_tilt.astype(np.int64), band_up, band_bp,
        np.array([len(b) for b in tier_bands], np.int64), policy.tilt_ratio_add_bp,
        np.array([policy.assistance_threshold(code) for code in class_codes], np.int64),
        np.array([policy.classes[code].ratio_bp for code in class_codes], np.int64),
        np.array([policy.classes[code].annual_limit for code in class_codes], np.int64),
        np.array([code in policy.relief_classes for code in class_codes], bool),
        policy.unfiled_covered, policy.relief_heavy, policy.relief_ratio_bp, policy.relief_limit, ngroups)

    overlap = st == 3
    valid = st < 2
    mask = np.where(bad != 0, bad, np.where(overlap, bit["BEN_OVERLAPPING_STAY"],
                                            flags | np.where(valid & not_listed, bit["BEN_PERSON_NOT_LISTED"], 0)))
    first, joined = _reason_texts(mask)
    status = np.array(["paid", "waiting", "invalid", "invalid"], dtype=object)[st]
    inv = ~valid
    patient = tc_c - basic - crit - assist - relief
    stays = pa.table({
        "id": pa.array(ids, pa.string()), "patient_id": pid_a,
        "year": pa.array(year, pa.int64()), "fund": pa.array(fund_names, pa.string()),
        "status": pa.array(status.tolist(), pa.string()),
        "reason": pa.array(first, pa.string()), "reasons": pa.array(joined, pa.string()),
        "total_cost_cents": pa.array(tc_c, pa.int64(), mask=cost_bad),
        "in_policy_cents": pa.array(ip_c, pa.int64(), mask=inv),
        "fund_basic_cents": pa.array(basic, pa.int64(), mask=inv),
        "fund_critical_cents": pa.array(crit, pa.int64(), mask=inv),
        "assistance_cents": pa.array(assist + relief, pa.int64(), mask=inv),
        "assistance_relief_cents": pa.array(relief, pa.int64(), mask=inv),
        "patient_cents": pa.array(patient, pa.int64(), mask=inv),
        "basic_deductible_cents": pa.array(ded, pa.int64(), mask=inv),
        "critical_cap_cents": pa.array(cap_row, pa.int64(), mask=inv | (cap_row < 0)),
        "personal_share": pa.array(patient / 100.0, pa.float64(), mask=inv),
    })
    # per person-year: the groups of the sorted pass that have a person and a year
    row_grp = np.empty(n, np.int64)
    row_grp[order] = grp
    first_row = np.full(ngroups, -1, np.int64)
    first_row[grp[::-1]] = order[::-1]
    keep = np.array([pid[i] is not None and year[i] is not None for i in first_row.tolist()], bool)
    sums = {"stays": np.bincount(row_grp, minlength=ngroups)}
    for name, m in (("paid_stays", st == 0), ("waiting_stays", st == 1), ("invalid_stays", st >= 2)):
        sums[name] = np.bincount(row_grp, m.astype(np.float64), ngroups)
    money = {"total_cost_cents": tc_c, "in_policy_cents": ip_c, "basic_deductible_cents": ded,
             "fund_basic_cents": basic, "fund_critical_cents": crit, "assistance_cents": assist + relief,
             "assistance_relief_cents": relief, "patient_cents": patient}
    for name, v in money.items():   # exact integer sums (bincount would go through float64)
        s = np.zeros(ngroups, np.int64)
        np.add.at(s, row_grp[valid], v[valid])
        sums[name] = s
    rows = first_row[keep].tolist()
    persons_t = pa.table({
        "patient_id": pa.array([pid[i] for i in rows], pa.string()), "year": pa.array([year[i] for i in rows], pa.int64()),
        "assistance_class": pa.array([row_person[i].cls if row_person[i] is not None else None for i in rows],
                                     pa.string()),
        **{k: pa.array(v[keep].astype(np.int64), pa.int64()) for k, v in sums.items()},
        "critical_cap_cents": pa.array(g_cap[keep], pa.int64(), mask=g_cap[keep] < 0),
        "zero_claim_cleared": pa.array(g_cleared[keep], pa.bool_()),
    })
    return Benefits(stays, persons_t)


def benefits_of_stay(stay: dict, person: dict | None = None, policy: BenefitPolicy | None = None) -> dict:
    """One stay (a dict of record columns) of one person (a dict of person-file columns, or
    None): its row of :func:`compute_benefits` as a dict."""
    rec = pa.Table.from_pylist([{"patient_id": "-", **stay}])
    per = pa.Table.from_pylist([{**(person or {}), "patient_id": rec["patient_id"][0].as_py()}])
    return compute_benefits(rec, per, policy).stays.to_pylist()[0]


def write_benefits(records, persons, policy_path, out, totals=None) -> Benefits:
    """Read, compute and write the stays (and the person-year totals) atomically."""
    from drgdip.arrowio import write_table
    b = compute_benefits(records, persons, load_benefit_policy(policy_path))
    write_table(b.stays, out)
    if totals is not None:
        write_table(b.persons, totals)
    return b


def summary_text(b: Benefits) -> str:
    s = b.stays
    counts = {k: 0 for k in ("paid", "waiting", "invalid")}
    for v in s["status"].to_pylist():
        counts[v] += 1
    valid = s.filter(pc.not_equal(s["status"], "invalid"))
    sums = {k: pc.sum(valid[k]).as_py() or 0 for k in STAY_MONEY}
    return (f"{s.num_rows} stays ({counts['paid']} paid, {counts['waiting']} in a waiting period, "
            f"{counts['invalid']} invalid), {b.persons.num_rows} person-years; "
            f"cost {money_text(sums['total_cost_cents'])} = basic {money_text(sums['fund_basic_cents'])}"
            f" + critical {money_text(sums['fund_critical_cents'])} + assistance {money_text(sums['assistance_cents'])}"
            f" + patient {money_text(sums['patient_cents'])} (valid stays)")
