"""Incomplete and unusual stays (非完整住院): transfers, deaths, discharges against advice, short stays.

Policy ``[incomplete_stays]`` (docs/policy.md): a case whose discharge disposition (离院方式,
``discharge_disposition``) is in ``dispositions`` is an ``incomplete_stay``; else one whose length
of stay (``los_days``) is below ``short_stay_days`` is a ``short_stay``. Each is paid by its
payment rule, replacing the high/low/normal rule (special-review cases are left as they are):

- ``proportional_capped``: base points × min(cost ratio, 1), never above the group's points;
- ``normal``: base points;
- ``review``: sent to special review (特例单议): case type ``special_review``, reason
  ``INCOMPLETE_STAY_REVIEW`` / ``SHORT_STAY_REVIEW``, paid meanwhile as ``special_review.payment``
  says (``hold``: no points until reviewed) and listed in review.csv.

Then readmissions (:mod:`weights.settlement.readmission`) are priced over the result. :func:`price_stays`
is the one call pricing (``weights.settlement.points.price_cases``) makes.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, numeric, text
from drgdip.weights.settlement.readmission import detect_table, price_readmissions


def _payment(rule: str, base: np.ndarray, ratio: np.ndarray, review_payment: str) -> np.ndarray:
    if rule == "proportional_capped":
        return base * np.minimum(ratio, 1.0)
    if rule == "normal" or review_payment == "normal":
        return base
    if review_payment == "actual":
        return base * ratio
    return np.full(base.shape, np.nan)                     # review, held: no points until reviewed


def incomplete_stays(cases: pa.Table, policy, cols: dict, eligible: np.ndarray):
    """(incomplete, short): masks of the eligible cases each rule takes (incomplete first)."""
    ip = policy.incomplete_stays
    n = cases.num_rows
    incomplete = np.zeros(n, bool)
    short = np.zeros(n, bool)
    if ip.dispositions:
        if "discharge_disposition" not in cols:
            raise InputError("incomplete_stays.dispositions is set but the records have no discharge_disposition "
                             "column (离院方式, dscg_way)")
        disp = text(cases[cols["discharge_disposition"]], n)
        incomplete = eligible & pc.fill_null(pc.is_in(disp, pa.array(list(ip.dispositions))),
                                             False).to_numpy(zero_copy_only=False)
    if ip.short_stay_days > 0:
        if "los_days" not in cols:
            raise InputError("incomplete_stays.short_stay_days is set but the records have no los_days column "
                             "(住院天数, act_ipt_days)")
        los = pc.fill_null(numeric(cases[cols["los_days"]], n)[0], np.inf).to_numpy(zero_copy_only=False)
        short = eligible & ~incomplete & (los < ip.short_stay_days)
    return incomplete, short


def price_stays(cases: pa.Table, policy, cols: dict, eligible: np.ndarray, base: np.ndarray, ratio: np.ndarray,
                points: np.ndarray, group_column: str, readmissions: pa.Table | None = None,
                duplicate_ids=None):
    """(points, [(mask, case type, reason)] in the order to apply, readmission flags or None).

    ``eligible``: the priced cases that are not special review; ``readmissions``: the file's
    readmission flags for these rows (:meth:`weights.settlement.readmission.Readmissions.batch`), or None
    to find them in ``cases`` alone."""
    ip, sr = policy.incomplete_stays, policy.special_review
    points = points.copy()
    adjust = []
    incomplete, short = incomplete_stays(cases, policy, cols, eligible)
    for mask, rule, name, code in ((incomplete, ip.payment, "incomplete_stay", "INCOMPLETE_STAY"),
                                   (short, ip.short_stay_payment, "short_stay", "SHORT_STAY")):
        if not mask.any():
            continue
        points[mask] = _payment(rule, base, ratio, sr.payment)[mask]
        if rule == "review":
            adjust.append((mask, "special_review", code + "_REVIEW"))
        else:
            adjust.append((mask, name, code))
    flags = None
    if policy.readmission.days > 0:
        flags = readmissions if readmissions is not None else detect_table(cases, policy, group_column, duplicate_ids)
        reviewed = (incomplete & (ip.payment == "review")) | (short & (ip.short_stay_payment == "review"))
        points, more = price_readmissions(policy, eligible & ~reviewed, points, flags)
        adjust += more
    return points, adjust, flags
