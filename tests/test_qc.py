"""QC rules: for every rule a record that fires it and one that does not; conformance files."""
from __future__ import annotations

import pyarrow as pa
import pytest

from drgdip.arrowio import read_table
from drgdip.codesets.code_tables import load_code_table
from drgdip.codesets.qc import (
    FINDING_SCHEMA,
    in_ranges,
    load_rules,
    rules_skipped,
    run_qc,
)
from tests.conftest import need_shared

BASE = {"id": "r", "hospital_id": "H11010500001", "doctor_id": "D110105000123", "sex": "1",
        "age": 40.0, "age_days": None, "birth_weight_g": None, "los_days": 5.0,
        "admission_date": "2024-01-01", "discharge_date": "2024-01-06",
        "diagnoses": "K80.100", "procedures": "51.2300", "total_cost": 100.0,
        "fee_surgery": 60.0, "fee_bed": 40.0, "fund": "职工", "personal_share": 10.0}
FUNDS = {"职工": "employee", "居民": "resident"}


def table(*records) -> pa.Table:
    rows = [{**BASE, "id": f"r{i}", **r} for i, r in enumerate(records)]
    return pa.Table.from_pylist(rows)


@pytest.fixture
def code_tables(tmp_path):
    zd = tmp_path / "zd.dat"
    zd.write_text("K80.100 胆囊结石伴急性胆囊炎\nO80.000 单胎顺产\nN40.x00 前列腺增生\n"
                  "P07.300 早产儿\nV43.500 汽车乘员损伤\nA01.002+G01* 伤寒性脑膜炎\n", encoding="utf-8")
    ss = tmp_path / "ss.dat"
    ss.write_text("51.2300 腹腔镜下胆囊切除术\n60.2900 经尿道前列腺切除术\n68.4100 腹腔镜子宫切除术\n", encoding="utf-8")
    return {"diagnosis": load_code_table(zd), "procedure": load_code_table(ss)}


# (rule, record that fires it, record that does not)
CASES = [
    ("QC_DIAGNOSIS_FORMAT", {"diagnoses": "K80.100|K8O.1"}, {"diagnoses": "k80.100|K80.100x001"}),
    ("QC_PROCEDURE_FORMAT", {"procedures": "51.23"}, {"procedures": "51.2300"}),
    ("QC_DIAGNOSIS_UNKNOWN", {"diagnoses": "K80.100|K81.000"}, {"diagnoses": "K80.100|O80.000"}),
    ("QC_PROCEDURE_UNKNOWN", {"procedures": "51.2200"}, {"procedures": "51.2300"}),
    ("QC_PRINCIPAL_MISSING", {"diagnoses": None}, {"diagnoses": "K80.100"}),
    ("QC_PRINCIPAL_MANIFESTATION", {"diagnoses": "G01*"}, {"diagnoses": "A01.002+G01*"}),
    ("QC_PRINCIPAL_EXTERNAL_CAUSE", {"diagnoses": "V43.500|S06.000"}, {"diagnoses": "S06.000|V43.500"}),
    ("QC_PRINCIPAL_SUPPLEMENTARY", {"diagnoses": "B96.200|N39.000"}, {"diagnoses": "N39.000|B96.200"}),
    ("QC_SEX_DIAGNOSIS_FEMALE", {"sex": "1", "diagnoses": "K80.100|O80.000"}, {"sex": "2", "diagnoses": "K80.100|O80.000"}),
    ("QC_SEX_DIAGNOSIS_MALE", {"sex": "2", "diagnoses": "N40.x00"}, {"sex": "1", "diagnoses": "N40.x00"}),
    ("QC_SEX_PROCEDURE_FEMALE", {"sex": "1", "procedures": "68.4100"}, {"sex": "2", "procedures": "68.4100"}),
    ("QC_SEX_PROCEDURE_MALE", {"sex": "2", "procedures": "60.2900"}, {"sex": "1", "procedures": "60.2900"}),
    ("QC_SEX_MDC", {"sex": "2", "mdc": "MDCM"}, {"sex": "1", "mdc": "MDCM"}),
    ("QC_PERINATAL_AGE", {"age": 0.0, "age_days": 40.0, "birth_weight_g": 3000.0, "diagnoses": "P07.300"},
     {"age": 0.0, "age_days": 20.0, "birth_weight_g": 3000.0, "diagnoses": "P07.300"}),
    ("QC_OBSTETRIC_AGE", {"sex": "2", "age": 62.0, "diagnoses": "O80.000"}, {"sex": "2", "age": 30.0, "diagnoses": "O80.000"}),
    ("QC_DUPLICATE_DIAGNOSIS", {"diagnoses": "K80.100|O80.000|k80.100"}, {"diagnoses": "K80.100|K80.100x001"}),
    ("QC_DUPLICATE_PROCEDURE", {"procedures": "51.2300|51.2300"}, {"procedures": "51.2300"}),
    ("QC_LOS_NOT_POSITIVE", {"los_days": 0.0}, {"los_days": 1.0}),
    ("QC_DATES_ORDER", {"admission_date": "2024-01-06", "discharge_date": "2024/01/01"},
     {"admission_date": "20240101", "discharge_date": "2024-01-06 10:00:00"}),
    ("QC_COST_SUM", {"total_cost": 100.02}, {"total_cost": 100.01}),
    ("QC_HOSPITAL_CODE", {"hospital_id": "H1101050001"}, {"hospital_id": "h11010500001"}),
    ("QC_DOCTOR_CODE", {"doctor_id": "D990105000123"}, {"doctor_id": "D440305000123"}),
    ("QC_SURGERY_FEE_NO_PROCEDURE", {"procedures": None}, {"procedures": None, "fee_surgery": 0.0, "fee_bed": 100.0}),
    # the grouper's field checks (codesets.fields, the kernel's limits)
    ("BAD_VALUE", {"ventilation_hours": "n/a"}, {"ventilation_hours": " 12 "}),
    ("MISSING_SEX", {"sex": None}, {"sex": "男"}),
    ("INVALID_SEX", {"sex": "X"}, {"sex": "F"}),
    ("MISSING_AGE", {"age": None}, {"age": 3.0}),
    ("INVALID_AGE", {"age": 150.5}, {"age": 150.0}),
    ("MISSING_AGE_DAYS", {"age": 0.0}, {"age": 0.0, "age_days": 40.0}),
    ("INVALID_AGE_DAYS", {"age": 0.0, "age_days": 366.0}, {"age": 0.0, "age_days": 365.0}),
    ("MISSING_BIRTH_WEIGHT", {"age": 0.0, "age_days": 3.0, "diagnoses": "P07.300"},
     {"age": 0.0, "age_days": 3.0, "birth_weight_g": 2100.0, "diagnoses": "P07.300"}),
    ("INVALID_BIRTH_WEIGHT", {"age": 0.0, "age_days": 28.0, "birth_weight_g": 99.0},
     {"age": 0.0, "age_days": 29.0, "birth_weight_g": 99.0}),
    # what only the scheme decides: read from the grouping results
    ("SEX_CONFLICT", {"reason": "SEX_CONFLICT"}, {"reason": "OK"}),
    ("NO_MDC", {"reason": "NO_MDC"}, {"reason": "OK"}),
    ("NO_ADRG", {"reason": "NO_ADRG"}, {"reason": "NO_DRG"}),
    ("NO_DRG", {"reason": "NO_DRG"}, {"reason": "NO_ADRG"}),
    ("AMBIGUOUS_OR_PROCEDURE", {"reason": "AMBIGUOUS_OR_PROCEDURE"}, {"reason": "OK"}),
    # pricing's record checks (weights.settlement.points)
    ("BAD_COST", {"total_cost": -0.01}, {"total_cost": 0.0, "fee_surgery": 0.0, "fee_bed": 0.0}),
    ("BAD_PERSONAL_SHARE", {"personal_share": -1.0}, {"personal_share": 0.0}),
    ("UNKNOWN_FUND", {"fund": "商业保险"}, {"fund": "居民"}),
    ("MISSING_HOSPITAL", {"hospital_id": None}, {"hospital_id": "H11010500001"}),
    ("BAD_DISCHARGE_DATE", {"discharge_date": "2024-13-01"}, {"discharge_date": "2024-01-31"}),
    ("QC_LOS_MISSING", {"los_days": None}, {"los_days": 1.0}),
    ("QC_DATE_UNREADABLE", {"admission_date": "2024-02-30"}, {"admission_date": "2024-02-29"}),
]
SEPARATE = {"QC_DUPLICATE_ID"}   # needs two records: test_duplicate_ids


def test_every_rule_has_a_case():
    assert {r.rule for r in load_rules()} == {c[0] for c in CASES} | SEPARATE


@pytest.mark.parametrize("rule,fires,quiet", CASES, ids=[c[0] for c in CASES])
def test_rule_fires_and_stays_quiet(rule, fires, quiet, code_tables):
    t = table(fires, quiet)
    if "mdc" not in fires:
        t = t.append_column("mdc", pa.array(["MDCH", "MDCH"]))
    f = run_qc(t, code_tables=code_tables, fund_labels=FUNDS)
    hit = f.filter(pa.compute.equal(f["rule"], rule))
    assert hit["id"].to_pylist() == ["r0"], f.to_pylist()


def test_finding_columns_and_values(code_tables):
    f = run_qc(table({"sex": "1", "diagnoses": "K80.100|O80.000|k80.100"}), code_tables=code_tables, lang="zh")
    assert f.schema == FINDING_SCHEMA
    rows = {r["rule"]: r for r in f.to_pylist()}
    assert rows["QC_SEX_DIAGNOSIS_FEMALE"]["field"] == "diagnoses[2]"
    assert rows["QC_SEX_DIAGNOSIS_FEMALE"]["value"] == "sex=1 O80.000"
    assert rows["QC_SEX_DIAGNOSIS_FEMALE"]["message"] == "男性患者出现女性特有诊断"
    assert rows["QC_DUPLICATE_DIAGNOSIS"]["field"] == "diagnoses[3]"   # the later copy is reported


def test_format_message_names_the_problem():
    f = run_qc(table({"hospital_id": "X11010500001"}), only={"QC_HOSPITAL_CODE"})
    assert f["message"][0].as_py() == ("The designated hospital code is malformed: "
                                       "The code does not start with the standard's marker letter(s)")


def test_cost_sum_in_cents_and_only_with_fees():
    t = table({"total_cost": 0.3, "fee_surgery": 0.1, "fee_bed": 0.2})  # 0.1 + 0.2 != 0.3 in floats
    assert run_qc(t, only={"QC_COST_SUM"}).num_rows == 0
    assert run_qc(t.drop_columns(["fee_surgery", "fee_bed"]), only={"QC_COST_SUM"}).num_rows == 0


def test_rules_skip_when_inputs_are_absent():
    t = pa.table({"id": ["a"], "diagnoses": ["K80.100"]})
    skipped = rules_skipped(t)
    assert {"QC_DIAGNOSIS_UNKNOWN", "QC_COST_SUM", "BAD_COST", "UNKNOWN_FUND", "SEX_CONFLICT"} <= set(skipped)
    assert "QC_DIAGNOSIS_FORMAT" not in skipped and "MISSING_SEX" not in skipped
    assert "SEX_CONFLICT" not in rules_skipped(t, grouping=lambda x: x)
    # without sex and age columns the grouper rejects every record: QC says so on each
    assert [(r["rule"], r["field"]) for r in run_qc(t).to_pylist()] == [("MISSING_SEX", "sex"), ("MISSING_AGE", "age")]


def test_duplicate_ids_within_a_table_and_across_batches(tmp_path):
    t = table({"id": "a"}, {"id": "b"}, {"id": "a"}, {"id": "a"})
    f = run_qc(t, only={"QC_DUPLICATE_ID"})
    assert f["id"].to_pylist() == ["a", "a"] and f["field"].to_pylist() == ["id", "id"]
    seen = set()
    assert run_qc(table({"id": "x"}), only={"QC_DUPLICATE_ID"}, seen_ids=seen).num_rows == 0
    assert run_qc(table({"id": "y"}, {"id": "x"}), only={"QC_DUPLICATE_ID"}, seen_ids=seen)["id"].to_pylist() == ["x"]
    from drgdip.codesets.qc import check_file
    src = tmp_path / "d.csv"
    src.write_text("id,sex,age\n" + "".join(f"{i % 5},1,30\n" for i in range(12)), encoding="utf-8")
    s = check_file(src, only={"QC_DUPLICATE_ID"}, batch_size=4)
    assert s.findings == 7     # 12 records, 5 distinct ids, found across batches of 4


def test_surgery_fee_finding_names_both_fields():
    f = run_qc(table({"procedures": None, "fee_surgery": 1200.5}), only={"QC_SURGERY_FEE_NO_PROCEDURE"})
    assert f.to_pylist()[0]["field"] == "fee_surgery|procedures[1]"
    assert f.to_pylist()[0]["value"] == "fee_surgery=1200.5 procedures[1]=(none)"


def test_bad_rules_and_code_table_paths_are_one_line_errors(tmp_path):
    from click.testing import CliRunner

    from drgdip.cli import main
    src = tmp_path / "d.csv"
    src.write_text("id,sex\na,1\n", encoding="utf-8")
    bad = tmp_path / "rules.csv"
    bad.write_text("rule,severity,fields,params,zh,en\nX,error,age,,x,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing column"):
        load_rules(bad)
    for args, words in (([ "--rules", str(bad)], "missing column(s) kind"),
                        (["--code-tables", str(tmp_path / "nonexistent")], "no such folder of code tables"),
                        (["--code-tables", str(tmp_path)], "neither ZD_INFO.dat nor SS_INFO.dat"),
                        (["--diagnosis-table", str(tmp_path / "zd.dat")], "no such diagnosis code table")):
        r = CliRunner().invoke(main, ["check", str(src), *args])
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.output, r.output


def test_ranges():
    codes = pa.array(["O00.000", "O99.800", "P00.0", "N69.9", "65.0100", "71.9", "72.1", None])
    assert in_ranges(codes, [("O00", "O99")]).to_pylist() == [True, True, False, False, False, False, False, False]
    assert in_ranges(codes, [("65", "71")]).to_pylist() == [False] * 4 + [True, True, False, False]


def test_aliases_and_list_columns():
    t = pa.table({"setl_id": ["s1"], "gend": [2], "diag_code": [["N40.x00"]]})
    f = run_qc(t)
    assert f.to_pylist()[0]["id"] == "s1" and f.to_pylist()[0]["rule"] == "QC_SEX_DIAGNOSIS_MALE"


@pytest.mark.parametrize("name", ["chs-drg-1.1-cases.csv", "chs-drg-1.1-beijing-cases.csv"])
def test_conformance_files_every_finding_explainable(name):
    t = read_table(need_shared("conformance", name))
    tables = {"diagnosis": load_code_table(need_shared("codesets", "ZD_INFO.dat")),
              "procedure": load_code_table(need_shared("codesets", "SS_INFO.dat"))}
    f = run_qc(t, code_tables=tables)
    assert f.num_rows > 0
    rules = {r.rule for r in load_rules()}
    assert set(f["rule"].to_pylist()) <= rules
    assert f["id"].null_count == 0 and f["message"].null_count == 0
    assert set(f["id"].to_pylist()) <= set(t["id"].cast(pa.string()).to_pylist())
    # every unknown-code finding really is absent from the table and well formed
    unknown = f.filter(pa.compute.equal(f["rule"], "QC_DIAGNOSIS_UNKNOWN"))["value"].to_pylist()
    assert all(c not in tables["diagnosis"].index for c in unknown)


def test_cli_check_and_codes(tmp_path):
    from click.testing import CliRunner

    from drgdip.cli import main
    src = tmp_path / "d.csv"
    src.write_text("id,hospital_id,sex,diagnoses,procedures\n"
                   "a,H11010500001,1,K80.100|O80.000,51.2300\n"
                   "b,H1101050001,2,K80.100,\n", encoding="utf-8")
    out, summary = tmp_path / "issues.csv", tmp_path / "sum.csv"
    r = CliRunner().invoke(main, ["check", str(src), "-o", str(out), "--summary", str(summary)])
    assert r.exit_code == 0, r.output
    assert "2 records, 4 findings" in r.output
    rows = read_table(out).to_pylist()
    assert [(x["id"], x["rule"]) for x in rows] == [("a", "QC_SEX_DIAGNOSIS_FEMALE"), ("a", "MISSING_AGE"),
                                                    ("b", "QC_HOSPITAL_CODE"), ("b", "MISSING_AGE")]
    by_h = read_table(summary).to_pylist()
    assert {(x["hospital_id"], x["rule"]) for x in by_h} == {("H11010500001", "QC_SEX_DIAGNOSIS_FEMALE"),
                                                             ("H1101050001", "QC_HOSPITAL_CODE"),
                                                             ("H11010500001", "MISSING_AGE"),
                                                             ("H1101050001", "MISSING_AGE")}
    r = CliRunner().invoke(main, ["codes", "info", "H11010500001"])
    assert r.exit_code == 0 and "region         110105" in r.output
    r = CliRunner().invoke(main, ["codes", "info", "H1101050001", "--standard", "fixed_hospital"])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["check", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2


def test_cli_map_keeps_unmapped(tmp_path):
    from click.testing import CliRunner

    from drgdip.cli import main
    m = tmp_path / "map.dat"
    m.write_text("A01.000x002 A01.003\n", encoding="utf-8")
    src = tmp_path / "old.csv"
    src.write_text("id,diagnoses\n1,A01.000x002|Q99.999\n", encoding="utf-8")
    out = tmp_path / "new.csv"
    r = CliRunner().invoke(main, ["codes", "map", str(src), "--mapping", str(m), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "2 codes, 1 mapped, 1 without a mapping" in r.output
    row = read_table(out).to_pylist()[0]
    assert row["diagnoses_mapped"] == "A01.003|Q99.999" and row["diagnoses_unmapped"] == "Q99.999"
