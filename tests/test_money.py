"""Money exactly (issue 12): every cent recomputed independently with decimal arithmetic, over
many random amounts (numpy's seeded generator), and the half-cent ties a float misses."""
from decimal import ROUND_HALF_UP, Decimal, getcontext

import numpy as np
import pyarrow as pa
import pytest

from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import parse_policy
from drgdip.weights.settlement.settle import (
    distribute_cents,
    hospitals_csv_table,
    settle_period,
    settle_year,
    to_cents,
    withholding_cents,
)

getcontext().prec = 80
CENT = Decimal("0.01")


def ref_round(d: Decimal) -> int:
    """Cents, half away from zero (Decimal's ROUND_HALF_UP)."""
    return int((d / CENT).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ref_spread(exact_cents: list[Decimal], total: int) -> list[int]:
    """Largest remainder: floors, then +1 to the largest fractions, ties to the earlier row."""
    floors = [int(v.to_integral_value(rounding="ROUND_FLOOR")) for v in exact_cents]
    rems = [v - f for v, f in zip(exact_cents, floors)]
    short = total - sum(floors)
    assert 0 <= short <= len(floors)
    for i in sorted(range(len(floors)), key=lambda i: (-rems[i], i))[:short]:
        floors[i] += 1
    return floors


def ref_withholding(due_cents, share: str) -> list[int]:
    s = Decimal(share)
    exact = [max(int(d), 0) * s for d in due_cents]
    return ref_spread(exact, int(sum(exact).quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def test_half_cent_ties_of_the_issue():
    # 5 % × 7,834,801.50 = 391,740.075 → 391,740.08 (a float product gives 391,740.07499…)
    assert withholding_cents(np.array([783480150]), 0.05).tolist() == [39174008]
    # three hospitals whose exact remainders tie (.5 cent each): the two missing cents go to the first two
    assert withholding_cents(np.array([10010, 30030, 50050]), 0.05).tolist() == [501, 1502, 2502]
    assert to_cents(np.array([0.125, 1234.565, -0.125, 2.675, 1.005])).tolist() == [13, 123457, -13, 268, 101]


def test_withholding_matches_decimal_on_many_random_amounts():
    rng = np.random.default_rng(20260)
    for trial in range(400):
        n = int(rng.integers(1, 12))
        due = rng.integers(-50_000, 2_000_000_000, n)
        if trial % 3 == 0:                      # multiples of 10 cents: many exact half-cent ties
            due = due // 10 * 10
        share = str(rng.choice(["0.05", "0.03", "0.1", "0.075", "0.025", "0.15", "0.005"]))
        got = withholding_cents(due, float(share)).tolist()
        assert got == ref_withholding(due.tolist(), share), (due.tolist(), share)


def test_to_cents_matches_decimal_on_many_random_amounts():
    rng = np.random.default_rng(11)
    mills = rng.integers(-10**12, 10**12, 20000)          # amounts written with three decimals
    text = [f"{'-' if m < 0 else ''}{abs(m) // 1000}.{abs(m) % 1000:03d}" for m in mills]
    got = to_cents(np.array([float(t) for t in text]))
    assert got.tolist() == [ref_round(Decimal(t)) for t in text]


def test_distribute_cents_matches_decimal():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        cents = rng.integers(0, 10**9, n)
        tenths = rng.integers(0, 10, n) // 5 * 5          # .0 or .5 of a cent: ties
        vals = [f"{c // 100}.{c % 100:02d}{t}" for c, t in zip(cents, tenths)]
        exact = [Decimal(v) * 100 for v in vals]
        total = int(sum(exact).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        got = distribute_cents(np.array([float(v) for v in vals]), total).tolist()
        assert got == ref_spread(exact, total), vals


def month(seed, n=400):
    rng = np.random.default_rng(seed)
    cost = np.round(rng.lognormal(9.3, 0.5, n), 2)
    return pa.table({
        "id": [f"C{i}" for i in range(n)], "hospital_id": rng.choice(["H1", "H2", "H3", "H4"], n),
        "fund": rng.choice(["职工", "居民"], n), "discharge_date": ["2026-10-15"] * n,
        "drg": rng.choice(["A", "B", "C"], n), "total_cost": cost,
        "personal_share": np.round(cost * rng.uniform(0.1, 0.4, n), 2)})


WEIGHTS = pa.table({"drg": ["A", "B", "C"], "weight": [0.83, 1.37, 2.91], "mean_cost": [9000.0, 14000.0, 30000.0]})


@pytest.mark.parametrize("seed", range(6))
def test_monthly_settlement_recomputed_with_decimal(seed):
    rng = np.random.default_rng(100 + seed)
    share = str(rng.choice(["0.05", "0.03", "0.075"]))
    budget = {f: float(f"{int(rng.integers(10**7, 10**9)) / 100:.2f}") for f in ("employee", "resident")}
    p = parse_policy({"budget": {f: {"2026-10": b} for f, b in budget.items()},
                      "settlement": {"withholding_share": float(share)}})
    s = settle_period(price_cases(month(seed), WEIGHTS, p, period="2026-10"), p, "2026-10")
    c = s.cases
    pts = c["points"].to_numpy(zero_copy_only=False)
    fund = np.array(c["fund_key"].to_pylist())
    ps = [ref_round(Decimal(repr(x))) for x in c["personal_share"].to_pylist()]
    amount = np.round(np.nan_to_num(c["amount"].to_numpy(zero_copy_only=False)) * 100).astype(np.int64)
    h = s.hospitals
    for f, b in budget.items():
        m = np.flatnonzero(fund == f)
        total = ref_round(Decimal(repr(b))) + sum(ps[i] for i in m)
        P = sum(Decimal(float(pts[i])) for i in m)                # the float64 points, exactly
        exact = [total * Decimal(float(pts[i])) / P for i in m]
        assert amount[m].tolist() == ref_spread(exact, total)
        hm = np.array(h["fund"].to_pylist()) == f
        due = h["amount_due_cents"].to_numpy()[hm]
        assert due.sum() == ref_round(Decimal(repr(b)))           # Σ amounts due = budget, to the cent
        assert h["withheld_cents"].to_numpy()[hm].tolist() == ref_withholding(due.tolist(), share)


def test_annual_bands_recomputed_with_decimal():
    rng = np.random.default_rng(42)
    bands = {"surplus_bands": [{"up_to": 0.05, "hospital_keeps": 1.0}, {"up_to": 0.15, "hospital_keeps": 0.35},
                               {"hospital_keeps": 0.0}],
             "overspend_bands": [{"up_to": 0.1, "fund_bears": 0.0}, {"up_to": 0.25, "fund_bears": 0.65},
                                 {"fund_bears": 0.0}]}
    p = parse_policy({"budget": {"employee": {"2026": 12_345_678.91}}, "settlement": bands})
    n = 40
    pts = np.round(rng.uniform(100, 5000, n), 3)
    monthly = pa.table({
        "hospital_id": [f"H{i:02d}" for i in range(n)], "fund": ["employee"] * n, "cases": [10] * n,
        "unpriced_cases": [0] * n, "weight_sum": [10.0] * n, "points": pts, "point_value": [1.0] * n,
        "personal_share_cents": rng.integers(0, 10**7, n), "payment_cents": [0] * n, "amount_due_cents": [0] * n,
        "withheld_cents": [0] * n, "paid_cents": [0] * n, "cost_cents": rng.integers(10**6, 10**8, n),
        "unpriced_cost_cents": [0] * n})
    s = settle_year(monthly, p, "2026")
    h = s.hospitals
    pay = h["payment_cents"].to_numpy()
    cost = h["cost_cents"].to_numpy()
    total = ref_round(Decimal("12345678.91")) + int(monthly["personal_share_cents"].to_numpy().sum())
    P = sum(Decimal(float(x)) for x in pts)
    assert pay.tolist() == ref_spread([total * Decimal(float(x)) / P for x in pts], total)

    def integrate(amount, base, bs, key):
        out, lo = Decimal(0), Decimal(0)
        for b in bs:
            hi = Decimal(str(b["up_to"])) * base if "up_to" in b else None
            part = (amount if hi is None else min(amount, hi)) - lo
            out += Decimal(str(b[key])) * max(part, Decimal(0))
            lo = hi if hi is not None else lo
        return out

    want = []
    for pc_, cc in zip(pay.tolist(), cost.tolist()):
        sp = Decimal(pc_ - cc)
        v = integrate(sp, Decimal(pc_), bands["surplus_bands"], "hospital_keeps") - sp if sp > 0 else \
            integrate(-sp, Decimal(pc_), bands["overspend_bands"], "fund_bears")
        want.append(int(v.quantize(Decimal(1), rounding=ROUND_HALF_UP)))
    assert h["adjustment_cents"].to_numpy().tolist() == want
    rows = hospitals_csv_table(h).to_pylist()
    assert sum(round(float(r["adjustment"]) * 100) for r in rows) == round(s.funds["employee"]["adjustment"] * 100)


def test_largest_remainder_edges_signs_and_many_ties():
    assert distribute_cents(np.array([-0.005, -0.005]), -1).tolist() == [0, -1]     # tie: earlier row
    assert distribute_cents(np.array([1.016, 1.006]), 200).tolist() == [100, 100]   # a cent taken back
    # 10,000 equal values and one cent to give: the first row gets it, whatever the float noise
    assert distribute_cents(np.full(10000, 0.001), 10).tolist() == [1] * 10 + [0] * 9990
