"""Point value (点值) and hospital payments, per fund: monthly pre-settlement and annual settlement.

API (every function takes and returns Arrow tables or plain values):

``price_cases(cases, group_weights, policy, group_column="drg", weight_column="weight",
base_points=None, period=None) -> pa.Table``   (from :mod:`weights.points`)
    Case type, reason and points for each record; generic over the group key (DRG code
    and relative weight, or DIP group and score with ``base_points=1``).

``settle_period(priced, policy, period, group_column="drg") -> Settlement``
    Monthly pre-settlement (月度预结算) of priced cases: per fund (employee / resident,
    分账核算) ``point_value = (budget + personal share of the priced cases) / Σ points``;
    in the rate form (费率法) with a published rate, ``point_value = rate``. Each case's
    ``amount = points × point_value`` in yuan to 0.01, ``fund_amount = amount −
    personal_share``; per hospital ``amount_due = Σ amount − Σ personal_share``,
    ``withheld = amount_due × withholding_share`` (质量保证金), ``paid = amount_due − withheld``.

``settle_year(monthly, policy, year) -> Settlement``
    Annual settlement (年度清算): the months' per-hospital points and personal shares
    (``monthly``: the ledger's hospital rows of the year's current monthly runs) are priced
    again with the year's budget; surplus kept / overspend shared bands (结余留用、超支分担)
    give each hospital an ``adjustment``; ``balance = amount_due + adjustment − Σ paid``
    is what the fund still owes (positive) or recovers (negative).

``distribute_cents(values, total) -> np.ndarray``
    Largest-remainder rounding (最大余数法) of yuan amounts to integer cents summing to ``total``.

Rounding: every amount is computed in float64, then turned into integer cents by
largest remainder: each value is floored to a cent, and the cents still missing to reach
the exact total go one each to the values with the largest dropped fractions (ties: the
earlier row first). So for each fund Σ case amounts = budget + personal share to the cent,
and Σ hospital amounts due = budget to the cent. The same rule spreads the withholding
over hospitals (total = withholding share × Σ positive amounts due, rounded half up).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grouper.io import canonical_columns, numeric, text
from weights.points import price_cases  # noqa: F401  (re-exported: part of this API)
from weights.policy import FUNDS, Band, Policy

HOSPITAL_COLUMNS = ("hospital_id", "fund", "cases", "unpriced_cases", "cmi", "points", "point_value",
                    "personal_share", "payment", "amount_due", "withheld", "paid", "cost", "unpriced_cost")
ANNUAL_COLUMNS = ("adjustment", "monthly_paid", "monthly_withheld", "balance")


@dataclass
class Settlement:
    """One settlement run: per-case amounts (monthly only), per-hospital rows, per-fund figures."""
    period: str
    kind: str                                    # "monthly" | "annual"
    hospitals: pa.Table                          # money in integer cents (columns *_cents)
    funds: dict[str, dict]                       # fund → figures (money in yuan)
    cases: pa.Table | None = None                # priced cases + amount, fund_amount (yuan)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"period": self.period, "kind": self.kind, "funds": self.funds, "notes": self.notes}


# ---------------------------------------------------------------- rounding

def to_cents(yuan: np.ndarray) -> np.ndarray:
    """Yuan → integer cents, half away from zero (inputs already to 0.01 stay exact)."""
    y = np.asarray(yuan, dtype=np.float64) * 100.0
    return (np.sign(y) * np.floor(np.abs(y) + 0.5 + 1e-9)).astype(np.int64)


def distribute_cents(values_yuan: np.ndarray, total_cents: int) -> np.ndarray:
    """Integer cents for each value, summing exactly to ``total_cents`` (largest remainder)."""
    v = np.asarray(values_yuan, dtype=np.float64) * 100.0
    n = v.size
    if n == 0:
        if total_cents != 0:
            raise ValueError(f"cannot spread {total_cents} cents over no rows")
        return np.zeros(0, dtype=np.int64)
    base = np.floor(v)
    rem = v - base
    out = base.astype(np.int64)
    short = int(total_cents - out.sum())
    if abs(short) > n:
        raise ValueError(f"rounding gap of {short} cents over {n} rows: the values do not add up to the total")
    if short > 0:
        order = np.lexsort((np.arange(n), -rem))
        out[order[:short]] += 1
    elif short < 0:
        order = np.lexsort((np.arange(n), rem))
        out[order[:-short]] -= 1
    return out


def yuan(cents) -> float:
    return round(int(cents) / 100.0, 2)


# ---------------------------------------------------------------- monthly

def _point_value(policy: Policy, fund: str, period: str, points_total: float,
                 personal_cents: int) -> tuple[float | None, int | None, int]:
    """(point value, budget in cents or None, total payment in cents) for one fund."""
    rate = policy.rate_for(fund, period) if policy.form == "rate" else None
    if rate is not None:
        total = int(to_cents(np.array([points_total * rate]))[0])
        return rate, None, total
    budget = int(to_cents(np.array([policy.budget_for(fund, period)]))[0])
    if points_total <= 0:
        return None, budget, 0
    return (budget + personal_cents) / 100.0 / points_total, budget, budget + personal_cents


def fund_codes(fund: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Index of each row's fund in FUNDS (len(FUNDS) for none)."""
    return pc.fill_null(pc.index_in(fund, value_set=pa.array(FUNDS)), len(FUNDS)).to_numpy(
        zero_copy_only=False).astype(np.int64)


def _hospital_keys(hosp: pa.Array | pa.ChunkedArray, fcode: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hospital ids, fund names, row → key index) for the (hospital, fund) pairs, sorted."""
    h = pc.fill_null(hosp, "")
    if isinstance(h, pa.ChunkedArray):
        h = h.combine_chunks()
    enc = pc.dictionary_encode(h)
    dic = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    order = np.argsort(dic.astype(str), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    width = len(FUNDS) + 1
    combined = rank[enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)] * width + fcode
    keys, inv = np.unique(combined, return_inverse=True)
    names = np.array(list(FUNDS) + [""], dtype=object)
    return dic[order][keys // width], names[keys % width], inv.reshape(-1)


def _np(a, fill):
    return pc.fill_null(a, fill).to_numpy(zero_copy_only=False)


def settle_period(priced: pa.Table, policy: Policy, period: str) -> Settlement:
    """Monthly pre-settlement of cases priced by :func:`price_cases` (see the module doc)."""
    n = priced.num_rows
    cols = canonical_columns(priced.schema)
    points = _np(priced["points"], np.nan)
    pool = np.isfinite(points)
    fcode = fund_codes(priced["fund_key"])
    personal = to_cents(np.nan_to_num(_np(numeric(priced[cols["personal_share"]], n)[0], 0.0))) \
        if "personal_share" in cols else np.zeros(n, np.int64)
    cost = to_cents(np.nan_to_num(_np(numeric(priced[cols["total_cost"]], n)[0], 0.0)))
    weight = np.nan_to_num(_np(priced["weight"], np.nan))

    amount = np.zeros(n, dtype=np.int64)
    funds: dict[str, dict] = {}
    value_of: dict[str, float | None] = {}
    notes: list[str] = []
    for fi, f in enumerate(FUNDS):
        m = pool & (fcode == fi)
        ptotal = float(points[m].sum())
        ps = int(personal[m].sum())
        has_budget = f in policy.budget and period in policy.budget[f]
        has_rate = policy.form == "rate" and policy.rate_for(f, period) is not None
        if not m.any() and not has_budget and not has_rate:
            continue
        value, budget, total = _point_value(policy, f, period, ptotal, ps)
        value_of[f] = value
        if m.any():
            amount[m] = distribute_cents(points[m] * value, total)
        elif budget:
            notes.append(f"{f}: no priced case in {period}; the budget of {yuan(budget):.2f} is not spent")
        unp = (~pool) & (fcode == fi)
        funds[f] = {
            "budget": yuan(budget) if budget is not None else None,
            "rate": value if policy.form == "rate" and budget is None else None,
            "personal_share": yuan(ps), "total_points": ptotal, "point_value": value,
            "cases": int(m.sum()), "unpriced_cases": int(unp.sum()), "unpriced_cost": yuan(cost[unp].sum()),
            "payment": yuan(amount[m].sum()),
        }
    unknown = (~pool) & (fcode == len(FUNDS))
    if unknown.any():
        notes.append(f"{int(unknown.sum())} case(s) of no known fund are unpriced (see review)")

    hid, hfund, key = _hospital_keys(text(priced[cols["hospital_id"]], n) if "hospital_id" in cols
                                     else pa.nulls(n, pa.string()), fcode)
    keep_key = hfund != ""
    k = len(hid)

    def per(x, mask=pool):
        return np.bincount(key[mask], x[mask] if x is not None else None, k)

    cases_n = per(None).astype(np.int64)
    unpriced_n = per(None, ~pool).astype(np.int64)
    points_h = per(points)
    wsum = per(weight)
    ps_h = per(personal.astype(np.float64)).astype(np.int64)
    pay_h = per(amount.astype(np.float64)).astype(np.int64)
    cost_h = per(cost.astype(np.float64)).astype(np.int64)
    ucost_h = per(cost.astype(np.float64), ~pool).astype(np.int64)
    due_h = pay_h - ps_h
    withheld = np.zeros(k, np.int64)
    share = policy.settlement.withholding_share
    for f in funds:
        m = (hfund == f)
        pos = np.maximum(due_h[m], 0) / 100.0
        target = int(to_cents(np.array([pos.sum() * share]))[0])
        withheld[m] = distribute_cents(pos * share, target)
    paid = due_h - withheld
    with np.errstate(invalid="ignore", divide="ignore"):
        cmi = np.where(cases_n > 0, wsum / np.maximum(cases_n, 1), np.nan)
    pv = np.array([value_of.get(f) if value_of.get(f) is not None else np.nan for f in hfund], dtype=np.float64)

    hospitals = pa.table({
        "hospital_id": pa.array(hid.tolist(), pa.string()), "fund": pa.array(hfund.tolist(), pa.string()),
        "cases": cases_n, "unpriced_cases": unpriced_n,
        "cmi": pa.array(cmi, pa.float64(), from_pandas=True), "weight_sum": wsum, "points": points_h,
        "point_value": pa.array(pv, pa.float64(), from_pandas=True),
        "personal_share_cents": ps_h, "payment_cents": pay_h, "amount_due_cents": due_h,
        "withheld_cents": withheld, "paid_cents": paid, "cost_cents": cost_h, "unpriced_cost_cents": ucost_h,
    }).filter(pa.array(keep_key))
    for f in funds:
        m = np.asarray(hospitals["fund"].to_pylist(), dtype=object) == f
        h = hospitals.filter(pa.array(m))
        funds[f].update({
            "amount_due": yuan(pc.sum(h["amount_due_cents"]).as_py() or 0),
            "withheld": yuan(pc.sum(h["withheld_cents"]).as_py() or 0),
            "paid": yuan(pc.sum(h["paid_cents"]).as_py() or 0),
            "hospitals": int(h.num_rows),
        })
    cases = priced.append_column("amount", pa.array(np.where(pool, amount / 100.0, np.nan), pa.float64(),
                                                    from_pandas=True))
    cases = cases.append_column("fund_amount", pa.array(np.where(pool, (amount - personal) / 100.0, np.nan),
                                                        pa.float64(), from_pandas=True))
    return Settlement(period, "monthly", hospitals, funds, cases, notes)


# ---------------------------------------------------------------- annual

def band_share(amount: np.ndarray, base: np.ndarray, bands: tuple[Band, ...]) -> np.ndarray:
    """Σ over bands of band share × the part of ``amount`` lying in the band, where band b
    covers [up_to_(b−1) × base, up_to_b × base) (the last band: the rest)."""
    amount = np.maximum(np.asarray(amount, np.float64), 0.0)
    base = np.maximum(np.asarray(base, np.float64), 0.0)
    out = np.zeros_like(amount)
    lo = np.zeros_like(amount)
    for b in bands:
        hi = np.full_like(amount, np.inf) if b.below is None else b.below * base
        part = np.clip(amount, lo, hi) - lo
        out += b.value * np.maximum(part, 0.0)
        lo = hi
    return out


def settle_year(monthly: pa.Table, policy: Policy, year: str) -> Settlement:
    """Annual settlement (年度清算) from the months' per-hospital rows (see the module doc).

    ``monthly`` columns: hospital_id, fund, cases, unpriced_cases, weight_sum, points,
    personal_share_cents, payment_cents, amount_due_cents, withheld_cents, paid_cents, cost_cents,
    unpriced_cost_cents (one row per hospital, fund and month)."""
    hid, hfund, key = _hospital_keys(monthly["hospital_id"], fund_codes(monthly["fund"]))
    k = len(hid)

    def tot(name, dtype=np.int64):
        return np.bincount(key, monthly[name].to_numpy(zero_copy_only=False).astype(np.float64), k).astype(dtype)

    cases_n, unpriced_n = tot("cases"), tot("unpriced_cases")
    points_h, wsum = tot("points", np.float64), tot("weight_sum", np.float64)
    ps_h, cost_h, ucost_h = tot("personal_share_cents"), tot("cost_cents"), tot("unpriced_cost_cents")
    mpaid, mwithheld = tot("paid_cents"), tot("withheld_cents")
    pay_h = np.zeros(k, np.int64)
    pv = np.full(k, np.nan)
    funds: dict[str, dict] = {}
    for f in FUNDS:
        m = hfund == f
        if not m.any():
            continue
        ptotal, ps = float(points_h[m].sum()), int(ps_h[m].sum())
        value, budget, total = _point_value(policy, f, year, ptotal, ps)
        if value is not None:
            pay_h[m] = distribute_cents(points_h[m] * value, total)
            pv[m] = value
        funds[f] = {"budget": yuan(budget) if budget is not None else None,
                    "rate": value if budget is None else None,
                    "personal_share": yuan(ps), "total_points": ptotal, "point_value": value,
                    "cases": int(cases_n[m].sum()), "unpriced_cases": int(unpriced_n[m].sum()),
                    "unpriced_cost": yuan(ucost_h[m].sum()), "payment": yuan(pay_h[m].sum())}
    due_h = pay_h - ps_h
    st = policy.settlement
    surplus = (pay_h - cost_h) / 100.0
    kept = band_share(surplus, pay_h / 100.0, st.surplus_bands)
    shared = band_share(-surplus, pay_h / 100.0, st.overspend_bands)
    adjustment = to_cents(np.where(surplus > 0, kept - surplus, shared))
    final_due = due_h + adjustment
    balance = final_due - mpaid
    with np.errstate(invalid="ignore", divide="ignore"):
        cmi = np.where(cases_n > 0, wsum / np.maximum(cases_n, 1), np.nan)
    hospitals = pa.table({
        "hospital_id": pa.array(hid.tolist(), pa.string()), "fund": pa.array(hfund.tolist(), pa.string()),
        "cases": cases_n, "unpriced_cases": unpriced_n, "cmi": pa.array(cmi, pa.float64(), from_pandas=True),
        "weight_sum": wsum, "points": points_h, "point_value": pa.array(pv, pa.float64(), from_pandas=True),
        "personal_share_cents": ps_h, "payment_cents": pay_h, "amount_due_cents": due_h,
        "withheld_cents": np.zeros(k, np.int64), "paid_cents": final_due, "cost_cents": cost_h,
        "unpriced_cost_cents": ucost_h, "adjustment_cents": adjustment, "monthly_paid_cents": mpaid,
        "monthly_withheld_cents": mwithheld, "balance_cents": balance,
    })
    for f in funds:
        m = hfund == f
        funds[f].update({"amount_due": yuan(due_h[m].sum()), "adjustment": yuan(adjustment[m].sum()),
                         "budget_spent": yuan(final_due[m].sum()), "monthly_paid": yuan(mpaid[m].sum()),
                         "balance": yuan(balance[m].sum()), "hospitals": int(m.sum())})
    return Settlement(year, "annual", hospitals, funds, None, [])


# ---------------------------------------------------------------- presentation

def hospitals_csv_table(hospitals: pa.Table) -> pa.Table:
    """The per-hospital rows with money as fixed two-decimal text (yuan), for hospitals.csv."""
    out = {}
    for name in hospitals.column_names:
        col = hospitals[name]
        if name.endswith("_cents"):
            c = col.to_numpy(zero_copy_only=False).astype(np.int64)
            sign = np.where(c < 0, "-", "")
            a = np.abs(c)
            out[name[:-6]] = pa.array(np.char.add(np.char.add(np.char.add(sign, (a // 100).astype(str)), "."),
                                                  np.char.zfill((a % 100).astype(str), 2)).tolist(), pa.string())
        elif name in ("points", "weight_sum"):
            out[name] = pa.array(np.char.mod("%.4f", col.to_numpy(zero_copy_only=False)).tolist(), pa.string())
        elif name == "cmi":
            v = col.to_numpy(zero_copy_only=False)
            out[name] = pa.array([None if not np.isfinite(x) else f"{x:.4f}" for x in v], pa.string())
        elif name == "point_value":
            v = col.to_numpy(zero_copy_only=False)
            out[name] = pa.array([None if not np.isfinite(x) else f"{x:.6f}" for x in v], pa.string())
        else:
            out[name] = col
    return pa.table(out)


def review_table(cases: pa.Table, group_column: str = "drg") -> pa.Table:
    """Cases a person must look at: unpriced ones and special-review ones, with their money."""
    m = pc.is_in(cases["case_type"], pa.array(["unpriced", "special_review"]))
    return cases.filter(m)
