"""Hospital view (医院端模拟测算): one hospital's cases priced like the office would price them.

The same :func:`weights.settlement.points.price_cases` with a known point value per fund (by default
the ledger's last monthly value), then revenue (points × point value, what the stay
brings in fund and personal share together) against cost (total_cost), by DRG,
department and doctor, with:

- ``cmi`` (病例组合指数) = mean weight of the priced cases;
- ``cost_index`` (费用消耗指数) = Σ_g n_g·(mean cost_g here / region mean cost_g) / Σ_g n_g,
  which is the mean over cases of cost / region mean cost of the case's group
  (the weight table's ``mean_cost``);
- ``time_index`` (时间消耗指数): the same with length of stay (``mean_los``).

Unpriced cases are counted (``unpriced``) and their cost shown, never dropped.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, canonical_columns, numeric, text
from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import Policy

DIMENSIONS = {"drg": None, "dept": "dept", "doctor": "doctor_id"}


def last_point_values(conn) -> tuple[str, dict[str, float]]:
    """(period, fund → point value) of the ledger's latest current monthly run."""
    row = conn.execute("SELECT run_id, period FROM runs WHERE kind='monthly' AND current=1 "
                       "ORDER BY period DESC LIMIT 1").fetchone()
    if row is None:
        raise InputError("the ledger has no monthly settlement yet: give the point values (--point-value)")
    values = {f: v for f, v in conn.execute("SELECT fund, point_value FROM fund_results WHERE run_id=?",
                                            (row[0],)) if v is not None}
    return row[1], values


def simulate(records: pa.Table, group_weights: pa.Table, policy: Policy, point_values: dict[str, float],
             hospital_id: str | None = None, group_column: str = "drg") -> dict[str, pa.Table]:
    """Priced cases and the revenue-vs-cost tables by group, department and doctor."""
    cols = canonical_columns(records.schema)
    if hospital_id is not None:
        if "hospital_id" not in cols:
            raise InputError("records have no hospital_id column")
        records = records.filter(pc.fill_null(pc.equal(text(records[cols["hospital_id"]], records.num_rows),
                                                       hospital_id), False))
        if records.num_rows == 0:
            raise InputError(f"no record of hospital {hospital_id}")
    priced = price_cases(records, group_weights, policy, group_column=group_column)
    n = priced.num_rows
    points = pc.fill_null(priced["points"], np.nan).to_numpy(zero_copy_only=False)
    fund = np.array(priced["fund_key"].to_pylist(), dtype=object)
    pv = np.array([point_values.get(f, np.nan) if f is not None else np.nan for f in fund], dtype=np.float64)
    revenue = points * pv
    cost = pc.fill_null(numeric(priced[cols["total_cost"]], n)[0], np.nan).to_numpy(zero_copy_only=False)
    priced_ok = np.isfinite(revenue)
    groups = text(priced[group_column], n)
    at = pc.index_in(groups, value_set=text(group_weights[group_column], group_weights.num_rows))
    idx = pc.fill_null(at, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    found = pc.is_valid(at).to_numpy(zero_copy_only=False)

    def region(col: str) -> np.ndarray:
        if col not in group_weights.column_names or group_weights.num_rows == 0:
            return np.full(n, np.nan)
        v = pc.fill_null(numeric(group_weights[col], group_weights.num_rows)[0], np.nan).to_numpy(
            zero_copy_only=False)
        return np.where(found, v[idx], np.nan)

    with np.errstate(invalid="ignore", divide="ignore"):
        cost_rel = cost / region("mean_cost")
        los = (pc.fill_null(numeric(priced[cols["los_days"]], n)[0], np.nan).to_numpy(zero_copy_only=False)
               if "los_days" in cols else np.full(n, np.nan))
        time_rel = los / region("mean_los")
    weight = pc.fill_null(priced["weight"], np.nan).to_numpy(zero_copy_only=False)
    cases = priced.append_column("revenue", pa.array(np.where(priced_ok, np.round(revenue, 2), np.nan),
                                                     pa.float64(), from_pandas=True))
    out = {"cases": cases}
    for dim, canon in DIMENSIONS.items():
        if canon is None:
            key = groups
        elif canon in cols:
            key = text(priced[cols[canon]], n)
        else:
            continue
        out[dim] = _by(pc.fill_null(key, "(none)"), dim, priced_ok, weight, revenue, cost, cost_rel, time_rel)
    return out


def _by(key: pa.Array, name: str, ok, weight, revenue, cost, cost_rel, time_rel) -> pa.Table:
    enc = pc.dictionary_encode(key)
    names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    k = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    m = len(names)

    def s(x, mask):
        return np.bincount(k[mask], x[mask], m)

    n_ok = np.bincount(k[ok], minlength=m)
    n_all = np.bincount(k, minlength=m)
    cr, tr = ok & np.isfinite(cost_rel), ok & np.isfinite(time_rel)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = {
            name: names.tolist(), "cases": n_ok, "unpriced": n_all - n_ok,
            "cmi": s(weight, ok) / n_ok,
            "revenue": np.round(s(revenue, ok), 2), "cost": np.round(s(cost, ok), 2),
            "profit": np.round(s(revenue, ok) - s(cost, ok), 2),
            "unpriced_cost": np.round(s(np.nan_to_num(cost), ~ok), 2),
            "cost_index": s(cost_rel, cr) / np.bincount(k[cr], minlength=m),
            "time_index": s(time_rel, tr) / np.bincount(k[tr], minlength=m),
        }
    t = pa.table({c: pa.array(v, from_pandas=True) if c != name else pa.array(v, pa.string())
                  for c, v in table.items()})
    order = np.lexsort((np.asarray(names, dtype=str), table["profit"]))
    return t.take(pa.array(order))


def report_text(tables: dict[str, pa.Table], limit: int = 20) -> str:
    """Revenue vs cost tables, loss-making rows first."""
    parts = []
    for dim in DIMENSIONS:
        if dim not in tables:
            continue
        t = tables[dim]
        parts.append(f"by {dim} ({t.num_rows} rows, loss-making first)")
        parts.append(f"{dim:<14} {'cases':>6} {'unpriced':>8} {'cmi':>7} {'revenue':>14} {'cost':>14} "
                     f"{'profit':>14} {'cost idx':>8} {'time idx':>8}")
        for r in t.slice(0, limit).to_pylist():
            def f(x, w, p):
                return f"{'-':>{w}}" if x is None or x != x else f"{x:>{w}.{p}f}"
            parts.append(f"{str(r[dim]):<14} {r['cases']:>6} {r['unpriced']:>8} {f(r['cmi'], 7, 3)} "
                         f"{f(r['revenue'], 14, 2)} {f(r['cost'], 14, 2)} {f(r['profit'], 14, 2)} "
                         f"{f(r['cost_index'], 8, 3)} {f(r['time_index'], 8, 3)}")
        parts.append("")
    return "\n".join(parts)
