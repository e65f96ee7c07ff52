"""Case typing and points, worked by hand (DOMAIN.md §7), and unpriced cases kept with a reason."""
import pyarrow as pa
import pytest

from drgdip.weights.relative_weights import read_weight_table
from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import PolicyError, parse_policy
from tests.conftest import need_shared

WEIGHTS = pa.table({"drg": ["A", "B", "Z"], "weight": [1.0, 2.5, None], "mean_cost": [10000.0, 25000.0, 3000.0]})


def policy(**over):
    base = {"budget": {"employee": {"2026-10": 20000.0}},
            "coefficients": {"level": {"3A": 1.0}, "hospital_level": {"H1": "3A"}, "hospital": {"H2": 0.9}},
            "deviation": {"high_bands": [{"below": 2.0, "k": 3.0}, {"k": 2.0}], "low_k": 0.4}}
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v}
    return parse_policy(base)


def cases(rows, **extra):
    hosp, drg, cost = zip(*rows)
    n = len(rows)
    t = {"hospital_id": list(hosp), "fund": ["职工"] * n, "discharge_date": ["2026-10-15"] * n,
         "drg": list(drg), "total_cost": list(cost), "personal_share": [0.0] * n}
    t.update(extra)
    return pa.table(t)


ROWS = [("H1", "A", 9000.0),    # ratio 0.9: normal, 100
        ("H1", "A", 35000.0),   # ratio 3.5 > 3 (RW < 2): high, 100 × (1 + 0.5) = 150
        ("H1", "B", 8000.0),    # ratio 0.32 < 0.4: low, 250 × 0.32 = 80
        ("H2", "B", 30000.0),   # ratio 1.2: normal, 250 × 0.9 = 225
        ("H2", "B", 55000.0),   # ratio 2.2 > 2 (RW ≥ 2): high, 225 × (1 + 0.2) = 270
        ("H2", "A", 11000.0)]   # normal, 100 × 0.9 = 90


def test_points_by_hand():
    t = price_cases(cases(ROWS), WEIGHTS, policy(), period="2026-10")
    assert t["case_type"].to_pylist() == ["normal", "high_cost", "low_cost", "normal", "high_cost", "normal"]
    assert t["points"].to_pylist() == pytest.approx([100, 150, 80, 225, 270, 90])
    assert t["pricing_reason"].to_pylist()[:3] == ["PRICED_NORMAL", "HIGH_COST_CASE", "LOW_COST_CASE"]
    assert t["coefficient"].to_pylist() == [1.0, 1.0, 1.0, 0.9, 0.9, 0.9]
    assert t["fund_key"].to_pylist() == ["employee"] * 6


@pytest.mark.parametrize("dev, expected_high1, expected_low", [
    ({"high_payment": "actual"}, 350.0, 80.0),
    ({"high_payment": "cap", "high_cap": 3.2}, 320.0, 80.0),
    ({"high_payment": "none"}, 100.0, 80.0),
    ({"high_add_on_share": 0.5}, 125.0, 80.0),
    ({"low_payment": "deduction", "low_deduction": 0.3}, 150.0, 175.0),
    ({"low_payment": "none"}, 150.0, 250.0),
])
def test_payment_modes(dev, expected_high1, expected_low):
    t = price_cases(cases(ROWS), WEIGHTS, policy(deviation=dev))
    pts = t["points"].to_pylist()
    assert pts[1] == pytest.approx(expected_high1) and pts[2] == pytest.approx(expected_low)


def test_rate_form_points_are_weights():
    p = policy(region={"form": "rate"}, rate={"employee": {"2026": 12000.0}})
    assert price_cases(cases(ROWS[:1]), WEIGHTS, p)["points"].to_pylist() == [1.0]
    # base points given by the caller (DIP scores): score × coefficient
    assert price_cases(cases(ROWS[3:4]), WEIGHTS, policy(), base_points=1.0)["points"].to_pylist() == [pytest.approx(2.25)]


def test_special_review_by_flag_by_cost_and_hold():
    rows = [("H1", "A", 9000.0), ("H1", "A", 60000.0), ("H1", "A", 40000.0)]
    extra = {"special_review": ["是", None, "0"]}
    t = price_cases(cases(rows, **extra), WEIGHTS, policy(special_review={"cost_multiple": 5.0}))
    assert t["case_type"].to_pylist() == ["special_review", "special_review", "high_cost"]
    assert t["pricing_reason"].to_pylist() == ["SPECIAL_REVIEW_FLAG", "SPECIAL_REVIEW_COST", "HIGH_COST_CASE"]
    assert t["points"].to_pylist() == pytest.approx([90.0, 600.0, 200.0])    # actual: base × ratio
    held = price_cases(cases(rows, **extra), WEIGHTS, policy(special_review={"cost_multiple": 5.0, "payment": "hold"}))
    assert held["points"].to_pylist()[:2] == [None, None]
    assert held["pricing_reason"].to_pylist()[:2] == ["SPECIAL_REVIEW_HOLD", "SPECIAL_REVIEW_HOLD"]


def test_unpriced_cases_are_kept_with_a_reason_and_no_points():
    t = cases([("H1", "A", 9000.0), ("H1", "Q", 9000.0), ("H1", "Z", 9000.0), ("H1", "A", None),
               ("H1", "0000", 9000.0), ("H1", "A", 9000.0), (None, "A", 9000.0), ("H1", "A", 9000.0),
               ("H1", "A", 9000.0), ("H1", "B", 9000.0)],
              status=["grouped", "grouped", "grouped", "grouped", "ungroupable", "grouped", "grouped", "grouped",
                      "grouped", "invalid"])
    t = t.set_column(1, "fund", pa.array(["职工"] * 5 + ["retired"] + ["职工"] * 4))
    t = t.set_column(2, "discharge_date", pa.array(["2026-10-01"] * 7 + ["2026-09-30", "2026/13/01", "2026-10-01"]))
    out = price_cases(t, WEIGHTS, policy(), period="2026-10")
    assert out.num_rows == 10
    assert out["pricing_reason"].to_pylist() == [
        "PRICED_NORMAL", "GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED", "BAD_COST", "NOT_GROUPED", "UNKNOWN_FUND",
        "MISSING_HOSPITAL", "OUT_OF_PERIOD", "BAD_DISCHARGE_DATE", "INVALID_RECORD"]
    assert out["points"].to_pylist()[1:] == [None] * 9
    assert out["case_type"].to_pylist()[1:] == ["unpriced"] * 9


def test_group_mean_from_the_period_and_official_table_needs_it():
    official = pa.table({"drg": ["A"], "weight": [1.0]})
    with pytest.raises(PolicyError, match="group_mean"):
        price_cases(cases(ROWS[:1]), official, policy())
    rows = [("H1", "A", 1000.0), ("H1", "A", 1000.0), ("H1", "A", 1000.0), ("H1", "A", 9000.0)]
    t = price_cases(cases(rows), official, policy(deviation={"group_mean": "period"}))
    # period mean 3000: 9000 is exactly 3× (not above k), 1000 is 0.333 < 0.4: low
    assert t["group_mean_cost"].to_pylist() == [3000.0] * 4
    assert t["case_type"].to_pylist() == ["low_cost"] * 3 + ["normal"]


def test_harbin_official_table_rate_form_and_an_unpriced_drg():
    path = need_shared("weights", "harbin-2024.csv")
    w = read_weight_table(path)
    p = parse_policy({"region": {"form": "rate"}, "rate": {"employee": {"2024": 12252.70}},
                      "deviation": {"group_mean": "period"}})
    t = cases([("H1", "AA19", 100000.0), ("H1", "ZZ99", 5000.0)])
    out = price_cases(t, w, p)
    assert out["points"].to_pylist()[0] == pytest.approx(18.2858)   # the table's weight, rate form
    assert out["pricing_reason"].to_pylist() == ["PRICED_NORMAL", "GROUP_NOT_IN_TABLE"]
    assert out["points"].to_pylist()[1] is None


def test_aliases_of_the_record_schema_are_accepted():
    t = pa.table({"fixmedins_code": ["H1"], "insutype": ["390"], "dscg_time": ["2026-10-03"], "drg": ["A"],
                  "medfee_sumamt": ["9000.00"], "个人负担": ["100"]})
    p = policy(budget={"resident": {"2026-10": 1.0}})
    out = price_cases(t, WEIGHTS, p, period="2026-10")
    assert out["fund_key"].to_pylist() == ["resident"] and out["points"].to_pylist() == [100.0]


def test_impossible_dates_bad_length_of_stay_and_duplicate_ids_are_unpriced():
    rows = [("H1", "A", 9000.0)] * 7
    t = price_cases(cases(rows, id=["a", "b", "b", "c", "d", "e", "f"],
                          los_days=[5.0, 5.0, 5.0, -3.0, 1e9, 400.0, 365.0]),
                    WEIGHTS, policy(), period="2026-10")
    assert t["pricing_reason"].to_pylist() == ["PRICED_NORMAL", "DUPLICATE_SETTLEMENT_ID", "DUPLICATE_SETTLEMENT_ID",
                                               "BAD_LOS", "BAD_LOS", "BAD_LOS", "PRICED_NORMAL"]
    wide = price_cases(cases(rows[:2], los_days=[400.0, 0.5]), WEIGHTS,
                       policy(records={"los_max_days": 500, "los_min_days": 0.5}), period="2026-10")
    assert wide["pricing_reason"].to_pylist() == ["PRICED_NORMAL", "PRICED_NORMAL"]
    dates = ["2026-02-30", "2026-10-31", "2026-09-31", "2026-10-15 08:00:00", "20261015", "2026-10-00"]
    t = price_cases(cases(rows[:6], discharge_date=dates), WEIGHTS, policy(), period="2026-10")
    assert t["pricing_reason"].to_pylist() == ["BAD_DISCHARGE_DATE", "PRICED_NORMAL", "BAD_DISCHARGE_DATE",
                                               "PRICED_NORMAL", "PRICED_NORMAL", "BAD_DISCHARGE_DATE"]


def test_record_limits_are_checked():
    with pytest.raises(PolicyError, match="records.los_max_days must be >= 10"):
        policy(records={"los_min_days": 10, "los_max_days": 5})
