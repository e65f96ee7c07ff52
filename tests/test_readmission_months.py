"""Readmissions across months: the worked examples of docs/settlement.md "Readmissions across
months" to the cent (one pair over the October/November boundary, each payment), the ledger's
kept stays (bound, reopen, a failed run), and ``combine`` within a month."""
import sqlite3
from contextlib import closing

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from drgdip.weights.settlement import ledger as ledger_mod
from drgdip.weights.settlement import readmission as readm_mod
from drgdip.weights.settlement import runs
from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import PolicyError, parse_policy

WEIGHTS = pa.table({"drg": ["ES21", "ES23", "FM19"], "weight": [1.0, 1.5, 2.5],
                    "mean_cost": [10000.0, 15000.0, 25000.0]})


def _month(ids, patients, drgs, admitted, discharged, costs):
    n = len(ids)
    return pa.table({"id": ids, "hospital_id": ["H1"] * n, "patient_id": patients, "fund": ["employee"] * n,
                     "admission_date": admitted, "discharge_date": discharged, "drg": drgs,
                     "los_days": [5.0] * n, "total_cost": [float(c) for c in costs],
                     "personal_share": [c / 10 for c in costs]})


OCTOBER = _month(["A1", "A2"], ["P1", "P2"], ["ES21", "FM19"], ["2026-10-20", "2026-10-03"],
                 ["2026-10-25", "2026-10-08"], [10000, 25000])
NOVEMBER = _month(["B1", "B2"], ["P1", "P3"], ["ES23", "FM19"], ["2026-11-05", "2026-11-15"],
                  ["2026-11-09", "2026-11-20"], [15000, 25000])


def _policy(tmp_path, payment, across=True, name="policy.toml"):
    lines = ['[budget.employee]', '"2026-10" = 10000.00', '"2026-11" = 10000.00', '[coefficients]',
             'default = 1.0', '[readmission]', 'days = 15', 'key = "adrg"', f'payment = "{payment}"', 'share = 0.5',
             f'across_periods = {"true" if across else "false"}']
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _settle(tmp_path, period, table, policy, reopen=False, batch_size=1 << 16, name=None):
    src = tmp_path / f"{name or period}.parquet"
    pq.write_table(table, src)
    out = tmp_path / "out" / (name or period)
    runs.settle_month(period, src, policy_path=policy, weights_path=tmp_path / "weights.parquet",
                      ledger_path=tmp_path / "ledger.db", out=out, quiet=True,
                      new_ledger=not (tmp_path / "ledger.db").exists(), now="2026-12-01T00:00:00", reopen=reopen,
                      batch_size=batch_size)
    return pq.read_table(out / "cases.parquet"), (out / "hospitals.csv").read_text(encoding="utf-8")


def _two_months(tmp_path, payment, **kw):
    pq.write_table(WEIGHTS, tmp_path / "weights.parquet")
    policy = _policy(tmp_path, payment, **kw)
    oct_cases, _ = _settle(tmp_path, "2026-10", OCTOBER, policy)
    nov_cases, nov_hosp = _settle(tmp_path, "2026-11", NOVEMBER, policy)
    return oct_cases, nov_cases, nov_hosp


def _col(t, c):
    return t[c].to_pylist()


def test_october_is_settled_as_usual_and_keeps_its_tail(tmp_path):
    oct_cases, _, _ = _two_months(tmp_path, "flag_only")
    # Σ points 350, point value (10,000 + 3,500) / 350; cents 385,714.29 / 964,285.71: the cent to A2
    assert _col(oct_cases, "points") == [100.0, 250.0]
    assert _col(oct_cases, "amount") == [3857.14, 9642.86]
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
        kept = conn.execute("SELECT r.period, t.settlement_id, t.discharge_day, t.points, t.cut FROM readmission_tail"
                            " t JOIN runs r USING (run_id) ORDER BY r.period, t.seq").fetchall()
    # the tail of October: discharged on or after 11-01 − 15 days = 10-17: A1 (10-25), not A2 (10-08)
    assert readm_mod.tail_from("2026-10", 15) == (np.datetime64("2026-10-17") - np.datetime64("1970-01-01")).astype(int)
    # and of November: on or after 12-01 − 15 = 11-16: B2 (11-20), not B1 (11-09)
    assert [k[:2] for k in kept] == [("2026-10", "A1"), ("2026-11", "B2")]
    assert kept[0][3:] == (100.0, 0)


def test_flag_only_across_months(tmp_path):
    _, nov, hosp = _two_months(tmp_path, "flag_only")
    assert _col(nov, "readmission_of") == ["A1", None]
    assert _col(nov, "pricing_reason") == ["READMISSION_WITHIN_DAYS", "PRICED_NORMAL"]
    assert _col(nov, "points") == [150.0, 250.0]
    assert _col(nov, "amount") == [5250.00, 8750.00]         # point value (10,000 + 4,000) / 400 = 35


def test_second_unpaid_across_months(tmp_path):
    _, nov, _ = _two_months(tmp_path, "second_unpaid")
    assert _col(nov, "case_type") == ["unpriced", "normal"]
    assert _col(nov, "pricing_reason") == ["READMISSION_UNPAID", "PRICED_NORMAL"]
    assert _col(nov, "points") == [None, 250.0]
    assert _col(nov, "amount") == [None, 12500.00]           # (10,000 + 2,500) / 250 = 50


def test_halve_earlier_across_months_recovers_the_cut_in_november(tmp_path):
    oct_cases, nov, hosp = _two_months(tmp_path, "halve_earlier")
    assert _col(oct_cases, "points") == [100.0, 250.0]       # October as settled, unchanged
    assert _col(nov, "id") == ["B1", "B2", "A1"]
    assert _col(nov, "case_type") == ["readmission", "normal", "adjustment"]
    assert _col(nov, "pricing_reason") == ["READMISSION_WITHIN_DAYS", "PRICED_NORMAL", "READMISSION_EARLIER_RECOVERED"]
    assert _col(nov, "readmission_of") == ["A1", None, "B1"]
    assert _col(nov, "points") == [150.0, 250.0, -50.0]
    # point value (10,000 + 4,000) / (150 + 250 − 50) = 40
    assert _col(nov, "amount") == [6000.00, 10000.00, -2000.00]
    assert _col(nov, "fund_amount") == [4500.00, 7500.00, -2000.00]
    # H1: 2 cases (the recovery row is no case), points 350, payment 14,000, amount due 10,000
    row = pcsv.read_csv(tmp_path / "out" / "2026-11" / "hospitals.csv").to_pylist()[0]
    assert (row["cases"], row["points"], row["payment"], row["amount_due"]) == (2, 350.0, 14000.0, 10000.0)
    review = (tmp_path / "out" / "2026-11" / "review.csv").read_text(encoding="utf-8")
    assert "READMISSION_EARLIER_RECOVERED" in review and '"A1"' in review and '"B1"' in review


def test_combine_across_months(tmp_path):
    _, nov, _ = _two_months(tmp_path, "combine")
    assert _col(nov, "pricing_reason") == ["READMISSION_COMBINED", "PRICED_NORMAL"]
    assert _col(nov, "points") == [50.0, 250.0]               # max(0, 150 − A1's 100)
    # point value 14,000 / 300; cents 233,333.33 / 1,166,666.67: the cent to B2
    assert _col(nov, "amount") == [2333.33, 11666.67]


def test_across_periods_off_pairs_within_the_file_only(tmp_path):
    _, nov, _ = _two_months(tmp_path, "halve_earlier", across=False)
    assert _col(nov, "readmission_of") == [None, None] and nov.num_rows == 2
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM readmission_tail").fetchone() == (0,)


def test_combine_within_a_month_and_over_batches():
    pol = parse_policy({"budget": {"employee": {"2026-10": 1000.0}}, "coefficients": {"default": 1.0},
                        "readmission": {"days": 15, "payment": "combine"}})
    t = _month(["1", "2", "3", "4"], ["P1", "P1", "P2", "P2"], ["ES21", "ES23", "ES23", "ES21"],
               ["2026-10-01", "2026-10-10", "2026-10-01", "2026-10-10"],
               ["2026-10-05", "2026-10-14", "2026-10-05", "2026-10-14"], [10000, 15000, 15000, 10000])
    priced = price_cases(t, WEIGHTS, pol, period="2026-10")
    # P1: ES21 (100) then ES23 (150): the pair paid 150, the later 50; P2: ES23 (150) then ES21 (100): the later 0
    assert _col(priced, "points") == [100.0, 50.0, 150.0, 0.0]
    assert _col(priced, "pricing_reason") == ["PRICED_NORMAL", "READMISSION_COMBINED", "PRICED_NORMAL",
                                              "READMISSION_COMBINED"]


def test_combine_pair_split_over_batches_is_the_same(tmp_path):
    pq.write_table(WEIGHTS, tmp_path / "weights.parquet")
    policy = _policy(tmp_path, "combine")
    both = pa.concat_tables([OCTOBER.slice(1), _month(["A3"], ["P1"], ["ES23"], ["2026-10-01"], ["2026-10-05"],
                                                      [15000]), OCTOBER.slice(0, 1)])
    one, _ = _settle(tmp_path, "2026-10", both, policy, batch_size=1, name="one")
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
        # every table keyed by a run (the run ids are given again from 1)
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if t != "runs" and any(c[1] == "run_id" for c in conn.execute(f"PRAGMA table_info({t})"))]
        assert {"readmission_tail", "hospital_results", "fund_results"} <= set(tables)
        for t in tables:
            conn.execute(f"DELETE FROM {t}")
        conn.execute("DELETE FROM runs")
        conn.commit()
    whole, _ = _settle(tmp_path, "2026-10", both, policy, name="whole")
    # A1 (ES21, 100) is a readmission of A3 (ES23, 150): paid max(0, 100 − 150) = 0
    assert _col(one, "points") == _col(whole, "points") == [250.0, 150.0, 0.0]
    assert (tmp_path / "out" / "one" / "cases.parquet").read_bytes() == \
        (tmp_path / "out" / "whole" / "cases.parquet").read_bytes()


def test_reopening_october_replaces_its_tail_and_november_stands(tmp_path):
    _, nov, _ = _two_months(tmp_path, "halve_earlier")
    policy = tmp_path / "policy.toml"
    # October reopened without A1's stay: its tail now holds nothing of P1
    _settle(tmp_path, "2026-10", OCTOBER.slice(1), policy, reopen=True, name="2026-10b")
    with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:
        kept = conn.execute("SELECT r.period, t.settlement_id FROM readmission_tail t JOIN runs r USING (run_id)"
                            " ORDER BY r.period, t.seq").fetchall()
    assert kept == [("2026-11", "B2")]
    # November as settled stands (its recovery row is in the ledger's November figures) until reopened
    again, _ = _settle(tmp_path, "2026-11", NOVEMBER, policy, reopen=True, name="2026-11b")
    assert _col(again, "readmission_of") == [None, None] and again.num_rows == 2
    assert _col(again, "amount") == [5250.00, 8750.00]


def test_reruns_are_byte_identical(tmp_path):
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        _two_months(d, "halve_earlier")
    for f in ("cases.parquet", "review.csv", "hospitals.csv", "summary.json"):
        assert (tmp_path / "a" / "out" / "2026-11" / f).read_bytes() == (tmp_path / "b" / "out" / "2026-11" / f).read_bytes()


def test_a_failed_run_leaves_a_ledger_of_before_as_it_was(tmp_path, monkeypatch):
    pq.write_table(WEIGHTS, tmp_path / "weights.parquet")
    policy = _policy(tmp_path, "halve_earlier")
    _settle(tmp_path, "2026-10", OCTOBER, policy)
    db = tmp_path / "ledger.db"
    with closing(sqlite3.connect(db)) as conn:      # a ledger of version 2: no readmission_tail
        conn.execute("DROP TABLE readmission_tail")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
        conn.commit()
    before = db.read_bytes()
    # a stay without a patient: the insert fails inside the run's transaction, after the run's rows
    monkeypatch.setattr(readm_mod.StayTail, "table", _null_patients)
    with pytest.raises(sqlite3.IntegrityError):
        _settle(tmp_path, "2026-11", NOVEMBER, policy)
    assert db.read_bytes() == before
    monkeypatch.undo()
    _settle(tmp_path, "2026-11", NOVEMBER, policy)
    with closing(ledger_mod.connect(db, create=False)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "3"
        assert conn.execute("SELECT settlement_id FROM readmission_tail").fetchall() == [("B2",)]


_TABLE = readm_mod.StayTail.table


def _null_patients(self):
    t = _TABLE(self)
    return t.set_column(1, "patient_id", pa.nulls(t.num_rows, pa.string()))


BUDGET = {"budget": {"employee": {"2026-10": 1000.0}}}


def test_combine_is_a_payment_and_across_periods_a_switch():
    assert parse_policy({**BUDGET, "readmission": {"days": 15, "payment": "combine"}}).readmission.payment == "combine"
    assert parse_policy({**BUDGET, "readmission": {"days": 15}}).readmission.across_periods is True
    with pytest.raises(PolicyError, match="readmission.across_periods"):
        parse_policy({**BUDGET, "readmission": {"days": 15, "across_periods": "yes"}})


def test_the_earlier_month_pairs_by_the_same_rule_as_one_file():
    """The union of October's tail and November's file pairs as one file would (find_readmissions)."""
    pol = parse_policy({**BUDGET, "readmission": {"days": 15, "payment": "flag_only"}})
    idx = readm_mod.ReadmissionIndex(pol, tail_from=readm_mod.tail_from("2026-11", 15))
    idx.add(NOVEMBER)
    def day(s):
        return int((np.datetime64(s) - np.datetime64("1970-01-01")).astype(int))
    earlier = pa.table({"period": ["2026-10"], "settlement_id": ["A1"], "patient_id": ["P1"], "hospital_id": ["H1"],
                        "readmission_key": ["ES2"], "admission_day": pa.array([day("2026-10-20")], pa.int32()),
                        "discharge_day": pa.array([day("2026-10-25")], pa.int32()), "fund_key": ["employee"],
                        "points": [100.0], "cut": [False]})
    found = idx.finish(earlier)
    assert found.pairs == 1 and found.across == 1 and list(found.later) == [0]
    flags = found.batch(0, 2)
    assert _col(flags, "readmission_of") == ["A1", None] and _col(flags, "earlier_period") == ["2026-10", None]
    assert _col(flags, "has_readmission") == [False, False]
    assert flags["earlier_points"].to_pylist()[0] == 100.0 and np.isnan(flags["earlier_points"].to_pylist()[1])
    # a stay of B1's admission 11 days after A1's discharge; with days = 10 it is not paired
    pol10 = parse_policy({**BUDGET, "readmission": {"days": 10, "payment": "flag_only"}})
    idx = readm_mod.ReadmissionIndex(pol10)
    idx.add(NOVEMBER)
    assert idx.finish(earlier).pairs == 0
