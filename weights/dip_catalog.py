"""The local DIP disease-score catalogue learned from history (本地化病种库): core groups,
comprehensive groups, scores and the auxiliary catalogue's coefficients (docs/dip.md).

Grouping new cases against a catalogue is :mod:`grouper.dip.api`; this module builds one.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError, as_table, numeric, text
from drgdip.grouper.dip import auxiliary as A
from drgdip.grouper.dip import keys as K
from drgdip.grouper.dip.api import (
    FORMAT,
    META_KEY,
    _ages,
    _cases,
    _comp_keys,
    _core_keys,
    _np,
    resolve_type_table,
)
from drgdip.weights.dip_scores import compute_scores, load_dip_policy, year_weight_map


def _years(table: pa.Table, cols: dict, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(year per case, bool unreadable, where the year came from)."""
    if "year" in table.column_names:
        v, bad = numeric(table["year"], n)
        y = _np(v, np.nan)
        return np.where(np.isfinite(y), y, -1).astype(np.int64), ~np.isfinite(y), "column year"
    if "discharge_date" in cols:
        t = text(table[cols["discharge_date"]], n)
        y = pc.extract_regex(pc.fill_null(t, ""), r"^(?P<y>(?:19|20)\d\d)")
        ys = pc.struct_field(y, [0])
        yv = _np(pc.cast(ys, pa.float64()), np.nan)
        return np.where(np.isfinite(yv), yv, -1).astype(np.int64), ~np.isfinite(yv), f"column {cols['discharge_date']}"
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), "none: no year or discharge date column, one period"


def build_catalog(history, policy=None, procedure_types=None, scheme=None) -> pa.Table:
    """The local DIP catalogue from HISTORY (records with diagnoses, procedures, total cost,
    and a year or discharge date); see docs/dip.md for every rule."""

    pol = load_dip_policy(policy)
    hist = as_table(history)
    n = hist.num_rows
    type_table, type_source = resolve_type_table(pol, procedure_types, scheme)
    c = _cases(hist, pol.excluded_procedures, type_table)
    if "total_cost" not in c.cols:
        raise InputError("history has no total_cost column (医疗总费用, medfee_sumamt or an alias of it)")
    cost_a, _ = numeric(hist[c.cols["total_cost"]], n)
    cost = _np(cost_a, np.nan)
    year, year_bad, year_source = _years(hist, c.cols, n)
    why = c.reason.copy()
    why[(why == "") & ~(np.isfinite(cost) & (cost > 0))] = "DIP_BAD_COST"
    why[(why == "") & year_bad] = "DIP_NO_YEAR"
    ok_years = year[why == ""]
    wmap = year_weight_map(ok_years, pol.year_weights) if len(ok_years) else {}
    zero_years = np.array([y for y, w in wmap.items() if w == 0], dtype=np.int64)
    why[(why == "") & np.isin(year, zero_years)] = "DIP_OLD_YEAR"
    use = why == ""
    excluded = {r: int((why == r).sum()) for r in sorted(set(why[~use]))}
    if not use.any():
        raise InputError(f"history has no usable case ({', '.join(f'{k}: {v}' for k, v in excluded.items()) or 'empty'})")

    idx = np.nonzero(use)[0]
    core_key = _np(_core_keys(c), "").astype(object)[idx]
    comp_key = _np(_comp_keys(c), "").astype(object)[idx]
    ukeys, inv, counts = np.unique(core_key.astype(str), return_inverse=True, return_counts=True)
    is_core = counts[inv] >= pol.min_cases
    gkey = np.where(is_core, core_key, comp_key).astype(str)
    groups, gidx = np.unique(gkey, return_inverse=True)
    ng = len(groups)
    res = compute_scores(cost[idx], gidx, year[idx], ng, pol)

    # one row per group
    first = np.full(ng, -1, dtype=np.int64)
    first[gidx[::-1]] = np.arange(len(gidx))[::-1]
    rows_case = idx[first]
    g_core = is_core[first]
    sub = _np(c.subcat, "").astype(object)[rows_case]
    cat = _np(c.cat, "").astype(object)[rows_case]
    counted = c.counted.take(pa.array(rows_case))
    ctype = c.ctype[rows_case]
    empty = pa.array([[]] * ng, type=pa.list_(pa.string()))
    table = pa.table({
        "group_key": pa.array(groups.tolist(), pa.string()),
        "kind": pa.array(np.where(g_core, "core", "comprehensive").tolist(), pa.string()),
        "diagnosis": pa.array(np.where(g_core, sub, cat).tolist(), pa.string()),
        "procedures": pc.if_else(pa.array(g_core), counted, empty),
        "procedure_type": pa.array([K.TYPES[t] for t in ctype], pa.string()),
        "cases": pa.array(res.cases, pa.int64()),
        "cases_trimmed": pa.array(res.cases_trimmed, pa.int64()),
        "mean_cost": pa.array(np.round(res.mean_cost, 2), pa.float64()),
        "cv": pa.array(np.round(res.cv, 4), pa.float64()),
        "score": pa.array(np.round(res.score, 4), pa.float64()),
    })

    # auxiliary catalogue from relative costs of the kept cases
    spec = _aux_spec(pol)
    aux_rows: list[dict] = []
    if spec["enabled"]:
        ages = _ages(hist, c.cols, n)
        feats = A.case_features(c.diagnoses.take(pa.array(idx)), c.procedures.take(pa.array(idx)),
                                c.principal.take(pa.array(idx)), ages[0][idx], ages[1][idx], spec)
        ratio = cost[idx] / res.plain_mean[gidx]
        keep = res.keep
        aux_rows = A.learn(ratio[keep], {k: v[keep] for k, v in feats.items()}, spec)

    meta = {
        "format": FORMAT,
        "base": pol.base, "min_cases": pol.min_cases, "year_weights": list(pol.year_weights),
        "years": {str(y): w for y, w in sorted(res.year_weights.items())}, "year_source": year_source,
        "trim": {"method": pol.trim, "sd": pol.trim_sd, "percentiles": list(pol.trim_percentiles)},
        "overall_mean_cost": round(float(res.overall_mean), 2),
        "riv": None if not np.isfinite(res.riv) else round(float(res.riv), 4),
        "core_groups": int(g_core.sum()), "comprehensive_groups": int((~g_core).sum()),
        "history_rows": n, "cases_used": int(len(idx)), "cases_trimmed": int((~res.keep).sum()),
        "history_excluded": excluded,
        "excluded_procedures": list(pol.excluded_procedures),
        "procedure_type_source": type_source, "procedure_types": type_table,
        "auxiliary": {**spec, "rows": aux_rows},
        "policy_source": pol.source,
    }
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()})


def _aux_spec(pol) -> dict:
    return {"enabled": list(pol.auxiliary), "severity_bins": list(pol.severity_bins),
            "tumour": {k: list(v) for k, v in pol.tumour.items()},
            "age_bands": [{"name": b.name, "min_age": b.min_age, "max_age": b.max_age} for b in pol.age_bands],
            "rules": {"min_cases": pol.aux_min_cases, "min_difference": pol.aux_min_difference, "z": pol.aux_z}}


