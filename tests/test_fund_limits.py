"""The fund's limits and the year's clearing (issue 12): 调剂金 and the cap, 预算/结算点值, 月度预拨,
质量保证金 refund by score, 激励系数. Every figure of docs/settlement.md §7–§10, to the cent."""
import copy
import sqlite3
from contextlib import closing

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from drgdip.arrowio import InputError
from drgdip.weights.settlement import ledger as ledger_mod
from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import PolicyError, load_policy, parse_policy
from drgdip.weights.settlement.runs import read_scores, settle_annual
from drgdip.weights.settlement.settle import (
    Settlement,
    hospitals_csv_table,
    prorate_cents,
    settle_period,
    settle_year,
)
from tests.test_settlement import DOC_CASES, DOC_POLICY, DOC_WEIGHTS

BANDS = {"overspend_bands": [{"up_to": 0.1, "fund_bears": 0.0}, {"up_to": 0.2, "fund_bears": 0.5},
                             {"fund_bears": 0.0}],
         "surplus_bands": [{"up_to": 0.1, "hospital_keeps": 1.0}, {"up_to": 0.2, "hospital_keeps": 0.5},
                           {"hospital_keeps": 0.0}]}

# §7: the year of three hospitals (two months each, the same figures twice)
YEAR_POLICY = {
    "budget": {"employee": {"2026": 60000.00}},
    "settlement": {"withholding_share": 0.05, **BANDS},
    "reserve": {"share": 0.02, "cap": "budget_and_reserve"},
    "advance": {"share": 0.9},
    "quality": {"bands": [{"below": 60, "refund": 0.0}, {"below": 90, "refund": "proportional"},
                          {"refund": 1.0}], "missing_refund": 0.8},
    "point_value": {"projected": "policy", "projected_points": {"employee": {"2026": 1250.0}},
                    "projected_personal_share": {"employee": {"2026": 17500.00}}},
}
SCORES = {"H1": 95.0, "H2": 85.0}


def year_months():
    rows = {  # per month: points, personal share, cost, amount due, withheld, paid (cents)
        "H1": (300.0, 450000, 2400000, 1500000, 75000, 1282500),
        "H2": (200.0, 300000, 1527500, 1000000, 50000, 855000),
        "H3": (100.0, 150000, 600000, 500000, 25000, 427500),
    }
    cols = {c: [] for c in ("hospital_id", "fund", "cases", "unpriced_cases", "weight_sum", "points",
                            "personal_share_cents", "payment_cents", "amount_due_cents", "withheld_cents",
                            "paid_cents", "cost_cents", "unpriced_cost_cents")}
    for _month in (1, 2):
        for h, (pts, ps, cost, due, wh, paid) in rows.items():
            for c, v in zip(cols, (h, "employee", 10, 0, 10.0, pts, ps, ps + due, due, wh, paid, cost, 0)):
                cols[c].append(v)
    return pa.table(cols)


def by_hospital(s, *names):
    return [tuple(r[n] for n in ("hospital_id",) + names) for r in hospitals_csv_table(s.hospitals).to_pylist()]


def test_the_year_worked_by_hand():
    s = settle_year(year_months(), parse_policy(YEAR_POLICY), "2026", scores=SCORES)
    f = s.funds["employee"]
    assert f["point_value"] == 65.0 and f["projected_point_value"] == 62.0
    assert by_hospital(s, "payment", "amount_due", "adjustment") == [
        ("H1", "39000.00", "30000.00", "1950.00"), ("H2", "26000.00", "20000.00", "975.00"),
        ("H3", "13000.00", "10000.00", "0.00")]
    assert by_hospital(s, "quality_score", "quality_refund", "quality_kept", "quality_reason") == [
        ("H1", 95.0, "1500.00", "0.00", "QUALITY_SCORE_BAND"), ("H2", 85.0, "850.00", "150.00", "QUALITY_SCORE_BAND"),
        ("H3", None, "400.00", "100.00", "QUALITY_SCORE_MISSING")]
    assert (f["reserve"], f["spend_before_cap"], f["reserve_used"], f["cap_cut"]) == (1200.00, 62675.00, 1200.00, 1475.00)
    assert by_hospital(s, "cap_cut", "paid", "monthly_paid", "monthly_held", "balance") == [
        ("H1", "983.33", "30966.67", "25650.00", "2850.00", "5316.67"),
        ("H2", "491.67", "20333.33", "17100.00", "1900.00", "3233.33"),
        ("H3", "0.00", "9900.00", "8550.00", "950.00", "1350.00")]
    assert f["budget_spent"] == 61200.00 and f["balance"] == 9900.00 and f["monthly_held"] == 5700.00
    assert any("H3" in n and "missing_refund" in n for n in s.notes)


def test_the_cap_at_the_budget_alone_and_no_cap():
    pol = copy.deepcopy(YEAR_POLICY)
    pol["reserve"]["cap"] = "budget"
    s = settle_year(year_months(), parse_policy(pol), "2026", scores=SCORES)
    f = s.funds["employee"]
    # over = 62,675 − 60,000 = 2,675 shared 2:1 → 1,783.33⅓ and 891.66⅔: H2 gets the missing cent
    assert (f["cap_cut"], f["reserve_used"], f["budget_spent"]) == (2675.00, 0.0, 60000.00)
    assert by_hospital(s, "cap_cut")[:2] == [("H1", "1783.33"), ("H2", "891.67")]
    pol["reserve"]["cap"] = "none"
    s = settle_year(year_months(), parse_policy(pol), "2026", scores=SCORES)
    f = s.funds["employee"]
    assert (f["cap_cut"], f["reserve_used"], f["over_budget_unfunded"], f["budget_spent"]) == (
        0.0, 1200.00, 1475.00, 62675.00)


def test_defaults_keep_todays_annual_settlement():
    plain = {"budget": YEAR_POLICY["budget"], "settlement": YEAR_POLICY["settlement"]}
    s = settle_year(year_months(), parse_policy(plain), "2026")
    assert "cap_cut_cents" not in s.hospitals.column_names and "quality_refund_cents" not in s.hospitals.column_names
    # withholding refunded in full, no cap: paid = amount due + adjustment
    assert by_hospital(s, "paid") == [("H1", "31950.00"), ("H2", "20975.00"), ("H3", "10000.00")]
    assert "reserve" not in s.funds["employee"] and "projected_point_value" not in s.funds["employee"]


def test_projected_point_value_from_history():
    pol = copy.deepcopy(YEAR_POLICY)
    pol["point_value"] = {"projected": "history", "growth": 0.25}
    s = settle_year(year_months(), parse_policy(pol), "2026", scores=SCORES,
                    previous={"employee": (1000.0, 1500000)})
    f = s.funds["employee"]
    assert (f["projected_points"], f["projected_personal_share"], f["projected_point_value"]) == (1250.0, 18750.00, 63.0)
    s = settle_year(year_months(), parse_policy(pol), "2026", scores=SCORES, previous={})
    assert s.funds["employee"]["projected_point_value"] is None
    assert "no annual settlement of 2025" in s.funds["employee"]["projected_source"]


def test_a_month_with_advances():
    pol = copy.deepcopy(DOC_POLICY)
    pol["advance"] = {"share": 0.9}
    p = parse_policy(pol)
    s = settle_period(price_cases(DOC_CASES, DOC_WEIGHTS, p, period="2026-10"), p, "2026-10")
    assert by_hospital(s, "amount_due", "withheld", "held", "paid") == [
        ("H1", "9525.58", "476.28", "904.93", "8144.37"), ("H2", "10474.42", "523.72", "995.07", "8955.63")]
    assert s.funds["employee"]["held"] == 1900.00 and s.funds["employee"]["paid"] == 17100.00


# §9 incentives: indicators of three hospitals against the region
INC_BANDS = {"cmi_bands": [{"below": 0.9, "coefficient": 0.98}, {"below": 1.1, "coefficient": 1.0},
                           {"coefficient": 1.02}],
             "cost_bands": [{"below": 0.9, "coefficient": 1.01}, {"below": 1.1, "coefficient": 1.0},
                            {"coefficient": 0.99}],
             "time_bands": [{"below": 0.9, "coefficient": 1.01}, {"below": 1.1, "coefficient": 1.0},
                            {"coefficient": 0.99}],
             "index_form": "per_weight"}     # §9's first example: the indices per unit of weight


def incentive_months():
    t = year_months().slice(0, 3)
    return (t.set_column(2, "cases", pa.array([40, 40, 20]))
             .set_column(4, "weight_sum", pa.array([48.0, 32.0, 20.0]))
             .set_column(5, "points", pa.array([600.0, 400.0, 200.0]))
             .set_column(6, "personal_share_cents", pa.array([900000, 600000, 300000]))
             .set_column(11, "cost_cents", pa.array([4800000, 3840000, 1360000]))
             .append_column("los_days", pa.array([480.0, 256.0, 240.0])))


def test_incentive_coefficients_by_hand():
    pol = {"budget": YEAR_POLICY["budget"], "incentives": INC_BANDS}
    s = settle_year(incentive_months(), parse_policy(pol), "2026")
    rows = hospitals_csv_table(s.hospitals).to_pylist()
    assert [(r["cmi_index"], r["cost_index"], r["time_index"], r["incentive_coefficient"], r["settled_points"])
            for r in rows] == [("1.2000", "1.0000", "1.0246", "1.0200", "612.0000"),
                               ("0.8000", "1.2000", "0.8197", "0.9799", "391.9608"),
                               ("1.0000", "0.6800", "1.2295", "0.9999", "199.9800")]
    assert s.hospitals["incentive_coefficient"].to_pylist() == [1.02, 0.979902, 0.9999]
    assert by_hospital(s, "payment") == [("H1", "39649.79"), ("H2", "25394.06"), ("H3", "12956.15")]
    assert s.funds["employee"]["payment"] == 78000.00


def test_time_index_needs_lengths_of_stay():
    pol = {"budget": YEAR_POLICY["budget"], "incentives": INC_BANDS}
    s = settle_year(incentive_months().drop_columns(["los_days"]), parse_policy(pol), "2026")
    assert s.hospitals["incentive_reason"].to_pylist() == ["INCENTIVE_NO_TIME_INDEX"] * 3
    # without the time index H2 is 0.98 × 0.99, H3 1.01
    assert s.hospitals["incentive_coefficient"].to_pylist() == [1.02, 0.9702, 1.01]


def test_cap_cut_spread_ties_to_the_earlier_hospital():
    # three equal adjustments share 1 cent and 2 cents: the earliest rows get them
    assert prorate_cents(np.array([100, 100, 100]), 1).tolist() == [1, 0, 0]
    assert prorate_cents(np.array([100, 100, 100]), 2).tolist() == [1, 1, 0]
    assert prorate_cents(np.array([0, 0]), 0).tolist() == [0, 0]


@pytest.mark.parametrize("fields, msg", [
    ({"reserve": {"cap": "always"}}, "reserve.cap must be one of"),
    ({"reserve": {"share": 1.5}}, "reserve.share must be <= 1.0"),
    ({"advance": {"share": -0.1}}, "advance.share must be >= 0.0"),
    ({"quality": {"bands": [{"below": 60, "refund": "half"}, {"refund": 1.0}]}}, "quality.bands[0].refund"),
    ({"quality": {"bands": [{"below": 90, "refund": 0.5}, {"below": 80, "refund": 1.0}, {"refund": 1.0}]}},
     "below must increase"),
    ({"incentives": {"cmi_bands": [{"below": 1.0, "coefficient": 1.0}]}}, "the last band must have no 'below'"),
    ({"incentives": {"size_bands": []}}, "incentives.size_bands is not a policy field"),
    ({"point_value": {"projected": "policy", "projected_points": {"employee": {"2026-01": 5.0}}}}, "is not a year"),
])
def test_bad_policy_fields(fields, msg):
    with pytest.raises(PolicyError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        parse_policy({"budget": {"employee": {"2026": 1.0}}, **fields})


def test_scores_file(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("hospital_id,score\nH1,95\nH2,85.5\n", encoding="utf-8")
    assert read_scores(p) == {"H1": 95.0, "H2": 85.5}
    for body, msg in [("hospital,score\nH1,9\n", "needs columns hospital_id, score"),
                      ("hospital_id,score\nH1,abc\n", "row 2 .H1.: score 'abc' is not a number from 0 to 100"),
                      ("hospital_id,score\nH1,101\n", "is not a number from 0 to 100"),
                      ("hospital_id,score\nH1,90\nH1,80\n", "hospital H1 is listed twice")]:
        p.write_text(body, encoding="utf-8")
        with pytest.raises(InputError, match=msg):
            read_scores(p)
    with pytest.raises(InputError, match="no such scores file"):
        read_scores(tmp_path / "none.csv")


# --- the ledger: the figures recorded, an old ledger opens and takes the new runs ----------

def _ledger_with_year(tmp_path, policy_fields):
    pol_path = tmp_path / "p.toml"
    text = ('[budget.employee]\n"2026" = 60000.00\n"2026-01" = 30000.00\n"2026-02" = 30000.00\n'
            + policy_fields)
    pol_path.write_text(text, encoding="utf-8")
    policy = load_policy(pol_path)
    db = tmp_path / "l.db"
    months = year_months()
    with closing(ledger_mod.connect(db)) as conn:
        for i, period in enumerate(("2026-01", "2026-02")):
            t = months.slice(3 * i, 3)
            s = Settlement(period, "monthly", t, {"employee": {"budget": 30000.0, "personal_share": 9000.0,
                                                              "total_points": 600.0, "point_value": 65.0,
                                                              "cases": 30}})
            ledger_mod.record_run(conn, s, policy=policy, inputs={}, scheme_id=None, now="2026-03-01T00:00:00+00:00")
    return pol_path, db


POLICY_TOML = """
[settlement]
withholding_share = 0.05
overspend_bands = [{ up_to = 0.1, fund_bears = 0.0 }, { up_to = 0.2, fund_bears = 0.5 }, { fund_bears = 0.0 }]
surplus_bands = [{ up_to = 0.1, hospital_keeps = 1.0 }, { up_to = 0.2, hospital_keeps = 0.5 }, { hospital_keeps = 0.0 }]
[reserve]
share = 0.02
cap = "budget_and_reserve"
[quality]
bands = [{ below = 60, refund = 0.0 }, { below = 90, refund = "proportional" }, { refund = 1.0 }]
missing_refund = 0.8
[point_value]
projected = "policy"
[point_value.projected_points.employee]
"2026" = 1250.0
[point_value.projected_personal_share.employee]
"2026" = 17500.00
"""


def test_the_annual_run_records_the_new_figures(tmp_path):
    pol, db = _ledger_with_year(tmp_path, POLICY_TOML)
    scores = tmp_path / "scores.csv"
    scores.write_text("hospital_id,score\nH1,95\nH2,85\n", encoding="utf-8")
    s = settle_annual("2026", policy_path=pol, ledger_path=db, out=tmp_path / "out", quiet=True, scores=scores,
                      partial_year=True)
    assert s.funds["employee"]["cap_cut"] == 1475.00
    with closing(sqlite3.connect(db)) as conn:
        fr = conn.execute("SELECT projected_point_value, point_value, reserve_cents, reserve_used_cents, cap_cut_cents"
                          " FROM fund_results JOIN runs USING (run_id) WHERE kind='annual'").fetchone()
        hr = conn.execute("SELECT hospital_id, quality_score, quality_refund_cents, cap_cut_cents, balance_cents "
                          "FROM hospital_results JOIN runs USING (run_id) WHERE kind='annual' ORDER BY 1").fetchall()
        inputs = conn.execute("SELECT inputs FROM runs WHERE kind='annual'").fetchone()[0]
    assert fr == (62.0, 65.0, 120000, 120000, 147500)
    assert hr == [("H1", 95.0, 150000, 98333, 531667), ("H2", 85.0, 85000, 49167, 323333),
                  ("H3", None, 40000, 0, 135000)]
    assert '"scores"' in inputs
    shown = ledger_mod.show(db)
    assert "employee: projected point value 62.000000; reserve 1200.00, used 1200.00, cut by the cap 1475.00" in shown
    csv = (tmp_path / "out" / "hospitals.csv").read_text(encoding="utf-8")
    assert '"H3","employee"' in csv and "QUALITY_SCORE_MISSING" in csv


def test_a_version_1_ledger_opens_and_a_failed_run_leaves_it_intact(tmp_path):
    pol, db = _ledger_with_year(tmp_path, POLICY_TOML)
    # make it a version-1 ledger: the tables without the added columns
    with closing(sqlite3.connect(db)) as conn:
        for table, col, _ in ledger_mod.ADDED_COLUMNS:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
        conn.commit()
    before = db.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("hospital_id,score\nH1,high\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a number"):
        settle_annual("2026", policy_path=pol, ledger_path=db, quiet=True, scores=bad, partial_year=True)
    assert db.read_bytes() == before
    s = settle_annual("2026", policy_path=pol, ledger_path=db, quiet=True, partial_year=True)   # no scores file
    assert s.hospitals["quality_reason"].to_pylist() == ["QUALITY_SCORE_MISSING"] * 3
    with closing(ledger_mod.connect(db, create=False)) as conn:
        assert {"cap_cut_cents", "quality_score"} <= ledger_mod.table_columns(conn, "hospital_results")
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(ledger_mod.SCHEMA_VERSION)
        rs = ledger_mod.runs(conn)
    assert [r["kind"] for r in rs] == ["monthly", "monthly", "annual"]


def test_cli_scores_option(tmp_path):
    from drgdip.cli import main
    pol, db = _ledger_with_year(tmp_path, POLICY_TOML)
    scores = tmp_path / "scores.csv"
    scores.write_text("hospital_id,score\nH1,95\nH2,85\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["settle", "2026", "--final", "--partial-year", "--policy", str(pol), "--ledger",
                                  str(db), "--scores", str(scores), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "reserve used 1200.00, cut by the cap 1475.00" in r.output
    assert "projected (预算) point value 62.000000" in r.output
    r = CliRunner().invoke(main, ["settle", "2026", "--final", "--partial-year", "--reopen", "--policy", str(pol),
                                  "--ledger", str(db), "--scores", str(tmp_path / "nope.csv"), "--quiet"])
    assert r.exit_code == 2 and "no such scores file" in r.output and "Traceback" not in r.output


def test_the_cases_the_rules_do_not_name_as_documented():
    """docs/settlement.md §1 "What happens to the cases the rules above do not name"."""
    pol = copy.deepcopy(DOC_POLICY)
    pol["special_review"] = {"payment": "hold"}
    c = DOC_CASES.append_column("special_review", pa.array(["", "1", "", "", "", ""]))
    c = c.set_column(1, "hospital_id", pa.array(["H1", "H1", "H1", None, "H2", "H2"]))
    c = c.set_column(2, "fund", pa.array(["employee", "employee", "employee", "employee", "xx", "employee"]))
    c = c.set_column(3, "discharge_date", pa.array(["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04", "2026-10-05",
                                                    "2026-10-06"]))
    p = parse_policy(pol)
    s = settle_period(price_cases(c, DOC_WEIGHTS, p, period="2026-10"), p, "2026-10")
    assert s.cases["pricing_reason"].to_pylist() == ["PRICED_NORMAL", "SPECIAL_REVIEW_HOLD", "LOW_COST_CASE",
                                                     "MISSING_HOSPITAL", "UNKNOWN_FUND", "GROUP_NOT_IN_TABLE"]
    rows = {r["hospital_id"]: r for r in hospitals_csv_table(s.hospitals).to_pylist()}
    assert sorted(rows) == ["", "H1", "H2"]                  # no row for the unknown fund's case
    assert (rows[""]["unpriced_cases"], rows[""]["unpriced_cost"]) == (1, "30000.00")
    # the held case's 3,000.00 personal share is in neither the point value nor H1's share
    assert rows["H1"]["personal_share"] == "1800.00" and rows["H1"]["unpriced_cost"] == "35000.00"
    assert s.funds["employee"]["personal_share"] == 1800.00 and s.funds["employee"]["total_points"] == 180.0
    assert any("no known fund" in n for n in s.notes)


def test_a_record_without_a_discharge_date_is_not_priced():
    """docs/settlement.md: a missing or empty discharge date is BAD_DISCHARGE_DATE, like an unreadable one
    (nothing shows the case is in the period; it could be paid in two months)."""
    p = parse_policy(copy.deepcopy(DOC_POLICY))
    c = DOC_CASES.set_column(3, "discharge_date", pa.array([None, "", "2026-10-02", "2026-02-30", "2026-10-05",
                                                            "2026-10-06"]))
    reasons = price_cases(c, DOC_WEIGHTS, p, period="2026-10")["pricing_reason"].to_pylist()
    assert reasons[:2] == ["BAD_DISCHARGE_DATE", "BAD_DISCHARGE_DATE"] and reasons[3] == "BAD_DISCHARGE_DATE"
    assert reasons[2] != "BAD_DISCHARGE_DATE"
