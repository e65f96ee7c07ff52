"""Relative weights (相对权重 RW) per group from history, and group quality (CV, RIV).

``RW_g = weighted mean cost of group g / weighted mean cost of all cases``, after the
policy's trimming, with years weighted by the policy (``weights.year_weights``, oldest →
newest, aligned on the newest year of the history; older years get weight 0):

- trimming (``weights.trim``) is done per group over all its weighted years pooled:
  ``sd`` keeps costs within ``trim_sd`` population standard deviations of the group mean,
  ``percentile`` keeps costs between the group's two ``trim_percentiles`` (linear
  interpolation), ``none`` keeps all;
- a group's mean is ``Σ_y w_y·mean_gy / Σ_y w_y`` over the years in which it has cases;
  the all-case mean is the same over all kept cases;
- a group with fewer than ``min_cases`` kept cases follows ``small_group_rule``:
  ``adrg`` takes the pooled mean of its ADRG (the ``adrg`` column, else the group code's
  first three characters) when that pool has ``min_cases``, else leaves the group
  unpriced; ``raw`` uses its own few cases; ``none`` leaves it unpriced (weight null).
  Unpriced groups stay in the table with a reason, so pricing reports their cases.

Group quality (同组变异): ``cv`` = population standard deviation / mean of the group's kept
costs; ``RIV = 1 − Σ(x − mean_g)² / Σ(x − mean)²`` over all kept cases (plain means).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from drgdip.arrowio import InputError, canonical_columns, numeric, text
from drgdip.weights.settlement.policy import Policy

GROUPED_STATUSES = ("grouped", "ambiguous")
UNGROUPED_CODES = ("0000",)

WEIGHT_SCHEMA_NOTE = "group, weight, mean_cost, mean_los, cases, cases_used, cv, rule"


@dataclass
class WeightResult:
    table: pa.Table                      # one row per group, sorted by group
    riv: float                           # reduction in variance over all groups
    excluded: dict[str, int] = field(default_factory=dict)   # history rows not used, by reason
    years: dict[str, float] = field(default_factory=dict)    # year → weight applied


def _group_ids(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values as object array, index of each row's value)."""
    enc = pc.dictionary_encode(values).combine_chunks() if isinstance(values, pa.ChunkedArray) else pc.dictionary_encode(values)
    dic = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(dic.astype(str), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return dic[order], rank[idx]


def years_of(dates: pa.Array) -> np.ndarray:
    """Year of each discharge date as int (−1 when unreadable)."""
    s = text(dates, len(dates))
    y = pc.extract_regex(pc.fill_null(s, ""), r"^(?P<y>\d{4})")
    yv = pc.struct_field(y, [0])
    out = pc.cast(yv, pa.int64(), safe=False)
    return pc.fill_null(out, -1).to_numpy(zero_copy_only=False)


#: the record kept per usable case in the spill file, in file order: 22 bytes
SPILL_RECORD = np.dtype([("g", "<i4"), ("y", "<i2"), ("x", "<f8"), ("l", "<f8")])
#: cases read back from the spill at a time (about 12 MB of records, ~40 MB with their columns)
CHUNK_CASES = 1 << 19
#: percentile trimming: the groups are cut into runs of about this many cases, sorted one at a time
BUCKET_CASES = 1 << 20


@njit(cache=True)
def _add_at(s, idx, x):
    """``s[idx[i]] += x[i]`` in order: ``np.bincount(idx, x)``'s sums, continued chunk after chunk."""
    for i in range(idx.size):
        s[idx[i]] += x[i]


@njit(cache=True)
def _add_sq_dev_at(s, idx, x, mean):
    """``s[idx[i]] += (x[i] − mean[idx[i]])²`` in order (as ``np.bincount(idx, dev * dev)``)."""
    for i in range(idx.size):
        d = x[i] - mean[idx[i]]
        s[idx[i]] += d * d


@njit(cache=True)
def _pairwise(a, s, n):
    """numpy's pairwise sum of ``a[s:s+n]`` (blocks of 128 with 8 accumulators, halves split at
    multiples of 8), so that a sum streamed in pieces equals ``ndarray.sum`` of the whole."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[s + i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[s], a[s + 1], a[s + 2], a[s + 3]
        r4, r5, r6, r7 = a[s + 4], a[s + 5], a[s + 6], a[s + 7]
        i = 8
        m = n - n % 8
        while i < m:
            r0 += a[s + i]
            r1 += a[s + i + 1]
            r2 += a[s + i + 2]
            r3 += a[s + i + 3]
            r4 += a[s + i + 4]
            r5 += a[s + i + 5]
            r6 += a[s + i + 6]
            r7 += a[s + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[s + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, s, n2) + _pairwise(a, s + n2, n - n2)


def pairwise_sum(chunks, n: int, block: int = CHUNK_CASES) -> float:
    """numpy's pairwise sum of ``n`` float64 values given as consecutive arrays, holding at most
    ``block`` of them at a time (the recursion is numpy's; numpy ≥ 2 sums a contiguous array
    whole this way, numpy 1.x in blocks of its 8,192-element buffer, so 1.x's ``sum`` can differ
    in the last bits)."""
    it = iter(chunks)
    buf, pos = np.zeros(0), 0

    def take(k: int) -> np.ndarray:
        nonlocal buf, pos
        parts = []
        while k > 0:
            if pos == buf.size:
                buf, pos = next(it), 0
                continue
            m = min(k, buf.size - pos)
            parts.append(buf[pos:pos + m])
            pos += m
            k -= m
        return np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts), dtype=np.float64)

    def rec(m: int) -> float:
        if m <= max(block, 128):        # numpy splits only above 128
            return float(_pairwise(take(m), 0, m))
        n2 = m // 2
        n2 -= n2 % 8
        return rec(n2) + rec(m - n2)

    total = rec(n) if n else 0.0
    for _ in it:            # let the producer finish (its side effects)
        pass
    return total


def _means(n: np.ndarray, s: np.ndarray, yw: np.ndarray) -> np.ndarray:
    """Per row (a group): Σ_y w_y·mean_gy / Σ_{y with cases} w_y from the counts ``n`` and sums
    ``s`` per group and year (nan where the group has no cases)."""
    means = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    w = np.where(n > 0, yw[None, :], 0.0)
    den = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (means * w).sum(axis=1) / den, np.nan)


def _cuts(v: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    """The ``p``-th percentile (linear interpolation) of each group's values, ``v`` sorted by
    group then value, ``n`` values a group."""
    start = np.concatenate(([0], np.cumsum(n)[:-1]))
    pos = p / 100.0 * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    frac = pos - lo
    safe = n > 0
    a = np.where(safe, v[np.minimum(start + lo, len(v) - 1)], np.nan)
    b = np.where(safe, v[np.minimum(start + hi, len(v) - 1)], np.nan)
    return a + (b - a) * frac


EXCLUSIONS = ("not grouped", "status not grouped", "cost missing or not positive", "discharge date unreadable",
              "older than the weighted years")


class WeightHistory:
    """History records gathered batch by batch for :func:`compute_weights`, in bounded memory.

    Per usable case (grouped, a positive cost, a readable discharge date) it appends to a spill
    file in ``folder`` the group (int32 into the groups seen), the year (int16), the cost and
    the length of stay (float64 each): 22 bytes a case on disk, none in memory. In memory it
    keeps only per group and year: the number of cases and the first case's ADRG (for
    ``small_group_rule = "adrg"``). :meth:`finish` then reads the spill back in chunks of
    :data:`CHUNK_CASES`, once for each quantity that needs the one before (group means, then
    the deviations from them for the SD trimming; the kept sums; the deviations from the kept
    means for CV and RIV). Every sum is made in file order as before (per group and year, as
    ``np.bincount``; RIV's total as numpy's pairwise sum), so the weights are exactly those of
    the whole table, whatever the batch size. Percentile trimming sorts the costs of a run of
    groups of about :data:`BUCKET_CASES` cases at a time (a larger group alone).

    ``folder``: where the spill goes (default: a new temporary folder, removed by
    :meth:`close`); the spill file is removed by :meth:`close` in any case.

    >>> with WeightHistory("drg", folder) as hist:
    ...     for batch in grouped_batches: hist.add(batch)
    ...     result = hist.finish(policy)
    """

    def __init__(self, group_column: str = "drg", folder=None):
        self.group_column = group_column
        self._own = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="drgdip-weights-")) if folder is None else Path(folder)
        self._path = self.folder / "weight_history.spill"
        self._spill = open(self._path, "wb")
        self._year_counts: dict[int, np.ndarray] = {}     # year → cases per group id
        self._groups: dict[str, int] = {}
        self._first_adrg: dict[tuple[int, int], tuple[int, str]] = {}
        self.has_adrg: bool | None = None
        self.counts = dict.fromkeys(EXCLUSIONS, 0)
        self.rows = 0
        self.kept = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Remove the spill (and the folder when it was made here)."""
        if not self._spill.closed:
            self._spill.close()
        for p in self.folder.glob("weight_history.*"):
            p.unlink(missing_ok=True)
        if self._own:
            shutil.rmtree(self.folder, ignore_errors=True)

    def add(self, history: pa.Table | pa.RecordBatch) -> None:
        """Count one batch of history records (in file order)."""
        group_column = self.group_column
        cols = canonical_columns(history.schema)
        names = history.schema.names
        if group_column not in names:
            raise InputError(f"history has no {group_column!r} column (group it first, or pass --scheme)")
        for need in ("total_cost", "discharge_date"):
            if need not in cols:
                raise InputError(f"history has no {need} column (or an alias of it)")
        n = history.num_rows
        group = text(history.column(group_column), n)
        cost, _ = numeric(history.column(cols["total_cost"]), n)
        los = numeric(history.column(cols["los_days"]), n)[0] if "los_days" in cols else pa.nulls(n, pa.float64())
        year = years_of(history.column(cols["discharge_date"]))
        ok = np.ones(n, dtype=bool)

        def drop(mask: np.ndarray, why: str):
            nonlocal ok
            self.counts[why] += int((mask & ok).sum())
            ok &= ~mask

        gnull = pc.is_null(group).to_numpy(zero_copy_only=False)
        drop(gnull | pc.fill_null(pc.is_in(group, pa.array(UNGROUPED_CODES)), False).to_numpy(zero_copy_only=False),
             "not grouped")
        if "status" in names:
            st = text(history.column("status"), n)
            drop(~pc.fill_null(pc.is_in(st, pa.array(GROUPED_STATUSES)), False).to_numpy(zero_copy_only=False),
                 "status not grouped")
        c = pc.fill_null(cost, -1.0).to_numpy(zero_copy_only=False)
        drop((c <= 0) | ~np.isfinite(c), "cost missing or not positive")
        drop(year < 0, "discharge date unreadable")

        rows = np.flatnonzero(ok)
        enc = pc.dictionary_encode(group.take(pa.array(rows)))
        local = np.array([self._groups.setdefault(g, len(self._groups)) for g in enc.dictionary.to_pylist()] or [0],
                         dtype=np.int64)
        gid = local[enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)] if rows.size else \
            np.zeros(0, np.int64)
        y = year[rows]
        if self.has_adrg is None:
            self.has_adrg = "adrg" in names
        if self.has_adrg and rows.size:
            _, first = np.unique(gid * 100_000 + y, return_index=True)
            adrg = text(history.column("adrg"), n).take(pa.array(rows[first])).to_pylist()
            for i, a in zip(first.tolist(), adrg):
                self._first_adrg.setdefault((int(gid[i]), int(y[i])), (self.kept + i, a if a is not None else ""))
        ng = len(self._groups)
        for yv in np.unique(y).tolist():
            k = np.bincount(gid[y == yv], minlength=ng)
            old = self._year_counts.get(yv)
            if old is not None:
                k[:old.size] += old
            self._year_counts[yv] = k
        rec = np.empty(rows.size, SPILL_RECORD)
        rec["g"], rec["y"], rec["x"] = gid, y, c[rows]
        rec["l"] = pc.fill_null(los, np.nan).to_numpy(zero_copy_only=False)[rows]
        rec.tofile(self._spill)
        self.rows += n
        self.kept += rows.size

    def _chunks(self, rank: np.ndarray, y0: int):
        """(group rank, year offset, cost, LOS) of the cases of the weighted years, in file
        order, :data:`CHUNK_CASES` records read at a time."""
        for start in range(0, self.kept, CHUNK_CASES):
            rec = np.fromfile(self._path, SPILL_RECORD, count=min(CHUNK_CASES, self.kept - start),
                              offset=start * SPILL_RECORD.itemsize)
            rec = rec[rec["y"] >= y0]
            yield (rank[rec["g"]], rec["y"].astype(np.int64) - y0, np.ascontiguousarray(rec["x"]),
                   np.ascontiguousarray(rec["l"]))

    def finish(self, policy: Policy) -> WeightResult:
        """The weights of the history added so far (see :func:`compute_weights`)."""
        self._spill.flush()
        counts = dict(self.counts)
        # years: the policy's weights aligned on the newest year of the history
        yw_policy = np.asarray(policy.weights.year_weights, dtype=np.float64)
        if self.kept == 0:
            raise InputError("history has no usable case (grouped, with a positive cost and a discharge date)")
        newest = max(self._year_counts)
        years = np.arange(newest - len(yw_policy) + 1, newest + 1)
        ny, nseen = len(years), len(self._groups)
        n_gy = np.zeros((nseen, ny), np.int64)       # cases per group id and weighted year
        for yv, k in self._year_counts.items():
            if yv >= years[0]:
                n_gy[:k.size, yv - years[0]] += k
        counts["older than the weighted years"] = self.kept - int(n_gy.sum())
        present = np.flatnonzero(n_gy.sum(axis=1) > 0)
        seen = np.asarray(list(self._groups), dtype=object)
        order = present[np.argsort(seen[present].astype(str), kind="stable")]
        rank = np.full(nseen, -1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        gadrg = None
        if self.has_adrg:
            best: dict[int, tuple[int, str]] = {}
            for (g, y), (pos, a) in self._first_adrg.items():
                r = int(rank[g])
                if y >= years[0] and r >= 0 and (r not in best or pos < best[r][0]):
                    best[r] = (pos, a)
            gadrg = np.array([best[i][1] for i in range(len(order))], dtype=object)
        return _weights(lambda: self._chunks(rank, int(years[0])), n_gy[order].sum(axis=1), seen[order], gadrg,
                        years, yw_policy, {k: v for k, v in counts.items() if v}, policy, self.group_column,
                        self.folder)


def compute_weights(history: pa.Table, policy: Policy, group_column: str = "drg") -> WeightResult:
    """Relative weights, mean cost and LOS, CV per group, and RIV, from history records
    (:class:`WeightHistory` gives the same batch by batch)."""
    with WeightHistory(group_column) as hist:
        hist.add(history)
        return hist.finish(policy)


def _percentile_cuts(chunks, cases: np.ndarray, rules, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each group's two ``trim_percentiles`` cut-offs: the costs go to bucket files by runs of
    groups (about :data:`BUCKET_CASES` cases each), each bucket is sorted alone."""
    ng = len(cases)
    bucket = np.zeros(ng, np.int64)
    first = [0]
    filled = 0
    for g in range(ng):
        if filled and filled + cases[g] > BUCKET_CASES:
            first.append(g)
            filled = 0
        bucket[g] = len(first) - 1
        filled += cases[g]
    paths = [folder / f"weight_history.bucket{b}" for b in range(len(first))]
    files = [open(p, "wb") for p in paths]
    try:
        for g, _, x, _ in chunks():
            b = bucket[g]
            for j in np.unique(b).tolist():
                m = b == j
                rec = np.empty(int(m.sum()), [("g", "<i4"), ("x", "<f8")])
                rec["g"], rec["x"] = g[m], x[m]
                rec.tofile(files[j])
    finally:
        for f in files:
            f.close()
    lo_cut, hi_cut = np.full(ng, np.nan), np.full(ng, np.nan)
    bounds = first + [ng]
    for j, p in enumerate(paths):
        rec = np.fromfile(p, [("g", "<i4"), ("x", "<f8")])
        p.unlink()
        g0, g1 = bounds[j], bounds[j + 1]
        local = rec["g"].astype(np.int64) - g0
        x = np.ascontiguousarray(rec["x"])
        del rec
        v = x[np.lexsort((x, local))]
        n = np.bincount(local, minlength=g1 - g0)
        lo_cut[g0:g1] = _cuts(v, n, rules.trim_percentiles[0])
        hi_cut[g0:g1] = _cuts(v, n, rules.trim_percentiles[1])
    return lo_cut, hi_cut


def _keep_rule(chunks, cases: np.ndarray, policy: Policy, folder: Path):
    """keep(group, cost) → True for the costs kept after the policy's per-group trimming:
    ``sd`` within ``trim_sd`` population standard deviations of the group mean (two passes),
    ``percentile`` between the group's two ``trim_percentiles`` (linear interpolation)."""
    rules = policy.weights
    ng = len(cases)
    if rules.trim == "none":
        return lambda g, x: np.ones(x.shape, dtype=bool)
    if rules.trim == "sd":
        n = cases.astype(np.float64)
        s = np.zeros(ng)
        for g, _, x, _ in chunks():
            _add_at(s, g, x)
        mean = s / np.maximum(n, 1)
        ss = np.zeros(ng)
        for g, _, x, _ in chunks():
            _add_sq_dev_at(ss, g, x, mean)
        sd = np.sqrt(ss / np.maximum(n, 1))
        return lambda g, x: np.abs(x - mean[g]) <= rules.trim_sd * sd[g] * (1 + 1e-12)
    lo_cut, hi_cut = _percentile_cuts(chunks, cases, rules, folder)
    return lambda g, x: (x >= lo_cut[g] - 1e-9) & (x <= hi_cut[g] + 1e-9)


def _weights(chunks, cases_all, names, gadrg, years, yw_policy, excluded, policy: Policy,
             group_column: str, folder: Path) -> WeightResult:
    """The weight table from the used cases (``chunks()``: their groups as ranks of sorted
    ``names``, year offsets, costs and lengths of stay, in file order; ``cases_all`` of them a
    group), a pass over them for each quantity that needs the previous one."""
    ng, ny = len(names), len(yw_policy)
    keep_of = _keep_rule(chunks, cases_all, policy, folder)
    how = policy.weights.small_group_rule
    if how == "adrg":
        if gadrg is None:
            gadrg = np.array([str(g)[:3] for g in names], dtype=object)
        anames, aid_of_group = np.unique(gadrg.astype(str), return_inverse=True)
        aid_of_group = aid_of_group.reshape(-1).astype(np.int64)
        na = len(anames)
        n_a, s_a = np.zeros(na * ny, np.int64), np.zeros(na * ny)

    # the kept cases: counts and sums per group and year (costs, LOS), per year, per group
    n_gy, s_gy = np.zeros(ng * ny, np.int64), np.zeros(ng * ny)
    nl_gy, sl_gy = np.zeros(ng * ny, np.int64), np.zeros(ng * ny)
    n_y, s_y = np.zeros(ny, np.int64), np.zeros(ny)
    s_g = np.zeros(ng)
    for g, y, x, lv in chunks():
        k = keep_of(g, x)
        g, y, x, lv = g[k], y[k], x[k], lv[k]
        cell = g * ny + y
        n_gy += np.bincount(cell, minlength=ng * ny)
        _add_at(s_gy, cell, x)
        n_y += np.bincount(y, minlength=ny)
        _add_at(s_y, y, x)
        lok = np.isfinite(lv)
        nl_gy += np.bincount(cell[lok], minlength=ng * ny)
        _add_at(sl_gy, cell[lok], lv[lok])
        _add_at(s_g, g, x)
        if how == "adrg":
            acell = aid_of_group[g] * ny + y
            n_a += np.bincount(acell, minlength=na * ny)
            _add_at(s_a, acell, x)
    n_gy, s_gy = n_gy.reshape(ng, ny), s_gy.reshape(ng, ny)
    used = n_gy.sum(axis=1)
    nkept = int(used.sum())
    trimmed = int(cases_all.sum()) - nkept
    if trimmed:
        excluded["trimmed"] = trimmed

    overall = _means(n_y.reshape(1, ny), s_y.reshape(1, ny), yw_policy)[0]
    gmean = _means(n_gy, s_gy, yw_policy)
    gmean_los = _means(nl_gy.reshape(ng, ny), sl_gy.reshape(ng, ny), yw_policy) if nl_gy.any() \
        else np.full(ng, np.nan)

    # CV and RIV on the kept costs, plain means
    mean_plain = s_g / np.maximum(used, 1)
    ssw_g = np.zeros(ng)

    def kept_costs():
        for g, _, x, _ in chunks():
            k = keep_of(g, x)
            g, x = g[k], x[k]
            _add_sq_dev_at(ssw_g, g, x, mean_plain)
            yield x

    mean_all = pairwise_sum(kept_costs(), nkept) / nkept if nkept else np.nan

    def sq_devs():
        for g, _, x, _ in chunks():
            yield (x[keep_of(g, x)] - mean_all) ** 2

    sst = pairwise_sum(sq_devs(), nkept) if nkept else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.where(used > 0, np.sqrt(ssw_g / np.maximum(used, 1)) / mean_plain, np.nan)
    riv = 1.0 - float(ssw_g.sum()) / sst if sst > 0 else float("nan")

    rule = np.full(ng, "WEIGHT_OK", dtype=object)
    mean_used = gmean.copy()
    small = used < policy.weights.min_cases
    if small.any():
        if how == "raw":
            rule[small] = "SMALL_GROUP_RAW"
        elif how == "none":
            mean_used[small] = np.nan
            rule[small] = "SMALL_GROUP_UNPRICED"
        else:  # adrg pool
            amean = _means(n_a.reshape(na, ny), s_a.reshape(na, ny), yw_policy)
            aused = n_a.reshape(na, ny).sum(axis=1)
            pool_ok = aused[aid_of_group] >= policy.weights.min_cases
            use_pool = small & pool_ok
            mean_used[use_pool] = amean[aid_of_group][use_pool]
            rule[use_pool] = "SMALL_GROUP_ADRG"
            mean_used[small & ~pool_ok] = np.nan
            rule[small & ~pool_ok] = "SMALL_GROUP_UNPRICED"

    weight = mean_used / overall
    table = pa.table({
        group_column: pa.array(names.astype(str).tolist(), pa.string()),
        "weight": pa.array(weight, pa.float64(), from_pandas=True),
        "mean_cost": pa.array(mean_used, pa.float64(), from_pandas=True),
        "mean_los": pa.array(gmean_los, pa.float64(), from_pandas=True),
        "cases": pa.array(cases_all, pa.int64()),
        "cases_used": pa.array(used, pa.int64()),
        "cv": pa.array(cv, pa.float64(), from_pandas=True),
        "rule": pa.array(rule.tolist(), pa.string()),
    })
    yweights = {str(int(y)): float(w) for y, w in zip(years, yw_policy)}
    return WeightResult(table, riv, excluded, yweights)


OFFICIAL_FLAGS = ("basic_group", "review_group", "tcm_group", "unstable_group")


def _bool_column(col, n: int, path, name: str) -> pa.Array:
    """A flag column as bool: bool as is; in a CSV the text true/false (as written by drgdip)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_boolean(col.type):
        return col
    s = pc.utf8_lower(text(col, n))
    ok = pc.or_(pc.is_null(s), pc.is_in(s, value_set=pa.array(["true", "false"])))
    if not pc.all(ok).as_py():
        raise InputError(f"{path}: {name} in row {pc.index(ok, False).as_py() + 2} is not true or false")
    return pc.equal(s, "true")


def read_weight_table(path, group_column: str = "drg") -> pa.Table:
    """A weight table from a file: computed weights (Parquet), an official table imported by
    ``drgdip weights import`` (Parquet; its flags and thresholds kept, typed) or an official
    table (CSV drg,weight). Rows with an empty weight stay (their cases: GROUP_NOT_PRICED)."""
    from drgdip.arrowio import read_table
    t = read_table(path)
    if group_column not in t.column_names or "weight" not in t.column_names:
        raise InputError(f"{path}: a weight table needs the columns {group_column} and weight")
    n = t.num_rows
    cols = {group_column: text(t[group_column], n)}
    w, bad = numeric(t["weight"], n)
    if pc.any(bad).as_py():
        first = pc.index(bad, True).as_py()
        raise InputError(f"{path}: weight in row {first + 2} is not a number")
    cols["weight"] = w
    for extra in ("mean_cost", "mean_los"):
        if extra in t.column_names:
            cols[extra] = numeric(t[extra], n)[0]
    # the contract columns of an imported official table (docs/official_tables.md), typed
    if "name" in t.column_names:
        cols["name"] = text(t["name"], n)
    for flag in OFFICIAL_FLAGS:
        if flag in t.column_names:
            cols[flag] = _bool_column(t[flag], n, path, flag)
    for k in ("low_k", "high_k"):
        if k in t.column_names:
            v, bad = numeric(t[k], n)
            if pc.any(bad).as_py():
                raise InputError(f"{path}: {k} in row {pc.index(bad, True).as_py() + 2} is not a number")
            cols[k] = v
    out = pa.table(cols)
    vc = pc.value_counts(out[group_column])
    dup = vc.filter(pc.greater(vc.field("counts"), 1))
    if len(dup):
        raise InputError(f"{path}: group {dup[0]['values'].as_py()} appears more than once")
    return out
