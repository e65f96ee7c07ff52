"""What-if between two schemes: the worked example of docs/compare.md, to the cent."""
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from drgdip.cli import main
from drgdip.grouper.drg.api import load_scheme
from drgdip.weights.report.scheme_compare import compare_schemes
from drgdip.weights.settlement.policy import parse_policy

TEACHING = Path(__file__).resolve().parents[1] / "grouper" / "drg" / "teaching_scheme"


@pytest.fixture(scope="module")
def unsplit_scheme(tmp_path_factory):
    """The teaching scheme with ES2 not split: ES21/ES23/ES25 replaced by ES29."""
    d = tmp_path_factory.mktemp("scheme_b") / "teaching_es29"
    shutil.copytree(TEACHING, d)
    lines = (d / "3_DRG.txt").read_text(encoding="utf-8").splitlines()
    out = [l for l in lines if not l.startswith(("ES21", "ES23", "ES25"))]
    out.insert(lines.index(next(l for l in lines if l.startswith("ES21"))), "ES29 呼吸系统感染／炎症")
    (d / "3_DRG.txt").write_text("\n".join(out) + "\n", encoding="utf-8")
    return load_scheme(d)


def records():
    return pa.table({
        "id": ["r1", "r2", "r3", "r4", "r5"],
        "hospital_id": ["H1", "H1", "H1", "H2", "H2"],
        "dept": ["呼吸内科", "呼吸内科", "老年科", "呼吸内科", "神经内科"],
        "sex": ["1"] * 5, "age": [60.0] * 5,
        "diagnoses": [["J18.900", "N17.900"], ["J18.900", "E87.100"], ["J18.900"], ["J18.900"], ["I63.900"]],
        "procedures": [[]] * 5,
        "total_cost": [20000.0, 15000.0, 10000.0, 10000.0, 12000.0],
        "fund": ["employee"] * 5,
        "discharge_date": ["2026-03-10"] * 5,
    })


WEIGHTS_A = pa.table({"drg": ["BR25", "ES21", "ES23", "ES25"], "weight": [1.2, 2.0, 1.5, 1.0],
                      "mean_cost": [12000.0, 20000.0, 15000.0, 10000.0]})
WEIGHTS_B = pa.table({"drg": ["BR25", "ES29"], "weight": [1.2, 1.3], "mean_cost": [12000.0, 13000.0]})
POLICY_DATA = {"region": {"name": "what-if example", "base_points": 100},
               "budget": {"employee": {"2026-03": 60000.0}}}     # not used: compare pays a constant pool
POLICY = parse_policy(POLICY_DATA)


def test_worked_example_to_the_cent(unsplit_scheme):
    r = compare_schemes(records(), None, unsplit_scheme, POLICY, weights_a=WEIGHTS_A, weights_b=WEIGHTS_B)
    assert r.cases["drg_a"].to_pylist() == ["ES21", "ES23", "ES25", "ES25", "BR25"]
    assert r.cases["drg_b"].to_pylist() == ["ES29", "ES29", "ES29", "ES29", "BR25"]
    assert [(t["drg_a"], t["drg_b"], t["cases"], t["share_pct"]) for t in r.transitions.to_pylist()] == [
        ("ES25", "ES29", 2, 40.0), ("BR25", "BR25", 1, 20.0), ("ES21", "ES29", 1, 20.0), ("ES23", "ES29", 1, 20.0)]
    s = r.summary
    assert (s["same_drg"], s["same_drg_pct"], s["same_adrg_pct"]) == (1, 20.0, 100.0)
    assert r.cases["points_a"].to_pylist() == [200.0, 150.0, 100.0, 100.0, 120.0]
    assert r.cases["points_b"].to_pylist() == [130.0, 130.0, 130.0, 130.0, 120.0]
    assert s["pool"] == {"employee": 67000.0}
    assert s["point_value"] == {"employee": [100.0, 104.6875]}
    assert r.cases["cents_a"].to_pylist() == [2000000, 1500000, 1000000, 1000000, 1200000]
    assert r.cases["cents_b"].to_pylist() == [1360938, 1360938, 1360937, 1360937, 1256250]
    h = {x["hospital_id"]: x for x in r.by_hospital.to_pylist()}
    assert (h["H1"]["payment_a"], h["H1"]["payment_b"], h["H1"]["payment_change"], h["H1"]["payment_change_pct"]) == \
        (45000.0, 40828.13, -4171.87, -9.27)
    assert (h["H2"]["payment_a"], h["H2"]["payment_b"], h["H2"]["payment_change"], h["H2"]["payment_change_pct"]) == \
        (22000.0, 26171.87, 4171.87, 18.96)
    g = {x["drg_a"]: x for x in r.by_group.to_pylist()}
    assert g["ES25"]["cases"] == 2 and g["ES25"]["payment_b"] == 27218.74


def test_weights_computed_from_the_records_when_not_given(unsplit_scheme):
    """Without weight files each side's weights come from the records under its own groups
    (min_cases 1 here): under A every case is alone in its group, or with an equal cost, so
    each is paid its own cost; under B the merged ES29 pays its four cases their mean, 13,750."""
    few = parse_policy({**POLICY_DATA, "weights": {"min_cases": 1}})
    r = compare_schemes(records(), None, unsplit_scheme, few)
    assert r.summary["unpriced_a"] == 0 and r.summary["unpriced_b"] == 0
    assert r.cases["cents_a"].to_pylist() == [2000000, 1500000, 1000000, 1000000, 1200000]
    assert r.cases["cents_b"].to_pylist() == [1375000, 1375000, 1375000, 1375000, 1200000]
    unpriced = compare_schemes(records(), None, unsplit_scheme, POLICY)     # min_cases 5: no group has a weight
    assert unpriced.summary["unpriced_a"] == 5 and sum(unpriced.cases["cents_a"].to_pylist()) == 0


def test_grouping_only_without_policy(unsplit_scheme):
    r = compare_schemes(records(), None, unsplit_scheme)
    assert r.by_hospital is None and r.transitions.num_rows == 4
    assert "same DRG 1 (20.00 %)" in r.text()


def test_cli_writes_every_table(tmp_path, unsplit_scheme):
    from drgdip.arrowio import write_table
    src = tmp_path / "r.parquet"
    write_table(records(), src)
    write_table(WEIGHTS_A, tmp_path / "wa.csv")
    write_table(WEIGHTS_B, tmp_path / "wb.csv")
    pol = tmp_path / "p.toml"
    pol.write_text('[region]\nname = "what-if example"\nbase_points = 100\n[budget.employee]\n"2026-03" = 60000.0\n',
                   encoding="utf-8")
    bdir = tmp_path / "b"
    unsplit_scheme.save(bdir.with_suffix(".drgscheme"))
    out = tmp_path / "what-if"
    res = CliRunner().invoke(main, ["compare", str(src), "--scheme", "teaching", "--scheme", str(bdir.with_suffix(".drgscheme")),
                                    "--weights", str(tmp_path / "wa.csv"), "--weights", str(tmp_path / "wb.csv"),
                                    "--policy", str(pol), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["cases.parquet", "compare.html", "departments.csv", "groups.csv",
                                                     "hospitals.csv", "summary.json", "transitions.csv"]
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "<td class=\"t\">H1</td><td class=\"n\">3</td>" in page and "-4,171.87" in page and "+18.96" in page
    # summary (9 lines + pool, point value, unpriced), transitions, hospitals, departments, groups
    assert page.count("<tr>") - page.count("<thead><tr>") == 12 + 4 + 2 + 3 + 4
    assert "40828.13" in (out / "hospitals.csv").read_text()
    one = CliRunner().invoke(main, ["compare", str(src), "--scheme", "teaching", "-o", str(out)])
    assert one.exit_code == 2 and "two --scheme" in one.output
