"""Relative weights from history, worked by hand: year weighting, trimming, small groups, CV, RIV."""
import math

import numpy as np
import pyarrow as pa
import pytest

from drgdip.arrowio import write_table
from drgdip.weights import relative_weights as rw
from drgdip.weights.relative_weights import (
    WeightHistory,
    compute_weights,
    read_weight_table,
)
from drgdip.weights.settlement.policy import parse_policy

BUDGET = {"budget": {"employee": {"2026": 1.0}}}


def policy(**weights):
    return parse_policy({**BUDGET, "weights": weights})


def history(rows):
    drg, date, cost = zip(*rows)
    return pa.table({"drg": list(drg), "dscg_time": list(date), "medfee_sumamt": list(cost)})


HAND = history([
    ("A", "2024-03-01", 1000.0), ("A", "2024-05-01", 3000.0), ("B", "2024-06-01", 6000.0),
    ("A", "2025-01-01", 2000.0), ("A", "2025-02-01", 2000.0), ("A", "2025-03-01", 5000.0),
    ("B", "2025-04-01", 8000.0), ("B", "2025-05-01", 10000.0),
    ("C", "2023-07-01", 99999.0),                       # older than the two weighted years
    ("0000", "2025-01-01", 5.0), (None, "2025-01-01", 5.0),   # not grouped
    ("A", "2025-01-01", None), ("A", "bad date", 100.0),
])


def test_year_weighted_relative_weights_by_hand():
    r = compute_weights(HAND, policy(year_weights=[1, 3], trim="none", min_cases=2))
    rows = {x["drg"]: x for x in r.table.to_pylist()}
    # group means: A (1·2000 + 3·3000)/4 = 2750, B (1·6000 + 3·9000)/4 = 8250
    # all cases: 2024 mean 10000/3, 2025 mean 5400 → (10000/3 + 3·5400)/4 = 14650/3
    assert rows["A"]["mean_cost"] == pytest.approx(2750.0)
    assert rows["B"]["mean_cost"] == pytest.approx(8250.0)
    assert rows["A"]["weight"] == pytest.approx(8250 / 14650)
    assert rows["B"]["weight"] == pytest.approx(24750 / 14650)
    assert "C" not in rows
    assert r.years == {"2024": 1.0, "2025": 3.0}
    assert r.excluded == {"not grouped": 2, "cost missing or not positive": 1, "discharge date unreadable": 1,
                          "older than the weighted years": 1}
    # CV: A costs 1000,3000,2000,2000,5000 → sd sqrt(9.2e6/5), mean 2600; B sd sqrt(8e6/3), mean 8000
    assert rows["A"]["cv"] == pytest.approx(math.sqrt(9.2e6 / 5) / 2600)
    assert rows["B"]["cv"] == pytest.approx(math.sqrt(8e6 / 3) / 8000)
    # RIV = 1 − SSW/SST = 1 − (9.2e6 + 8e6) / 71,875,000
    assert r.riv == pytest.approx(1 - 17.2e6 / 71_875_000)
    assert rows["A"]["cases"] == 5 and rows["A"]["rule"] == "WEIGHT_OK"


def test_sd_trimming_drops_the_outlier():
    h = history([("A", "2025-01-01", 1000.0)] * 20 + [("A", "2025-01-01", 100000.0), ("B", "2025-01-01", 2000.0)])
    r = compute_weights(h, policy(trim="sd", trim_sd=3.0, min_cases=1))
    a = r.table.to_pylist()[0]
    assert a["mean_cost"] == pytest.approx(1000.0) and a["cases"] == 21 and a["cases_used"] == 20
    assert r.excluded["trimmed"] == 1


def test_percentile_trimming_keeps_the_middle():
    h = history([("A", "2025-01-01", float(c)) for c in range(1, 102)])
    r = compute_weights(h, policy(trim="percentile", trim_percentiles=[2.5, 97.5], min_cases=1))
    a = r.table.to_pylist()[0]
    # cut-offs by linear interpolation: 3.5 and 98.5 → keeps 4..98
    assert a["cases_used"] == 95 and a["mean_cost"] == pytest.approx(51.0)


SMALL = history([("BR21", "2025-01-01", 4000.0)] + [("BR23", "2025-01-01", 2000.0)] * 3
                + [("ES29", "2025-01-01", 1000.0)] * 3 + [("GB21", "2025-01-01", 9000.0)])


def test_small_group_pooled_with_its_adrg_or_left_unpriced():
    r = compute_weights(SMALL, policy(trim="none", min_cases=3, small_group_rule="adrg"))
    rows = {x["drg"]: x for x in r.table.to_pylist()}
    overall = (4000 + 6000 + 3000 + 9000) / 8
    assert rows["BR21"]["rule"] == "SMALL_GROUP_ADRG"
    assert rows["BR21"]["weight"] == pytest.approx(((4000 + 6000) / 4) / overall)
    assert rows["BR23"]["weight"] == pytest.approx(2000 / overall) and rows["BR23"]["rule"] == "WEIGHT_OK"
    assert rows["GB21"]["weight"] is None and rows["GB21"]["rule"] == "SMALL_GROUP_UNPRICED"


def test_small_group_raw_and_none_rules():
    raw = {x["drg"]: x for x in compute_weights(SMALL, policy(trim="none", min_cases=3, small_group_rule="raw")).table.to_pylist()}
    overall = 22000 / 8
    assert raw["GB21"]["weight"] == pytest.approx(9000 / overall) and raw["GB21"]["rule"] == "SMALL_GROUP_RAW"
    none = {x["drg"]: x for x in compute_weights(SMALL, policy(trim="none", min_cases=3, small_group_rule="none")).table.to_pylist()}
    assert none["BR21"]["weight"] is None and none["BR21"]["rule"] == "SMALL_GROUP_UNPRICED"


def test_official_weight_table_reads_and_rejects_duplicates(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("drg,weight\nAA19,18.2858\nBR21,1.5\n", encoding="utf-8")
    t = read_weight_table(f)
    assert t["weight"].to_pylist() == [18.2858, 1.5] and "mean_cost" not in t.column_names
    f.write_text("drg,weight\nAA19,1\nAA19,2\n", encoding="utf-8")
    with pytest.raises(Exception, match="AA19 appears more than once"):
        read_weight_table(f)
    f.write_text("drg,weight\nAA19,x\n", encoding="utf-8")
    with pytest.raises(Exception, match="row 2 is not a number"):
        read_weight_table(f)


# --- the streamed computation against the whole-array one it replaced (issue 18) ---------------
# The reference below is the in-memory code of before the spill (commit 9ec5b3b), kept here
# verbatim in substance: every weight table of the streamed WeightHistory must be byte-identical
# to it, with the chunk and bucket sizes made small so that every sum crosses chunks.

def _ref_trim_mask(cost, gid, ngroups, rules):
    if rules.trim == "none" or cost.size == 0:
        return np.ones(cost.shape, dtype=bool)
    if rules.trim == "sd":
        n = np.bincount(gid, minlength=ngroups).astype(np.float64)
        mean = np.bincount(gid, cost, ngroups) / np.maximum(n, 1)
        dev = cost - mean[gid]
        sd = np.sqrt(np.bincount(gid, dev * dev, ngroups) / np.maximum(n, 1))
        return np.abs(dev) <= rules.trim_sd * sd[gid] * (1 + 1e-12)
    order = np.lexsort((cost, gid))
    v = cost[order]
    n = np.bincount(gid, minlength=ngroups)
    start = np.concatenate(([0], np.cumsum(n)[:-1]))

    def cut(p):
        pos = p / 100.0 * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        frac = pos - lo
        a = np.where(n > 0, v[np.minimum(start + lo, len(v) - 1)], np.nan)
        b = np.where(n > 0, v[np.minimum(start + hi, len(v) - 1)], np.nan)
        return a + (b - a) * frac

    lo_cut, hi_cut = cut(rules.trim_percentiles[0]), cut(rules.trim_percentiles[1])
    return (cost >= lo_cut[gid] - 1e-9) & (cost <= hi_cut[gid] + 1e-9)


def _ref_wmeans(x, gid, yid, ngroups, yw):
    ny = len(yw)
    cell = gid * ny + yid
    n = np.bincount(cell, minlength=ngroups * ny).reshape(ngroups, ny)
    s = np.bincount(cell, x, ngroups * ny).reshape(ngroups, ny)
    means = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    w = np.where(n > 0, yw[None, :], 0.0)
    den = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (means * w).sum(axis=1) / den, np.nan)


def _reference(hist_table, pol, group_column="drg"):
    """(weight table, riv, excluded) computed on whole arrays, as before the spill."""
    rules = pol.weights
    g = np.array(hist_table[group_column].to_pylist(), dtype=object)
    cost = np.array([np.nan if c is None else c for c in hist_table["medfee_sumamt"].to_pylist()])
    los = np.array([np.nan if v is None else v for v in hist_table["los_days"].to_pylist()])
    year = np.array([int(d[:4]) if d and d[:4].isdigit() else -1 for d in hist_table["dscg_time"].to_pylist()])
    adrg = hist_table["adrg"].to_pylist() if "adrg" in hist_table.column_names else None
    usable = np.array([x is not None and x != "0000" for x in g]) & (cost > 0) & np.isfinite(cost) & (year >= 0)
    yw = np.asarray(rules.year_weights, dtype=np.float64)
    y0 = year[usable].max() - len(yw) + 1
    rows = np.flatnonzero(usable & (year >= y0))
    names = np.array(sorted(set(g[rows].tolist())), dtype=object)
    gid = np.searchsorted(names.astype(str), g[rows].astype(str))
    x, yid, lv = cost[rows], year[rows] - y0, los[rows]
    ng = len(names)
    if adrg is not None:
        first = {}
        for r, k in zip(rows.tolist(), gid.tolist()):
            first.setdefault(k, adrg[r] or "")
        gadrg = np.array([first[i] for i in range(ng)], dtype=object)
    else:
        gadrg = np.array([str(n)[:3] for n in names], dtype=object)
    cases_all = np.bincount(gid, minlength=ng)
    keep = _ref_trim_mask(x, gid, ng, rules)
    xk, gk, yk = x[keep], gid[keep], yid[keep]
    used = np.bincount(gk, minlength=ng)
    overall = _ref_wmeans(xk, np.zeros_like(gk), yk, 1, yw)[0]
    gmean = _ref_wmeans(xk, gk, yk, ng, yw)
    lk = lv[keep]
    lok = np.isfinite(lk)
    gmean_los = _ref_wmeans(lk[lok], gk[lok], yk[lok], ng, yw) if lok.any() else np.full(ng, np.nan)
    mean_plain = np.bincount(gk, xk, ng) / np.maximum(used, 1)
    dev = xk - mean_plain[gk]
    ssw_g = np.bincount(gk, dev * dev, ng)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.where(used > 0, np.sqrt(ssw_g / np.maximum(used, 1)) / mean_plain, np.nan)
    sst = float(((xk - xk.mean()) ** 2).sum())
    riv = 1.0 - float(ssw_g.sum()) / sst
    rule = np.full(ng, "WEIGHT_OK", dtype=object)
    mean_used = gmean.copy()
    small = used < rules.min_cases
    if small.any():
        if rules.small_group_rule == "raw":
            rule[small] = "SMALL_GROUP_RAW"
        elif rules.small_group_rule == "none":
            mean_used[small] = np.nan
            rule[small] = "SMALL_GROUP_UNPRICED"
        else:
            anames, aid_of_group = np.unique(gadrg.astype(str), return_inverse=True)
            aid_of_group = aid_of_group.reshape(-1)
            aid = aid_of_group[gk]
            amean = _ref_wmeans(xk, aid, yk, len(anames), yw)
            pool_ok = np.bincount(aid, minlength=len(anames))[aid_of_group] >= rules.min_cases
            mean_used[small & pool_ok] = amean[aid_of_group][small & pool_ok]
            rule[small & pool_ok] = "SMALL_GROUP_ADRG"
            mean_used[small & ~pool_ok] = np.nan
            rule[small & ~pool_ok] = "SMALL_GROUP_UNPRICED"
    table = pa.table({
        group_column: pa.array(names.astype(str).tolist(), pa.string()),
        "weight": pa.array(mean_used / overall, pa.float64(), from_pandas=True),
        "mean_cost": pa.array(mean_used, pa.float64(), from_pandas=True),
        "mean_los": pa.array(gmean_los, pa.float64(), from_pandas=True),
        "cases": pa.array(cases_all, pa.int64()),
        "cases_used": pa.array(used, pa.int64()),
        "cv": pa.array(cv, pa.float64(), from_pandas=True),
        "rule": pa.array(rule.tolist(), pa.string()),
    })
    return table, riv, int((~keep).sum())


def synthetic_history(n=30_000, seed=3, adrg=True):
    """Groups of very different sizes (a few below min_cases), three years and an older one,
    lognormal costs with outliers, some LOS missing, some rows unusable."""
    rng = np.random.default_rng(seed)
    sizes = np.r_[rng.integers(1, 6, 12), rng.integers(20, 400, 40), [6000, 9000]]
    names = [f"{'ABCDEF'[i % 6]}{'RSTU'[i % 4]}{i % 10}{i % 7}" for i in range(len(sizes))]
    gi = rng.choice(len(sizes), n, p=sizes / sizes.sum())
    drg = np.array(names, dtype=object)[gi]
    cost = np.round(rng.lognormal(8 + gi % 5 * 0.3, 0.6, n) * (1 + 20 * (rng.random(n) < 0.01)), 2)
    year = rng.choice([2021, 2022, 2023, 2024], n, p=[0.05, 0.25, 0.3, 0.4])
    dates = [f"{y}-0{m}-1{d}" for y, m, d in zip(year, rng.integers(1, 10, n), rng.integers(0, 10, n))]
    los = rng.integers(1, 30, n).astype(float)
    cols = {"drg": drg.tolist(), "dscg_time": dates, "medfee_sumamt": cost.tolist(),
            "los_days": [None if m else v for v, m in zip(los.tolist(), rng.random(n) < 0.05)]}
    bad = rng.choice(n, 60, replace=False)
    for j, i in enumerate(bad.tolist()):
        if j % 3 == 0:
            cols["drg"][i] = "0000"
        elif j % 3 == 1:
            cols["medfee_sumamt"][i] = None
        else:
            cols["dscg_time"][i] = "unknown"
    if adrg:
        cols["adrg"] = [None if d is None else (d[:3] if i % 50 else d[:2] + "X") for i, d in enumerate(cols["drg"])]
    return pa.table(cols)


def _parquet_bytes(table, path):
    write_table(table, path)
    return path.read_bytes()


@pytest.mark.parametrize("weights", [
    {"trim": "sd", "trim_sd": 3.0, "min_cases": 5, "small_group_rule": "adrg", "year_weights": [1, 2]},
    {"trim": "sd", "trim_sd": 2.0, "min_cases": 8, "small_group_rule": "raw", "year_weights": [1, 2, 7]},
    {"trim": "percentile", "trim_percentiles": [2.5, 97.5], "min_cases": 5, "small_group_rule": "adrg",
     "year_weights": [1, 3, 6]},
    {"trim": "percentile", "trim_percentiles": [10, 90], "min_cases": 30, "small_group_rule": "none",
     "year_weights": [2, 1]},
    {"trim": "none", "min_cases": 5, "small_group_rule": "adrg", "year_weights": [1, 1, 1, 1, 1]},
])
@pytest.mark.parametrize("adrg", [True, False])
def test_streamed_weights_are_byte_identical_to_the_whole_array_computation(weights, adrg, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(rw, "CHUNK_CASES", 4096)      # every sum crosses chunks
    monkeypatch.setattr(rw, "BUCKET_CASES", 3000)     # percentile groups in several buckets, big ones alone
    h = synthetic_history(adrg=adrg)
    pol = policy(**weights)
    ref, ref_riv, ref_trimmed = _reference(h, pol)
    (tmp_path / "spill").mkdir()
    with WeightHistory("drg", tmp_path / "spill") as hist:
        for b in h.to_batches(max_chunksize=7000):
            hist.add(b)
        got = hist.finish(pol)
    assert not list((tmp_path / "spill").iterdir())          # the spill is removed
    assert got.table.equals(ref)
    assert _parquet_bytes(got.table, tmp_path / "a.parquet") == _parquet_bytes(ref, tmp_path / "b.parquet")
    assert got.excluded.get("trimmed", 0) == ref_trimmed
    if weights["trim"] != "none":
        assert ref_trimmed > 0
    assert set(got.table["rule"].to_pylist()) > {"WEIGHT_OK"}
    if NUMPY_SUMS_WHOLE:
        assert got.riv == ref_riv
    else:
        assert got.riv == pytest.approx(ref_riv, rel=1e-12)
    assert compute_weights(h, pol).table.equals(ref)


NUMPY_SUMS_WHOLE = int(np.__version__.split(".")[0]) >= 2


@pytest.mark.skipif(not NUMPY_SUMS_WHOLE, reason="numpy 1.x sums a large array in blocks of its 8,192 buffer")
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 1000, 8193, 100_003, 1_048_577])
def test_streamed_pairwise_sum_is_numpys_sum(n):
    x = np.random.default_rng(n).lognormal(8, 2, n)
    pieces = np.array_split(x, 7) if n else []
    for block in (16, 1000, 1 << 19):
        assert rw.pairwise_sum(iter(pieces), n, block) == x.sum()


def test_make_weights_spills_beside_the_output_and_removes_it(tmp_path):
    from drgdip.weights.settlement.runs import make_weights
    h = synthetic_history(n=5000)
    write_table(h, tmp_path / "history.parquet")
    (tmp_path / "policy.toml").write_text('[budget.employee]\n"2026" = 1.0\n[weights]\ntrim = "sd"\n'
                                          'trim_sd = 3.0\nyear_weights = [1, 2]\nmin_cases = 5\n', encoding="utf-8")
    out = tmp_path / "out" / "w.parquet"
    r = make_weights(tmp_path / "history.parquet", tmp_path / "policy.toml", out, quiet=True, batch_size=1000)
    assert sorted(p.name for p in out.parent.iterdir()) == ["w.parquet"]
    ref = _reference(h, policy(trim="sd", trim_sd=3.0, year_weights=[1, 2], min_cases=5))[0]
    assert r.table.equals(ref) and read_weight_table(out)["weight"].equals(ref["weight"])
