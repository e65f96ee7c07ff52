"""DIP settlement from the CLI: the worked example of docs/settlement.md "DIP settlement" to the cent,
the year, a mixed DRG + DIP region, refusals, byte-identical reruns, the ledger intact on failure."""
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from dip_example import POLICY, history

from drgdip.cli import main
from drgdip.grouper.dip.api import write_catalog
from drgdip.weights.dip_catalog import build_catalog
from drgdip.weights.settlement.policy import PolicyError, parse_policy

#: docs/settlement.md "DIP settlement": the five October cases (all employee fund)
CASES = {"id": ["c1", "c2", "c3", "c4", "c5"], "diagnoses": ["K80.100"] * 5,
         "procedures": ["51.2300", "51.2300", "51.2300", "", ""], "hospital_id": ["H1", "H2", "H1", "H2", "H1"],
         "fund": ["职工"] * 5, "discharge_date": ["2026-10-15"] * 5,
         "total_cost": [11000.0, 9000.0, 30000.0, 2000.0, 5000.0],
         "personal_share": [2200.0, 1800.0, 6000.0, 400.0, 1000.0]}
REFERENCE = "group_key,level,mean_cost\nK80.1|51.2300,3,12000\nK80.1|51.2300,2,10000\n"
REGION = """[region]
name = "DIP example"
[budget.employee]
"2026-10" = 40000.00
"2026" = 40000.00
[coefficients.level]
"3" = 1.0
"2" = 0.9
[coefficients.hospital_level]
H1 = "3"
H2 = "2"
[dip_settlement]
reference_means = "ref.csv"
[dip_settlement.reimbursement_ratio]
employee = 0.8
"""


@pytest.fixture
def region(tmp_path):
    write_catalog(build_catalog(history(), POLICY), tmp_path / "cat.parquet")
    pq.write_table(pa.table(CASES), tmp_path / "oct.parquet")
    (tmp_path / "ref.csv").write_text(REFERENCE, encoding="utf-8")
    (tmp_path / "region.toml").write_text(REGION, encoding="utf-8")
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def month(t, out="out/2026-10", *more):
    return run("settle", "2026-10", t / "oct.parquet", "--method", "dip", "--catalog", t / "cat.parquet",
               "--policy", t / "region.toml", "--ledger", t / "l.db", "-o", t / out, "--quiet", *more)


def csv_rows(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    head = [h.strip('"') for h in lines[0].split(",")]
    return [dict(zip(head, [v.strip('"') for v in line.split(",")])) for line in lines[1:]]


def test_worked_example_to_the_cent(region):
    t = region
    r = month(t, "out/2026-10", "--new-ledger")
    assert r.exit_code == 0, r.output
    cases = pq.read_table(t / "out/2026-10/cases.parquet").to_pydict()
    assert cases["dip_group"] == ["K80.1|51.2300"] * 3 + ["K80.1|none"] * 2
    assert cases["group_mean_cost"] == [12000.0, 10000.0, 12000.0, 4700.0, 4700.0]   # reference means, else catalogue
    assert cases["case_type"] == ["normal", "normal", "high_cost", "low_cost", "normal"]
    assert cases["points"] == pytest.approx([127.4101, 114.66909, 191.11515, 52.9936 * 0.9 * 2000 / 4700, 52.9936],
                                            abs=1e-9)
    assert cases["amount"] == [12577.92, 11320.12, 18866.87, 2003.56, 5231.53]
    assert cases["fund_amount"] == [10377.92, 9520.12, 12866.87, 1603.56, 4231.53]
    assert cases["payment_method"] == ["dip"] * 5
    s = json.loads((t / "out/2026-10/summary.json").read_text(encoding="utf-8"))
    e = s["funds"]["employee"]
    assert e["payment"] == 50000.00                       # 40,000.00 / 0.8, not budget + personal share
    assert e["point_value"] == pytest.approx(98.719926, abs=5e-7)
    assert (e["amount_due"], e["personal_share"]) == (38600.00, 11400.00)
    assert s["method"] == "dip" and s["dip"]["budget_point_value"] == pytest.approx(88.689988)
    h = {row["hospital_id"]: row for row in csv_rows(t / "out/2026-10/hospitals.csv")}
    assert (h["H1"]["payment"], h["H1"]["amount_due"], h["H2"]["payment"], h["H2"]["amount_due"]) == \
        ("36676.32", "27476.32", "13323.68", "11123.68")

    r = run("settle", "2026", "--final", "--method", "dip", "--partial-year", "--policy", t / "region.toml",
            "--ledger", t / "l.db", "-o", t / "out/2026", "--quiet")
    assert r.exit_code == 0, r.output
    h = {row["hospital_id"]: row for row in csv_rows(t / "out/2026/hospitals.csv")}
    assert (h["H1"]["payment"], h["H1"]["balance"], h["H2"]["payment"], h["H2"]["balance"]) == \
        ("36676.31", "-0.01", "13323.69", "0.01")


def test_rerun_byte_identical_and_batch_size_free(region):
    t = region
    assert month(t, "a", "--new-ledger").exit_code == 0
    assert month(t, "b", "--reopen", "--batch-size", "2").exit_code == 0
    for name in ("cases.parquet", "review.csv", "hospitals.csv", "summary.json"):
        assert (t / "a" / name).read_bytes() == (t / "b" / name).read_bytes(), name


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_bad_catalogue_one_line_exit_2_ledger_and_outputs_intact(region):
    t = region
    assert month(t, "out/2026-10", "--new-ledger").exit_code == 0
    before = (digest(t / "l.db"), digest(t / "out/2026-10/cases.parquet"))
    (t / "bad.parquet").write_bytes(b"not parquet")
    for cat in (t / "bad.parquet", t / "ref.csv"):
        r = run("settle", "2026-10", t / "oct.parquet", "--method", "dip", "--catalog", cat, "--policy",
                t / "region.toml", "--ledger", t / "l.db", "-o", t / "out/2026-10", "--reopen", "--quiet")
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    assert "not a DIP catalogue" in r.output
    assert (digest(t / "l.db"), digest(t / "out/2026-10/cases.parquet")) == before


def test_usage_errors(region):
    t = region
    r = run("settle", "2026-10", t / "oct.parquet", "--method", "dip", "--policy", t / "region.toml",
            "--ledger", t / "l.db", "--new-ledger")
    assert r.exit_code == 2 and "--method dip needs --catalog" in r.output
    r = run("settle", "2026", "--final", "--method", "dip", "--catalog", t / "cat.parquet", "--policy",
            t / "region.toml", "--ledger", t / "l.db")
    assert r.exit_code == 2 and "--catalog goes with a monthly settlement" in r.output
    assert not (t / "l.db").exists()


def test_year_refuses_months_of_another_method(region):
    t = region
    assert month(t, "out/2026-10", "--new-ledger").exit_code == 0
    r = run("settle", "2026", "--final", "--partial-year", "--policy", t / "region.toml", "--ledger", t / "l.db")
    assert r.exit_code == 2 and "2026-10 (dip)" in r.output


def test_missing_reimbursement_ratio_and_bad_fields(region):
    t = region
    (t / "region.toml").write_text(REGION.replace("employee = 0.8\n", ""), encoding="utf-8")
    r = month(t, "out", "--new-ledger")
    assert r.exit_code == 2 and "reimbursement_ratio has no employee" in r.output
    assert not (t / "l.db").exists()
    base = {"budget": {"employee": {"2026-10": 1.0}}}
    for bad, msg in (({"low_k": 2.5}, "low_k"), ({"pool": "both"}, "pool"), ({"hospitals": "H1"}, "hospitals"),
                     ({"reimbursement_ratio": {"employee": 1.5}}, "reimbursement_ratio.employee"),
                     ({"points": 1}, "not a policy field")):
        with pytest.raises(PolicyError, match=msg):
            parse_policy({**base, "dip_settlement": bad})


def test_budget_personal_form_is_the_drg_pool(region):
    t = region
    (t / "region.toml").write_text(REGION.replace("reference_means", 'point_value = "budget_personal"\n'
                                                  "reference_means"), encoding="utf-8")
    assert month(t, "out", "--new-ledger").exit_code == 0
    e = json.loads((t / "out/summary.json").read_text(encoding="utf-8"))["funds"]["employee"]
    assert e["payment"] == 51400.00 and e["amount_due"] == 40000.00     # budget + personal share, as DRG


def drg_files(t):
    cases = dict(CASES, drg=["A01"] * 5, status=["grouped"] * 5)
    pq.write_table(pa.table(cases), t / "oct.parquet")
    pq.write_table(pa.table({"drg": ["A01"], "weight": [1.2], "mean_cost": [10000.0]}), t / "w.parquet")


def test_mixed_region_one_pool(region):
    t = region
    drg_files(t)
    (t / "region.toml").write_text(REGION.replace('reference_means = "ref.csv"',
                                                  'reference_means = "ref.csv"\nhospitals = ["H2"]\n'
                                                  'points_factor = 1.1'), encoding="utf-8")
    r = run("settle", "2026-10", t / "oct.parquet", "--method", "mixed", "--catalog", t / "cat.parquet",
            "--weights", t / "w.parquet", "--policy", t / "region.toml", "--ledger", t / "l.db", "--new-ledger",
            "-o", t / "out", "--quiet")
    assert r.exit_code == 0, r.output
    c = pq.read_table(t / "out/cases.parquet").to_pydict()
    assert c["payment_method"] == ["drg", "dip", "drg", "dip", "drg"]
    dip_points = [114.66909 * 1.1, 52.9936 * 0.9 * 2000 / 4700 * 1.1]
    assert c["points"] == pytest.approx([120.0, dip_points[0], 120.0, dip_points[1], 120.0], abs=1e-9)
    e = json.loads((t / "out/summary.json").read_text(encoding="utf-8"))["funds"]["employee"]
    assert e["payment"] == 51400.00                                    # one pool: budget + personal share
    assert e["point_value"] == pytest.approx(51400 / (360 + sum(dip_points)))


def test_separate_pools_leave_the_other_hospitals(region):
    t = region
    drg_files(t)
    (t / "region.toml").write_text(REGION.replace('reference_means = "ref.csv"', 'reference_means = "ref.csv"\n'
                                                  'hospitals = ["H2"]\npool = "separate"'), encoding="utf-8")
    assert month(t, "dip", "--new-ledger").exit_code == 0
    c = pq.read_table(t / "dip/cases.parquet").to_pydict()
    assert c["pricing_reason"][0] == "SETTLED_BY_OTHER_METHOD" and c["case_type"][0] == "unpriced"
    assert [p is not None for p in c["points"]] == [False, True, False, True, False]
    r = run("settle", "2026-10", t / "oct.parquet", "--weights", t / "w.parquet", "--policy", t / "region.toml",
            "--ledger", t / "drg.db", "--new-ledger", "-o", t / "drg", "--quiet")
    assert r.exit_code == 0, r.output
    c = pq.read_table(t / "drg/cases.parquet").to_pydict()
    assert [p is not None for p in c["points"]] == [True, False, True, False, True]
    r = run("settle", "2026-10", t / "oct.parquet", "--method", "mixed", "--catalog", t / "cat.parquet",
            "--weights", t / "w.parquet", "--policy", t / "region.toml", "--ledger", t / "m.db", "--new-ledger")
    assert r.exit_code == 2 and "two runs" in r.output


def test_mixed_period_means_are_the_drg_hospitals_own(region):
    t = region
    drg_files(t)
    (t / "region.toml").write_text(REGION.replace('reference_means = "ref.csv"', 'reference_means = "ref.csv"\n'
                                                  'hospitals = ["H2"]') + '[deviation]\ngroup_mean = "period"\n',
                                   encoding="utf-8")
    r = run("settle", "2026-10", t / "oct.parquet", "--method", "mixed", "--catalog", t / "cat.parquet",
            "--weights", t / "w.parquet", "--policy", t / "region.toml", "--ledger", t / "l.db", "--new-ledger",
            "-o", t / "out", "--quiet", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    c = pq.read_table(t / "out/cases.parquet").to_pydict()
    drg_mean = (11000 + 30000 + 5000) / 3          # H1's cases only, not H2's (DIP) ones
    assert [c["group_mean_cost"][i] for i in (0, 2, 4)] == pytest.approx([drg_mean] * 3)
    assert c["group_mean_cost"][1] == 10000.0      # H2 by DIP: its reference mean
    assert c["case_type"] == ["normal", "normal", "normal", "low_cost", "low_cost"]
    assert c["points"][4] == pytest.approx(120 * 5000 / drg_mean)
