"""Relative weights from history, worked by hand: year weighting, trimming, small groups, CV, RIV."""
import math

import pyarrow as pa
import pytest

from drgdip.weights.relative_weights import compute_weights, read_weight_table
from drgdip.weights.settlement.policy import parse_policy

BUDGET = {"budget": {"employee": {"2026": 1.0}}}


def policy(**weights):
    return parse_policy({**BUDGET, "weights": weights})


def history(rows):
    drg, date, cost = zip(*rows)
    return pa.table({"drg": list(drg), "dscg_time": list(date), "medfee_sumamt": list(cost)})


HAND = history([
    ("A", "2024-03-01", 1000.0), ("A", "2024-05-01", 3000.0), ("B", "2024-06-01", 6000.0),
    ("A", "2025-01-01", 2000.0), ("A", "2025-02-01", 2000.0), ("A", "2025-03-01", 5000.0),
    ("B", "2025-04-01", 8000.0), ("B", "2025-05-01", 10000.0),
    ("C", "2023-07-01", 99999.0),                       # older than the two weighted years
    ("0000", "2025-01-01", 5.0), (None, "2025-01-01", 5.0),   # not grouped
    ("A", "2025-01-01", None), ("A", "bad date", 100.0),
])


def test_year_weighted_relative_weights_by_hand():
    r = compute_weights(HAND, policy(year_weights=[1, 3], trim="none", min_cases=2))
    rows = {x["drg"]: x for x in r.table.to_pylist()}
    # group means: A (1·2000 + 3·3000)/4 = 2750, B (1·6000 + 3·9000)/4 = 8250
    # all cases: 2024 mean 10000/3, 2025 mean 5400 → (10000/3 + 3·5400)/4 = 14650/3
    assert rows["A"]["mean_cost"] == pytest.approx(2750.0)
    assert rows["B"]["mean_cost"] == pytest.approx(8250.0)
    assert rows["A"]["weight"] == pytest.approx(8250 / 14650)
    assert rows["B"]["weight"] == pytest.approx(24750 / 14650)
    assert "C" not in rows
    assert r.years == {"2024": 1.0, "2025": 3.0}
    assert r.excluded == {"not grouped": 2, "cost missing or not positive": 1, "discharge date unreadable": 1,
                          "older than the weighted years": 1}
    # CV: A costs 1000,3000,2000,2000,5000 → sd sqrt(9.2e6/5), mean 2600; B sd sqrt(8e6/3), mean 8000
    assert rows["A"]["cv"] == pytest.approx(math.sqrt(9.2e6 / 5) / 2600)
    assert rows["B"]["cv"] == pytest.approx(math.sqrt(8e6 / 3) / 8000)
    # RIV = 1 − SSW/SST = 1 − (9.2e6 + 8e6) / 71,875,000
    assert r.riv == pytest.approx(1 - 17.2e6 / 71_875_000)
    assert rows["A"]["cases"] == 5 and rows["A"]["rule"] == "WEIGHT_OK"


def test_sd_trimming_drops_the_outlier():
    h = history([("A", "2025-01-01", 1000.0)] * 20 + [("A", "2025-01-01", 100000.0), ("B", "2025-01-01", 2000.0)])
    r = compute_weights(h, policy(trim="sd", trim_sd=3.0, min_cases=1))
    a = r.table.to_pylist()[0]
    assert a["mean_cost"] == pytest.approx(1000.0) and a["cases"] == 21 and a["cases_used"] == 20
    assert r.excluded["trimmed"] == 1


def test_percentile_trimming_keeps_the_middle():
    h = history([("A", "2025-01-01", float(c)) for c in range(1, 102)])
    r = compute_weights(h, policy(trim="percentile", trim_percentiles=[2.5, 97.5], min_cases=1))
    a = r.table.to_pylist()[0]
    # cut-offs by linear interpolation: 3.5 and 98.5 → keeps 4..98
    assert a["cases_used"] == 95 and a["mean_cost"] == pytest.approx(51.0)


SMALL = history([("BR21", "2025-01-01", 4000.0)] + [("BR23", "2025-01-01", 2000.0)] * 3
                + [("ES29", "2025-01-01", 1000.0)] * 3 + [("GB21", "2025-01-01", 9000.0)])


def test_small_group_pooled_with_its_adrg_or_left_unpriced():
    r = compute_weights(SMALL, policy(trim="none", min_cases=3, small_group_rule="adrg"))
    rows = {x["drg"]: x for x in r.table.to_pylist()}
    overall = (4000 + 6000 + 3000 + 9000) / 8
    assert rows["BR21"]["rule"] == "SMALL_GROUP_ADRG"
    assert rows["BR21"]["weight"] == pytest.approx(((4000 + 6000) / 4) / overall)
    assert rows["BR23"]["weight"] == pytest.approx(2000 / overall) and rows["BR23"]["rule"] == "WEIGHT_OK"
    assert rows["GB21"]["weight"] is None and rows["GB21"]["rule"] == "SMALL_GROUP_UNPRICED"


def test_small_group_raw_and_none_rules():
    raw = {x["drg"]: x for x in compute_weights(SMALL, policy(trim="none", min_cases=3, small_group_rule="raw")).table.to_pylist()}
    overall = 22000 / 8
    assert raw["GB21"]["weight"] == pytest.approx(9000 / overall) and raw["GB21"]["rule"] == "SMALL_GROUP_RAW"
    none = {x["drg"]: x for x in compute_weights(SMALL, policy(trim="none", min_cases=3, small_group_rule="none")).table.to_pylist()}
    assert none["BR21"]["weight"] is None and none["BR21"]["rule"] == "SMALL_GROUP_UNPRICED"


def test_official_weight_table_reads_and_rejects_duplicates(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("drg,weight\nAA19,18.2858\nBR21,1.5\n", encoding="utf-8")
    t = read_weight_table(f)
    assert t["weight"].to_pylist() == [18.2858, 1.5] and "mean_cost" not in t.column_names
    f.write_text("drg,weight\nAA19,1\nAA19,2\n", encoding="utf-8")
    with pytest.raises(Exception, match="AA19 appears more than once"):
        read_weight_table(f)
    f.write_text("drg,weight\nAA19,x\n", encoding="utf-8")
    with pytest.raises(Exception, match="row 2 is not a number"):
        read_weight_table(f)
