"""DIP settlement (按病种分值付费结算): what ``drgdip settle --method dip|mixed`` adds to the DRG run.

The month and the year run through :func:`weights.settlement.runs.settle_month` / ``settle_annual``
exactly as for DRG; this module gives them what differs (docs/settlement.md "DIP settlement"):

- :class:`DipPricer`: a batch of records → grouped by the DIP catalogue
  (:func:`grouper.dip.api.group_dip`, 辅助目录 coefficients included) → priced by
  :func:`weights.dip_scores.price_dip_cases` with the policy's ``[dip_settlement]`` deviation
  thresholds and the prior-year same-level reference means; in a mixed region the cases of
  the hospitals the policy lists are priced so and the others by DRG, in one point pool.
- :func:`pool_total`: the 技术规范's settlement point value (结算点值)
  ``(budget ÷ reimbursement ratio) ÷ Σ points``: the money the points share is the budget
  divided by the fund's reimbursement ratio (instead of budget + personal share).
- :func:`budget_point_value`: the catalogue's 预算点值 (history cost ÷ history scores), reported.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, canonical_columns, numeric, read_table, text
from drgdip.weights.settlement.policy import FUNDS, Band, Policy, PolicyError

METHODS = ("drg", "dip", "mixed")
#: reason of a case left to the other method's run (policy [dip_settlement] pool = "separate")
OTHER_POOL = "SETTLED_BY_OTHER_METHOD"


def dip_pricing_policy(policy: Policy) -> Policy:
    """The policy as DIP prices with it: the deviation thresholds and payments of
    ``[dip_settlement]`` (one band: DIP has no weight bands), group means from the
    catalogue or the reference means (never the period's)."""
    ds = policy.dip_settlement
    dv = dataclasses.replace(policy.deviation, high_bands=(Band(None, ds.high_k),), high_payment=ds.high_payment,
                             high_add_on_share=ds.high_add_on_share, low_k=ds.low_k, low_payment=ds.low_payment,
                             group_mean="table")
    return dataclasses.replace(policy, deviation=dv)


def load_reference_means(policy: Policy) -> pa.Table | None:
    """The ``[dip_settlement] reference_means`` file (a path relative to the policy file) as
    (group_key, level, mean_cost), or None when the policy names none. Refused (InputError):
    a missing column, a non-positive or unreadable mean, a (group_key, level) pair twice."""
    name = policy.dip_settlement.reference_means
    if not name:
        return None
    path = Path(name)
    if not path.is_absolute() and policy.path:
        path = Path(policy.path).parent / path
    t = read_table(path)
    missing = [c for c in ("group_key", "level", "mean_cost") if c not in t.column_names]
    if missing:
        raise InputError(f"{path}: reference means need the columns group_key, level, mean_cost "
                         f"(missing {', '.join(missing)})")
    n = t.num_rows
    g, lv = text(t["group_key"], n), text(t["level"], n)
    mean, bad = numeric(t["mean_cost"], n)
    ok = pc.and_(pc.invert(pc.fill_null(bad, True)), pc.fill_null(pc.greater(mean, 0), False))
    if not pc.all(ok).as_py() or pc.any(pc.is_null(g)).as_py() or pc.any(pc.is_null(lv)).as_py():
        raise InputError(f"{path}: every row needs a group_key, a level and a positive mean_cost")
    key = pc.binary_join_element_wise(g, lv, "@")
    if pc.count_distinct(key).as_py() != n:
        raise InputError(f"{path}: a (group_key, level) pair occurs more than once")
    unknown = sorted(set(lv.to_pylist()) - set(policy.coefficient_level))
    if unknown:
        raise InputError(f"{path}: level(s) {', '.join(unknown)} are not in the policy's coefficients.level")
    return pa.table({"group_key": g, "level": lv, "mean_cost": pc.cast(mean, pa.float64())})


def pool_total(policy: Policy, period: str):
    """``pool_total(fund, budget_cents, personal_cents) -> cents`` for
    :class:`weights.settlement.settle.MonthTotals` / ``settle_year``: the budget ÷ the fund's
    reimbursement ratio (统筹基金实际报销比例), exactly, rounded half up to a cent; None for
    ``point_value = "budget_personal"`` (the DRG form). Refused (PolicyError) when a fund
    with money for the period has no ratio."""
    ds = policy.dip_settlement
    if ds.point_value != "settlement":
        return None
    from drgdip.weights.settlement.settle import exact_decimal, half_up
    missing = [f for f in FUNDS if policy.has_money_for(f, period) and f not in ds.reimbursement_ratio]
    if missing:
        raise PolicyError(f"{policy.path or 'policy'}: dip_settlement.reimbursement_ratio has no "
                          f"{' or '.join(missing)}: the settlement point value (结算点值) divides the budget by it "
                          "(or set dip_settlement.point_value = \"budget_personal\")")
    ratios = {f: exact_decimal(r) for f, r in ds.reimbursement_ratio.items()}

    def total(fund: str, budget_cents: int, personal_cents: int) -> int:
        return half_up(Fraction(budget_cents) / ratios[fund])
    return total


def budget_point_value(catalog) -> float | None:
    """预算点值 of the catalogue's history: Σ(cases × mean_cost) ÷ Σ(cases × score), in yuan
    per point (None when the catalogue has no cases or mean_cost column)."""
    from drgdip.grouper.dip.api import prepare_catalog
    t = prepare_catalog(catalog).table
    if "cases" not in t.column_names or "mean_cost" not in t.column_names:
        return None
    cases = np.nan_to_num(t["cases"].to_numpy(zero_copy_only=False).astype(np.float64))
    cost = sum(Fraction(repr(float(m))) * int(c) for m, c in
               zip(t["mean_cost"].to_numpy(zero_copy_only=False), cases) if np.isfinite(m))
    score = sum(Fraction(repr(float(s))) * int(c) for s, c in zip(t["score"].to_numpy(), cases))
    return None if score == 0 else round(float(cost / score), 6)


def _payment_method(priced: pa.Table, method: str) -> pa.Table:
    """``payment_method``: the method for priced rows, ``none`` for unpriced ones; a value the
    pricing already set other than drg/dip (a per-diem or fee-for-service case) is kept."""
    priced_rows = pc.is_valid(priced["points"])
    mine = pc.if_else(priced_rows, pa.scalar(method), pa.scalar("none"))
    if "payment_method" in priced.column_names:
        old = priced["payment_method"]
        keep = pc.fill_null(pc.invert(pc.is_in(old, pa.array(["drg", "dip", "none"]))), False)
        col = pc.if_else(keep, old, mine)
        return priced.set_column(priced.schema.get_field_index("payment_method"), "payment_method", col)
    return priced.append_column("payment_method", mine)


def _leave_to_other(priced: pa.Table, mask: np.ndarray) -> pa.Table:
    """Rows of ``mask`` unpriced with OTHER_POOL (settled by the other method's run): no points,
    and none of this run's weight, ratio, review or readmission columns (this run does not
    price them: a case held for review there is not held here)."""
    if not mask.any():
        return priced
    m = pa.array(mask)
    sets = {"points": pa.scalar(None, pa.float64()), "base_points": pa.scalar(None, pa.float64()),
            "case_type": pa.scalar("unpriced"), "pricing_reason": pa.scalar(OTHER_POOL)}
    for name in ("weight", "group_mean_cost", "cost_ratio", "review_trigger", "review_status", "readmission_of"):
        if name in priced.column_names:
            sets[name] = pa.scalar(None, priced[name].type)
    for name, value in sets.items():
        if name not in priced.column_names:
            continue
        col = pc.if_else(m, value, priced[name])
        priced = priced.set_column(priced.schema.get_field_index(name), name, col)
    if "payment_method" in priced.column_names:
        col = pc.if_else(m, pa.scalar("none"), priced["payment_method"])
        priced = priced.set_column(priced.schema.get_field_index("payment_method"), "payment_method", col)
    return priced


def _combine(drg: pa.Table, dip: pa.Table, is_dip: np.ndarray) -> pa.Table:
    """The DRG-priced table with the DIP rows' pricing columns and the dip_* grouping columns."""
    from drgdip.weights.settlement.points import PRICE_COLUMNS
    m = pa.array(is_dip)
    out = drg
    for name in list(PRICE_COLUMNS) + ["payment_method"]:
        if name in drg.column_names and name in dip.column_names:
            col = pc.if_else(m, dip[name], drg[name])
            out = out.set_column(out.schema.get_field_index(name), name, col)
    for name in dip.column_names:
        if name.startswith("dip_") and name not in out.column_names:
            out = out.append_column(name, dip[name])
    return out


class DipPricer:
    """A batch of records → priced cases (``weights.settlement.points.price_cases``' columns plus the
    DIP grouping's dip_* columns and ``payment_method``), for ``settle --method dip|mixed``.

    ``drg_price(table) -> priced``: the DRG pricing of the run (mixed only)."""

    def __init__(self, catalog, policy: Policy, period: str, method: str = "dip", duplicate_ids=None,
                 drg_price=None):
        from drgdip.grouper.dip.api import prepare_catalog
        if method not in ("dip", "mixed"):
            raise ValueError(method)
        if policy.form != "point":
            raise PolicyError(f"{policy.path or 'policy'}: DIP settles by points (分值): region.form must be "
                              "\"point\"")
        ds = policy.dip_settlement
        if method == "mixed":
            if not ds.hospitals:
                raise PolicyError(f"{policy.path or 'policy'}: --method mixed needs dip_settlement.hospitals "
                                  "(the hospitals settled by DIP)")
            if ds.pool != "shared":
                raise PolicyError(f"{policy.path or 'policy'}: dip_settlement.pool = \"separate\": settle the "
                                  "two methods in two runs (--method drg and --method dip, each with its own "
                                  "policy budget and ledger), not --method mixed")
        self.catalog = prepare_catalog(catalog)
        self.policy, self.period, self.method = policy, period, method
        self.dip_policy = dip_pricing_policy(policy)
        self.reference = load_reference_means(policy)
        self.duplicate_ids, self.drg_price = duplicate_ids, drg_price
        self.hospitals = pa.array(list(ds.hospitals), pa.string())
        #: the period's priceable cases per catalogue row (special review's small_group), set by the run
        self.group_counts = None
        if method == "mixed" and policy.readmission.days > 0:
            raise PolicyError(f"{policy.path or 'policy'}: readmission.days = {policy.readmission.days}: --method "
                              "mixed does not pair readmissions (DRG and DIP keys differ); settle the two methods "
                              "in two runs (pool = \"separate\") or set readmission.days = 0")
        if method == "dip":
            from drgdip.weights.dip_scores import check_dip_readmission
            check_dip_readmission(policy)

    def group(self, table: pa.Table) -> pa.Table:
        """The records grouped by the DIP catalogue (``dip_*`` columns added)."""
        from drgdip.grouper.dip.api import group_dip
        return group_dip(table, self.catalog)

    def count_groups(self, table: pa.Table, counts: np.ndarray, period: str | None = None) -> None:
        """Add a batch's priceable cases per DIP group (catalogue row) to ``counts``
        (:func:`weights.dip_scores.dip_group_counts`; special review's ``small_group``). In a
        separate-pool run only the listed hospitals' cases count."""
        from drgdip.weights.dip_scores import dip_group_counts
        ds = self.policy.dip_settlement
        if self.method == "mixed" or (ds.hospitals and ds.pool == "separate"):
            table = table.filter(pa.array(self._dip_rows(table)))
        dip_group_counts(self.group(table), self.catalog, self.dip_policy, counts, period=period or self.period,
                         duplicate_ids=self.duplicate_ids)

    def _dip_rows(self, table: pa.Table) -> np.ndarray:
        cols = canonical_columns(table.schema)
        if not len(self.hospitals) or "hospital_id" not in cols:
            return np.zeros(table.num_rows, bool)
        h = text(table[cols["hospital_id"]], table.num_rows)
        return pc.fill_null(pc.is_in(h, value_set=self.hospitals), False).to_numpy(zero_copy_only=False)

    def __call__(self, table: pa.Table, review=None, readmissions=None) -> pa.Table:
        """``review``: the run's special-review context of these rows (quota verdict, decisions;
        :class:`weights.settlement.special_review.ReviewContext`), the DIP group counts added
        from :attr:`group_counts`; ``readmissions``: the file's readmission flags of these rows
        (--method dip only)."""
        from drgdip.weights.dip_scores import price_dip_cases
        ds = self.policy.dip_settlement
        grouped = self.group(table)
        dip_review = None if review is None else dataclasses.replace(review, group_counts=self.group_counts)
        dip = _payment_method(price_dip_cases(grouped, self.catalog, self.dip_policy, period=self.period,
                                              duplicate_ids=self.duplicate_ids,
                                              reference_means=self.reference, review=dip_review,
                                              readmissions=readmissions), "dip")
        if self.method == "dip":
            if ds.hospitals and ds.pool == "separate":
                return _leave_to_other(dip, ~self._dip_rows(table))
            return dip
        if ds.points_factor != 1.0:
            # DIP points only: a per-diem or fee-for-service case's points are the pool's own
            # (policy [per_diem], [fee_for_service]), the same at a DRG hospital
            own = pc.fill_null(pc.invert(pc.is_in(dip["payment_method"], pa.array(["per_diem", "fee_for_service"]))),
                               True)
            for name in ("points", "base_points"):
                col = pc.if_else(own, pc.multiply(dip[name], pa.scalar(ds.points_factor)), dip[name])
                dip = dip.set_column(dip.schema.get_field_index(name), name, col)
        drg = _payment_method(self.drg_price(table, None if review is None else dataclasses.replace(review)), "drg")
        return _combine(drg, dip, self._dip_rows(table))


def leave_dip_hospitals(priced: pa.Table, policy: Policy) -> pa.Table:
    """A DRG run's priced cases with those of the policy's DIP hospitals unpriced (OTHER_POOL),
    when ``[dip_settlement] pool = "separate"`` lists hospitals; else as given."""
    ds = policy.dip_settlement
    if ds is None or not ds.hospitals or ds.pool != "separate":
        return priced
    cols = canonical_columns(priced.schema)
    if "hospital_id" not in cols:
        return priced
    h = text(priced[cols["hospital_id"]], priced.num_rows)
    mask = pc.fill_null(pc.is_in(h, value_set=pa.array(list(ds.hospitals), pa.string())), False)
    return _leave_to_other(priced, mask.to_numpy(zero_copy_only=False))
