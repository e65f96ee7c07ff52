"""Several payment methods in one point pool (多元复合式): the worked example of docs/settlement.md
"Payment methods in one point pool" to the cent, the precedence of the rules, and bad input."""
import csv

import numpy as np
import pyarrow as pa
import pytest

from drgdip.weights.settlement.points import CASE_TYPES, PAYMENT_METHODS, price_cases
from drgdip.weights.settlement.policy import PolicyError, load_policy, parse_policy
from drgdip.weights.settlement.settle import hospitals_csv_table, settle_period
from tests.conftest import need_shared

# --- the worked example of the docs -----------------------------------------------------

EX_POLICY = {
    "budget": {"employee": {"2026-10": 20000.00}},
    "coefficients": {"level": {"3": 1.0, "2": 0.9}, "hospital_level": {"H1": "3", "H2": "2"}},
    "deviation": {"high_bands": [{"k": 3.0}], "low_k": 0.4},
    "settlement": {"withholding_share": 0.05},
    "per_diem": {"wards": [{"name": "精神科", "points_per_day": 4.0, "departments": ["精神科"]},
                           {"name": "长期住院", "points_per_day": 2.5, "longer_than_days": 60}],
                 "short_stay_days": 2, "short_stay": "normal", "apply_coefficient": True},
    "fee_for_service": {"classes": ["ungroupable", "unweighted"], "yuan_per_point": 100.0, "discount": 0.9},
    "basic_groups": {"enabled": True, "coefficient": 1.0, "codes": ["BR2"]},
}
EX_WEIGHTS = pa.table({"drg": ["A", "B", "BR21", "Z"], "weight": [1.0, 2.0, 0.8, None],
                       "mean_cost": [10000.0, 20000.0, 8000.0, 3000.0],
                       "low_k": [None, 0.5, None, None], "high_k": [None, 2.0, None, None]})
EX_CASES = pa.table({
    "id": [str(i) for i in range(1, 12)],
    "hospital_id": ["H1", "H2", "H2", "H2", "H1", "H2", "H2", "H1", "H1", "H2", "H1"],
    "fund": ["employee"] * 11,
    "discharge_date": ["2026-10-%02d" % i for i in range(1, 12)],
    "dept": ["骨科", "心血管内科", "心血管内科", "神经内科", "精神科", "骨科", "精神科", "急诊科", "急诊科",
             "急诊科", "急诊科"],
    "los_days": [8.0, 10.0, 4.0, 6.0, 30.0, 75.0, 2.0, 3.0, 5.0, 1.0, 2.0],
    "status": ["grouped"] * 7 + ["ungroupable", "grouped", "ungroupable", "invalid"],
    "drg": ["A", "B", "B", "BR21", "A", "B", "A", "0000", "Z", "0000", "0000"],
    "total_cost": [9000.0, 45000.0, 9000.0, 7200.0, 12000.0, 60000.0, 1500.0, 3000.0, 5000.0, 0.0, 2000.0],
    "personal_share": [1000.0, 4000.0, 900.0, 700.0, 1200.0, 5000.0, 150.0, 300.0, 500.0, 0.0, 200.0],
})
EX_POINTS = [100, 225, 81, 80, 120, 168.75, 13.5, 27, 45, None, None]
EX_METHOD = ["drg", "drg", "drg", "drg", "per_diem", "per_diem", "drg", "fee_for_service", "fee_for_service",
             "none", "none"]
EX_TYPE = ["normal", "high_cost", "low_cost", "normal", "per_diem", "per_diem", "low_cost", "fee_for_service",
           "fee_for_service", "unpriced", "unpriced"]
EX_REASON = ["PRICED_NORMAL", "HIGH_COST_CASE", "LOW_COST_CASE", "PRICED_NORMAL", "PER_DIEM_WARD", "PER_DIEM_WARD",
             "LOW_COST_CASE", "FFS_UNGROUPABLE", "FFS_UNWEIGHTED", "ZERO_COST", "INVALID_RECORD"]


def ex_priced(**over):
    data = {**EX_POLICY, **over}
    return price_cases(EX_CASES, EX_WEIGHTS, parse_policy(data), period="2026-10")


def test_worked_example_case_by_case():
    t = ex_priced()
    assert t["points"].to_pylist() == EX_POINTS          # every float exact: 168.75 = 75 × 2.5 × 0.9
    assert t["payment_method"].to_pylist() == EX_METHOD
    assert t["case_type"].to_pylist() == EX_TYPE
    assert t["pricing_reason"].to_pylist() == EX_REASON
    # case 4: basic group BR21 (ADRG BR2 listed) at 1.0, not level 2's 0.9; case 6: its hospital's 0.9
    assert t["coefficient"].to_pylist()[:7] == [1.0, 0.9, 0.9, 1.0, 1.0, 0.9, 0.9]
    # cases 2 and 3: group B's own thresholds (2.0 and 0.5) beat the policy's 3 and 0.4
    assert t["cost_ratio"].to_pylist()[1:3] == [2.25, 0.45]


def test_worked_example_settles_to_the_cent():
    p = parse_policy(EX_POLICY)
    s = settle_period(price_cases(EX_CASES, EX_WEIGHTS, p, period="2026-10"), p, "2026-10")
    f = s.funds["employee"]
    assert f["total_points"] == 860.25 and f["personal_share"] == 13750.00
    assert f["point_value"] == pytest.approx(33750 / 860.25)           # 39.232781168…
    assert s.cases["amount"].to_pylist() == [3923.28, 8827.38, 3177.86, 3138.62, 4707.93, 6620.53, 529.64,
                                             1059.28, 1765.48, None, None]
    assert s.cases["fund_amount"].to_pylist()[:9] == [2923.28, 4827.38, 2277.86, 2438.62, 3507.93, 1620.53,
                                                      379.64, 759.28, 1265.48]
    h = hospitals_csv_table(s.hospitals).to_pylist()
    assert [(r["hospital_id"], r["cases"], r["unpriced_cases"], r["points"], r["payment"], r["personal_share"],
             r["amount_due"], r["withheld"], r["paid"], r["cost"], r["unpriced_cost"], r["cmi"]) for r in h] == [
        ("H1", 4, 1, "292.0000", "11455.97", "3000.00", "8455.97", "422.80", "8033.17", "29000.00", "2000.00",
         "0.5000"),
        ("H2", 5, 1, "568.2500", "22294.03", "10750.00", "11544.03", "577.20", "10966.83", "122700.00", "0.00",
         "1.5600"),
    ]
    assert (f["amount_due"], f["withheld"], f["paid"]) == (20000.00, 1000.00, 19000.00)


def test_defaults_change_nothing():
    """All three sections off: the same cases priced exactly as before the methods existed."""
    off = {k: v for k, v in EX_POLICY.items() if k not in ("per_diem", "fee_for_service", "basic_groups")}
    t = price_cases(EX_CASES, EX_WEIGHTS.drop_columns(["low_k", "high_k"]), parse_policy(off), period="2026-10")
    assert t["payment_method"].to_pylist() == ["drg"] * 7 + ["none"] * 4
    # case 2: ratio 2.25 < 3 normal; case 3: 0.45 > 0.4 normal; case 4: level 2's 0.9; 5, 6 by group
    assert t["points"].to_pylist()[:7] == [100, 180, 180, 72, 100, 180, 13.5]
    assert t["pricing_reason"].to_pylist()[7:] == ["NOT_GROUPED", "GROUP_NOT_PRICED", "NOT_GROUPED", "INVALID_RECORD"]


def test_dip_cases_say_dip():
    t = price_cases(EX_CASES.rename_columns([c if c != "drg" else "dip_group" for c in EX_CASES.column_names]),
                    EX_WEIGHTS.rename_columns(["dip_group", "weight", "mean_cost", "low_k", "high_k"]),
                    parse_policy(EX_POLICY), group_column="dip_group", period="2026-10")
    assert t["payment_method"].to_pylist() == [m if m != "drg" else "dip" for m in EX_METHOD]


# --- precedence --------------------------------------------------------------------------

def one(rows, policy, weights=EX_WEIGHTS):
    n = len(rows)
    base = {"hospital_id": ["H1"] * n, "fund": ["employee"] * n, "discharge_date": ["2026-10-05"] * n,
            "dept": ["骨科"] * n, "los_days": [10.0] * n, "status": ["grouped"] * n, "drg": ["A"] * n,
            "total_cost": [9000.0] * n, "personal_share": [0.0] * n}
    cols = {k: [r.get(k, base[k][i]) for i, r in enumerate(rows)] for k in base}
    cols.update({k: [r.get(k) for r in rows] for r in rows for k in r if k not in base})
    return price_cases(pa.table(cols), weights, parse_policy({**EX_POLICY, **policy}), period="2026-10")


def test_first_ward_listed_wins():
    rows = [{"dept": "精神科", "los_days": 75.0}]          # both wards match: 精神科 is listed first
    assert one(rows, {})["points"].to_pylist() == [75 * 4.0]
    swapped = {**EX_POLICY["per_diem"], "wards": EX_POLICY["per_diem"]["wards"][::-1]}
    assert one(rows, {"per_diem": swapped})["points"].to_pylist() == [75 * 2.5]


def test_ward_rules_by_diagnosis_group_and_length():
    wards = {"per_diem": {"wards": [
        {"name": "安宁疗护", "points_per_day": 3.0, "diagnosis_prefixes": ["z51.5"]},
        {"name": "康复", "points_per_day": 2.0, "groups": ["BR2"], "longer_than_days": 20},
    ]}}
    rows = [{"diagnoses": ["Z51.500", "C34.900"], "los_days": 12.0},   # prefix case-insensitive, principal only
            {"diagnoses": ["C34.900", "Z51.500"], "los_days": 12.0},   # Z51.5 only secondary: by group
            {"drg": "BR21", "los_days": 25.0},                         # BR2 group and > 20 days
            {"drg": "BR21", "los_days": 20.0},                         # not longer than 20: by group
            {"diagnoses": [], "los_days": 12.0}, {"diagnoses": None, "los_days": 12.0}]
    t = one(rows, wards)
    assert t["payment_method"].to_pylist() == ["per_diem", "drg", "per_diem", "drg", "drg", "drg"]
    assert t["points"].to_pylist() == [36.0, 100.0, 50.0, 80.0, 100.0, 100.0]


def test_short_stays_normal_or_unpriced():
    rows = [{"dept": "精神科", "los_days": 2.0}, {"dept": "精神科", "los_days": 3.0}]
    assert one(rows, {})["points"].to_pylist() == [100.0, 12.0]
    held = {**EX_POLICY["per_diem"], "short_stay": "unpriced"}
    t = one(rows, {"per_diem": held})
    assert t["points"].to_pylist() == [None, 12.0]
    assert t["pricing_reason"].to_pylist()[0] == "PER_DIEM_SHORT_STAY"
    assert t["payment_method"].to_pylist() == ["none", "per_diem"]


def test_per_diem_before_ffs_and_takes_ungrouped_cases():
    rows = [{"dept": "精神科", "status": "ungroupable", "drg": "0000", "los_days": 10.0},
            {"dept": "精神科", "drg": "Z", "los_days": 10.0}]
    t = one(rows, {})
    assert t["payment_method"].to_pylist() == ["per_diem", "per_diem"]
    assert t["points"].to_pylist() == [40.0, 40.0]


def test_ambiguous_cases_by_status_or_qy_code():
    w = pa.table({"drg": ["A", "BQY"], "weight": [1.0, 1.5], "mean_cost": [10000.0, 15000.0]})
    rows = [{"status": "ambiguous"}, {"drg": "BQY"}, {}]
    ffs = {"fee_for_service": {**EX_POLICY["fee_for_service"], "classes": ["ambiguous"]}}
    t = one(rows, ffs, w)
    assert t["payment_method"].to_pylist() == ["fee_for_service", "fee_for_service", "drg"]
    assert t["points"].to_pylist() == [81.0, 81.0, 100.0]
    assert t["pricing_reason"].to_pylist()[:2] == ["FFS_AMBIGUOUS", "FFS_AMBIGUOUS"]
    # not a class of the policy: priced by its group as today
    assert one(rows, {}, w)["payment_method"].to_pylist() == ["drg", "drg", "drg"]


def test_points_per_yuan_and_coefficient():
    ffs = {"fee_for_service": {"classes": ["unweighted"], "points_per_yuan": 0.02, "discount": 0.5,
                               "apply_coefficient": True}}
    t = one([{"drg": "Z", "hospital_id": "H2", "total_cost": 5000.0}], ffs)
    assert t["points"].to_pylist() == [pytest.approx(5000 * 0.02 * 0.5 * 0.9)]


def test_basic_groups_from_the_table_column_and_a_file(tmp_path):
    w = EX_WEIGHTS.append_column("basic_group", pa.array([True, False, False, False]))
    rows = [{"hospital_id": "H2"}, {"hospital_id": "H2", "drg": "BR21", "total_cost": 8000.0}]
    t = one(rows, {"basic_groups": {"enabled": True, "coefficient": 0.95}}, w)
    assert t["coefficient"].to_pylist() == [0.95, 0.9] and t["points"].to_pylist() == [95.0, 72.0]
    off = one(rows, {"basic_groups": {"enabled": True, "coefficient": 0.95, "table_column": False}}, w)
    assert off["coefficient"].to_pylist() == [0.9, 0.9]
    (tmp_path / "basic.csv").write_text("code,name\nBR21,脑缺血\n", encoding="utf-8")
    (tmp_path / "p.toml").write_text('[budget.employee]\n"2026-10" = 1.0\n[basic_groups]\nenabled = true\n'
                                     'file = "basic.csv"\n', encoding="utf-8")
    assert load_policy(tmp_path / "p.toml").basic_groups.codes == ("BR21",)


def test_chs_drg_30_primary_care_list():
    path = need_shared("chs-drg", "CHS_DRG_30", "primary_care_groups.csv")
    with path.open(encoding="utf-8") as fh:
        codes = [r["code"] for r in csv.DictReader(fh)]
    p = parse_policy({"budget": {"employee": {"2026": 1.0}},
                      "basic_groups": {"enabled": True, "file": str(path)}})
    assert p.basic_groups.codes == tuple(codes) and len(codes) == 31 and p.basic_groups.matches("BR29")


# --- bad input ---------------------------------------------------------------------------

def test_bad_days_and_unknown_departments_get_reasons():
    rows = [{"dept": "精神科", "los_days": -3.0},        # impossible stay: BAD_LOS, not per diem
            {"dept": "精神科", "los_days": None},        # no days: PER_DIEM_NO_DAYS
            {"dept": "不存在的科室"},                     # unknown dept: simply no ward, priced by group
            {"dept": None},
            {"dept": "精神科", "fund": "??"}]            # a record problem: no method prices it
    t = one(rows, {})
    assert t["pricing_reason"].to_pylist() == ["BAD_LOS", "PER_DIEM_NO_DAYS", "PRICED_NORMAL", "PRICED_NORMAL",
                                               "UNKNOWN_FUND"]
    assert t["points"].to_pylist() == [None, None, 100.0, 100.0, None]
    assert t["payment_method"].to_pylist() == ["none", "none", "drg", "drg", "none"]


def test_records_without_dept_or_los_columns():
    t = price_cases(EX_CASES.drop_columns(["dept", "los_days"]), EX_WEIGHTS, parse_policy(EX_POLICY),
                    period="2026-10")
    r = t["pricing_reason"].to_pylist()
    assert r[4] == "PRICED_NORMAL" and r[5] == "HIGH_COST_CASE"      # no dept, no days: no ward matches
    assert set(t["case_type"].to_pylist()) <= set(CASE_TYPES)
    assert set(t["payment_method"].to_pylist()) <= set(PAYMENT_METHODS)


@pytest.mark.parametrize("section, bad, msg", [
    ("per_diem", {"wards": [{"name": "x", "points_per_day": 0}]}, "points_per_day must be > 0"),
    ("per_diem", {"wards": [{"name": "x", "points_per_day": 1.0}]}, "matches no case"),
    ("per_diem", {"wards": [{"name": "x", "points_per_day": 1.0, "departments": "精神科"}]}, "list of non-empty"),
    ("per_diem", {"wards": [{"name": "x", "points_per_day": 1.0, "longer_than_days": 9},
                            {"name": "x", "points_per_day": 1.0, "longer_than_days": 9}]}, "name of its own"),
    ("per_diem", {"short_stay": "drop"}, "short_stay must be one of"),
    ("per_diem", {"short_stay_days": -1}, "short_stay_days must be >= 0"),
    ("fee_for_service", {"classes": ["everything"]}, "names 'everything'"),
    ("fee_for_service", {"classes": ["ungroupable"]}, "exactly one of points_per_yuan and yuan_per_point"),
    ("fee_for_service", {"classes": ["ungroupable"], "points_per_yuan": 1, "yuan_per_point": 1}, "exactly one"),
    ("fee_for_service", {"discount": 0}, "discount must be > 0"),
    ("basic_groups", {"enabled": "yes"}, "must be true or false"),
    ("basic_groups", {"file": "no-such.csv"}, "no such file"),
    ("basic_groups", {"colour": 1}, "is not a policy field"),
])
def test_bad_policy_fields(section, bad, msg):
    with pytest.raises(PolicyError, match=msg):
        parse_policy({"budget": {"employee": {"2026": 1.0}}, section: bad})


def test_basic_groups_file_without_a_code_column(tmp_path):
    (tmp_path / "b.csv").write_text("name\n脑缺血\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="no code column"):
        parse_policy({"budget": {"employee": {"2026": 1.0}}, "basic_groups": {"file": str(tmp_path / "b.csv")}})


def test_zero_cost_never_priced_by_ffs():
    t = one([{"drg": "Z", "total_cost": 0.0}, {"drg": "Z", "total_cost": None},
             {"drg": "0000", "status": "ungroupable", "total_cost": -5.0}], {})
    # the reason a person must fix, not the group's: BAD_COST (without the policy's FFS: GROUP_NOT_PRICED)
    assert t["pricing_reason"].to_pylist() == ["ZERO_COST", "BAD_COST", "BAD_COST"]
    assert np.isnan(np.array(t["points"].to_pylist(), dtype=float)).all()
