"""An independent recomputation of the patient's side (三重制度) from docs/benefits.md alone.

This module does not import drgdip.weights.settlement.benefits (a test below checks). It reads the policy
TOML with tomllib, the demo's (or the CLI's) input files with pyarrow / csv, and recomputes every
stay with the rules as docs/benefits.md writes them ("The rules, in order, for each stay"), in
plain Decimal arithmetic; then every money value, status and reason list of the calculator's
output must agree to the cent. Written from the docs, not from the code: where the two disagree
the docs were made precise (or the code fixed), never this module bent to the code.
"""
from __future__ import annotations

import ast
import calendar
import csv
import datetime as dt
import subprocess
import sys
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "weights" / "settlement" / "benefits_policy.toml"
FUNDS = ("employee", "resident")
ONE = Decimal(1)

# docs/benefits.md, "Reasons": the order a row's reasons are listed in
FLAG_ORDER = ["BEN_WAITING_PERIOD", "BEN_OUT_OF_POLICY", "BEN_OUT_OF_REGION_CUT", "BEN_BASIC_DEDUCTIBLE",
              "BEN_BASIC_CAP", "BEN_OUTPATIENT_LIMIT", "BEN_CRITICAL_TILT", "BEN_CRITICAL_THRESHOLD",
              "BEN_CRITICAL_CAP", "BEN_CAP_INCENTIVE_USED", "BEN_ZERO_CLAIM_CLEARED", "BEN_LARGE_CLAIM_THRESHOLD",
              "BEN_LARGE_CLAIM_CAP", "BEN_ASSIST_NOT_REFERRED", "BEN_ASSIST_THRESHOLD", "BEN_ASSIST_LIMIT",
              "BEN_RELIEF_LIMIT", "BEN_RELIEF_PAID", "BEN_PERSON_NOT_LISTED"]
INVALID_ORDER = ["BEN_NO_PATIENT", "BEN_UNKNOWN_FUND", "BEN_DATE_ORDER", "BEN_BAD_COST", "BEN_NO_LEVEL",
                 "BEN_BAD_REGION_STATUS", "BEN_BAD_VISIT_TYPE", "BEN_BAD_FLAG", "BEN_UNKNOWN_CLASS",
                 "BEN_BAD_PERSON", "BEN_OVERLAPPING_STAY"]
TRUE, FALSE = {"1", "true", "t", "yes", "y", "是"}, {"0", "false", "f", "no", "n", "否"}


# ---------------------------------------------------------------- arithmetic (docs: "Money is int64 cents")

def dec(x) -> Decimal:
    return Decimal(repr(x)) if isinstance(x, float) else Decimal(str(x))


def cents(yuan) -> Decimal:
    """A yuan amount as written → cents, half up (away from zero)."""
    return (dec(yuan) * 100).quantize(ONE, ROUND_HALF_UP)


def r(x: Decimal, ratio: Decimal) -> Decimal:
    """r(x) = x × ratio rounded half up to the cent, 0 for x ≤ 0."""
    return (x * ratio).quantize(ONE, ROUND_HALF_UP) if x > 0 else Decimal(0)


def banded(amount: Decimal, threshold: Decimal, bands, add: Decimal) -> Decimal:
    """F(A): Σ band ratio × part of A inside the band and above the threshold, rounded once."""
    total, lo = Decimal(0), threshold
    for up, ratio in bands:
        hi = amount if up is None else min(amount, up)
        if hi > lo:
            total += (hi - lo) * min(ONE, ratio + add)
        if up is not None:
            lo = max(lo, up)
    return total.quantize(ONE, ROUND_HALF_UP)


def add_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    y += d.year
    return dt.date(y, m + 1, min(d.day, calendar.monthrange(y, m + 1)[1]))


# ---------------------------------------------------------------- policy (the default file, as TOML)

def policy() -> dict:
    with POLICY.open("rb") as fh:
        p = tomllib.load(fh)
    labels = {}
    for f, labs in p["funds"].items():
        for lab in labs:
            labels[lab.lower()] = f
    p["_fund_of"] = labels
    p["_level_of"] = {x.lower(): code for code, xs in p["labels"]["level"].items() for x in xs}
    p["_region_of"] = {x.lower(): code for code, xs in p["labels"]["region_status"].items() for x in xs}
    cls = {}
    for code, c in p["assistance"]["classes"].items():
        for lab in (code, c.get("zh", ""), *c.get("aliases", [])):
            if lab:
                cls[lab.strip().lower()] = code
    p["_class_of"] = cls
    return p


def bands_of(t: dict):
    return [(None if "up_to" not in b else cents(b["up_to"]), dec(b["ratio"])) for b in t["bands"]]


# ---------------------------------------------------------------- inputs

def day(v):
    """A date: YYYY-MM-DD (a time after it ignored) or YYYYMMDD; None if empty; "bad" if unreadable."""
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    s = str(v).strip()
    if not s:
        return None
    s = s[:10]
    try:
        if len(s) == 8 and s.isdigit():
            return dt.date(int(s[:4]), int(s[4:6]), int(s[6:]))
        return dt.date.fromisoformat(s)
    except ValueError:
        return "bad"


def flag(v, default):
    """(value, bad)."""
    if v is None:
        return default, False
    if isinstance(v, bool):
        return v, False
    t = str(v).strip().lower()
    if t == "":
        return default, False
    if t in TRUE:
        return True, False
    if t in FALSE:
        return False, False
    return default, True


def number(v):
    """A cost: (cents or None, bad)."""
    if v is None or (isinstance(v, float) and v != v):
        return None, False
    try:
        return cents(float(v)), False
    except (TypeError, ValueError):
        return None, True


def read_persons(path: Path, p: dict) -> dict:
    out = {}
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            pid = (row.get("patient_id") or "").strip()
            if not pid:
                continue
            year = int(row["year"]) if (row.get("year") or "").strip() else None
            per = {"cls": None, "error": None}
            c = (row.get("assistance_class") or "").strip().lower()
            if c and c not in ("none", "无"):
                per["cls"] = p["_class_of"].get(c)
                if per["cls"] is None:
                    per["error"] = "BEN_UNKNOWN_CLASS"
            bad = False
            for k in ("break_years", "repaid_years", "continuous_years", "zero_claim_years"):
                v = (row.get(k) or "").strip()
                if v and not (v.isdigit()):
                    bad = True
                per[k] = int(v) if v.isdigit() else 0
            for k, default in (("collective_period", True), ("waiting_exempt", False), ("reenrolled", False)):
                per[k], b = flag(row.get(k), default)
                bad |= b
            e = day(row.get("enrolment_date"))
            bad |= e == "bad"
            per["enrolment"] = None if e == "bad" else e
            if bad:
                per["error"] = per["error"] or "BEN_BAD_PERSON"
            if (pid, year) in out:
                per["error"] = "BEN_BAD_PERSON"
            out[(pid, year)] = per
    return out


# ---------------------------------------------------------------- the rules (docs/benefits.md, steps 0-6)

def waiting_start(p: dict, per: dict, fund: str):
    w = p["waiting"]
    e = per["enrolment"]
    if e is None or e.year < w["from_year"] or per["waiting_exempt"] or fund not in w["funds"]:
        return None
    brk, rep = per["break_years"], per["repaid_years"]
    if per["collective_period"] and brk == 0:
        return None
    months = w["fixed_months"] + max(0, w["months_per_break_year"] * brk - w["months_repaid_per_year"] * min(rep, brk))
    if brk >= w["long_break_years"]:
        months = max(months, w["long_break_min_months"])
    return add_months(e, months) if months else None


def inc_any(p: dict) -> bool:
    return p["critical"]["incentive"]["zero_claim_cleared_by"] == "any_raise"


def cap_layers(p: dict, per: dict, fund: str, year: int):
    """(cap or None, raises, zero-claim raise) of a fund's second tier for a person-year."""
    if fund in p["large_claim"]["funds"]:
        return cents(p["large_claim"]["annual_cap"]), Decimal(0), Decimal(0)
    crit = p["critical"]
    if per["cls"] in crit["tilt"]["classes"] and crit["tilt"]["no_cap"]:
        return None, Decimal(0), Decimal(0)
    inc = crit["incentive"]
    c = cents(crit["annual_cap"])
    base = c - r(c, dec(inc["reenrolled_cap_cut"])) if per["reenrolled"] else c
    if fund not in inc["funds"] or year < inc["from_year"]:
        return base, Decimal(0), Decimal(0)
    room = r(c, dec(inc["max_share_of_cap"]))
    cont = min(cents(inc["continuous_step"]) * max(0, per["continuous_years"] - inc["after_years"]), room)
    zero = min(cents(inc["zero_claim_step"]) * per["zero_claim_years"], room - cont)
    return base + cont + zero, cont + zero, zero


def recompute(stays: list[dict], persons: dict | None, p: dict) -> dict:
    """id → the row the docs say the calculator writes."""
    out = {}
    ordinary = {"cls": None, "error": None, "enrolment": None, "waiting_exempt": False, "collective_period": True,
                "break_years": 0, "repaid_years": 0, "continuous_years": 0, "zero_claim_years": 0, "reenrolled": False}
    outpatient = [x.lower() for x in p["outpatient"]["visit_types"]]
    inpatient = [x.lower() for x in p["labels"]["inpatient"]]
    rows = []
    for k, s in enumerate(stays):
        bad = []
        pid = (str(s["patient_id"]).strip() or None) if s.get("patient_id") is not None else None
        if pid is None:
            bad.append("BEN_NO_PATIENT")
        fund = p["_fund_of"].get(str(s.get("fund") or "").strip().lower())
        if fund is None:
            bad.append("BEN_UNKNOWN_FUND")
        adm, dis = day(s.get("admission_date")), day(s.get("discharge_date"))
        if dis is None or dis == "bad" or adm == "bad" or (adm is not None and adm > dis):
            bad.append("BEN_DATE_ORDER")
        vt = str(s.get("visit_type") or "").strip().lower()
        outp = vt in outpatient
        tc, tb = number(s.get("total_cost"))
        ip, ib = number(s.get("in_policy_cost")) if "in_policy_cost" in s else (tc, tb)
        paid, pb = number(s.get("fund_paid"))
        if (tc is None or ip is None or tb or ib or tc < 0 or ip < 0 or ip > tc
                or (outp and (pb or (paid is not None and (paid < 0 or paid > ip))))):
            bad.append("BEN_BAD_COST")
        level = p["_level_of"].get(str(s.get("hospital_level") or "").strip().lower())
        if not outp and level is None:
            bad.append("BEN_NO_LEVEL")
        rs = str(s.get("region_status") or "").strip().lower()
        region = p["_region_of"].get(rs) if rs else "local"
        if not outp and region is None:
            bad.append("BEN_BAD_REGION_STATUS")
        region = region or "local"
        if vt and not outp and vt not in inpatient:
            bad.append("BEN_BAD_VISIT_TYPE")
        referred, b1 = flag(s.get("referred"), False)
        in_prov, b2 = flag(s.get("in_province"), True)
        if b1 or b2:
            bad.append("BEN_BAD_FLAG")
        year = dis.year if isinstance(dis, dt.date) else None
        per = None if persons is None else persons.get((pid, year)) or persons.get((pid, None))
        listed = per is not None
        per = per or ordinary
        if per["error"]:
            bad.append(per["error"])
        start = adm if isinstance(adm, dt.date) else dis
        rows.append(dict(k=k, id=s.get("id"), pid=pid, fund=fund, year=year, adm=adm, dis=dis, start=start,
                         outp=outp, tc=tc, ip=ip, paid=paid, level=level, region=region, referred=referred,
                         in_prov=in_prov, per=per, listed=listed, bad=bad))
    valid = [x for x in rows if not x["bad"]]
    valid.sort(key=lambda x: (x["pid"], x["year"], x["dis"], x["start"], "" if x["id"] is None else x["id"], x["k"]))
    classes = p["assistance"]["classes"]
    income = cents(p["assistance"]["per_capita_income"])
    relief_t = p["assistance"]["tilt"]
    groups: dict = {}
    for x in valid:
        groups.setdefault((x["pid"], x["year"]), []).append(x)
    cleared = {}
    for key, g in groups.items():
        acc = {"admissions": 0, "basic": {f: Decimal(0) for f in FUNDS}, "op_ded": {f: Decimal(0) for f in FUNDS},
               "op_paid": {f: Decimal(0) for f in FUNDS}, "A": {f: Decimal(0) for f in FUNDS},
               "tier": {f: Decimal(0) for f in FUNDS}, "B": Decimal(0), "G": Decimal(0), "C": Decimal(0),
               "relief": Decimal(0), "last_dis": None}
        cleared[key] = False
        for x in g:
            x["flags"] = set()
            x.update(basic=Decimal(0), crit=Decimal(0), assist=Decimal(0), relief=Decimal(0), ded=Decimal(0), cap=None)
            if not x["outp"] and acc["last_dis"] is not None and x["start"] < acc["last_dis"]:
                x["status"] = "invalid"
                x["bad"] = ["BEN_OVERLAPPING_STAY"]
                continue
            f, per = x["fund"], x["per"]
            ws = waiting_start(p, per, f)
            if ws is not None and x["start"] < ws:                              # step 1
                x["status"], x["flags"] = "waiting", {"BEN_WAITING_PERIOD"}
                if not x["outp"]:
                    acc["last_dis"] = x["dis"]
                continue
            x["status"] = "paid"
            fl = x["flags"]
            if x["tc"] > x["ip"]:
                fl.add("BEN_OUT_OF_POLICY")
            cap_left = cents(p["basic"][f]["annual_cap"]) - acc["basic"][f]        # step 2
            if x["outp"]:
                rules = p["outpatient"][f]
                if x["paid"] is not None:
                    basic = x["paid"]
                else:
                    under = min(x["ip"], cents(rules["deductible"]) - acc["op_ded"][f])
                    acc["op_ded"][f] += under
                    x["ded"] = under
                    if under > 0:
                        fl.add("BEN_BASIC_DEDUCTIBLE")
                    basic = r(x["ip"] - under, dec(rules["ratio"]))
                    left = cents(rules["annual_limit"]) - acc["op_paid"][f]
                    if basic > left:
                        basic = max(Decimal(0), left)
                        fl.add("BEN_OUTPATIENT_LIMIT")
                    acc["op_paid"][f] += basic
                if p["outpatient"]["counts_against_inpatient_cap"]:
                    if basic > cap_left:
                        basic = max(Decimal(0), cap_left)
                        fl.add("BEN_BASIC_CAP")
                    acc["basic"][f] += basic
            else:
                acc["admissions"] += 1
                facs = p["basic"]["admission_deductible_factors"]
                fac = dec(facs[min(acc["admissions"], len(facs)) - 1])
                lv = p["basic"][f]["levels"][x["level"]]
                ded = r(cents(lv["deductible"]), fac)
                cut = Decimal(0) if x["region"] == "local" else dec(p["basic"]["out_of_region_ratio_cut"][x["region"]])
                ratio = max(Decimal(0), dec(lv["ratio"]) - cut)
                if cut > 0:
                    fl.add("BEN_OUT_OF_REGION_CUT")
                under = min(x["ip"], ded)
                x["ded"] = under
                if under > 0:
                    fl.add("BEN_BASIC_DEDUCTIBLE")
                basic = r(x["ip"] - under, ratio)
                if basic > cap_left:
                    basic = max(Decimal(0), cap_left)
                    fl.add("BEN_BASIC_CAP")
                acc["basic"][f] += basic
            x["basic"] = basic
            tier = 1 if f in p["critical"]["funds"] else 2 if f in p["large_claim"]["funds"] else 0
            crit = Decimal(0)
            if not x["outp"] and tier:                                          # step 3
                t = p["critical"] if tier == 1 else p["large_claim"]
                cap, raises, zero = cap_layers(p, per, f, x["year"])
                tilt = tier == 1 and per["cls"] in p["critical"]["tilt"]["classes"]
                thr = cents(t["threshold"])
                add = Decimal(0)
                if tilt:
                    thr = r(thr, dec(p["critical"]["tilt"]["threshold_factor"]))
                    add = dec(p["critical"]["tilt"]["ratio_add"])
                    fl.add("BEN_CRITICAL_TILT")
                elig = x["ip"] - basic
                before, after = acc["A"][f], acc["A"][f] + elig
                crit = banded(after, thr, bands_of(t), add) - banded(before, thr, bands_of(t), add)
                if before < thr and elig > 0:
                    fl.add("BEN_CRITICAL_THRESHOLD" if tier == 1 else "BEN_LARGE_CLAIM_THRESHOLD")
                acc["A"][f] = after
                if cap is not None:
                    if acc["tier"][f] + crit > cap:
                        crit = max(Decimal(0), cap - acc["tier"][f])
                        fl.add("BEN_CRITICAL_CAP" if tier == 1 else "BEN_LARGE_CLAIM_CAP")
                    new = acc["tier"][f] + crit
                    if new > cap - raises and crit > 0:
                        fl.add("BEN_CAP_INCENTIVE_USED")
                    floor = cap - raises if inc_any(p) else cap - zero
                    if zero > 0 and new > floor and not cleared[key]:
                        cleared[key] = True
                        fl.add("BEN_ZERO_CLAIM_CLEARED")
                acc["tier"][f] += crit
                x["cap"] = cap
            x["crit"] = crit
            burden = x["ip"] - basic - crit                                     # step 4
            c = per["cls"]
            if c is not None:
                if x["region"] == "unfiled" and not p["assistance"]["unfiled_out_of_region_covered"]:
                    fl.add("BEN_ASSIST_NOT_REFERRED")
                else:
                    cl = classes[c]
                    thr = r(income, dec(cl["threshold_share"]))
                    before, after = acc["B"], acc["B"] + burden
                    assist = r(max(Decimal(0), after - thr), dec(cl["ratio"])) \
                        - r(max(Decimal(0), before - thr), dec(cl["ratio"]))
                    if before < thr and burden > 0:
                        fl.add("BEN_ASSIST_THRESHOLD")
                    acc["B"] = after
                    limit = cents(cl["annual_limit"])
                    if acc["G"] + assist > limit:
                        assist = max(Decimal(0), limit - acc["G"])
                        fl.add("BEN_ASSIST_LIMIT")
                    acc["G"] += assist
                    x["assist"] = assist
                    if c in relief_t["classes"]:                               # step 5
                        before, after = acc["C"], acc["C"] + burden - assist
                        acc["C"] = after
                        if not x["outp"] and x["referred"] and x["in_prov"]:
                            heavy, ratio = cents(relief_t["heavy_burden"]), dec(relief_t["ratio"])
                            relief = r(max(Decimal(0), after - heavy), ratio) - r(max(Decimal(0), before - heavy), ratio)
                            if acc["relief"] + relief > cents(relief_t["annual_limit"]):
                                relief = max(Decimal(0), cents(relief_t["annual_limit"]) - acc["relief"])
                                fl.add("BEN_RELIEF_LIMIT")
                            if relief > 0:
                                fl.add("BEN_RELIEF_PAID")
                            acc["relief"] += relief
                            x["relief"] = relief
            if not x["outp"]:
                acc["last_dis"] = x["dis"]
    for x in rows:
        if x["bad"]:
            x["status"] = "invalid"
        if x["status"] == "invalid":
            reasons = [c for c in INVALID_ORDER if c in x["bad"]]
            row = {k: None for k in ("in_policy_cents", "fund_basic_cents", "fund_critical_cents", "assistance_cents",
                                     "assistance_relief_cents", "patient_cents", "basic_deductible_cents",
                                     "critical_cap_cents", "personal_share")}
        else:
            fl = set(x["flags"])
            if not x["listed"]:
                fl.add("BEN_PERSON_NOT_LISTED")
            reasons = [c for c in FLAG_ORDER if c in fl]
            patient = x["tc"] - x["basic"] - x["crit"] - x["assist"] - x["relief"]     # step 6
            row = {"in_policy_cents": x["ip"], "fund_basic_cents": x["basic"], "fund_critical_cents": x["crit"],
                   "assistance_cents": x["assist"] + x["relief"], "assistance_relief_cents": x["relief"],
                   "patient_cents": patient, "basic_deductible_cents": x["ded"], "critical_cap_cents": x["cap"],
                   "personal_share": patient / 100}
        row.update(status=x["status"], reasons="|".join(reasons or ["BEN_PAID"]),
                   total_cost_cents=x["tc"] if "BEN_BAD_COST" not in x["bad"] else None,
                   year=x["year"], fund=x["fund"])
        out[x["k"]] = row
    return out, cleared


MONEY = ("total_cost_cents", "in_policy_cents", "fund_basic_cents", "fund_critical_cents", "assistance_cents",
         "assistance_relief_cents", "patient_cents", "basic_deductible_cents", "critical_cap_cents")


def compare(stays_in: pa.Table, persons_csv: Path | None, out: pa.Table, totals: pa.Table | None = None,
            p: dict | None = None) -> dict:
    """Recompute and compare every row; returns counts of what was checked."""
    p = p or policy()
    want, cleared = recompute(stays_in.to_pylist(), None if persons_csv is None else read_persons(persons_csv, p), p)
    got = out.to_pylist()
    assert len(got) == len(want)
    n_money = n_other = 0
    for k, g in enumerate(got):
        w = want[k]
        for c in MONEY:
            gv = g[c]
            wv = None if w[c] is None else int(w[c])
            assert gv == wv, (g["id"], c, gv, wv)
            n_money += 1
        ps = None if w["personal_share"] is None else w["personal_share"]
        assert (g["personal_share"] is None) == (ps is None), g["id"]
        if ps is not None:
            assert cents(g["personal_share"]) == ps * 100, (g["id"], g["personal_share"], ps)
        n_money += 1
        for c in ("status", "reasons", "year", "fund"):
            assert g[c] == w[c], (g["id"], c, g[c], w[c])
            n_other += 1
        assert g["reason"] == w["reasons"].split("|")[0]
        n_other += 1
    n_totals = 0
    if totals is not None:
        sums: dict = {}
        for k, w in want.items():
            if w["status"] == "invalid":
                continue
            key = (got[k]["patient_id"], w["year"])
            s = sums.setdefault(key, {c: Decimal(0) for c in MONEY if c != "critical_cap_cents"})
            for c in s:
                s[c] += w[c]
        for t in totals.to_pylist():
            s = sums.get((t["patient_id"], t["year"]))
            if s is None:       # a person-year of invalid stays only
                assert t["paid_stays"] + t["waiting_stays"] == 0
                continue
            for c, v in s.items():
                assert t[c] == int(v), (t["patient_id"], c, t[c], v)
                n_totals += 1
            assert t["zero_claim_cleared"] == cleared.get((t["patient_id"], t["year"]), False)
            n_totals += 1
    # every stay reconciles to its total cost
    for w in want.values():
        if w["status"] != "invalid":
            assert w["fund_basic_cents"] + w["fund_critical_cents"] + w["assistance_cents"] + w["patient_cents"] \
                == w["total_cost_cents"]
    return {"rows": len(got), "money": n_money, "other": n_other, "totals": n_totals}


# ---------------------------------------------------------------- the tests

def test_this_module_does_not_import_the_calculator():
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not any("benefits" in x for x in names)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from drgdip.synth.demo import run_demo
    out = tmp_path_factory.mktemp("bdemo") / "demo"
    # 2026: from 2025 on seed 003's waiting periods and cap incentives apply
    run_demo(out, seed=11, progress=False, records_per_month=60, hospitals=4, year=2026)
    return out


def test_demo_benefits_agree_with_the_docs_to_the_cent(demo):
    stays = pq.read_table(demo / "benefit_stays.parquet")
    out = pq.read_table(demo / "benefits.parquet")
    n = compare(stays, demo / "persons.csv", out)
    st = out["status"].to_pylist()
    assert n["rows"] > 500 and st.count("waiting") > 0 and st.count("paid") > 500
    print(f"\nindependent recomputation of the demo: {n}")


def test_demo_inputs_give_the_demo_output_on_the_command_line(demo, tmp_path):
    r = subprocess.run([sys.executable, "-m", "drgdip", "benefits", str(demo / "benefit_stays.parquet"),
                        "--persons", str(demo / "persons.csv"), "-o", str(tmp_path / "b.parquet")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "b.parquet").equals(pq.read_table(demo / "benefits.parquet"))


def _rich_case(seed: int, n: int = 2500, persons: int = 300):
    """Stays and persons that reach every rule: outpatient rows with and without fund_paid,
    out-of-region stays, both funds, waiting periods, incentives, caps, bad rows."""
    rng = np.random.default_rng(seed)
    pid = rng.integers(0, persons, n).astype(str)
    start = np.datetime64("2026-01-01") + rng.integers(0, 360, n)
    los = rng.integers(0, 20, n)
    total = np.round(rng.lognormal(10.0, 1.3, n), 2)
    inpol = np.round(total * rng.uniform(0.5, 1.0, n), 2)
    outp = rng.random(n) < 0.2
    paid = np.where(outp & (rng.random(n) < 0.4), np.round(inpol * 0.5, 2), np.nan)
    level = rng.choice(["1", "2", "3", "三级", "x"], n, p=[0.3, 0.3, 0.3, 0.08, 0.02]).astype(object)
    level[outp] = None
    rec = pa.table({
        "id": [f"s{i:05d}" for i in range(n)], "patient_id": pid,
        "fund": rng.choice(["resident", "employee", "居民", "310", "military"], n, p=[0.45, 0.3, 0.1, 0.14, 0.01]),
        "admission_date": (start).astype(str), "discharge_date": (start + los).astype(str),
        "total_cost": total, "in_policy_cost": inpol, "fund_paid": paid,
        "visit_type": np.where(outp, "outpatient_chronic", "inpatient"),
        "hospital_level": level, "referred": rng.random(n) < 0.6,
        "region_status": rng.choice(["local", "filed", "unfiled", "已备案"], n, p=[0.75, 0.1, 0.1, 0.05])})
    classes = ["", "", "", "低保", "特困", "低保边缘", "返贫致贫", "因病致贫", "extreme_poverty"]
    brk = rng.integers(0, 7, persons) * (rng.random(persons) < 0.3)
    per = pa.table({
        "patient_id": np.arange(persons).astype(str), "year": np.full(persons, 2026),
        "assistance_class": rng.choice(classes, persons),
        "enrolment_date": np.where(rng.random(persons) < 0.3,
                                   (np.datetime64("2025-10-01") + rng.integers(0, 200, persons)).astype(str), ""),
        "collective_period": rng.random(persons) < 0.5, "break_years": brk,
        "repaid_years": np.minimum(brk, rng.integers(0, 7, persons)),
        "continuous_years": rng.integers(0, 14, persons), "zero_claim_years": rng.integers(0, 4, persons),
        "reenrolled": brk > 0})
    return rec, per


def test_cli_on_stays_that_reach_every_rule_agrees_with_the_docs(tmp_path):
    import pyarrow.csv as pacsv
    rec, per = _rich_case(5)
    pq.write_table(rec, tmp_path / "stays.parquet")
    pacsv.write_csv(per, tmp_path / "persons.csv")
    policy_file = tmp_path / "region.toml"     # a small critical cap so that caps and incentives bite
    policy_file.write_text("[critical]\nannual_cap = 30000.00\n[large_claim]\nannual_cap = 40000.00\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "drgdip", "benefits", str(tmp_path / "stays.parquet"),
                        "--persons", str(tmp_path / "persons.csv"), "--policy", str(policy_file),
                        "-o", str(tmp_path / "b.parquet"), "--totals", str(tmp_path / "t.parquet")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    p = policy()       # the region file laid over the defaults (docs/benefits.md: tables merge key by key)
    p["critical"]["annual_cap"], p["large_claim"]["annual_cap"] = 30000.00, 40000.00
    n = compare(rec, tmp_path / "persons.csv", pq.read_table(tmp_path / "b.parquet"),
                pq.read_table(tmp_path / "t.parquet"), p)
    # the other reading of 零报销激励额度清零
    policy_file.write_text(policy_file.read_text(encoding="utf-8")
                           + '[critical.incentive]\nzero_claim_cleared_by = "any_raise"\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "drgdip", "benefits", str(tmp_path / "stays.parquet"),
                        "--persons", str(tmp_path / "persons.csv"), "--policy", str(policy_file),
                        "-o", str(tmp_path / "b2.parquet")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    p["critical"]["incentive"]["zero_claim_cleared_by"] = "any_raise"
    n2 = compare(rec, tmp_path / "persons.csv", pq.read_table(tmp_path / "b2.parquet"), None, p)
    assert pq.read_table(tmp_path / "b2.parquet")["reasons"] != pq.read_table(tmp_path / "b.parquet")["reasons"]
    n = {k: n[k] + n2[k] for k in n}
    out = pq.read_table(tmp_path / "b.parquet")
    codes = {c for x in out["reasons"].to_pylist() for c in x.split("|")}
    # the case reaches the rules it is meant to check
    for c in ("BEN_WAITING_PERIOD", "BEN_OUTPATIENT_LIMIT", "BEN_CRITICAL_CAP", "BEN_CAP_INCENTIVE_USED",
              "BEN_ZERO_CLAIM_CLEARED", "BEN_LARGE_CLAIM_CAP", "BEN_ASSIST_NOT_REFERRED", "BEN_RELIEF_PAID",
              "BEN_BASIC_CAP", "BEN_OUT_OF_REGION_CUT", "BEN_OVERLAPPING_STAY", "BEN_NO_LEVEL", "BEN_UNKNOWN_FUND"):
        assert c in codes, c
    print(f"\nindependent recomputation of the CLI case: {n}")
