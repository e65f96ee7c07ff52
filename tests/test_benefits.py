"""Patient-side benefits (三重制度): the worked examples of docs/benefits.md to the cent, the
national floors, enrolment rules, bad input, and exact reconciliation over random stays."""
import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from drgdip.codesets.reasons import reason_ids
from drgdip.weights.settlement.benefits import (
    BenefitPolicyError,
    add_months,
    apply_rate,
    compute_benefits,
    critical_cap_layers,
    load_benefit_policy,
    parse_benefit_policy,
    waiting_months,
)

ROOT = Path(__file__).resolve().parents[1]


def _stays(rows):
    keys = ["id", "patient_id", "fund", "admission_date", "discharge_date", "total_cost", "in_policy_cost",
            "hospital_level", "referred"]
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def _stay(i, p, adm, dis, total, inpol, level, referred=False, fund="resident"):
    return {"id": i, "patient_id": p, "fund": fund, "admission_date": adm, "discharge_date": dis,
            "total_cost": total, "in_policy_cost": inpol, "hospital_level": level, "referred": referred}


# the docs' worked examples (docs/benefits.md, "Worked examples")
DOC_STAYS = [
    _stay("A1", "A", "2026-03-02", "2026-03-10", 30000.00, 27000.00, "3"),
    _stay("A2", "A", "2026-06-01", "2026-06-15", 80000.00, 72000.00, "2"),
    _stay("A3", "A", "2026-11-03", "2026-11-20", 300000.00, 260000.00, "3", referred=True),
    _stay("B1", "B", "2026-04-01", "2026-04-12", 50000.00, 46000.00, "3"),
    _stay("C1", "C", "2026-06-20", "2026-06-28", 12000.00, 10000.00, "1"),
    _stay("C2", "C", "2026-08-01", "2026-08-05", 12000.00, 10000.00, "1"),
]
DOC_PERSONS = pa.table({
    "patient_id": ["A", "B", "C"],
    "assistance_class": ["低保边缘", "minimum_living", ""],
    "enrolment_date": [None, None, "2026-03-15"],
    "collective_period": [None, None, "false"],
    "break_years": [0, 0, 2],
    "repaid_years": [0, 0, 1],
})


def _by_id(b):
    return {r["id"]: r for r in b.stays.to_pylist()}


def test_worked_example_three_stays_across_three_tiers():
    s = _by_id(compute_benefits(_stays(DOC_STAYS), DOC_PERSONS))
    fig = {k: (s[k]["fund_basic_cents"], s[k]["fund_critical_cents"], s[k]["assistance_cents"],
               s[k]["assistance_relief_cents"], s[k]["patient_cents"]) for k in ("A1", "A2", "A3")}
    assert fig == {"A1": (1560000, 0, 481000, 0, 959000),
                   "A2": (5022500, 1090500, 706550, 0, 1180450),
                   "A3": (13417500, 8139500, 3627725, 815275, 4815275)}
    assert s["A2"]["basic_deductible_cents"] == 25000          # 500 yuan × 0.5 (second admission)
    assert (s["A1"]["basic_deductible_cents"], s["A3"]["basic_deductible_cents"]) == (100000, 50000)
    assert s["A1"]["reasons"] == "BEN_OUT_OF_POLICY|BEN_BASIC_DEDUCTIBLE|BEN_CRITICAL_THRESHOLD|BEN_ASSIST_THRESHOLD"
    assert s["A2"]["reasons"] == "BEN_OUT_OF_POLICY|BEN_BASIC_DEDUCTIBLE|BEN_CRITICAL_THRESHOLD"
    assert s["A3"]["reasons"] == "BEN_OUT_OF_POLICY|BEN_BASIC_DEDUCTIBLE|BEN_BASIC_CAP|BEN_ASSIST_LIMIT|BEN_RELIEF_PAID"
    assert s["A3"]["personal_share"] == 48152.75 and s["A3"]["critical_cap_cents"] == 40000000


def test_worked_example_assistance_case_with_tilt():
    b1 = _by_id(compute_benefits(_stays(DOC_STAYS), DOC_PERSONS))["B1"]
    assert (b1["fund_basic_cents"], b1["fund_critical_cents"], b1["assistance_cents"], b1["patient_cents"]) == \
        (2700000, 747500, 806750, 745750)
    assert b1["critical_cap_cents"] is None
    assert b1["reasons"] == "BEN_OUT_OF_POLICY|BEN_BASIC_DEDUCTIBLE|BEN_CRITICAL_TILT|BEN_CRITICAL_THRESHOLD"


def test_worked_example_waiting_period():
    s = _by_id(compute_benefits(_stays(DOC_STAYS), DOC_PERSONS))
    assert s["C1"]["status"] == "waiting" and s["C1"]["reason"] == "BEN_WAITING_PERIOD"
    assert (s["C1"]["fund_basic_cents"], s["C1"]["patient_cents"]) == (0, 1200000)
    assert (s["C2"]["status"], s["C2"]["fund_basic_cents"], s["C2"]["patient_cents"]) == ("paid", 784000, 416000)
    assert s["C2"]["basic_deductible_cents"] == 20000        # C1 was no admission: C2 is the first
    assert add_months(dt.date(2026, 3, 15), waiting_months(load_benefit_policy(), False, 2, 1)) == dt.date(2026, 7, 15)
    # benefits start on 2026-07-15 itself
    one = _stays([_stay("C3", "C", "2026-07-15", "2026-07-16", 1000.0, 1000.0, "1"),
                  _stay("C0", "C", "2026-07-14", "2026-07-14", 1000.0, 1000.0, "1")])
    st = {r["id"]: r["status"] for r in compute_benefits(one, DOC_PERSONS).stays.to_pylist()}
    assert st == {"C3": "paid", "C0": "waiting"}


def test_worked_example_incentive_raised_cap():
    pol = parse_benefit_policy({"critical": {"annual_cap": 20000.00}})
    rec = _stays([_stay("D1", "D", "2026-05-01", "2026-05-20", 200000.00, 180000.00, "3")])
    per = pa.table({"patient_id": ["D"], "continuous_years": [7], "zero_claim_years": [2]})
    b = compute_benefits(rec, per, pol)
    d = b.stays.to_pylist()[0]
    assert (d["fund_basic_cents"], d["fund_critical_cents"], d["patient_cents"], d["critical_cap_cents"]) == \
        (10740000, 2400000, 6860000, 2400000)
    for code in ("BEN_CRITICAL_CAP", "BEN_CAP_INCENTIVE_USED", "BEN_ZERO_CLAIM_CLEARED"):
        assert code in d["reasons"]
    assert b.persons["zero_claim_cleared"].to_pylist() == [True]


def test_person_year_totals_add_up():
    b = compute_benefits(_stays(DOC_STAYS), DOC_PERSONS)
    a = b.persons.to_pylist()[0]
    assert (a["patient_id"], a["stays"], a["fund_basic_cents"], a["fund_critical_cents"], a["assistance_cents"],
            a["patient_cents"], a["total_cost_cents"]) == ("A", 3, 20000000, 9230000, 4815275, 6954725, 41000000)
    c = b.persons.to_pylist()[2]
    assert (c["waiting_stays"], c["paid_stays"], c["patient_cents"]) == (1, 1, 1616000)


def test_half_up_rounding():
    assert apply_rate(5, 5000) == 3        # 2.5 cents → 3
    assert apply_rate(3, 5000) == 2        # 1.5 → 2
    assert apply_rate(7, 3333) == 2        # 2.3331 → 2
    assert apply_rate(-5, 5000) == 0


def test_waiting_months_seed_003():
    pol = load_benefit_policy()
    assert waiting_months(pol, True, 0, 0) == 0      # on time, unbroken
    assert waiting_months(pol, False, 0, 0) == 3     # late: the fixed 3 months
    assert waiting_months(pol, False, 2, 1) == 4     # 3 + 2 − 1
    assert waiting_months(pol, False, 3, 5) == 3     # repair cannot go below the fixed part
    assert waiting_months(pol, False, 5, 5) == 6     # ≥ 4 years of break: at least 6 after repair
    assert waiting_months(pol, False, 5, 0) == 8
    assert add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert add_months(dt.date(2026, 11, 15), 3) == dt.date(2027, 2, 15)


def test_waiting_applies_from_2025_and_not_to_exempt_or_employees():
    rec = _stays([_stay("x", "X", "2026-02-01", "2026-02-03", 1000.0, 1000.0, "1"),
                  _stay("y", "Y", "2026-02-01", "2026-02-03", 1000.0, 1000.0, "1"),
                  _stay("z", "Z", "2026-02-01", "2026-02-03", 1000.0, 1000.0, "1", fund="employee"),
                  _stay("w", "W", "2024-02-01", "2024-02-03", 1000.0, 1000.0, "1")])
    per = pa.table({"patient_id": ["X", "Y", "Z", "W"],
                    "enrolment_date": ["2026-01-10", "2026-01-10", "2026-01-10", "2024-01-10"],
                    "collective_period": [False, False, False, False], "waiting_exempt": [False, True, False, False]})
    st = {r["id"]: r["status"] for r in compute_benefits(rec, per).stays.to_pylist()}
    assert st == {"x": "waiting", "y": "paid", "z": "paid", "w": "paid"}


def test_cap_layers_seed_003():
    pol = load_benefit_policy()
    assert critical_cap_layers(pol, "resident", 2026, 7, 2, False, False) == (40500000, 300000, 200000)
    assert critical_cap_layers(pol, "resident", 2026, 4, 0, False, False) == (40000000, 0, 0)
    assert critical_cap_layers(pol, "resident", 2024, 9, 3, False, False) == (40000000, 0, 0)  # before 2025
    assert critical_cap_layers(pol, "resident", 2026, 200, 0, False, False) == (48000000, 8000000, 0)  # ≤ 20 %
    assert critical_cap_layers(pol, "resident", 2026, 7, 2, False, True) == (None, 0, 0)  # tilt: no cap
    cut = parse_benefit_policy({"critical": {"incentive": {"reenrolled_cap_cut": 0.1}}})
    assert critical_cap_layers(cut, "resident", 2026, 0, 0, True, False) == (36000000, 0, 0)


def test_incentive_used_without_reaching_zero_claim_layer_keeps_the_credit():
    pol = parse_benefit_policy({"critical": {"annual_cap": 20000.00}})
    # critical 0.6 × (elig − 15000) = 22000 → elig = 51666.67: basic 0.6 × (in-policy − 1000)
    rec = _stays([_stay("E1", "E", "2026-05-01", "2026-05-20", 130000.00, 126000.00, "3")])
    per = pa.table({"patient_id": ["E"], "continuous_years": [7], "zero_claim_years": [2]})
    b = compute_benefits(rec, per, pol)
    e = b.stays.to_pylist()[0]
    # basic 0.6 × 125000 = 75000; eligible 51000; critical 0.6 × 36000 = 21600 (cap 24000, zero layer from 23000)
    assert (e["fund_basic_cents"], e["fund_critical_cents"]) == (7500000, 2160000)
    assert "BEN_CAP_INCENTIVE_USED" in e["reasons"] and "BEN_ZERO_CLAIM_CLEARED" not in e["reasons"]
    assert b.persons["zero_claim_cleared"].to_pylist() == [False]
    # the region's other reading: any use of a raise clears the zero-claim credit
    pol2 = parse_benefit_policy({"critical": {"annual_cap": 20000.00,
                                              "incentive": {"zero_claim_cleared_by": "any_raise"}}})
    b2 = compute_benefits(rec, per, pol2)
    assert "BEN_ZERO_CLAIM_CLEARED" in b2.stays["reasons"][0].as_py()
    assert b2.persons["zero_claim_cleared"].to_pylist() == [True]
    with pytest.raises(BenefitPolicyError, match="zero_claim_layer"):
        parse_benefit_policy({"critical": {"incentive": {"zero_claim_cleared_by": "sometimes"}}})


@pytest.mark.parametrize("over, fragment", [
    ({"assistance": {"classes": {"minimum_living": {"ratio": 0.6}}}}, "at least 0.70"),
    ({"assistance": {"classes": {"extreme_poverty": {"threshold_share": 0.06}}}}, "at most 0.05"),
    ({"critical": {"incentive": {"continuous_step": 500.0}}}, "at least 1000.00"),
    ({"critical": {"incentive": {"max_share_of_cap": 0.25}}}, "at most 0.20"),
    ({"basic": {"resident": {"levels": {"2": {"ratio": 1.2}}}}}, "between 0 and 1"),
    ({"critical": {"bands": [{"up_to": 5000.0, "ratio": 0.6}, {"up_to": 4000.0, "ratio": 0.7}, {"ratio": 0.8}]}},
     "must rise"),
    ({"assistance": {"tilt": {"classes": ["nobody"]}}}, "not an assistance class"),
    ({"waiting": {"fixd_months": 3}}, "not a known setting"),
])
def test_policy_floors_and_mistakes_are_refused(over, fragment):
    with pytest.raises(BenefitPolicyError, match=fragment):
        parse_benefit_policy(over)


def test_bad_input_gets_a_reason_per_record_and_the_batch_goes_on():
    rows = [_stay("ok", "P", "2026-01-01", "2026-01-05", 1000.0, 900.0, "2"),
            _stay("lvl", "P", "2026-02-01", "2026-02-05", 1000.0, 900.0, None),
            _stay("dates", "P", "2026-03-09", "2026-03-05", 1000.0, 900.0, "2"),
            _stay("overlap", "P", "2026-01-03", "2026-01-08", 1000.0, 900.0, "2"),
            _stay("cost", "P", "2026-04-01", "2026-04-05", 800.0, 900.0, "2"),
            _stay("nopid", None, "2026-04-01", "2026-04-05", 800.0, 700.0, "2"),
            _stay("cls", "Q", "2026-04-01", "2026-04-05", 800.0, 700.0, "2"),
            _stay("fund", "P", "2026-05-01", "2026-05-05", 800.0, 700.0, "2", fund="military")]
    per = pa.table({"patient_id": ["P", "Q"], "assistance_class": ["", "巨富"]})
    s = _by_id(compute_benefits(_stays(rows), per))
    assert s["ok"]["status"] == "paid"
    expect = {"lvl": "BEN_NO_LEVEL", "dates": "BEN_DATE_ORDER", "overlap": "BEN_OVERLAPPING_STAY",
              "cost": "BEN_BAD_COST", "nopid": "BEN_NO_PATIENT", "cls": "BEN_UNKNOWN_CLASS", "fund": "BEN_UNKNOWN_FUND"}
    for k, code in expect.items():
        assert (s[k]["status"], s[k]["reason"], s[k]["personal_share"]) == ("invalid", code, None), k
    assert (s["overlap"]["total_cost_cents"], s["cost"]["total_cost_cents"]) == (100000, None)
    # an invalid stay takes no admission: "ok" was the first, so its deductible is 500 × 1.0
    assert s["ok"]["basic_deductible_cents"] == 50000


def test_outpatient_chronic_shares_the_assistance_limit():
    pol = parse_benefit_policy({"assistance": {"classes": {"minimum_living": {"annual_limit": 1000.00}}}})
    rec = pa.table({"id": ["o", "i"], "patient_id": ["M", "M"], "fund": ["resident", "resident"],
                    "discharge_date": ["2026-01-10", "2026-02-10"], "total_cost": [2000.0, 3000.0],
                    "in_policy_cost": [2000.0, 3000.0], "fund_paid": [1200.0, None],
                    "visit_type": ["outpatient_chronic", "inpatient"], "hospital_level": [None, "1"]})
    per = pa.table({"patient_id": ["M"], "assistance_class": ["低保"]})
    s = _by_id(compute_benefits(rec, per, pol))
    assert (s["o"]["fund_basic_cents"], s["o"]["assistance_cents"], s["o"]["patient_cents"]) == (120000, 56000, 24000)
    # inpatient: basic 0.8 × 2800 = 2240; rest 760 × 0.7 = 532 but only 440 of the limit is left
    assert (s["i"]["fund_basic_cents"], s["i"]["assistance_cents"], s["i"]["patient_cents"]) == (224000, 44000, 32000)
    assert "BEN_ASSIST_LIMIT" in s["i"]["reasons"]


def test_out_of_region_unfiled_cuts_the_ratio_and_excludes_assistance():
    rec = _stays([_stay("u", "U", "2026-03-01", "2026-03-04", 10000.0, 10000.0, "3")])
    rec = rec.append_column("region_status", pa.array(["unfiled"]))
    per = pa.table({"patient_id": ["U"], "assistance_class": ["低保"]})
    u = compute_benefits(rec, per).stays.to_pylist()[0]
    assert (u["fund_basic_cents"], u["assistance_cents"]) == (450000, 0)   # (0.60 − 0.10) × 9000
    assert "BEN_OUT_OF_REGION_CUT" in u["reasons"] and "BEN_ASSIST_NOT_REFERRED" in u["reasons"]


def _random_case(seed, n=3000, persons=400):
    rng = np.random.default_rng(seed)
    pid = rng.integers(0, persons, n).astype(str)
    start = np.datetime64("2026-01-01") + rng.integers(0, 360, n)
    total = np.round(rng.lognormal(9.5, 1.2, n), 2)
    inpol = np.round(total * rng.uniform(0.5, 1.0, n), 2)
    rec = pa.table({"id": [f"s{i}" for i in range(n)], "patient_id": pid, "fund": rng.choice(["resident", "employee"], n),
                    "admission_date": start.astype(str), "discharge_date": start.astype(str),
                    "total_cost": total, "in_policy_cost": inpol,
                    "hospital_level": rng.choice(["1", "2", "3"], n), "referred": rng.random(n) < 0.5,
                    "region_status": rng.choice(["local", "filed", "unfiled"], n, p=[0.8, 0.1, 0.1])})
    classes = ["", "低保", "特困", "低保边缘", "返贫致贫", "因病致贫"]
    per = pa.table({"patient_id": np.arange(persons).astype(str), "assistance_class": rng.choice(classes, persons),
                    "continuous_years": rng.integers(0, 10, persons), "zero_claim_years": rng.integers(0, 3, persons)})
    return rec, per


def test_random_stays_reconcile_exactly():
    rec, per = _random_case(7)
    b = compute_benefits(rec, per)
    s = b.stays
    ok = s.filter(pa.compute.not_equal(s["status"], "invalid"))
    t = {k: ok[k].to_numpy() for k in ("total_cost_cents", "fund_basic_cents", "fund_critical_cents",
                                      "assistance_cents", "patient_cents", "in_policy_cents")}
    assert ok.num_rows > 2000
    assert (t["fund_basic_cents"] + t["fund_critical_cents"] + t["assistance_cents"] + t["patient_cents"]
            == t["total_cost_cents"]).all()
    assert min(v.min() for v in t.values()) >= 0
    # the funds never pay beyond the in-policy cost
    assert (t["fund_basic_cents"] + t["fund_critical_cents"] + t["assistance_cents"] <= t["in_policy_cents"]).all()
    assert b.persons["patient_cents"].to_numpy().sum() == t["patient_cents"].sum()
    # totals never exceed the caps and limits
    assert b.persons["assistance_cents"].to_numpy().max() <= (60000 + 20000) * 100


def test_input_order_does_not_change_the_result():
    rec, per = _random_case(11, n=800, persons=60)
    a = compute_benefits(rec, per).stays
    perm = np.random.default_rng(3).permutation(rec.num_rows)
    b = compute_benefits(rec.take(perm), per).stays
    key = {r["id"]: r for r in b.to_pylist()}
    assert all(key[r["id"]] == r for r in a.to_pylist())


def test_every_reason_emitted_is_documented():
    rec, per = _random_case(5, n=1000, persons=100)
    codes = {c for r in compute_benefits(rec, per).stays["reasons"].to_pylist() for c in r.split("|")}
    assert codes and codes <= set(reason_ids())


def _run(*args):
    return subprocess.run([sys.executable, "-m", "drgdip", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_writes_byte_identical_outputs_and_refuses_bad_policy(tmp_path):
    pacsv.write_csv(_stays(DOC_STAYS), tmp_path / "stays.csv")
    pacsv.write_csv(DOC_PERSONS, tmp_path / "persons.csv")
    outs = []
    for k in range(2):
        out, tot = tmp_path / f"b{k}.csv", tmp_path / f"t{k}.csv"
        r = _run("benefits", str(tmp_path / "stays.csv"), "--persons", str(tmp_path / "persons.csv"),
                 "-o", str(out), "--totals", str(tot))
        assert r.returncode == 0, r.stderr
        outs.append((out.read_bytes(), tot.read_bytes()))
    assert outs[0] == outs[1]
    assert "48152.75" in outs[0][0].decode()
    assert "6 stays (5 paid, 1 in a waiting period, 0 invalid)" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[assistance.classes.minimum_living]\nratio = 0.5\n', encoding="utf-8")
    r = _run("benefits", str(tmp_path / "stays.csv"), "--policy", str(bad), "-o", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "0.70" in r.stderr
    assert not (tmp_path / "x.csv").exists()


def test_cli_unusable_records_or_persons_stop_with_one_line(tmp_path):
    pacsv.write_csv(_stays(DOC_STAYS).drop_columns(["total_cost"]), tmp_path / "nocost.csv")
    r = _run("benefits", str(tmp_path / "nocost.csv"), "-o", str(tmp_path / "o.csv"))
    assert r.returncode == 2 and r.stderr.strip() == "drgdip: records have no total_cost column (or an alias of it)"
    pacsv.write_csv(_stays(DOC_STAYS), tmp_path / "stays.csv")
    pacsv.write_csv(pa.table({"person": ["A"]}), tmp_path / "persons.csv")
    r = _run("benefits", str(tmp_path / "stays.csv"), "--persons", str(tmp_path / "persons.csv"),
             "-o", str(tmp_path / "o.csv"))
    assert r.returncode == 2 and "persons have no patient_id column" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.csv").exists()


def test_chinese_labels_from_the_policy_are_read():
    rec = _stays([_stay("z", "Z", "2026-03-01", "2026-03-04", 10000.0, 10000.0, "三级"),
                  _stay("y", "Y", "2026-03-01", "2026-03-04", 10000.0, 10000.0, "特级")])
    rec = rec.append_column("region_status", pa.array(["已备案", None]))
    rec = rec.append_column("visit_type", pa.array(["住院", "住院"]))
    s = _by_id(compute_benefits(rec, None, parse_benefit_policy({"basic": {"out_of_region_ratio_cut": {"filed": 0.05}}})))
    assert (s["z"]["status"], s["z"]["fund_basic_cents"]) == ("paid", 495000)   # (0.60 − 0.05) × 9000
    assert (s["y"]["status"], s["y"]["reason"]) == ("invalid", "BEN_NO_LEVEL")


def test_one_stay_alone_is_the_first_stay_of_a_year():
    from drgdip.weights.settlement.benefits import benefits_of_stay
    r = benefits_of_stay({"fund": "居民", "discharge_date": "2026-03-10", "admission_date": "2026-03-02",
                          "total_cost": 30000.0, "in_policy_cost": 27000.0, "hospital_level": "3"},
                         {"assistance_class": "低保边缘"})
    assert (r["fund_basic_cents"], r["fund_critical_cents"], r["assistance_cents"], r["patient_cents"]) == \
        (1560000, 0, 481000, 959000)


def test_worked_example_break_restarts_the_count():
    pol = parse_benefit_policy({"critical": {"annual_cap": 20000.00}})
    rec = _stays([_stay("D2", "D", "2026-05-01", "2026-05-20", 200000.00, 180000.00, "3")])
    per = pa.table({"patient_id": ["D"], "continuous_years": [1], "zero_claim_years": [0], "reenrolled": [True]})
    d = compute_benefits(rec, per, pol).stays.to_pylist()[0]
    assert (d["fund_critical_cents"], d["patient_cents"], d["critical_cap_cents"]) == (2000000, 7260000, 2000000)
    assert "BEN_CRITICAL_CAP" in d["reasons"] and "BEN_CAP_INCENTIVE_USED" not in d["reasons"]


def test_worked_example_employee_large_claim():
    rec = _stays([_stay("E1", "E", "2026-02-01", "2026-02-20", 150000.00, 140000.00, "3", fund="employee"),
                  _stay("E2", "E", "2026-09-01", "2026-09-30", 420000.00, 400000.00, "2", fund="employee")])
    b = compute_benefits(rec, pa.table({"patient_id": ["E"]}))
    s = _by_id(b)
    assert (s["E1"]["fund_basic_cents"], s["E1"]["fund_critical_cents"], s["E1"]["patient_cents"]) == \
        (11120000, 704000, 3176000)
    assert (s["E2"]["fund_basic_cents"], s["E2"]["fund_critical_cents"], s["E2"]["patient_cents"]) == \
        (28880000, 8896000, 4224000)
    assert s["E1"]["reasons"] == "BEN_OUT_OF_POLICY|BEN_BASIC_DEDUCTIBLE|BEN_LARGE_CLAIM_THRESHOLD"
    assert s["E2"]["reasons"] == "BEN_OUT_OF_POLICY|BEN_BASIC_DEDUCTIBLE|BEN_BASIC_CAP"
    assert s["E2"]["basic_deductible_cents"] == 25000
    assert s["E1"]["critical_cap_cents"] == s["E2"]["critical_cap_cents"] == 30000000
    y = b.persons.to_pylist()[0]
    assert (y["fund_basic_cents"], y["fund_critical_cents"], y["patient_cents"]) == (40000000, 9600000, 7400000)


def test_large_claim_cap_and_policy_mistakes():
    pol = parse_benefit_policy({"large_claim": {"annual_cap": 5000.00}})
    rec = _stays([_stay("L", "L", "2026-02-01", "2026-02-20", 150000.00, 140000.00, "3", fund="employee")])
    r = compute_benefits(rec, None, pol).stays.to_pylist()[0]
    assert r["fund_critical_cents"] == 500000 and "BEN_LARGE_CLAIM_CAP" in r["reasons"]
    with pytest.raises(BenefitPolicyError, match="a fund has one second tier"):
        parse_benefit_policy({"critical": {"funds": ["resident", "employee"]}})


def test_worked_example_outpatient_chronic_rules():
    rec = pa.table({"id": ["F1", "F2", "F3"], "patient_id": ["F"] * 3, "fund": ["resident"] * 3,
                    "admission_date": [None, None, "2026-07-01"],
                    "discharge_date": ["2026-02-10", "2026-05-10", "2026-07-08"],
                    "total_cost": [2000.00, 8500.00, 10000.00], "in_policy_cost": [2000.00, 8000.00, 10000.00],
                    "visit_type": ["门诊慢特病", "outpatient_chronic", "inpatient"], "hospital_level": [None, None, "1"],
                    "referred": [False, False, True]})
    b = compute_benefits(rec, pa.table({"patient_id": ["F"], "assistance_class": ["低保"]}))
    s = _by_id(b)
    fig = {k: (s[k]["basic_deductible_cents"], s[k]["fund_basic_cents"], s[k]["fund_critical_cents"],
               s[k]["assistance_cents"], s[k]["patient_cents"]) for k in ("F1", "F2", "F3")}
    assert fig == {"F1": (30000, 102000, 0, 68600, 29400), "F2": (0, 398000, 0, 281400, 170600),
                   "F3": (20000, 784000, 0, 151200, 64800)}
    assert s["F1"]["reasons"] == "BEN_BASIC_DEDUCTIBLE"
    assert s["F2"]["reasons"] == "BEN_OUT_OF_POLICY|BEN_OUTPATIENT_LIMIT"
    assert s["F3"]["reasons"] == "BEN_BASIC_DEDUCTIBLE|BEN_CRITICAL_TILT|BEN_CRITICAL_THRESHOLD"
    assert s["F3"]["assistance_relief_cents"] == 0 and s["F1"]["critical_cap_cents"] is None
    # outside the inpatient cap where the region says so: F3's basic no longer sees the outpatient payments
    pol = parse_benefit_policy({"outpatient": {"counts_against_inpatient_cap": False},
                                "basic": {"resident": {"annual_cap": 8000.00}}})
    s2 = _by_id(compute_benefits(rec, pa.table({"patient_id": ["F"], "assistance_class": ["低保"]}), pol))
    assert s2["F3"]["fund_basic_cents"] == 784000 and "BEN_BASIC_CAP" not in s2["F3"]["reasons"]
    s3 = _by_id(compute_benefits(rec, pa.table({"patient_id": ["F"], "assistance_class": ["低保"]}),
                                 parse_benefit_policy({"basic": {"resident": {"annual_cap": 8000.00}}})))
    assert s3["F3"]["fund_basic_cents"] == 800000 - 102000 - 398000 and "BEN_BASIC_CAP" in s3["F3"]["reasons"]


def test_not_listed_resident_keeps_the_original_cap():
    pol = parse_benefit_policy({"critical": {"annual_cap": 20000.00}})
    rec = _stays([_stay("N", "N", "2026-05-01", "2026-05-20", 200000.00, 180000.00, "3")])
    r = compute_benefits(rec, pa.table({"patient_id": ["other"]}), pol).stays.to_pylist()[0]
    assert (r["fund_critical_cents"], r["critical_cap_cents"]) == (2000000, 2000000)
    assert r["reasons"].endswith("BEN_PERSON_NOT_LISTED")


def test_a_waiting_stay_still_counts_for_overlap():
    rec = _stays([_stay("w", "W", "2026-02-01", "2026-02-20", 1000.0, 1000.0, "1"),
                  _stay("o", "W", "2026-02-10", "2026-02-25", 1000.0, 1000.0, "1")])
    per = pa.table({"patient_id": ["W"], "enrolment_date": ["2026-01-10"], "collective_period": [False]})
    s = _by_id(compute_benefits(rec, per))
    assert (s["w"]["status"], s["o"]["status"], s["o"]["reason"]) == ("waiting", "invalid", "BEN_OVERLAPPING_STAY")
