"""The patient's side of a stay (三重制度综合保障): basic insurance, critical-illness insurance and
medical assistance, for one stay and for a year of stays per person.

API:

``load_benefit_policy(path=None) -> BenefitPolicy`` / ``parse_benefit_policy(dict)``
    The policy: ``weights/benefits_policy.toml`` (national floors of seeds 002/003 and
    illustrative regional values) with the region's file laid over it. A value that breaks a
    national floor, or a table the loader does not know, raises :class:`BenefitPolicyError`.

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
date, then id, then input order); it is sequential by nature and is a plain Python loop over the
sorted stays (rows/s measured in docs/benefits.md).
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

from grouper.io import InputError, as_table, canonical_columns, numeric, text

_DEFAULTS = Path(__file__).with_name("benefits_policy.toml")
FUNDS = ("employee", "resident")
LEVELS = ("1", "2", "3")
REGION_STATUSES = {"local": "local", "本地": "local", "filed": "filed", "已备案": "filed",
                   "unfiled": "unfiled", "未备案": "unfiled"}
BP = 10000  # basis points: every ratio and share is held as an integer number of 1/10000


class BenefitPolicyError(ValueError):
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
    hospital_level: dict[str, str]
    admission_factors_bp: tuple[int, ...]
    ratio_cut_bp: dict[str, int]                       # region status → points off
    basic_cap: dict[str, int]                          # fund → cents
    basic_levels: dict[str, dict[str, tuple[int, int]]]  # fund → level → (deductible cents, ratio bp)
    outpatient_types: tuple[str, ...]
    critical_funds: tuple[str, ...]
    critical_threshold: int
    critical_cap: int
    critical_bands: tuple[tuple[int | None, int], ...]  # (up_to cents or None, ratio bp)
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


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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


def parse_benefit_policy(data: dict, where: str = "benefit policy", source: str = "") -> BenefitPolicy:
    """Validate a policy given as a dict (the TOML parsed), laid over the defaults."""
    with _DEFAULTS.open("rb") as fh:
        m = _merge(tomllib.load(fh), data)
    r = _R(where)
    top = {"funds", "hospital_level", "basic", "outpatient", "critical", "waiting", "assistance"}
    for k in m:
        if k not in top:
            r.fail(k, f"is not a known section (use {', '.join(sorted(top))})")
    funds = r.table(m, "", "funds", set(FUNDS))
    labels = {f: r.texts(funds, "funds", f) for f in FUNDS}
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
    out_t = r.table(m, "", "outpatient", {"visit_types"})
    crit = r.table(m, "", "critical", {"funds", "threshold", "annual_cap", "bands", "tilt", "incentive"})
    cfunds = r.texts(crit, "critical", "funds")
    for f in cfunds:
        if f not in FUNDS:
            r.fail("critical.funds", f"names {f!r}, not a fund (use {' or '.join(FUNDS)})")
    bands_in = crit.get("bands")
    if not isinstance(bands_in, list) or not bands_in:
        r.fail("critical.bands", "must be a list of { up_to, ratio } with the last band open")
    bands, prev = [], 0
    for i, b in enumerate(bands_in):
        key = f"critical.bands[{i}]"
        if not isinstance(b, dict) or set(b) - {"up_to", "ratio"}:
            r.fail(key, "must be { up_to = yuan, ratio = fraction } (the last band: ratio only)")
        last = i == len(bands_in) - 1
        if last != ("up_to" not in b):
            r.fail(key, "every band but the last needs up_to; the last has none")
        up = None if last else r.money(b, key, "up_to")
        if up is not None and up <= prev:
            r.fail(f"{key}.up_to", "must rise from band to band")
        prev = up or prev
        bands.append((up, r.rate(b, key, "ratio")))
    tilt = r.table(crit, "critical", "tilt", {"classes", "threshold_factor", "ratio_add", "no_cap"})
    inc = r.table(crit, "critical", "incentive", {"from_year", "funds", "after_years", "continuous_step",
                                                  "zero_claim_step", "max_share_of_cap", "reenrolled_cap_cut"})
    steps = {}
    for s in ("continuous_step", "zero_claim_step"):
        steps[s] = r.money(inc, "critical.incentive", s)
        if steps[s] < 100000:
            r.fail(f"critical.incentive.{s}", "must be at least 1000.00 yuan (seed 003: 每次提高限额均不低于1000元)")
    inc_max = r.rate(inc, "critical.incentive", "max_share_of_cap")
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
        fund_labels=labels, hospital_level={str(k): str(v) for k, v in hl.items()},
        admission_factors_bp=fac_bp, ratio_cut_bp=cut, basic_cap=caps, basic_levels=levels,
        outpatient_types=tuple(x.lower() for x in r.texts(out_t, "outpatient", "visit_types")),
        critical_funds=cfunds, critical_threshold=r.money(crit, "critical", "threshold"),
        critical_cap=r.money(crit, "critical", "annual_cap"), critical_bands=tuple(bands),
        tilt_classes=tilt_classes, tilt_threshold_bp=r.rate(tilt, "critical.tilt", "threshold_factor"),
        tilt_ratio_add_bp=r.rate(tilt, "critical.tilt", "ratio_add"), tilt_no_cap=r.flag(tilt, "critical.tilt", "no_cap"),
        incentive_from_year=r.int_(inc, "critical.incentive", "from_year"), incentive_funds=ifunds,
        incentive_after_years=r.int_(inc, "critical.incentive", "after_years"),
        continuous_step=steps["continuous_step"], zero_claim_step=steps["zero_claim_step"],
        incentive_max_bp=inc_max, reenrolled_cut_bp=r.rate(inc, "critical.incentive", "reenrolled_cap_cut"),
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
    p = Path(path)
    if not p.is_file():
        raise BenefitPolicyError(f"{p}: no such policy file")
    src = p.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(src)
    except tomllib.TOMLDecodeError as exc:
        raise BenefitPolicyError(f"{p}: not valid TOML: {exc}") from None
    return parse_benefit_policy(data, str(p), src)


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


def _banded(amount: int, threshold: int, bands, add_bp: int) -> int:
    """Critical-illness payment on an accumulated amount: Σ band ratio × its part above the threshold."""
    num, lo = 0, threshold
    for up, bp in bands:
        hi = amount if up is None else min(amount, up)
        if hi > lo:
            num += (hi - lo) * min(BP, bp + add_bp)
        if up is not None:
            lo = max(lo, up)
    return half_up(num)


# ---------------------------------------------------------------- inputs

_TRUE = {"1", "true", "t", "yes", "y", "是"}
_FALSE = {"0", "false", "f", "no", "n", "否", ""}


def _dates(col, n) -> tuple[list, np.ndarray]:
    """(date or None per row, mask of values present but unreadable)."""
    if col is None:
        return [None] * n, np.zeros(n, bool)
    s = text(col, n)
    head = pc.utf8_slice_codeunits(s, 0, 10)
    head = pc.replace_substring_regex(head, r"^(\d{4})(\d{2})(\d{2})$", r"\1-\2-\3")
    d = pc.strptime(head, format="%Y-%m-%d", unit="s", error_is_null=True).cast(pa.date32())
    vals = d.to_pylist()
    bad = np.asarray(pc.and_(pc.is_valid(s), pc.is_null(d)).to_numpy(zero_copy_only=False), bool)
    return vals, bad


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
    enrol, ebad = _dates(col["enrolment_date"], n)
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
PERSON_MONEY = ("total_cost_cents", "in_policy_cents", "basic_deductible_cents", "fund_basic_cents",
                "fund_critical_cents", "assistance_cents", "assistance_relief_cents", "patient_cents")


@dataclass
class Benefits:
    """Per-stay amounts (input order) and per person-year totals (patient_id, year order)."""
    stays: pa.Table
    persons: pa.Table
    notes: list[str] = field(default_factory=list)


@dataclass
class _Year:
    admissions: int = 0
    basic: dict = field(default_factory=dict)     # fund → basic paid (cents, incl. outpatient fund_paid)
    crit_base: int = 0                             # accumulated critical-eligible amount
    crit_paid: int = 0
    assist_base: int = 0
    assist_paid: int = 0
    relief_base: int = 0
    relief_paid: int = 0
    cap: int | None = None
    cap_known: bool = False
    cap_floor: int | None = None                   # where the zero-claim layer starts
    base_cap: int | None = None                    # the cap before any incentive
    zero_layer: int = 0
    zero_cleared: bool = False
    last_discharge: _dt.date | None = None


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
    ids = _texts(c("id"), n)
    pid = _texts(c("patient_id"), n)
    fund_lab = policy.fund_of_label()
    fund = [fund_lab.get((f or "").lower()) for f in _texts(c("fund"), n)]
    adm, adm_bad = _dates(c("admission_date"), n)
    dis, dis_bad = _dates(c("discharge_date"), n)
    total, total_bad = _numbers(c("total_cost"), n)
    if extra["in_policy_cost"] is not None:
        inpol, inpol_bad = _numbers(extra["in_policy_cost"], n)
    else:
        inpol, inpol_bad = total.copy(), np.zeros(n, bool)
    paid_out, paid_bad = _numbers(c("fund_paid"), n)
    hosp = _texts(c("hospital_id"), n)
    level = _texts(extra["hospital_level"], n)
    region = _texts(extra["region_status"], n)
    in_prov, prov_bad = _flags(extra["in_province"], n, True)
    referred, ref_bad = _flags(extra["referred"], n, False)
    vtype = _texts(extra["visit_type"], n)
    people = _persons(persons, policy)

    status = ["invalid"] * n
    reasons: list[list[str]] = [[] for _ in range(n)]
    money = {k: [None] * n for k in STAY_MONEY}
    deductible_borne = [0] * n
    year = [d.year if d is not None else None for d in dis]
    caps: list = [None] * n

    # validity of each row on its own
    order_key = []
    for i in range(n):
        r = reasons[i]
        outpatient = (vtype[i] or "").lower() in policy.outpatient_types
        if pid[i] is None:
            r.append("BEN_NO_PATIENT")
        if fund[i] is None:
            r.append("BEN_UNKNOWN_FUND")
        if dis[i] is None or dis_bad[i] or adm_bad[i] or (adm[i] is not None and adm[i] > dis[i]):
            r.append("BEN_DATE_ORDER")
        tc, ip = total[i], inpol[i]
        if total_bad[i] or inpol_bad[i] or not np.isfinite(tc) or not np.isfinite(ip) or tc < 0 or ip < 0 \
                or cents_of(ip) > cents_of(tc) or (outpatient and (paid_bad[i] or not np.isfinite(paid_out[i])
                                                                     or not 0 <= paid_out[i] <= ip)):
            r.append("BEN_BAD_COST")
        else:
            money["total_cost_cents"][i] = cents_of(tc)
        if not outpatient:
            lev = level[i] or policy.hospital_level.get(hosp[i] or "")
            if lev not in LEVELS:
                r.append("BEN_NO_LEVEL")
            else:
                level[i] = lev
            if region[i] is not None and region[i].lower() not in REGION_STATUSES:
                r.append("BEN_BAD_REGION_STATUS")
        if vtype[i] is not None and not outpatient and vtype[i].lower() not in ("inpatient", "住院"):
            r.append("BEN_BAD_VISIT_TYPE")
        if prov_bad[i] or ref_bad[i]:
            r.append("BEN_BAD_FLAG")
        p = people.get((pid[i], year[i])) or people.get((pid[i], None))
        if p is not None and p.error:
            r.append(p.error)
        order_key.append((pid[i] or "", year[i] or 0, dis[i] or _dt.date.min, adm[i] or dis[i] or _dt.date.min,
                          ids[i] or "", i))

    states: dict = {}
    for *_, i in sorted(order_key):
        r = reasons[i]
        if r:
            continue
        p = people.get((pid[i], year[i])) or people.get((pid[i], None))
        if p is None:
            r.append("BEN_PERSON_NOT_LISTED")
            p = _Person()
        st = states.setdefault((pid[i], year[i]), _Year())
        outpatient = (vtype[i] or "").lower() in policy.outpatient_types
        start_day = adm[i] or dis[i]
        if not outpatient:
            if st.last_discharge is not None and start_day < st.last_discharge:
                r[:] = ["BEN_OVERLAPPING_STAY"]
                continue
        tc, ip = money["total_cost_cents"][i], cents_of(inpol[i])
        f = fund[i]
        money["in_policy_cents"][i] = ip
        if f in policy.waiting_funds and p.start is not None and start_day < p.start:
            status[i] = "waiting"
            r.insert(0, "BEN_WAITING_PERIOD")
            for k in STAY_MONEY[2:-1]:
                money[k][i] = 0
            money["patient_cents"][i] = tc
            continue
        status[i] = "paid"
        if tc > ip:
            r.append("BEN_OUT_OF_POLICY")
        cap_left = policy.basic_cap[f] - st.basic.get(f, 0)
        # --- basic insurance
        if outpatient:
            basic = min(cents_of(paid_out[i]), max(0, cap_left))
            if basic < cents_of(paid_out[i]):
                r.append("BEN_BASIC_CAP")
        else:
            st.admissions += 1
            ded_full, ratio = policy.basic_levels[f][level[i]]
            fac = policy.admission_factors_bp[min(st.admissions, len(policy.admission_factors_bp)) - 1]
            ded = apply_rate(ded_full, fac)
            rs = REGION_STATUSES.get((region[i] or "local").lower(), "local")
            ratio = max(0, ratio - policy.ratio_cut_bp[rs])
            if policy.ratio_cut_bp[rs] > 0:
                r.append("BEN_OUT_OF_REGION_CUT")
            under = min(ip, ded)
            deductible_borne[i] = under
            if under > 0:
                r.append("BEN_BASIC_DEDUCTIBLE")
            basic = apply_rate(ip - under, ratio)
            if basic > cap_left:
                basic = max(0, cap_left)
                r.append("BEN_BASIC_CAP")
        st.basic[f] = st.basic.get(f, 0) + basic
        # --- critical-illness insurance (inpatient stays of the funds it covers)
        crit = 0
        if not outpatient and f in policy.critical_funds:
            tilted = p.cls in policy.tilt_classes
            if not st.cap_known:
                st.cap, cont, zero = critical_cap_layers(policy, f, year[i], p.continuous, p.zero_claim,
                                                         p.reenrolled, tilted)
                st.cap_known = True
                st.zero_layer = zero
                st.cap_floor = None if st.cap is None else st.cap - zero
                st.base_cap = None if st.cap is None else st.cap - zero - cont
            thr = apply_rate(policy.critical_threshold, policy.tilt_threshold_bp) if tilted else policy.critical_threshold
            add = policy.tilt_ratio_add_bp if tilted else 0
            if tilted:
                r.append("BEN_CRITICAL_TILT")
            before, after = st.crit_base, st.crit_base + (ip - basic)
            crit = _banded(after, thr, policy.critical_bands, add) - _banded(before, thr, policy.critical_bands, add)
            if before < thr and ip - basic > 0:
                r.append("BEN_CRITICAL_THRESHOLD")
            st.crit_base = after
            if st.cap is not None:
                if st.crit_paid + crit > st.cap:
                    crit = max(0, st.cap - st.crit_paid)
                    r.append("BEN_CRITICAL_CAP")
                new = st.crit_paid + crit
                if new > st.base_cap and crit > 0:
                    r.append("BEN_CAP_INCENTIVE_USED")
                if st.zero_layer and new > st.cap_floor and not st.zero_cleared:
                    st.zero_cleared = True
                    r.append("BEN_ZERO_CLAIM_CLEARED")
            st.crit_paid += crit
            caps[i] = st.cap
        # --- medical assistance (先保险后救助)
        assist = relief = 0
        remaining = ip - basic - crit
        if p.cls is not None:
            rs = REGION_STATUSES.get((region[i] or "local").lower(), "local")
            if rs == "unfiled" and not policy.unfiled_covered:
                r.append("BEN_ASSIST_NOT_REFERRED")
            else:
                k = policy.classes[p.cls]
                thr = policy.assistance_threshold(p.cls)
                before, after = st.assist_base, st.assist_base + remaining
                assist = apply_rate(max(0, after - thr), k.ratio_bp) - apply_rate(max(0, before - thr), k.ratio_bp)
                if before < thr and remaining > 0:
                    r.append("BEN_ASSIST_THRESHOLD")
                st.assist_base = after
                if st.assist_paid + assist > k.annual_limit:
                    assist = max(0, k.annual_limit - st.assist_paid)
                    r.append("BEN_ASSIST_LIMIT")
                st.assist_paid += assist
                # 倾斜救助: the year's burden after the three tiers accumulates over the person's
                # stays; the part of a stay's burden above heavy_burden is relieved when the stay
                # is inpatient, referred (规范转诊) and in the province
                if p.cls in policy.relief_classes:
                    rest = remaining - assist
                    before, after = st.relief_base, st.relief_base + rest
                    st.relief_base = after
                    if not outpatient and referred[i] and in_prov[i]:
                        relief = apply_rate(max(0, after - policy.relief_heavy), policy.relief_ratio_bp) \
                            - apply_rate(max(0, before - policy.relief_heavy), policy.relief_ratio_bp)
                        if st.relief_paid + relief > policy.relief_limit:
                            relief = max(0, policy.relief_limit - st.relief_paid)
                            r.append("BEN_RELIEF_LIMIT")
                        if relief > 0:
                            r.append("BEN_RELIEF_PAID")
                        st.relief_paid += relief
        if not outpatient:
            st.last_discharge = dis[i]
        money["fund_basic_cents"][i] = basic
        money["fund_critical_cents"][i] = crit
        money["assistance_cents"][i] = assist + relief
        money["assistance_relief_cents"][i] = relief
        money["patient_cents"][i] = tc - basic - crit - assist - relief

    for i in range(n):
        if status[i] == "invalid":
            for k in STAY_MONEY[1:]:
                money[k][i] = None
            deductible_borne[i] = None
        elif not reasons[i]:
            reasons[i].append("BEN_PAID")
    stays = pa.table({
        "id": pa.array(ids, pa.string()), "patient_id": pa.array(pid, pa.string()),
        "year": pa.array(year, pa.int64()), "fund": pa.array(fund, pa.string()),
        "status": pa.array(status, pa.string()),
        "reason": pa.array([r[0] for r in reasons], pa.string()),
        "reasons": pa.array(["|".join(r) for r in reasons], pa.string()),
        **{k: pa.array(money[k], pa.int64()) for k in STAY_MONEY},
        "basic_deductible_cents": pa.array(deductible_borne, pa.int64()),
        "critical_cap_cents": pa.array(caps, pa.int64()),
        "personal_share": pa.array([None if v is None else v / 100.0 for v in money["patient_cents"]], pa.float64()),
    })
    return Benefits(stays, person_totals(stays, states, people))


def person_totals(stays: pa.Table, states: dict, people: dict) -> pa.Table:
    """One row per (patient_id, year): stays by status and the sums of every money column."""
    rows: dict = {}
    cols = {k: stays[k].to_pylist() for k in ("patient_id", "year", "status", *PERSON_MONEY[:2],
                                              *PERSON_MONEY[2:])}
    for i, (p, y, s) in enumerate(zip(cols["patient_id"], cols["year"], cols["status"])):
        if p is None or y is None:
            continue
        row = rows.setdefault((p, y), {"stays": 0, "paid": 0, "waiting": 0, "invalid": 0,
                                       **{k: 0 for k in PERSON_MONEY}})
        row["stays"] += 1
        row[s] += 1
        if s != "invalid":
            for k in PERSON_MONEY:
                row[k] += cols[k][i] or 0
    keys = sorted(rows)
    out = {"patient_id": [k[0] for k in keys], "year": [k[1] for k in keys]}
    for name, src in (("stays", "stays"), ("paid_stays", "paid"), ("waiting_stays", "waiting"),
                      ("invalid_stays", "invalid")):
        out[name] = [rows[k][src] for k in keys]
    for m in PERSON_MONEY:
        out[m] = [rows[k][m] for k in keys]
    cls, cap, cleared = [], [], []
    for k in keys:
        p = people.get(k) or people.get((k[0], None))
        cls.append(p.cls if p is not None else None)
        st = states.get(k)
        cap.append(st.cap if st is not None and st.cap_known else None)
        cleared.append(bool(st.zero_cleared) if st is not None else False)
    return pa.table({"patient_id": pa.array(out["patient_id"], pa.string()), "year": pa.array(out["year"], pa.int64()),
                     "assistance_class": pa.array(cls, pa.string()),
                     **{k: pa.array(v, pa.int64()) for k, v in out.items() if k not in ("patient_id", "year")},
                     "critical_cap_cents": pa.array(cap, pa.int64()),
                     "zero_claim_cleared": pa.array(cleared, pa.bool_())})


def write_benefits(records, persons, policy_path, out, totals=None) -> Benefits:
    """Read, compute and write the stays (and the person-year totals) atomically."""
    from grouper.io import write_table
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
