"""Incomplete stays, short stays, readmissions, zero cost and duplicate ids: the worked example of
docs/settlement.md "Incomplete stays and readmissions" to the cent, and the edge cases."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drgdip.arrowio import InputError
from drgdip.weights.settlement import runs
from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import PolicyError, parse_policy
from drgdip.weights.settlement.readmission import find_readmissions
from drgdip.weights.settlement.settle import hospitals_csv_table, settle_period

# --- the worked example (docs/settlement.md, "Incomplete stays and readmissions") ------------

POLICY = {
    "budget": {"employee": {"2026-10": 20000.00}},
    "coefficients": {"level": {"3A": 1.0}, "hospital_level": {"H1": "3A"}, "hospital": {"H2": 0.9}},
    "deviation": {"high_bands": [{"below": 2.0, "k": 3.0}, {"k": 2.0}], "low_k": 0.4},
    "incomplete_stays": {"dispositions": ["2", "4", "5"], "payment": "proportional_capped",
                         "short_stay_days": 2, "short_stay_payment": "normal"},
    "readmission": {"days": 15, "key": "adrg", "payment": "halve_earlier", "share": 0.5},
}
WEIGHTS = pa.table({"drg": ["ES21", "ES23", "FM19"], "weight": [1.0, 1.5, 2.5],
                    "mean_cost": [10000.0, 15000.0, 25000.0]})
CASES = pa.table({
    "id": ["1", "2", "3", "4", "5", "6", "7", "8", "8"],
    "hospital_id": ["H1", "H1", "H1", "H2", "H2", "H2", "H1", "H1", "H1"],
    "patient_id": ["P1", "P1", "P2", "P3", "P4", "P1", "P5", "P6", "P6"],
    "fund": ["employee"] * 9,
    "admission_date": ["2026-10-01", "2026-10-20", "2026-10-02", "2026-10-03", "2026-10-10", "2026-10-08",
                       "2026-10-15", "2026-10-04", "2026-10-04"],
    "discharge_date": ["2026-10-05", "2026-10-25", "2026-10-06", "2026-10-12", "2026-10-11", "2026-10-14",
                       "2026-10-18", "2026-10-09", "2026-10-09"],
    "discharge_disposition": ["1", "1", "2", "5", "1", "1", "1", "1", "1"],
    "los_days": [4.0, 5, 4, 9, 1, 6, 3, 5, 5],
    "drg": ["ES21", "ES23", "FM19", "FM19", "ES21", "ES21", "ES21", "ES21", "ES21"],
    "total_cost": [8000.0, 15000, 10000, 40000, 3000, 9000, 0, 5000, 5000],
    "personal_share": [1000.0, 1500, 1000, 2000, 300, 900, 0, 500, 500],
})


def test_worked_example_of_the_docs():
    p = parse_policy(POLICY)
    priced = price_cases(CASES, WEIGHTS, p, period="2026-10")
    assert priced["case_type"].to_pylist() == ["readmission", "readmission", "incomplete_stay", "incomplete_stay",
                                               "short_stay", "normal", "unpriced", "unpriced", "unpriced"]
    assert priced["pricing_reason"].to_pylist() == [
        "READMISSION_EARLIER_STAY", "READMISSION_WITHIN_DAYS", "INCOMPLETE_STAY", "INCOMPLETE_STAY", "SHORT_STAY",
        "PRICED_NORMAL", "ZERO_COST", "DUPLICATE_SETTLEMENT_ID", "DUPLICATE_SETTLEMENT_ID"]
    assert priced["points"].to_pylist() == [50.0, 150.0, 100.0, 225.0, 90.0, 90.0, None, None, None]
    assert priced["readmission_of"].to_pylist() == [None, "1"] + [None] * 7
    s = settle_period(priced, p, "2026-10")
    f = s.funds["employee"]
    assert (f["total_points"], f["personal_share"], f["payment"]) == (705.0, 6700.00, 26700.00)
    assert f["point_value"] == pytest.approx(26700 / 705)                  # 37.872340425…
    assert s.cases["amount"].to_pylist() == [1893.62, 5680.85, 3787.23, 8521.28, 3408.51, 3408.51, None, None, None]
    assert s.cases["fund_amount"].to_pylist()[:6] == [893.62, 4180.85, 2787.23, 6521.28, 3108.51, 2508.51]
    h = hospitals_csv_table(s.hospitals).to_pylist()
    assert [(r["hospital_id"], r["cases"], r["unpriced_cases"], r["points"], r["payment"], r["personal_share"],
             r["amount_due"], r["unpriced_cost"]) for r in h] == [
        ("H1", 3, 3, "300.0000", "11361.70", "3500.00", "7861.70", "10000.00"),
        ("H2", 3, 0, "405.0000", "15338.30", "3200.00", "12138.30", "0.00")]
    assert f["amount_due"] == 20000.00 and f["unpriced_cases"] == 3


def test_defaults_keep_todays_pricing():
    off = {k: v for k, v in POLICY.items() if k not in ("incomplete_stays", "readmission")}
    priced = price_cases(CASES, WEIGHTS, parse_policy(off), period="2026-10")
    # no readmission column, case 1 normal, 3 normal (ratio 0.4 is not below 0.4), 5 low-cost 90 × 0.3
    assert "readmission_of" not in priced.column_names
    assert priced["case_type"].to_pylist()[:6] == ["normal", "normal", "normal", "normal", "low_cost", "normal"]
    assert priced["points"].to_pylist()[:6] == pytest.approx([100.0, 150.0, 250.0, 225.0, 27.0, 90.0])
    assert priced["pricing_reason"].to_pylist()[6] == "ZERO_COST"        # zero cost: refused even with rules off


# --- incomplete-stay payments ----------------------------------------------------------------

def _one(policy_extra: dict, cost: float, disposition="2", los=5.0, extra=None):
    pol = parse_policy({**{k: v for k, v in POLICY.items() if k != "readmission"}, **policy_extra})
    t = CASES.slice(2, 1)
    t = t.set_column(t.schema.get_field_index("total_cost"), "total_cost", pa.array([cost]))
    t = t.set_column(t.schema.get_field_index("discharge_disposition"), "discharge_disposition",
                     pa.array([disposition]))
    t = t.set_column(t.schema.get_field_index("los_days"), "los_days", pa.array([los]))
    r = price_cases(t, WEIGHTS, pol, period="2026-10").to_pylist()[0]
    return r["case_type"], r["pricing_reason"], r["points"]


def test_proportional_capped_never_pays_above_the_group():
    # FM19 at H1: base 250; cost 80,000 is ratio 3.2 > k 2 (a high-cost case otherwise): capped at 250
    assert _one({}, 80000.0) == ("incomplete_stay", "INCOMPLETE_STAY", 250.0)
    assert _one({}, 5000.0) == ("incomplete_stay", "INCOMPLETE_STAY", pytest.approx(50.0))   # 250 × 0.2
    assert _one({}, 80000.0, disposition="1")[0] == "high_cost"          # ordered discharge: the usual rule


def test_incomplete_stay_payments_normal_and_review():
    ins = dict(POLICY["incomplete_stays"])
    assert _one({"incomplete_stays": {**ins, "payment": "normal"}}, 5000.0)[2] == 250.0
    held = {"incomplete_stays": {**ins, "payment": "review"}, "special_review": {"payment": "hold"}}
    assert _one(held, 5000.0) == ("special_review", "INCOMPLETE_STAY_REVIEW", None)
    actual = {"incomplete_stays": {**ins, "payment": "review"}, "special_review": {"payment": "actual"}}
    assert _one(actual, 5000.0) == ("special_review", "INCOMPLETE_STAY_REVIEW", pytest.approx(50.0))


def test_short_stay_is_below_n_days_and_incomplete_comes_first():
    ins = {**POLICY["incomplete_stays"], "short_stay_payment": "proportional_capped"}
    assert _one({"incomplete_stays": ins}, 5000.0, disposition="1", los=1.0) == ("short_stay", "SHORT_STAY",
                                                                                  pytest.approx(50.0))
    assert _one({"incomplete_stays": ins}, 5000.0, disposition="1", los=2.0)[0] == "low_cost"   # 2 is not < 2
    assert _one({"incomplete_stays": ins}, 5000.0, disposition="5", los=1.0)[0] == "incomplete_stay"


def test_policy_fields_are_checked():
    with pytest.raises(PolicyError, match="incomplete_stays.payment"):
        parse_policy({**POLICY, "incomplete_stays": {"payment": "half"}})
    with pytest.raises(PolicyError, match="incomplete_stays.dispositions"):
        parse_policy({**POLICY, "incomplete_stays": {"dispositions": [2, 4]}})
    with pytest.raises(PolicyError, match="readmission.days"):
        parse_policy({**POLICY, "readmission": {"days": 1.5}})
    with pytest.raises(PolicyError, match="readmission.share"):
        parse_policy({**POLICY, "readmission": {"days": 15, "share": 1.5}})
    with pytest.raises(PolicyError, match="readmission.key"):
        parse_policy({**POLICY, "readmission": {"days": 15, "key": "mdc"}})


def test_rules_on_without_their_columns_are_refused():
    p = parse_policy(POLICY)
    with pytest.raises(InputError, match="discharge_disposition"):
        price_cases(CASES.drop_columns(["discharge_disposition"]), WEIGHTS, p, period="2026-10")
    with pytest.raises(InputError, match="patient_id"):
        price_cases(CASES.drop_columns(["patient_id"]), WEIGHTS, p, period="2026-10")


# --- readmission detection: edge cases --------------------------------------------------------

def _pairs(adm, dis, patient=None, hospital=None, key=None, days=15, same_hospital=True, usable=None):
    n = len(adm)
    z = np.zeros(n, np.uint64)
    return find_readmissions(np.asarray(patient if patient is not None else z, np.uint64),
                             np.asarray(hospital if hospital is not None else z, np.uint64),
                             np.asarray(key if key is not None else z, np.uint64),
                             np.asarray(adm, np.int32), np.asarray(dis, np.int32),
                             np.ones(n, bool) if usable is None else np.asarray(usable), days,
                             same_hospital).tolist()


def test_exactly_n_days_is_within_and_n_plus_one_is_not():
    assert _pairs([0, 20], [5, 25]) == [-1, 0]              # 20 − 5 = 15 days
    assert _pairs([0, 21], [5, 25]) == [-1, -1]             # 16 days
    assert _pairs([0, 5], [5, 8]) == [-1, 0]                # back the same day


def test_other_hospital_patient_or_key_is_not_a_readmission():
    assert _pairs([0, 10], [5, 12], hospital=[1, 2]) == [-1, -1]
    assert _pairs([0, 10], [5, 12], hospital=[1, 2], same_hospital=False) == [-1, 0]
    assert _pairs([0, 10], [5, 12], patient=[1, 2]) == [-1, -1]
    assert _pairs([0, 10], [5, 12], key=[1, 2]) == [-1, -1]


def test_overlap_rows_out_of_order_chains_and_unusable_rows():
    assert _pairs([0, 3], [5, 12]) == [-1, -1]              # admitted before the earlier discharge
    assert _pairs([30, 0, 10], [35, 5, 20]) == [2, -1, 1]    # file order does not matter: a chain 1 → 2 → 0
    assert _pairs([0, 10], [5, 12], usable=[False, True]) == [-1, -1]


def _table(**over):
    base = {"id": ["a", "b"], "hospital_id": ["H1", "H1"], "patient_id": ["P1", "P1"], "fund": ["employee"] * 2,
            "admission_date": ["2026-10-01", "2026-10-10"], "discharge_date": ["2026-10-05", "2026-10-15"],
            "discharge_disposition": ["1", "1"], "los_days": [4.0, 5.0], "drg": ["ES21", "ES23"],
            "total_cost": [10000.0, 15000.0], "personal_share": [1000.0, 1000.0]}
    base.update(over)
    return pa.table(base)


@pytest.mark.parametrize("over,expect", [
    ({}, [None, "a"]),
    ({"patient_id": ["P1", None]}, [None, None]),                                  # missing patient id
    ({"hospital_id": ["H1", "H2"]}, [None, None]),                                 # different hospital
    ({"drg": ["ES21", "FM19"]}, [None, None]),                                     # another ADRG
    ({"admission_date": ["2026-10-01", "2026-10-20"], "discharge_date": ["2026-10-05", "2026-10-15"]},
     [None, None]),                                                               # admitted after discharge: unusable
    ({"admission_date": ["2026-10-10", "2026-10-01"], "discharge_date": ["2026-10-15", "2026-10-05"]},
     ["b", None]),                                                                # rows out of date order
    ({"id": ["a", "a"]}, [None, None]),                                            # duplicate ids take no part
])
def test_readmission_flags_on_tables(over, expect):
    p = parse_policy(POLICY)
    priced = price_cases(_table(**over), WEIGHTS, p, period="2026-10")
    assert priced["readmission_of"].to_pylist() == expect


def test_second_unpaid_leaves_the_readmission_out_of_the_pool():
    p = parse_policy({**POLICY, "readmission": {"days": 15, "payment": "second_unpaid"}})
    priced = price_cases(_table(), WEIGHTS, p, period="2026-10")
    assert priced["case_type"].to_pylist() == ["normal", "unpriced"]
    assert priced["pricing_reason"].to_pylist() == ["PRICED_NORMAL", "READMISSION_UNPAID"]
    assert priced["points"].to_pylist() == [100.0, None]
    flag = parse_policy({**POLICY, "readmission": {"days": 15, "payment": "flag_only"}})
    priced = price_cases(_table(), WEIGHTS, flag, period="2026-10")
    assert priced["points"].to_pylist() == [100.0, 150.0]
    assert priced["pricing_reason"].to_pylist() == ["PRICED_NORMAL", "READMISSION_WITHIN_DAYS"]


def test_key_group_and_principal_diagnosis():
    g = parse_policy({**POLICY, "readmission": {"days": 15, "key": "group"}})
    assert price_cases(_table(), WEIGHTS, g, period="2026-10")["readmission_of"].to_pylist() == [None, None]
    d = parse_policy({**POLICY, "readmission": {"days": 15, "key": "principal_diagnosis", "diagnosis_chars": 3}})
    t = _table(diagnoses=pa.array([["I21.000", "E11.900"], ["I21.100"]]))
    assert price_cases(t, WEIGHTS, d, period="2026-10")["readmission_of"].to_pylist() == [None, "a"]
    t = _table(diagnoses=pa.array([["I21.000"], ["I25.100"]]))
    assert price_cases(t, WEIGHTS, d, period="2026-10")["readmission_of"].to_pylist() == [None, None]


# --- a month settled batch by batch: pairs split over batches, byte-identical files ------------

def _policy_file(tmp_path):
    lines = ['[budget.employee]', '"2026-10" = 20000.00', '[coefficients]', 'default = 1.0',
             '[coefficients.level]', '"3A" = 1.0', '[coefficients.hospital_level]', 'H1 = "3A"',
             '[coefficients.hospital]', 'H2 = 0.9', '[deviation]',
             'high_bands = [{ below = 2.0, k = 3.0 }, { k = 2.0 }]', 'low_k = 0.4', '[incomplete_stays]',
             'dispositions = ["2", "4", "5"]', 'short_stay_days = 2', 'short_stay_payment = "normal"',
             '[readmission]', 'days = 15', 'payment = "halve_earlier"', 'share = 0.5']
    path = tmp_path / "policy.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_settle_month_finds_pairs_across_batches(tmp_path, batch_size):
    pq.write_table(CASES, tmp_path / "cases.parquet")
    pq.write_table(WEIGHTS, tmp_path / "weights.parquet")
    policy = _policy_file(tmp_path)

    def settle(name, size):
        out = tmp_path / name
        runs.settle_month("2026-10", tmp_path / "cases.parquet", policy_path=policy,
                          weights_path=tmp_path / "weights.parquet", ledger_path=tmp_path / f"{name}.db", out=out,
                          quiet=True, new_ledger=True, now="2026-11-01T00:00:00", batch_size=size)
        return {f: (out / f).read_bytes() for f in ("cases.parquet", "review.csv", "hospitals.csv", "summary.json")}

    small, whole = settle("small", batch_size), settle("whole", 1 << 16)
    assert small == whole
    cases = pq.read_table(tmp_path / "small" / "cases.parquet")
    assert cases["readmission_of"].to_pylist()[1] == "1"     # case 2 (row 1) pairs with case 1 (row 0)
    assert cases["amount"].to_pylist()[:6] == [1893.62, 5680.85, 3787.23, 8521.28, 3408.51, 3408.51]


def test_missing_zero_and_negative_cost_are_refused_with_their_reasons():
    t = _table(id=["a", "b"], total_cost=pa.array([None, 0.0], pa.float64()))
    priced = price_cases(t, WEIGHTS, parse_policy(POLICY), period="2026-10")
    assert priced["pricing_reason"].to_pylist() == ["BAD_COST", "ZERO_COST"]
    assert priced["points"].to_pylist() == [None, None]
    t = _table(total_cost=pa.array(["-5", "0.00"]))
    assert price_cases(t, WEIGHTS, parse_policy(POLICY), period="2026-10")["pricing_reason"].to_pylist() == [
        "BAD_COST", "ZERO_COST"]
