"""Policy file: reading, defaults, validation messages naming the field, coefficient lookup."""
from pathlib import Path

import numpy as np
import pytest

from drgdip.weights.settlement.policy import (
    PolicyError,
    band_value,
    load_policy,
    parse_policy,
)

REPO = Path(__file__).resolve().parents[1]
BUDGET = {"budget": {"employee": {"2026-10": 1000.0}}}


def test_example_policy_reads_with_its_numbers():
    p = load_policy(REPO / "examples" / "region.toml")
    assert p.form == "point" and p.base_points == 100
    assert p.budget_for("employee", "2026-10") == 86_000_000.00
    assert p.budget_for("resident", "2026") == 780_000_000.00
    assert [b.value for b in p.deviation.high_bands] == [3.0, 2.5, 2.0, 1.5, 1.3]
    assert p.settlement.withholding_share == 0.05
    assert p.weights.year_weights == (1.0, 2.0, 7.0)
    assert len(p.sha256) == 64


def test_defaults_fill_what_the_policy_leaves_out():
    p = parse_policy(BUDGET)
    assert p.base_points == 100 and p.form == "point"
    assert p.deviation.low_k == 0.4 and p.deviation.high_bands[0].value == 3.0
    assert p.weights.trim == "sd" and p.weights.min_cases == 5
    assert p.fund_of_label()["310"] == "employee" and p.fund_of_label()["居民"] == "resident"


def test_coefficient_hospital_over_level_over_default():
    p = parse_policy({**BUDGET, "coefficients": {"default": 0.8, "level": {"3A": 1.0, "2A": 0.9},
                                                 "hospital_level": {"H1": "3A", "H2": "2A"},
                                                 "hospital": {"H2": 1.1}}})
    assert p.coefficient("H1") == 1.0
    assert p.coefficient("H2") == 1.1     # individual beats level
    assert p.coefficient("H9") == 0.8     # unknown hospital: default


def test_rate_lookup_month_then_year():
    p = parse_policy({"region": {"form": "rate"}, "rate": {"employee": {"2026": 12000.0, "2026-03": 11000.0}}})
    assert p.rate_for("employee", "2026-03") == 11000.0
    assert p.rate_for("employee", "2026-04") == 12000.0
    assert p.rate_for("resident", "2026-04") is None


def test_band_value_picks_first_band_below():
    p = parse_policy({**BUDGET, "deviation": {"high_bands": [{"below": 1, "k": 3}, {"below": 2, "k": 2.5}, {"k": 1.3}]}})
    got = band_value(p.deviation.high_bands, np.array([0.5, 1.0, 1.99, 2.0, 7.0]))
    assert got.tolist() == [3.0, 2.5, 2.5, 1.3, 1.3]


@pytest.mark.parametrize("data, field", [
    ({"region": {"form": "points"}}, "region.form"),
    ({"region": {"base_points": 0}}, "region.base_points"),
    ({"deviation": {"low_k": 3.5}}, "deviation.low_k"),
    ({"deviation": {"hihg_bands": []}}, "deviation.hihg_bands"),
    ({"deviation": {"high_bands": [{"below": 2, "k": 3}, {"below": 1, "k": 2}, {"k": 1.5}]}}, "deviation.high_bands[1]"),
    ({"deviation": {"high_bands": [{"below": 2, "k": 3}]}}, "deviation.high_bands"),
    ({"budget": {"employee": {"2026-13": 5.0}}}, "budget.employee.2026-13"),
    ({"budget": {"retired": {"2026": 5.0}}}, "budget.retired"),
    ({"budget": {"employee": {"2026": "lots"}}}, "budget.employee.2026"),
    ({"coefficients": {"hospital_level": {"H1": "3A"}}}, "coefficients.hospital_level.H1"),
    ({"settlement": {"withholding_share": 1.5}}, "settlement.withholding_share"),
    ({"weights": {"min_cases": 0}}, "weights.min_cases"),
    ({"weights": {"trim_percentiles": [90, 10]}}, "weights.trim_percentiles"),
    ({"special_review": {"cost_multiple": 2.0}}, "special_review.cost_multiple"),
    ({"funds": {"resident": ["居民", "职工"]}}, "funds.resident"),
    ({"regoin": {}}, "regoin"),
])
def test_bad_fields_are_named(data, field):
    merged = {**BUDGET, **data} if "budget" not in data else data
    with pytest.raises(PolicyError) as err:
        parse_policy(merged, "region.toml")
    msg = str(err.value)
    assert msg.startswith("region.toml: ") and field in msg and "\n" not in msg


def test_point_form_needs_a_budget_and_missing_period_is_named():
    with pytest.raises(PolicyError, match="budget is missing"):
        parse_policy({})
    with pytest.raises(PolicyError, match="budget.employee has no entry for period 2026-11"):
        parse_policy(BUDGET).budget_for("employee", "2026-11")


def test_bad_toml_is_one_line(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[region\nname = 1", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(f)
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "absent.toml")
