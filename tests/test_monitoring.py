"""Smart monitoring (智能监控): every rule's worked example from docs/monitoring.md, bad input,
determinism, and precision / recall on a region with planted anomalies."""
from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from drgdip.arrowio import InputError, read_table
from drgdip.weights.monitoring.rules import FINDING_SCHEMA, load_rules, monitor


def stays(rows, **defaults):
    """Records already grouped (drg/adrg/status given), so the examples need no scheme."""
    base = {"id": None, "psn_no": "P1", "hospital_id": "H1", "doctor_id": "D1", "admission_date": "2024-01-01",
            "discharge_date": "2024-01-05", "los_days": 4.0, "diagnoses": ["I21.000"], "adrg": "FM1",
            "drg": "FM15", "status": "grouped", "total_cost": 10000.0}
    base.update(defaults)
    out = []
    for i, r in enumerate(rows):
        rec = {**base, **r}
        rec["id"] = rec["id"] or f"S{i + 1}"
        out.append(rec)
    return pa.Table.from_pylist(out)


def flagged(result, rule=None):
    rows = [r for r in result.findings.to_pylist() if r["status"] == "flagged"]
    return [r for r in rows if rule is None or r["rule"] == rule]


EPISODE = [r for r in load_rules() if r.kind in ("split_admission", "overlapping_stay")]


# ---------------------------------------------------------------- split admissions

def test_split_admission_worked_example():
    t = stays([
        {"id": "A1", "admission_date": "2024-03-01", "discharge_date": "2024-03-08", "diagnoses": ["I21.000", "E11.900"]},
        {"id": "A2", "admission_date": "2024-03-18", "discharge_date": "2024-03-22", "diagnoses": ["I21.100"],
         "adrg": "FM2", "drg": "FM25"},   # 10 days later, same category I21, other ADRG
        {"id": "A3", "admission_date": "2024-04-07", "discharge_date": "2024-04-09"},   # 16 days after A2
    ])
    res = monitor(t, rules=EPISODE)
    (f,) = flagged(res, "SPLIT_ADMISSION")
    assert f["record_ids"] == "A1|A2" and f["patient_id"] == "P1" and f["hospital_id"] == "H1"
    fig = json.loads(f["figures"])
    assert fig["gap_days"] == 10 and fig["match"] == "principal_category" and fig["match_value"] == "I21"
    assert fig["first_discharge"] == "2024-03-08" and fig["second_admission"] == "2024-03-18"
    assert f["id"] == "SPLIT_ADMISSION:A1>A2"
    assert "10天再次入院" in f["message_zh"] and "10 day(s) later" in f["message_en"]


def test_split_admission_same_adrg_other_category_and_not_other_hospital():
    t = stays([
        {"id": "B1", "discharge_date": "2024-01-05"},
        {"id": "B2", "admission_date": "2024-01-05", "discharge_date": "2024-01-07", "diagnoses": ["I20.000"]},  # gap 0
        {"id": "B3", "admission_date": "2024-01-09", "discharge_date": "2024-01-10", "hospital_id": "H2"},
        {"id": "B4", "admission_date": "2024-01-12", "discharge_date": "2024-01-14", "diagnoses": ["K80.100"],
         "adrg": "HC2", "drg": "HC25"},  # same hospital as B2, 5 days later, other category and ADRG
    ])
    res = monitor(t, rules=EPISODE)
    (f,) = flagged(res, "SPLIT_ADMISSION")
    assert f["record_ids"] == "B1|B2"
    fig = json.loads(f["figures"])
    assert fig["match"] == "adrg" and fig["match_value"] == "FM1" and fig["gap_days"] == 0


def test_split_admission_same_dip_group():
    t = stays([{"id": "G1", "discharge_date": "2024-01-05", "dip_group": "K80.1:51.23"},
               {"id": "G2", "admission_date": "2024-01-08", "discharge_date": "2024-01-09", "diagnoses": ["K81.000"],
                "adrg": "HC1", "drg": "HC15", "dip_group": "K80.1:51.23"}])
    (f,) = flagged(monitor(t, rules=EPISODE), "SPLIT_ADMISSION")
    fig = json.loads(f["figures"])
    assert fig["match"] == "dip_group" and fig["match_value"] == "K80.1:51.23" and fig["gap_days"] == 3
    assert "DIP group" in f["message_en"] and "DIP病种" in f["message_zh"]


def test_window_is_policy():
    t = stays([{"id": "C1", "discharge_date": "2024-01-05"},
               {"id": "C2", "admission_date": "2024-01-25", "discharge_date": "2024-01-27"}])
    assert not flagged(monitor(t, rules=EPISODE), "SPLIT_ADMISSION")
    rules = [r for r in EPISODE if r.kind == "split_admission"]
    wide = [type(rules[0])(**{**rules[0].__dict__, "params": {**rules[0].params, "window_days": "30"}})]
    (f,) = flagged(monitor(t, rules=wide))
    assert json.loads(f["figures"])["gap_days"] == 20


# ---------------------------------------------------------------- overlapping stays

def test_overlapping_stay_worked_example():
    t = stays([
        {"id": "O1", "admission_date": "2024-05-01", "discharge_date": "2024-05-10"},
        {"id": "O2", "admission_date": "2024-05-06", "discharge_date": "2024-05-08", "hospital_id": "H2"},
        {"id": "O3", "admission_date": "2024-05-10", "discharge_date": "2024-05-12", "hospital_id": "H3"},  # transfer
    ])
    res = monitor(t, rules=EPISODE)
    (f,) = flagged(res, "OVERLAPPING_STAY")
    assert f["record_ids"] == "O1|O2" and f["hospital_id"] == "H1|H2"
    assert json.loads(f["figures"])["overlap_days"] == 2
    assert "重叠2天" in f["message_zh"]


def test_records_without_ids_are_named_by_row():
    t = stays([{"admission_date": "2024-05-01", "discharge_date": "2024-05-09"},
               {"admission_date": "2024-05-03", "discharge_date": "2024-05-04"}]).drop_columns(["id"])
    (f,) = flagged(monitor(t, rules=EPISODE))
    assert f["record_ids"] == "#1|#2" and f["id"] == "OVERLAPPING_STAY:#1>#2"


def test_duplicate_same_day_stays_are_overlaps():
    t = stays([{"id": "D1", "admission_date": "2024-05-01", "discharge_date": "2024-05-01", "los_days": 1.0},
               {"id": "D2", "admission_date": "2024-05-01", "discharge_date": "2024-05-01", "los_days": 1.0}])
    (f,) = flagged(monitor(t, rules=EPISODE), "OVERLAPPING_STAY")
    assert f["record_ids"] == "D1|D2"


def test_records_without_episode_fields_get_a_not_run_finding():
    t = stays([{"id": "E1", "admission_date": None},
               {"id": "E2", "psn_no": None},
               {"id": "E3", "admission_date": "2024-02-09", "discharge_date": "2024-02-01"},
               {"id": "E4", "admission_date": "not a date"},
               {"id": "E5"}])
    res = monitor(t, rules=EPISODE)
    nc = [r for r in res.findings.to_pylist() if r["status"] == "not_checked"]
    assert sorted({r["record_ids"] for r in nc}) == ["E1", "E2", "E3", "E4"]
    assert len(nc) == 8 and {r["reason"] for r in nc} == {"MONITOR_INPUT_MISSING"}
    e2 = next(r for r in nc if r["record_ids"] == "E2")
    assert "patient_id" in e2["message_en"] and "人员编号" in e2["message_zh"]
    assert res.counts == {"not_checked": 8}


# ---------------------------------------------------------------- low cost

NORMS = pa.table({"drg": ["FM15"], "weight": [1.0], "mean_cost": [10000.0], "mean_los": [8.0]})


def test_low_standard_and_under_service_worked_example(tmp_path):
    t = stays([{"id": "L1", "los_days": 2.0, "total_cost": 2500.0},     # 0.25 × mean, 2 days
               {"id": "L2", "los_days": 2.0, "total_cost": 3500.0},     # 0.35: low-standard no, under-service yes
               {"id": "L3", "los_days": 5.0, "total_cost": 2500.0},     # 5 days: neither (5/8 > 0.5)
               {"id": "L4", "los_days": 6.0, "total_cost": 9000.0, "diagnoses": ["J06.900"]}],
              psn_no=None)
    rules = [r for r in load_rules() if r.kind in ("low_standard", "under_service")]
    bad = stays([{"id": "L9", "los_days": 1.0, "total_cost": -5.0}, {"id": "L8", "los_days": 1.0, "total_cost": None}],
                psn_no=None)
    assert not flagged(monitor(bad, rules=rules, weights=NORMS))     # no cost is no evidence of a low cost
    res = monitor(t, rules=rules, weights=NORMS)
    assert [f["record_ids"] for f in flagged(res, "LOW_STANDARD_ADMISSION")] == ["L1"]
    f = flagged(res, "LOW_STANDARD_ADMISSION")[0]
    fig = json.loads(f["figures"])
    assert fig["cost_ratio"] == 0.25 and fig["group_mean_cost"] == 10000.0 and fig["los_days"] == 2.0
    assert sorted(f["record_ids"] for f in flagged(res, "UNDER_SERVICE")) == ["L1", "L2"]
    assert json.loads(flagged(res, "UNDER_SERVICE")[1]["figures"])["los_ratio"] == 0.25
    # a region lists outpatient-treatable diagnoses (门诊可治疗病种)
    extra = tmp_path / "region.csv"
    extra.write_text("rule,kind,severity,params,zh_name,zh,en\n"
                     "LOW_STANDARD_ADMISSION,low_standard,warning,max_los=3;max_cost_ratio=0.3;outpatient=J00-J06|J20,"
                     "低标准入院,病例{record_id}{outpatient_zh},Case {record_id}{outpatient_en}\n", encoding="utf-8")
    res = monitor(t, rules=[r for r in load_rules(extra=extra) if r.kind == "low_standard"], weights=NORMS)
    got = {f["record_ids"]: f for f in flagged(res)}
    assert sorted(got) == ["L1", "L4"]
    assert got["L4"]["message_en"] == "Case L4; principal diagnosis J06.900 is on the policy's outpatient-treatable list"


# ---------------------------------------------------------------- upcoding and concentration

def region_for_upcoding():
    """Four hospitals × 100 cases of ADRG FM1; H1–H3 code a CC/MCC in 30 %, H4 in 70 %."""
    rows = []
    for h, k in (("H1", 30), ("H2", 30), ("H3", 30), ("H4", 70)):
        for i in range(100):
            rows.append({"id": f"{h}-{i:03d}", "psn_no": f"{h}P{i}", "hospital_id": h, "doctor_id": f"{h}D",
                         "drg": "FM11" if i < k else "FM15", "total_cost": 20000.0 if i < k else 10000.0})
    return stays(rows)


def test_cc_share_worked_example():
    rules = [r for r in load_rules() if r.kind == "cc_share"]
    res = monitor(region_for_upcoding(), rules=rules)
    (f,) = flagged(res, "UPCODING_CC_SHARE")
    fig = json.loads(f["figures"])
    assert f["hospital_id"] == "H4" and fig["cases"] == 100 and fig["cc_cases"] == 70
    assert fig["expected_share"] == 0.4 and fig["share"] == 0.7
    z = 30 / math.sqrt(24)
    assert fig["z"] == round(z, 2) == 6.12
    assert fig["p_value"] == float(f"{math.erfc(z / math.sqrt(2)):.3g}")
    (d,) = flagged(res, "UPCODING_CC_SHARE_DOCTOR")
    assert d["doctor_id"] == "H4D" and d["id"] == "UPCODING_CC_SHARE_DOCTOR:H4/H4D"


def test_cc_without_cost_worked_example():
    t = region_for_upcoding()
    cost = [9000.0 if (h == "H4" and i < 40) else c for h, i, c in
            zip(t["hospital_id"].to_pylist(), [int(x[-3:]) for x in t["id"].to_pylist()], t["total_cost"].to_pylist())]
    t = t.set_column(t.schema.get_field_index("total_cost"), "total_cost", pa.array(cost))
    rules = [r for r in load_rules() if r.rule in ("UPCODING_CC_SHARE", "UPCODING_CC_WITHOUT_COST")]
    res = monitor(t, rules=rules)
    cases = flagged(res, "UPCODING_CC_WITHOUT_COST")
    assert [f["record_ids"] for f in cases] == [f"H4-{i:03d}" for i in range(40)]
    fig = json.loads(cases[0]["figures"])
    assert fig["base_drg"] == "FM15" and fig["base_mean_cost"] == 10000.0 and fig["cost_ratio"] == 0.9
    assert cases[0]["severity"] == "info"
    # without the hospital-level finding no case is listed
    alone = [r for r in rules if r.rule == "UPCODING_CC_WITHOUT_COST"]
    assert not flagged(monitor(t, rules=alone))


def test_cc_share_against_own_history_worked_example():
    rules = [r for r in load_rules() if r.kind == "cc_share_history"]
    hist_rows = []
    for h in ("H1", "H4"):
        for i in range(100):
            hist_rows.append({"id": f"{h}-h{i:03d}", "psn_no": f"{h}Q{i}", "hospital_id": h,
                              "drg": "FM11" if i < 30 else "FM15"})
    history = stays(hist_rows, admission_date="2023-01-01", discharge_date="2023-01-05")
    res = monitor(region_for_upcoding(), rules=rules, history=history)
    (f,) = flagged(res)
    fig = json.loads(f["figures"])
    assert f["rule"] == "UPCODING_CC_HISTORY" and f["hospital_id"] == "H4"
    assert fig["expected_share"] == 0.3 and fig["share"] == 0.7
    assert fig["z"] == round(40 / math.sqrt(100 * 0.3 * 0.7), 2) == 8.73
    assert res.skipped == []
    # H2 and H3 have no history: not compared; without history the rule does not run
    res = monitor(region_for_upcoding(), rules=rules)
    assert not flagged(res) and res.skipped == ["UPCODING_CC_HISTORY"]


def test_cmi_worked_example():
    rules = [r for r in load_rules() if r.kind == "cmi_z"]
    w = pa.table({"drg": ["FM11", "FM15"], "weight": [2.0, 1.0], "mean_cost": [20000.0, 10000.0],
                  "mean_los": [6.0, 4.0]})
    res = monitor(region_for_upcoding(), rules=rules, weights=w)
    (f,) = flagged(res)
    fig = json.loads(f["figures"])
    assert f["hospital_id"] == "H4"
    assert fig["cmi"] == 1.7 and fig["expected_cmi"] == 1.4 and fig["region_cmi"] == 1.4
    assert fig["cmi_index"] == round(1.7 / 1.4, 4) and fig["z"] == round(30 / math.sqrt(24), 2)
    # norms from the records themselves give the same RW here (FM11 costs twice FM15)
    res2 = monitor(region_for_upcoding(), rules=rules)
    assert json.loads(flagged(res2)[0]["figures"])["cmi_index"] == round(1.7 / 1.4, 4)


def test_low_cost_concentration_worked_example():
    rows = []
    for h, low in (("H1", 2), ("H2", 2), ("H3", 2), ("H4", 30)):
        for i in range(100):
            rows.append({"id": f"{h}-{i:03d}", "psn_no": f"{h}P{i}", "hospital_id": h,
                         "total_cost": 2000.0 if i < low else 10000.0})
    rules = [r for r in load_rules() if r.kind == "cost_concentration"]
    res = monitor(stays(rows), rules=rules, weights=NORMS)
    (f,) = flagged(res)
    fig = json.loads(f["figures"])
    assert f["rule"] == "LOW_COST_CONCENTRATION" and f["hospital_id"] == "H4"
    assert fig["flagged_cases"] == 30 and fig["region_share"] == 0.09
    assert fig["z"] == round((30 - 9) / math.sqrt(100 * 0.09 * 0.91), 2)


def test_high_cost_concentration_worked_example():
    rows = []
    for h, high in (("H1", 1), ("H2", 1), ("H3", 1), ("H4", 17)):
        for i in range(100):
            rows.append({"id": f"{h}-{i:03d}", "psn_no": f"{h}P{i}", "hospital_id": h,
                         "total_cost": 25000.0 if i < high else 10000.0})
    rules = [r for r in load_rules() if r.kind == "cost_concentration"]
    (f,) = flagged(monitor(stays(rows), rules=rules, weights=NORMS))
    fig = json.loads(f["figures"])
    assert f["rule"] == "HIGH_COST_CONCENTRATION" and f["hospital_id"] == "H4"
    assert fig["flagged_cases"] == 17 and fig["region_share"] == 0.05 and fig["share"] == 0.17
    assert fig["z"] == round((17 - 5) / math.sqrt(100 * 0.05 * 0.95), 2) == 5.51


def test_outpatient_cost_shift_worked_example():
    t = stays([{"id": "V1", "admission_date": "2024-06-10", "discharge_date": "2024-06-14", "total_cost": 3000.0},
               {"id": "V2", "psn_no": "P2", "admission_date": "2024-06-10", "discharge_date": "2024-06-12",
                "total_cost": 6000.0}])
    visits = pa.table({"psn_no": ["P1", "P1", "P1", "P1", "P2"],
                       "hospital_id": ["H1", "H1", "H1", "H2", "H1"],
                       "visit_date": ["2024-06-02", "2024-06-03", "2024-06-10", "2024-06-09", "2024-06-09"],
                       "total_cost": [900.0, 800.0, 400.0, 5000.0, 300.0]})
    rules = [r for r in load_rules() if r.kind == "outpatient_shift"]
    res = monitor(t, rules=rules, outpatient=visits)
    (f,) = flagged(res)
    fig = json.loads(f["figures"])
    # 06-03 (7 days before) and 06-10 (the admission day) count; 06-02 (8 days) does not;
    # H2's visit is at another hospital; P2's 300 yuan are 0.05 of its stay
    assert f["record_ids"] == "V1" and fig["visits"] == 2 and fig["outpatient_cost"] == 1200.0
    assert fig["share"] == 0.4 and fig["total_cost"] == 3000.0
    assert not monitor(t, rules=rules).findings.num_rows and monitor(t, rules=rules).skipped == ["OUTPATIENT_COST_SHIFT"]


# ---------------------------------------------------------------- files, determinism, CLI

def test_rules_file_errors(tmp_path):
    bad = tmp_path / "r.csv"
    bad.write_text("rule,kind,severity,params,zh_name,zh,en\nX,nonsense,warning,,x,x,x\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown kind"):
        load_rules(bad)
    with pytest.raises(InputError, match="no such"):
        load_rules(tmp_path / "missing.csv")


@pytest.fixture(scope="module")
def planted():
    from drgdip.synth.anomalies import plant_anomalies
    return plant_anomalies(seed=11, records_per_month=1500)


@pytest.fixture(scope="module")
def planted_result(planted):
    return monitor(planted.records)


def test_precision_recall_on_planted_anomalies(planted, planted_result):
    from drgdip.synth.anomalies import score
    s = score(planted_result.findings, planted.truth)
    for rule in ("SPLIT_ADMISSION", "OVERLAPPING_STAY"):
        assert s[rule]["planted"] == 300 and s[rule]["recall"] >= 0.95 and s[rule]["precision"] >= 0.95
    assert s["controls"]["late_readmission"]["SPLIT_ADMISSION"] <= 0.05
    assert s["controls"]["other_condition"]["SPLIT_ADMISSION"] <= 0.05
    assert s["controls"]["transfer"]["OVERLAPPING_STAY"] == 0.0
    assert s["UPCODING_CC_SHARE"]["recall"] == 1.0 and s["UPCODING_CC_SHARE"]["precision"] == 1.0
    assert s["UPCODING_CMI"]["recall"] == 1.0
    assert s["LOW_COST_CONCENTRATION"]["recall"] == 1.0
    assert s["LOW_STANDARD_ADMISSION"]["recall"] >= 0.9
    assert s["UPCODING_CC_WITHOUT_COST"]["precision"] >= 0.4


def test_own_history_finds_the_planted_upcoding_hospitals(planted):
    from drgdip.synth.anomalies import score
    from drgdip.synth.region import synthesize_region
    history = synthesize_region(None, seed=11, years=(2023,), records_per_month=1500)
    rules = [r for r in load_rules() if r.kind == "cc_share_history"]
    res = monitor(planted.records, rules=rules, history=history)
    found = {f["hospital_id"] for f in flagged(res)}
    assert found == set(planted.truth["UPCODING_HOSPITALS"])
    assert score(res.findings, planted.truth)["UPCODING_CC_HISTORY"]["precision"] == 1.0


def test_partitions_and_reruns_give_identical_bytes(planted, planted_result, tmp_path):
    res4 = monitor(planted.records, partitions=4, tmp_dir=str(tmp_path), batch_size=5000)
    diff = [(x, y) for x, y in zip(res4.findings.to_pylist(), planted_result.findings.to_pylist()) if x != y]
    assert not diff, diff[:1]
    assert res4.findings.equals(planted_result.findings)
    assert res4.findings.schema == FINDING_SCHEMA
    ids = planted_result.findings["id"]
    assert pc.count_distinct(ids).as_py() == len(ids)
    assert not list(tmp_path.iterdir())        # the temporary parts are removed


def test_cli_monitor_writes_findings_and_is_byte_identical(tmp_path):
    from drgdip.arrowio import write_table
    from drgdip.cli import main
    t = stays([{"id": "A1", "discharge_date": "2024-03-08", "admission_date": "2024-03-01"},
               {"id": "A2", "admission_date": "2024-03-12", "discharge_date": "2024-03-15"}])
    src = tmp_path / "rec.parquet"
    write_table(t, src)
    runner = CliRunner()
    outs = []
    for name in ("a.csv", "b.csv"):
        r = runner.invoke(main, ["monitor", str(src), "-o", str(tmp_path / name), "--quiet"])
        assert r.exit_code == 0, r.output
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    f = read_table(tmp_path / "a.csv")
    assert "SPLIT_ADMISSION" in f["rule"].to_pylist()
    bad = tmp_path / "bad.csv"
    bad.write_text("rule,kind\n", encoding="utf-8")
    r = runner.invoke(main, ["monitor", str(src), "-o", str(tmp_path / "c.csv"), "--rules", str(bad)])
    assert r.exit_code == 2 and "needs the columns" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["monitor", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "d.csv")])
    assert r.exit_code == 2 and "no such file" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["monitor", "--help"])
    assert "Example" in r.output
