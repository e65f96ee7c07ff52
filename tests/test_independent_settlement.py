"""The demo's settlement recomputed from the docs alone (tests/independent_settlement.py)
agrees with every value it writes, to the cent; the checker itself can fail, refuses rules it
does not know, and reproduces the docs' worked examples (settlement.md §2-§4)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from independent_settlement import (
    DOC_DEFAULTS,
    RuleNotCovered,
    check_demo,
    check_month,
    check_year,
    decision_statuses,
    dip_table,
    largest_remainder,
    read_decisions,
    read_policy,
    recompute_month,
    step_advance,
    step_annual,
    step_band_adjustment,
    step_case_amounts,
    step_case_points,
    step_withholding,
    with_defaults,
)

REPO = Path(__file__).resolve().parents[1]
MONEY = {("cases.parquet", "amount"), ("cases.parquet", "fund_amount"), ("hospitals.csv (month)", "withheld"),
         ("hospitals.csv (month)", "paid"), ("hospitals.csv (month)", "held"), ("hospitals.csv (year)", "payment"),
         ("hospitals.csv (year)", "adjustment"), ("hospitals.csv (year)", "balance"),
         ("hospitals.csv (year)", "quality_refund"), ("hospitals.csv (year)", "quality_kept"),
         ("hospitals.csv (year)", "cap_cut"), ("hospitals.csv (year)", "monthly_held"),
         ("summary.json (year)", "budget_spent"), ("summary.json (year)", "reserve"),
         ("summary.json (year)", "reserve_used"), ("summary.json (year)", "spend_before_cap"),
         ("summary.json (year)", "cap_cut"), ("summary.json (month)", "held"), ("ledger annual", "balance_cents")}
# the rules the demo turns on, each with a value compared that it decides
RULES = {"per_diem": ("cases.parquet", "payment_method"), "incentives": ("hospitals.csv (year)", "settled_points"),
         "quality": ("hospitals.csv (year)", "quality_reason"), "projected": ("summary.json (year)",
                                                                              "projected_point_value"),
         "dip": ("cases.parquet (dip)", "dip_adjusted_score"),
         "special_review": ("cases.parquet", "review_status"), "decisions": ("decisions.csv", "rows (id, status, reason)"),
         "readmission": ("cases.parquet", "readmission_of"), "held": ("hospitals.csv (month)", "held_cases")}


# demo_dir: the small demo of tests/conftest.py, run once per session (shared with
# test_independent_rules.py)


@pytest.fixture(scope="session")
def docs_report(demo_dir):
    return check_demo(demo_dir)


def _drg(report, key) -> bool:
    return "(dip)" not in key[0]


def test_demo_recomputed_from_the_docs_agrees_to_the_cent(demo_dir, docs_report):
    """Both regions (DRG, and DIP in demo/dip/) from the docs as written: every value agrees."""
    report = docs_report
    print(report.text())
    assert report.total_differ == 0, report.text()
    assert report.total_compared > 90_000
    for key in MONEY:
        assert report.compared[key] > 0, key
    for rule, key in RULES.items():
        assert report.compared[key] > 0, rule
    # every case of the year is compared for its points and its amount, in both regions
    for region, name in (("settled", "cases.parquet"), ("dip/settled", "cases.parquet (dip)")):
        n_cases = sum(pq.read_metadata(p).num_rows for p in (demo_dir / region).glob("*/cases.parquet"))
        assert report.compared[(name, "points")] == n_cases
        assert report.compared[(name, "amount")] == n_cases
    cases = pd.concat(pq.read_table(p).to_pandas() for p in sorted((demo_dir / "settled").glob("*/cases.parquet")))
    assert {"drg", "per_diem", "fee_for_service", "none"} <= set(cases["payment_method"])


def _over_quota_stays(demo_dir, region="settled"):
    out = []
    for p in sorted((demo_dir / region).glob("*/cases.parquet")):
        c = pq.read_table(p).to_pandas()
        if "review_status" in c.columns:
            hit = (c["review_status"] == "over_quota") & c["pricing_reason"].isin(["INCOMPLETE_STAY", "SHORT_STAY"])
            out += [f"{p.parent.name} {i}" for i in c.loc[hit, "id"]]
    return out


def test_the_dip_reference_mean_reading_matters(demo_dir, docs_report):
    """settlement.md "DIP settlement" 2: ratio = cost ÷ (reference mean × 辅助目录 coefficient).
    Read without the coefficient, every DIP case whose coefficient is not 1 would differ in
    group_mean_cost and cost_ratio: the demo has such cases, so the check has teeth."""
    plain = check_demo(demo_dir, dip_mean_times_coefficient=False)
    grouped = 0
    for p in sorted((demo_dir / "dip" / "settled").glob("*/cases.parquet")):
        c = pq.read_table(p).to_pandas()
        grouped += int((c["cost_ratio"].notna() & (c["dip_coefficient"] != 1.0)).sum())
    assert plain.differ[("cases.parquet (dip)", "group_mean_cost")] == grouped > 0
    assert docs_report.differ[("cases.parquet (dip)", "group_mean_cost")] == 0


def test_checker_finds_a_cent_that_is_off(demo_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(demo_dir, bad)
    month = sorted(p for p in (bad / "settled").iterdir() if len(p.name) == 7)[0]
    cases = pq.read_table(month / "cases.parquet")
    amount = cases.column("amount").to_pylist()
    i = next(j for j, a in enumerate(amount) if a is not None)
    amount[i] = round(amount[i] + 0.01, 2)
    cases = cases.set_column(cases.schema.get_field_index("amount"), "amount", pa.array(amount, pa.float64()))
    pq.write_table(cases, month / "cases.parquet")
    hosp = pd.read_csv(month / "hospitals.csv", dtype=str, keep_default_na=False)
    hosp.loc[0, "withheld"] = str(Decimal(hosp.loc[0, "withheld"]) - Decimal("0.01"))
    hosp.to_csv(month / "hospitals.csv", index=False, quoting=1)
    base = check_demo(demo_dir)
    report = check_demo(bad)
    assert report.differ[("cases.parquet", "amount")] == 1
    assert report.differ[("hospitals.csv (month)", "withheld")] == 1
    assert report.total_differ == base.total_differ + 2


@pytest.mark.parametrize("extra, rule", [
    ('[per_diem]\nday_points = 80\n', "rule per_diem.day_points not covered"),
    ('[point_value]\nprojected = "budget"\n', "rule point_value.projected = 'budget' not covered"),
    ('[dip]\nmin_cases = 5\n', "rule dip not covered"),
    ('[dip_settlement]\npool = "merged"\n', "rule dip_settlement.pool = 'merged' not covered"),
    ('[incomplete_stays]\npayment = "per_diem"\n', "rule incomplete_stays.payment = 'per_diem' not covered"),
    ('[bundles]\nx = 1\n', "rule bundles not covered"),
    ('[settlement]\nreserve_share = 0.02\n', "rule settlement.reserve_share not covered"),
    ('[deviation]\ngroup_mean = "median"\n', "rule deviation.group_mean = 'median' not covered"),
    ('[region]\nform = "fee"\n', "rule region.form = 'fee' not covered"),
])
def test_a_rule_the_checker_does_not_know_is_refused(tmp_path, extra, rule):
    p = tmp_path / "policy.toml"
    p.write_text('[region]\nname = "x"\n' + extra if not extra.startswith("[region]") else extra, encoding="utf-8")
    with pytest.raises(RuleNotCovered, match=rule.replace("(", r"\(").replace(")", r"\)")):
        read_policy(p)


def test_an_unknown_case_type_in_the_output_is_refused(demo_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(demo_dir, bad)
    month = sorted(p for p in (bad / "settled").iterdir() if len(p.name) == 7)[0]
    cases = pq.read_table(month / "cases.parquet")
    types = cases.column("case_type").to_pylist()
    types[0] = "bundled"
    cases = cases.set_column(cases.schema.get_field_index("case_type"), "case_type", pa.array(types))
    pq.write_table(cases, month / "cases.parquet")
    with pytest.raises(RuleNotCovered, match="bundled.*not covered"):
        check_demo(bad)


def test_the_docs_defaults_are_the_defaults_file():
    """policy.md's default column (as DOC_DEFAULTS transcribes it) = weights/settlement/policy_defaults.toml."""
    defaults = tomllib.loads((REPO / "weights" / "settlement" / "policy_defaults.toml").read_text(encoding="utf-8"))
    for section, fields in DOC_DEFAULTS.items():
        for name, value in fields.items():
            if isinstance(value, dict) and not value:
                continue
            assert defaults[section][name] == value, f"{section}.{name}"


POLICY_3 = {"region": {"base_points": 100, "form": "point"}, "deviation": {
    "high_bands": [{"below": 2.0, "k": 3.0}, {"k": 2.0}], "high_payment": "add_on", "high_add_on_share": 1.0,
    "low_k": 0.4, "low_payment": "proportional"}, "special_review": {"cost_multiple": 0.0, "payment": "actual"},
    "settlement": {"withholding_share": 0.05,
                   "surplus_bands": [{"up_to": 0.10, "hospital_keeps": 1.0}, {"up_to": 0.20, "hospital_keeps": 0.5},
                                     {"hospital_keeps": 0.0}],
                   "overspend_bands": [{"up_to": 0.10, "fund_bears": 0.0}, {"up_to": 0.20, "fund_bears": 0.5},
                                       {"fund_bears": 0.0}]}}


def test_the_month_worked_by_hand_in_settlement_md():
    """settlement.md §3, from the numbers written there."""
    rows = [("H1", 1.0, 10_000, 9_000, 1.0, 1_000), ("H1", 1.0, 10_000, 35_000, 1.0, 3_000),
            ("H1", 2.5, 25_000, 8_000, 1.0, 800), ("H2", 2.5, 25_000, 30_000, 0.9, 2_000),
            ("H2", 1.0, 10_000, 11_000, 0.9, 1_200)]
    cases = []
    for h, w, mean, cost, co, share in rows:
        _, _, ctype, _, points = step_case_points(w, mean, cost, co, None, POLICY_3)
        cases.append({"hospital_id": h, "fund_key": "employee", "points": points, "share": share * 100,
                      "ctype": ctype})
    assert [c["ctype"] for c in cases] == ["normal", "high_cost", "low_cost", "normal", "normal"]
    assert [round(c["points"], 9) for c in cases] == [100, 150, 80, 225, 90]
    funds = step_case_amounts(cases, {"employee": 2_000_000})
    assert [c["amount"] for c in cases] == [434_108, 651_163, 347_287, 976_744, 390_698]
    assert [c["fund_amount"] for c in cases] == [334_108, 351_163, 267_287, 776_744, 270_698]
    assert funds["employee"]["T"] == 2_800_000
    hospitals = {("H1", "employee"): {"amount_due": 952_558}, ("H2", "employee"): {"amount_due": 1_047_442}}
    step_withholding(hospitals, POLICY_3)
    assert [h["withheld"] for h in hospitals.values()] == [47_628, 52_372]
    assert [h["paid"] for h in hospitals.values()] == [904_930, 995_070]


def test_the_half_cent_ties_of_settlement_md_section_2():
    hospitals = {(h, "employee"): {"amount_due": due} for h, due in (("A", 10_010), ("B", 30_030), ("C", 50_050))}
    step_withholding(hospitals, POLICY_3)
    assert [h["withheld"] for h in hospitals.values()] == [501, 1_502, 2_502]
    assert largest_remainder([Fraction(783_480_150 * 5, 100)], 39_174_008) == [39_174_008]


def test_the_year_worked_by_hand_in_settlement_md():
    """settlement.md §4: two months, the annual payments, bands, paid and balance."""
    def month(p1, s1, c1, paid1, p2, s2, c2, paid2):
        base = {"unpriced_cases": 0, "unpriced_cost": 0, "weight_sum": 0.0, "weight_sum_float": 0.0, "withheld": 0,
                "cases": 1}
        return {"hospitals": {("H1", "employee"): dict(base, points=p1, personal_share=s1, cost=c1, paid=paid1),
                              ("H2", "employee"): dict(base, points=p2, personal_share=s2, cost=c2, paid=paid2)}}
    months = {"2026-10": month(330.0, 480_000, 1_200_000, 900_000, 315.0, 320_000, 1_635_000, 1_000_000),
              "2026-11": month(300.0, 400_000, 1_000_000, 900_000, 255.0, 300_000, 1_500_000, 950_000)}
    year = step_annual(months, {"budget": {"employee": {"2026": 40_000.00}}, **POLICY_3}, "2026")
    h1, h2 = year["hospitals"][("H1", "employee")], year["hospitals"][("H2", "employee")]
    assert (h1["payment"], h1["amount_due"], h1["adjustment"], h1["paid"], h1["balance"]) == \
        (2_887_500, 2_007_500, -254_375, 1_753_125, -46_875)
    assert (h2["payment"], h2["amount_due"], h2["adjustment"], h2["paid"], h2["balance"]) == \
        (2_612_500, 1_992_500, 130_625, 2_123_125, 173_125)
    assert year["funds"]["employee"]["budget_spent"] == 3_876_250
    assert step_band_adjustment(2_887_500, 2_200_000, POLICY_3) == -254_375


def edge_month(demo_dir: Path, tmp_path: Path, missing_date: bool = False) -> tuple[Path, str]:
    """A month of the demo's records with every unpriced reason, fund labels, half-cent money,
    special-review flags and a cost above the review multiple planted into it."""
    period = sorted(p.name for p in (demo_dir / "settled").iterdir() if len(p.name) == 7)[2]
    df = pq.read_table(demo_dir / "data" / f"{period}.parquet").to_pandas()
    df = df[df["status"] == "grouped"].head(40).reset_index(drop=True)
    other = f"{period[:5]}{int(period[5:]) % 12 + 1:02d}-02"
    df["special_review"] = None
    edits = {0: {"fund": "xyz"}, 1: {"hospital_id": None}, 2: {"discharge_date": f"{period[:4]}-02-30"},
             3: {"discharge_date": other}, 4: {"los_days": 400.0}, 7: {"total_cost": float("nan")},
             8: {"personal_share": float("nan")}, 9: {"personal_share": -5.0}, 10: {"special_review": "是"},
             11: {"special_review": "1"}, 12: {"fund": "职工基本医疗保险"}, 13: {"fund": "EMPLOYEE"},
             14: {"fund": "390"}, 15: {"total_cost": 0.0, "personal_share": 0.0},
             17: {"fund": "xyz", "discharge_date": f"{period[:4]}-02-30"}, 18: {"personal_share": 1234.565},
             19: {"los_days": float("nan")}, 20: {"total_cost": 100.125, "personal_share": 0.125},
             21: {"discharge_date": f"{period}-05 10:00:00"}, 22: {"total_cost": float(df.loc[22, "total_cost"]) * 20},
             23: {"fund": " employee "}, 24: {"hospital_id": ""}, 25: {"los_days": 0.0},
             26: {"status": "ambiguous"}, 27: {"drg": "ZZ99"}, 28: {"total_cost": -1.0},
             31: {"status": "ungroupable"}}
    if missing_date:
        edits[16] = {"discharge_date": None}
    # two defects in one record: the reason is the first of settlement.md §1.2's order
    pairs = [{"total_cost": -2.0, "personal_share": -1.0}, {"personal_share": -1.0, "fund": "xyz"},
             {"fund": "xyz", "hospital_id": None}, {"hospital_id": None, "los_days": 500.0},
             {"los_days": 500.0, "discharge_date": f"{period[:4]}-02-30"},
             {"drg": "ZZ98", "total_cost": -3.0}, {"status": "invalid", "fund": "xyz"}]
    for n, values in enumerate(pairs):
        edits[32 + n] = values
    edits[39] = {"discharge_date": other}  # duplicate (row 38's id) and out of period
    for row, values in edits.items():
        for col, v in values.items():
            df.loc[row, col] = v
    df.loc[6, "id"] = df.loc[5, "id"]
    df.loc[39, "id"] = df.loc[38, "id"]
    path = tmp_path / f"{period}.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    # one group of the month without a positive weight, one without a mean cost
    weights = pq.read_table(demo_dir / "weights.parquet").to_pandas()
    for row, col in ((29, "weight"), (30, "mean_cost")):
        weights.loc[weights["drg"] == df.loc[row, "drg"], col] = 0.0 if col == "weight" else float("nan")
    pq.write_table(pa.Table.from_pandas(weights, preserve_index=False), tmp_path / "weights.parquet")
    return path, period


def more_methods(records: Path, policy: str, tmp_path: Path) -> str:
    """The edge month with wards by diagnosis and by group, a short stay left unpriced, an
    ambiguous group by its QY suffix, a basic group and the weight table's own thresholds."""
    df = pq.read_table(records).to_pandas()
    dx = list(df.loc[19, "diagnoses"])[0]
    df.loc[21, "los_days"] = 2.0
    df.loc[16, "drg"] = str(df.loc[16, "drg"])[:3] + "QY"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), records)
    weights = pq.read_table(tmp_path / "weights.parquet").to_pandas()
    weights["low_k"] = [0.9 if g == df.loc[3, "drg"] else float("nan") for g in weights["drg"]]
    weights["high_k"] = [1.05 if g in (df.loc[3, "drg"], df.loc[33, "drg"]) else None for g in weights["drg"]]
    pq.write_table(pa.Table.from_pandas(weights, preserve_index=False), tmp_path / "weights.parquet")
    policy = policy.replace("wards = [\n", f'wards = [\n  {{ name = "诊断", points_per_day = 3.0, diagnosis_prefixes = ["{dx}"] }},\n'
                            f'  {{ name = "病组", points_per_day = 2.0, groups = ["{df.loc[21, "drg"]}"] }},\n')
    policy = policy.replace('short_stay = "normal"', 'short_stay = "unpriced"')
    return policy + f'\n[basic_groups]\nenabled = true\ncoefficient = 0.95\ncodes = ["{str(df.loc[0, "drg"])[:3]}"]\n'


def settle_edge(demo_dir, tmp_path, payment: str, missing_date=False, rate=False, methods=True, more=False):
    records, period = edge_month(demo_dir, tmp_path, missing_date)
    policy = (demo_dir / "policy.toml").read_text(encoding="utf-8")
    if more:
        policy = more_methods(records, policy, tmp_path)
    if not methods:  # the demo's policy without its per-diem wards and fee-for-service fallback
        policy = policy[:policy.index("[per_diem]")] + policy[policy.index("[settlement]"):]
    # the demo's review triggers with this test's payment, a multiple of 4 and no quota
    policy = policy.replace('payment = "hold"\ncost_multiple = 5.0', f'payment = "{payment}"\ncost_multiple = 4.0')
    policy = policy.replace("hospital_quota_share = 0.05", "hospital_quota_share = 1.0")
    policy = policy.replace("[coefficients.hospital_level]",
                            "[coefficients.hospital]\nH99010000003 = 0.95\n\n[coefficients.hospital_level]")
    if rate:  # the rate form: a published employee rate with half a cent, the resident rate from the budget
        policy = policy.replace('form = "point"', 'form = "rate"') + '\n[rate.employee]\n"' + period[:4] + '" = 17500.555\n'
    (tmp_path / "policy.toml").write_text(policy, encoding="utf-8")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "drgdip", "settle", period, str(records), "--weights",
                    str(tmp_path / "weights.parquet"), "--policy", str(tmp_path / "policy.toml"), "--ledger",
                    str(tmp_path / "l.db"), "--new-ledger", "--out", str(out), "--quiet"],
                   check=True, capture_output=True, text=True)
    report = check_month(records, tmp_path / "weights.parquet", tmp_path / "policy.toml", out, period)
    if rate:
        return report
    # the year of that one month (--partial-year: the whole year's budget over the month)
    year = tmp_path / "year"
    subprocess.run([sys.executable, "-m", "drgdip", "settle", period[:4], "--final", "--partial-year", "--policy",
                    str(tmp_path / "policy.toml"), "--ledger", str(tmp_path / "l.db"), "--out", str(year),
                    "--quiet"], check=True, capture_output=True, text=True)
    return check_year(report.months, tmp_path / "policy.toml", year, period[:4], report)


@pytest.mark.parametrize("payment, methods", [("actual", True), ("hold", True), ("normal", True),
                                             ("actual", False)])
def test_every_unpriced_reason_and_special_review_recomputed(demo_dir, tmp_path, payment, methods):
    report = settle_edge(demo_dir, tmp_path, payment, methods=methods)
    assert report.total_differ == 0, report.text()
    assert report.compared[("cases.parquet", "pricing_reason")] == 40
    assert report.compared[("hospitals.csv (year)", "adjustment")] > 5
    group = ("FFS_AMBIGUOUS", "FFS_UNGROUPABLE", "FFS_UNWEIGHTED") if methods else \
        ("NOT_GROUPED", "GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED")
    reasons = {e for e in ("UNKNOWN_FUND", "MISSING_HOSPITAL", "BAD_DISCHARGE_DATE", "OUT_OF_PERIOD", "BAD_LOS",
                           "DUPLICATE_SETTLEMENT_ID", "BAD_COST", "BAD_PERSONAL_SHARE", "NO_GROUP_MEAN_COST") + group}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert reasons <= set(summary["reasons"])
    held = "SPECIAL_REVIEW_HOLD" if payment == "hold" else "SPECIAL_REVIEW_FLAG"
    assert summary["reasons"][held] >= 2
    cases = pq.read_table(tmp_path / "out" / "cases.parquet").to_pandas()
    # ZZ98 with a negative cost: the group's reason, unless the fee-for-service fallback would
    # take the case, when the record's problem is what a person must fix
    assert list(cases["pricing_reason"][32:40]) == [
        "BAD_COST", "BAD_PERSONAL_SHARE", "UNKNOWN_FUND", "MISSING_HOSPITAL", "BAD_LOS",
        "BAD_COST" if methods else "GROUP_NOT_IN_TABLE", "INVALID_RECORD", "DUPLICATE_SETTLEMENT_ID"]


def test_the_rate_form_recomputed(demo_dir, tmp_path):
    report = settle_edge(demo_dir, tmp_path, "actual", rate=True)
    assert report.total_differ == 0, report.text()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["funds"]["employee"]["rate"] == 17500.555
    assert summary["funds"]["resident"]["rate"] is None
    assert report.compared[("summary.json (month)", "rate")] == 2


def test_more_payment_method_rules_recomputed(demo_dir, tmp_path):
    """Wards by diagnosis and by group, PER_DIEM_NO_DAYS, PER_DIEM_SHORT_STAY, FFS_AMBIGUOUS by
    the QY suffix, a basic group's coefficient, the weight table's low_k / high_k."""
    report = settle_edge(demo_dir, tmp_path, "actual", more=True)
    assert report.total_differ == 0, report.text()
    cases = pq.read_table(tmp_path / "out" / "cases.parquet").to_pandas()
    assert {"PER_DIEM_NO_DAYS", "PER_DIEM_SHORT_STAY", "FFS_AMBIGUOUS"} <= set(cases["pricing_reason"])
    assert cases.loc[0, "coefficient"] == 0.95
    assert cases.loc[3, "case_type"] != "normal"


def test_a_record_without_a_discharge_date_is_not_priced(demo_dir, tmp_path):
    report = settle_edge(demo_dir, tmp_path, "actual", missing_date=True)
    assert report.differ[("cases.parquet", "pricing_reason")] == 0, report.text()
    assert report.total_differ == 0, report.text()
    cases = pq.read_table(tmp_path / "out" / "cases.parquet").to_pandas()
    assert cases.loc[16, "pricing_reason"] == "BAD_DISCHARGE_DATE"


# --- the worked examples of the rules added since (settlement.md "Payment methods", §7-§9, DIP) ---

METHODS_TOML = """
[region]
base_points = 100
[coefficients.level]
"3" = 1.0
"2" = 0.9
[coefficients.hospital_level]
H1 = "3"
H2 = "2"
[deviation]
high_bands = [{ k = 3.0 }]
low_k = 0.4
[settlement]
withholding_share = 0.05
[per_diem]
wards = [
  { name = "精神科", points_per_day = 4.0, departments = ["精神科"] },
  { name = "长期住院", points_per_day = 2.5, longer_than_days = 60 },
]
short_stay_days = 2
short_stay = "normal"
apply_coefficient = true
[fee_for_service]
classes = ["ungroupable", "unweighted"]
yuan_per_point = 100.0
discount = 0.9
[basic_groups]
enabled = true
coefficient = 1.0
codes = ["BR2"]
[budget.employee]
"2026-10" = 20000.00
"""


def test_the_payment_methods_month_worked_by_hand(tmp_path):
    """settlement.md "Payment methods in one point pool", the eleven cases, from the doc's numbers."""
    (tmp_path / "p.toml").write_text(METHODS_TOML, encoding="utf-8")
    policy = read_policy(tmp_path / "p.toml")
    rows = [("H1", "骨科", 8, "grouped", "A", 9_000, 1_000), ("H2", "心血管内科", 10, "grouped", "B", 45_000, 4_000),
            ("H2", "心血管内科", 4, "grouped", "B", 9_000, 900), ("H2", "神经内科", 6, "grouped", "BR21", 7_200, 700),
            ("H1", "精神科", 30, "grouped", "A", 12_000, 1_200), ("H2", "骨科", 75, "grouped", "B", 60_000, 5_000),
            ("H2", "精神科", 2, "grouped", "A", 1_500, 150), ("H1", "急诊科", 3, "ungroupable", "0000", 3_000, 300),
            ("H1", "急诊科", 5, "grouped", "Z", 5_000, 500), ("H2", "急诊科", 1, "ungroupable", "0000", 0, 0),
            ("H1", "急诊科", 2, "invalid", "0000", 2_000, 200)]
    records = pd.DataFrame([{"id": f"c{i + 1}", "hospital_id": h, "dept": d, "los_days": float(los), "status": st,
                             "drg": g, "total_cost": float(cost), "personal_share": float(sh), "fund": "employee",
                             "discharge_date": "2026-10-15", "diagnoses": ["X00"]}
                            for i, (h, d, los, st, g, cost, sh) in enumerate(rows)])
    weights = pd.DataFrame({"drg": ["A", "B", "BR21", "Z"], "weight": [1.0, 2.0, 0.8, float("nan")],
                            "mean_cost": [10_000.0, 20_000.0, 8_000.0, 3_000.0],
                            "low_k": [None, 0.5, None, None], "high_k": [None, 2.0, None, None]})
    month = recompute_month(records, None, weights, policy, "2026-10")
    cases = month["cases"]
    assert [None if c["points"] is None else round(c["points"], 9) for c in cases] == \
        [100, 225, 81, 80, 120, 168.75, 13.5, 27, 45, None, None]
    assert [c["method"] for c in cases] == ["drg"] * 4 + ["per_diem"] * 2 + ["drg"] + ["fee_for_service"] * 2 + \
        ["none"] * 2
    assert [c["pricing_reason"] for c in cases][7:] == ["FFS_UNGROUPABLE", "FFS_UNWEIGHTED", "ZERO_COST",
                                                        "INVALID_RECORD"]
    assert [c["amount"] for c in cases[:9]] == [392_328, 882_738, 317_786, 313_862, 470_793, 662_053, 52_964,
                                               105_928, 176_548]
    h1, h2 = month["hospitals"][("H1", "employee")], month["hospitals"][("H2", "employee")]
    assert (h1["cases"], h1["unpriced_cases"], h1["payment"], h1["amount_due"], h1["withheld"], h1["paid"],
            h1["cost"], h1["unpriced_cost"]) == (4, 1, 1_145_597, 845_597, 42_280, 803_317, 2_900_000, 200_000)
    assert (h2["cases"], h2["unpriced_cases"], h2["payment"], h2["amount_due"], h2["withheld"], h2["paid"],
            h2["cost"]) == (5, 1, 2_229_403, 1_154_403, 57_720, 1_096_683, 12_270_000)
    assert (round(h1["weight_sum"] / h1["cases"], 4), round(h2["weight_sum"] / h2["cases"], 4)) == (0.5, 1.56)


FUND_LIMITS = {"settlement": {"withholding_share": 0.05, "overspend_bands": [
    {"up_to": 0.10, "fund_bears": 0.0}, {"up_to": 0.20, "fund_bears": 0.5}, {"fund_bears": 0.0}]},
    "budget": {"employee": {"2026": 60_000.00}}, "reserve": {"share": 0.02, "cap": "budget_and_reserve"},
    "quality": {"bands": [{"below": 60, "refund": 0.0}, {"below": 90, "refund": "proportional"}, {"refund": 1.0}],
                "missing_refund": 0.8},
    "point_value": {"projected": "policy", "projected_points": {"employee": {"2026": 1250}},
                    "projected_personal_share": {"employee": {"2026": 17_500.00}}}}


def _fund_limits_months(weights=None, los=None):
    """§7: two months with the same figures (points, share, cost, withheld, paid, held), cents."""
    rows = {"H1": (300, 450_000, 2_400_000, 75_000, 1_282_500, 142_500),
            "H2": (200, 300_000, 1_527_500, 50_000, 855_000, 95_000),
            "H3": (100, 150_000, 600_000, 25_000, 427_500, 47_500)}
    month = {}
    for h, (p, s, c, w, paid, held) in rows.items():
        month[(h, "employee")] = {"cases": 1, "unpriced_cases": 0, "weight_sum": 0.0, "weight_sum_float": 0.0,
                                  "points": float(p), "personal_share": s, "cost": c, "unpriced_cost": 0,
                                  "withheld": w, "paid": paid, "held": held}
    if weights:  # §9: the year's cases, weights, costs and days in the first month, none in the second
        second = {k: dict(v, cases=0, cost=0) for k, v in month.items()}
        for k, (n, wsum, cost, days) in weights.items():
            month[k].update(cases=n, weight_exact=Fraction(wsum), weight_sum=float(wsum), cost=cost,
                            los=Fraction(days if los else 0))
        return {"2026-10": {"hospitals": month}, "2026-11": {"hospitals": second}}
    return {"2026-10": {"hospitals": month}, "2026-11": {"hospitals": {k: dict(v) for k, v in month.items()}}}


def test_the_fund_limits_year_worked_by_hand():
    """settlement.md §7-§8 from the numbers written there."""
    scores = {"H1": Fraction(95), "H2": Fraction(85)}
    year = step_annual(_fund_limits_months(), FUND_LIMITS, "2026", scores)
    h = [year["hospitals"][(x, "employee")] for x in ("H1", "H2", "H3")]
    assert [x["payment"] for x in h] == [3_900_000, 2_600_000, 1_300_000]
    assert [x["adjustment"] for x in h] == [195_000, 97_500, 0]
    assert [x["quality_refund"] for x in h] == [150_000, 85_000, 40_000]
    assert [x["quality_kept"] for x in h] == [0, 15_000, 10_000]
    assert [x["quality_reason"] for x in h] == ["QUALITY_SCORE_BAND"] * 2 + ["QUALITY_SCORE_MISSING"]
    assert [x["cap_cut"] for x in h] == [98_333, 49_167, 0]
    assert [x["paid"] for x in h] == [3_096_667, 2_033_333, 990_000]
    assert [x["monthly_held"] for x in h] == [285_000, 190_000, 95_000]
    assert [x["balance"] for x in h] == [531_667, 323_333, 135_000]
    f = year["funds"]["employee"]
    assert (f["reserve"], f["spend_before_cap"], f["cap_cut"], f["reserve_used"], f["over_budget_unfunded"]) == \
        (120_000, 6_267_500, 147_500, 120_000, 0)
    assert f["point_value"] == 65 and f["projected_point_value"] == 62.0
    budget_cap = step_annual(_fund_limits_months(), {**FUND_LIMITS, "reserve": {"share": 0.02, "cap": "budget"}},
                             "2026", scores)
    assert [budget_cap["hospitals"][(x, "employee")]["cap_cut"] for x in ("H1", "H2")] == [178_333, 89_167]
    assert budget_cap["funds"]["employee"]["reserve_used"] == 0
    no_cap = step_annual(_fund_limits_months(), {**FUND_LIMITS, "reserve": {"share": 0.02, "cap": "none"}},
                         "2026", scores)
    assert (no_cap["funds"]["employee"]["paid"], no_cap["funds"]["employee"]["reserve_used"],
            no_cap["funds"]["employee"]["over_budget_unfunded"]) == (6_267_500, 120_000, 147_500)


def test_the_advance_of_the_month_of_section_3():
    """§7: the month of §3 with [advance] share = 0.9."""
    hospitals = {("H1", "employee"): {"amount_due": 952_558}, ("H2", "employee"): {"amount_due": 1_047_442}}
    step_withholding(hospitals, POLICY_3)
    step_advance(hospitals, {"advance": {"share": 0.9}})
    assert [h["held"] for h in hospitals.values()] == [90_493, 99_507]
    assert [h["paid"] for h in hospitals.values()] == [814_437, 895_563]


INCENTIVES = {"incentives": {
    "cmi_bands": [{"below": 0.9, "coefficient": 0.98}, {"below": 1.1, "coefficient": 1.0}, {"coefficient": 1.02}],
    "cost_bands": [{"below": 0.9, "coefficient": 1.01}, {"below": 1.1, "coefficient": 1.0}, {"coefficient": 0.99}],
    "time_bands": [{"below": 0.9, "coefficient": 1.01}, {"below": 1.1, "coefficient": 1.0}, {"coefficient": 0.99}]}}
PER_WEIGHT = {"incentives": {**INCENTIVES["incentives"], "index_form": "per_weight"}}


@pytest.mark.parametrize("los, coefficients", [
    (True, [Fraction("1.02"), Fraction("0.979902"), Fraction("0.9999")]),
    (False, [Fraction("1.02"), Fraction("0.9702"), Fraction("1.01")])])
def test_the_incentives_worked_by_hand(los, coefficients):
    """settlement.md §9: indices, coefficients, settled points and payments."""
    cases = {("H1", "employee"): (40, 48, 4_800_000, 480), ("H2", "employee"): (40, 32, 3_840_000, 256),
             ("H3", "employee"): (20, 20, 1_360_000, 240)}
    year = step_annual(_fund_limits_months(cases, los), {**FUND_LIMITS, **PER_WEIGHT}, "2026")
    h = [year["hospitals"][(x, "employee")] for x in ("H1", "H2", "H3")]
    assert [x["incentive"]["coefficient"] for x in h] == coefficients
    assert [x["incentive"]["cmi_index"] for x in h] == [Fraction("1.2"), Fraction("0.8"), Fraction(1)]
    assert [x["incentive"]["cost_index"] for x in h] == [Fraction(1), Fraction("1.2"), Fraction("0.68")]
    if los:
        assert [x["incentive"]["time_index"] for x in h] == [Fraction("1.0246"), Fraction("0.8197"),
                                                             Fraction("1.2295")]
        assert [x["settled_points"] for x in h] == [612, 391.9608, 199.98]
        assert [x["payment"] for x in h] == [3_964_979, 2_539_406, 1_295_615]
    else:
        assert all(x["incentive"]["time_index"] is None for x in h)


# settlement.md §9 group by group: hospital → group → (cases, cost cents, Σ length of stay); weights A 2, B 1, C 0.5
GROUP_EXAMPLE = {"H1": {"A": (10, 2_100_000, 100), "B": (10, 900_000, 50)},
                 "H2": {"B": (10, 1_100_000, 70), "C": (20, 2_400_000, 120)},
                 "H3": {"A": (10, 1_400_000, 80), "C": (20, 1_600_000, 80)}}


@pytest.mark.parametrize("form, coefficients, cost_index, time_index, payments", [
    ("per_group", ["1.02", "0.960498", "1.0201"], ["1.05", "1.1667", "0.8"], ["0.9722", "1.1889", "0.8296"],
     [3_977_273, 2_496_839, 1_325_888]),
    ("per_weight", ["1.040502", "0.960498", "1.0201"], ["0.8421", "1.4737", "0.8421"], ["0.8", "1.52", "0.8533"],
     [4_016_056, 2_471_508, 1_312_436])])
def test_the_incentives_group_by_group_worked_by_hand(form, coefficients, cost_index, time_index, payments):
    """settlement.md §9, the group-by-group example and the same year per weight, from the doc's numbers."""
    w = {"A": Fraction(2), "B": Fraction(1), "C": Fraction(1, 2)}
    months = _fund_limits_months()
    for h, groups in GROUP_EXAMPLE.items():
        m = months["2026-10"]["hospitals"][(h, "employee")]
        m.update(cases=sum(v[0] for v in groups.values()), cost=sum(v[1] for v in groups.values()),
                 weight_exact=sum(w[g] * v[0] for g, v in groups.items()),
                 los=Fraction(sum(v[2] for v in groups.values())),
                 groups={("drg", g): [v[0], v[1], Fraction(v[2])] for g, v in groups.items()})
        months["2026-11"]["hospitals"][(h, "employee")].update(cases=0, cost=0)
    inc = {"incentives": {**INCENTIVES["incentives"], "index_form": form}}
    year = step_annual(months, {**FUND_LIMITS, **inc}, "2026")
    h = [year["hospitals"][(x, "employee")] for x in ("H1", "H2", "H3")]
    assert [x["incentive"]["coefficient"] for x in h] == [Fraction(c) for c in coefficients]
    assert [x["incentive"]["cmi_index"] for x in h] == [Fraction("1.5"), Fraction("0.6667"), Fraction(1)]
    assert [x["incentive"]["cost_index"] for x in h] == [Fraction(c) for c in cost_index]
    assert [x["incentive"]["time_index"] for x in h] == [Fraction(c) for c in time_index]
    assert [x["payment"] for x in h] == payments


def test_the_dip_month_worked_by_hand():
    """settlement.md "DIP settlement", the five cases, from the doc's numbers."""
    policy = with_defaults({"coefficients": {"default": 1.0, "level": {"3": 1.0, "2": 0.9},
                                             "hospital_level": {"H1": "3", "H2": "2"}, "hospital": {}},
                            "budget": {"employee": {"2026-10": 40_000.00}},
                            "dip_settlement": {"reimbursement_ratio": {"employee": 0.8}}})
    catalog = pd.DataFrame({"group_key": ["K80.1|51.2300", "K80.1|none"], "score": [127.4101, 52.9936],
                            "mean_cost": [11_300.0, 4_700.0], "cases": [7, 5]})
    ref = pd.DataFrame({"group_key": ["K80.1|51.2300"] * 2, "level": ["3", "2"], "mean_cost": [12_000.0, 10_000.0]})
    dip = dip_table(catalog, ref, policy)
    rows = [("H1", "K80.1|51.2300", 11_000, 2_200), ("H2", "K80.1|51.2300", 9_000, 1_800),
            ("H1", "K80.1|51.2300", 30_000, 6_000), ("H2", "K80.1|none", 2_000, 400), ("H1", "K80.1|none", 5_000, 1_000)]
    records = pd.DataFrame([{"id": f"c{i + 1}", "hospital_id": h, "total_cost": float(c), "personal_share": float(s),
                             "fund": "employee", "discharge_date": "2026-10-10", "los_days": 5.0}
                            for i, (h, g, c, s) in enumerate(rows)])
    grouping = pd.DataFrame({"dip_group": [g for _, g, _, _ in rows], "dip_status": ["grouped"] * 5,
                             "dip_coefficient": [1.0] * 5})
    month = recompute_month(records, None, None, policy, "2026-10", dip, grouping)
    cases = month["cases"]
    assert [round(c["points"], 5) for c in cases] == [127.4101, 114.66909, 191.11515, 20.29542, 52.9936]
    assert [c["case_type"] for c in cases] == ["normal", "normal", "high_cost", "low_cost", "normal"]
    assert [c["amount"] for c in cases] == [1_257_792, 1_132_012, 1_886_687, 200_356, 523_153]
    assert [c["fund_amount"] for c in cases] == [1_037_792, 952_012, 1_286_687, 160_356, 423_153]
    assert month["funds"]["employee"]["T"] == 5_000_000
    assert round(float(month["funds"]["employee"]["point_value"]), 6) == 98.719926
    h = month["hospitals"]
    assert (h[("H1", "employee")]["amount_due"], h[("H2", "employee")]["amount_due"]) == (2_747_632, 1_112_368)
    year = step_annual({"2026-10": month}, {**policy, "budget": {"employee": {"2026": 40_000.00}}}, "2026", dip=True)
    assert [year["hospitals"][(x, "employee")]["payment"] for x in ("H1", "H2")] == [3_667_631, 1_332_369]
    assert [year["hospitals"][(x, "employee")]["balance"] for x in ("H1", "H2")] == [-1, 1]


SECTION_3 = {"region": {"base_points": 100}, "coefficients": {"default": 1.0, "level": {"3A": 1.0},
                                                              "hospital_level": {"H1": "3A"}, "hospital": {"H2": 0.9}},
             "deviation": {"high_bands": [{"below": 2.0, "k": 3.0}, {"k": 2.0}], "low_k": 0.4},
             "budget": {"employee": {"2026-10": 20_000.00}}}


def test_the_stays_and_readmissions_month_worked_by_hand():
    """settlement.md "Incomplete stays and readmissions", from the doc's numbers."""
    policy = with_defaults({**SECTION_3, "incomplete_stays": {"dispositions": ["2", "4", "5"], "short_stay_days": 2,
                                                              "short_stay_payment": "normal"},
                            "readmission": {"days": 15, "key": "adrg", "payment": "halve_earlier", "share": 0.5}})
    rows = [("1", "H1", "P1", "ES21", "10-01", "10-05", "1", 4, 8_000, 1_000),
            ("2", "H1", "P1", "ES23", "10-20", "10-25", "1", 5, 15_000, 1_500),
            ("3", "H1", "P2", "FM19", "10-02", "10-06", "2", 4, 10_000, 1_000),
            ("4", "H2", "P3", "FM19", "10-03", "10-12", "5", 9, 40_000, 2_000),
            ("5", "H2", "P4", "ES21", "10-10", "10-11", "1", 1, 3_000, 300),
            ("6", "H2", "P1", "ES21", "10-08", "10-14", "1", 6, 9_000, 900),
            ("7", "H1", "P5", "ES21", "10-15", "10-18", "1", 3, 0, 0),
            ("8", "H1", "P6", "ES21", "10-04", "10-09", "1", 5, 5_000, 500),
            ("8", "H1", "P6", "ES21", "10-04", "10-09", "1", 5, 5_000, 500)]
    records = pd.DataFrame([{"id": i, "hospital_id": h, "patient_id": pt, "drg": g, "status": "grouped",
                             "admission_date": f"2026-{a}", "discharge_date": f"2026-{d}",
                             "discharge_disposition": disp, "los_days": float(los), "total_cost": float(cost),
                             "personal_share": float(sh), "fund": "employee"}
                            for i, h, pt, g, a, d, disp, los, cost, sh in rows])
    weights = pd.DataFrame({"drg": ["ES21", "ES23", "FM19"], "weight": [1.0, 1.5, 2.5],
                            "mean_cost": [10_000.0, 15_000.0, 25_000.0]})
    month = recompute_month(records, None, weights, policy, "2026-10")
    cases = month["cases"]
    assert [None if c["points"] is None else round(c["points"], 9) for c in cases] == \
        [50, 150, 100, 225, 90, 90, None, None, None]
    assert [c["pricing_reason"] for c in cases] == [
        "READMISSION_EARLIER_STAY", "READMISSION_WITHIN_DAYS", "INCOMPLETE_STAY", "INCOMPLETE_STAY", "SHORT_STAY",
        "PRICED_NORMAL", "ZERO_COST", "DUPLICATE_SETTLEMENT_ID", "DUPLICATE_SETTLEMENT_ID"]
    assert cases[1]["readmission_of"] == "1"
    assert [c["amount"] for c in cases[:6]] == [189_362, 568_085, 378_723, 852_128, 340_851, 340_851]
    h1, h2 = month["hospitals"][("H1", "employee")], month["hospitals"][("H2", "employee")]
    assert (h1["cases"], h1["unpriced_cases"], h1["unpriced_cost"], h1["payment"], h1["amount_due"]) == \
        (3, 3, 1_000_000, 1_136_170, 786_170)
    assert (h2["cases"], h2["payment"], h2["amount_due"]) == (3, 1_533_830, 1_213_830)


def test_the_two_months_combined_worked_by_hand():
    """settlement.md "Two months worked by hand", `combine` (合并结算): November's B1 is paid
    max(0, 150 − A1's kept 100) = 50, from the doc's numbers."""
    policy = with_defaults({"region": {"base_points": 100},
                            "budget": {"employee": {"2026-10": 10_000.00, "2026-11": 10_000.00}},
                            "readmission": {"days": 15, "key": "adrg", "payment": "combine", "share": 0.5}})
    weights = pd.DataFrame({"drg": ["ES21", "ES23", "FM19"], "weight": [1.0, 1.5, 2.5],
                            "mean_cost": [10_000.0, 15_000.0, 25_000.0]})
    mean = dict(zip(weights["drg"], weights["mean_cost"]))

    def records(rows):
        return pd.DataFrame([{"id": i, "hospital_id": "H1", "patient_id": pt, "drg": g, "status": "grouped",
                              "admission_date": a, "discharge_date": d, "discharge_disposition": "1",
                              "los_days": 5.0, "total_cost": mean[g], "personal_share": mean[g] / 10,
                              "fund": "employee"} for i, pt, g, a, d in rows])
    kept: list = []
    october = recompute_month(records([("A1", "P1", "ES21", "2026-10-20", "2026-10-25"),
                                       ("A2", "P2", "FM19", "2026-10-03", "2026-10-08")]),
                              None, weights, policy, "2026-10", tail_out=kept)
    assert [c["amount"] for c in october["cases"]] == [385_714, 964_286]
    assert [(k["id"], k["points"], k["cut"]) for k in kept] == [("A1", 100.0, False)]
    november = recompute_month(records([("B1", "P1", "ES23", "2026-11-05", "2026-11-09"),
                                        ("B2", "P3", "FM19", "2026-11-15", "2026-11-20")]),
                               None, weights, policy, "2026-11", kept=kept)
    b1, b2 = november["cases"]
    assert (b1["pricing_reason"], b1["readmission_of"], round(b1["points"], 9)) == ("READMISSION_COMBINED", "A1", 50)
    assert (b2["pricing_reason"], round(b2["points"], 9)) == ("PRICED_NORMAL", 250)
    assert [b1["amount"], b2["amount"]] == [233_333, 1_166_667]
    assert len(november["cases"]) == 2     # no recovery row: A1 stays as paid in October
    # a chain within a month, A → B → C (settlement.md: "C is paid max(0, C − B) with B's own
    # points"): A 100, B max(0, 150 − 100) = 50, C max(0, 100 − 150) = 0 (not 100 − B's 50);
    # Σ points 150, 13,500.00 spread: A 9,000.00, B 4,500.00, C 0.00
    chain = recompute_month(records([("A", "P1", "ES21", "2026-10-01", "2026-10-05"),
                                     ("B", "P1", "ES23", "2026-10-08", "2026-10-12"),
                                     ("C", "P1", "ES21", "2026-10-15", "2026-10-19")]),
                            None, weights, policy, "2026-10")["cases"]
    assert [round(c["points"], 9) for c in chain] == [100, 50, 0]
    assert [c["pricing_reason"] for c in chain] == ["PRICED_NORMAL", "READMISSION_COMBINED", "READMISSION_COMBINED"]
    assert [c["amount"] for c in chain] == [900_000, 450_000, 0]


def test_the_special_review_month_worked_by_hand(tmp_path):
    """settlement.md "Special case review": the quota, revision 1 (held), the decisions, revision 2."""
    policy = with_defaults({"region": {"base_points": 100}, "deviation": {"high_bands": [{"k": 3.0}], "low_k": 0.4},
                            "budget": {"employee": {"2026-10": 20_000.00}},
                            "special_review": {"cost_multiple": 4.0, "low_cost_multiple": 0.2, "los_days_above": 60,
                                               "new_technology_codes": ["NT01"], "payment": "hold",
                                               "hospital_quota_share": 0.5}})
    rows = [("1", "H1", "A", 9_000, 1_000, 8, []), ("2", "H1", "A", 50_000, 2_000, 20, ["X1"]),
            ("3", "H1", "B", 2_000, 200, 3, []), ("4", "H1", "B", 22_000, 2_000, 70, ["X2"]),
            ("5", "H2", "A", 12_000, 1_000, 10, ["NT01", "X3"]), ("6", "H2", "B", 18_000, 1_800, 12, [])]
    records = pd.DataFrame([{"id": i, "hospital_id": h, "drg": g, "status": "grouped", "total_cost": float(cost),
                             "personal_share": float(sh), "los_days": float(los), "procedures": pr,
                             "fund": "employee", "discharge_date": "2026-10-20"} for i, h, g, cost, sh, los, pr in rows])
    weights = pd.DataFrame({"drg": ["A", "B"], "weight": [1.0, 2.0], "mean_cost": [10_000.0, 20_000.0]})
    first = recompute_month(records, None, weights, policy, "2026-10")
    cases = first["cases"]
    assert [c.get("trigger") for c in cases] == [None, "cost_high", "cost_low", "long_stay", "new_technology", None]
    assert [c.get("review_status") for c in cases] == [None, "held", "over_quota", "held", "held", None]
    assert [c["points"] for c in cases] == [100, None, 20, None, None, 200]
    assert [c["amount"] for c in cases if c["points"] is not None] == [718_750, 143_750, 1_437_500]
    assert [h["amount_due"] for h in first["hospitals"].values()] == [742_500, 1_257_500]
    assert [h["held_cases"] for h in first["hospitals"].values()] == [2, 1]
    (tmp_path / "d.csv").write_text("id,decision,points\n2,points,400\n4,normal,\n5,actual,\n99,normal,\n3,normal,\n"
                                    "6,maybe,\n", encoding="utf-8")
    decisions, rows_read = read_decisions(tmp_path / "d.csv")
    second = recompute_month(records, None, weights, policy, "2026-10", decisions=decisions)
    assert [round(c["points"], 9) for c in second["cases"]] == [100, 400, 20, 200, 120, 200]
    assert [c["amount"] for c in second["cases"]] == [269_231, 1_076_923, 53_846, 538_462, 323_077, 538_461]
    assert [h["amount_due"] for h in second["hospitals"].values()] == [1_418_462, 581_538]
    assert decision_statuses(rows_read, second["cases"]) == [
        ("2", "applied", ""), ("4", "applied", ""), ("5", "applied", ""), ("99", "refused", "DECISION_UNKNOWN_ID"),
        ("3", "refused", "DECISION_NOT_UNDER_REVIEW"), ("6", "refused", "DECISION_MALFORMED")]


# --- the DIP region's special review and readmissions (settlement.md "DIP settlement" 6-7) ---

def settle_dip_variant(demo_dir, tmp_path, policy_text: str, period: str = "2024-01", decide: bool = False):
    """The demo's DIP region settled for one month with another policy (and, with ``decide``, the
    month's held cases decided as the demo decides them, revision 2), into a region folder of
    its own that ``check_region`` reads."""
    region = tmp_path / "dip"
    (region / "settled").mkdir(parents=True)
    for name in ("catalog.parquet", "reference_means.csv"):
        shutil.copy(demo_dir / "dip" / name, region / name)
    (region / "policy.toml").write_text(policy_text, encoding="utf-8")
    out = region / "settled" / period
    args = [sys.executable, "-m", "drgdip", "settle", period, str(demo_dir / "data" / f"{period}.parquet"),
            "--method", "dip", "--catalog", str(region / "catalog.parquet"), "--policy", str(region / "policy.toml"),
            "--benefits", str(demo_dir / "benefits.parquet"), "--ledger", str(region / "ledger.db"), "--out",
            str(out), "--quiet"]
    subprocess.run(args + ["--new-ledger"], check=True, capture_output=True, text=True)
    if decide:
        held = pd.read_csv(out / "review.csv", dtype={"id": str})
        held = held[held["review_status"] == "held"].sort_values("id")
        kinds = ["normal", "actual", "points", "reject"]
        lines = ["id,decision,points"] + [
            f"{i},points,{round(n + 1.5, 4)}" if kinds[k % 4] == "points" else f"{i},{kinds[k % 4]},"
            for k, (i, n) in enumerate(zip(held["id"], held["normal_points"]))] + ["NO-SUCH-CASE,normal,"]
        (region / "decisions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        subprocess.run(args + ["--reopen", "--decisions", str(region / "decisions.csv")], check=True,
                       capture_output=True, text=True)
    from independent_settlement import Report, check_region
    return check_region(demo_dir, region, Report(), dip=True, dip_mean_times_coefficient=True), out


@pytest.mark.parametrize("key, payment", [("principal_diagnosis", "second_unpaid"), ("group", "flag_only")])
def test_the_dip_region_with_small_groups_and_other_readmission_rules_recomputed(demo_dir, tmp_path, key, payment):
    """Special review of small DIP groups (by DIP group code, over the file) held and decided,
    readmissions by principal diagnosis (unpaid) or by DIP group (flagged), from the docs."""
    policy = (demo_dir / "dip" / "policy.toml").read_text(encoding="utf-8")
    policy = policy.replace("hospital_quota_share = 0.05", "hospital_quota_share = 0.2\nmin_group_cases = 3")
    old = policy[policy.index("[readmission]"):policy.index("[settlement]")]
    policy = policy.replace(old, f'[readmission]\ndays = 30\nkey = "{key}"\nsame_hospital = false\n'
                                 f'payment = "{payment}"\n\n')
    report, out = settle_dip_variant(demo_dir, tmp_path, policy, period="2024-05", decide=True)
    assert report.total_differ == 0, report.text()
    cases = pq.read_table(out / "cases.parquet").to_pandas()
    assert (cases["review_trigger"] == "small_group").sum() > 0
    assert (cases["review_status"] == "decided").sum() > 0 and (cases["review_status"] == "over_quota").sum() > 0
    assert cases["readmission_of"].notna().sum() > 0
    if payment == "second_unpaid":
        assert (cases["pricing_reason"] == "READMISSION_UNPAID").sum() > 0
    assert report.compared[("decisions.csv (dip)", "rows (id, status, reason)")] == 1
    assert report.compared[("cases.parquet (dip)", "readmission_of")] == len(cases)


def test_a_dip_region_pairing_readmissions_by_adrg_is_refused_by_the_checker_too(demo_dir, tmp_path):
    from independent_settlement import Refused, recompute_month
    policy = with_defaults({"readmission": {"days": 15, "key": "adrg"}, "budget": {"employee": {"2026-10": 1.0}}})
    records = pd.DataFrame({"id": ["a"], "hospital_id": ["H1"], "total_cost": [100.0], "personal_share": [0.0],
                            "fund": ["employee"], "discharge_date": ["2026-10-01"]})
    grouping = pd.DataFrame({"dip_group": ["K80.1|none"], "dip_status": ["grouped"], "dip_coefficient": [1.0]})
    dip = dip_table(pd.DataFrame({"group_key": ["K80.1|none"], "score": [50.0], "mean_cost": [100.0],
                                  "cases": [1]}), None, policy)
    with pytest.raises(Refused, match="DIP has no ADRG"):
        recompute_month(records, None, None, policy, "2026-10", dip, grouping)


def test_the_dip_special_review_and_readmission_month_worked_by_hand(tmp_path):
    """settlement.md "A DIP month with special review and a readmission", from the doc's numbers."""
    policy = with_defaults({"coefficients": {"default": 1.0, "level": {"3": 1.0, "2": 0.9},
                                             "hospital_level": {"H1": "3", "H2": "2"}, "hospital": {}},
                            "budget": {"employee": {"2026-10": 120_000.00}},
                            "dip_settlement": {"reimbursement_ratio": {"employee": 0.8}},
                            "special_review": {"cost_multiple": 4.0, "payment": "hold", "hospital_quota_share": 0.5},
                            "readmission": {"days": 15, "key": "group", "payment": "halve_earlier", "share": 0.5}})
    catalog = pd.DataFrame({"group_key": ["K80.1|51.2300", "K80.1|none"], "score": [127.4101, 52.9936],
                            "mean_cost": [11_300.0, 4_700.0], "cases": [7, 5]})
    ref = pd.DataFrame({"group_key": ["K80.1|51.2300"] * 2, "level": ["3", "2"], "mean_cost": [12_000.0, 10_000.0]})
    dip = dip_table(catalog, ref, policy)
    a, n = "K80.1|51.2300", "K80.1|none"
    rows = [("d1", "H1", "P1", a, "10-01", "10-08", 60_000, 12_000), ("d2", "H1", "P2", a, "10-02", "10-06", 11_000, 2_200),
            ("d3", "H1", "P2", a, "10-16", "10-20", 13_200, 2_640), ("d4", "H2", "P3", n, "10-03", "10-09", 25_000, 5_000),
            ("d5", "H2", "P4", n, "10-05", "10-07", 4_000, 800), ("d6", "H1", "P1", n, "10-12", "10-15", 5_000, 1_000),
            ("d7", "H2", "P5", a, "10-10", "10-18", 45_000, 9_000)]
    records = pd.DataFrame([{"id": i, "hospital_id": h, "patient_id": p, "admission_date": f"2026-{ad}",
                             "discharge_date": f"2026-{dd}", "total_cost": float(c), "personal_share": float(s),
                             "fund": "employee", "diagnoses": "K80.100", "los_days": 5.0}
                            for i, h, p, g, ad, dd, c, s in rows])
    grouping = pd.DataFrame({"dip_group": [r[3] for r in rows], "dip_status": ["grouped"] * 7,
                             "dip_coefficient": [1.0] * 7})
    first = recompute_month(records, None, None, policy, "2026-10", dip, grouping)
    cases = first["cases"]
    assert [c.get("review_status") for c in cases] == ["held", None, None, "held", None, None, "over_quota"]
    assert [c.get("readmission_of") for c in cases] == [None, None, "d2", None, None, None, None]
    assert [None if c["points"] is None else round(c["points"], 9) for c in cases] == \
        [None, 63.70505, 127.4101, None, 47.69424, 52.9936, 401.341815]
    assert [c["amount"] for c in cases] == [None, 1_378_609, 2_757_218, None, 1_032_127, 1_146_808, 8_685_238]
    h = first["hospitals"]
    assert [(h[(x, "employee")]["payment"], h[(x, "employee")]["amount_due"], h[(x, "employee")]["held_cases"])
            for x in ("H1", "H2")] == [(5_282_635, 4_698_635, 1), (9_717_365, 8_737_365, 1)]
    (tmp_path / "d.csv").write_text("id,decision,points\nd1,points,500\nd4,actual,\nd7,normal,\n", encoding="utf-8")
    decisions, rows_read = read_decisions(tmp_path / "d.csv")
    second = recompute_month(records, None, None, policy, "2026-10", dip, grouping, decisions=decisions)
    cases = second["cases"]
    assert [round(c["points"], 6) for c in cases] == [500, 63.70505, 127.4101, 253.692766, 47.69424, 52.9936,
                                                      401.341815]
    assert [c["amount"] for c in cases] == [5_183_719, 660_458, 1_320_917, 2_630_144, 494_467, 549_408, 4_160_887]
    assert [c["fund_amount"] for c in cases] == [3_983_719, 440_458, 1_056_917, 2_130_144, 414_467, 449_408,
                                                 3_260_887]
    h = second["hospitals"]
    assert [(h[(x, "employee")]["payment"], h[(x, "employee")]["amount_due"]) for x in ("H1", "H2")] == \
        [(7_714_502, 5_930_502), (7_285_498, 5_805_498)]
    assert decision_statuses(rows_read, cases) == [("d1", "applied", ""), ("d4", "applied", ""),
                                                   ("d7", "refused", "DECISION_NOT_UNDER_REVIEW")]
    policy["readmission"]["key"] = "principal_diagnosis"     # d6 pairs with d1 (held: left as it is)
    cases = recompute_month(records, None, None, policy, "2026-10", dip, grouping)["cases"]
    assert [c.get("readmission_of") for c in cases] == [None, None, "d2", None, None, "d1", None]
    assert cases[5]["pricing_reason"] == "READMISSION_WITHIN_DAYS" and cases[0]["points"] is None
