"""QC sees what the grouper and pricing reject: the same bad records through the kernel,
case pricing and QC; every rejection reason is a QC finding on that record."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from drgdip import arrowio as gio
from drgdip.codesets import fields
from drgdip.codesets.qc import load_rules, run_qc
from drgdip.grouper.drg.api import group_table, load_scheme
from drgdip.weights.settlement.points import month_of, price_cases
from drgdip.weights.settlement.policy import parse_policy

GOOD = {"id": "r", "hospital_id": "H11010500001", "sex": "1", "age": "40", "age_days": None,
        "birth_weight_g": None, "los_days": "5", "admission_date": "2024-01-01", "discharge_date": "2024-01-06",
        "diagnoses": "I63.900", "procedures": None, "total_cost": "12000", "personal_share": "100", "fund": "职工"}

# records the issue names, and more: each differs from GOOD in the fields given
BAD = [
    {}, {"age": "200"}, {"age": "-1"}, {"age": "abc"}, {"age": None}, {"age": "150.5"}, {"age": "150"},
    {"sex": "X"}, {"sex": None}, {"sex": "女"}, {"sex": " m "}, {"los_days": None}, {"los_days": "5 days"},
    {"discharge_date": "2024-13-45"}, {"discharge_date": "yesterday"}, {"ventilation_hours": "n/a"},
    {"age": "0", "age_days": None}, {"age": "0", "age_days": "366"}, {"age": "0", "age_days": "-2"},
    {"age": "0", "age_days": "365", "birth_weight_g": None}, {"age": "0", "age_days": "28"},
    {"age": "0", "age_days": "29"}, {"age": "0", "age_days": "3", "birth_weight_g": "99"},
    {"age": "0", "age_days": "3", "birth_weight_g": "10001"}, {"age": "0", "age_days": "3", "birth_weight_g": "100"},
    {"age": "0", "age_days": "3", "birth_weight_g": "heavy"}, {"age": "0.5", "age_days": "x"},
    {"diagnoses": None}, {"diagnoses": "ZZZ.999"}, {"total_cost": None}, {"total_cost": "-1"},
    {"total_cost": "1,000"}, {"personal_share": "-5"}, {"personal_share": "abc"}, {"fund": "商业"},
    {"fund": None}, {"hospital_id": None},
    # several faults at once: QC reports every one (the kernel stops at the first)
    {"sex": "X", "age": "200", "total_cost": "-3", "hospital_id": None, "discharge_date": "2024/02/31"},
]

POLICY = parse_policy({"budget": {"employee": {"2024-01": 1e6}, "resident": {"2024-01": 1e6}},
                       "deviation": {"high_bands": [{"k": 3.0}], "low_k": 0.4}})

# grouper reasons whose QC rule has another name (a QC rule that predates the shared checks)
QC_NAME = {"MISSING_DIAGNOSIS": "QC_PRINCIPAL_MISSING"}
# pricing reasons that follow from the grouping (their cause is the grouper's reason)
CONSEQUENCES = {"INVALID_RECORD", "NOT_GROUPED", "GROUP_NOT_IN_TABLE", "GROUP_NOT_PRICED", "NO_GROUP_MEAN_COST"}


@pytest.fixture(scope="module")
def records() -> pa.Table:
    cols = sorted({k for r in BAD for k in r} | set(GOOD))
    rows = [{c: None for c in cols} | GOOD | r | {"id": f"r{i}"} for i, r in enumerate(BAD)]
    return pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in cols]))


def test_every_grouper_and_pricing_rejection_is_a_qc_finding(records):
    scheme = load_scheme()
    grouped = group_table(records, scheme)
    weights = pa.table({"drg": pa.array(sorted(set(scheme.drg_codes))),
                        "weight": np.ones(len(set(scheme.drg_codes))),
                        "mean_cost": np.full(len(set(scheme.drg_codes)), 10000.0)})
    # pricing stops at the grouping's outcome: price the records also as if grouped, to reach its own checks
    n = records.num_rows
    as_grouped = records.append_column("drg", pa.array([scheme.drg_codes[0]] * n)).append_column(
        "status", pa.array(["grouped"] * n))
    priced = price_cases(as_grouped, weights, POLICY, period="2024-01")
    priced = priced.append_column("reason", grouped["reason"]).drop_columns(["status"]).append_column(
        "status", grouped["status"])
    # QC on the raw records alone (no grouping results): the field checks are QC's own
    qc = run_qc(records, scheme=scheme, fund_labels=POLICY.fund_of_label())
    found = {}
    for f in qc.to_pylist():
        found.setdefault(f["id"], set()).add(f["rule"])
    rules = {r.rule for r in load_rules()}
    checked = 0
    for row in priced.select(["id", "status", "reason", "pricing_reason"]).to_pylist():
        expect = set()
        if row["status"] == "invalid":
            expect.add(QC_NAME.get(row["reason"], row["reason"]))
        if row["pricing_reason"] not in CONSEQUENCES and row["pricing_reason"] in {
                "BAD_COST", "BAD_PERSONAL_SHARE", "UNKNOWN_FUND", "MISSING_HOSPITAL", "BAD_DISCHARGE_DATE"}:
            expect.add(row["pricing_reason"])
        assert expect <= rules
        assert expect <= found.get(row["id"], set()), (row, found.get(row["id"]))
        checked += len(expect)
    assert checked >= 30
    # and QC reports no grouper field reason on a record the grouper accepted
    kernel_field_reasons = {"BAD_VALUE", "MISSING_SEX", "INVALID_SEX", "MISSING_AGE", "INVALID_AGE",
                            "MISSING_AGE_DAYS", "INVALID_AGE_DAYS", "MISSING_BIRTH_WEIGHT", "INVALID_BIRTH_WEIGHT"}
    accepted = {r["id"] for r in grouped.select(["id", "status"]).to_pylist() if r["status"] != "invalid"}
    for f in qc.to_pylist():
        if f["id"] in accepted and f["rule"] in kernel_field_reasons and f["rule"] != "BAD_VALUE":
            pytest.fail(f"QC says {f['rule']} on {f['id']}, which the grouper accepts")


def test_several_faults_all_reported(records):
    qc = run_qc(records, fund_labels=POLICY.fund_of_label())
    last = f"r{len(BAD) - 1}"
    got = {(f["rule"], f["field"]) for f in qc.to_pylist() if f["id"] == last}
    assert {("INVALID_SEX", "sex"), ("INVALID_AGE", "age"), ("BAD_COST", "total_cost"),
            ("MISSING_HOSPITAL", "hospital_id"), ("QC_DATE_UNREADABLE", "discharge_date")} <= got


def test_scheme_conflicts_come_from_the_grouping_results(records):
    scheme = load_scheme()
    t = records.slice(0, 1).to_pylist()[0]
    t = pa.Table.from_pylist([t | {"id": "f", "sex": "2", "diagnoses": "N40.x00"}], schema=records.schema)
    g = group_table(t, scheme)
    reason = g["reason"][0].as_py()
    assert run_qc(t, only={reason}).num_rows == 0          # no grouping results: not decided
    f = run_qc(t, grouping=lambda x: group_table(x, scheme), only={reason})
    assert f["rule"].to_pylist() == [reason] and f["field"].to_pylist() == ["reason"]


def test_limits_come_from_the_scheme():
    t = pa.table({"id": ["a"], "sex": ["1"], "age": [120.0], "diagnoses": ["I63.900"]})
    assert run_qc(t, only={"INVALID_AGE"}).num_rows == 0

    class Scheme:   # a scheme whose validation table says 100 years
        validation = {"max_age_years": 100}
    assert run_qc(t, only={"INVALID_AGE"}, scheme=Scheme())["value"].to_pylist() == ["120"]
    assert fields.grouper_limits()["max_age_years"] == load_scheme().validation["max_age_years"]


def test_codes_and_months_equal_the_grouper_and_pricing_ones():
    """QC reads sex codes, the numeric fields and discharge months as the grouper and pricing
    do (the column readers themselves are the Arrow boundary's, shared)."""
    from drgdip.grouper.drg.encode import SEX_WORDS
    from drgdip.grouper.drg.scheme import FIELDS
    assert fields.sex_codes() == SEX_WORDS
    assert fields.GROUPER_NUMBERS == FIELDS
    assert fields.text is gio.text and fields.code_list is gio.code_list
    for a in (pa.array(["2024-01-06", "20240106", "2024/13/01", None, "2024-02-30", "2024-02"]),
              pa.array(["x", "y", "x"]).dictionary_encode()):
        assert fields.month_of(a).equals(month_of(a))


def test_codesets_import_no_grouper_module():
    code = ("import sys, drgdip.codesets.qc, drgdip.codesets.fields, drgdip.codesets.code_tables; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['drgdip', 'grouper'], ['drgdip', 'weights'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_codes_the_code_set_lacks(tmp_path):
    """With a code set, the grouper's UNKNOWN_DIAGNOSIS (principal) and UNKNOWN_SECONDARY_IGNORED
    are QC findings on the same code (not in the table, or not even well formed)."""
    from drgdip.codesets.code_tables import load_code_table
    from drgdip.grouper.drg.encode import CodeSet
    zd, ss = tmp_path / "ZD_INFO.dat", tmp_path / "SS_INFO.dat"
    zd.write_text("I63.900 脑梗死\nK80.100 胆囊结石伴急性胆囊炎\n", encoding="utf-8")
    ss.write_text("51.2300 腹腔镜下胆囊切除术\n", encoding="utf-8")
    tables = {"diagnosis": load_code_table(zd), "procedure": load_code_table(ss)}
    rows = [GOOD | {"id": "a", "diagnoses": "Q99.999"}, GOOD | {"id": "b", "diagnoses": "K8O.1"},
            GOOD | {"id": "c", "diagnoses": "I63.900|Q99.999"}, GOOD | {"id": "d", "procedures": "51.2200"},
            GOOD | {"id": "e"}]
    t = pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in GOOD]))
    g = group_table(t, load_scheme(), CodeSet(tables["diagnosis"], tables["procedure"]))
    qc = run_qc(t, code_tables=tables)
    found = {}
    for f in qc.to_pylist():
        found.setdefault(f["id"], set()).add((f["rule"], f["field"]))
    reasons = dict(zip(g["id"].to_pylist(), g["reason"].to_pylist()))
    assert reasons["a"] == reasons["b"] == "UNKNOWN_DIAGNOSIS"
    assert ("QC_DIAGNOSIS_UNKNOWN", "diagnoses[1]") in found["a"]
    assert ("QC_DIAGNOSIS_FORMAT", "diagnoses[1]") in found["b"]
    assert reasons["c"] == reasons["d"] == "UNKNOWN_SECONDARY_IGNORED"
    assert ("QC_DIAGNOSIS_UNKNOWN", "diagnoses[2]") in found["c"]
    assert ("QC_PROCEDURE_UNKNOWN", "procedures[1]") in found["d"]
    assert reasons["e"] == "OK" and "e" not in found
