"""drgdip demo: a whole settled year from nothing but the project, deterministic, with its
outputs written exactly as `drgdip settle --out` writes them."""
from __future__ import annotations

import json
import re
import sqlite3
import tomllib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from drgdip.cli import main
from drgdip.grouper.drg.api import TEACHING_SCHEME
from drgdip.synth.demo import run_demo, summary_table

RPM = 300      # small region: the test is about the flow, not the volume


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return run_demo(out, seed=11, progress=False, records_per_month=RPM, hospitals=8)


def test_every_month_and_the_year_are_settled_in_the_ledger(demo):
    out = demo["out"]
    with sqlite3.connect(out / "ledger.db") as conn:
        rows = conn.execute("SELECT period, kind FROM runs WHERE current=1 ORDER BY kind, period").fetchall()
    assert rows == [("2024", "annual")] + [(f"2024-{m:02d}", "monthly") for m in range(1, 13)]
    for m, period in enumerate([f"2024-{m:02d}" for m in range(1, 13)], start=1):
        names = sorted(p.name for p in (out / "settled" / period).iterdir())
        decided = ["decisions.csv"] if m <= 3 else []          # synth.toml [demo] decided_months
        assert names == ["cases.parquet"] + decided + ["hospitals.csv", "review.csv", "summary.json"]
    assert sorted(p.name for p in (out / "settled" / "2024").iterdir()) == ["hospitals.csv", "summary.json"]


def test_budgets_come_from_the_synthetic_costs_and_are_paid_out_to_the_cent(demo):
    out = demo["out"]
    policy = tomllib.loads((out / "policy.toml").read_text(encoding="utf-8"))
    assert policy["region"]["form"] == "point"
    march = pq.read_table(out / "data" / "2024-03.parquet")
    for fund in ("employee", "resident"):
        paid = march.filter(pc.equal(march["fund"], fund))["fund_paid"].to_numpy()
        expected = round(0.97 * int(np.round(paid * 100).sum())) / 100
        assert policy["budget"][fund]["2024-03"] == pytest.approx(expected, abs=0.005)
        months = sum(policy["budget"][fund][f"2024-{m:02d}"] for m in range(1, 13))
        assert policy["budget"][fund]["2024"] == pytest.approx(months, abs=0.01)
        summary = json.loads((out / "settled" / "2024-03" / "summary.json").read_text(encoding="utf-8"))
        f = summary["funds"][fund]
        assert f["amount_due"] == pytest.approx(f["budget"], abs=0.001)     # the budget is paid out to the cent
    levels = policy["coefficients"]["hospital_level"]
    assert len(levels) == 8 and set(levels.values()) == {"1", "2", "3"}


def test_outputs_are_exactly_what_drgdip_settle_writes(demo, tmp_path):
    out = demo["out"]
    other = tmp_path / "settled-2024-05"
    r = CliRunner().invoke(main, ["settle", "2024-05", str(out / "data" / "2024-05.parquet"),
                                  "--policy", str(out / "policy.toml"), "--weights", str(out / "weights.parquet"),
                                  "--benefits", str(out / "benefits.parquet"),
                                  "--ledger", str(tmp_path / "l.db"), "--scheme", str(TEACHING_SCHEME),
                                  "--out", str(other), "--quiet"])
    assert r.exit_code == 0, r.output
    mine = out / "settled" / "2024-05"
    for name in ("cases.parquet", "hospitals.csv", "review.csv", "summary.json"):
        assert (mine / name).read_bytes() == (other / name).read_bytes(), name
    assert json.loads((mine / "summary.json").read_text(encoding="utf-8"))["scheme_id"] == "teaching_scheme"


def test_demo_cli_is_deterministic_and_rerunnable(demo, tmp_path):
    args = ["demo", "--out", str(tmp_path / "d"), "--seed", "11", "--records-per-month", str(RPM),
            "--hospitals", "8", "--quiet"]
    for _ in range(2):       # the second run replaces the ledger instead of refusing settled months
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
    assert "2024     employee" in r.output and "teaching scheme (not an official one)" in r.output
    a, b = demo["out"], tmp_path / "d"
    # the report states when each run was settled (<time> elements, the ledger's run times): the
    # two demos' ledgers differ in those only, and so do their reports
    untimed = [re.sub(rb"<time[^>]*>[^<]*</time>", b"<time></time>", (d / "report.html").read_bytes()) for d in (a, b)]
    assert untimed[0] == untimed[1]
    for p in ("settled/2024-07/cases.parquet", "settled/2024/hospitals.csv", "weights.parquet", "policy.toml",
              "findings.csv", "planted.json", "persons.csv", "benefits.parquet", "data/2024-03.parquet", "data/history.parquet",
              "dip/catalog.parquet", "dip/reference_means.csv", "dip/settled/2024-07/cases.parquet",
              "dip/settled/2024/hospitals.csv"):
        assert (a / p).read_bytes() == (b / p).read_bytes(), p


def test_report_is_self_contained_with_every_section(demo):
    page = Path(demo["report"]).read_text(encoding="utf-8")
    assert page.count('<figure class="plot"><svg') == 6
    assert 'data-plots-expected="6"' in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page), "no resource from the network"
    assert "<link" not in page and "<img" not in page
    for title in ("Point value", "Payments vs costs by hospital", "Case-mix index", "most loss-making groups",
                  "Deviation cases", "Annual settlement", ">Monitoring<", ">Patient burden<"):
        assert title in page, title
    # the loss table lists at most 20 groups, worst first
    sec = page[page.index("most loss-making groups"):page.index("Deviation cases")]
    values = [float(v.replace(",", "")) for v in re.findall(r'<td class="n">(-[\d,]+\.\d\d)</td><td class="n">-', sec)]
    assert 0 < len(values) <= 20 and values == sorted(values)


def test_summary_table_lists_months_and_year(demo):
    text = summary_table(demo)
    assert text.count("2024-") >= 24 and "RIV" in text
    assert demo["grouped"] / demo["records"] > 0.97


def test_demo_pays_by_bed_day_and_by_items_in_the_same_pool(demo):
    """The demo policy's wards (神经内科 over 20 days, any stay over 45) and fee-for-service fallback
    price cases; their points are in the month's point total."""
    seen: dict[str, int] = {}
    for s in demo["monthly"]:
        t = pq.read_table(Path(demo["out"]) / "settled" / s.period / "cases.parquet")
        pm = np.array(t["payment_method"].to_pylist())
        los = t["los_days"].to_numpy(zero_copy_only=False)
        dept = np.array(t["dept"].to_pylist())
        pd = pm == "per_diem"
        assert (((dept == "神经内科") & (los > 20)) | (los > 45))[pd].all()
        pts = np.nan_to_num(t["points"].to_numpy(zero_copy_only=False))
        assert pts[pd] == pytest.approx(np.where(dept[pd] == "神经内科", 5.0, 6.0) * los[pd]
                                        * t["coefficient"].to_numpy()[pd])
        reasons = set(np.array(t["pricing_reason"].to_pylist())[pm == "fee_for_service"].tolist())
        assert reasons <= {"FFS_UNGROUPABLE", "FFS_UNWEIGHTED", "FFS_AMBIGUOUS"}
        total = sum(f["total_points"] for f in s.funds.values())
        assert total == pytest.approx(pts.sum(), rel=1e-12)
        for k in set(pm.tolist()):
            seen[k] = seen.get(k, 0) + int((pm == k).sum())
    assert seen["per_diem"] > 0 and seen["fee_for_service"] > 0
    assert "payment methods 2024: " in summary_table(demo)


def test_ambiguous_cases_are_paid_by_items(demo):
    """The demo's synthetic region has surgeries unrelated to the principal diagnosis (synth.toml
    unrelated_surgery_share): status ambiguous, group xQY; the demo policy's [fee_for_service] prices
    them by items (FFS_AMBIGUOUS) unless a per-diem ward takes the stay first; the summary lists them."""
    n_amb, by_reason = 0, {}
    for s in demo["monthly"]:
        t = pq.read_table(Path(demo["out"]) / "settled" / s.period / "cases.parquet").to_pandas()
        amb = t[t["status"] == "ambiguous"]
        n_amb += len(amb)
        assert amb["drg"].str.endswith("QY").all()
        for r, c in amb["pricing_reason"].value_counts().items():
            by_reason[r] = by_reason.get(r, 0) + int(c)
        ffs = amb[amb["pricing_reason"] == "FFS_AMBIGUOUS"]
        assert (ffs["payment_method"] == "fee_for_service").all() and (ffs["points"] > 0).all()
    assert 0.002 < n_amb / sum(s.funds[f]["cases"] + s.funds[f]["unpriced_cases"] for s in demo["monthly"]
                               for f in s.funds) < 0.012
    assert by_reason.get("FFS_AMBIGUOUS", 0) > 0
    assert set(by_reason) <= {"FFS_AMBIGUOUS", "PER_DIEM_WARD", "PER_DIEM_SHORT_STAY", "DUPLICATE_SETTLEMENT_ID",
                              "ZERO_COST", "INVALID_RECORD", "BAD_LOS", "SPECIAL_REVIEW_HOLD", "OUT_OF_PERIOD"}
    line = next(x for x in summary_table(demo).splitlines() if x.startswith("fee for service "))
    assert f"{by_reason['FFS_AMBIGUOUS']} FFS_AMBIGUOUS" in line


def test_special_review_held_and_decided(demo):
    """特例单议: cases held by trigger in every month; the first months decided by a decisions
    file and settled again (revision 2); the year counts them and shows the ones still held."""
    import csv
    out = demo["out"]
    with sqlite3.connect(out / "ledger.db") as conn:
        revs = dict(conn.execute("SELECT period, MAX(revision) FROM runs WHERE kind='monthly' GROUP BY period"))
    assert [revs[f"2024-{m:02d}"] for m in range(1, 13)] == [2, 2, 2] + [1] * 9
    rows = list(csv.DictReader(open(out / "settled" / "2024-01" / "decisions.csv", encoding="utf-8")))
    assert {r["status"] for r in rows} == {"applied", "refused"}
    assert [r["reason"] for r in rows if r["status"] == "refused"] == ["DECISION_UNKNOWN_ID"]
    jan = pq.read_table(out / "settled" / "2024-01" / "cases.parquet")
    assert "held" not in jan["review_status"].to_pylist() and "decided" in jan["review_status"].to_pylist()
    held = sum(json.loads((out / "settled" / f"2024-{m:02d}" / "summary.json").read_text(encoding="utf-8"))
               .get("special_review", {}).get("status:held", 0) for m in range(4, 13))
    year = json.loads((out / "settled" / "2024" / "summary.json").read_text(encoding="utf-8"))
    assert held > 0 and sum(f["held_cases"] for f in year["funds"].values()) == held
    assert any("held for special review" in n for n in year["notes"])
    page = Path(demo["report"]).read_text(encoding="utf-8")
    assert ">Special case review<" in page and f"{held} case(s), cost" in page


def test_report_marks_a_stale_annual_settlement(demo, tmp_path):
    """A month reopened after the annual settlement makes the annual stale: ledger show and the
    report both say so."""
    import shutil
    out = demo["out"]
    led = tmp_path / "ledger.db"
    shutil.copy(out / "ledger.db", led)
    report = tmp_path / "r.html"
    assert CliRunner().invoke(main, ["report", str(led), "-o", str(report)]).exit_code == 0
    assert ">Annual settlement is stale<" not in report.read_text(encoding="utf-8")
    r = CliRunner().invoke(main, ["settle", "2024-05", str(out / "data" / "2024-05.parquet"), "--reopen",
                                  "--policy", str(out / "policy.toml"), "--weights", str(out / "weights.parquet"),
                                  "--ledger", str(led), "--scheme", "teaching", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "stale" in CliRunner().invoke(main, ["ledger", "show", str(led)]).output
    assert CliRunner().invoke(main, ["report", str(led), "-o", str(report)]).exit_code == 0
    page = report.read_text(encoding="utf-8")
    assert ">Annual settlement is stale<" in page and '<td class="t">stale</td>' in page


def test_monitoring_finds_the_planted_anomalies(demo):
    """The demo plants split admissions, overlapping stays, an upcoding and a low-standard
    hospital into 2024; findings.csv is drgdip monitor's output over the year's records."""
    import csv

    import pyarrow as pa

    from drgdip.synth.anomalies import score
    out = demo["out"]
    with (out / "findings.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["status"] for r in rows} <= {"flagged", "not_checked"}
    assert len(rows) == demo["monitoring"].findings.num_rows
    truth = demo["planted"]
    assert json.loads((out / "planted.json").read_text(encoding="utf-8")) == json.loads(json.dumps(truth))
    assert truth["SPLIT_ADMISSION"] and truth["OVERLAPPING_STAY"] and len(truth["UPCODING_HOSPITALS"]) == 1
    ids = set(pc.unique(pq.read_table(out / "benefits.parquet")["id"]).to_pylist())
    planted = {b for _, b in truth["SPLIT_ADMISSION"] + truth["OVERLAPPING_STAY"]}
    assert len(planted - ids) <= demo["planted_next_year"]
    # every record is accounted for: the year's synthetic records + the planted copies (splits,
    # overlaps, late readmissions) = the stays of 2024 + those whose discharge moved into 2025
    from drgdip.synth.region import load_params, month_counts
    made = sum(month_counts(RPM, list(range(1, 13)), load_params())) + len(truth["SPLIT_ADMISSION"]) \
        + len(truth["OVERLAPPING_STAY"]) + len(truth["controls"]["late_readmission"])
    assert len(ids) + demo["planted_next_year"] == made
    findings = pa.Table.from_pylist(rows)
    s = score(findings, truth)
    assert s["OVERLAPPING_STAY"]["recall"] == 1.0 or s["OVERLAPPING_STAY"]["planted"] > len(
        [1 for a, b in truth["OVERLAPPING_STAY"] if b in ids])
    assert s["SPLIT_ADMISSION"]["true_positive"] >= 0.8 * len([1 for a, b in truth["SPLIT_ADMISSION"] if b in ids])
    assert s["UPCODING_CC_SHARE"]["true_positive"] == 1


def test_benefits_beside_the_settlement(demo):
    """benefits.parquet: one row per stay of 2024 (the settled months' records), the four parts
    adding up to the cost; the settled cases take their personal share from it (by id)."""
    out = demo["out"]
    b = pq.read_table(out / "benefits.parquet")
    months = [pq.read_table(out / "data" / f"2024-{m:02d}.parquet") for m in range(1, 13)]
    ids = [i for t in months for i in t["id"].to_pylist()]
    # one stay written twice in the refused month ([demo] refused_month): one benefits row for it
    assert len(ids) == len(set(ids)) + 1 and b.num_rows == len(set(ids))
    assert sorted(b["id"].to_pylist()) == sorted(set(ids))
    ok = b.filter(pc.not_equal(b["status"], "invalid"))
    parts = [ok[c].to_numpy() for c in ("fund_basic_cents", "fund_critical_cents", "assistance_cents", "patient_cents")]
    assert (sum(parts) == ok["total_cost_cents"].to_numpy()).all()
    bad = b.filter(pc.equal(b["status"], "invalid"))
    assert set(bad["reason"].to_pylist()) <= {"BEN_OVERLAPPING_STAY"}   # the planted overlaps, nothing else
    assert bad.num_rows >= 1
    persons = pq.read_table(out / "benefits.parquet")["patient_id"]
    import csv
    with (out / "persons.csv").open(encoding="utf-8") as fh:
        listed = {r["patient_id"]: r for r in csv.DictReader(fh)}
    assert set(persons.to_pylist()) == set(listed)
    assert (np.asarray(ok["assistance_cents"].to_numpy()) > 0).any()
    cases = pq.read_table(out / "settled" / "2024-03" / "cases.parquet")
    share = dict(zip(b["id"].to_pylist(), b["personal_share"].to_pylist()))
    assert cases["personal_share"].to_pylist() == [share[i] for i in cases["id"].to_pylist()]
    held = cases.filter(pc.is_null(cases["personal_share"]))       # the overlaps: no share, not priced
    assert set(held["pricing_reason"].to_pylist()) <= {"BAD_PERSONAL_SHARE"}
    ben = demo["benefits"]
    assert ben["patient_cents"] == int(pc.sum(ok["patient_cents"]).as_py())
    assert "patient's side 2024" in summary_table(demo) and "monitoring 2024:" in summary_table(demo)


def test_drgdip_report_rebuilds_the_demo_report_byte_for_byte(demo, tmp_path):
    out = demo["out"]
    page = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", str(out / "ledger.db"), "--outputs", str(out / "settled"),
                                  "--hospitals", str(out / "hospitals.csv"), "--scheme", "teaching",
                                  "--findings", str(out / "findings.csv"), "--benefits", str(out / "benefits.parquet"),
                                  "--persons", str(out / "persons.csv"), "-o", str(page)])
    assert r.exit_code == 0, r.output
    assert page.read_bytes() == (out / "report.html").read_bytes()


def test_every_command_reads_records_with_discharge_dates(demo, tmp_path):
    """The demo's files carry discharge dates (text YYYY-MM-DD) and no `year` column: every
    command that reads records runs on them (a date path once crashed dip catalog on pyarrow 26)."""
    out = demo["out"]
    month, history = str(out / "data" / "2024-05.parquet"), str(out / "data" / "history.parquet")
    policy, weights = str(out / "policy.toml"), str(out / "weights.parquet")
    runs = {
        "group": ["group", month, "-o", str(tmp_path / "g.parquet"), "--quiet"],
        "check": ["check", month, "--policy", policy, "-o", str(tmp_path / "f.csv"), "--quiet"],
        "weights": ["weights", history, "--policy", policy, "-o", str(tmp_path / "w.parquet"), "--quiet"],
        "dip catalog": ["dip", "catalog", history, "-o", str(tmp_path / "cat.parquet")],
        "simulate": ["simulate", month, "--weights", weights, "--policy", policy, "--ledger", str(out / "ledger.db")],
        "monitor": ["monitor", month, "-o", str(tmp_path / "m.csv")],
        "compare": ["compare", month, "--scheme", "teaching", "--scheme", "teaching", "--policy", policy,
                    "--weights", weights, "--weights", weights],
        "benefits": ["benefits", month, "--persons", str(out / "persons.csv"), "-o", str(tmp_path / "b.parquet")],
    }
    for name, args in runs.items():
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, (name, r.output)
    cat = pq.read_table(tmp_path / "cat.parquet")
    assert json.loads(cat.schema.metadata[b"drgdip.dip"])["year_source"] == "column discharge_date"
    assert "same DRG" in CliRunner().invoke(main, runs["compare"]).output


def test_settle_takes_the_personal_share_from_the_benefits(demo, tmp_path):
    """settle --benefits: each record's personal share is its benefits row's (joined by id); the
    month's fund totals count those shares; a record without a row refuses the run."""
    out = demo["out"]
    month = out / "data" / "2024-03.parquet"
    args = ["settle", "2024-03", str(month), "--policy", str(out / "policy.toml"), "--weights",
            str(out / "weights.parquet"), "--scheme", "teaching", "--quiet", "--new-ledger"]
    r = CliRunner().invoke(main, args + ["--ledger", str(tmp_path / "a.db"), "--benefits", str(out / "benefits.parquet"),
                                         "-o", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    cases = pq.read_table(tmp_path / "a" / "cases.parquet").to_pylist()
    ben = {b["id"]: b["personal_share"] for b in pq.read_table(out / "benefits.parquet").to_pylist()}
    assert cases and all(c["personal_share"] == ben[c["id"]] for c in cases)
    assert all(c["pricing_reason"] == "BAD_PERSONAL_SHARE" for c in cases if ben[c["id"]] is None)
    with sqlite3.connect(tmp_path / "a.db") as conn:
        got = dict(conn.execute("SELECT f.fund, f.personal_share_cents FROM fund_results f"))
    priced = [c for c in cases if c["points"] is not None]
    for fund in got:
        assert got[fund] == sum(round(ben[c["id"]] * 100) for c in priced if c["fund_key"] == fund)
    own = CliRunner().invoke(main, args + ["--ledger", str(tmp_path / "b.db"), "-o", str(tmp_path / "b")])
    assert own.exit_code == 0, own.output
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert dict(conn.execute("SELECT fund, personal_share_cents FROM fund_results")) != got   # the records' own differ
    first = pq.read_table(month, columns=["id"])["id"][0].as_py()
    allb = pq.read_table(out / "benefits.parquet")
    part = allb.filter(pc.not_equal(allb["id"], first))
    pq.write_table(part, tmp_path / "part.parquet")
    r = CliRunner().invoke(main, args + ["--ledger", str(tmp_path / "c.db"), "--benefits", str(tmp_path / "part.parquet")])
    assert r.exit_code == 2 and "have no row" in r.output and not (tmp_path / "c.db").exists()


def test_the_year_settled_again_as_a_dip_region(demo):
    import csv
    from fractions import Fraction

    from drgdip.weights.settlement.settle import exact_decimal, half_up
    dip = demo["out"] / "dip"
    with sqlite3.connect(dip / "ledger.db") as conn:
        rows = conn.execute("SELECT period, kind, inputs FROM runs WHERE current=1 ORDER BY kind, period").fetchall()
    assert [(p, k) for p, k, _ in rows] == [("2024", "annual")] + [(f"2024-{m:02d}", "monthly") for m in range(1, 13)]
    assert all(json.loads(i)["method"] == "dip" for _, k, i in rows if k == "monthly")
    policy = tomllib.loads((dip / "policy.toml").read_text(encoding="utf-8"))
    ratio = policy["dip_settlement"]["reimbursement_ratio"]
    assert 0.5 < ratio["employee"] < 1 and 0.4 < ratio["resident"] < 1
    ref = pq.read_table(dip / "settled" / "2024-07" / "cases.parquet")
    methods = set(ref["payment_method"].to_pylist())   # the DRG policy's per-diem and FFS rules hold here too
    assert "dip" in methods and methods <= {"dip", "per_diem", "fee_for_service", "none"}
    for m in ("2024-03", "2024-07"):
        s = json.loads((dip / "settled" / m / "summary.json").read_text(encoding="utf-8"))
        cases = pq.read_table(dip / "settled" / m / "cases.parquet")
        for f, v in s["funds"].items():      # Σ case amounts = budget ÷ reimbursement ratio, to the cent
            want = half_up(Fraction(round(v["budget"] * 100)) / exact_decimal(ratio[f]))
            amounts = cases.filter(pc.equal(cases["fund_key"], f))["amount"].drop_null().to_numpy()
            assert round(float(np.round(amounts * 100).sum())) == want == round(v["payment"] * 100)
    with open(dip / "reference_means.csv", encoding="utf-8") as fh:
        means = {(r["group_key"], r["level"]): float(r["mean_cost"]) for r in csv.DictReader(fh)}
    assert means
    levels = policy["coefficients"]["hospital_level"]
    priced = ref.filter(pc.equal(ref["payment_method"], "dip")).to_pylist()
    hits = [c for c in priced if (c["dip_group"], str(levels.get(c["hospital_id"]))) in means]
    assert hits and all(c["group_mean_cost"] == pytest.approx(means[(c["dip_group"], str(levels[c["hospital_id"]]))]
                                                              * c["dip_coefficient"]) for c in hits)
    assert (dip / "report.html").stat().st_size > 0


def test_the_demo_refuses_a_duplicate_and_a_zero_cost_record(demo):
    """[demo] refused_month: a record written twice and one of cost 0 are listed, never paid, in the
    DRG and the DIP region alike."""
    for folder in (demo["out"], demo["out"] / "dip"):
        t = pq.read_table(folder / "settled" / "2024-12" / "cases.parquet")
        reason = t["pricing_reason"].to_pylist()
        assert reason.count("DUPLICATE_SETTLEMENT_ID") == 2 and reason.count("ZERO_COST") == 1
        bad = t.filter(pc.is_in(t["pricing_reason"], pa.array(["DUPLICATE_SETTLEMENT_ID", "ZERO_COST"])))
        assert bad["points"].null_count == 3 and bad["amount"].null_count == 3
        review = (folder / "settled" / "2024-12" / "review.csv").read_text(encoding="utf-8")
        assert review.count("DUPLICATE_SETTLEMENT_ID") == 2 and "ZERO_COST" in review


def test_readmissions_are_paired_across_months(demo):
    """docs/settlement.md "Readmissions across months": the demo's policy halves the earlier stay
    (halve_earlier, share 0.5); a readmission whose earlier stay was settled in the month before is
    flagged now and the earlier stay's cut is a row of its own (case type adjustment)."""
    out = demo["out"]
    months = {f"2024-{m:02d}": pq.read_table(out / "settled" / f"2024-{m:02d}" / "cases.parquet").to_pandas()
              for m in range(1, 13)}
    cross = recovered = 0
    for period, t in months.items():
        stays = t[t["case_type"] != "adjustment"]
        earlier = stays[stays["readmission_of"].notna() & ~stays["readmission_of"].isin(set(stays["id"]))]
        cross += len(earlier)
        for _, r in t[t["case_type"] == "adjustment"].iterrows():
            recovered += 1
            later = stays[stays["id"] == r["readmission_of"]].iloc[0]
            assert later["readmission_of"] == r["id"] and later["hospital_id"] == r["hospital_id"]
            before = [m for p, m in months.items() if p < period and (m["id"] == r["id"]).any()]
            first = before[-1][before[-1]["id"] == r["id"]].iloc[0]
            assert r["points"] == pytest.approx(-first["points"] * 0.5)
            assert r["amount"] < 0 and pd_isnull(r["personal_share"])
    assert cross > 0 and 0 < recovered <= cross


def pd_isnull(x) -> bool:
    return x is None or x != x
def test_the_dip_region_decides_held_cases_and_pairs_readmissions_on_dip_groups(demo):
    """The DIP region keeps the DRG policy's [special_review] quota and its [readmission] (key
    "group"); the first decided_months months are settled again with the office's decisions
    (revision 2), and the report shows the DIP review rows (docs/settlement.md "DIP settlement" 6-7)."""
    import csv
    dip = demo["out"] / "dip"
    policy = tomllib.loads((dip / "policy.toml").read_text(encoding="utf-8"))
    assert policy["readmission"]["key"] == "group" and policy["readmission"]["days"] > 0
    assert policy["special_review"]["hospital_quota_share"] < 1
    with sqlite3.connect(dip / "ledger.db") as conn:
        revs = dict(conn.execute("SELECT period, MAX(revision) FROM runs WHERE kind='monthly' GROUP BY period"))
    for m in range(1, 13):
        period = f"2024-{m:02d}"
        decided = (dip / "settled" / period / "decisions.csv").exists()
        assert decided == (m <= 3) == (revs[period] == 2), period
        cases = pq.read_table(dip / "settled" / period / "cases.parquet").to_pylist()
        status = {c["id"]: c["review_status"] for c in cases}
        if decided:
            rows = list(csv.DictReader(open(dip / "settled" / period / "decisions.csv", encoding="utf-8")))
            applied = [r["id"] for r in rows if r["status"] == "applied"]
            assert applied and all(status[i] == "decided" for i in applied)
            assert "held" not in status.values()         # every held case of the month was decided
        by_id = {c["id"]: c for c in cases}
        for c in cases:                                 # each pair: same patient, hospital and DIP group
            if c["readmission_of"] is not None:
                e = by_id[c["readmission_of"]]
                assert (e["patient_id"], e["hospital_id"], e["dip_group"]) == \
                    (c["patient_id"], c["hospital_id"], c["dip_group"])
    reasons = {}
    for m in range(1, 13):
        s = json.loads((dip / "settled" / f"2024-{m:02d}" / "summary.json").read_text(encoding="utf-8"))
        for k, v in s["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    assert reasons.get("READMISSION_WITHIN_DAYS", 0) > 0 and reasons.get("SPECIAL_REVIEW_HOLD", 0) > 0
    assert sum(reasons.get(k, 0) for k in ("SPECIAL_REVIEW_DECIDED_NORMAL", "SPECIAL_REVIEW_DECIDED_ACTUAL",
                                           "SPECIAL_REVIEW_DECIDED_POINTS")) > 0
    html = (dip / "report.html").read_text(encoding="utf-8")
    assert "Special case review" in html and "decided" in html
