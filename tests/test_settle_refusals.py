"""Settlement runs that must be refused (exit 2, one line, nothing recorded), and records that
must not be priced (status and reason per record, a summary per file). Issue 10."""
import sqlite3
from contextlib import closing

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from drgdip.weights.settlement import ledger
from tests.test_settle_cli import POLICY, records, run


@pytest.fixture
def t(tmp_path):
    pq.write_table(records(600, None, 1, years=[2024, 2025]), tmp_path / "history.parquet")
    pq.write_table(records(300, "2026-10", 2), tmp_path / "oct.parquet")
    pq.write_table(records(300, "2026-11", 3), tmp_path / "nov.parquet")
    r = run("weights", tmp_path / "history.parquet", "--policy", POLICY, "-o", tmp_path / "w.parquet", "--quiet")
    assert r.exit_code == 0, r.output
    return tmp_path


def settle(t, period, path, *extra, db="r.db"):
    return run("settle", period, path, "--weights", t / "w.parquet", "--policy", POLICY, "--ledger", t / db,
               "--quiet", *extra)


def n_runs(db):
    if not db.exists():
        return None
    with closing(sqlite3.connect(db)) as c:
        return c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def refused(r, *words):
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_incomplete_year_refused_unless_partial_year(t):
    assert settle(t, "2026-10", t / "oct.parquet").exit_code == 0
    final = ["settle", "2026", "--final", "--policy", POLICY, "--ledger", t / "r.db"]
    r = run(*final)
    refused(r, "11 month(s) not settled", "2026-01", "2026-12", "--partial-year")
    assert n_runs(t / "r.db") == 1
    r = run(*final, "--partial-year")
    assert r.exit_code == 0, r.output
    assert "only 1 month(s) settled in 2026: 2026-10" in r.stdout
    assert n_runs(t / "r.db") == 2


def test_month_settled_after_the_annual_makes_it_stale(t):
    assert settle(t, "2026-10", t / "oct.parquet").exit_code == 0
    assert run("settle", "2026", "--final", "--partial-year", "--policy", POLICY, "--ledger", t / "r.db").exit_code == 0
    with closing(ledger.connect(t / "r.db", create=False)) as conn:
        annual = [r for r in ledger.runs(conn) if r["kind"] == "annual"][0]
        assert annual["stale"] is False and annual["state"] == "current"
    assert settle(t, "2026-11", t / "nov.parquet").exit_code == 0          # a month after the final
    with closing(ledger.connect(t / "r.db", create=False)) as conn:
        annual = [r for r in ledger.runs(conn) if r["kind"] == "annual"][0]
        assert annual["stale"] is True and annual["state"] == "stale"
    show = run("ledger", "show", t / "r.db").stdout
    assert show.count(" stale ") == 1 and "stale: a month of 2026 was settled after" in show
    assert show.count(" current ") == 2                                     # the two months
    # reopening a month also makes a (fresh) annual stale; re-settling the annual clears it
    assert run("settle", "2026", "--final", "--partial-year", "--reopen", "--policy", POLICY,
               "--ledger", t / "r.db").exit_code == 0
    with closing(ledger.connect(t / "r.db", create=False)) as conn:
        assert not any(r["stale"] for r in ledger.runs(conn))
    assert settle(t, "2026-10", t / "oct.parquet", "--reopen").exit_code == 0
    with closing(ledger.connect(t / "r.db", create=False)) as conn:
        assert [r["state"] for r in ledger.runs(conn) if r["kind"] == "annual"] == ["superseded", "stale"]
    # only the current annual run (run 4) is stale, not its superseded revision (run 2)
    with closing(ledger.connect(t / "r.db", create=False)) as conn:
        assert ledger.stale_annual_runs(conn) == {4}


@pytest.mark.parametrize("period", ["2026-13", "abcdefg", "../../a", "2026-1", "2026-00"])
def test_periods_that_are_not_months_are_refused(t, period):
    r = settle(t, period, t / "oct.parquet")
    refused(r, repr(period), "YYYY-MM")
    assert not (t / "r.db").exists()


@pytest.mark.parametrize("year", ["20x6", "../2026", "2026-"])
def test_annual_period_must_be_a_year(t, year):
    assert settle(t, "2026-10", t / "oct.parquet").exit_code == 0
    r = run("settle", year, "--final", "--partial-year", "--policy", POLICY, "--ledger", t / "r.db")
    refused(r, "YYYY")
    assert n_runs(t / "r.db") == 1


def test_period_without_budget_refused(t):
    pq.write_table(records(50, "2027-01", 5), t / "jan.parquet")
    r = settle(t, "2027-01", t / "jan.parquet")
    refused(r, "2027-01", "no budget")
    assert not (t / "r.db").exists()


def test_file_of_another_month_refused(t):
    r = settle(t, "2026-11", t / "oct.parquet")
    refused(r, "none of its 300 records is discharged in 2026-11")
    assert not (t / "r.db").exists()


def test_file_without_discharge_dates_or_priceable_records_refused(t):
    pq.write_table(records(50, "2026-10", 6).drop_columns(["dscg_time"]), t / "nodate.parquet")
    refused(settle(t, "2026-10", t / "nodate.parquet"), "no discharge_date column")
    pq.write_table(records(50, "2026-10", 6).drop_columns(["个人负担"]), t / "noshare.parquet")
    refused(settle(t, "2026-10", t / "noshare.parquet"), "no personal_share column")
    bad = records(50, "2026-10", 7).drop_columns(["status"]).append_column("status", pa.array(["invalid"] * 50))
    pq.write_table(bad, t / "invalid.parquet")
    refused(settle(t, "2026-10", t / "invalid.parquet"), "none of its 50 records can be priced", "50 INVALID_RECORD")
    assert not (t / "r.db").exists()


def test_header_only_file_refused(t):
    (t / "empty.csv").write_text("setl_id,fixmedins_code,insutype,dscg_time,drg,medfee_sumamt\n")
    refused(settle(t, "2026-10", t / "empty.csv"), "has no records")
    pq.write_table(records(5, "2026-10", 8).slice(0, 0), t / "empty.parquet")
    refused(settle(t, "2026-10", t / "empty.parquet"), "has no records")
    assert not (t / "r.db").exists()


def test_bad_records_are_not_priced_and_summarised(t):
    base = records(300, "2026-10", 2)
    dup = base.slice(0, 20)                                   # 20 rows sent twice
    tab = pa.concat_tables([base, dup])
    los = tab["los_days"].to_numpy().copy()
    los[100], los[101], los[102] = -3.0, 1e9, 0.0
    dates = tab["dscg_time"].to_pylist()
    dates[103] = "2026-02-30"
    dates[104] = "2026-10-32"
    tab = tab.set_column(tab.schema.get_field_index("los_days"), "los_days", pa.array(los))
    tab = tab.set_column(tab.schema.get_field_index("dscg_time"), "dscg_time", pa.array(dates))
    pq.write_table(tab, t / "bad.parquet")
    r = settle(t, "2026-10", t / "bad.parquet", "--out", t / "out")
    assert r.exit_code == 0, r.output
    cases = pq.read_table(t / "out" / "cases.parquet")
    assert cases.num_rows == 320                               # nothing dropped
    reason = np.array(cases["pricing_reason"].to_pylist())
    pts = cases["points"].to_pylist()
    dup_rows = list(range(20)) + list(range(300, 320))
    assert set(reason[dup_rows]) == {"DUPLICATE_SETTLEMENT_ID"}
    assert list(reason[[100, 101, 102]]) == ["BAD_LOS"] * 3
    assert list(reason[[103, 104]]) == ["BAD_DISCHARGE_DATE"] * 2
    for i in dup_rows + [100, 101, 102, 103, 104]:
        assert pts[i] is None and cases["case_type"][i].as_py() == "unpriced"
    assert sum(p is not None for p in pts) == 320 - 45
    assert "45 of 320 record(s) not priced, listed for review: 40 DUPLICATE_SETTLEMENT_ID, 3 BAD_LOS, " \
           "2 BAD_DISCHARGE_DATE" in r.stdout
    review = pcsv.read_csv(t / "out" / "review.csv")
    assert review.num_rows == 45


def test_ledger_folder_must_exist_or_new_ledger(t):
    where = t / "nonexistent" / "dir" / "l.db"
    r = settle(t, "2026-10", t / "oct.parquet", db=where)
    refused(r, "does not exist", "--new-ledger")
    assert not (t / "nonexistent").exists()
    r = settle(t, "2026-10", t / "oct.parquet", "--new-ledger", db=where)
    assert r.exit_code == 0, r.output
    assert n_runs(where) == 1
    r = settle(t, "2026-11", t / "nov.parquet", "--new-ledger", db=where)
    refused(r, "already exists", "drop --new-ledger")
    assert n_runs(where) == 1
    assert settle(t, "2026-11", t / "nov.parquet", db=where).exit_code == 0
    assert n_runs(where) == 2
