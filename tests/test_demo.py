"""drgdip demo: a whole settled year from nothing but the project, deterministic, with its
outputs written exactly as `drgdip settle --out` writes them."""
from __future__ import annotations

import json
import re
import sqlite3
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from drgdip.cli import main
from drgdip.grouper.api import TEACHING_SCHEME
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
    for period in [f"2024-{m:02d}" for m in range(1, 13)]:
        names = sorted(p.name for p in (out / "settled" / period).iterdir())
        assert names == ["cases.parquet", "hospitals.csv", "review.csv", "summary.json"]
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
    for p in ("settled/2024-07/cases.parquet", "settled/2024/hospitals.csv", "weights.parquet", "policy.toml"):
        assert (a / p).read_bytes() == (b / p).read_bytes(), p


def test_report_is_self_contained_with_every_section(demo):
    page = Path(demo["report"]).read_text(encoding="utf-8")
    assert page.count('<figure class="plot"><svg') == 6
    assert 'data-plots-expected="6"' in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page), "no resource from the network"
    assert "<link" not in page and "<img" not in page
    for title in ("Point value", "Payments vs costs by hospital", "Case-mix index", "most loss-making groups",
                  "Deviation cases", "Annual settlement"):
        assert title in page, title
    # the loss table lists at most 20 groups, worst first
    sec = page[page.index("most loss-making groups"):page.index("Deviation cases")]
    values = [float(v.replace(",", "")) for v in re.findall(r'<td class="n">(-[\d,]+\.\d\d)</td><td class="n">-', sec)]
    assert 0 < len(values) <= 20 and values == sorted(values)


def test_summary_table_lists_months_and_year(demo):
    text = summary_table(demo)
    assert text.count("2024-") >= 24 and "RIV" in text
    assert demo["grouped"] / demo["records"] > 0.97


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
