"""Ledger: runs recorded with their inputs, refusal of a settled period, revisions, all-or-nothing writes."""
import sqlite3
from contextlib import closing

import pyarrow as pa
import pytest

from drgdip.weights.settlement import ledger
from drgdip.weights.settlement.policy import parse_policy
from tests.test_settlement import DOC_POLICY, doc_run

POLICY = parse_policy(DOC_POLICY, source="[budget.employee]\n\"2026-10\" = 20000.0\n")


def counts(path):
    with closing(sqlite3.connect(path)) as c:
        return tuple(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                     for t in ("runs", "fund_results", "hospital_results"))


def test_run_recorded_with_inputs_point_values_and_hospitals(tmp_path):
    db = tmp_path / "region.db"
    with closing(ledger.connect(db)) as conn:
        rev = ledger.record_run(conn, doc_run(), policy=POLICY, inputs={"records": "ab" * 32}, scheme_id="s:1",
                                now="2026-11-01T00:00:00+00:00")
        assert rev == 1
        (run,) = ledger.runs(conn)
        assert (run["period"], run["kind"], run["revision"], run["current"]) == ("2026-10", "monthly", 1, True)
        assert run["inputs"] == {"records": "ab" * 32} and run["policy_sha256"] == POLICY.sha256
        assert run["funds"][0]["point_value"] == pytest.approx(28000 / 645)
        assert run["amount_due"] == 20000.00 and run["paid"] == 19000.00
        rows = conn.execute("SELECT hospital_id, amount_due_cents, withheld_cents FROM hospital_results "
                            "ORDER BY hospital_id").fetchall()
        assert rows == [("H1", 952558, 47628), ("H2", 1047442, 52372)]
        assert conn.execute("SELECT policy_text FROM runs").fetchone()[0] == POLICY.source
    text = ledger.show(db)
    assert "2026-10" in text and "43.410853" in text and "input records: " + "ab" * 32 in text


def test_settled_period_refused_unless_reopened_then_new_revision(tmp_path):
    db = tmp_path / "region.db"
    with closing(ledger.connect(db)) as conn:
        ledger.record_run(conn, doc_run(), policy=POLICY, inputs={}, scheme_id=None)
        with pytest.raises(ledger.LedgerError, match="already recorded .*revision 1.*--reopen"):
            ledger.record_run(conn, doc_run(), policy=POLICY, inputs={}, scheme_id=None)
        assert ledger.record_run(conn, doc_run(), policy=POLICY, inputs={}, scheme_id=None, reopen=True) == 2
        states = conn.execute("SELECT revision, current FROM runs ORDER BY revision").fetchall()
        assert states == [(1, 0), (2, 1)]
        table, months = ledger.monthly_rows(conn, "2026")
        assert months == ["2026-10"] and table.num_rows == 2          # only the current revision
        assert table["paid_cents"].to_pylist() == [904930, 995070]


def test_a_run_failing_half_way_leaves_the_ledger_as_it_was(tmp_path):
    db = tmp_path / "region.db"
    with closing(ledger.connect(db)) as conn:
        ledger.record_run(conn, doc_run(), policy=POLICY, inputs={}, scheme_id=None)
    before = counts(db)
    broken = doc_run()
    # the same hospital twice: the second hospital row violates the primary key after the run row is written
    broken.hospitals = pa.concat_tables([broken.hospitals, broken.hospitals.slice(0, 1)])
    with closing(ledger.connect(db)) as conn:
        with pytest.raises(sqlite3.IntegrityError):
            ledger.record_run(conn, broken, policy=POLICY, inputs={}, scheme_id=None, reopen=True)
        assert conn.execute("SELECT revision, current FROM runs").fetchall() == [(1, 1)]
    assert counts(db) == before


def test_annual_without_months_and_missing_ledger_are_refused(tmp_path):
    with closing(ledger.connect(tmp_path / "x.db")) as conn:
        with pytest.raises(ledger.LedgerError, match="no monthly settlement of 2026"):
            ledger.monthly_rows(conn, "2026")
    with pytest.raises(ledger.LedgerError, match="no such ledger"):
        ledger.connect(tmp_path / "absent.db", create=False)
    bad = tmp_path / "bad.db"
    bad.write_text("not a database at all" * 100)
    with pytest.raises(ledger.LedgerError, match="not a drgdip ledger"):
        ledger.connect(bad)
