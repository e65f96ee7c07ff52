"""费用消耗指数 and 时间消耗指数 group by group (issue 12): the months' totals per hospital and group
kept in the ledger, the indices of the annual settlement from them, and docs/settlement.md §9's
group-by-group example to the cent."""
import sqlite3
import tomllib
from contextlib import closing
from fractions import Fraction

import pyarrow as pa
import pytest

from drgdip.arrowio import InputError
from drgdip.weights.settlement import ledger as ledger_mod
from drgdip.weights.settlement.ledger import LedgerError
from drgdip.weights.settlement.policy import load_policy, parse_policy
from drgdip.weights.settlement.runs import settle_annual
from drgdip.weights.settlement.settle import (
    MonthTotals,
    group_indices,
    hospitals_csv_table,
    settle_year,
)

# settlement.md §9, group by group: hospital → group → (cases, cost yuan, Σ length of stay, points per case)
DOC = {"H1": {"A": (10, 21_000, 100, 40.0), "B": (10, 9_000, 50, 20.0)},
       "H2": {"B": (10, 11_000, 70, 10.0), "C": (20, 24_000, 120, 15.0)},
       "H3": {"A": (10, 14_000, 80, 8.0), "C": (20, 16_000, 80, 6.0)}}
WEIGHT = {"A": 2.0, "B": 1.0, "C": 0.5}
SHARE = {"H1": 450.0, "H2": 200.0, "H3": 100.0}     # personal share per case: 9,000 / 6,000 / 3,000 a year
BANDS = """[incentives]
cmi_bands = [{ below = 0.9, coefficient = 0.98 }, { below = 1.1, coefficient = 1.0 }, { coefficient = 1.02 }]
cost_bands = [{ below = 0.9, coefficient = 1.01 }, { below = 1.1, coefficient = 1.0 }, { coefficient = 0.99 }]
time_bands = [{ below = 0.9, coefficient = 1.01 }, { below = 1.1, coefficient = 1.0 }, { coefficient = 0.99 }]
"""
BUDGET = '[budget.employee]\n"2026" = 60000.00\n"2026-01" = 30000.00\n"2026-02" = 30000.00\n'


def priced_cases(month: int, per_diem: bool = False) -> pa.Table:
    """The example's cases as priced rows (the columns MonthTotals reads): the first half of each
    hospital's cases of a group in January, the rest in February; plus, in February, one
    per-diem case of H1 when asked (priced, not by its group: kept in the totals, left out of
    the indices)."""
    rows = []
    for h, groups in DOC.items():
        for g, (n, cost, los, pts) in groups.items():
            for i in range(n):
                if (i < n // 2) == (month == 1):
                    rows.append({"hospital_id": h, "drg": g, "payment_method": "drg", "fund_key": "employee",
                                 "points": pts, "weight": WEIGHT[g], "total_cost": cost / n,
                                 "personal_share": SHARE[h], "los_days": los / n})
    if month == 2 and per_diem:
        rows.append({"hospital_id": "H1", "drg": "B", "payment_method": "per_diem", "fund_key": "employee",
                     "points": 0.0, "weight": 0.0, "total_cost": 5_000.0, "personal_share": 0.0, "los_days": 50.0})
    return pa.Table.from_pylist(rows)


def month_run(period: str, policy, per_diem: bool = False):
    totals = MonthTotals(policy, period)
    t = priced_cases(int(period[-2:]), per_diem)
    totals.add(t.slice(0, 37))                 # two batches: the totals do not depend on the split
    totals.add(t.slice(37))
    return totals.finish()[0]


def ledger(tmp_path, form: str = "per_group", per_diem: bool = False):
    pol = tmp_path / "p.toml"
    pol.write_text(BUDGET + BANDS + f'index_form = "{form}"\n', encoding="utf-8")
    policy = load_policy(pol)
    db = tmp_path / "l.db"
    with closing(ledger_mod.connect(db)) as conn:
        for period in ("2026-01", "2026-02"):
            ledger_mod.record_run(conn, month_run(period, policy, per_diem), policy=policy, inputs={},
                                  scheme_id=None, now="2026-03-01T00:00:00+00:00")
        # February again: the year sums the current revision only
        ledger_mod.record_run(conn, month_run("2026-02", policy, per_diem), policy=policy, inputs={},
                              scheme_id=None, reopen=True, now="2026-03-02T00:00:00+00:00")
    return pol, db


def test_the_months_keep_their_totals_per_hospital_and_group(tmp_path):
    pol, db = ledger(tmp_path, per_diem=True)
    s = month_run("2026-02", load_policy(pol), per_diem=True)
    assert s.groups.to_pylist()[:3] == [
        {"hospital_id": "H1", "method": "drg", "group_key": "A", "cases": 5, "cost_cents": 1_050_000, "los_days": 50.0},
        {"hospital_id": "H1", "method": "drg", "group_key": "B", "cases": 5, "cost_cents": 450_000, "los_days": 25.0},
        {"hospital_id": "H1", "method": "per_diem", "group_key": "B", "cases": 1, "cost_cents": 500_000,
         "los_days": 50.0}]
    with closing(ledger_mod.connect(db, create=False)) as conn:
        year, missing = ledger_mod.group_totals(conn, "2026")
        # the rows add up to the hospital rows of the same runs (cases and cost)
        per_h = conn.execute("SELECT h.hospital_id, SUM(h.cases), SUM(h.cost_cents) FROM hospital_results h JOIN "
                             "runs r USING (run_id) WHERE r.current=1 GROUP BY 1 ORDER BY 1").fetchall()
        n_rows = conn.execute("SELECT COUNT(*) FROM hospital_group_totals").fetchone()[0]
    assert missing == []
    assert n_rows == 6 + 7 + 7          # January, February, February revision 2 (kept, superseded)
    rows = [(r["hospital_id"], r["method"], r["group_key"], r["cases"], r["cost_cents"], r["los_days"])
            for r in year.to_pylist()]
    assert rows == [("H1", "drg", "A", 10, 2_100_000, 100.0), ("H1", "drg", "B", 10, 900_000, 50.0),
                    ("H1", "per_diem", "B", 1, 500_000, 50.0),
                    ("H2", "drg", "B", 10, 1_100_000, 70.0), ("H2", "drg", "C", 20, 2_400_000, 120.0),
                    ("H3", "drg", "A", 10, 1_400_000, 80.0), ("H3", "drg", "C", 20, 1_600_000, 80.0)]
    sums = {}
    for h, _m, _g, n, c, _lo in rows:
        sums[h] = (sums.get(h, (0, 0))[0] + n, sums.get(h, (0, 0))[1] + c)
    assert [(h, *v) for h, v in sorted(sums.items())] == [tuple(r) for r in per_h]


def test_group_indices_of_section_9():
    """(10 × 1.2 + 10 × 0.9) / 20, (10 × 1.1 + 20 × 1.2) / 30, ...; the per-diem case is left out."""
    t = pa.table({"hospital_id": ["H1", "H1", "H1", "H2", "H2", "H3", "H3"],
                  "method": ["drg", "drg", "per_diem", "drg", "drg", "drg", "drg"],
                  "group_key": ["A", "B", "B", "B", "C", "A", "C"],
                  "cases": [10, 10, 1, 10, 20, 10, 20],
                  "cost_cents": [2_100_000, 900_000, 500_000, 1_100_000, 2_400_000, 1_400_000, 1_600_000],
                  "los_days": [100.0, 50.0, 50.0, 70.0, 120.0, 80.0, 80.0]})
    assert group_indices(t) == {"H1": {"cost": 1.05, "time": 0.9722}, "H2": {"cost": 1.1667, "time": 1.1889},
                                "H3": {"cost": 0.8, "time": 0.8296}}
    # a DIP group is compared with the DIP cases of that group only, not with a DRG group of the same code
    dip = pa.concat_tables([t, pa.table({"hospital_id": ["H1"], "method": ["dip"], "group_key": ["A"], "cases": [1],
                                         "cost_cents": [100_000_000], "los_days": [1.0]})])
    assert group_indices(dip)["H3"] == {"cost": 0.8, "time": 0.8296}
    assert group_indices(dip)["H1"]["cost"] == float(Fraction(round((12 + 9 + 1) / 21 * 10000), 10000))
    # a group of no cost in the region is left out; a hospital with nothing left has no index
    zero = pa.table({"hospital_id": ["H1", "H2"], "method": ["drg", "drg"], "group_key": ["Z", "Y"],
                     "cases": [3, 2], "cost_cents": [0, 500], "los_days": [0.0, 4.0]})
    out = group_indices(zero)
    assert out["H2"] == {"cost": 1.0, "time": 1.0}
    assert out["H1"]["cost"] != out["H1"]["cost"] and out["H1"]["time"] != out["H1"]["time"]   # NaN


@pytest.mark.parametrize("form, coefficients, payments", [
    ("per_group", [1.02, 0.960498, 1.0201], [("H1", "39772.73"), ("H2", "24968.39"), ("H3", "13258.88")]),
    ("per_weight", [1.040502, 0.960498, 1.0201], [("H1", "40160.56"), ("H2", "24715.08"), ("H3", "13124.36")])])
def test_section_9_group_by_group_to_the_cent(tmp_path, form, coefficients, payments):
    pol, db = ledger(tmp_path, form)
    s = settle_annual("2026", policy_path=pol, ledger_path=db, quiet=True, partial_year=True)
    rows = hospitals_csv_table(s.hospitals).to_pylist()
    indices = {"per_group": [("1.5000", "1.0500", "0.9722"), ("0.6667", "1.1667", "1.1889"),
                             ("1.0000", "0.8000", "0.8296")],
               "per_weight": [("1.5000", "0.8421", "0.8000"), ("0.6667", "1.4737", "1.5200"),
                              ("1.0000", "0.8421", "0.8533")]}[form]
    assert [(r["cmi_index"], r["cost_index"], r["time_index"]) for r in rows] == indices
    assert s.hospitals["incentive_coefficient"].to_pylist() == coefficients
    assert [(r["hospital_id"], r["payment"]) for r in rows] == payments
    assert s.funds["employee"]["payment"] == 78000.00
    assert s.hospitals["incentive_reason"].to_pylist() == ["INCENTIVE_BANDS"] * 3


def test_section_9_from_hospital_totals():
    """The docs' per-weight figures from the hospital rows alone (no ledger)."""
    months = pa.table({"hospital_id": ["H1", "H2", "H3"], "fund": ["employee"] * 3, "cases": [20, 30, 30],
                       "unpriced_cases": [0] * 3, "weight_sum": [30.0, 20.0, 30.0], "points": [600.0, 400.0, 200.0],
                       "personal_share_cents": [900_000, 600_000, 300_000], "payment_cents": [0] * 3,
                       "amount_due_cents": [0] * 3, "withheld_cents": [0] * 3, "paid_cents": [0] * 3,
                       "cost_cents": [3_000_000, 3_500_000, 3_000_000], "unpriced_cost_cents": [0] * 3,
                       "los_days": [150.0, 190.0, 160.0]})
    inc = tomllib.loads(BANDS)["incentives"]
    s = settle_year(months, parse_policy({"budget": {"employee": {"2026": 60000.00}},
                                          "incentives": {**inc, "index_form": "per_weight"}}), "2026")
    rows = hospitals_csv_table(s.hospitals).to_pylist()
    assert [(r["cost_index"], r["time_index"]) for r in rows] == [("0.8421", "0.8000"), ("1.4737", "1.5200"),
                                                                  ("0.8421", "0.8533")]
    assert s.hospitals["incentive_coefficient"].to_pylist() == [1.040502, 0.960498, 1.0201]
    assert [(r["hospital_id"], r["payment"]) for r in rows] == [("H1", "40160.56"), ("H2", "24715.08"),
                                                                ("H3", "13124.36")]
    # per_group without the months' group totals: refused, not guessed
    with pytest.raises(InputError, match="needs the year's totals per hospital and group"):
        settle_year(months, parse_policy({"budget": {"employee": {"2026": 60000.00}}, "incentives": inc}), "2026")


def test_an_older_ledger_opens_and_a_failed_run_leaves_it_intact(tmp_path):
    pol, db = ledger(tmp_path)
    with closing(sqlite3.connect(db)) as conn:           # a version-2 ledger: no group totals
        conn.execute("DROP TABLE hospital_group_totals")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
        conn.commit()
    before = db.read_bytes()
    with pytest.raises(InputError, match=r"month\(s\) 2026-01, 2026-02 \(recorded before the ledger kept them\)"):
        settle_annual("2026", policy_path=pol, ledger_path=db, quiet=True, partial_year=True)
    policy = load_policy(pol)
    with closing(ledger_mod.connect(db, create=False)) as conn:   # a month refused: nothing added
        with pytest.raises(LedgerError, match="already recorded"):
            ledger_mod.record_run(conn, month_run("2026-01", policy), policy=policy, inputs={}, scheme_id=None)
    assert db.read_bytes() == before
    pw = tmp_path / "pw.toml"
    pw.write_text(BUDGET + BANDS + 'index_form = "per_weight"\n', encoding="utf-8")
    s = settle_annual("2026", policy_path=pw, ledger_path=db, quiet=True, partial_year=True)
    assert s.hospitals["incentive_coefficient"].to_pylist() == [1.040502, 0.960498, 1.0201]
    with closing(ledger_mod.connect(db, create=False)) as conn:   # January again: its totals are kept
        ledger_mod.record_run(conn, month_run("2026-01", policy), policy=policy, inputs={}, scheme_id=None,
                              reopen=True)
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "3"
        assert ledger_mod.group_totals(conn, "2026")[1] == ["2026-02"]
