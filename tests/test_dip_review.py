"""DIP settlement with special review (特例单议) and readmissions (再入院): docs/settlement.md "DIP
settlement" 6-7 and its worked example "A DIP month with special review and a readmission",
reproduced to the cent through ``drgdip settle``; the other readmission keys and payments, the
triggers that name a group read on DIP group codes, refusals."""
import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from dip_example import POLICY, history

from drgdip.cli import main
from drgdip.grouper.dip.api import group_dip, write_catalog
from drgdip.weights.dip_catalog import build_catalog

#: (id, hospital, patient, procedures, admitted, discharged, cost, personal share); diagnosis K80.100
ROWS = [("d1", "H1", "P1", "51.2300", "10-01", "10-08", 60000, 12000),
        ("d2", "H1", "P2", "51.2300", "10-02", "10-06", 11000, 2200),
        ("d3", "H1", "P2", "51.2300", "10-16", "10-20", 13200, 2640),
        ("d4", "H2", "P3", "", "10-03", "10-09", 25000, 5000),
        ("d5", "H2", "P4", "", "10-05", "10-07", 4000, 800),
        ("d6", "H1", "P1", "", "10-12", "10-15", 5000, 1000),
        ("d7", "H2", "P5", "51.2300", "10-10", "10-18", 45000, 9000)]
CASES = {"id": [r[0] for r in ROWS], "hospital_id": [r[1] for r in ROWS], "patient_id": [r[2] for r in ROWS],
         "diagnoses": ["K80.100"] * len(ROWS), "procedures": [r[3] for r in ROWS], "fund": ["职工"] * len(ROWS),
         "admission_date": ["2026-" + r[4] for r in ROWS], "discharge_date": ["2026-" + r[5] for r in ROWS],
         "total_cost": [float(r[6]) for r in ROWS], "personal_share": [float(r[7]) for r in ROWS]}
REFERENCE = "group_key,level,mean_cost\nK80.1|51.2300,3,12000\nK80.1|51.2300,2,10000\n"
REGION = """[region]
name = "DIP example, special review and readmissions"
[budget.employee]
"2026-10" = 120000.00
"2026" = 120000.00
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
[special_review]
cost_multiple = 4.0
payment = "hold"
hospital_quota_share = 0.5
[readmission]
days = 15
key = "group"
payment = "halve_earlier"
share = 0.5
"""
DECISIONS = "id,decision,points\nd1,points,500\nd4,actual,\nd7,normal,\n"


@pytest.fixture
def region(tmp_path):
    write_catalog(build_catalog(history(), POLICY), tmp_path / "cat.parquet")
    pq.write_table(pa.table(CASES), tmp_path / "oct.parquet")
    (tmp_path / "ref.csv").write_text(REFERENCE, encoding="utf-8")
    (tmp_path / "region.toml").write_text(REGION, encoding="utf-8")
    (tmp_path / "dec.csv").write_text(DECISIONS, encoding="utf-8")
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def month(t, out, *more, policy="region.toml", method="dip"):
    return run("settle", "2026-10", t / "oct.parquet", "--method", method, "--catalog", t / "cat.parquet",
               "--policy", t / policy, "--ledger", t / "l.db", "-o", t / out, "--quiet", *more)


def with_policy(t, old, new, name="region.toml"):
    text = REGION.replace(old, new)
    assert text != REGION
    (t / name).write_text(text, encoding="utf-8")


def cases(t, out):
    return pq.read_table(t / out / "cases.parquet").to_pydict()


def csv_rows(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    head = [h.strip('"') for h in lines[0].split(",")]
    return [dict(zip(head, [v.strip('"') for v in line.split(",")])) for line in lines[1:]]


def test_worked_example_held_then_decided_to_the_cent(region):
    t = region
    r = month(t, "r1", "--new-ledger")
    assert r.exit_code == 0, r.output
    c = cases(t, "r1")
    assert c["cost_ratio"][:2] == pytest.approx([5.0, 11000 / 12000])
    assert c["review_trigger"] == ["cost_high", None, None, "cost_high", None, None, "cost_high"]
    assert c["review_status"] == ["held", None, None, "held", None, None, "over_quota"]
    assert c["pricing_reason"] == ["SPECIAL_REVIEW_HOLD", "READMISSION_EARLIER_STAY", "READMISSION_WITHIN_DAYS",
                                   "SPECIAL_REVIEW_HOLD", "PRICED_NORMAL", "PRICED_NORMAL",
                                   "SPECIAL_REVIEW_OVER_QUOTA"]
    assert c["readmission_of"] == [None, None, "d2", None, None, None, None]     # d6: another DIP group
    assert [c["points"][i] for i in (0, 3)] == [None, None]
    assert c["points"][1:3] + c["points"][4:] == pytest.approx([63.70505, 127.4101, 47.69424, 52.9936, 401.341815],
                                                               abs=1e-9)
    assert c["amount"] == [None, 13786.09, 27572.18, None, 10321.27, 11468.08, 86852.38]
    assert c["fund_amount"] == [None, 11586.09, 24932.18, None, 9521.27, 10468.08, 77852.38]
    s = json.loads((t / "r1/summary.json").read_text(encoding="utf-8"))
    e = s["funds"]["employee"]
    assert (e["payment"], e["held_cases"], e["held_cost"], e["amount_due"]) == (150000.00, 2, 85000.00, 134360.00)
    assert e["total_points"] == pytest.approx(693.144805, abs=1e-9)
    assert e["point_value"] == pytest.approx(216.404998, abs=5e-7)
    h = {row["hospital_id"]: row for row in csv_rows(t / "r1/hospitals.csv")}
    assert [(h[x]["payment"], h[x]["amount_due"], h[x]["held_cases"], h[x]["held_cost"]) for x in ("H1", "H2")] == \
        [("52826.35", "46986.35", "1", "60000.00"), ("97173.65", "87373.65", "1", "25000.00")]
    review = {row["id"]: row for row in csv_rows(t / "r1/review.csv")}
    assert set(review) == {"d1", "d4", "d7"}
    assert float(review["d4"]["actual_points"]) == pytest.approx(47.69424 * 25000 / 4700, abs=1e-9)
    assert float(review["d1"]["normal_points"]) == pytest.approx(127.4101, abs=1e-9)

    r = month(t, "r2", "--reopen", "--decisions", t / "dec.csv")
    assert r.exit_code == 0, r.output
    c = cases(t, "r2")
    assert c["review_status"] == ["decided", None, None, "decided", None, None, "over_quota"]
    assert c["pricing_reason"][0] == "SPECIAL_REVIEW_DECIDED_POINTS"
    assert c["pricing_reason"][3] == "SPECIAL_REVIEW_DECIDED_ACTUAL"
    assert c["points"] == pytest.approx([500, 63.70505, 127.4101, 253.6927659574468, 47.69424, 52.9936,
                                         401.341815], abs=1e-9)
    assert c["amount"] == [51837.19, 6604.58, 13209.17, 26301.44, 4944.67, 5494.08, 41608.87]
    assert c["fund_amount"] == [39837.19, 4404.58, 10569.17, 21301.44, 4144.67, 4494.08, 32608.87]
    e = json.loads((t / "r2/summary.json").read_text(encoding="utf-8"))["funds"]["employee"]
    assert (e["payment"], e["held_cases"], e["amount_due"]) == (150000.00, 0, 117360.00)
    assert e["point_value"] == pytest.approx(103.674388, abs=5e-7)
    h = {row["hospital_id"]: row for row in csv_rows(t / "r2/hospitals.csv")}
    assert [(h[x]["payment"], h[x]["amount_due"]) for x in ("H1", "H2")] == \
        [("77145.02", "59305.02"), ("72854.98", "58054.98")]
    assert [(x["id"], x["status"], x["reason"]) for x in csv_rows(t / "r2/decisions.csv")] == \
        [("d1", "applied", ""), ("d4", "applied", ""), ("d7", "refused", "DECISION_NOT_UNDER_REVIEW")]
    with sqlite3.connect(t / "l.db") as conn:
        runs = conn.execute("SELECT revision, current FROM runs WHERE period = '2026-10' ORDER BY revision").fetchall()
    assert runs == [(1, 0), (2, 1)]


def test_quota_and_pairs_over_the_whole_file_whatever_the_batch(region):
    """d2 and d3 fall in two batches of 2, and H2's candidates d4 and d7 too."""
    t = region
    assert month(t, "a", "--new-ledger").exit_code == 0
    assert month(t, "b", "--reopen", "--batch-size", "2").exit_code == 0
    assert month(t, "c", "--reopen", "--batch-size", "2", "--decisions", t / "dec.csv").exit_code == 0
    assert month(t, "d", "--reopen", "--decisions", t / "dec.csv").exit_code == 0
    for x, y in (("a", "b"), ("c", "d")):
        for name in ("cases.parquet", "review.csv", "hospitals.csv", "summary.json"):
            assert (t / x / name).read_bytes() == (t / y / name).read_bytes(), (x, name)


def test_the_library_prices_a_table_as_the_run_does(region):
    """weights.dip_scores.price_dip_cases over the table alone: the same quota, holds and pairs."""
    from drgdip.weights.dip_scores import price_dip_cases
    from drgdip.weights.settlement.dip_settle import (
        dip_pricing_policy,
        load_reference_means,
    )
    from drgdip.weights.settlement.policy import load_policy
    t = region
    assert month(t, "r1", "--new-ledger").exit_code == 0
    policy = load_policy(t / "region.toml")
    grouped = group_dip(pa.table(CASES), t / "cat.parquet")
    priced = price_dip_cases(grouped, t / "cat.parquet", dip_pricing_policy(policy), period="2026-10",
                             reference_means=load_reference_means(policy))
    run_cases = cases(t, "r1")
    for col in ("points", "pricing_reason", "review_status", "readmission_of", "case_type"):
        assert priced[col].to_pylist() == run_cases[col], col


def test_principal_diagnosis_key_pairs_across_dip_groups(region):
    t = region
    with_policy(t, 'key = "group"', 'key = "principal_diagnosis"')
    assert month(t, "out", "--new-ledger").exit_code == 0
    c = cases(t, "out")
    assert c["readmission_of"] == [None, None, "d2", None, None, "d1", None]
    # d6 is paid as usual; d1, held for special review, is left as it is (not halved)
    assert c["pricing_reason"][5] == "READMISSION_WITHIN_DAYS" and c["points"][5] == pytest.approx(52.9936)
    assert c["pricing_reason"][0] == "SPECIAL_REVIEW_HOLD" and c["points"][0] is None


@pytest.mark.parametrize("payment, d2, d3", [
    ("second_unpaid", (127.4101, "PRICED_NORMAL"), (None, "READMISSION_UNPAID")),
    ("flag_only", (127.4101, "PRICED_NORMAL"), (127.4101, "READMISSION_WITHIN_DAYS"))])
def test_the_other_readmission_payments(region, payment, d2, d3):
    t = region
    with_policy(t, 'payment = "halve_earlier"', f'payment = "{payment}"')
    r = month(t, "out", "--new-ledger")
    assert r.exit_code == 0, r.output
    c = cases(t, "out")
    for i, (points, reason) in ((1, d2), (2, d3)):
        assert c["pricing_reason"][i] == reason
        assert c["points"][i] == (None if points is None else pytest.approx(points, abs=1e-9))
    assert c["readmission_of"][2] == "d2"
    if payment == "second_unpaid":                  # outside the pool, listed for review with its money
        assert c["case_type"][2] == "unpriced" and c["amount"][2] is None
        assert "d3" in {row["id"] for row in csv_rows(t / "out/review.csv")}


def test_adrg_key_and_mixed_readmissions_are_refused_in_one_line(region):
    t = region
    with_policy(t, 'key = "group"', 'key = "adrg"')
    r = month(t, "out", "--new-ledger")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and 'readmission.key = "adrg" has no meaning for DIP' in r.output
    assert not (t / "l.db").exists() and not (t / "out").exists()
    with_policy(t, 'reference_means = "ref.csv"', 'reference_means = "ref.csv"\nhospitals = ["H2"]')
    pq.write_table(pa.table({"drg": ["A01"], "weight": [1.2], "mean_cost": [10000.0]}), t / "w.parquet")
    pq.write_table(pa.table(dict(CASES, drg=["A01"] * 7, status=["grouped"] * 7)), t / "oct.parquet")
    r = month(t, "out", "--new-ledger", "--weights", t / "w.parquet", method="mixed")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "not --method mixed" in r.output


def test_small_group_counts_the_dip_group_code_over_the_file(region):
    """K80.1|none has 3 priceable cases (d4, d5 at level 2, d6 at level 3): min_group_cases = 3
    sends none (counted per priced cell, 2 and 1, all three would go), 4 sends all three."""
    t = region
    for k, expected in ((3, [None] * 7), (4, [None, None, None, "small_group", "small_group", "small_group", None])):
        with_policy(t, "cost_multiple = 4.0\n", f"min_group_cases = {k}\n")
        for batch in ("65536", "2"):
            r = month(t, f"k{k}-{batch}", "--new-ledger" if not (t / "l.db").exists() else "--reopen",
                      "--batch-size", batch)
            assert r.exit_code == 0, r.output
            assert cases(t, f"k{k}-{batch}")["review_trigger"] == expected, (k, batch)


def test_review_group_is_the_catalogues_column(region):
    t = region
    cat = pq.read_table(t / "cat.parquet")
    flag = pa.array([k == "K80.1|none" for k in cat["group_key"].to_pylist()])
    pq.write_table(cat.append_column("review_group", flag).replace_schema_metadata(cat.schema.metadata),
                   t / "cat.parquet")
    with_policy(t, "cost_multiple = 4.0\n", "")
    assert month(t, "out", "--new-ledger").exit_code == 0
    c = cases(t, "out")
    assert c["review_trigger"] == [None, None, None, "review_group", "review_group", "review_group", None]
    # quota: H2 has 3 reviewable cases (cap 1), H1 4 (cap 2); d4 (ratio 5.32) goes before d5 (0.85)
    assert c["review_status"] == [None, None, None, "held", "over_quota", "held", None]


def test_separate_pool_leaves_the_other_hospitals_out_of_review(region):
    """pool = "separate": the DRG hospitals' cases (H1 here) are unpriced in the DIP run, with no
    trigger and outside the quota's base: region-wide quota 0.5 of H2's 3 cases = 1 (d4)."""
    t = region
    with_policy(t, 'reference_means = "ref.csv"', 'reference_means = "ref.csv"\nhospitals = ["H2"]\npool = "separate"')
    (t / "region.toml").write_text((t / "region.toml").read_text(encoding="utf-8").replace(
        "hospital_quota_share = 0.5", "quota_share = 0.5"), encoding="utf-8")
    r = month(t, "out", "--new-ledger")
    assert r.exit_code == 0, r.output
    c = cases(t, "out")
    assert c["pricing_reason"][0] == "SETTLED_BY_OTHER_METHOD"
    assert [c[k][0] for k in ("review_trigger", "review_status", "cost_ratio", "group_mean_cost")] == [None] * 4
    assert c["review_status"] == [None, None, None, "held", None, None, "over_quota"]
