"""What-if between two grouping schemes (分组方案切换测算): the same records grouped under
scheme A and scheme B, the transition matrix of groups, and what the switch does to each
hospital's, department's and group's points and payment.

This is what a payment office computes before it moves to a new version (1.1 → 2.0, 2.0 →
3.0) or adopts a localisation. The rules, worked by hand in docs/compare.md:

* Both sides group every record; ``transitions`` counts records per (group under A, group
  under B), largest first.
* With a policy, each side prices its cases with its own weights: the weight files given,
  or weights computed from the records themselves under that side's groups (the records
  then serve as the history, as an office re-derives weights when it changes version).
  Points are the policy's case points (:func:`weights.settlement.points.price_cases`).
* Payment at a constant pool (费用中性): per fund, the pool is the total cost of the
  records that have a known fund and a valid cost; each side shares the same pool out over
  its own priced cases in proportion to their points, in integer cents (largest remainder,
  so each side's cents add up to the pool exactly). A case that a side cannot price gets no
  share on that side and is counted in ``unpriced_a`` / ``unpriced_b``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, as_table, canonical_columns, numeric, text
from drgdip.grouper.drg.api import group_table, load_scheme
from drgdip.weights.relative_weights import compute_weights
from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import Policy
from drgdip.weights.settlement.settle import distribute_cents

GROUP_COLUMNS = ("mdc", "adrg", "drg", "status", "reason")


@dataclass
class SchemeComparison:
    """The records grouped under both schemes and the tables that compare them."""
    labels: tuple[str, str]
    cases: pa.Table                              # one row per record: id, keys, *_a, *_b
    transitions: pa.Table                        # drg_a, drg_b, cases, share
    by_hospital: pa.Table | None = None
    by_department: pa.Table | None = None
    by_group: pa.Table | None = None
    summary: dict = field(default_factory=dict)

    def text(self) -> str:
        s = self.summary
        a, b = self.labels
        lines = [f"{s['records']} records grouped under {a} and {b}: same DRG {s['same_drg']} "
                 f"({s['same_drg_pct']:.2f} %), same ADRG {s['same_adrg_pct']:.2f} %, same MDC {s['same_mdc_pct']:.2f} %; "
                 f"{s['distinct_transitions']} distinct (A, B) pairs"]
        lines.append(f"  status {a}: {s['status_a']}")
        lines.append(f"  status {b}: {s['status_b']}")
        if self.by_hospital is not None:
            for f, pv in s["point_value"].items():
                lines.append(f"  fund {f}: pool {s['pool'][f]:,.2f}, point value {a} {pv[0]:.6f}, {b} {pv[1]:.6f}")
            lines.append(f"  unpriced: {a} {s['unpriced_a']}, {b} {s['unpriced_b']}")
            h = self.by_hospital.sort_by([("payment_change", "ascending")]).to_pylist()
            if h:
                lines.append(f"  largest loss: {h[0]['hospital_id']} {h[0]['payment_change']:+,.2f}; "
                             f"largest gain: {h[-1]['hospital_id']} {h[-1]['payment_change']:+,.2f}")
        return "\n".join(lines)


def _side(table: pa.Table, scheme, codes) -> pa.Table:
    return group_table(table, scheme, codes).select(list(GROUP_COLUMNS))


def _counts(values: pa.Array) -> dict:
    vc = pc.value_counts(values)
    return dict(sorted((str(v["values"]), int(v["counts"])) for v in vc.to_pylist()))


def _weights(cases: pa.Table, given, policy: Policy) -> pa.Table:
    if given is not None:
        from drgdip.weights.relative_weights import read_weight_table
        return given if isinstance(given, pa.Table) else read_weight_table(given)
    return compute_weights(cases, policy).table


def _pay(points: np.ndarray, fund: np.ndarray, pools: dict[str, int]) -> tuple[np.ndarray, dict[str, float]]:
    """Each case's payment in cents at the fund's pool, and the point value per fund."""
    cents = np.zeros(points.size, dtype=np.int64)
    values = {}
    for f, pool in pools.items():
        m = (fund == f) & np.isfinite(points) & (points > 0)
        total = float(points[m].sum())
        if total <= 0:
            values[f] = float("nan")
            continue
        values[f] = pool / 100.0 / total
        cents[m] = distribute_cents(points[m] * (pool / 100.0 / total), pool)
    return cents, values


def _aggregate(keys: pa.Array, name: str, cases: pa.Table) -> pa.Table:
    t = pa.table({name: keys, "points_a": cases["points_a"], "points_b": cases["points_b"],
                  "cents_a": cases["cents_a"], "cents_b": cases["cents_b"],
                  "priced_a": pc.is_valid(cases["points_a"]), "priced_b": pc.is_valid(cases["points_b"])})
    g = t.group_by(name).aggregate([(name, "count"), ("points_a", "sum"), ("points_b", "sum"),
                                    ("cents_a", "sum"), ("cents_b", "sum")])
    ca = g["cents_a_sum"].to_numpy(zero_copy_only=False)
    cb = g["cents_b_sum"].to_numpy(zero_copy_only=False)
    change = cb - ca
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(ca != 0, np.round(change / np.where(ca != 0, ca, 1) * 100, 2), np.nan)
    out = pa.table({
        name: g[name],
        "cases": g[f"{name}_count"],
        "points_a": pc.round(pc.fill_null(g["points_a_sum"], 0.0), 4),
        "points_b": pc.round(pc.fill_null(g["points_b_sum"], 0.0), 4),
        "payment_a": pa.array(ca / 100.0),
        "payment_b": pa.array(cb / 100.0),
        "payment_change": pa.array(change / 100.0),
        "payment_change_pct": pa.array(pct, mask=~np.isfinite(pct)),
    })
    return out.sort_by([(name, "ascending")])


def compare_schemes(records, scheme_a, scheme_b, policy: Policy | None = None, *, weights_a=None, weights_b=None,
                    codes=None, labels: tuple[str, str] = ("A", "B")) -> SchemeComparison:
    """Group RECORDS under both schemes; with POLICY also price and pay them at a constant pool.

    ``scheme_a`` / ``scheme_b``: compiled schemes, paths, or None for the teaching scheme.
    ``weights_a`` / ``weights_b``: weight tables (or files) per side; None: computed from the
    records grouped under that side (they need a total cost and a discharge date)."""
    table = as_table(records).combine_chunks()
    n = table.num_rows
    if n == 0:
        raise InputError("no records to compare")
    sa, sb = load_scheme(scheme_a), load_scheme(scheme_b)
    ga, gb = _side(table, sa, codes), _side(table, sb, codes)
    ids = table["id"] if "id" in table.column_names else pa.array(np.arange(1, n + 1, dtype=np.int64))
    cols = {"id": ids}
    for c in GROUP_COLUMNS:
        cols[f"{c}_a"] = ga[c]
        cols[f"{c}_b"] = gb[c]
    cases = pa.table(cols)

    same = {c: int(pc.sum(pc.fill_null(pc.equal(ga[c], gb[c]), False)).as_py() or 0) for c in ("mdc", "adrg", "drg")}
    pair = pa.table({"drg_a": ga["drg"], "drg_b": gb["drg"], "one": pa.array(np.ones(n, dtype=np.int64))})
    tr = pair.group_by(["drg_a", "drg_b"]).aggregate([("one", "sum")]).rename_columns(["drg_a", "drg_b", "cases"])
    tr = tr.sort_by([("cases", "descending"), ("drg_a", "ascending"), ("drg_b", "ascending")])
    tr = tr.append_column("share_pct", pc.round(pc.multiply(pc.cast(tr["cases"], pa.float64()), 100.0 / n), 4))
    names_a, names_b = sa.names, sb.names
    tr = tr.append_column("name_a", pa.array([names_a.get(x, "") for x in tr["drg_a"].to_pylist()], pa.string()))
    tr = tr.append_column("name_b", pa.array([names_b.get(x, "") for x in tr["drg_b"].to_pylist()], pa.string()))
    summary = {
        "labels": list(labels), "scheme_a": sa.scheme_id, "scheme_b": sb.scheme_id,
        "records": n, "same_drg": same["drg"],
        "same_drg_pct": round(same["drg"] / n * 100, 4), "same_adrg_pct": round(same["adrg"] / n * 100, 4),
        "same_mdc_pct": round(same["mdc"] / n * 100, 4), "distinct_transitions": tr.num_rows,
        "status_a": _counts(ga["status"]), "status_b": _counts(gb["status"]),
    }
    result = SchemeComparison(labels, cases, tr, summary=summary)
    if policy is None:
        return result

    cc = canonical_columns(table.schema)
    for need in ("total_cost", "fund", "hospital_id"):
        if need not in cc:
            raise InputError(f"pricing the comparison needs a {need} column (or an alias of it)")
    base = table.drop([c for c in table.column_names if c in GROUP_COLUMNS])
    priced = []
    for side, g, given in (("a", ga, weights_a), ("b", gb, weights_b)):
        grouped = base
        for c in GROUP_COLUMNS:
            grouped = grouped.append_column(c, g[c])
        w = _weights(grouped, given, policy)
        priced.append(price_cases(grouped, w, policy))
    pa_, pb_ = priced
    fund = np.asarray(text(pa_["fund_key"], n).to_pylist(), dtype=object)
    cost = pc.fill_null(numeric(table[cc["total_cost"]], n)[0], np.nan).to_numpy(zero_copy_only=False)
    ok = (fund != None) & np.isfinite(cost) & (cost >= 0)  # noqa: E711 (element-wise)
    pools = {f: int(round(float(cost[ok & (fund == f)].sum()) * 100)) for f in sorted(set(fund[ok]))}
    pts = [pc.fill_null(p["points"], np.nan).to_numpy(zero_copy_only=False) for p in priced]
    cents_a, pv_a = _pay(pts[0], fund, pools)
    cents_b, pv_b = _pay(pts[1], fund, pools)
    cases = cases.append_column("fund_key", pa_["fund_key"])
    cases = cases.append_column("points_a", pa_["points"]).append_column("points_b", pb_["points"])
    cases = cases.append_column("cents_a", pa.array(cents_a)).append_column("cents_b", pa.array(cents_b))
    result.cases = cases
    result.by_hospital = _aggregate(text(table[cc["hospital_id"]], n), "hospital_id", cases)
    if "dept" in cc:
        result.by_department = _aggregate(text(table[cc["dept"]], n), "dept", cases)
    result.by_group = _aggregate(ga["drg"], "drg_a", cases)
    summary.update({
        "pool": {f: c / 100.0 for f, c in pools.items()},
        "point_value": {f: [round(pv_a[f], 6), round(pv_b[f], 6)] for f in pools},
        "unpriced_a": int(pc.sum(pc.is_null(pa_["points"])).as_py()),
        "unpriced_b": int(pc.sum(pc.is_null(pb_["points"])).as_py()),
        "payment_a": int(cents_a.sum()) / 100.0, "payment_b": int(cents_b.sum()) / 100.0,
    })
    return result
