"""Hospital view: revenue vs cost, CMI and efficiency indices by department and doctor, by hand."""
import pyarrow as pa
import pytest

from drgdip.weights.settlement.policy import parse_policy
from drgdip.weights.settlement.simulate import simulate

W = pa.table({"drg": ["A", "B"], "weight": [1.0, 2.5], "mean_cost": [10000.0, 25000.0], "mean_los": [10.0, 8.0]})
P = parse_policy({"budget": {"employee": {"2026-10": 1.0}}})
CASES = pa.table({"hospital_id": ["H1", "H1", "H1", "H2"], "fund": ["employee"] * 4, "drg": ["A", "A", "B", "A"],
                  "total_cost": [9000.0, 12000.0, 30000.0, 1.0], "los_days": [8.0, 12.0, 4.0, 1.0],
                  "dept": ["X", "X", "Y", "X"], "doctor_id": ["D1", "D2", "D1", "D1"]})


def test_by_department_and_doctor_by_hand():
    out = simulate(CASES, W, P, {"employee": 100.0}, hospital_id="H1")
    assert out["cases"].num_rows == 3
    dept = out["dept"].to_pylist()
    assert [d["dept"] for d in dept] == ["Y", "X"]                     # loss-making first
    y, x = dept
    assert (x["cases"], x["cmi"], x["revenue"], x["cost"], x["profit"]) == (2, 1.0, 20000.0, 21000.0, -1000.0)
    assert x["cost_index"] == pytest.approx(1.05) and x["time_index"] == pytest.approx(1.0)
    assert (y["cmi"], y["profit"]) == (2.5, -5000.0)
    assert y["cost_index"] == pytest.approx(1.2) and y["time_index"] == pytest.approx(0.5)
    d1 = [d for d in out["doctor"].to_pylist() if d["doctor"] == "D1"][0]
    assert (d1["cases"], d1["cmi"], d1["profit"]) == (2, 1.75, -4000.0)
    assert d1["cost_index"] == pytest.approx(1.05) and d1["time_index"] == pytest.approx(0.65)


def test_unpriced_cases_are_counted_not_dropped():
    c = CASES.set_column(2, "drg", pa.array(["A", "Q", "B", "A"]))
    out = simulate(c, W, P, {"employee": 100.0}, hospital_id="H1")
    x = [d for d in out["dept"].to_pylist() if d["dept"] == "X"][0]
    assert (x["cases"], x["unpriced"], x["unpriced_cost"]) == (1, 1, 12000.0)
