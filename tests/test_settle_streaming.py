"""Settling in bounded memory: the vectorised largest remainder equals the row-by-row exact
one, and a month settled batch by batch gives the same files whatever the batch size."""
from __future__ import annotations

import numpy as np
import pytest

from drgdip.weights.settlement.settle import (
    _prorate,
    _prorate_exact,
    _times_rate,
    _times_rate_exact,
)


def _points(rng, trial: int, n: int) -> np.ndarray:
    kind = trial % 4
    if kind == 0:
        return rng.uniform(0, 2000, n)
    if kind == 1:                        # many equal values: ties decided by the earlier row
        return rng.choice(np.array([100.0, 250.5, 33.3333, 1e-3, 0.0, 1234.5678]), n)
    if kind == 2:                        # shares landing on whole cents
        return np.round(rng.uniform(0, 50, n), 1)
    return rng.exponential(500, n) * rng.choice([1, 1e-6, 1e6], n)


@pytest.mark.parametrize("seed", range(4))
def test_fast_largest_remainder_equals_the_exact_one(seed):
    rng = np.random.default_rng(seed)
    for trial in range(80):
        p = _points(rng, trial, int(rng.integers(1, 300)))
        if p.sum() == 0:
            continue
        total = int(rng.integers(0, 10**10)) if trial % 3 else int(p.sum() * 100 // 7)
        fast, ref = _prorate(p, total), _prorate_exact(p, total)
        assert fast.sum() == total
        np.testing.assert_array_equal(fast, ref)
        rate = float(rng.choice([0.01, 123.45, 7.123456, 1.0]))
        (fr, ft), (rr, rt) = _times_rate(p, rate), _times_rate_exact(p, rate)
        assert ft == rt
        np.testing.assert_array_equal(fr, rr)


def test_exact_tie_goes_to_the_earlier_row():
    # three equal shares of 100 cents: 33.33.. each, one cent left, the first row gets it
    np.testing.assert_array_equal(_prorate(np.array([1.0, 1.0, 1.0]), 100), [34, 33, 33])
    # a share that the float product puts a hair off a whole cent is floored exactly
    p = np.array([0.1, 0.2, 0.7])
    np.testing.assert_array_equal(_prorate(p, 10), _prorate_exact(p, 10))


def test_signed_points_use_the_exact_path():
    p = np.array([3.0, -1.0, 2.5])
    np.testing.assert_array_equal(_prorate(p, 1000), _prorate_exact(p, 1000))


# ---------------------------------------------------------------- settle_month batch by batch

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from drgdip.grouper.drg.api import TEACHING_SCHEME  # noqa: E402
from drgdip.weights.relative_weights import read_weight_table  # noqa: E402
from drgdip.weights.settlement import runs  # noqa: E402
from drgdip.weights.settlement.points import price_cases  # noqa: E402
from drgdip.weights.settlement.policy import load_policy  # noqa: E402
from drgdip.weights.settlement.settle import settle_period  # noqa: E402

OUTPUTS = ("cases.parquet", "review.csv", "hospitals.csv", "summary.json")


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    from drgdip.synth.demo import run_demo
    out = tmp_path_factory.mktemp("stream") / "demo"
    run_demo(out, seed=5, progress=False, records_per_month=900, hospitals=6)
    t = pq.read_table(out / "data" / "2024-03.parquet")
    # a settlement id repeated far apart (different batches), and the group columns dropped
    ids = t["id"].to_pylist()
    ids[-1] = ids[3]
    t = t.set_column(t.schema.get_field_index("id"), "id", pa.array(ids))
    pq.write_table(t, out / "month.parquet")
    pq.write_table(t.drop_columns(["mdc", "adrg", "drg", "status", "reason"]), out / "ungrouped.parquet")
    period_policy = out / "period.toml"
    text = (out / "policy.toml").read_text(encoding="utf-8")
    assert 'group_mean = "table"' in text
    period_policy.write_text(text.replace('group_mean = "table"', 'group_mean = "period"'), encoding="utf-8")
    return out


def _settle(month, tmp_path, name, batch_size, records="month.parquet", policy="policy.toml", scheme=None):
    out = tmp_path / name
    res = runs.settle_month("2024-03", month / records, policy_path=month / policy,
                            weights_path=month / "weights.parquet", ledger_path=tmp_path / f"{name}.db",
                            out=out, scheme=scheme, quiet=True, new_ledger=True, now="2025-01-01T00:00:00",
                            batch_size=batch_size)
    return res, {f: (out / f).read_bytes() for f in OUTPUTS}


@pytest.mark.parametrize("records,policy,scheme", [
    ("month.parquet", "policy.toml", None),
    ("ungrouped.parquet", "policy.toml", TEACHING_SCHEME),
    ("month.parquet", "period.toml", None),
])
def test_outputs_do_not_depend_on_the_batch_size(month, tmp_path, monkeypatch, records, policy, scheme):
    monkeypatch.setattr(runs, "ROW_GROUP_ROWS", 256)          # several row groups, cut across batches
    r1, small = _settle(month, tmp_path, "small", 97, records, policy, scheme)
    _, large = _settle(month, tmp_path, "large", 1000, records, policy, scheme)
    _, whole = _settle(month, tmp_path, "whole", 1 << 16, records, policy, scheme)
    for f in OUTPUTS:
        assert small[f] == large[f] == whole[f], f
    meta = pq.ParquetFile(tmp_path / "small" / "cases.parquet").metadata
    assert meta.num_row_groups > 2
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)][:-1] == [256] * (meta.num_row_groups - 1)

    # the same cents as settling the whole month as one table in memory
    pol = load_policy(month / policy)
    t = pq.read_table(month / records)
    if scheme is not None:
        from drgdip.grouper.drg.api import group_table
        t = group_table(t, scheme)
    priced = price_cases(t, read_weight_table(month / "weights.parquet"), pol, period="2024-03")
    ref = settle_period(priced, pol, "2024-03")
    assert r1.hospitals.equals(ref.hospitals)
    assert r1.funds == ref.funds
    cases = pq.read_table(tmp_path / "small" / "cases.parquet")
    assert cases["amount"].to_pylist() == ref.cases["amount"].to_pylist()
    assert cases["fund_amount"].to_pylist() == ref.cases["fund_amount"].to_pylist()


def test_a_settlement_id_repeated_in_another_batch_is_unpriced_both_times(month, tmp_path):
    _settle(month, tmp_path, "dup", 100)
    cases = pq.read_table(tmp_path / "dup" / "cases.parquet")
    dup = pc.equal(cases["pricing_reason"], "DUPLICATE_SETTLEMENT_ID").to_numpy(zero_copy_only=False)
    ids = np.array(cases["id"].to_pylist(), dtype=object)
    assert sorted(np.flatnonzero(dup).tolist()) == [3, cases.num_rows - 1]
    assert len(set(ids[dup])) == 1
    assert cases["points"][3].as_py() is None


def test_duplicate_ids_reads_only_the_id_column_and_counts_exactly(tmp_path):
    t = pa.table({"id": ["a", " b", "c", "b ", "", None, "d", "a"], "x": list(range(8))})
    pq.write_table(t, tmp_path / "f.parquet")
    dups, rows = runs.duplicate_ids(tmp_path / "f.parquet", "id", batch_size=3)
    assert rows == 8
    assert sorted(dups.to_pylist()) == ["a", "b"]


# ---------------------------------------------------------------- weights batch by batch

@pytest.mark.parametrize("trim", ["sd", "percentile", "none"])
@pytest.mark.parametrize("ungrouped", [False, True])
def test_weights_do_not_depend_on_the_batch_size(month, tmp_path, trim, ungrouped):
    from drgdip.weights.relative_weights import compute_weights
    history = month / "data" / "history.parquet"
    scheme = None
    if ungrouped:
        t = pq.read_table(history).drop_columns(["mdc", "adrg", "drg", "status", "reason"])
        history = tmp_path / "ungrouped-history.parquet"
        pq.write_table(t, history)
        scheme = TEACHING_SCHEME
    text = (month / "policy.toml").read_text(encoding="utf-8")
    assert 'trim = "sd"' in text
    policy = tmp_path / "p.toml"
    policy.write_text(text.replace('trim = "sd"', f'trim = "{trim}"').replace("min_cases = 5", "min_cases = 40"),
                      encoding="utf-8")
    files = {}
    for bs in (37, 1000, 1 << 16):
        r = runs.make_weights(history, policy, tmp_path / f"w{bs}.parquet", scheme=scheme, quiet=True, batch_size=bs)
        files[bs] = (tmp_path / f"w{bs}.parquet").read_bytes()
    assert files[37] == files[1000] == files[1 << 16]
    whole = pq.read_table(history)
    if scheme is not None:
        from drgdip.grouper.drg.api import group_table
        whole = group_table(whole, scheme)
    ref = compute_weights(whole, load_policy(policy))
    assert r.table.equals(ref.table)
    assert r.riv == ref.riv and r.excluded == ref.excluded
    assert "SMALL_GROUP_ADRG" in r.table["rule"].to_pylist()     # the first case's ADRG per group is used


def test_settle_bench_reads_time_and_the_summary():
    from drgdip.bench.settle_throughput import _rows, _time_v
    err = ("\tUser time (seconds): 19.41\n\tSystem time (seconds): 1.80\n"
           "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.50\n\tMaximum resident set size (kbytes): 647168\n")
    assert _time_v(err) == {"wall": 62.5, "user": 19.41, "sys": 1.8, "rss_mb": 632.0}
    summary = ("monthly settlement 2024-01\nfund      cases unpriced ...\n"
               "employee     89007     1052   6889472.9078\nresident    124458     1483   9679803.0634\n")
    assert _rows(summary) == 89007 + 1052 + 124458 + 1483


def test_exact_sums_are_the_correctly_rounded_fsum(monkeypatch):
    import math

    from drgdip.weights.settlement import settle as settlement
    monkeypatch.setattr(settlement, "CHUNK", 64)      # several chunks
    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(1, 500))
        x = rng.normal(0, 1, n) * 10.0 ** rng.integers(-8, 12, n)
        key = rng.integers(0, 5, n)
        sums = settlement._exact_sums_by(key, x, 6)
        for k in range(6):
            assert settlement._as_float(sums[k]) == math.fsum(x[key == k].tolist())
        assert settlement._as_float(settlement._exact_total(x)) == math.fsum(x.tolist())


def test_kth_largest_without_a_sort_of_everything():
    from drgdip.weights.settlement.settle import _kth_largest
    rng = np.random.default_rng(9)
    for x in (rng.random(5000), np.round(rng.random(5000), 2), np.array([0.5] * 10 + [0.0] * 5 + [1.0]),
              np.r_[np.full(300, 4095 / 4096), rng.random(50)], np.array([0.25, 0.25 + 1e-17, 0.75])):
        for k in (1, 2, len(x) // 3, len(x)):
            assert _kth_largest(x, k) == np.sort(x)[::-1][k - 1]


# ---------------------------------------------------------------- the cents in passes, bounded memory

@pytest.mark.parametrize("seed", range(3))
def test_streamed_largest_remainder_equals_the_in_memory_one(seed):
    from fractions import Fraction

    from drgdip.weights.settlement.settle import (
        _exact_total,
        _spread,
        _StreamSpread,
        exact_decimal,
        half_up,
    )
    rng = np.random.default_rng(100 + seed)
    for trial in range(60):
        p = _points(rng, trial, int(rng.integers(1, 400)))
        whole, e = _exact_total(p)
        if whole <= 0:
            continue
        if trial % 2:
            total = int(rng.integers(0, 10**10))
            k = Fraction(total, whole)
        else:
            k = exact_decimal(float(rng.choice([0.01, 123.45, 7.123456]))) * 100 * Fraction(2) ** e
            total = half_up(k * whole)
        ref = _spread(p, e, k, total)
        cuts = np.unique(np.r_[0, np.sort(rng.integers(0, p.size, 4)), p.size])
        parts = [(lo, p[lo:hi]) for lo, hi in zip(cuts[:-1], cuts[1:])]
        s = _StreamSpread(float(p.max()), e, k, total)
        for _, c in parts:
            s.count(c)
        if s.counted():
            for _, c in parts:
                s.bin_values(c)
            s.found_cut()
            for lo, c in parts:
                s.near(c, int(lo))
            s.found_near()
        got = np.concatenate([s.cents(c, int(lo)) for lo, c in parts])
        np.testing.assert_array_equal(got, ref)


def _priced(rng, n: int) -> pa.Table:
    return pa.table({
        "points": pa.array(np.where(rng.random(n) < 0.02, np.nan, rng.uniform(1, 3000, n)), from_pandas=True),
        "fund_key": pa.array(rng.choice(["employee", "resident"], n)),
        "personal_share": rng.uniform(0, 5000, n).round(2), "total_cost": rng.uniform(100, 90000, n).round(2),
        "weight": rng.uniform(0.1, 5, n), "hospital_id": pa.array(rng.choice([f"H{i}" for i in range(40)], n)),
    })


def _finish_peak(tmp_path, pol, n: int, spill: bool) -> tuple[int, np.ndarray]:
    """tracemalloc's peak (bytes) while n cases are counted and the month finished."""
    import tracemalloc

    from drgdip.weights.settlement.settle import MonthTotals
    batches = [_priced(np.random.default_rng(i), 1000) for i in range(n // 1000)]
    folder = tmp_path / f"spill-{n}-{spill}"
    folder.mkdir()
    tracemalloc.start()
    totals = MonthTotals(pol, "2024-03", spill=folder if spill else None)
    for b in batches:
        totals.add(b)
    if spill:
        assert (folder / ".case-points").stat().st_size == 8 * n      # the per-case state is on disk
        assert (folder / ".case-fund").stat().st_size == n
    _, amount = totals.finish()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    cents = np.concatenate([amount[i:i + 777] for i in range(0, n, 777)])
    return peak, cents


def test_month_totals_spilled_keep_a_bounded_state_per_case(month, tmp_path, monkeypatch):
    from drgdip.weights.settlement import settle as settlement
    monkeypatch.setattr(settlement, "CHUNK", 4096)
    pol = load_policy(month / "policy.toml")
    assert pol.has_money_for("employee", "2024-03") and pol.has_money_for("resident", "2024-03")
    small, _ = _finish_peak(tmp_path, pol, 20_000, True)
    big, cents = _finish_peak(tmp_path, pol, 200_000, True)
    # ten times the cases: the memory of a chunk, not of the cases (one float64 per case is 1.6 MB)
    assert big < 8 * 200_000 and big < 2 * small, (small, big)
    _, ref = _finish_peak(tmp_path, pol, 200_000, False)
    assert ref.sum() > 0
    np.testing.assert_array_equal(cents, ref)                     # spilled or not, the same cents
    # the case files are removed by finish; the cents' file stays for the writer (SpilledCents.unlink)
    assert [f.name for f in (tmp_path / "spill-200000-True").iterdir()] == [".case-cents"]


def test_month_of_reads_each_distinct_date_once_with_the_same_months():
    from drgdip.arrowio import _month_of_text, month_of
    vals = ["2024-01-31", None, "2024-02-30", "2024/03/05 10:00", "2024-01-31", "", "20241105", "2024-13-01",
            "2024-07", None, "2024-02-29", "2023-02-29", "2024-01-31"]
    got = month_of(pa.array(vals))
    assert got.to_pylist() == _month_of_text(pa.array(vals)).to_pylist()
    assert got.to_pylist() == ["2024-01", None, None, "2024-03", "2024-01", None, "2024-11", None, "2024-07",
                               None, "2024-02", None, "2024-01"]
    dates = pa.array([None, None], pa.date32())
    assert month_of(dates).to_pylist() == [None, None]
