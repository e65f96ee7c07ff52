"""The quick start (drgdip demo): a whole year of a synthetic region, settled end to end.

``run_demo(out_dir, seed=..., progress=True) -> dict`` synthesises a region with the
teaching scheme (history years and the current year, the current year with anomalies planted
by :mod:`synth.anomalies` in the amounts of ``synth.toml [demo.anomalies]``), groups it,
computes relative weights from the history, settles every month of the current year and then
the year (清算) in a ledger, writes each settled period's outputs exactly as ``drgdip settle
--out`` does, runs smart monitoring (智能监控) over the current year with the history as the
hospitals' own past, computes the patient's side of every stay of the year (三重制度, with a
synthetic persons file) beside the settlement, and writes the HTML report. Layout of ``out_dir``::

    policy.toml                 the demo region's policy (budgets from the synthetic costs)
    hospitals.csv               the synthetic hospitals (id, name, level, volume, cost effect)
    data/history.parquet        grouped discharges of the history years
    data/YYYY-MM.parquet        grouped discharges of each month of the current year
    weights.parquet             relative weights
    ledger.db                   the settlement ledger (replaced on every demo run)
    settled/YYYY-MM/, settled/YYYY/   cases.parquet, review.csv, hospitals.csv, summary.json
    findings.csv                monitoring findings of the current year (drgdip monitor's columns)
    planted.json                what was planted (synth.anomalies truth: record id pairs, hospitals)
    persons.csv                 the current year's persons: assistance class, enrolment facts
    benefits.parquet            the patient's side of each stay of the year (drgdip benefits' columns)
    report.html                 the report (self-contained)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from drgdip.arrowio import write_table
from drgdip.grouper.api import TEACHING_SCHEME, group_table, load_scheme
from drgdip.synth.region import (
    HERE,
    load_params,
    make_hospitals,
    make_persons,
    month_counts,
    stay_facts,
    synthesize_region,
)

#: pricing reasons of the policy's incomplete-stay and readmission rules, counted over the year
STAY_REASONS = ("INCOMPLETE_STAY", "INCOMPLETE_STAY_REVIEW", "SHORT_STAY", "SHORT_STAY_REVIEW",
                "READMISSION_WITHIN_DAYS", "READMISSION_EARLIER_STAY", "READMISSION_UNPAID", "ZERO_COST",
                "DUPLICATE_SETTLEMENT_ID")
EPISODE_PLANTS = ("split_admissions", "overlaps", "late_readmissions", "other_condition_readmissions", "transfers")


def plant_current_year(scheme, seed: int, year: int, hospitals: int, records_per_month: int,
                       params: dict) -> tuple[pa.Table, dict, int]:
    """The current year's records with anomalies planted (:func:`synth.anomalies.plant_anomalies`
    over the same synthetic year: same seed, hospitals and records), as (records, truth, number
    of planted stays left out because they end in the next year). ``params["demo"]["anomalies"]``
    gives the episode plants as shares of the year's records and the number of upcoding and
    low-standard hospitals; the rest is ``anomalies.toml``."""
    from drgdip.synth.anomalies import load_anomaly_params, plant_anomalies
    a = params["demo"]["anomalies"]
    n = sum(month_counts(records_per_month, list(range(1, 13)), params))
    ap = load_anomaly_params()
    for k in EPISODE_PLANTS:
        ap["episodes"][k] = max(1, int(round(float(a[k]) * n)))
    ap["upcoding"]["hospitals"] = int(a["upcoding_hospitals"])
    ap["low_standard"]["hospitals"] = int(a["low_standard_hospitals"])
    planted = plant_anomalies(seed, scheme, years=(year,), months=12, hospitals=hospitals,
                              records_per_month=records_per_month, params=ap)
    dyear = pc.utf8_slice_codeunits(planted.records["discharge_date"], 0, 4)
    inside = pc.equal(dyear, str(year))
    return planted.records.filter(inside), planted.truth, int(planted.records.num_rows - pc.sum(inside).as_py())


def _policy_text(template: str, grouped: pa.Table, hospitals: pa.Table, year: int, share: float) -> str:
    """The template plus budgets (share × each fund's cost less personal share, per month and year)
    and each hospital's level."""
    month = pc.utf8_slice_codeunits(grouped["discharge_date"], 0, 7).to_numpy(zero_copy_only=False)
    fund = grouped["fund"].to_numpy(zero_copy_only=False)
    spend = np.round(grouped["fund_paid"].to_numpy() * 100).astype(np.int64)
    lines = [template.rstrip(), ""]
    for f in ("employee", "resident"):
        lines.append(f"[budget.{f}]")
        monthly = []
        for m in range(1, 13):
            period = f"{year}-{m:02d}"
            cents = int(round(share * spend[(month == period) & (fund == f)].sum()))
            monthly.append(cents)
            lines.append(f'"{period}" = {cents / 100:.2f}')
        lines.append(f'"{year}" = {sum(monthly) / 100:.2f}')
        lines.append("")
    lines.append("[coefficients.hospital_level]")
    for hid, lv in zip(hospitals["hospital_id"].to_pylist(), hospitals["level"].to_pylist()):
        lines.append(f'{hid} = "{lv}"')
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def run_demo(out_dir, seed: int = 2024, progress: bool = True, records_per_month: int | None = None,
             hospitals: int | None = None, year: int | None = None) -> dict:
    """Run the quick start into ``out_dir``; returns the settlements and paths (see module doc)."""
    from drgdip.weights.report import write_report
    from drgdip.weights.runs import make_weights, settle_annual, settle_month

    out = Path(out_dir)
    params = load_params()
    d = params["demo"]
    year = int(year or d["current_year"])
    n_hosp = int(hospitals or d["hospitals"])
    rpm = int(records_per_month or d["records_per_month"])
    years = list(range(year - int(d["history_years"]), year + 1))
    steps = 5 + 12 + 1 + 2
    bar = tqdm(total=steps, desc="drgdip demo", unit="step", disable=not progress)
    try:
        bar.set_postfix_str("synthesising")
        scheme = load_scheme(None)
        past = synthesize_region(scheme, seed=seed, years=years[:-1], months=12, hospitals=n_hosp,
                                 records_per_month=rpm, params=params)
        this_year, truth, spilled = plant_current_year(scheme, seed, year, n_hosp, rpm, params)
        hosp = make_hospitals(n_hosp, seed, params)
        bar.update()
        bar.set_postfix_str("grouping")
        history = group_table(past, scheme)
        current = group_table(this_year, scheme)
        grouped = pa.concat_tables([history, current])
        bar.update()
        (out / "data").mkdir(parents=True, exist_ok=True)
        write_table(pa.table({c: hosp[c] for c in hosp.column_names}), out / "hospitals.csv")
        write_table(history, out / "data" / "history.parquet")
        template = (HERE / "demo_policy.toml").read_text(encoding="utf-8")
        policy_path = out / "policy.toml"
        policy_path.write_text(_policy_text(template, current, hosp, year, float(d["budget_share"])), encoding="utf-8")
        bar.update()
        bar.set_postfix_str("weights")
        weights_path = out / "weights.parquet"
        weights = make_weights(out / "data" / "history.parquet", policy_path, weights_path, quiet=True)
        bar.update()
        bar.set_postfix_str("benefits")
        benefits = demo_benefits(current, hosp, year, seed, params, out)
        bar.update()
        ledger = out / "ledger.db"
        ledger.unlink(missing_ok=True)
        month = pc.utf8_slice_codeunits(current["discharge_date"], 0, 7)
        monthly = []
        for m in range(1, 13):
            period = f"{year}-{m:02d}"
            bar.set_postfix_str(f"settling {period}")
            path = out / "data" / f"{period}.parquet"
            write_table(current.filter(pc.equal(month, period)), path)
            monthly.append(settle_month(period, path, policy_path=policy_path, weights_path=weights_path,
                                        ledger_path=ledger, out=out / "settled" / period,
                                        scheme=str(TEACHING_SCHEME), quiet=True,
                                        benefits=out / "benefits.parquet"))
            bar.update()
        bar.set_postfix_str(f"annual settlement {year}")
        annual = settle_annual(str(year), policy_path=policy_path, ledger_path=ledger,
                               out=out / "settled" / str(year), quiet=True)
        bar.update()
        bar.set_postfix_str("monitoring")
        from drgdip.weights.monitoring import monitor
        monitoring = monitor(current, scheme=scheme, history=history)
        write_table(monitoring.findings, out / "findings.csv")
        _write_text(out / "planted.json", json.dumps(truth, ensure_ascii=False, indent=1, sort_keys=True) + "\n")
        bar.update()
        bar.set_postfix_str("report")
        report = out / "report.html"
        write_report(ledger, report, outputs=out / "settled", hospitals=out / "hospitals.csv", scheme=scheme,
                     findings=out / "findings.csv", benefits=out / "benefits.parquet", persons=out / "persons.csv")
        bar.update()
    finally:
        bar.close()
    status = grouped["status"].to_numpy(zero_copy_only=False)
    stays = dict.fromkeys(STAY_REASONS, 0)
    for m in range(1, 13):
        reasons = json.loads((out / "settled" / f"{year}-{m:02d}" / "summary.json").read_text(encoding="utf-8"))
        for r in STAY_REASONS:
            stays[r] += int(reasons["reasons"].get(r, 0))
    return {"stay_reasons": stays, "out": out, "records": grouped.num_rows, "grouped": int((status == "grouped").sum()),
            "weights": weights, "monthly": monthly, "annual": annual, "report": report, "ledger": ledger,
            "policy": policy_path, "years": years, "monitoring": monitoring, "planted": truth,
            "planted_next_year": spilled, "benefits": benefits}


def demo_benefits(current: pa.Table, hospitals: pa.Table, year: int, seed: int, params: dict, out: Path) -> dict:
    """The patient's side of the year's stays, computed before settling (the settlement takes
    each record's personal share from it, ``settle --benefits``): writes persons.csv and
    benefits.parquet into ``out``; returns the
    computed :class:`weights.benefits.Benefits` and, over the stays the calculator could
    price, the cents of its patient amount against the records' personal_share."""
    from drgdip.weights.benefits import compute_benefits
    persons = make_persons(current, year, seed, params)
    write_table(persons, out / "persons.csv")
    b = compute_benefits(stay_facts(current, hospitals, seed, params), persons)
    write_table(b.stays, out / "benefits.parquet")
    valid = pc.invert(pc.equal(b.stays["status"], "invalid")).to_numpy(zero_copy_only=False)
    synth_cents = np.round(current["personal_share"].to_numpy(zero_copy_only=False) * 100)
    return {"result": b, "stays": int(valid.sum()),
            "cost_cents": int(pc.sum(b.stays["total_cost_cents"].filter(pa.array(valid))).as_py() or 0),
            "patient_cents": int(pc.sum(b.stays["patient_cents"]).as_py() or 0),
            "record_personal_cents": int(np.nansum(synth_cents[valid]))}


def summary_table(result: dict) -> str:
    """The printed summary: one line per settled month and the year, per fund."""
    lines = [f"drgdip demo: {result['records']} synthetic discharges ({result['grouped']} grouped) "
             f"of years {result['years'][0]}-{result['years'][-1]}, teaching scheme (not an official one)",
             f"relative weights from {result['years'][0]}-{result['years'][-2]}: {result['weights'].table.num_rows} "
             f"groups, RIV {result['weights'].riv:.3f}",
             f"{'period':<8} {'fund':<9} {'cases':>7} {'points':>14} {'point value':>12} {'budget':>16} "
             f"{'amount due':>16} {'paid / balance':>16}"]
    for s in result["monthly"] + [result["annual"]]:
        for fund, f in sorted(s.funds.items()):
            pv = "-" if f["point_value"] is None else f"{f['point_value']:.4f}"
            bud = "-" if f["budget"] is None else f"{f['budget']:,.2f}"
            last = f.get("paid", f.get("balance"))
            lines.append(f"{s.period:<8} {fund:<9} {f['cases']:>7} {f['total_points']:>14,.1f} {pv:>12} {bud:>16} "
                         f"{f['amount_due']:>16,.2f} {last if last is None else format(last, ',.2f'):>16}")
    mon = result.get("monitoring")
    if mon is not None:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(mon.counts.items()))
        lines.append(f"monitoring {result['years'][-1]}: {mon.findings.num_rows} findings ({counts}) in findings.csv")
    ben = result.get("benefits")
    if ben is not None and ben["cost_cents"]:
        lines.append(f"patient's side {result['years'][-1]} ({ben['stays']} stays): patient pays "
                     f"{ben['patient_cents'] / 100:,.2f} ({ben['patient_cents'] / ben['cost_cents']:.1%} of cost) "
                     f"under the benefit policy, the personal share the settlement counted (settle --benefits); "
                     f"the synthesizer's own personal_share column was {ben['record_personal_cents'] / 100:,.2f} "
                     f"({ben['record_personal_cents'] / ben['cost_cents']:.1%})")
    stays = result.get("stay_reasons")
    if stays:
        lines.append(f"incomplete stays and readmissions {result['years'][-1]} (policy [incomplete_stays], "
                     "[readmission]): " + ", ".join(f"{c} {k}" for k, c in stays.items() if c))
    lines.append(f"outputs: {result['out']}/settled/<period>/  report: {result['report']}  ledger: {result['ledger']}")
    return "\n".join(lines)
