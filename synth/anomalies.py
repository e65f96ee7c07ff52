"""Planted anomalies (植入异常): a synthetic region with known split admissions, overlapping
stays, upcoding hospitals and low-standard admissions, to measure the monitoring rules.

``plant_anomalies(seed, ...) -> Planted`` synthesises a region (:func:`synth.region.synthesize_region`),
gives every record its own patient (so the synthesizer's chance re-use of patient ids adds
no unlabelled pairs), then plants, from disjoint base records chosen by the seed:

- split admissions (分解住院): a copy of a stay at the same hospital, admitted 0–15 days
  after its discharge, same principal diagnosis, cheaper and shorter;
- overlapping stays (重叠住院): a second stay of the patient admitted before the first's
  discharge, at the same or another hospital;
- legitimate controls: readmissions after 61–180 days (same hospital, same diagnoses),
  readmissions within 15 days for another condition (other category and ADRG), and
  same-day transfers to another hospital;
- upcoding hospitals (高套): an MCC diagnosis added to a share of their no-CC cases;
- a low-standard hospital (低标准入院): a share of its cases made 1–2 day, very cheap stays.

Counts and ranges are in ``anomalies.toml``. ``Planted.truth`` names what was planted
(pairs of record ids, hospital ids, record ids) and :func:`score` measures precision and
recall of monitoring findings against it.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError
from drgdip.codesets.record import FEE_COLUMNS
from drgdip.synth.region import load_scheme, synthesize_region

HERE = Path(__file__).parent


def load_anomaly_params(path=None) -> dict:
    with open(path or HERE / "anomalies.toml", "rb") as fh:
        return tomllib.load(fh)


@dataclass
class Planted:
    records: pa.Table
    truth: dict        # rule → pairs / ids planted; "controls" → legitimate pairs by kind


def _day(s: np.ndarray) -> np.ndarray:
    return s.astype("datetime64[D]")


def _str(d: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(d.astype("datetime64[D]"), unit="D")


def _scaled_money(t: pa.Table, rows: np.ndarray, factor: np.ndarray) -> dict:
    """Fee columns × factor (cents, floored), total = their sum, shares scaled alike."""
    fees = np.stack([np.round(t[c].to_numpy(zero_copy_only=False)[rows] * 100).astype(np.int64) for c in FEE_COLUMNS], 1)
    fees = np.floor(fees * factor[:, None]).astype(np.int64)
    total = fees.sum(1)
    old = np.round(t["total_cost"].to_numpy(zero_copy_only=False)[rows] * 100)
    personal = np.round(t["personal_share"].to_numpy(zero_copy_only=False)[rows] * 100 * np.divide(
        total, old, out=np.zeros(len(rows)), where=old > 0)).astype(np.int64)
    out = {c: fees[:, j] / 100 for j, c in enumerate(FEE_COLUMNS)}
    out.update(total_cost=total / 100, personal_share=personal / 100, fund_paid=(total - personal) / 100)
    return out


def _replace(t: pa.Table, cols: dict) -> pa.Table:
    for name, values in cols.items():
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), pa.array(values, type=t.schema.field(i).type)
                         if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values)
    return t


def _take(t: pa.Table, rows: np.ndarray) -> pa.Table:
    return t.take(pa.array(rows, pa.int64()))


def plant_anomalies(seed: int = 0, scheme=None, years=(2024,), months=12, hospitals: int = 12,
                    records_per_month: int = 2000, params: dict | None = None) -> Planted:
    """A region with planted anomalies and the ground truth of what was planted."""
    p = params or load_anomaly_params()
    ep, up, ls = p["episodes"], p["upcoding"], p["low_standard"]
    sch = load_scheme(scheme)
    base = synthesize_region(sch, seed=seed, years=years, months=months, hospitals=hospitals,
                             records_per_month=records_per_month)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1414]))
    n = base.num_rows
    base = _replace(base, {"patient_id": np.char.add("PB", np.char.zfill(np.arange(1, n + 1).astype(str), 9))})
    from drgdip.grouper.drg.api import group_table
    grouped = group_table(base, sch)
    adrg = np.asarray(pc.fill_null(grouped["adrg"], "").to_pylist(), dtype=object)
    drg = np.asarray(pc.fill_null(grouped["drg"], "").to_pylist(), dtype=object)
    ok = np.asarray(pc.is_in(grouped["status"], pa.array(["grouped", "ambiguous"])).to_pylist(), dtype=bool)
    principal = np.asarray([(d[0] if d else "") for d in base["diagnoses"].to_pylist()], dtype=object)
    category = np.array([c[:3] for c in principal], dtype=object)
    hosp = np.asarray(base["hospital_id"].to_pylist(), dtype=object)
    hosp_ids = np.unique(hosp.astype(str))
    adm = _day(np.asarray(base["admission_date"].to_pylist(), dtype="datetime64[D]"))
    dis = _day(np.asarray(base["discharge_date"].to_pylist(), dtype="datetime64[D]"))
    los = base["los_days"].to_numpy(zero_copy_only=False)
    ids = np.asarray(base["id"].to_pylist(), dtype=object)

    # hospitals for the hospital-level plants: disjoint, chosen among those with most cases
    counts = {h: int((hosp == h).sum()) for h in hosp_ids}
    big = [h for h, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: max(len(hosp_ids) // 2, 1)]
    chosen = list(rng.permutation(big))
    up_h, ls_h = chosen[:up["hospitals"]], chosen[up["hospitals"]:up["hospitals"] + ls["hospitals"]]
    hosp_plant = np.isin(hosp, up_h + ls_h)

    # base records for episode plants: grouped, outside the hospital-level plants, disjoint
    pool = rng.permutation(np.flatnonzero(ok & ~hosp_plant & (principal != "")))
    sizes = [ep["split_admissions"], ep["overlaps"], ep["late_readmissions"], ep["other_condition_readmissions"],
             ep["transfers"]]
    cut = np.cumsum([0] + sizes)
    if cut[-1] * 2 > len(pool):
        raise InputError("the region is too small for the planted episodes: ask for more records")
    sel = [pool[cut[k]:cut[k + 1]] for k in range(len(sizes))]
    donors = pool[cut[-1]:]
    new_parts, truth_pairs = [], {"SPLIT_ADMISSION": [], "OVERLAPPING_STAY": []}
    controls = {"late_readmission": [], "other_condition": [], "transfer": []}

    def copy_rows(rows, suffix, a_day, l_days, hospital=None, cost_factor=None, keep_principal_only=None):
        t = _take(base, rows)
        d_day = a_day + l_days.astype("timedelta64[D]")
        cols = {"id": np.char.add(ids[rows].astype(str), suffix), "admission_date": _str(a_day),
                "discharge_date": _str(d_day), "los_days": l_days.astype(float),
                "medical_record_no": np.char.add(np.asarray(t["medical_record_no"].to_pylist(), dtype=str), suffix)}
        if hospital is not None:
            cols["hospital_id"] = hospital
        if cost_factor is not None:
            cols.update(_scaled_money(base, rows, cost_factor))
        t = _replace(t, cols)
        if keep_principal_only is not None and keep_principal_only.any():
            lists = t["diagnoses"].to_pylist()
            lists = [d[:1] if k else d for d, k in zip(lists, keep_principal_only)]
            t = _replace(t, {"diagnoses": pa.array(lists, pa.list_(pa.string()))})
        return t

    # split admissions
    r = sel[0]
    gap = rng.integers(ep["split_gap_days"][0], ep["split_gap_days"][1] + 1, len(r))
    l2 = np.maximum(np.round(los[r] * rng.uniform(*ep["split_los_factor"], len(r))), 1).astype(np.int64)
    a2 = dis[r] + gap.astype("timedelta64[D]")
    t = copy_rows(r, "-S", a2, l2, cost_factor=rng.uniform(*ep["split_cost_factor"], len(r)),
                  keep_principal_only=rng.random(len(r)) < ep["split_drop_secondary_share"])
    new_parts.append(t)
    truth_pairs["SPLIT_ADMISSION"] = [(ids[i], ids[i] + "-S") for i in r]

    # overlapping stays
    r = sel[1]
    off = np.floor(rng.random(len(r)) * np.maximum(los[r], 1)).astype(np.int64)
    a2 = adm[r] + off.astype("timedelta64[D]")
    l2 = rng.integers(1, 8, len(r))
    other = rng.random(len(r)) < ep["overlap_other_hospital_share"]
    h2 = hosp[r].copy()
    for k in np.flatnonzero(other):
        choices = [h for h in hosp_ids if h != hosp[r][k]]
        h2[k] = choices[int(rng.integers(0, len(choices)))]
    new_parts.append(copy_rows(r, "-O", a2, l2, hospital=h2.astype(str)))
    truth_pairs["OVERLAPPING_STAY"] = [(ids[i], ids[i] + "-O") for i in r]

    # legitimate: late readmissions
    r = sel[2]
    gap = rng.integers(ep["late_gap_days"][0], ep["late_gap_days"][1] + 1, len(r))
    new_parts.append(copy_rows(r, "-L", dis[r] + gap.astype("timedelta64[D]"), np.maximum(los[r], 1).astype(np.int64)))
    controls["late_readmission"] = [(ids[i], ids[i] + "-L") for i in r]

    # legitimate: another condition within the window, and same-day transfers (donor records moved)
    patient = np.asarray(base["patient_id"].to_pylist(), dtype=object)
    hosp_new, adm_new, dis_new = hosp.copy(), adm.copy(), dis.copy()
    used = set()
    d_iter = iter(donors)
    for kind, rows in (("other_condition", sel[3]), ("transfer", sel[4])):
        for i in rows:
            for j in d_iter:
                if j in used:
                    continue
                if kind == "other_condition" and (category[j] == category[i] or adrg[j] == adrg[i]):
                    continue
                if kind == "transfer" and hosp[j] == hosp[i]:
                    continue
                break
            else:
                raise InputError("not enough donor records for the planted controls")
            used.add(j)
            if kind == "other_condition":
                g = int(rng.integers(ep["other_condition_gap_days"][0], ep["other_condition_gap_days"][1] + 1))
                hosp_new[j] = hosp[i]
            else:
                g = 0
            adm_new[j] = dis[i] + np.timedelta64(g, "D")
            dis_new[j] = adm_new[j] + np.timedelta64(int(max(los[j], 1)), "D")
            patient[j] = patient[i]
            controls[kind].append((ids[i], ids[j]))

    # hospital-level plants: upcoding and low-standard admissions
    diag_lists = base["diagnoses"].to_pylist()
    cc_level = np.asarray(sch.cc_level)
    codes = np.asarray(sch.diag_codes, dtype=object)
    mcc = [c for c, lv in zip(codes, cc_level) if lv == 2 and not str(c).startswith(("O", "P"))]
    up_rows = []
    for h in up_h:
        cand = np.flatnonzero((hosp == h) & ok & np.array([str(d).endswith("5") for d in drg]))
        pick = cand[rng.random(len(cand)) < up["share"]]
        for i in pick:
            diag_lists[i] = list(diag_lists[i]) + [mcc[int(rng.integers(0, len(mcc)))]]
        up_rows.extend(ids[pick].tolist())
    ls_rows = []
    los_new = los.copy()
    money = {}
    for h in ls_h:
        cand = np.flatnonzero((hosp == h) & ok)
        pick = cand[rng.random(len(cand)) < ls["share"]]
        lnew = rng.integers(ls["los_days"][0], ls["los_days"][1] + 1, len(pick))
        los_new[pick] = lnew
        adm_new[pick] = dis_new[pick] - lnew.astype("timedelta64[D]")
        m = _scaled_money(base, pick, rng.uniform(*ls["cost_factor"], len(pick)))
        for c, v in m.items():
            money.setdefault(c, base[c].to_numpy(zero_copy_only=False).copy())[pick] = v
        ls_rows.extend(ids[pick].tolist())
    base = _replace(base, {"patient_id": patient.astype(str), "hospital_id": hosp_new.astype(str),
                           "admission_date": _str(adm_new), "discharge_date": _str(dis_new), "los_days": los_new,
                           "diagnoses": pa.array(diag_lists, pa.list_(pa.string())), **money})
    records = pa.concat_tables([base] + new_parts).combine_chunks()
    truth = {**{k: sorted(v) for k, v in truth_pairs.items()},
             "UPCODING_HOSPITALS": sorted(up_h), "LOW_STANDARD_HOSPITALS": sorted(ls_h),
             "UPCODED_RECORDS": sorted(up_rows), "LOW_STANDARD_RECORDS": sorted(ls_rows),
             "controls": {k: sorted(v) for k, v in controls.items()}}
    return Planted(records, truth)


def score(findings: pa.Table, truth: dict) -> dict:
    """Precision and recall of the findings against what was planted.

    Episode rules are scored on pairs of record ids; the upcoding rules on hospitals; the
    low-standard rule on records (the synthesizer's own low-cost cases count as false
    positives: the rule cannot tell them apart). ``controls`` gives the share of each kind
    of legitimate pair that the split or overlap rule flagged."""
    flagged = findings.filter(pc.equal(findings["status"], "flagged"))
    rows = flagged.select(["rule", "hospital_id", "record_ids"]).to_pylist()

    def pr(found: set, planted: set) -> dict:
        tp = len(found & planted)
        return {"planted": len(planted), "found": len(found), "true_positive": tp,
                "precision": round(tp / len(found), 4) if found else None,
                "recall": round(tp / len(planted), 4) if planted else None}

    pairs = {rule: {frozenset(r["record_ids"].split("|")) for r in rows if r["rule"] == rule}
             for rule in ("SPLIT_ADMISSION", "OVERLAPPING_STAY")}
    out = {rule: pr(pairs[rule], {frozenset(x) for x in truth[rule]}) for rule in pairs}
    for rule in ("UPCODING_CC_SHARE", "UPCODING_CMI", "UPCODING_CC_HISTORY"):
        out[rule] = pr({r["hospital_id"] for r in rows if r["rule"] == rule}, set(truth["UPCODING_HOSPITALS"]))
    out["LOW_STANDARD_ADMISSION"] = pr({r["record_ids"] for r in rows if r["rule"] == "LOW_STANDARD_ADMISSION"},
                                       set(truth["LOW_STANDARD_RECORDS"]))
    out["UPCODING_CC_WITHOUT_COST"] = pr({r["record_ids"] for r in rows if r["rule"] == "UPCODING_CC_WITHOUT_COST"},
                                         set(truth["UPCODED_RECORDS"]))
    out["LOW_COST_CONCENTRATION"] = pr({r["hospital_id"] for r in rows if r["rule"] == "LOW_COST_CONCENTRATION"},
                                       set(truth["LOW_STANDARD_HOSPITALS"]))
    ctl = {}
    for kind, lst in truth["controls"].items():
        s = {frozenset(x) for x in lst}
        ctl[kind] = {rule: round(len(s & pairs[rule]) / len(s), 4) if s else None for rule in pairs}
    out["controls"] = ctl
    return out


def main(argv=None) -> None:   # python -m drgdip.synth.anomalies: the measurement docs/monitoring.md reports
    import argparse

    from drgdip.weights.monitoring.rules import monitor
    ap = argparse.ArgumentParser(description="Plant anomalies (2024), run the monitoring rules with 2023 as history, "
                                             "print precision and recall.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--records-per-month", type=int, default=2000)
    a = ap.parse_args(argv)
    planted = plant_anomalies(a.seed, records_per_month=a.records_per_month)
    # the year before, same seed (same hospitals), no anomalies: the hospitals' own history
    history = synthesize_region(None, seed=a.seed, years=(2023,), records_per_month=a.records_per_month)
    res = monitor(planted.records, history=history)
    print(json.dumps({"records": res.records, "counts": res.counts, "score": score(res.findings, planted.truth)},
                     ensure_ascii=False, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
