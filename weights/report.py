"""The settlement report (结算报告): one self-contained HTML page for a settled ledger.

``write_report(ledger_path, out_html, outputs=None)`` reads the ledger's current runs (point
values by month and fund, per-hospital payments, costs and case-mix) and, when ``outputs``
names the folder holding the settled periods' output folders (``<outputs>/<YYYY-MM>/
cases.parquet`` as ``drgdip settle --out`` writes them), the cases too (the most loss-making
groups, deviation cases). Plots are matplotlib SVG inlined in the page: no file or network
is needed to view it. The same ledger and outputs give the same bytes.
"""
from __future__ import annotations

import html
import io
import sqlite3
import tomllib
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from weights import ledger as ledger_mod

TOP_LOSS_GROUPS = 20
DEVIATION_TYPES = ("high_cost", "low_cost", "special_review")
FUND_COLOURS = {"employee": "#1f77b4", "resident": "#d62728"}


# ----------------------------------------------------------------- reading

def _hospital_rows(conn: sqlite3.Connection, kind: str) -> list[tuple]:
    return conn.execute(
        "SELECT r.period, h.hospital_id, h.fund, h.cases, h.unpriced_cases, h.weight_sum, h.payment_cents, "
        "h.cost_cents, h.amount_due_cents, h.paid_cents, h.adjustment_cents, h.balance_cents "
        "FROM hospital_results h JOIN runs r USING (run_id) WHERE r.kind=? AND r.current=1 "
        "ORDER BY r.period, h.hospital_id, h.fund", (kind,)).fetchall()


def read_ledger(ledger_path) -> dict:
    """The ledger's current runs: funds by period, hospital rows (monthly and annual), policy name."""
    with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
        runs = [r for r in ledger_mod.runs(conn) if r["current"]]
        monthly = _hospital_rows(conn, "monthly")
        annual = _hospital_rows(conn, "annual")
        last = conn.execute("SELECT policy_text FROM runs WHERE current=1 ORDER BY run_id DESC LIMIT 1").fetchone()
    if not runs:
        raise ValueError(f"{ledger_path}: the ledger holds no settlement")
    try:
        region = tomllib.loads(last[0]).get("region", {}).get("name", "") if last else ""
    except tomllib.TOMLDecodeError:
        region = ""
    return {"runs": runs, "monthly": monthly, "annual": annual, "region": region}


def read_cases(outputs, periods: list[str]) -> pa.Table | None:
    """The priced cases of the settled months found under ``outputs`` (None when there are none)."""
    if outputs is None:
        return None
    parts = []
    for p in periods:
        f = Path(outputs) / p / "cases.parquet"
        if f.is_file():
            t = pq.read_table(f)
            group = "drg" if "drg" in t.column_names else None
            if group is None or "amount" not in t.column_names:
                continue
            cols = {"period": pa.array([p] * t.num_rows), "group": t["drg"].cast(pa.string()),
                    "hospital_id": t["hospital_id"].cast(pa.string()),
                    "total_cost": t["total_cost"].cast(pa.float64()), "amount": t["amount"].cast(pa.float64()),
                    "case_type": t["case_type"].cast(pa.string())}
            parts.append(pa.table(cols))
    return pa.concat_tables(parts) if parts else None


# ----------------------------------------------------------------- figures

def _svg(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(width=9.0, height=3.6):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.hashsalt": "drgdip-report", "svg.fonttype": "path", "font.size": 9})
    fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def plot_point_values(periods: list[str], values: dict[str, list[float | None]]) -> str:
    fig, ax = _figure()
    x = np.arange(len(periods))
    for fund, v in sorted(values.items()):
        y = np.array([np.nan if a is None else a for a in v], dtype=float)
        ax.plot(x, y, marker="o", label=fund, color=FUND_COLOURS.get(fund))
    ax.set_xticks(x, periods, rotation=45, ha="right")
    ax.set_ylabel("point value (yuan per point)")
    ax.set_title("Point value by month and fund")
    ax.legend()
    return _svg(fig)


def plot_payment_cost(hospitals: list[str], payment: np.ndarray, cost: np.ndarray) -> str:
    fig, ax = _figure(9.0, 4.0)
    x = np.arange(len(hospitals))
    ax.bar(x - 0.2, payment / 1e4, 0.4, label="payment (points x value)", color="#2ca02c")
    ax.bar(x + 0.2, cost / 1e4, 0.4, label="cost", color="#7f7f7f")
    ax.set_xticks(x, hospitals, rotation=45, ha="right")
    ax.set_ylabel("10,000 yuan")
    ax.set_title("Payments vs costs by hospital")
    ax.legend()
    return _svg(fig)


def plot_cmi(hospitals: list[str], cmi: np.ndarray) -> str:
    fig, ax = _figure(9.0, 3.4)
    x = np.arange(len(hospitals))
    ax.bar(x, cmi, color="#9467bd")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(x, hospitals, rotation=45, ha="right")
    ax.set_ylabel("CMI (mean relative weight)")
    ax.set_title("Case-mix index by hospital")
    return _svg(fig)


def plot_loss_groups(groups: list[str], profit: np.ndarray) -> str:
    fig, ax = _figure(9.0, 0.25 * len(groups) + 1.2)
    y = np.arange(len(groups))
    ax.barh(y, profit / 1e4, color="#d62728")
    ax.set_yticks(y, groups)
    ax.invert_yaxis()
    ax.set_xlabel("payment - cost (10,000 yuan)")
    ax.set_title(f"The {len(groups)} most loss-making groups")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def plot_deviation(periods: list[str], counts: dict[str, np.ndarray]) -> str:
    fig, ax = _figure()
    x = np.arange(len(periods))
    bottom = np.zeros(len(periods))
    for t, colour in zip(DEVIATION_TYPES, ("#ff7f0e", "#17becf", "#8c564b")):
        ax.bar(x, counts[t], bottom=bottom, label=t.replace("_", " "), color=colour)
        bottom += counts[t]
    ax.set_xticks(x, periods, rotation=45, ha="right")
    ax.set_ylabel("cases")
    ax.set_title("Deviation cases by month")
    ax.legend()
    return _svg(fig)


# ----------------------------------------------------------------- page

def _table(head: list[str], rows: list[list], numeric_from: int = 1) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for r in rows:
        tds = "".join(f'<td class="{"n" if i >= numeric_from else "t"}">{html.escape(str(v))}</td>'
                      for i, v in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _money(cents) -> str:
    return "-" if cents is None else f"{cents / 100:,.2f}"


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}th,td{padding:.2rem .6rem;
border-bottom:1px solid #eee}td.n{text-align:right;font-variant-numeric:tabular-nums}th{text-align:left;background:#f6f6f6}
figure.plot{margin:1rem 0}figure.plot svg{max-width:100%;height:auto}p.note{color:#666;font-size:.85rem}"""

# Counts the plots that have drawn (an <svg> with a non-empty box) into data attributes of
# <body>: the page says whether every plot rendered, for a person and for the browser test.
_SCRIPT = """window.addEventListener("load",function(){var f=document.querySelectorAll("figure.plot"),n=0;
for(var i=0;i<f.length;i++){var s=f[i].querySelector("svg");if(s){var b=s.getBoundingClientRect();
if(b.width>0&&b.height>0){n++;}}}document.body.setAttribute("data-plots-expected",String(f.length));
document.body.setAttribute("data-plots-rendered",String(n));});"""


def build_report(led: dict, cases: pa.Table | None) -> str:
    runs = led["runs"]
    monthly_runs = sorted((r for r in runs if r["kind"] == "monthly"), key=lambda r: r["period"])
    annual_runs = sorted((r for r in runs if r["kind"] == "annual"), key=lambda r: r["period"])
    periods = [r["period"] for r in monthly_runs]
    funds = sorted({f["fund"] for r in runs for f in r["funds"]})
    sections = []
    plots = 0

    # -- point values
    pv = {f: [next((x["point_value"] for x in r["funds"] if x["fund"] == f), None) for r in monthly_runs]
          for f in funds}
    rows = []
    for r in monthly_runs + annual_runs:
        for f in r["funds"]:
            rows.append([r["period"], r["kind"], f["fund"], f["cases"], f"{f['total_points']:,.1f}",
                         "-" if f["point_value"] is None else f"{f['point_value']:.4f}",
                         "-" if f["budget"] is None else f"{f['budget']:,.2f}"])
    sec = ["<h2>Point value (点值) by month</h2>"]
    if periods:
        sec.append(f'<figure class="plot">{plot_point_values(periods, pv)}</figure>')
        plots += 1
    sec.append(_table(["period", "kind", "fund", "cases", "points", "point value", "budget"], rows, 3))
    sections.append("\n".join(sec))

    # -- hospitals: payments vs costs, CMI (monthly runs summed)
    hid = sorted({r[1] for r in led["monthly"]})
    if hid:
        idx = {h: i for i, h in enumerate(hid)}
        pay = np.zeros(len(hid)); cost = np.zeros(len(hid)); wsum = np.zeros(len(hid)); priced = np.zeros(len(hid))
        due = np.zeros(len(hid), dtype=np.int64); paid = np.zeros(len(hid), dtype=np.int64)
        cases_n = np.zeros(len(hid), dtype=np.int64)
        for (_, h, _, cases_, unpriced, ws, pay_c, cost_c, due_c, paid_c, _, _) in led["monthly"]:
            i = idx[h]
            pay[i] += pay_c; cost[i] += cost_c; wsum[i] += ws; priced[i] += cases_ - unpriced
            due[i] += due_c; paid[i] += paid_c; cases_n[i] += cases_
        cmi = np.where(priced > 0, wsum / np.maximum(priced, 1), np.nan)
        sections.append("\n".join([
            "<h2>Payments vs costs by hospital</h2>",
            f'<figure class="plot">{plot_payment_cost(hid, pay / 100, cost / 100)}</figure>',
            _table(["hospital", "cases", "payment", "cost", "payment - cost", "amount due", "paid (after withholding)"],
                   [[h, int(cases_n[i]), _money(pay[i]), _money(cost[i]), _money(pay[i] - cost[i]), _money(due[i]),
                     _money(paid[i])] for i, h in enumerate(hid)]),
            "<h2>Case-mix index (CMI) by hospital</h2>",
            f'<figure class="plot">{plot_cmi(hid, cmi)}</figure>',
            _table(["hospital", "priced cases", "CMI"],
                   [[h, int(priced[i]), f"{cmi[i]:.3f}"] for i, h in enumerate(hid)]),
        ]))
        plots += 2

    # -- cases: loss-making groups and deviation cases
    if cases is not None and cases.num_rows:
        priced_mask = pc.invert(pc.is_null(cases["amount"]))
        pcs = cases.filter(priced_mask)
        g = pcs["group"].to_numpy(zero_copy_only=False).astype(str)
        profit_case = pcs["amount"].to_numpy() - pcs["total_cost"].to_numpy()
        codes, inv = np.unique(g, return_inverse=True)
        profit = np.bincount(inv, profit_case, minlength=len(codes))
        n = np.bincount(inv, minlength=len(codes))
        order = np.lexsort((codes, profit))[:TOP_LOSS_GROUPS]
        order = order[profit[order] < 0]
        sec = ["<h2>The most loss-making groups</h2>"]
        if len(order):
            sec.append(f'<figure class="plot">{plot_loss_groups(codes[order].tolist(), profit[order])}</figure>')
            plots += 1
            sec.append(_table(["group", "cases", "payment - cost", "per case"],
                              [[codes[k], int(n[k]), f"{profit[k]:,.2f}", f"{profit[k] / n[k]:,.2f}"] for k in order]))
        else:
            sec.append("<p>No group pays less than it costs.</p>")
        sections.append("\n".join(sec))
        ct = cases["case_type"].to_numpy(zero_copy_only=False).astype(str)
        per = cases["period"].to_numpy(zero_copy_only=False).astype(str)
        cperiods = sorted(set(per.tolist()))
        counts = {t: np.array([int(((per == p) & (ct == t)).sum()) for p in cperiods]) for t in DEVIATION_TYPES}
        totals = np.array([int((per == p).sum()) for p in cperiods])
        rows = [[p, int(totals[i])] + [f"{counts[t][i]} ({counts[t][i] / max(totals[i], 1):.1%})" for t in DEVIATION_TYPES]
                for i, p in enumerate(cperiods)]
        sections.append("\n".join([
            "<h2>Deviation cases (偏差病例)</h2>",
            f'<figure class="plot">{plot_deviation(cperiods, counts)}</figure>',
            _table(["period", "cases", "high cost", "low cost", "special review"], rows),
        ]))
        plots += 1
    else:
        sections.append('<h2>Groups and deviation cases</h2><p class="note">Not shown: the settled periods\' '
                        "cases.parquet files were not given (pass the folder holding the settled outputs).</p>")

    # -- annual settlement
    if led["annual"]:
        rows = [[r[0], r[1], r[2], int(r[3]), _money(r[8]), _money(r[10]), _money(r[11])] for r in led["annual"]]
        sections.append("<h2>Annual settlement (年度清算)</h2>" +
                        _table(["year", "hospital", "fund", "cases", "amount due", "adjustment", "balance"], rows, 3))

    title = "drgdip settlement report"
    region = html.escape(led["region"] or "")
    span = f"{periods[0]} – {periods[-1]}" if periods else ", ".join(r["period"] for r in annual_runs)
    schemes = sorted({r["scheme_id"] for r in runs if r["scheme_id"]})
    head = (f"<h1>{title}</h1><p>{region}<br>settled periods: {html.escape(span)}; funds: "
            f"{html.escape(', '.join(funds))}; scheme: {html.escape(', '.join(schemes) or '-')}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>"
            f"<style>{_CSS}</style><script>{_SCRIPT}</script></head>\n"
            f"<body data-plots-expected=\"{plots}\">\n{head}\n" + "\n".join(sections) + "\n</body></html>\n")


def write_report(ledger_path, out_html, outputs=None) -> Path:
    """Write the report of a settled ledger (and of its settled outputs, if given) atomically."""
    led = read_ledger(ledger_path)
    periods = sorted({r["period"] for r in led["runs"] if r["kind"] == "monthly"})
    page = build_report(led, read_cases(outputs, periods))
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
