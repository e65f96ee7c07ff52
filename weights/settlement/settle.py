"""Point value (点值) and hospital payments, per fund: monthly pre-settlement and annual settlement.

API (every function takes and returns Arrow tables or plain values):

``price_cases(cases, group_weights, policy, group_column="drg", weight_column="weight",
base_points=None, period=None) -> pa.Table``   (from :mod:`weights.settlement.points`)
    Case type, reason and points for each record; generic over the group key (DRG code
    and relative weight, or DIP group and score with ``base_points=1``).

``settle_period(priced, policy, period, group_column="drg") -> Settlement``
    Monthly pre-settlement (月度预结算) of priced cases: per fund (employee / resident,
    分账核算) ``point_value = (budget + personal share of the priced cases) / Σ points``;
    in the rate form (费率法) with a published rate, ``point_value = rate``. Each case's
    ``amount = points × point_value`` in yuan to 0.01, ``fund_amount = amount −
    personal_share``; per hospital ``amount_due = Σ amount − Σ personal_share``,
    ``withheld = amount_due × withholding_share`` (质量保证金), ``paid = amount_due − withheld``.

``settle_year(monthly, policy, year, scores=None, previous=None) -> Settlement``
    Annual settlement (年度清算): the months' per-hospital points and personal shares
    (``monthly``: the ledger's hospital rows of the year's current monthly runs) are priced
    again with the year's budget (points × incentive coefficient 激励系数 when the policy
    has ``[incentives]``); surplus kept / overspend shared bands (结余留用、超支分担)
    give each hospital an ``adjustment``; the withholding is refunded by score (质量保证金);
    the year's total is capped at budget (+ reserve 调剂金); ``balance = paid − Σ monthly
    paid`` is what the fund still owes (positive) or recovers (negative), the advances the
    months held back (月度预拨) included. docs/settlement.md §7–§9.

``distribute_cents(values, total) -> np.ndarray``
    Largest-remainder rounding (最大余数法) of yuan amounts to integer cents summing to ``total``.

Rounding (docs/settlement.md §2): money is never computed in binary floats. Input money,
budgets, rates and policy shares are taken as written (their shortest decimal form) and
turned into integer cents half away from zero; points are the exact values of their
float64. Every amount is an exact rational, turned into integer cents by largest remainder
(each floored to a cent, the cents still missing to the exact total go one each to the
largest dropped fractions, ties to the earlier row). So for each fund Σ case amounts =
budget + personal share to the cent, and Σ hospital amounts due = budget to the cent.
The same rule spreads the withholding over hospitals (total = withholding share × Σ
positive amounts due, rounded half up).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, canonical_columns, numeric, text
from drgdip.weights.settlement.points import price_cases  # noqa: F401  (re-exported: part of this API)
from drgdip.weights.settlement.policy import FUNDS, Band, Policy

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
    groups: pa.Table | None = None               # monthly: per hospital and group (GROUP_TOTAL_COLUMNS)

    def summary(self) -> dict:
        return {"period": self.period, "kind": self.kind, "funds": self.funds, "notes": self.notes}


# ---------------------------------------------------------------- rounding

def exact_decimal(x) -> Fraction:
    """A number as written (its shortest decimal form: 0.05, 7834801.5), exactly, as a Fraction.
    For input money, budgets, rates and policy shares."""
    return Fraction(Decimal(repr(float(x))))


def exact_binary(x) -> Fraction:
    """The exact value of a float64 (for computed quantities such as points)."""
    return Fraction(*float(x).as_integer_ratio())


def half_up(q: Fraction) -> int:
    """Round a rational to an integer, half away from zero (-2.5 → -3, 2.5 → 3)."""
    n, d = q.numerator, q.denominator
    return (2 * n + d) // (2 * d) if n >= 0 else -((-2 * n + d) // (2 * d))


def to_cents(yuan: np.ndarray) -> np.ndarray:
    """Yuan → integer cents, half away from zero, on the amount as written (its shortest decimal
    form): 0.125 → 13, 1234.565 → 123457, -0.125 → -13; an amount to 0.01 stays exact."""
    y = np.asarray(yuan, dtype=np.float64)
    scaled = y * 100.0
    out = np.rint(scaled)
    # far from a half cent the float product rounds the same as the exact decimal; near it, exactly
    near = np.flatnonzero(~(np.abs(scaled - out) < 0.4))
    for i in near:
        out[i] = half_up(exact_decimal(y.flat[i]) * 100)
    return out.astype(np.int64)


def _common(values: list[Fraction]) -> tuple[list[int], int]:
    """Numerators over one common denominator."""
    den = math.lcm(*(v.denominator for v in values)) if values else 1
    return [v.numerator * (den // v.denominator) for v in values], den


def distribute_exact(numerators: list[int], denominator: int, total_cents: int) -> np.ndarray:
    """Integer cents for exact values ``numerators[i] / denominator`` (in cents), summing to
    ``total_cents``: each value floored, the cents still missing go one each to the largest
    dropped fractions (ties: the earlier row); surplus cents are taken from the smallest."""
    n = len(numerators)
    if n == 0:
        if total_cents != 0:
            raise ValueError(f"cannot spread {total_cents} cents over no rows")
        return np.zeros(0, dtype=np.int64)
    floors = [a // denominator for a in numerators]
    rems = [a - f * denominator for a, f in zip(numerators, floors)]
    short = int(total_cents) - sum(floors)
    if abs(short) > n:
        raise ValueError(f"rounding gap of {short} cents over {n} rows: the values do not add up to the total")
    out = np.array(floors, dtype=np.int64)
    if short > 0:
        out[_top(short, rems, denominator)] += 1
    elif short < 0:
        out[_top(-short, [-r for r in rems], denominator)] -= 1
    return out


def _top(k: int, keys: list[int], denominator: int) -> np.ndarray:
    """Rows of the k largest exact values ``keys[i] / denominator`` (ties: the earlier row).
    Ordered by the floats first; rows whose float is within 1e-9 of the k-th are ordered exactly."""
    approx = np.array([kk / denominator for kk in keys], dtype=np.float64)   # correctly rounded
    idx = np.arange(len(keys))
    order = np.lexsort((idx, -approx))
    cut = approx[order[k - 1]]
    sure = np.flatnonzero(approx > cut + 1e-9)
    near = np.flatnonzero(np.abs(approx - cut) <= 1e-9)
    chosen = sorted(near.tolist(), key=lambda i: (-keys[i], i))[:k - len(sure)]
    return np.concatenate([sure, np.array(chosen, dtype=np.int64)])


def distribute_cents(values_yuan: np.ndarray, total_cents: int) -> np.ndarray:
    """Integer cents for each value (yuan, taken as written), summing exactly to ``total_cents``
    (largest remainder, ties to the earlier row; see :func:`distribute_exact`)."""
    nums, den = _common([exact_decimal(v) * 100 for v in np.asarray(values_yuan, dtype=np.float64).ravel()])
    return distribute_exact(nums, den, total_cents)


def _binary_numerators(x: np.ndarray) -> list[int]:
    """Integers proportional to the exact float64 values ``x`` (finite): x_i = n_i × 2^e, one e."""
    mant, ex = np.frexp(np.asarray(x, dtype=np.float64))
    mi = (mant * float(1 << 53)).astype(np.int64)          # exact: |mant| < 1 has 53 bits
    ex = ex.astype(np.int64) - 53
    shift = (ex - (ex.min() if ex.size else 0)).tolist()
    return [m << k for m, k in zip(mi.tolist(), shift)]


def _prorate(points: np.ndarray, total_cents: int) -> np.ndarray:
    """``total_cents`` spread over rows in proportion to their points (exact float64 values):
    row i's exact share is total × points_i / Σ points, then largest remainder."""
    p = np.asarray(points, dtype=np.float64)
    whole, e = _exact_total(p)
    if whole <= 0:
        return _prorate_exact(p, total_cents)
    # share_i = n_i × total / whole, n_i = p_i / 2^e
    return _spread(p, e, Fraction(int(total_cents), whole), int(total_cents))


def _times_rate(points: np.ndarray, rate: float) -> tuple[np.ndarray, int]:
    """Rate form: per row points × rate in cents (largest remainder) and their total, rounded half up."""
    p = np.asarray(points, dtype=np.float64)
    whole, e = _exact_total(p)
    k = exact_decimal(rate) * 100                      # cents per point
    total = half_up(k * whole * (Fraction(2) ** e))
    return _spread(p, e, k * Fraction(2) ** e, total), total


def _prorate_exact(points: np.ndarray, total_cents: int) -> np.ndarray:
    """:func:`_prorate` in Python integers row by row (the reference; for signed points)."""
    nums = _binary_numerators(points)
    whole = sum(nums)
    return distribute_exact([a * total_cents for a in nums], whole, total_cents)


def _times_rate_exact(points: np.ndarray, rate: float) -> tuple[np.ndarray, int]:
    """:func:`_times_rate` in Fractions row by row (the reference)."""
    nums, den = _common([exact_binary(p) * exact_decimal(rate) * 100 for p in points])
    total = half_up(Fraction(sum(nums), den))
    return distribute_exact(nums, den, total), total


def _mantissas(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 m, int64 x) with p = m × 2^x exactly, |m| < 2^53."""
    mant, ex = np.frexp(p)
    return (mant * float(1 << 53)).astype(np.int64), ex.astype(np.int64) - 53


CHUNK = 1 << 20       # rows per step of the exact sums (bounds their temporaries)


def _exact_total(p: np.ndarray) -> tuple[int, int]:
    """(W, e): Σ p exactly as W × 2^e, with e the smallest exponent of the rows (W an int)."""
    if p.size == 0:
        return 0, 0
    sums = _exact_sums_by(np.zeros(p.size, np.int8), p, 1)
    return sums[0]


def _exact_sums_by(key: np.ndarray, x: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Per key 0..k-1 the exact sum of the float64 values ``x`` as (W, e) with sum = W × 2^e
    (integers; e the smallest exponent of all rows), in chunks of CHUNK rows. Per chunk and
    exponent the mantissas' high and low 26 bits are summed by np.bincount: below 2^53, so exact."""
    acc: dict[int, list[int]] = {}
    for lo_row in range(0, x.size, CHUNK):
        _acc_add(acc, key[lo_row:lo_row + CHUNK], x[lo_row:lo_row + CHUNK], k)
    return _acc_sums(acc, k)


def _acc_add(acc: dict[int, list[int]], kc: np.ndarray, xc: np.ndarray, k: int) -> None:
    """Add the float64 values ``xc`` (keys ``kc``) to ``acc`` (exponent → per key Σ mantissas)."""
    m, ex = _mantissas(xc)
    for xe in np.unique(ex).tolist():
        sel = ex == xe
        mk, kk = m[sel], kc[sel]
        hi = np.bincount(kk, (mk >> 26).astype(np.float64), k)
        lo = np.bincount(kk, (mk & ((1 << 26) - 1)).astype(np.float64), k)
        row = acc.setdefault(xe, [0] * k)
        for i in np.flatnonzero((hi != 0) | (lo != 0)).tolist():
            row[i] += (int(hi[i]) << 26) + int(lo[i])


def _acc_sums(acc: dict[int, list[int]], k: int) -> list[tuple[int, int]]:
    """The (W, e) per key of an accumulator of :func:`_acc_add` (e: its smallest exponent)."""
    if not acc:
        return [(0, 0)] * k
    e = min(acc)
    return [(sum(row[i] << (xe - e) for xe, row in acc.items()), e) for i in range(k)]


def _as_float(total: tuple[int, int]) -> float:
    """W × 2^e correctly rounded (what math.fsum gives for the same values)."""
    w, e = total
    return float(Fraction(w) * Fraction(2) ** e)


def _kth_largest(x: np.ndarray, k: int) -> float:
    """The k-th largest value of ``x`` (values in [0, 1]) without copying it: a histogram finds
    the bin holding it, then only that bin's values are ordered."""
    hist = np.histogram(x, bins=4096, range=(0.0, 1.0))[0]
    from_top = np.cumsum(hist[::-1])
    j = 4095 - int(np.searchsorted(from_top, k))        # bin of the k-th largest
    lo_v, hi_v = j / 4096, (j + 1) / 4096
    above = int(np.count_nonzero(x >= hi_v)) if j < 4095 else 0
    cand = x[(x >= lo_v) & (x < hi_v)] if j < 4095 else x[x >= lo_v]
    if not above < k <= above + cand.size:                # the histogram's edges disagree: sort it all
        return float(-np.partition(-x, k - 1)[k - 1])
    return float(-np.partition(-cand, k - above - 1)[k - above - 1])


def _spread(p: np.ndarray, e: int, k: Fraction, total: int) -> np.ndarray:
    """Largest remainder of the exact shares ``n_i × k`` (n_i = p_i / 2^e, integers) into
    integer cents summing to ``total``: the same cents as :func:`distribute_exact` on them,
    computed on floats and made exact where a float could be wrong (shares within a few
    ulps of a whole cent, remainders near the cut), value by value."""
    n = p.size
    if n == 0 or k < 0 or total < 0 or (p < 0).any() or not np.isfinite(p).all():
        nums = [a * k.numerator for a in _binary_numerators(p)] if n else []
        return distribute_exact(nums, k.denominator, total) if n else distribute_exact([], 1, total)
    kf = float(k / Fraction(2) ** e)                  # cents per point, correctly rounded
    tol = float(p.max()) * kf * 1e-15 + 1e-300        # each share within 3 ulps of the exact one
    out = np.empty(n, dtype=np.int64)
    frac = np.empty(n, dtype=np.float64)
    for lo in range(0, n, CHUNK):                     # in chunks: one float array per row besides
        q = p[lo:lo + CHUNK] * kf
        f = np.floor(q)
        out[lo:lo + CHUNK] = f
        frac[lo:lo + CHUNK] = q - f
    doubt = np.flatnonzero((frac <= tol) | (1.0 - frac <= tol))

    def exact(idx: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Rows idx: (floors, remainders over k's denominator of their distinct point values,
        row → distinct value), once per distinct point value."""
        vals, inv = np.unique(p[idx], return_inverse=True)
        vm, vx = _mantissas(vals)
        fl, rem = [], []
        for mm, xx in zip(vm.tolist(), vx.tolist()):
            a = (mm << (xx - e)) * k.numerator
            f = a // k.denominator
            fl.append(f)
            rem.append(a - f * k.denominator)
        inv = inv.reshape(-1)
        return np.array(fl, dtype=np.int64)[inv], rem, inv

    if doubt.size:
        f_exact, r_exact, inv = exact(doubt)
        out[doubt] = f_exact
        frac[doubt] = np.array([r / k.denominator for r in r_exact], dtype=np.float64)[inv]
    short = int(total) - int(out.sum())
    if short < 0 or short > n:
        raise ValueError(f"rounding gap of {short} cents over {n} rows: the values do not add up to the total")
    if short == 0:
        return out
    cut = _kth_largest(frac, short)
    margin = 2.0 * tol + 1e-12
    sure = np.flatnonzero(frac > cut + margin)
    near = np.flatnonzero(np.abs(frac - cut) <= margin)
    _, rems, inv = exact(near)
    # rank of each distinct value's exact remainder (equal remainders, equal rank)
    rank = np.unique(np.array(rems + [0], dtype=object)[:-1], return_inverse=True)[1].reshape(-1).astype(np.int64)
    chosen = near[np.lexsort((near, -rank[inv]))][:short - sure.size]
    out[sure] += 1
    out[chosen] += 1
    return out


BINS = 4096           # histogram bins of the remainders when the cut is found in passes


class _StreamSpread:
    """:func:`_spread` over a fund's points read in chunks (in row order), several times,
    never all at once: the same cents. Passes: (1) :meth:`count` each chunk: the floors' sum
    and a histogram of the remainders; (2) :meth:`bin_values`: the values of the bin holding
    the cut (the k-th largest remainder); (3) :meth:`near`: the rows within the margin of
    the cut, made exact; then :meth:`cents` of each chunk. Kept between passes: the
    histogram, that bin's values and the near rows (few: rows of equal points at the cut)."""

    def __init__(self, pmax: float, e: int, k: Fraction, total: int):
        self.e, self.k, self.total = e, k, int(total)
        self.kf = float(k / Fraction(2) ** e)                  # as in _spread
        self.tol = pmax * self.kf * 1e-15 + 1e-300
        self.margin = 2.0 * self.tol + 1e-12
        self.floors, self.rows = 0, 0
        self.hist = np.zeros(BINS, np.int64)
        self.short = None
        self.cut = None
        self._above = 0
        self._cand: list[np.ndarray] = []
        self._near: list[np.ndarray] = []
        self._near_p: list[np.ndarray] = []
        self.chosen = np.zeros(0, np.int64)

    def _exact(self, vals_p: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
        vals, inv = np.unique(vals_p, return_inverse=True)
        vm, vx = _mantissas(vals)
        fl, rem = [], []
        for mm, xx in zip(vm.tolist(), vx.tolist()):
            a = (mm << (xx - self.e)) * self.k.numerator
            f = a // self.k.denominator
            fl.append(f)
            rem.append(a - f * self.k.denominator)
        inv = inv.reshape(-1)
        return np.array(fl, dtype=np.int64)[inv], rem, inv

    def shares(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(floors, remainders) of a chunk's rows, exact where a float could be wrong."""
        q = p * self.kf
        f = np.floor(q)
        out = f.astype(np.int64)
        frac = q - f
        doubt = np.flatnonzero((frac <= self.tol) | (1.0 - frac <= self.tol))
        if doubt.size:
            f_exact, r_exact, inv = self._exact(p[doubt])
            out[doubt] = f_exact
            frac[doubt] = np.array([r / self.k.denominator for r in r_exact], dtype=np.float64)[inv]
        return out, frac

    @staticmethod
    def _bin(frac: np.ndarray) -> np.ndarray:
        return np.clip((frac * BINS).astype(np.int64), 0, BINS - 1)

    def count(self, p: np.ndarray) -> None:
        out, frac = self.shares(p)
        self.floors += int(out.sum())
        self.rows += p.size
        self.hist += np.bincount(self._bin(frac), minlength=BINS)

    def counted(self) -> bool:
        """After the counting pass: True when cents are left to give (the later passes needed)."""
        self.short = self.total - self.floors
        if self.short < 0 or self.short > self.rows:
            raise ValueError(f"rounding gap of {self.short} cents over {self.rows} rows: the values do not add "
                             "up to the total")
        if self.short:
            from_top = np.cumsum(self.hist[::-1])
            self.bin = BINS - 1 - int(np.searchsorted(from_top, self.short))
            self._above = int(self.hist[self.bin + 1:].sum())
        return self.short > 0

    def bin_values(self, p: np.ndarray) -> None:
        frac = self.shares(p)[1]
        self._cand.append(frac[self._bin(frac) == self.bin])

    def found_cut(self) -> None:
        cand = np.concatenate(self._cand)
        self._cand = []
        need = self.short - self._above                   # 1 ≤ need ≤ cand.size by the histogram
        self.cut = float(-np.partition(-cand, need - 1)[need - 1])
        self.sure = 0

    def near(self, p: np.ndarray, offset: int) -> None:
        frac = self.shares(p)[1]
        self.sure += int(np.count_nonzero(frac > self.cut + self.margin))
        idx = np.flatnonzero(np.abs(frac - self.cut) <= self.margin)
        self._near.append(idx + offset)
        self._near_p.append(p[idx])

    def found_near(self) -> None:
        near = np.concatenate(self._near)
        _, rems, inv = self._exact(np.concatenate(self._near_p))
        self._near = self._near_p = []
        rank = np.unique(np.array(rems + [0], dtype=object)[:-1], return_inverse=True)[1].reshape(-1).astype(np.int64)
        self.chosen = np.sort(near[np.lexsort((near, -rank[inv]))][:self.short - self.sure])

    def cents(self, p: np.ndarray, offset: int) -> np.ndarray:
        out, frac = self.shares(p)
        if self.short:
            out += frac > self.cut + self.margin
            lo, hi = np.searchsorted(self.chosen, [offset, offset + p.size])
            out[self.chosen[lo:hi] - offset] += 1
        return out


def withholding_cents(due_cents: np.ndarray, share: float) -> np.ndarray:
    """质量保证金 per hospital: exact share × positive amount due (cents); the total is
    share × Σ positive amounts due rounded half up, spread by largest remainder."""
    return share_cents(due_cents, exact_decimal(share))


def share_cents(amount_cents: np.ndarray, share: Fraction) -> np.ndarray:
    """An exact share of each row's positive amount (cents), by largest remainder: the total is
    share × Σ positive amounts rounded half up (ties of remainders: the earlier row)."""
    s = Fraction(share)
    nums = [max(int(d), 0) * s.numerator for d in amount_cents]
    total = half_up(Fraction(sum(nums), s.denominator))
    return distribute_exact(nums, s.denominator, total)


def prorate_cents(weights_cents: np.ndarray, total_cents: int) -> np.ndarray:
    """``total_cents`` spread over rows in proportion to integer weights (cents), by largest
    remainder (ties: the earlier row); all weights 0: nothing may be spread."""
    w = [max(int(x), 0) for x in weights_cents]
    whole = sum(w)
    if whole == 0:
        return distribute_exact([0] * len(w), 1, int(total_cents))
    return distribute_exact([x * int(total_cents) for x in w], whole, int(total_cents))


def exact_sum(values) -> float:
    """Correctly rounded float sum (the same whatever the order)."""
    return math.fsum(float(v) for v in values)


def yuan(cents) -> float:
    return round(int(cents) / 100.0, 2)


# ---------------------------------------------------------------- monthly

def _point_value(policy: Policy, fund: str, period: str, points_total: float,
                 personal_cents: int, pool_total=None) -> tuple[float | None, int | None, int | None]:
    """(point value, budget in cents or None, total payment in cents or None when it is
    points × rate, computed per row) for one fund. ``pool_total(fund, budget_cents,
    personal_cents) -> cents``: the money the points share, when not budget + personal share
    (the DIP form, :mod:`weights.settlement.dip_settle`)."""
    rate = policy.rate_for(fund, period) if policy.form == "rate" else None
    if rate is not None:
        return rate, None, None
    budget = int(to_cents(np.array([policy.budget_for(fund, period)]))[0])
    if points_total <= 0:
        return None, budget, 0
    total = budget + personal_cents if pool_total is None else pool_total(fund, budget, personal_cents)
    return total / 100.0 / points_total, budget, total


def _amounts(points: np.ndarray, value: float | None, total: int | None) -> np.ndarray:
    """Each row's amount in cents: the total prorated by points, or points × rate."""
    if total is None:
        return _times_rate(points, value)[0]
    return _prorate(points, total)


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


def _fsum_by(key: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Correctly rounded sum of ``x`` per key (the same whatever the row order)."""
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(k + 1))
    xs = x[order]
    return np.array([math.fsum(xs[bounds[i]:bounds[i + 1]]) for i in range(k)], dtype=np.float64)


def _isum_by(key: np.ndarray, cents: np.ndarray, k: int) -> np.ndarray:
    """Integer sum of cents per key."""
    out = np.zeros(k, dtype=np.int64)
    np.add.at(out, key, np.asarray(cents, dtype=np.int64))
    return out


def _np(a, fill):
    return pc.fill_null(a, fill).to_numpy(zero_copy_only=False)


#: the month's totals per hospital and group (the ledger's ``hospital_group_totals``), for the
#: consumption indices group by group (消耗指数, docs/settlement.md §9)
GROUP_TOTAL_COLUMNS = ("hospital_id", "method", "group_key", "cases", "cost_cents", "los_days")


class GroupTotals:
    """Per (hospital, payment method, group) of the month's priced cases (those with points):
    cases, cost in cents (exact integer sums) and Σ length of stay (float64, added in row
    order). The group is the case's ``group_column`` value, a DIP-priced case's
    ``dip_group``; "" when it has none. Per-diem and fee-for-service cases are kept too
    (their method says so), so the rows add up to the hospital rows' cases and cost."""

    def __init__(self, group_column: str = "drg"):
        self.group_column = group_column
        self._groups: dict[str, int] = {}
        self._methods: dict[str, int] = {}
        self._pairs: dict[int, int] = {}
        self.cases = np.zeros(0, np.int64)
        self.cost = np.zeros(0, np.int64)
        self.los = np.zeros(0, np.float64)

    @staticmethod
    def _ids(values: pa.Array, known: dict[str, int]) -> np.ndarray:
        enc = pc.dictionary_encode(values)
        local = np.array([known.setdefault(v, len(known)) for v in enc.dictionary.to_pylist()] or [0],
                         dtype=np.int64)
        return local[enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)]

    def add(self, priced, hid: np.ndarray, pool: np.ndarray, cost_cents: np.ndarray, los: np.ndarray) -> None:
        """Count a batch: ``hid`` the cases' hospital ids (MonthTotals'), ``pool`` the priced rows."""
        n = priced.num_rows
        if not pool.any():
            return
        names = priced.schema.names
        if "payment_method" in names:
            method = pc.fill_null(priced.column("payment_method"), "")
        else:
            method = pa.array(["dip" if self.group_column.lower().startswith(("dip", "_dip")) else "drg"] * n,
                              pa.string())
        group = (text(priced.column(self.group_column), n) if self.group_column in names
                 else pa.nulls(n, pa.string()))
        if "dip_group" in names:
            group = pc.if_else(pc.fill_null(pc.equal(method, "dip"), False), text(priced.column("dip_group"), n),
                               group)
        group = pc.fill_null(group, "")
        method, group = (x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x for x in (method, group))
        m = pa.array(pool, pa.bool_())
        gid = self._ids(pc.filter(group, m), self._groups)
        mid = self._ids(pc.filter(method, m), self._methods)
        key = (hid[pool].astype(np.int64) << 40) | (mid << 32) | gid
        uniq, inverse = np.unique(key, return_inverse=True)
        pair = np.array([self._pairs.setdefault(int(x), len(self._pairs)) for x in uniq.tolist()],
                        dtype=np.int64)[inverse.ravel()]
        size = len(self._pairs)
        if len(self.cases) < size:
            extra = max(size, 2 * len(self.cases)) - len(self.cases)
            self.cases = np.concatenate([self.cases, np.zeros(extra, np.int64)])
            self.cost = np.concatenate([self.cost, np.zeros(extra, np.int64)])
            self.los = np.concatenate([self.los, np.zeros(extra, np.float64)])
        np.add.at(self.cases, pair, 1)
        np.add.at(self.cost, pair, np.asarray(cost_cents, np.int64)[pool])
        np.add.at(self.los, pair, np.asarray(los, np.float64)[pool])

    def table(self, hospital_names: list[str]) -> pa.Table:
        """The rows (GROUP_TOTAL_COLUMNS), sorted by hospital, method and group."""
        keys = np.array(list(self._pairs), dtype=np.int64)
        at = np.array(list(self._pairs.values()), dtype=np.int64)
        groups, methods = list(self._groups), list(self._methods)
        names = np.asarray(hospital_names, dtype=object)
        t = pa.table({
            "hospital_id": pa.array(names[keys >> 40].tolist() if len(keys) else [], pa.string()),
            "method": pa.array([methods[i] for i in ((keys >> 32) & 0xFF).tolist()], pa.string()),
            "group_key": pa.array([groups[i] for i in (keys & 0xFFFFFFFF).tolist()], pa.string()),
            "cases": pa.array(self.cases[at], pa.int64()), "cost_cents": pa.array(self.cost[at], pa.int64()),
            "los_days": pa.array(self.los[at], pa.float64())})
        return t.sort_by([("hospital_id", "ascending"), ("method", "ascending"), ("group_key", "ascending")])


class CaseStore:
    """Per case: points (float64, NaN when unpriced), fund (int8) and hospital (int32), 13 bytes,
    appended batch by batch and read back in chunks of CHUNK rows. In memory, or with
    ``folder`` appended to three files there (``.case-points``, ``.case-fund``,
    ``.case-hospital``): the memory is then one chunk whatever the number of cases. The cents
    (:meth:`write_cents`) go to ``.case-cents`` (8 bytes per case) likewise."""

    _FILES = (("points", np.float64), ("fund", np.int8), ("hospital", np.int32))

    def __init__(self, folder=None):
        from pathlib import Path
        self.folder = None if folder is None else Path(folder)
        self.rows = 0
        self._mem: list[list[np.ndarray]] = [[], [], []]
        self._fh = None
        self._cents_mem: list[np.ndarray] = []
        self._cents_fh = None
        if self.folder is not None:
            self._fh = [open(self.folder / f".case-{name}", "w+b") for name, _ in self._FILES]

    def append(self, points: np.ndarray, fund: np.ndarray, hospital: np.ndarray) -> None:
        for i, (a, (_, dt)) in enumerate(zip((points, fund, hospital), self._FILES)):
            a = np.ascontiguousarray(a, dtype=dt)
            if self._fh is None:
                self._mem[i].append(a)
            else:
                a.tofile(self._fh[i])
        self.rows += len(points)

    def chunks(self, size: int | None = None):
        """(first row, points, fund, hospital) of each chunk of ``size`` rows (default CHUNK), in row order."""
        size = size or CHUNK
        if self._fh is None:
            for i in range(3):
                if len(self._mem[i]) != 1:
                    self._mem[i] = [np.concatenate(self._mem[i]) if self._mem[i] else
                                    np.zeros(0, self._FILES[i][1])]
            for lo in range(0, self.rows, size):
                yield (lo,) + tuple(m[0][lo:lo + size] for m in self._mem)
            return
        for fh in self._fh:
            fh.flush()
            fh.seek(0)
        for lo in range(0, self.rows, size):
            yield (lo,) + tuple(np.fromfile(fh, dt, min(size, self.rows - lo))
                                for fh, (_, dt) in zip(self._fh, self._FILES))

    def write_cents(self, cents: np.ndarray) -> None:
        """The next rows' amounts in cents (int64), in row order."""
        if self.folder is None:
            self._cents_mem.append(np.asarray(cents, np.int64))
            return
        if self._cents_fh is None:
            self._cents_fh = open(self.folder / ".case-cents", "w+b")
        np.ascontiguousarray(cents, np.int64).tofile(self._cents_fh)

    def cents(self):
        """All the cents written: an array, or (spilled) :class:`SpilledCents` read by slices."""
        if self.folder is None:
            return np.concatenate(self._cents_mem) if self._cents_mem else np.zeros(0, np.int64)
        if self._cents_fh is None:
            self._cents_fh = open(self.folder / ".case-cents", "w+b")
        self._cents_fh.flush()
        return SpilledCents(self.folder / ".case-cents", self.rows)

    def close(self) -> None:
        """Close and remove the case files (not the cents' file: :class:`SpilledCents` removes it)."""
        for fh in self._fh or ():
            fh.close()
            try:
                os.unlink(fh.name)
            except FileNotFoundError:
                pass
        self._fh = None
        if self._cents_fh is not None:
            self._cents_fh.close()
            self._cents_fh = None


class SpilledCents:
    """Each case's amount in cents kept in a file, read by slices ``cents[a:b]`` (an int64 array)."""

    def __init__(self, path, rows: int):
        self.path, self.rows = path, rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, s: slice) -> np.ndarray:
        lo, hi, _ = s.indices(self.rows)
        return np.fromfile(self.path, np.int64, max(hi - lo, 0), offset=lo * 8)

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class MonthTotals:
    """A month's pre-settlement gathered batch by batch (the priced cases never held at once).

    Per case it keeps only points (float64, NaN when unpriced), fund (int8) and hospital
    (int32), 13 bytes, in a :class:`CaseStore` (files in ``spill``, or memory); per hospital and fund the counts, weight sum (added in row order, so
    the float is that of the whole file) and money in integer cents. :meth:`finish` prices
    the month: the same figures as :func:`settle_period` on all the batches as one table,
    whatever the batch size.

    >>> totals = MonthTotals(policy, "2026-10")
    >>> for batch in priced_batches: totals.add(batch)
    >>> settlement, amount_cents = totals.finish()
    """
    WIDTH = len(FUNDS) + 1

    def __init__(self, policy: Policy, period: str, rows: int | None = None, pool_total=None, spill=None,
                 group_column: str = "drg"):
        """``rows``: the number of cases to come, when known (a check). ``pool_total``: see
        :func:`_point_value`. ``spill``: a folder for the per-case state (:class:`CaseStore`):
        the memory is then flat in the number of cases. ``group_column``: the cases' group
        (a DIP-priced case's is its ``dip_group``), for the totals per hospital and group
        (:class:`GroupTotals`)."""
        self.policy, self.period, self.pool_total = policy, period, pool_total
        self.groups = GroupTotals(group_column)
        self.store = CaseStore(spill)
        self._cap = rows
        self._finished = False
        self._names: dict[str, int] = {}
        k = 0
        self.cases = np.zeros(k, np.int64)
        self.unpriced = np.zeros(k, np.int64)
        self.weight_sum = np.zeros(k, np.float64)
        self.personal = np.zeros(k, np.int64)
        self.cost = np.zeros(k, np.int64)
        self.unpriced_cost = np.zeros(k, np.int64)
        self.los = np.zeros(k, np.float64)       # Σ length of stay (days) of the priced cases
        self.held = np.zeros(k, np.int64)             # held for special review (特例单议), no points yet
        self.held_cost = np.zeros(k, np.int64)
        self.rows = 0

    def _grow(self, cells: int) -> None:
        for name in ("cases", "unpriced", "weight_sum", "personal", "cost", "unpriced_cost", "los", "held",
                     "held_cost"):
            a = getattr(self, name)
            if len(a) < cells:
                setattr(self, name, np.concatenate([a, np.zeros(cells - len(a), a.dtype)]))

    def add(self, priced: pa.Table | pa.RecordBatch) -> None:
        """Count one batch of cases priced by :func:`price_cases` (in file order)."""
        n = priced.num_rows
        cols = canonical_columns(priced.schema)
        points = _np(priced.column("points"), np.nan).astype(np.float64)
        pool = np.isfinite(points)
        fcode = fund_codes(priced.column("fund_key"))
        personal = to_cents(np.nan_to_num(_np(numeric(priced.column(cols["personal_share"]), n)[0], 0.0))) \
            if "personal_share" in cols else np.zeros(n, np.int64)
        cost = to_cents(np.nan_to_num(_np(numeric(priced.column(cols["total_cost"]), n)[0], 0.0)))
        weight = np.nan_to_num(_np(priced.column("weight"), np.nan))
        hosp = pc.fill_null(text(priced.column(cols["hospital_id"]), n) if "hospital_id" in cols
                            else pa.nulls(n, pa.string()), "")
        enc = pc.dictionary_encode(hosp)
        local = np.array([self._names.setdefault(h, len(self._names)) for h in enc.dictionary.to_pylist()] or [0],
                         dtype=np.int64)
        hid = local[enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)] if n else np.zeros(0, np.int64)
        self._grow(len(self._names) * self.WIDTH)
        cell = hid * self.WIDTH + fcode
        points_only = pool & _np(pc.equal(priced.column("case_type"), "adjustment"), False).astype(bool) \
            if "case_type" in priced.schema.names else np.zeros(n, bool)
        case = pool & ~points_only      # an adjustment row (a readmission's recovery) has points only
        np.add.at(self.cases, cell[case], 1)
        np.add.at(self.unpriced, cell[~pool], 1)
        np.add.at(self.weight_sum, cell[case], weight[case])
        np.add.at(self.personal, cell[case], personal[case])
        np.add.at(self.cost, cell[case], cost[case])
        np.add.at(self.unpriced_cost, cell[~pool], cost[~pool])
        if "los_days" in cols:
            los = np.nan_to_num(_np(numeric(priced.column(cols["los_days"]), n)[0], 0.0))
            np.add.at(self.los, cell[case], los[case])
        if "review_status" in priced.schema.names:
            held = _np(pc.equal(priced.column("review_status"), "held"), False).astype(bool) & ~pool
            np.add.at(self.held, cell[held], 1)
            np.add.at(self.held_cost, cell[held], cost[held])
        self.groups.add(priced, hid, pool, cost,
                        np.nan_to_num(_np(numeric(priced.column(cols["los_days"]), n)[0], 0.0))
                        if "los_days" in cols else np.zeros(n, np.float64))
        if self._cap is not None and self.rows + n > self._cap:
            raise ValueError(f"more than the {self._cap} cases announced")
        self.store.append(points, fcode, hid)
        self.rows += n

    def finish(self) -> tuple[Settlement, np.ndarray]:
        """(the settlement without its cases, each case's amount in cents, 0 when unpriced:
        an array, or :class:`SpilledCents` when the cases were spilled). Once. The per-case
        state is read in chunks, several passes (the sums, then the largest remainder of each
        fund: :class:`_StreamSpread`), never gathered whole."""
        policy, period = self.policy, self.period
        if self._finished:
            raise RuntimeError("MonthTotals.finish runs once")
        self._finished = True
        store = self.store
        width = self.WIDTH
        names = list(self._names)
        cells = len(names) * width
        self._grow(cells)
        cases_c, unp_c = self.cases[:cells], self.unpriced[:cells]
        fund_of_cell = np.tile(np.arange(width), len(names))

        # (hospital, fund) pairs with a case, hospitals sorted by id
        dic = np.asarray(names, dtype=object)
        order = np.argsort(dic.astype(str), kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        cell_ids = np.arange(cells)
        present = (cases_c + unp_c) > 0
        sorted_cells = cell_ids[present][np.argsort(rank[cell_ids[present] // width] * width
                                                    + cell_ids[present] % width, kind="stable")]
        k = len(sorted_cells)
        pos = np.full(max(cells, 1), -1, dtype=np.int32)
        pos[sorted_cells] = np.arange(k)
        hid_s = dic[sorted_cells // width] if k else np.zeros(0, dtype=object)
        fund_names = np.array(list(FUNDS) + [""], dtype=object)
        hfund = fund_names[sorted_cells % width]
        nf = len(FUNDS)

        def keyed(p, fc, hd):
            """(pool, key, fund masks) of a chunk: unpriced rows get a key of their own, k."""
            pool = np.isfinite(p)
            key = pos[hd * np.int32(width) + fc]
            key[~pool] = k
            return pool, key, [pool & (fc == fi) for fi in range(nf)]

        # pass 1: exact point sums per (hospital, fund) and per fund; each fund's largest points
        acc_h: dict[int, list[int]] = {}
        acc_f: list[dict[int, list[int]]] = [{} for _ in FUNDS]
        n_f, max_f, neg_f = [0] * nf, [0.0] * nf, [False] * nf
        for _, p, fc, hd in store.chunks():
            pool, key, masks = keyed(p, fc, hd)
            _acc_add(acc_h, key, np.where(pool, p, 0.0), k + 1)
            for fi, m in enumerate(masks):
                pm = p[m]
                if pm.size:
                    _acc_add(acc_f[fi], np.zeros(pm.size, np.int8), pm, 1)
                    n_f[fi] += pm.size
                    max_f[fi] = max(max_f[fi], float(pm.max()))
                    neg_f[fi] = neg_f[fi] or bool((pm < 0).any())
        points_h = np.array([_as_float(t) for t in _acc_sums(acc_h, k + 1)[:k]],
                            dtype=np.float64)           # = math.fsum per hospital and fund
        del acc_h

        funds: dict[str, dict] = {}
        value_of: dict[str, float | None] = {}
        notes: list[str] = []
        spread: dict[int, _StreamSpread] = {}          # fund → its largest remainder in passes
        whole_f: dict[int, tuple] = {}                 # fund → (value, total): cents from the fund's points whole
        for fi, f in enumerate(FUNDS):
            any_m = n_f[fi] > 0
            whole, e = _acc_sums(acc_f[fi], 1)[0] if any_m else (0, 0)
            ptotal = _as_float((whole, e)) if any_m else 0.0     # = math.fsum
            fc_ = fund_of_cell == fi
            ps = int(self.personal[:cells][fc_].sum())
            has_budget = f in policy.budget and period in policy.budget[f]
            has_rate = policy.form == "rate" and policy.rate_for(f, period) is not None
            if not any_m and not has_budget and not has_rate:
                continue
            value, budget, total = _point_value(policy, f, period, ptotal, ps, self.pool_total)
            value_of[f] = value
            if any_m:
                if total is None:                      # rate form (_times_rate)
                    kk = exact_decimal(value) * 100 * Fraction(2) ** e
                    total_c = half_up(kk * whole)
                else:                                  # budget form (_prorate)
                    kk = Fraction(int(total), whole) if whole > 0 else None
                    total_c = int(total)
                if kk is None or kk < 0 or total_c < 0 or neg_f[fi]:
                    whole_f[fi] = (value, total)       # the exact row-by-row path (rare: signed points)
                else:
                    spread[fi] = _StreamSpread(max_f[fi], e, kk, total_c)
            elif budget:
                notes.append(f"{f}: no priced case in {period}; the budget of {yuan(budget):.2f} is not spent")
            funds[f] = {
                "budget": yuan(budget) if budget is not None else None,
                "rate": value if policy.form == "rate" and budget is None else None,
                "personal_share": yuan(ps), "total_points": ptotal, "point_value": value,
                "cases": int(cases_c[fc_].sum()), "unpriced_cases": int(unp_c[fc_].sum()),
                "unpriced_cost": yuan(self.unpriced_cost[:cells][fc_].sum()),
                "held_cases": int(self.held[:cells][fc_].sum()), "held_cost": yuan(self.held_cost[:cells][fc_].sum()),
                "payment": 0,
            }

        def each_fund(stage, todo):
            """One pass over the cases: ``stage(spreader, fund points, fund offset)`` per chunk."""
            if not todo:
                return
            off = [0] * nf
            for _, p, fc, hd in store.chunks():
                _, _, masks = keyed(p, fc, hd)
                for fi in todo:
                    pm = p[masks[fi]]
                    stage(spread[fi], pm, off[fi])
                    off[fi] += pm.size

        each_fund(lambda s, pm, o: s.count(pm), list(spread))
        todo = [fi for fi, s in spread.items() if s.counted()]
        each_fund(lambda s, pm, o: s.bin_values(pm), todo)
        for fi in todo:
            spread[fi].found_cut()
        each_fund(lambda s, pm, o: s.near(pm, o), todo)
        for fi in todo:
            spread[fi].found_near()
        whole_cents: dict[int, np.ndarray] = {}
        if whole_f:
            pts: dict[int, list[np.ndarray]] = {fi: [] for fi in whole_f}
            for _, p, fc, hd in store.chunks():
                _, _, masks = keyed(p, fc, hd)
                for fi in whole_f:
                    pts[fi].append(p[masks[fi]])
            for fi, (value, total) in whole_f.items():
                whole_cents[fi] = _amounts(np.concatenate(pts[fi]), value, total)
            del pts

        # last pass: each case's cents (0 when unpriced or of no fund), the sums per hospital
        pay_h = np.zeros(k + 1, np.int64)
        paid_f = [0] * nf
        off = [0] * nf
        for _, p, fc, hd in store.chunks():
            _, key, masks = keyed(p, fc, hd)
            amount = np.zeros(p.size, np.int64)
            for fi in list(spread) + list(whole_cents):
                m = masks[fi]
                c = int(np.count_nonzero(m))
                if fi in spread:
                    cents = spread[fi].cents(p[m], off[fi])
                else:
                    cents = whole_cents[fi][off[fi]:off[fi] + c]
                amount[m] = cents
                paid_f[fi] += int(cents.sum())
                off[fi] += c
            np.add.at(pay_h, key, amount)
            store.write_cents(amount)
        for fi, f in enumerate(FUNDS):
            if f in funds:
                funds[f]["payment"] = yuan(paid_f[fi])
        amount = store.cents()
        store.close()
        unknown = int(unp_c[fund_of_cell == len(FUNDS)].sum())
        if unknown:
            notes.append(f"{unknown} case(s) of no known fund are unpriced (see review)")
        pay_h = pay_h[:k]
        cases_n, unpriced_n = cases_c[sorted_cells], unp_c[sorted_cells]
        wsum = self.weight_sum[sorted_cells]
        ps_h, cost_h = self.personal[sorted_cells], self.cost[sorted_cells]
        ucost_h = self.unpriced_cost[sorted_cells]
        due_h = pay_h - ps_h
        withheld = np.zeros(k, np.int64)
        share = policy.settlement.withholding_share
        for f in funds:
            m = (hfund == f)
            withheld[m] = withholding_cents(due_h[m], share)
        held = np.zeros(k, np.int64)
        hold_share = 1 - exact_decimal(policy.fund_limits.advance_share)     # 月度预拨: the rest held
        if hold_share:
            for f in funds:
                m = (hfund == f)
                held[m] = share_cents(due_h[m] - withheld[m], hold_share)
        paid = due_h - withheld - held
        with np.errstate(invalid="ignore", divide="ignore"):
            cmi = np.where(cases_n > 0, wsum / np.maximum(cases_n, 1), np.nan)
        pv = np.array([value_of.get(f) if value_of.get(f) is not None else np.nan for f in hfund],
                      dtype=np.float64)
        keep_key = hfund != ""
        hospitals = pa.table({
            "hospital_id": pa.array(hid_s.tolist(), pa.string()), "fund": pa.array(hfund.tolist(), pa.string()),
            "cases": cases_n, "unpriced_cases": unpriced_n,
            "cmi": pa.array(cmi, pa.float64(), from_pandas=True), "weight_sum": wsum, "points": points_h,
            "point_value": pa.array(pv, pa.float64(), from_pandas=True),
            "personal_share_cents": ps_h, "payment_cents": pay_h, "amount_due_cents": due_h,
            "withheld_cents": withheld, "paid_cents": paid, "cost_cents": cost_h, "unpriced_cost_cents": ucost_h,
            **({"held_cents": held} if hold_share else {}), "los_days": self.los[sorted_cells],
            "held_cases": self.held[sorted_cells], "held_cost_cents": self.held_cost[sorted_cells],
        }).filter(pa.array(keep_key, pa.bool_()))
        groups = self.groups.table(names)
        for f in funds:
            m = np.asarray(hospitals["fund"].to_pylist(), dtype=object) == f
            h = hospitals.filter(pa.array(m, pa.bool_()))
            funds[f].update({
                "amount_due": yuan(pc.sum(h["amount_due_cents"]).as_py() or 0),
                "withheld": yuan(pc.sum(h["withheld_cents"]).as_py() or 0),
                "paid": yuan(pc.sum(h["paid_cents"]).as_py() or 0),
                "hospitals": int(h.num_rows),
            })
            if hold_share:
                funds[f].update({"advance_share": policy.fund_limits.advance_share,
                                 "held": yuan(pc.sum(h["held_cents"]).as_py() or 0)})
        if int(hospitals["held_cases"].to_numpy().sum()):
            notes.append(held_note(hospitals["hospital_id"].to_pylist(), hospitals["held_cases"].to_numpy(),
                                   hospitals["held_cost_cents"].to_numpy()))
        return Settlement(period, "monthly", hospitals, funds, None, notes, groups), amount


def case_amounts(priced: pa.Table | pa.RecordBatch, amount_cents: np.ndarray):
    """The priced cases plus ``amount`` and ``fund_amount`` (yuan; null when unpriced)."""
    n = priced.num_rows
    cols = canonical_columns(priced.schema)
    pool = np.isfinite(_np(priced.column("points"), np.nan).astype(np.float64))
    personal = to_cents(np.nan_to_num(_np(numeric(priced.column(cols["personal_share"]), n)[0], 0.0))) \
        if "personal_share" in cols else np.zeros(n, np.int64)
    amount = np.asarray(amount_cents, dtype=np.int64)
    arrays = list(priced.columns) + [
        pa.array(np.where(pool, amount / 100.0, np.nan), pa.float64(), from_pandas=True),
        pa.array(np.where(pool, (amount - personal) / 100.0, np.nan), pa.float64(), from_pandas=True)]
    schema = priced.schema.append(pa.field("amount", pa.float64())).append(pa.field("fund_amount", pa.float64()))
    if isinstance(priced, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    return pa.Table.from_arrays(arrays, schema=schema)


def settle_period(priced: pa.Table, policy: Policy, period: str, group_column: str = "drg") -> Settlement:
    """Monthly pre-settlement of cases priced by :func:`price_cases` (see the module doc);
    :class:`MonthTotals` gives the same batch by batch (``group_column``: the cases' group, for
    the totals per hospital and group, :class:`GroupTotals`)."""
    totals = MonthTotals(policy, period, group_column=group_column)
    totals.add(priced)
    result, amount = totals.finish()
    result.cases = case_amounts(priced, amount)
    return result


# ---------------------------------------------------------------- annual

def band_share_exact(amount_cents: int, base_cents: int, bands: tuple[Band, ...]) -> Fraction:
    """Σ over bands of band share × the part of ``amount`` lying in the band, exactly (cents),
    where band b covers [up_to_(b−1) × base, up_to_b × base) (the last band: the rest); shares
    and bounds are taken as written in the policy. Negative amounts and bases count as 0."""
    amount, base = max(int(amount_cents), 0), max(int(base_cents), 0)
    out, lo = Fraction(0), Fraction(0)
    for b in bands:
        hi = None if b.below is None else exact_decimal(b.below) * base
        part = (Fraction(amount) if hi is None else min(Fraction(amount), hi)) - lo
        if part > 0:
            out += exact_decimal(b.value) * part
        if hi is not None:
            lo = max(lo, hi)
    return out


def band_share(amount: np.ndarray, base: np.ndarray, bands: tuple[Band, ...]) -> np.ndarray:
    """:func:`band_share_exact` of yuan amounts (as written), returned in yuan as float64."""
    return np.array([float(band_share_exact(half_up(exact_decimal(a) * 100), half_up(exact_decimal(b) * 100),
                                            bands) / 100)
                     for a, b in zip(np.ravel(amount), np.ravel(base))], dtype=np.float64)


def settle_year(monthly: pa.Table, policy: Policy, year: str, scores: dict[str, float] | None = None,
                previous: dict[str, tuple[float, int]] | None = None, pool_total=None,
                groups: pa.Table | None = None) -> Settlement:
    """Annual settlement (年度清算) from the months' per-hospital rows (see the module doc and
    docs/settlement.md §1.6 and §7).

    ``monthly`` columns: hospital_id, fund, cases, unpriced_cases, weight_sum, points,
    personal_share_cents, payment_cents, amount_due_cents, withheld_cents, paid_cents, cost_cents,
    unpriced_cost_cents, optionally los_days (one row per hospital, fund and month).
    ``scores``: hospital → year-end assessment score (质量考核得分) for the quality refund;
    ``previous``: fund → (total points, personal share in cents) of the previous year's
    annual settlement, for ``point_value.projected = "history"``; ``groups``: the year's totals
    per hospital and group (GROUP_TOTAL_COLUMNS, the ledger's months summed:
    :func:`weights.settlement.ledger.group_totals`), needed by ``incentives.index_form =
    "per_group"`` with cost or time bands."""
    lim = policy.fund_limits
    hid, hfund, key = _hospital_keys(monthly["hospital_id"], fund_codes(monthly["fund"]))
    k = len(hid)

    def tot(name):
        return _isum_by(key, monthly[name].to_numpy(zero_copy_only=False).astype(np.int64), k)

    def ftot(name):
        return _fsum_by(key, monthly[name].to_numpy(zero_copy_only=False).astype(np.float64), k)

    cases_n, unpriced_n = tot("cases"), tot("unpriced_cases")
    points_h, wsum = ftot("points"), ftot("weight_sum")
    ps_h, cost_h, ucost_h = tot("personal_share_cents"), tot("cost_cents"), tot("unpriced_cost_cents")
    mpaid, mwithheld = tot("paid_cents"), tot("withheld_cents")
    mheld = tot("amount_due_cents") - mwithheld - mpaid            # 月度预拨 held back by the months
    los_h = None
    if "los_days" in monthly.column_names and monthly["los_days"].null_count == 0:
        los_h = ftot("los_days")
    coef, indicators, inc_reason = incentive_coefficients(hid, cases_n, wsum, cost_h, los_h, lim.incentive_bands,
                                                          lim.index_form, groups)
    settled_points = points_h
    if lim.incentive_bands:              # points × coefficient, exactly, then the nearest float64
        settled_points = np.array([float(exact_binary(p) * c) for p, c in zip(points_h.tolist(), coef)])
        coef = np.array([float(c) for c in coef])
    # held for special review in the latest monthly revisions, still undecided (a ledger of before has none)
    held_n = tot("held_cases") if "held_cases" in monthly.column_names else np.zeros(k, np.int64)
    held_c = tot("held_cost_cents") if "held_cost_cents" in monthly.column_names else np.zeros(k, np.int64)
    pay_h = np.zeros(k, np.int64)
    pv = np.full(k, np.nan)
    funds: dict[str, dict] = {}
    for f in FUNDS:
        m = hfund == f
        if not m.any():
            continue
        ptotal, ps = exact_sum(settled_points[m]), int(ps_h[m].sum())
        value, budget, total = _point_value(policy, f, year, ptotal, ps, pool_total)
        if value is not None:
            pay_h[m] = _amounts(settled_points[m], value, total)
            pv[m] = value
        funds[f] = {"budget": yuan(budget) if budget is not None else None,
                    "rate": value if budget is None else None,
                    "personal_share": yuan(ps), "total_points": ptotal, "point_value": value,
                    "cases": int(cases_n[m].sum()), "unpriced_cases": int(unpriced_n[m].sum()),
                    "unpriced_cost": yuan(ucost_h[m].sum()), "held_cases": int(held_n[m].sum()),
                    "held_cost": yuan(held_c[m].sum()), "payment": yuan(pay_h[m].sum())}
        if lim.projected != "none" and budget is not None:
            funds[f].update(projected_point_value(lim, f, year, budget, previous))
    due_h = pay_h - ps_h
    st = policy.settlement
    surplus = pay_h - cost_h
    adjustment = np.array([half_up(band_share_exact(sp, pay, st.surplus_bands) - sp) if sp > 0 else
                           half_up(band_share_exact(-sp, pay, st.overspend_bands))
                           for sp, pay in zip(surplus.tolist(), pay_h.tolist())], dtype=np.int64)
    # 质量保证金: the months' withholding refunded by the assessment score
    refund_share, score_col, q_reason = quality_refund_shares(hid, lim, scores)
    refund = np.array([half_up(sh * w) for sh, w in zip(refund_share, mwithheld.tolist())], dtype=np.int64)
    kept_back = mwithheld - refund
    before_cap = due_h + adjustment - kept_back
    # 调剂金 and the cap: the year pays at most budget (+ reserve)
    cut = np.zeros(k, np.int64)
    if lim.reserve_cap != "none" or lim.reserve_share:
        for f in funds:
            m = hfund == f
            if funds[f]["budget"] is None:
                continue
            budget = half_up(exact_decimal(funds[f]["budget"]) * 100)
            reserve = half_up(exact_decimal(lim.reserve_share) * budget)
            spend = int(before_cap[m].sum())
            limit = None if lim.reserve_cap == "none" else budget + (reserve if lim.reserve_cap ==
                                                                       "budget_and_reserve" else 0)
            over = 0 if limit is None else max(spend - limit, 0)
            if over:
                cut[m] = prorate_cents(np.maximum(adjustment[m], 0), over)
            spent = spend - over
            funds[f].update({"reserve": yuan(reserve), "reserve_cap": lim.reserve_cap,
                             "spend_before_cap": yuan(spend),
                             "reserve_used": yuan(min(max(spent - budget, 0), reserve)),
                             "over_budget_unfunded": yuan(max(spent - budget - reserve, 0)),
                             "cap_cut": yuan(over)})
    final_due = before_cap - cut
    balance = final_due - mpaid
    with np.errstate(invalid="ignore", divide="ignore"):
        cmi = np.where(cases_n > 0, wsum / np.maximum(cases_n, 1), np.nan)
    cols = {
        "hospital_id": pa.array(hid.tolist(), pa.string()), "fund": pa.array(hfund.tolist(), pa.string()),
        "cases": cases_n, "unpriced_cases": unpriced_n, "cmi": pa.array(cmi, pa.float64(), from_pandas=True),
        "weight_sum": wsum, "points": points_h, "point_value": pa.array(pv, pa.float64(), from_pandas=True),
        "personal_share_cents": ps_h, "payment_cents": pay_h, "amount_due_cents": due_h,
        "withheld_cents": np.zeros(k, np.int64), "paid_cents": final_due, "cost_cents": cost_h,
        "unpriced_cost_cents": ucost_h, "adjustment_cents": adjustment, "monthly_paid_cents": mpaid,
        "monthly_withheld_cents": mwithheld, "balance_cents": balance,
        "held_cases": held_n, "held_cost_cents": held_c,
    }
    if lim.incentive_bands:
        cols.update({"cmi_index": indicators["cmi"], "cost_index": indicators["cost"],
                     "time_index": pa.array(indicators["time"], pa.float64(), from_pandas=True),
                     "incentive_coefficient": coef, "settled_points": settled_points,
                     "incentive_reason": pa.array(inc_reason, pa.string())})
    if lim.quality_on or scores is not None:
        cols.update({"quality_score": pa.array(score_col, pa.float64(), from_pandas=True),
                     "quality_refund_cents": refund, "quality_kept_cents": kept_back,
                     "quality_reason": pa.array(q_reason, pa.string())})
    if lim.advance_share != 1.0:
        cols["monthly_held_cents"] = mheld
    if lim.reserve_cap != "none" or lim.reserve_share:
        cols["cap_cut_cents"] = cut
    hospitals = pa.table(cols)
    for f in funds:
        m = hfund == f
        funds[f].update({"amount_due": yuan(due_h[m].sum()), "adjustment": yuan(adjustment[m].sum()),
                         "budget_spent": yuan(final_due[m].sum()), "monthly_paid": yuan(mpaid[m].sum()),
                         "balance": yuan(balance[m].sum()), "hospitals": int(m.sum())})
        if lim.quality_on or scores is not None:
            funds[f].update({"quality_refund": yuan(refund[m].sum()), "quality_kept": yuan(kept_back[m].sum())})
        if lim.advance_share != 1.0:
            funds[f]["monthly_held"] = yuan(mheld[m].sum())
    notes = []
    missing = sorted({h for h, r in zip(hid.tolist(), q_reason) if r == "QUALITY_SCORE_MISSING"})
    if missing:
        notes.append(f"{len(missing)} hospital(s) without an assessment score, refunded "
                     f"{lim.quality_missing_refund:g} of their withholding (quality.missing_refund): "
                     + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    if held_n.sum():
        notes.append(held_note(hid, held_n, held_c))
    return Settlement(year, "annual", hospitals, funds, None, notes)


def projected_point_value(lim, fund: str, year: str, budget_cents: int,
                          previous: dict[str, tuple[float, int]] | None) -> dict:
    """预算点值: (year budget + projected personal share) / projected points, from the policy's
    projection or the previous year's annual settlement × (1 + growth)."""
    if lim.projected == "policy":
        pts = lim.projected_points.get(fund, {}).get(year)
        ps = lim.projected_personal_share.get(fund, {}).get(year, 0.0)
        if pts is None:
            return {"projected_point_value": None, "projected_source": "policy: no projected_points for "
                    f"{fund} {year}"}
        pts_x, ps_c = exact_decimal(pts), half_up(exact_decimal(ps) * 100)
        source = "policy"
    else:
        prev = (previous or {}).get(fund)
        if prev is None or prev[0] <= 0:
            return {"projected_point_value": None, "projected_source": f"history: no annual settlement of "
                    f"{int(year) - 1} for {fund}"}
        g = 1 + exact_decimal(lim.projected_growth)
        pts_x, ps_c = exact_binary(prev[0]) * g, half_up(prev[1] * g)
        source = f"history: {int(year) - 1} × (1 + {lim.projected_growth:g})"
    value = Fraction(budget_cents + ps_c, 100) / pts_x
    return {"projected_point_value": float(value), "projected_points": float(pts_x),
            "projected_personal_share": yuan(ps_c), "projected_source": source}


def quality_refund_shares(hid: np.ndarray, lim, scores: dict[str, float] | None
                          ) -> tuple[list[Fraction], list[float | None], list[str]]:
    """Per hospital the exact share of its withholding refunded (质量保证金返还), its score
    and a reason: the band of its score (scores as written; proportional = score / 100), or
    ``quality.missing_refund`` when the scores file does not list it."""
    shares, col, reason = [], [], []
    for h in hid.tolist():
        sc = None if scores is None else scores.get(h)
        if sc is None:
            shares.append(exact_decimal(lim.quality_missing_refund))
            col.append(None)
            reason.append("QUALITY_SCORE_MISSING")
            continue
        band = next(b for b in lim.quality_bands if b.below is None or sc < b.below)
        shares.append(exact_decimal(sc) / 100 if band.refund is None else exact_decimal(band.refund))
        col.append(float(sc))
        reason.append("QUALITY_SCORE_BAND")
    return shares, col, reason


def _index4(x: float) -> float:
    """An indicator rounded half up to 4 decimals (it is banded as printed)."""
    return float(Fraction(half_up(Fraction(Decimal(repr(float(x)))) * 10000), 10000))


def _exact4(x: Fraction) -> float:
    """An exact indicator rounded half up to 4 decimals, as a float (banded as printed)."""
    return float(Fraction(half_up(x * 10000), 10000))


#: payment methods whose cases enter the indices group by group (priced by their group)
GROUP_METHODS = ("drg", "dip")


def group_indices(groups: pa.Table) -> dict[str, dict[str, float]]:
    """费用消耗指数 and 时间消耗指数 group by group (DRG 绩效评价; DOMAIN.md §8), exactly, per hospital:

    ``cost`` = Σ_g n_hg × k_hg ÷ Σ_g n_hg, k_hg = (C_hg ÷ n_hg) ÷ (C_g ÷ N_g): the hospital's mean
    cost in group g over the region's mean cost in g, weighted by the hospital's cases in g
    (n_hg, C_hg: its cases and cost in g; N_g, C_g: the region's, all hospitals); so
    ``cost`` = Σ_g C_hg × N_g ÷ C_g ÷ Σ_g n_hg. ``time``: the same with the lengths of stay.
    Over the cases priced by their group (payment method drg or dip; a DIP group is compared
    with DIP cases, a DRG group with DRG cases); a group whose region total is 0 is left out
    of both sums. Returns {hospital: {"cost": x, "time": y}}, each rounded half up to 4
    decimals, NaN when no group is left."""
    method = groups["method"].to_pylist()
    keep = [m in GROUP_METHODS for m in method]
    hosp = [h for h, k in zip(groups["hospital_id"].to_pylist(), keep) if k]
    key = [(m, g) for m, g, k in zip(method, groups["group_key"].to_pylist(), keep) if k]
    n = [c for c, k in zip(groups["cases"].to_pylist(), keep) if k]
    cost = [c for c, k in zip(groups["cost_cents"].to_pylist(), keep) if k]
    los = [exact_binary(x) for x, k in zip(groups["los_days"].to_pylist(), keep) if k]
    region: dict[tuple, list] = {}
    for g, c, m, lo in zip(key, n, cost, los):
        r = region.setdefault(g, [0, 0, Fraction(0)])
        r[0] += c
        r[1] += m
        r[2] += lo
    acc: dict[str, list] = {}
    for h, g, c, m, lo in zip(hosp, key, n, cost, los):
        a = acc.setdefault(h, [Fraction(0), 0, Fraction(0), 0])   # Σ C_hg N_g / C_g, Σ n_hg, the same for time
        big_n, big_c, big_l = region[g]
        if big_c > 0:
            a[0] += Fraction(m * big_n, big_c)
            a[1] += c
        if big_l > 0:
            a[2] += lo * big_n / big_l
            a[3] += c
    return {h: {"cost": _exact4(a[0] / a[1]) if a[1] else np.nan,
                "time": _exact4(a[2] / a[3]) if a[3] else np.nan} for h, a in acc.items()}


def incentive_coefficients(hid: np.ndarray, cases: np.ndarray, wsum: np.ndarray, cost_cents: np.ndarray,
                           los: np.ndarray | None, bands: dict, form: str = "per_weight",
                           groups: pa.Table | None = None) -> tuple[list[Fraction], dict, list[str]]:
    """激励系数 per (hospital, fund) row: the product of each indicator's band coefficient.

    Indicators per hospital (all its funds together) against the region (all hospitals), each
    rounded half up to 4 decimals: ``cmi`` = (Σ weight / Σ cases) ÷ the region's. ``form``
    ``per_group`` (policy ``incentives.index_form``): ``cost`` (费用消耗指数) and ``time``
    (时间消耗指数) group by group from ``groups`` (:func:`group_indices`); ``per_weight``:
    ``cost`` = (Σ cost / Σ weight) ÷ the region's, ``time`` = (Σ length of stay / Σ weight) ÷
    the region's (needs the months' lengths of stay in the ledger)."""
    k = len(hid)
    names = sorted(set(hid.tolist()))
    pos = {h: i for i, h in enumerate(names)}
    idx = np.array([pos[h] for h in hid.tolist()], dtype=np.int64)
    n = len(names)
    c = np.bincount(idx, cases.astype(np.float64), n)
    w = np.bincount(idx, wsum, n)
    cost = np.bincount(idx, cost_cents.astype(np.float64) / 100.0, n)
    out = {"cmi": np.full(k, np.nan), "cost": np.full(k, np.nan), "time": np.full(k, np.nan)}
    with np.errstate(invalid="ignore", divide="ignore"):
        region_cmi, region_cost = w.sum() / c.sum(), cost.sum() / w.sum()
        raw = {"cmi": (w / c) / region_cmi}
        if form == "per_weight":
            raw["cost"] = (cost / w) / region_cost
            if los is not None:
                lo = np.bincount(idx, los, n)
                raw["time"] = (lo / w) / (lo.sum() / w.sum())
    for name, v in raw.items():
        out[name] = np.array([_index4(x) if np.isfinite(x) else np.nan for x in v[idx]])
    if form == "per_group" and groups is None and ("cost" in bands or "time" in bands):
        raise InputError("incentives.index_form = \"per_group\" needs the year's totals per hospital and group "
                         "(the months' group totals in the ledger)")
    if form == "per_group" and groups is not None:
        per = group_indices(groups)
        for name in ("cost", "time"):
            out[name] = np.array([per.get(h, {}).get(name, np.nan) for h in hid.tolist()], dtype=np.float64)
    coef = [Fraction(1)] * k                   # exact: the product of the bands' coefficients as written
    reason = ["INCENTIVE_BANDS"] * k
    for name, b in bands.items():
        for i, x in enumerate(out[name].tolist()):
            if not np.isfinite(x):
                reason[i] = f"INCENTIVE_NO_{name.upper()}_INDEX"
                continue
            band = next(bb for bb in b if bb.below is None or x < bb.below)
            coef[i] *= exact_decimal(band.value)
    return coef, out, reason


def held_note(hospital_ids, held_cases: np.ndarray, held_cost_cents: np.ndarray) -> str:
    """One line: the cases held for special review (特例单议) and not yet decided, per hospital."""
    per: dict[str, list[int]] = {}
    for h, c, m in zip(list(hospital_ids), np.asarray(held_cases).tolist(), np.asarray(held_cost_cents).tolist()):
        if c:
            a = per.setdefault(h, [0, 0])
            a[0] += c
            a[1] += m
    total_c = sum(v[0] for v in per.values())
    total_m = sum(v[1] for v in per.values())
    parts = ", ".join(f"{h} {c} ({m / 100:.2f})" for h, (c, m) in sorted(per.items()))
    return (f"{total_c} case(s) held for special review, undecided, cost {total_m / 100:.2f}, not paid until "
            f"decided (settle the month again with --decisions --reopen): {parts}")


# ---------------------------------------------------------------- presentation

def hospitals_csv_table(hospitals: pa.Table) -> pa.Table:
    """The per-hospital rows with money as fixed two-decimal text (yuan), for hospitals.csv."""
    out = {}
    for name in hospitals.column_names:
        col = hospitals[name]
        if name == "los_days":                  # an indicator's input, kept in the ledger only
            continue
        if name.endswith("_cents"):
            c = col.to_numpy(zero_copy_only=False).astype(np.int64)
            sign = np.where(c < 0, "-", "")
            a = np.abs(c)
            out[name[:-6]] = pa.array(np.char.add(np.char.add(np.char.add(sign, (a // 100).astype(str)), "."),
                                                  np.char.zfill((a % 100).astype(str), 2)).tolist(), pa.string())
        elif name in ("points", "weight_sum", "settled_points"):
            out[name] = pa.array(np.char.mod("%.4f", col.to_numpy(zero_copy_only=False)).tolist(), pa.string())
        elif name in ("cmi", "incentive_coefficient", "cmi_index", "cost_index", "time_index"):
            v = col.to_numpy(zero_copy_only=False)
            out[name] = pa.array([None if not np.isfinite(x) else f"{x:.4f}" for x in v], pa.string())
        elif name == "point_value":
            v = col.to_numpy(zero_copy_only=False)
            out[name] = pa.array([None if not np.isfinite(x) else f"{x:.6f}" for x in v], pa.string())
        else:
            out[name] = col
    return pa.table(out)


def review_mask(cases) -> pa.Array:
    """Rows a person must look at: unpriced, special-review, adjustments (a readmission's recovery
    of an earlier month's stay), and any with a review status (over the quota, rejected)."""
    m = pc.is_in(cases.column("case_type"), pa.array(["unpriced", "special_review", "adjustment"]))
    if "review_status" in cases.schema.names:
        m = pc.or_(m, pc.is_valid(cases.column("review_status")))
    return m


def review_table(cases: pa.Table, group_column: str = "drg") -> pa.Table:
    """Cases a person must look at (:func:`review_mask`), with their money, and for special
    review (特例单议) what the office needs to decide: ``normal_points`` (base points),
    ``actual_points`` (base × ratio) and ``needed`` (the documents, by trigger)."""
    from drgdip.weights.settlement.special_review import review_columns
    return review_columns(cases.filter(review_mask(cases)))
