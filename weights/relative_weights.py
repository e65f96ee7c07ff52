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

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def trim_mask(cost: np.ndarray, gid: np.ndarray, ngroups: int, policy: Policy) -> np.ndarray:
    """True for the costs kept after the policy's per-group trimming."""
    rules = policy.weights
    if rules.trim == "none" or cost.size == 0:
        return np.ones(cost.shape, dtype=bool)
    if rules.trim == "sd":
        n = np.bincount(gid, minlength=ngroups).astype(np.float64)
        mean = np.bincount(gid, cost, ngroups) / np.maximum(n, 1)
        dev = cost - mean[gid]
        sd = np.sqrt(np.bincount(gid, dev * dev, ngroups) / np.maximum(n, 1))
        return np.abs(dev) <= rules.trim_sd * sd[gid] * (1 + 1e-12)
    # percentile: sort within group, interpolate each group's two cut-offs
    order = np.lexsort((cost, gid))
    v = cost[order]
    n = np.bincount(gid, minlength=ngroups)
    start = np.concatenate(([0], np.cumsum(n)[:-1]))

    def cut(p: float) -> np.ndarray:
        pos = p / 100.0 * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        frac = pos - lo
        safe = n > 0
        a = np.where(safe, v[np.minimum(start + lo, len(v) - 1)], np.nan)
        b = np.where(safe, v[np.minimum(start + hi, len(v) - 1)], np.nan)
        return a + (b - a) * frac

    lo_cut, hi_cut = cut(rules.trim_percentiles[0]), cut(rules.trim_percentiles[1])
    return (cost >= lo_cut[gid] - 1e-9) & (cost <= hi_cut[gid] + 1e-9)


def _weighted_means(x: np.ndarray, gid: np.ndarray, yid: np.ndarray, ngroups: int, yw: np.ndarray):
    """Per group: Σ_y w_y·mean_gy / Σ_{y with cases} w_y (nan where the group has no cases)."""
    ny = len(yw)
    cell = gid * ny + yid
    n = np.bincount(cell, minlength=ngroups * ny).reshape(ngroups, ny)
    s = np.bincount(cell, x, ngroups * ny).reshape(ngroups, ny)
    means = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    w = np.where(n > 0, yw[None, :], 0.0)
    den = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (means * w).sum(axis=1) / den, np.nan)


EXCLUSIONS = ("not grouped", "status not grouped", "cost missing or not positive", "discharge date unreadable",
              "older than the weighted years")


class WeightHistory:
    """History records gathered batch by batch for :func:`compute_weights`, a few bytes per case.

    Per usable case (grouped, a positive cost, a readable discharge date) it keeps the group
    (int32 into the groups seen), the year (int16), the cost and the length of stay
    (float64 each): 22 bytes. The trimming (standard deviations or percentiles per group)
    needs every cost of a group and the means are those of the whole history (sums in file
    order, numpy's own mean for RIV), so the arrays are kept rather than two passes made:
    :meth:`finish` computes exactly what :func:`compute_weights` computes on the whole
    table, whatever the batch size. Per group and year it keeps the first case's ADRG (for
    ``small_group_rule = "adrg"``).

    >>> hist = WeightHistory("drg")
    >>> for batch in grouped_batches: hist.add(batch)
    >>> result = hist.finish(policy)
    """

    def __init__(self, group_column: str = "drg"):
        self.group_column = group_column
        self._gid, self._year, self._cost, self._los = [], [], [], []
        self._groups: dict[str, int] = {}
        self._first_adrg: dict[tuple[int, int], tuple[int, str]] = {}
        self.has_adrg: bool | None = None
        self.counts = dict.fromkeys(EXCLUSIONS, 0)
        self.rows = 0
        self.kept = 0

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
        self._gid.append(gid.astype(np.int32))
        self._year.append(y.astype(np.int16))
        self._cost.append(c[rows].astype(np.float64))
        self._los.append(pc.fill_null(los, np.nan).to_numpy(zero_copy_only=False)[rows].astype(np.float64))
        self.rows += n
        self.kept += rows.size

    def finish(self, policy: Policy) -> WeightResult:
        """The weights of the history added so far (see :func:`compute_weights`)."""
        def cat(parts, dtype):
            return np.concatenate(parts) if parts else np.zeros(0, dtype)
        g_all = cat(self._gid, np.int32).astype(np.int64)
        year = cat(self._year, np.int16).astype(np.int64)
        c, lv_all = cat(self._cost, np.float64), cat(self._los, np.float64)
        counts = dict(self.counts)
        # years: the policy's weights aligned on the newest year of the history
        yw_policy = np.asarray(policy.weights.year_weights, dtype=np.float64)
        if year.size == 0:
            raise InputError("history has no usable case (grouped, with a positive cost and a discharge date)")
        newest = int(year.max())
        years = np.arange(newest - len(yw_policy) + 1, newest + 1)
        ok = year >= years[0]
        counts["older than the weighted years"] = int((~ok).sum())
        rows = np.flatnonzero(ok)
        present = np.unique(g_all[rows])
        seen = np.asarray(list(self._groups), dtype=object)
        order = present[np.argsort(seen[present].astype(str), kind="stable")]
        rank = np.full(len(seen), -1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        gadrg = None
        if self.has_adrg:
            best: dict[int, tuple[int, str]] = {}
            for (g, y), (pos, a) in self._first_adrg.items():
                r = int(rank[g])
                if y >= years[0] and r >= 0 and (r not in best or pos < best[r][0]):
                    best[r] = (pos, a)
            gadrg = np.array([best[i][1] for i in range(len(order))], dtype=object)
        return _weights(c[rows], rank[g_all[rows]], year[rows] - years[0], lv_all[rows], seen[order], gadrg,
                        years, yw_policy, {k: v for k, v in counts.items() if v}, policy, self.group_column)


def compute_weights(history: pa.Table, policy: Policy, group_column: str = "drg") -> WeightResult:
    """Relative weights, mean cost and LOS, CV per group, and RIV, from history records
    (:class:`WeightHistory` gives the same batch by batch)."""
    hist = WeightHistory(group_column)
    hist.add(history)
    return hist.finish(policy)


def _weights(x, gid, yid, lv, names, gadrg, years, yw_policy, excluded, policy: Policy,
             group_column: str) -> WeightResult:
    """The weight table from the used cases' costs, groups (ranks of sorted ``names``),
    year offsets and lengths of stay, in file order."""
    ng = len(names)
    cases_all = np.bincount(gid, minlength=ng)
    keep = trim_mask(x, gid, ng, policy)
    if (~keep).any():
        excluded["trimmed"] = int((~keep).sum())
    xk, gk, yk = x[keep], gid[keep], yid[keep]
    used = np.bincount(gk, minlength=ng)

    overall = _weighted_means(xk, np.zeros_like(gk), yk, 1, yw_policy)[0]
    gmean = _weighted_means(xk, gk, yk, ng, yw_policy)
    lv = lv[keep]
    lok = np.isfinite(lv)
    gmean_los = _weighted_means(lv[lok], gk[lok], yk[lok], ng, yw_policy) if lok.any() else np.full(ng, np.nan)

    # CV and RIV on the kept costs, plain means
    mean_plain = np.bincount(gk, xk, ng) / np.maximum(used, 1)
    dev = xk - mean_plain[gk]
    ssw_g = np.bincount(gk, dev * dev, ng)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.where(used > 0, np.sqrt(ssw_g / np.maximum(used, 1)) / mean_plain, np.nan)
    sst = float(((xk - xk.mean()) ** 2).sum()) if xk.size else 0.0
    riv = 1.0 - float(ssw_g.sum()) / sst if sst > 0 else float("nan")

    rule = np.full(ng, "WEIGHT_OK", dtype=object)
    mean_used = gmean.copy()
    small = used < policy.weights.min_cases
    how = policy.weights.small_group_rule
    if small.any():
        if how == "raw":
            rule[small] = "SMALL_GROUP_RAW"
        elif how == "none":
            mean_used[small] = np.nan
            rule[small] = "SMALL_GROUP_UNPRICED"
        else:  # adrg pool
            if gadrg is None:
                gadrg = np.array([str(g)[:3] for g in names], dtype=object)
            anames, aid_of_group = np.unique(gadrg.astype(str), return_inverse=True)
            aid = aid_of_group[gk]
            amean = _weighted_means(xk, aid, yk, len(anames), yw_policy)
            aused = np.bincount(aid, minlength=len(anames))
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
