"""The quick start (drgdip demo): a whole year of a synthetic region, settled end to end.

``run_demo(out_dir, seed=..., progress=True) -> dict`` synthesises a region with the
teaching scheme (history years and the current year), groups it, computes relative weights
from the history, settles every month of the current year and then the year (清算) in a
ledger, writes each settled period's outputs exactly as ``drgdip settle --out`` does, and
writes the HTML report. Layout of ``out_dir``::

    policy.toml                 the demo region's policy (budgets from the synthetic costs)
    hospitals.csv               the synthetic hospitals (id, name, level, volume, cost effect)
    data/history.parquet        grouped discharges of the history years
    data/YYYY-MM.parquet        grouped discharges of each month of the current year
    weights.parquet             relative weights
    ledger.db                   the settlement ledger (replaced on every demo run)
    settled/YYYY-MM/, settled/YYYY/   cases.parquet, review.csv, hospitals.csv, summary.json
    report.html                 the report (self-contained)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from drgdip.grouper.api import TEACHING_SCHEME, group_table, load_scheme
from drgdip.arrowio import write_table
from drgdip.synth.region import HERE, load_params, make_hospitals, synthesize_region


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
    steps = 5 + 12 + 1
    bar = tqdm(total=steps, desc="drgdip demo", unit="step", disable=not progress)
    try:
        bar.set_postfix_str("synthesising")
        scheme = load_scheme(None)
        region = synthesize_region(scheme, seed=seed, years=years, months=12, hospitals=n_hosp,
                                   records_per_month=rpm, params=params)
        hosp = make_hospitals(n_hosp, seed, params)
        bar.update()
        bar.set_postfix_str("grouping")
        grouped = group_table(region, scheme)
        bar.update()
        (out / "data").mkdir(parents=True, exist_ok=True)
        write_table(pa.table({c: hosp[c] for c in hosp.column_names}), out / "hospitals.csv")
        dyear = pc.utf8_slice_codeunits(grouped["discharge_date"], 0, 4)
        history = grouped.filter(pc.less(dyear, str(year)))
        current = grouped.filter(pc.equal(dyear, str(year)))
        write_table(history, out / "data" / "history.parquet")
        template = (HERE / "demo_policy.toml").read_text(encoding="utf-8")
        policy_path = out / "policy.toml"
        policy_path.write_text(_policy_text(template, current, hosp, year, float(d["budget_share"])), encoding="utf-8")
        bar.update()
        bar.set_postfix_str("weights")
        weights_path = out / "weights.parquet"
        weights = make_weights(out / "data" / "history.parquet", policy_path, weights_path, quiet=True)
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
                                        scheme=str(TEACHING_SCHEME), quiet=True))
            bar.update()
        bar.set_postfix_str(f"annual settlement {year}")
        annual = settle_annual(str(year), policy_path=policy_path, ledger_path=ledger,
                               out=out / "settled" / str(year), quiet=True)
        bar.update()
        bar.set_postfix_str("report")
        report = out / "report.html"
        write_report(ledger, report, outputs=out / "settled", hospitals=out / "hospitals.csv", scheme=scheme)
        bar.update()
    finally:
        bar.close()
    status = grouped["status"].to_numpy(zero_copy_only=False)
    return {"out": out, "records": grouped.num_rows, "grouped": int((status == "grouped").sum()),
            "weights": weights, "monthly": monthly, "annual": annual, "report": report, "ledger": ledger,
            "policy": policy_path, "years": years}


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
    lines.append(f"outputs: {result['out']}/settled/<period>/  report: {result['report']}  ledger: {result['ledger']}")
    return "\n".join(lines)
