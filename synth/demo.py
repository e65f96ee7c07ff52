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
    scores.csv                  synthetic year-end assessment scores (one hospital left out: the default refund)
    ledger.db                   the settlement ledger (replaced on every demo run)
    settled/YYYY-MM/, settled/YYYY/   cases.parquet, review.csv, hospitals.csv, summary.json
    findings.csv                monitoring findings of the current year (drgdip monitor's columns)
    planted.json                what was planted (synth.anomalies truth: record id pairs, hospitals)
    persons.csv                 the current year's persons: assistance class, enrolment facts
    benefit_stays.parquet       the stays the benefits calculator read (the year's records with
                                hospital_level, in_policy_cost, referred): drgdip benefits
                                benefit_stays.parquet --persons persons.csv gives benefits.parquet
    benefits.parquet            the patient's side of each stay of the year (drgdip benefits' columns)
    report.html                 the report (self-contained)
    dip/                        the same year settled as a DIP region (:func:`demo_dip`): catalog.parquet,
                                reference_means.csv, policy.toml, decisions-YYYY-MM.csv (the first months'),
                                ledger.db, settled/<period>/, report.html
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from drgdip.arrowio import write_table
from drgdip.grouper.drg.api import TEACHING_SCHEME, group_table, load_scheme
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
                "DUPLICATE_SETTLEMENT_ID", "READMISSION_COMBINED", "READMISSION_EARLIER_RECOVERED")
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


def plant_refused(records: pa.Table) -> pa.Table:
    """A month's records with two that the settlement must refuse, never pay: the first
    record written twice (the same settlement id, DUPLICATE_SETTLEMENT_ID on both copies)
    and the second one's total cost set to 0 (ZERO_COST). ``[demo] refused_month``."""
    if records.num_rows < 2:
        return records
    i = records.schema.get_field_index("total_cost")
    cost = records.column(i).to_pylist()
    cost[1] = 0.0
    t = records.set_column(i, "total_cost", pa.array(cost, records.schema.field(i).type))
    return pa.concat_tables([t, t.slice(0, 1)])


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


def _projection_text(history: pa.Table, weights: pa.Table, policy_path: Path, year: int) -> str:
    """[point_value] projected points and personal share of the year: the last history year's
    cases priced with the year's weights and policy (预算点值 from last year's volume)."""
    from drgdip.weights.settlement.points import price_cases
    from drgdip.weights.settlement.policy import load_policy
    last = history.filter(pc.starts_with(history["discharge_date"], str(year - 1)))
    priced = price_cases(last, weights, load_policy(policy_path), period=str(year - 1))
    pts = priced["points"].to_numpy(zero_copy_only=False)
    fund = priced["fund_key"].to_numpy(zero_copy_only=False)
    share = priced["personal_share"].to_numpy(zero_copy_only=False)
    ok = np.isfinite(pts)
    lines = ["", "[point_value.projected_points]"]
    for f in ("employee", "resident"):
        lines.append(f'{f} = {{ "{year}" = {float(np.round(pts[ok & (fund == f)].sum(), 1))} }}')
    lines.append("[point_value.projected_personal_share]")
    for f in ("employee", "resident"):
        cents = int(np.round(share[ok & (fund == f)] * 100).sum())
        lines.append(f'{f} = {{ "{year}" = {cents / 100:.2f} }}')
    return "\n".join(lines) + "\n"


def _synthetic_scores(hospitals: pa.Table, seed: int) -> pa.Table:
    """Year-end assessment scores (质量考核得分), 88–100 to one decimal, seeded; the last
    hospital is left out (its withholding is refunded at quality.missing_refund)."""
    rng = np.random.default_rng(seed + 12)
    ids = hospitals["hospital_id"].to_pylist()[:-1]
    return pa.table({"hospital_id": ids, "score": np.round(rng.uniform(88.0, 100.0, len(ids)), 1)})


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def run_demo(out_dir, seed: int = 2024, progress: bool = True, records_per_month: int | None = None,
             hospitals: int | None = None, year: int | None = None) -> dict:
    """Run the quick start into ``out_dir``; returns the settlements and paths (see module doc)."""
    from drgdip.weights.report.settlement_report import write_report
    from drgdip.weights.settlement.runs import make_weights, settle_annual, settle_month

    out = Path(out_dir)
    params = load_params()
    d = params["demo"]
    year = int(year or d["current_year"])
    n_hosp = int(hospitals or d["hospitals"])
    rpm = int(records_per_month or d["records_per_month"])
    years = list(range(year - int(d["history_years"]), year + 1))
    steps = 5 + 12 + 1 + 2 + 1
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
        with policy_path.open("a", encoding="utf-8") as fh:
            fh.write(_projection_text(history, weights.table, policy_path, year))
        scores_path = out / "scores.csv"
        write_table(_synthetic_scores(hosp, seed), scores_path)
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
            records = current.filter(pc.equal(month, period))
            write_table(plant_refused(records) if m == int(d.get("refused_month", 0)) else records, path)
            kw = dict(policy_path=policy_path, weights_path=weights_path, ledger_path=ledger,
                      out=out / "settled" / period, scheme=str(TEACHING_SCHEME), quiet=True,
                      benefits=out / "benefits.parquet")
            settled = settle_month(period, path, **kw)
            if m <= int(d["decided_months"]):       # the office's decisions come back: a new revision
                decisions = out / "data" / f"decisions-{period}.csv"
                if demo_decisions(out / "settled" / period / "review.csv", decisions):
                    settled = settle_month(period, path, decisions=decisions, reopen=True, **kw)
            monthly.append(settled)
            bar.update()
        bar.set_postfix_str(f"annual settlement {year}")
        annual = settle_annual(str(year), policy_path=policy_path, ledger_path=ledger,
                               out=out / "settled" / str(year), quiet=True, scores=scores_path)
        bar.update()
        bar.set_postfix_str("DIP region")
        dip = demo_dip(out, history, current, policy_path, year, params)
        bar.update()
        bar.set_postfix_str("monitoring")
        from drgdip.weights.monitoring.rules import monitor
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
            "planted_next_year": spilled, "benefits": benefits, "dip": dip}


def demo_dip(out: Path, history: pa.Table, current: pa.Table, policy_path: Path, year: int, params: dict) -> dict:
    """The current year settled again as a DIP region (按病种分值付费) into ``out/dip``: a
    catalogue learned from the history (``[dip]`` defaults, procedure types from the teaching
    scheme), the prior-year same-level reference means (groups × hospital levels with
    ``[demo.dip] reference_min_cases`` cases in the last history year), the DRG policy plus
    ``[dip_settlement]`` with each fund's reimbursement ratio of the last history year (fund
    paid ÷ total cost), then every month (``settle --method dip``, the months' files of
    ``out/data`` and the benefits' personal shares) and the year, each into ``out/dip/ledger.db``
    and ``out/dip/settled/<period>``, and the report. The DRG region's ``[special_review]`` (its
    quota) and ``[readmission]`` apply, the readmissions paired on the DIP group code (``key =
    "group"``); the held cases of the first ``[demo] decided_months`` months are decided
    (:func:`demo_decisions`, ``out/dip/decisions-YYYY-MM.csv``) and those months settled again
    (``--decisions --reopen``), as in the DRG region."""
    from drgdip.grouper.dip.api import group_dip, write_catalog
    from drgdip.weights.dip_catalog import build_catalog
    from drgdip.weights.report.settlement_report import write_report
    from drgdip.weights.settlement.runs import settle_annual, settle_month
    d = params["demo"]["dip"]
    folder = out / "dip"
    folder.mkdir(parents=True, exist_ok=True)
    catalog = build_catalog(history, scheme=load_scheme(None))
    write_catalog(catalog, folder / "catalog.parquet")
    last = history.filter(pc.starts_with(history["discharge_date"], str(year - 1)))
    g = group_dip(last, catalog, auxiliary=False)
    levels = dict(zip(*(make_hospital_levels(policy_path))))
    lv = np.array([levels.get(h, "") for h in g["hospital_id"].to_pylist()], dtype=object)
    ok = (g["dip_status"].to_numpy(zero_copy_only=False) == "grouped") & (lv != "")
    cells = pa.table({"group_key": g["dip_group"].filter(pa.array(ok)), "level": pa.array(lv[ok].tolist(), pa.string()),
                      "cost": g["total_cost"].filter(pa.array(ok))})
    agg = cells.group_by(["group_key", "level"]).aggregate([("cost", "sum"), ("cost", "count")])
    agg = agg.filter(pc.greater_equal(agg["cost_count"], int(d["reference_min_cases"])))
    agg = agg.sort_by([("group_key", "ascending"), ("level", "ascending")])
    means = pc.round(pc.divide(agg["cost_sum"], pc.cast(agg["cost_count"], pa.float64())), 2)
    write_table(pa.table({"group_key": agg["group_key"], "level": agg["level"], "mean_cost": means}),
                folder / "reference_means.csv")
    fund = last["fund"].to_numpy(zero_copy_only=False)
    paid, cost = last["fund_paid"].to_numpy(), last["total_cost"].to_numpy()
    ratio = {f: round(float(paid[fund == f].sum() / cost[fund == f].sum()), int(d["ratio_decimals"]))
             for f in ("employee", "resident")}
    text = policy_path.read_text(encoding="utf-8").replace("DRG 点数法", "DIP 分值付费", 1)
    # DIP has no ADRG: its readmissions are paired on the DIP group code (docs/settlement.md "DIP settlement" 7)
    text, n = re.subn(r'(?m)^key = "adrg".*$', 'key = "group"             # DIP: the same DIP group (dip_group)', text)
    if n != 1:
        raise ValueError("demo_policy.toml: expected one [readmission] key = \"adrg\" line")
    text += ('\n[dip_settlement]\nreference_means = "reference_means.csv"\n[dip_settlement.reimbursement_ratio]\n'
             + "".join(f"{f} = {r}\n" for f, r in ratio.items()))
    dip_policy = folder / "policy.toml"
    dip_policy.write_text(text, encoding="utf-8")
    ledger = folder / "ledger.db"
    ledger.unlink(missing_ok=True)
    monthly = []
    for m in range(1, 13):
        period = f"{year}-{m:02d}"
        kw = dict(policy_path=dip_policy, weights_path=None, ledger_path=ledger, out=folder / "settled" / period,
                  quiet=True, benefits=out / "benefits.parquet", method="dip", catalog=folder / "catalog.parquet")
        settled = settle_month(period, out / "data" / f"{period}.parquet", **kw)
        if m <= int(params["demo"]["decided_months"]):   # the office decides the held DIP cases: a new revision
            decisions = folder / f"decisions-{period}.csv"
            if demo_decisions(folder / "settled" / period / "review.csv", decisions):
                settled = settle_month(period, out / "data" / f"{period}.parquet", decisions=decisions, reopen=True,
                                       **kw)
        monthly.append(settled)
    annual = settle_annual(str(year), policy_path=dip_policy, ledger_path=ledger, out=folder / "settled" / str(year),
                           quiet=True, method="dip")
    report = write_report(ledger, folder / "report.html", outputs=folder / "settled", hospitals=out / "hospitals.csv")
    return {"catalog": catalog, "policy": dip_policy, "ledger": ledger, "monthly": monthly, "annual": annual,
            "ratio": ratio, "reference_rows": agg.num_rows, "report": report}


def make_hospital_levels(policy_path: Path) -> tuple[list[str], list[str]]:
    """(hospital ids, levels) of the demo policy's ``coefficients.hospital_level``."""
    import tomllib
    lv = tomllib.loads(policy_path.read_text(encoding="utf-8"))["coefficients"]["hospital_level"]
    return list(lv), [str(v) for v in lv.values()]


def demo_decisions(review_csv: Path, out: Path) -> int:
    """A synthetic decisions file of the payment office (特例单议结果) for a month's held cases:
    in id order they are decided in turn ``normal``, ``actual``, decided ``points`` (the normal
    points and half the excess of the actual ones), ``reject``; one more row names an id that is
    no case (refused, DECISION_UNKNOWN_ID). Returns the number of rows written (0: none held)."""
    import pyarrow.csv as pacsv
    t = pacsv.read_csv(review_csv, convert_options=pacsv.ConvertOptions(
        column_types={"id": pa.string(), "review_status": pa.string()}))
    if "review_status" not in t.column_names:
        return 0
    held = t.filter(pc.fill_null(pc.equal(t["review_status"], "held"), False))
    if held.num_rows == 0:
        return 0
    ids, normal, actual = held["id"].to_pylist(), held["normal_points"].to_pylist(), held["actual_points"].to_pylist()
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    cycle = ("normal", "actual", "points", "reject")
    lines = ["id,decision,points"]
    for k, i in enumerate(order):
        what = cycle[k % len(cycle)]
        if what == "points" and normal[i] is not None and actual[i] is not None and actual[i] == actual[i]:
            lines.append(f"{ids[i]},points,{round(normal[i] + max(actual[i] - normal[i], 0.0) / 2, 4)}")
        else:
            lines.append(f"{ids[i]},{'normal' if what == 'points' else what},")
    lines.append("NO-SUCH-CASE,normal,")
    _write_text(out, "\n".join(lines) + "\n")
    return len(lines) - 1


def demo_benefits(current: pa.Table, hospitals: pa.Table, year: int, seed: int, params: dict, out: Path) -> dict:
    """The patient's side of the year's stays, computed before settling (the settlement takes
    each record's personal share from it, ``settle --benefits``): writes persons.csv,
    benefit_stays.parquet (the calculator's input) and benefits.parquet into ``out``; returns the
    computed :class:`weights.settlement.benefits.Benefits` and, over the stays the calculator could
    price, the cents of its patient amount against the records' personal_share."""
    from drgdip.weights.settlement.benefits import compute_benefits
    persons = make_persons(current, year, seed, params)
    write_table(persons, out / "persons.csv")
    stays = stay_facts(current, hospitals, seed, params)
    write_table(stays, out / "benefit_stays.parquet")
    b = compute_benefits(stays, persons)
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
    from drgdip.weights.settlement.runs import fund_limit_lines
    lines += [f"{result['annual'].period}: {x}" for x in fund_limit_lines(result["annual"])]
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
    dip = result.get("dip")
    if dip is not None:
        for fund, f in sorted(dip["annual"].funds.items()):
            lines.append(f"DIP region {dip['annual'].period} {fund}: {f['cases']} cases, {f['total_points']:,.1f} points, "
                         f"point value {f['point_value']:.4f} = budget {f['budget']:,.2f} ÷ reimbursement ratio "
                         f"{dip['ratio'][fund]} ÷ points; amount due {f['amount_due']:,.2f}, balance {f['balance']:,.2f}")
        lines.append(f"DIP outputs: {result['out']}/dip/settled/<period>/  ledger: {dip['ledger']}")
    methods: dict[str, int] = {}        # cases by payment method (summary.json of each month)
    ffs: dict[str, int] = {}            # fee-for-service cases by class (pricing reason FFS_*)
    for s in result["monthly"]:
        doc = json.loads((Path(result["out"]) / "settled" / s.period / "summary.json").read_text(encoding="utf-8"))
        for k, v in doc.get("payment_methods", {}).items():
            methods[k] = methods.get(k, 0) + v
        for k, v in doc.get("reasons", {}).items():
            if k.startswith("FFS_"):
                ffs[k] = ffs.get(k, 0) + v
    if methods:
        lines.append(f"payment methods {result['years'][-1]}: " + ", ".join(f"{k} {v}" for k, v in sorted(methods.items())))
    if ffs:
        lines.append(f"fee for service {result['years'][-1]} (policy [fee_for_service]): "
                     + ", ".join(f"{v} {k}" for k, v in sorted(ffs.items()))
                     + " (FFS_AMBIGUOUS: 歧义组 QY, a surgery unrelated to the principal diagnosis)")
    stays = result.get("stay_reasons")
    if stays:
        lines.append(f"incomplete stays and readmissions {result['years'][-1]} (policy [incomplete_stays], "
                     "[readmission]): " + ", ".join(f"{c} {k}" for k, c in stays.items() if c))
    lines.append(f"outputs: {result['out']}/settled/<period>/  report: {result['report']}  ledger: {result['ledger']}")
    return "\n".join(lines)
