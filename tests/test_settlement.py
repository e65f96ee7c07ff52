"""Point value and payments: the worked example of docs/settlement.md, invariants, rate form, annual."""
import numpy as np
import pyarrow as pa
import pytest

from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import parse_policy
from drgdip.weights.settlement.settle import (
    band_share,
    distribute_cents,
    hospitals_csv_table,
    settle_period,
    settle_year,
    to_cents,
)

# --- the worked example of docs/settlement.md -------------------------------------------

DOC_POLICY = {
    "budget": {"employee": {"2026-10": 20000.00}},
    "coefficients": {"level": {"3A": 1.0}, "hospital_level": {"H1": "3A"}, "hospital": {"H2": 0.9}},
    "deviation": {"high_bands": [{"below": 2.0, "k": 3.0}, {"k": 2.0}], "low_k": 0.4},
    "settlement": {"withholding_share": 0.05},
}
DOC_WEIGHTS = pa.table({"drg": ["A", "B"], "weight": [1.0, 2.5], "mean_cost": [10000.0, 25000.0]})
DOC_CASES = pa.table({
    "id": ["1", "2", "3", "4", "5", "6"],
    "hospital_id": ["H1", "H1", "H1", "H2", "H2", "H2"],
    "fund": ["employee"] * 6,
    "discharge_date": ["2026-10-0%d" % i for i in range(1, 7)],
    "drg": ["A", "A", "B", "B", "A", "ZZ99"],
    "total_cost": [9000.0, 35000.0, 8000.0, 30000.0, 11000.0, 5000.0],
    "personal_share": [1000.0, 3000.0, 800.0, 2000.0, 1200.0, 500.0],
})


def doc_run():
    p = parse_policy(DOC_POLICY)
    return settle_period(price_cases(DOC_CASES, DOC_WEIGHTS, p, period="2026-10"), p, "2026-10")


def test_worked_example_of_the_docs():
    s = doc_run()
    c = s.cases
    assert c["points"].to_pylist()[:5] == pytest.approx([100, 150, 80, 225, 90])
    assert c["case_type"].to_pylist()[5] == "unpriced" and c["amount"].to_pylist()[5] is None
    f = s.funds["employee"]
    assert f["total_points"] == 645 and f["personal_share"] == 8000.00
    assert f["point_value"] == pytest.approx(28000 / 645)          # 43.410852713…
    assert c["amount"].to_pylist()[:5] == [4341.08, 6511.63, 3472.87, 9767.44, 3906.98]
    assert c["fund_amount"].to_pylist()[:5] == [3341.08, 3511.63, 2672.87, 7767.44, 2706.98]
    h = hospitals_csv_table(s.hospitals).to_pylist()
    assert [(r["hospital_id"], r["cases"], r["unpriced_cases"], r["points"], r["payment"], r["personal_share"],
             r["amount_due"], r["withheld"], r["paid"], r["cost"], r["unpriced_cost"], r["cmi"]) for r in h] == [
        ("H1", 3, 0, "330.0000", "14325.58", "4800.00", "9525.58", "476.28", "9049.30", "52000.00", "0.00", "1.5000"),
        ("H2", 2, 1, "315.0000", "13674.42", "3200.00", "10474.42", "523.72", "9950.70", "41000.00", "5000.00", "1.7500"),
    ]
    assert (f["amount_due"], f["withheld"], f["paid"]) == (20000.00, 1000.00, 19000.00)


# --- invariants -------------------------------------------------------------------------

def test_invariants_on_many_cases_two_funds():
    rng = np.random.default_rng(7)
    n = 5000
    drg = rng.choice(["A", "B"], n)
    mean = np.where(drg == "A", 10000.0, 25000.0)
    cost = np.round(mean * rng.lognormal(0, 0.6, n), 2)
    t = pa.table({"hospital_id": rng.choice([f"H{i}" for i in range(37)], n),
                  "fund": rng.choice(["310", "390"], n), "discharge_date": ["2026-10-09"] * n, "drg": drg,
                  "total_cost": cost, "personal_share": np.round(cost * rng.uniform(0.05, 0.4, n), 2)})
    p = parse_policy({**DOC_POLICY, "budget": {"employee": {"2026-10": 31_234_567.89},
                                               "resident": {"2026-10": 12_345_678.91}}})
    s = settle_period(price_cases(t, DOC_WEIGHTS, p, period="2026-10"), p, "2026-10")
    amount = to_cents(np.nan_to_num(s.cases["amount"].to_numpy(zero_copy_only=False)))
    ps = to_cents(t["personal_share"].to_numpy())
    fund = np.array(s.cases["fund_key"].to_pylist())
    h = s.hospitals
    for f, budget in (("employee", 3_123_456_789), ("resident", 1_234_567_891)):
        m = fund == f
        assert amount[m].sum() == budget + ps[m].sum()                     # Σ points × value = budget + PS
        hm = np.array(h["fund"].to_pylist()) == f
        assert h["amount_due_cents"].to_numpy()[hm].sum() == budget          # Σ hospital amounts = budget
        due = h["amount_due_cents"].to_numpy()[hm]
        withheld = h["withheld_cents"].to_numpy()[hm]
        assert withheld.sum() == to_cents(np.array([np.maximum(due, 0).sum() / 100 * 0.05]))[0]
        assert (h["paid_cents"].to_numpy()[hm] + withheld == due).all()
        pv = s.funds[f]["point_value"]
        assert abs(amount[m] / 100 - s.cases["points"].to_numpy(zero_copy_only=False)[m] * pv).max() < 0.01


def test_distribute_cents_largest_remainder():
    got = distribute_cents(np.array([1.004, 1.006, 1.005]), 302)
    assert got.tolist() == [100, 101, 101]        # 300 floored, +1 to the two largest remainders
    assert distribute_cents(np.array([0.333, 0.333, 0.334]), 100).tolist() == [33, 33, 34]
    assert distribute_cents(np.array([0.5, 0.5]), 101).tolist() == [51, 50]    # tie: earlier row first
    with pytest.raises(ValueError):
        distribute_cents(np.array([1.0]), 500)


def test_rate_form_with_a_published_rate():
    p = parse_policy({"region": {"form": "rate"}, "rate": {"employee": {"2026": 12252.70}},
                      "deviation": {"high_bands": [{"k": 3.0}]}})
    s = settle_period(price_cases(DOC_CASES.slice(0, 1), DOC_WEIGHTS, p, period="2026-10"), p, "2026-10")
    assert s.funds["employee"]["point_value"] == 12252.70 and s.funds["employee"]["budget"] is None
    assert s.cases["amount"].to_pylist() == [12252.70]
    assert s.funds["employee"]["amount_due"] == 11252.70


# --- annual -----------------------------------------------------------------------------

def test_band_share_integrates_piecewise():
    bands = parse_policy({**DOC_POLICY, "settlement": {"surplus_bands": [
        {"up_to": 0.1, "hospital_keeps": 1.0}, {"up_to": 0.2, "hospital_keeps": 0.5}, {"hospital_keeps": 0.0}]}}
    ).settlement.surplus_bands
    assert band_share(np.array([6875.0]), np.array([28875.0]), bands)[0] == pytest.approx(2887.5 + 1443.75)
    assert band_share(np.array([100.0]), np.array([28875.0]), bands)[0] == pytest.approx(100.0)


def test_annual_settlement_by_hand():
    p = parse_policy({"budget": {"employee": {"2026": 40000.00}}, "settlement": {
        "surplus_bands": [{"up_to": 0.1, "hospital_keeps": 1.0}, {"up_to": 0.2, "hospital_keeps": 0.5},
                          {"hospital_keeps": 0.0}],
        "overspend_bands": [{"up_to": 0.1, "fund_bears": 0.0}, {"up_to": 0.2, "fund_bears": 0.5},
                            {"fund_bears": 0.0}]}})
    monthly = pa.table({
        "hospital_id": ["H1", "H1", "H2", "H2"], "fund": ["employee"] * 4,
        "cases": [3, 3, 2, 2], "unpriced_cases": [0, 0, 1, 0], "weight_sum": [4.5, 4.0, 3.5, 3.0],
        "points": [330.0, 300.0, 315.0, 255.0], "point_value": [43.4, 40.0, 43.4, 40.0],
        "personal_share_cents": [480000, 400000, 320000, 300000], "payment_cents": [0] * 4,
        "amount_due_cents": [0] * 4, "withheld_cents": [50000, 40000, 50000, 40000],
        "paid_cents": [900000, 900000, 1000000, 950000], "cost_cents": [1200000, 1000000, 1635000, 1500000],
        "unpriced_cost_cents": [0, 0, 500000, 0]})
    s = settle_year(monthly, p, "2026")
    assert s.funds["employee"]["point_value"] == pytest.approx(55000 / 1200)
    rows = hospitals_csv_table(s.hospitals).to_pylist()
    got = [(r["hospital_id"], r["payment"], r["amount_due"], r["adjustment"], r["paid"], r["monthly_paid"],
            r["balance"]) for r in rows]
    # H1: surplus 28875 − 22000 = 6875: keeps 2887.50 + 1443.75, returns 2543.75
    # H2: overspend 31350 − 26125 = 5225: fund bears 0.5 × (5225 − 2612.50) = 1306.25
    assert got == [("H1", "28875.00", "20075.00", "-2543.75", "17531.25", "18000.00", "-468.75"),
                   ("H2", "26125.00", "19925.00", "1306.25", "21231.25", "19500.00", "1731.25")]
    f = s.funds["employee"]
    assert f["amount_due"] == 40000.00 and f["budget_spent"] == 40000.00 - 2543.75 + 1306.25
