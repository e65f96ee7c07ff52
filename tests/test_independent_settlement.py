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
    largest_remainder,
    read_policy,
    step_annual,
    step_band_adjustment,
    step_case_amounts,
    step_case_points,
    step_withholding,
)

REPO = Path(__file__).resolve().parents[1]
MONEY = {("cases.parquet", "amount"), ("cases.parquet", "fund_amount"), ("hospitals.csv (month)", "withheld"),
         ("hospitals.csv (month)", "paid"), ("hospitals.csv (year)", "payment"),
         ("hospitals.csv (year)", "adjustment"), ("hospitals.csv (year)", "balance"),
         ("summary.json (year)", "budget_spent"), ("ledger annual", "balance_cents")}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small demo, run once per test session through the CLI."""
    out = tmp_path_factory.mktemp("independent") / "demo"
    subprocess.run([sys.executable, "-m", "drgdip", "demo", "-o", str(out), "--seed", "7",
                    "--records-per-month", "200", "--hospitals", "5", "--quiet"],
                   check=True, capture_output=True, text=True)
    return out


def test_demo_recomputed_from_the_docs_agrees_to_the_cent(demo_dir):
    report = check_demo(demo_dir)
    print(report.text())
    assert report.total_differ == 0, report.text()
    assert report.total_compared > 20_000
    for key in MONEY:
        assert report.compared[key] > 0, key
    # every case of the year is compared for its points and its amount
    n_cases = sum(pq.read_metadata(p).num_rows for p in (demo_dir / "settled").glob("*/cases.parquet"))
    assert report.compared[("cases.parquet", "points")] == n_cases
    assert report.compared[("cases.parquet", "amount")] == n_cases


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
    report = check_demo(bad)
    assert report.differ[("cases.parquet", "amount")] == 1
    assert report.differ[("hospitals.csv (month)", "withheld")] == 1
    assert report.total_differ == 2


@pytest.mark.parametrize("extra, rule", [
    ('[per_diem]\nday_points = 80\n', "rule per_diem not covered"),
    ('[settlement]\nreserve_share = 0.02\n', "rule settlement.reserve_share not covered"),
    ('[deviation]\ngroup_mean = "period"\n', "rule deviation.group_mean = 'period' not covered"),
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
    types[0] = "per_diem"
    cases = cases.set_column(cases.schema.get_field_index("case_type"), "case_type", pa.array(types))
    pq.write_table(cases, month / "cases.parquet")
    with pytest.raises(RuleNotCovered, match="per_diem.*not covered"):
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


def settle_edge(demo_dir, tmp_path, payment: str, missing_date=False, rate=False):
    records, period = edge_month(demo_dir, tmp_path, missing_date)
    policy = (demo_dir / "policy.toml").read_text(encoding="utf-8")
    policy = policy.replace("[deviation]", f'[special_review]\ncost_multiple = 4.0\npayment = "{payment}"\n\n[deviation]')
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


@pytest.mark.parametrize("payment", ["actual", "hold", "normal"])
def test_every_unpriced_reason_and_special_review_recomputed(demo_dir, tmp_path, payment):
    report = settle_edge(demo_dir, tmp_path, payment)
    assert report.total_differ == 0, report.text()
    assert report.compared[("cases.parquet", "pricing_reason")] == 40
    assert report.compared[("hospitals.csv (year)", "adjustment")] > 5
    reasons = {e for e in ("UNKNOWN_FUND", "MISSING_HOSPITAL", "BAD_DISCHARGE_DATE", "OUT_OF_PERIOD", "BAD_LOS",
                           "DUPLICATE_SETTLEMENT_ID", "BAD_COST", "BAD_PERSONAL_SHARE", "NOT_GROUPED",
                           "GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED", "NO_GROUP_MEAN_COST")}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert reasons <= set(summary["reasons"])
    held = "SPECIAL_REVIEW_HOLD" if payment == "hold" else "SPECIAL_REVIEW_FLAG"
    assert summary["reasons"][held] >= 2
    cases = pq.read_table(tmp_path / "out" / "cases.parquet").to_pandas()
    assert list(cases["pricing_reason"][32:40]) == [
        "BAD_COST", "BAD_PERSONAL_SHARE", "UNKNOWN_FUND", "MISSING_HOSPITAL", "BAD_LOS", "GROUP_NOT_IN_TABLE",
        "INVALID_RECORD", "DUPLICATE_SETTLEMENT_ID"]


def test_the_rate_form_recomputed(demo_dir, tmp_path):
    report = settle_edge(demo_dir, tmp_path, "actual", rate=True)
    assert report.total_differ == 0, report.text()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["funds"]["employee"]["rate"] == 17500.555
    assert summary["funds"]["resident"]["rate"] is None
    assert report.compared[("summary.json (month)", "rate")] == 2


def test_a_record_without_a_discharge_date_is_not_priced(demo_dir, tmp_path):
    report = settle_edge(demo_dir, tmp_path, "actual", missing_date=True)
    assert report.differ[("cases.parquet", "pricing_reason")] == 0, report.text()
