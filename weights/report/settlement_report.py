"""The settlement report (结算报告): one self-contained HTML page for a settled ledger.

``write_report(ledger_path, out_html, outputs=None)`` reads the ledger's current runs (point
values by month and fund, per-hospital payments, costs and case-mix) and, when ``outputs``
names the folder holding the settled periods' output folders (``<outputs>/<YYYY-MM>/
cases.parquet`` as ``drgdip settle --out`` writes them), the cases too (the most loss-making
groups, deviation cases). ``findings`` (a ``drgdip monitor`` findings CSV) adds the section
智能监控 Monitoring; ``benefits`` (a ``drgdip benefits`` stays file) with ``persons`` (its persons
file) adds 患者负担 Patient burden. Plots are matplotlib SVG inlined in the page: no file or
network is needed to view it. The same ledger and inputs give the same bytes.
"""
from __future__ import annotations

import html
import io
import re
import sqlite3
import tomllib
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from drgdip.arrowio import InputError, numeric
from drgdip.codesets.reasons import describe, reason_ids
from drgdip.weights.settlement import ledger as ledger_mod

TOP_LOSS_GROUPS = 20
FINDING_ROWS = 200          # drill-down rows of the monitoring section (the rest are counted)
TOP_DOCTORS = 30            # doctors listed in the monitoring section, most findings first
DEVIATION_TYPES = ("high_cost", "low_cost", "special_review", "incomplete_stay", "short_stay", "readmission")
FUND_COLOURS = {"employee": "#1f77b4", "resident": "#d62728"}


# ----------------------------------------------------------------- reading

_HOSPITAL_FIELDS = ("period", "hospital_id", "fund", "cases", "unpriced_cases", "weight_sum", "points",
                    "payment_cents", "cost_cents", "unpriced_cost_cents", "personal_share_cents",
                    "amount_due_cents", "withheld_cents", "paid_cents", "adjustment_cents", "monthly_paid_cents",
                    "balance_cents", "held_cents", "quality_refund_cents", "quality_kept_cents", "monthly_held_cents", "cap_cut_cents",
                    "held_cases", "held_cost_cents")


def _hospital_rows(conn: sqlite3.Connection, kind: str) -> list[dict]:
    """Hospital rows of the current runs of a kind. ``cases`` counts the priced cases only
    (计点病例); ``unpriced_cases`` the others of the hospital and fund."""
    have = ledger_mod.table_columns(conn, "hospital_results")       # a ledger of an earlier version lacks some
    cols = ", ".join("r.period" if c == "period" else f"h.{c}" if c in have else f"NULL AS {c}"
                     for c in _HOSPITAL_FIELDS)
    rows = conn.execute(
        f"SELECT {cols} FROM hospital_results h JOIN runs r USING (run_id) WHERE r.kind=? AND r.current=1 "
        "ORDER BY r.period, h.hospital_id, h.fund", (kind,)).fetchall()
    return [dict(zip(_HOSPITAL_FIELDS, r)) for r in rows]


def read_ledger(ledger_path) -> dict:
    """The ledger's current runs: funds by period, hospital rows (monthly and annual), the
    policy's region name, hospital levels and withholding share, and the ledger file's hash."""
    with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
        runs = [r for r in ledger_mod.runs(conn) if r["current"]]
        monthly = _hospital_rows(conn, "monthly")
        annual = _hospital_rows(conn, "annual")
        last = conn.execute("SELECT policy_text FROM runs WHERE current=1 ORDER BY run_id DESC LIMIT 1").fetchone()
    if not runs:
        raise InputError(f"{ledger_path}: the ledger holds no settlement")
    try:
        policy = tomllib.loads(last[0]) if last else {}
    except tomllib.TOMLDecodeError:
        policy = {}
    return {"runs": runs, "monthly": monthly, "annual": annual,
            "region": policy.get("region", {}).get("name", ""),
            "levels": dict(policy.get("coefficients", {}).get("hospital_level", {})),
            "withholding_share": policy.get("settlement", {}).get("withholding_share"),
            "ledger_name": Path(ledger_path).name}


def read_hospitals(path) -> dict[str, dict]:
    """hospital_id → {"name", "level"} from a CSV (columns hospital_id, name, level; as ``drgdip demo`` writes)."""
    import csv
    out = {}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if "hospital_id" not in (reader.fieldnames or []):
            raise InputError(f"{path}: a hospital list needs the column hospital_id (and name, level)")
        for row in reader:
            out[row["hospital_id"].strip()] = {"name": (row.get("name") or "").strip(),
                                               "level": (row.get("level") or "").strip()}
    return out


def read_cases(outputs, periods: list[str]) -> pa.Table | None:
    """Every case of the settled months found under ``outputs`` (priced and unpriced, not the readmissions'
    recovery rows; None when there are none)."""
    if outputs is None:
        return None
    parts = []
    for p in periods:
        f = Path(outputs) / p / "cases.parquet"
        if f.is_file():
            t = pq.read_table(f)
            if "case_type" in t.column_names:     # a readmission's recovery row is no case (its money: hospitals.csv)
                t = t.filter(pc.invert(pc.fill_null(pc.equal(t["case_type"], "adjustment"), False)))
            group = "drg" if "drg" in t.column_names else None
            if group is None or "amount" not in t.column_names:
                continue
            n = t.num_rows
            opt = lambda c: t[c].cast(pa.string()) if c in t.column_names else pa.nulls(n, pa.string())  # noqa: E731
            cols = {"period": pa.array([p] * n), "group": t["drg"].cast(pa.string()),
                    "hospital_id": t["hospital_id"].cast(pa.string()),
                    "total_cost": numeric(t["total_cost"], n)[0], "amount": t["amount"].cast(pa.float64()),
                    "case_type": t["case_type"].cast(pa.string()), "status": opt("status"),
                    "reason": opt("reason"), "pricing_reason": opt("pricing_reason"),
                    "payment_method": opt("payment_method"),
                    "review_trigger": opt("review_trigger"), "review_status": opt("review_status")}
            parts.append(pa.table(cols))
    return pa.concat_tables(parts) if parts else None


def _csv_dicts(path, need: set[str], what: str) -> list[dict]:
    import csv
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not need <= set(reader.fieldnames or ()):
            raise InputError(f"{path}: {what} needs the columns {', '.join(sorted(need))}")
        return [{k: (v or "").strip() for k, v in row.items()} for row in reader]


FINDING_COLUMNS = {"id", "rule", "severity", "hospital_id", "doctor_id", "patient_id", "record_ids",
                   "message_zh", "message_en", "status"}


def read_findings(path) -> list[dict]:
    """The rows of a monitoring findings CSV (as ``drgdip monitor`` writes it), in file order."""
    return _csv_dicts(path, FINDING_COLUMNS, "a monitoring findings file")


BENEFIT_COLUMNS = ("id", "patient_id", "year", "fund", "status", "reason", "total_cost_cents", "fund_basic_cents",
                   "fund_critical_cents", "assistance_cents", "assistance_relief_cents", "patient_cents")


def read_benefits(path, persons=None) -> dict:
    """The stays of a benefits file (``drgdip benefits`` output) and each stay's assistance
    class from the persons file (the person-and-year row first, then the person's row):
    ``{"stays": pa.Table, "classes": [code | "" (none) | None (not listed)], "class_names": {code: zh}}``."""
    t = pq.read_table(path) if str(path).lower().endswith(".parquet") else None
    if t is None:
        from drgdip.arrowio import read_table
        t = read_table(path)
    missing = [c for c in BENEFIT_COLUMNS if c not in t.column_names]
    if missing:
        raise InputError(f"{path}: a benefits file needs the columns {', '.join(missing)}")
    from drgdip.weights.settlement.benefits import load_benefit_policy
    policy = load_benefit_policy()
    labels = policy.class_of_label()
    by_key: dict = {}
    if persons is not None:
        for row in _csv_dicts(persons, {"patient_id"}, "a persons file"):
            c = row.get("assistance_class", "").lower()
            code = "" if c in ("", "none", "无") else labels.get(c, c)
            by_key[(row["patient_id"], row.get("year") or None)] = code
    classes = []
    for pid, year in zip(t["patient_id"].to_pylist(), t["year"].to_pylist()):
        y = None if year is None else str(year)
        classes.append(by_key.get((pid, y), by_key.get((pid, None))) if persons is not None else None)
    return {"stays": t, "classes": classes, "class_names": {c.code: c.zh for c in policy.classes.values()},
            "class_order": list(policy.classes)}


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


def _legend(ax) -> None:
    """The legend beside the axes, never over the bars or lines."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0.0)


def _headroom(ax, top: float) -> None:
    """The value axis runs past the highest bar, so no bar touches the frame."""
    if np.isfinite(top) and top > 0:
        ax.set_ylim(0, top * 1.08)


def plot_point_values(periods: list[str], values: dict[str, list[float | None]]) -> str:
    fig, ax = _figure()
    x = np.arange(len(periods))
    for fund, v in sorted(values.items()):
        y = np.array([np.nan if a is None else a for a in v], dtype=float)
        ax.plot(x, y, marker="o", label=fund, color=FUND_COLOURS.get(fund))
    ax.set_xticks(x, periods, rotation=45, ha="right")
    ax.set_ylabel("point value (yuan per point)")
    ax.set_title("Point value by month and fund")
    _legend(ax)
    return _svg(fig)


def plot_payment_cost(hospitals: list[str], payment: np.ndarray, cost: np.ndarray) -> str:
    fig, ax = _figure(9.0, 4.0)
    x = np.arange(len(hospitals))
    ax.bar(x - 0.2, payment / 1e4, 0.4, label="payment (points x value)", color="#2ca02c")
    ax.bar(x + 0.2, cost / 1e4, 0.4, label="cost", color="#7f7f7f")
    ax.set_xticks(x, hospitals, rotation=45, ha="right")
    ax.set_ylabel("10,000 yuan")
    ax.set_title("Payments vs costs by hospital")
    _headroom(ax, float(np.nanmax(np.concatenate([payment, cost]) / 1e4)) if len(x) else 0.0)
    _legend(ax)
    return _svg(fig)


def plot_cmi(hospitals: list[str], cmi: np.ndarray) -> str:
    fig, ax = _figure(9.0, 3.4)
    x = np.arange(len(hospitals))
    ax.bar(x, cmi, color="#9467bd")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(x, hospitals, rotation=45, ha="right")
    ax.set_ylabel("CMI (mean relative weight)")
    ax.set_title("Case-mix index by hospital")
    _headroom(ax, float(np.nanmax(np.append(cmi, 1.0))) if len(x) else 1.0)
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
    low = float(np.min(profit / 1e4)) if len(groups) else 0.0
    if low < 0:
        ax.set_xlim(low * 1.08, 0)
    return _svg(fig)


def plot_deviation(periods: list[str], counts: dict[str, np.ndarray]) -> str:
    fig, ax = _figure()
    x = np.arange(len(periods))
    bottom = np.zeros(len(periods))
    for t, colour in zip(DEVIATION_TYPES, ("#ff7f0e", "#17becf", "#8c564b", "#9467bd", "#bcbd22", "#e377c2")):
        ax.bar(x, counts[t], bottom=bottom, label=t.replace("_", " "), color=colour)
        bottom += counts[t]
    ax.set_xticks(x, periods, rotation=45, ha="right")
    ax.set_ylabel("cases")
    ax.set_title("Deviation cases by month")
    _headroom(ax, float(bottom.max()) if len(x) else 0.0)
    _legend(ax)
    return _svg(fig)


def plot_hospital_trend(periods: list[str], hospitals: list[str], paid: np.ndarray) -> str:
    """Paid per hospital and month (rows hospitals, columns months), one line each."""
    fig, ax = _figure(9.0, 4.0)
    x = np.arange(len(periods))
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, h in enumerate(hospitals):
        ax.plot(x, paid[i] / 1e4, marker=".", lw=1.2, label=h, color=cmap(i % 20))
    ax.set_xticks(x, periods, rotation=45, ha="right")
    ax.set_ylabel("paid, 10,000 yuan")
    ax.set_title("Paid by hospital and month")
    _headroom(ax, float(paid.max() / 1e4) if paid.size else 0.0)
    _legend(ax)
    return _svg(fig)


# ----------------------------------------------------------------- page

class _Html(str):
    """Text that is already HTML (the page's own bilingual markup), written as it is."""


def _cell(v, numeric_cell: bool) -> str:
    inner = v if isinstance(v, _Html) else html.escape(str(v))
    return f'<td class="{"n" if numeric_cell else "t"}">{inner}</td>'


def _table(head: list[str], rows: list[list], numeric_from: int = 1, table_id: str | None = None,
           total: list | None = None) -> str:
    """A table; ``total`` is its totals row (合计), set apart in a <tfoot>."""
    th = "".join(f"<th>{h}</th>" for h in head)   # headings are the page's own (bilingual) markup
    body = ["<tr>" + "".join(_cell(v, i >= numeric_from) for i, v in enumerate(r)) + "</tr>" for r in rows]
    foot = ("<tfoot><tr>" + "".join(_cell(v, i >= numeric_from) for i, v in enumerate(total)) + "</tr></tfoot>"
            if total is not None else "")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody>{foot}</table>"


def _fund_limits_section(annual_runs: list[dict], annual_rows: list[dict]) -> str:
    """Per year and fund: budget, 调剂金 reserve and the cap's cut, projected and settlement point
    values, the withholding refunded and kept, the advances the months held back (docs/settlement.md §7)."""
    rows = []
    for run in annual_runs:
        for f in run["funds"]:
            m = [r for r in annual_rows if r["period"] == run["period"] and r["fund"] == f["fund"]]
            sm = lambda c: None if all(r[c] is None for r in m) else sum(r[c] or 0 for r in m)  # noqa: E731
            ppv = f.get("projected_point_value")
            rows.append([run["period"], f["fund"], _money(None if f["budget"] is None else round(f["budget"] * 100)),
                         _money(f.get("reserve_cents")), _money(f.get("reserve_used_cents")),
                         _money(f.get("cap_cut_cents")), "-" if ppv is None else f"{ppv:.4f}",
                         "-" if f["point_value"] is None else f"{f['point_value']:.4f}",
                         _money(sm("quality_refund_cents")), _money(sm("quality_kept_cents")),
                         _money(sm("monthly_held_cents")), _money(sm("paid_cents"))])
    return (f"<h2>{_h('基金支付上限与年度清算', 'Fund limits and the year cleared')}</h2>"
            "<p class=\"note\">调剂金 reserve, cap and cut; 预算 projected and 结算 settlement point values; "
            "质量保证金 refunded by score; 月度预拨 advances held back (docs/settlement.md §7). A dash: the rule "
            "is off.</p>" + _table(
                ["year", "fund", _h("预算", "budget"), _h("调剂金", "reserve"), _h("调剂金使用", "reserve used"),
                 _h("超上限扣减", "cap cut"), _h("预算点值", "projected point value"),
                 _h("结算点值", "settlement point value"), _h("质量保证金返还", "withholding refunded"),
                 _h("质量保证金扣留", "withholding kept"), _h("预拨留存", "advances held"),
                 _h("年度应付", "paid for the year")], rows, 2, "fund-limits"))


def _money(cents) -> str:
    return "-" if cents is None else f"{cents / 100:,.2f}"


def _h(zh: str, en: str) -> str:
    """A bilingual heading or column name: Chinese, then English."""
    return _Html(f'<span lang="zh">{html.escape(zh)}</span> <span lang="en">{html.escape(en)}</span>')


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}th,td{padding:.2rem .6rem;
border-bottom:1px solid #eee}td.n{text-align:right;font-variant-numeric:tabular-nums}th{text-align:left;background:#f6f6f6}
th span[lang=en]{display:block;font-weight:normal;color:#555}tfoot td{font-weight:bold;border-top:2px solid #999}
figure.plot{margin:1rem 0}figure.plot svg{max-width:100%;height:auto}p.note{color:#666;font-size:.85rem}p.warn{color:#8a1c1c;background:#fdecea;padding:.4rem .6rem}
dl.terms dt{font-weight:bold;margin-top:.4rem}dl.terms dd{margin-left:1.5rem}code{font-size:.85rem}"""

# Counts the plots that have drawn (an <svg> with a non-empty box) into data attributes of
# <body>: the page says whether every plot rendered, for a person and for the browser test.
_SCRIPT = """window.addEventListener("load",function(){var f=document.querySelectorAll("figure.plot"),n=0;
for(var i=0;i<f.length;i++){var s=f[i].querySelector("svg");if(s){var b=s.getBoundingClientRect();
if(b.width>0&&b.height>0){n++;}}}document.body.setAttribute("data-plots-expected",String(f.length));
document.body.setAttribute("data-plots-rendered",String(n));});"""

_TERMS = (
    ("计点病例 / 未计点病例", "priced / unpriced cases",
     "A priced case has points; an unpriced one (invalid record, not grouped, no weight, bad cost, unknown fund...) "
     "has none and is listed for review with its reason. <i>All cases</i> = priced + unpriced."),
    ("病例组合指数 CMI", "case-mix index", "Σ relative weight of the priced cases ÷ the number of priced cases."),
    ("点值", "point value", "Yuan per point of a fund and month: (budget + personal share of the priced cases) ÷ Σ points."),
    ("支付额", "payment", "Σ points × point value of the hospital's priced cases, in yuan (0.01)."),
    ("个人负担", "personal share", "What the patients paid themselves for those cases."),
    ("应付金额", "amount due", "payment − personal share: what the fund owes the hospital for the month."),
    ("质量保证金", "withholding", "amount due × the policy's withholding share, held back until the annual settlement."),
    ("实付金额", "paid", "amount due − withholding: what the fund paid the hospital for the month."),
    ("清算调整", "adjustment",
     "Annual settlement: what the surplus / overspend bands add to (or take from) the year's amount due."),
    ("清算余额", "balance",
     "Annual settlement: amount due + adjustment − Σ monthly paid; positive: the fund still owes the hospital."),
)


def _name(hospitals: dict, levels: dict, h: str) -> tuple[str, str]:
    info = hospitals.get(h, {})
    return info.get("name", "") or "-", str(info.get("level") or levels.get(h, "") or "-")


def hospital_figures(monthly: list[dict]) -> dict:
    """Per hospital over the monthly runs (all funds): priced and unpriced cases, Σ weight,
    CMI, money in cents; per hospital and month: paid (cents) and priced cases."""
    hid = sorted({r["hospital_id"] for r in monthly})
    periods = sorted({r["period"] for r in monthly})
    idx, pidx = {h: i for i, h in enumerate(hid)}, {p: j for j, p in enumerate(periods)}
    k = len(hid)
    z = lambda: np.zeros(k, dtype=np.int64)  # noqa: E731
    out = {"hospitals": hid, "periods": periods, "priced": z(), "unpriced": z(), "weight_sum": np.zeros(k),
           "payment": z(), "cost": z(), "unpriced_cost": z(), "personal_share": z(), "amount_due": z(),
           "withheld": z(), "held": z(), "paid": z(), "paid_by_month": np.zeros((k, len(periods)), dtype=np.int64),
           "priced_by_month": np.zeros((k, len(periods)), dtype=np.int64)}
    for r in monthly:
        i = idx[r["hospital_id"]]
        out["priced"][i] += r["cases"]
        out["unpriced"][i] += r["unpriced_cases"]
        out["weight_sum"][i] += r["weight_sum"]
        for key, col in (("payment", "payment_cents"), ("cost", "cost_cents"), ("unpriced_cost", "unpriced_cost_cents"),
                         ("personal_share", "personal_share_cents"), ("amount_due", "amount_due_cents"),
                         ("withheld", "withheld_cents"), ("paid", "paid_cents")):
            out[key][i] += r[col]
        out["held"][i] += r["held_cents"] or 0          # 月度预拨: held back until the year
        out["paid_by_month"][i, pidx[r["period"]]] += r["paid_cents"]
        out["priced_by_month"][i, pidx[r["period"]]] += r["cases"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["cmi"] = np.where(out["priced"] > 0, out["weight_sum"] / np.maximum(out["priced"], 1), np.nan)
    return out


def _short(v) -> str:
    """A SHA-256 digest as its first 16 hex digits; any other value as it is."""
    v = str(v)
    return v[:16] if re.fullmatch(r"[0-9a-f]{64}", v) else v


def _cmi(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.3f}"


def build_report(led: dict, cases: pa.Table | None, hospitals: dict | None = None,
                 group_names: dict | None = None, findings: list[dict] | None = None,
                 benefits: dict | None = None) -> str:
    """The page. ``hospitals``: hospital_id → {"name", "level"}; ``group_names``: group code → name;
    ``findings``: rows of :func:`read_findings`; ``benefits``: :func:`read_benefits`."""
    hospitals = hospitals or {}
    group_names = group_names or {}
    levels = led.get("levels", {})
    runs = led["runs"]
    monthly_runs = sorted((r for r in runs if r["kind"] == "monthly"), key=lambda r: r["period"])
    annual_runs = sorted((r for r in runs if r["kind"] == "annual"), key=lambda r: r["period"])
    periods = [r["period"] for r in monthly_runs]
    funds = sorted({f["fund"] for r in runs for f in r["funds"]})
    sections = []
    plots = 0

    # -- terms
    terms = "".join(f"<dt>{_h(zh, en)}</dt><dd>{text_}</dd>" for zh, en, text_ in _TERMS)
    share = led.get("withholding_share")
    if share is not None:
        terms += f"<dd>Withholding share of this policy: {share:.2%}.</dd>"
    sections.append(f"<h2>{_h('术语', 'Terms')}</h2><dl class=\"terms\">{terms}</dl>")

    # -- point values (unpriced cases per fund from the hospital rows of the same run)
    unpriced_fund: dict[tuple, int] = {}
    for r in led["monthly"] + led["annual"]:
        key = (r["period"], r["fund"])
        unpriced_fund[key] = unpriced_fund.get(key, 0) + r["unpriced_cases"]
    pv = {f: [next((x["point_value"] for x in r["funds"] if x["fund"] == f), None) for r in monthly_runs]
          for f in funds}
    rows = []
    mt = {"priced": 0, "unpriced": 0, "points": 0.0, "budget": 0}
    for r in monthly_runs + annual_runs:
        for f in r["funds"]:
            unp = unpriced_fund.get((r["period"], f["fund"]), 0)
            if r["kind"] == "monthly":
                mt["priced"] += f["cases"]
                mt["unpriced"] += unp
                mt["points"] += f["total_points"]
                mt["budget"] += round((f["budget"] or 0) * 100)
            rows.append([r["period"], r["kind"], f["fund"], f["cases"], unp, f["cases"] + unp,
                         f"{f['total_points']:,.1f}",
                         "-" if f["point_value"] is None else f"{f['point_value']:.4f}",
                         "-" if f["budget"] is None else f"{f['budget']:,.2f}"])
    sec = [f"<h2>{_h('月度点值', 'Point value by month')}</h2>"]
    if periods:
        sec.append(f'<figure class="plot">{plot_point_values(periods, pv)}</figure>')
        plots += 1
    sec.append(_table(["period", "kind", "fund", _h("计点病例", "priced cases"), _h("未计点病例", "unpriced cases"),
                       _h("全部病例", "all cases"), _h("总点数", "points"), _h("点值", "point value"),
                       _h("预算", "budget")], rows, 3, "point-values",
                      [_h("合计", "total"), "monthly", "", mt["priced"], mt["unpriced"], mt["priced"] + mt["unpriced"],
                       f"{mt['points']:,.1f}", "-", _money(mt["budget"])]))
    sections.append("\n".join(sec))

    # -- hospitals: payments vs costs, CMI (monthly runs summed), with totals
    fig = hospital_figures(led["monthly"])
    hid = fig["hospitals"]
    if hid:
        names = [_name(hospitals, levels, h) for h in hid]
        tot = {k: int(fig[k].sum()) for k in ("priced", "unpriced", "payment", "cost", "amount_due", "withheld",
                                               "held", "paid", "unpriced_cost")}
        tot_cmi = float(fig["weight_sum"].sum()) / tot["priced"] if tot["priced"] else float("nan")
        money_rows = [[h, names[i][0], names[i][1], int(fig["priced"][i]), int(fig["unpriced"][i]),
                       _money(fig["payment"][i]), _money(fig["cost"][i]), _money(fig["payment"][i] - fig["cost"][i]),
                       _money(fig["amount_due"][i]), _money(fig["withheld"][i]), _money(fig["held"][i]),
                       _money(fig["paid"][i]), _money(fig["unpriced_cost"][i])] for i, h in enumerate(hid)]
        money_total = [_h("合计", "total"), "", "", tot["priced"], tot["unpriced"], _money(tot["payment"]),
                       _money(tot["cost"]), _money(tot["payment"] - tot["cost"]), _money(tot["amount_due"]),
                       _money(tot["withheld"]), _money(tot["held"]), _money(tot["paid"]), _money(tot["unpriced_cost"])]
        sections.append("\n".join([
            f"<h2>{_h('各医疗机构支付与费用', 'Payments vs costs by hospital')}</h2>",
            f'<p class="note">Monthly pre-settlements {html.escape(periods[0])} – {html.escape(periods[-1])} summed, '
            "all funds. Costs are those of the priced cases; the unpriced cases' costs are in the last column.</p>"
            if periods else "",
            f'<figure class="plot">{plot_payment_cost(hid, fig["payment"] / 100, fig["cost"] / 100)}</figure>',
            _table(["hospital", _h("名称", "name"), _h("级别", "level"), _h("计点病例", "priced cases"),
                    _h("未计点病例", "unpriced cases"), _h("支付额", "payment"), _h("费用", "cost"),
                    _h("支付−费用", "payment − cost"), _h("应付金额", "amount due"), _h("质量保证金", "withheld"),
                    _h("预拨留存", "advance held"), _h("实付金额", "paid"), _h("未计点病例费用", "unpriced cost")],
                   money_rows, 3, "hospitals", money_total),
            f"<h2>{_h('病例组合指数', 'Case-mix index (CMI) by hospital')}</h2>",
            f'<figure class="plot">{plot_cmi(hid, fig["cmi"])}</figure>',
            _table(["hospital", _h("名称", "name"), _h("计点病例", "priced cases"), _h("权重合计", "Σ weight"), "CMI"],
                   [[h, names[i][0], int(fig["priced"][i]), f"{fig['weight_sum'][i]:,.3f}", _cmi(fig["cmi"][i])]
                    for i, h in enumerate(hid)], 2, "cmi",
                   [_h("合计", "total"), "", tot["priced"], f"{float(fig['weight_sum'].sum()):,.3f}", _cmi(tot_cmi)]),
        ]))
        plots += 2
        # -- per-hospital monthly trend
        mp = fig["periods"]
        sections.append("\n".join([
            f"<h2>{_h('各医疗机构月度趋势', 'Monthly trend by hospital')}</h2>",
            f'<figure class="plot">{plot_hospital_trend(mp, hid, fig["paid_by_month"] / 100)}</figure>',
            f"<p>{_h('实付金额（元）', 'Paid (yuan)')}</p>",
            _table(["hospital", *mp, _h("合计", "total")],
                   [[h, *(_money(c) for c in fig["paid_by_month"][i]), _money(fig["paid_by_month"][i].sum())]
                    for i, h in enumerate(hid)], 1, "trend-paid",
                   [_h("合计", "total"), *(_money(c) for c in fig["paid_by_month"].sum(axis=0)),
                    _money(fig["paid_by_month"].sum())]),
            f"<p>{_h('计点病例', 'Priced cases')}</p>",
            _table(["hospital", *mp, _h("合计", "total")],
                   [[h, *(int(c) for c in fig["priced_by_month"][i]), int(fig["priced_by_month"][i].sum())]
                    for i, h in enumerate(hid)], 1, "trend-cases",
                   [_h("合计", "total"), *(int(c) for c in fig["priced_by_month"].sum(axis=0)),
                    int(fig["priced_by_month"].sum())]),
        ]))
        plots += 1

    # -- cases: unpriced and invalid, loss-making groups and deviation cases
    if cases is not None and cases.num_rows:
        sections.append(_methods_section(cases))
        sections.append(_unpriced_section(cases))
        priced_mask = pc.invert(pc.is_null(cases["amount"]))
        by_group = pc.invert(pc.fill_null(pc.is_in(cases["payment_method"], pa.array(["per_diem", "fee_for_service"])),
                                          False))
        pcs = cases.filter(pc.and_(priced_mask, by_group))     # the groups' cases: not per diem, not by items
        g = pcs["group"].to_numpy(zero_copy_only=False).astype(str)
        profit_case = pcs["amount"].to_numpy() - pcs["total_cost"].to_numpy()
        codes, inv = np.unique(g, return_inverse=True)
        profit = np.bincount(inv, profit_case, minlength=len(codes))
        n = np.bincount(inv, minlength=len(codes))
        order = np.lexsort((codes, profit))[:TOP_LOSS_GROUPS]
        order = order[profit[order] < 0]
        sec = [f"<h2>{_h('亏损最多的病组', 'The most loss-making groups')}</h2>"]
        if len(order):
            sec.append(f'<figure class="plot">{plot_loss_groups(codes[order].tolist(), profit[order])}</figure>')
            plots += 1
            sec.append(_table(["group", _h("病组名称", "group name"), _h("计点病例", "priced cases"),
                               _h("支付−费用", "payment − cost"), _h("每例", "per case")],
                              [[codes[k], group_names.get(codes[k], "-"), int(n[k]), f"{profit[k]:,.2f}",
                                f"{profit[k] / n[k]:,.2f}"] for k in order], 2, "loss-groups"))
        else:
            sec.append("<p>No group pays less than it costs.</p>")
        sections.append("\n".join(sec))
        ct = cases["case_type"].to_numpy(zero_copy_only=False).astype(str)
        per = cases["period"].to_numpy(zero_copy_only=False).astype(str)
        priced_np = priced_mask.to_numpy(zero_copy_only=False)
        cperiods = sorted(set(per.tolist()))
        counts = {t: np.array([int(((per == p) & (ct == t)).sum()) for p in cperiods]) for t in DEVIATION_TYPES}
        totals = np.array([int((per == p).sum()) for p in cperiods])
        priced_n = np.array([int(((per == p) & priced_np).sum()) for p in cperiods])
        rows = [[p, int(totals[i]), int(priced_n[i])] +
                [f"{counts[t][i]} ({counts[t][i] / max(priced_n[i], 1):.1%})" for t in DEVIATION_TYPES]
                for i, p in enumerate(cperiods)]
        total_row = [_h("合计", "total"), int(totals.sum()), int(priced_n.sum())] + \
            [f"{int(counts[t].sum())} ({counts[t].sum() / max(priced_n.sum(), 1):.1%})" for t in DEVIATION_TYPES]
        sections.append("\n".join([
            f"<h2>{_h('偏差病例', 'Deviation cases')}</h2>",
            '<p class="note">Shares are of the priced cases of the month.</p>',
            f'<figure class="plot">{plot_deviation(cperiods, counts)}</figure>',
            _table(["period", _h("全部病例", "all cases"), _h("计点病例", "priced cases"), _h("高倍率", "high cost"),
                    _h("低倍率", "low cost"), _h("特病单议", "special review"),
                    _h("非完整住院", "incomplete stay"), _h("低住院天数", "short stay"),
                    _h("再入院", "readmission")], rows, 1, "deviation", total_row),
        ]))
        plots += 1
    else:
        sections.append(f"<h2>{_h('病组与偏差病例', 'Groups and deviation cases')}</h2><p class=\"note\">Not shown: "
                        "the settled periods' cases.parquet files were not given (pass the folder holding the "
                        "settled outputs).</p>")

    # -- special case review (特例单议): held cases per hospital, never silently unpaid
    sections.append(_review_section(led["monthly"], cases, hospitals, levels))

    # -- annual settlement, with totals per fund
    if led["annual"]:
        rows, foot = [], []
        for r in led["annual"]:
            name, _ = _name(hospitals, levels, r["hospital_id"])
            rows.append([r["period"], r["hospital_id"], name, r["fund"], int(r["cases"]), _money(r["amount_due_cents"]),
                         _money(r["adjustment_cents"]), _money(r["quality_kept_cents"] or 0),
                         _money(r["cap_cut_cents"] or 0), _money(r["paid_cents"]), _money(r["monthly_paid_cents"]),
                         _money(r["balance_cents"])])
        for year in sorted({r["period"] for r in led["annual"]}):
            for f in sorted({r["fund"] for r in led["annual"] if r["period"] == year}):
                m = [r for r in led["annual"] if r["period"] == year and r["fund"] == f]
                sm = lambda c: sum(r[c] or 0 for r in m)  # noqa: E731
                foot.append([year, _h("合计", "total"), "", f, sum(r["cases"] for r in m), _money(sm("amount_due_cents")),
                             _money(sm("adjustment_cents")), _money(sm("quality_kept_cents")),
                             _money(sm("cap_cut_cents")), _money(sm("paid_cents")), _money(sm("monthly_paid_cents")),
                             _money(sm("balance_cents"))])
        stale = [r["period"] for r in annual_runs if r.get("stale")]
        warn = (f"<p class=\"warn\"><strong>{_h('年度清算已过期', 'Annual settlement is stale')}</strong>: "
                f"{html.escape(', '.join(stale))} — a month of the year was settled or reopened after it; "
                f"rerun <code>drgdip settle YEAR --final --reopen</code>.</p>") if stale else ""
        sections.append(f"<h2>{_h('年度清算', 'Annual settlement')}</h2>" + warn + _table(
            ["year", "hospital", _h("名称", "name"), "fund", _h("计点病例", "priced cases"), _h("应付金额", "amount due"),
             _h("清算调整", "adjustment"), _h("质量保证金扣留", "quality kept"), _h("超上限扣减", "cap cut"),
             _h("年度应付", "paid for the year"), _h("月度已付", "monthly paid"), _h("清算余额", "balance")],
            rows + foot, 4, "annual"))
        sections.append(_fund_limits_section(annual_runs, led["annual"]))

    # -- smart monitoring and the patient's side, when given
    if findings is not None:
        sections.append(_monitoring_section(findings, hospitals))
    if benefits is not None:
        sections.append(_benefits_section(benefits))

    # -- where the figures come from
    rev_rows = [[r["period"], r["kind"], r["revision"], r.get("state", "current"),
                 _Html(f"<time>{html.escape(r['created_at'])}</time>"),
                 r["scheme_id"] or "-",
                 r["policy_sha256"][:16], "; ".join(f"{k} {_short(v)}" for k, v in sorted(r["inputs"].items()))]
                for r in monthly_runs + annual_runs]
    sections.append(f"<h2>{_h('数据来源', 'Sources')}</h2>" + _table(
        ["period", "kind", _h("版本", "revision"), _h("状态", "state"), _h("结算时间 (UTC)", "settled at (UTC)"), "scheme",
         _h("政策 SHA-256", "policy SHA-256"), _h("输入文件 SHA-256", "input SHA-256")], rev_rows, 9, "sources"))

    title = "drgdip 结算报告 settlement report"
    region = html.escape(led["region"] or "")
    span = f"{periods[0]} – {periods[-1]}" if periods else ", ".join(r["period"] for r in annual_runs)
    schemes = sorted({r["scheme_id"] for r in runs if r["scheme_id"]})
    as_of = max(r["created_at"] for r in runs)
    head = (f"<h1>{title}</h1><p>{region}<br>settled periods: {html.escape(span)}; funds: "
            f"{html.escape(', '.join(funds))}; scheme: {html.escape(', '.join(schemes) or '-')}<br>"
            f"{_h('生成依据', 'As of')} the ledger {html.escape(led.get('ledger_name', ''))} at its last settlement, "
            f"<time id=\"as-of\">{html.escape(as_of)}</time> UTC (the same ledger gives the same page)</p>")
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>"
            f"<style>{_CSS}</style><script>{_SCRIPT}</script></head>\n"
            f"<body data-plots-expected=\"{plots}\">\n{head}\n" + "\n".join(sections) + "\n</body></html>\n")


def _review_section(monthly: list[dict], cases: pa.Table | None, hospitals: dict, levels: dict) -> str:
    """特例单议 Special case review: the cases held (no points until the office decides) per
    hospital and month from the ledger's current monthly runs; with the cases, counts by
    trigger and status."""
    held: dict[str, dict[str, list[int]]] = {}
    for r in monthly:
        if r.get("held_cases"):
            cell = held.setdefault(r["hospital_id"], {}).setdefault(r["period"], [0, 0])
            cell[0] += r["held_cases"]
            cell[1] += r["held_cost_cents"]
    sec = [f"<h2>{_h('特例单议', 'Special case review')}</h2>"]
    if held:
        n = sum(c[0] for h in held.values() for c in h.values())
        money = sum(c[1] for h in held.values() for c in h.values())
        sec.append(f"<p class=\"warn\"><strong>{_h('待审核病例', 'Held, undecided')}</strong>: {n} case(s), cost "
                   f"{_money(money)}, not paid until the office decides (settle the month again with "
                   "<code>--decisions FILE --reopen</code>).</p>")
        rows = [[h, _name(hospitals, levels, h)[0], ", ".join(sorted(held[h])),
                 sum(c[0] for c in held[h].values()), _money(sum(c[1] for c in held[h].values()))]
                for h in sorted(held)]
        sec.append(_table(["hospital", _h("名称", "name"), _h("结算期", "periods"), _h("待审核病例", "held cases"),
                           _h("待审核费用", "held cost")], rows, 3, "review-held",
                          [_h("合计", "total"), "", "", n, _money(money)]))
    else:
        sec.append("<p>No case is held for special review in the current monthly runs.</p>")
    if cases is not None and cases.num_rows and "review_status" in cases.column_names:
        t = cases.filter(pc.is_valid(cases["review_status"]))
        if t.num_rows:
            per = t["period"].to_pylist()
            trig, st = t["review_trigger"].to_pylist(), t["review_status"].to_pylist()
            keys = sorted({(p, g) for p, g in zip(per, trig)})
            statuses = ("held", "interim", "decided", "over_quota")
            rows = [[p, g] + [sum(1 for a, b, c in zip(per, trig, st) if (a, b, c) == (p, g, s)) for s in statuses]
                    for p, g in keys]
            sec.append(_table(["period", _h("触发条件", "trigger"), _h("待审核", "held"), _h("审核中已预付", "interim"),
                               _h("已决定", "decided"), _h("超出比例", "over quota")], rows, 2, "review-cases"))
    return "\n".join(sec)


def _rule_names() -> dict:
    from drgdip.weights.monitoring.rules import load_rules
    return {r.rule: r.zh_name for r in load_rules()}


def _count_table(keys: list[tuple], rows_of: dict, rule_cols: list[str], head: list, tid: str,
                 total_label_cells: int) -> tuple[list, list]:
    """Rows of (key cells…, count per rule…, total) and the totals row."""
    rows = [[*k, *(rows_of[k].get(r, 0) for r in rule_cols), sum(rows_of[k].values())] for k in keys]
    foot = [_h("合计", "total"), *([""] * (total_label_cells - 1)),
            *(sum(rows_of[k].get(r, 0) for k in rows_of) for r in rule_cols), sum(sum(v.values()) for v in rows_of.values())]
    return rows, foot


def _monitoring_section(findings: list[dict], hospitals: dict) -> str:
    """智能监控: findings by rule, by hospital and by doctor, and a drill-down of the findings."""
    names = _rule_names()
    flagged = [f for f in findings if f["status"] == "flagged"]
    unchecked = [f for f in findings if f["status"] != "flagged"]
    present = {f["rule"] for f in findings}
    rule_order = [r for r in names if r in present] + sorted(present - set(names))
    sec = [f"<h2>{_h('智能监控', 'Monitoring')}</h2>",
           (f'<p class="note">{len(findings)} findings: {len(flagged)} flagged, {len(unchecked)} not checked '
            "(a record without the input the rule needs). Each finding is a signal for review, not a verdict.</p>")]
    if not findings:
        sec.append("<p>No rule flagged anything.</p>")
        return "\n".join(sec)
    by_rule = {r: [f for f in flagged if f["rule"] == r] for r in rule_order}
    rows = [[r, names.get(r, "-"), next((f["severity"] for f in findings if f["rule"] == r), "-"), len(by_rule[r]),
             len({f["hospital_id"] for f in by_rule[r] if f["hospital_id"]}),
             sum(1 for f in unchecked if f["rule"] == r)] for r in rule_order]
    sec.append(f"<p>{_h('按规则', 'By rule')}</p>" + _table(
        ["rule", _h("名称", "name"), _h("级别", "severity"), _h("疑点", "flagged"), _h("涉及医疗机构", "hospitals"),
         _h("未检查", "not checked")], rows, 3, "monitor-rules",
        [_h("合计", "total"), "", "", len(flagged), len({f["hospital_id"] for f in flagged if f["hospital_id"]}),
         len(unchecked)]))
    flagged_rules = [r for r in rule_order if by_rule[r]]
    hosp: dict = {}
    for f in flagged:
        k = (f["hospital_id"] or "-",)
        hosp.setdefault(k, {})[f["rule"]] = hosp.get(k, {}).get(f["rule"], 0) + 1
    keys = sorted(hosp)
    rows, foot = _count_table(keys, hosp, flagged_rules, [], "monitor-hospitals", 2)
    rows = [[r[0], _name(hospitals, {}, r[0])[0], *r[1:]] for r in rows]
    foot = [foot[0], "", *foot[2:]]
    sec.append(f"<p>{_h('按医疗机构', 'By hospital')}</p>" + _table(
        ["hospital", _h("名称", "name"), *flagged_rules, _h("合计", "total")], rows, 2, "monitor-hospitals", foot))
    doc: dict = {}
    for f in flagged:
        if f["doctor_id"]:
            k = (f["doctor_id"], f["hospital_id"] or "-")
            doc.setdefault(k, {})[f["rule"]] = doc.get(k, {}).get(f["rule"], 0) + 1
    if doc:
        doc_rules = [r for r in flagged_rules if any(r in v for v in doc.values())]
        keys = sorted(doc, key=lambda k: (-sum(doc[k].values()), k))
        rows, foot = _count_table(keys[:TOP_DOCTORS], doc, doc_rules, [], "monitor-doctors", 2)
        rest = keys[TOP_DOCTORS:]
        note = (f'<p class="note">The {TOP_DOCTORS} doctors with most findings; {len(rest)} more doctors have '
                f"{sum(sum(doc[k].values()) for k in rest)} findings. The totals row counts every doctor.</p>"
                if rest else "")
        _, foot = _count_table(keys, doc, doc_rules, [], "monitor-doctors", 2)
        sec.append(f"<p>{_h('按医师', 'By doctor')}</p>" + note + _table(
            ["doctor", "hospital", *doc_rules, _h("合计", "total")], rows, 2, "monitor-doctors", foot))
    shown = flagged[:FINDING_ROWS]
    rows = [[f["rule"], f["severity"], f["hospital_id"] or "-", f["doctor_id"] or "-", f["patient_id"] or "-",
             " | ".join(x for x in f["record_ids"].split("|") if x) or "-",
             _Html(f'<span lang="zh">{html.escape(f["message_zh"])}</span><br>'
                   f'<span lang="en">{html.escape(f["message_en"])}</span>')] for f in shown]
    more = (f'<p class="note">The first {len(shown)} of {len(flagged)} flagged findings, in the order of the '
            f"findings file; {len(flagged) - len(shown)} more are in the file.</p>"
            if len(flagged) > len(shown) else "")
    sec.append(f"<p>{_h('疑点明细', 'Findings')}</p>" + more + _table(
        ["rule", _h("级别", "severity"), "hospital", "doctor", "patient", _h("病例", "records"),
         _h("说明", "finding")], rows, 7, "monitor-findings"))
    return "\n".join(sec)


BENEFIT_TIERS = (("fund_basic_cents", "基本医保统筹基金", "basic fund"),
                 ("fund_critical_cents", "大病保险 / 职工大额医疗费用补助",
                  "critical-illness insurance / employee large-claim top-up"),
                 ("assistance_cents", "医疗救助", "medical assistance"),
                 ("patient_cents", "个人负担", "patient"))


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _mean_cents(total: int, n: int) -> int:
    """total / n rounded half up, in integer cents."""
    return (2 * total + n) // (2 * n)


def _benefits_section(ben: dict) -> str:
    """患者负担: the year's stays split between the three tiers and the patient, by fund and by
    assistance class (valid stays: paid or in a waiting period)."""
    t = ben["stays"]
    status = t["status"].to_pylist()
    valid = [s != "invalid" for s in status]
    money = {c: [0 if v is None else int(v) for v in t[c].to_pylist()] for c in
             ("total_cost_cents",) + tuple(c for c, *_ in BENEFIT_TIERS) + ("assistance_relief_cents",)}
    fund = t["fund"].to_pylist()
    funds = sorted({f for f, ok in zip(fund, valid) if ok and f})
    n_valid = sum(valid)
    sec = [f"<h2>{_h('患者负担', 'Patient burden')}</h2>",
           (f'<p class="note">{len(status)} stays: {status.count("paid")} paid, {status.count("waiting")} in a '
            f"waiting period (待遇等待期: the patient bears the whole cost), {status.count('invalid')} invalid (left "
            "out below, see their reasons). Basic insurance, then critical-illness insurance, then medical "
            "assistance (三重制度, docs/benefits.md); the second tier is critical-illness insurance for residents and "
            "the large-claim top-up (职工大额医疗费用补助) for employees; per stay the four parts add up to its "
            "cost. A settlement run with --benefits takes its personal share from this calculation.</p>")]

    def tot(col, pick):
        return sum(v for v, ok in zip(money[col], pick) if ok)

    fpick = {f: [ok and x == f for ok, x in zip(valid, fund)] for f in funds}
    cost_all = tot("total_cost_cents", valid)
    rows = []
    for col, zh, en in BENEFIT_TIERS:
        rows.append([_h(zh, en), *(_money(tot(col, fpick[f])) for f in funds), _money(tot(col, valid)),
                     _share(tot(col, valid), cost_all)])
    relief = tot("assistance_relief_cents", valid)
    sec.append(f"<p>{_h('按支付方', 'By tier')}</p>" + _table(
        [_h("支付方", "tier"), *funds, _h("全部", "all"), _h("占费用", "share of cost")], rows, 1, "benefit-tiers",
        [_h("合计", "total"), *(_money(tot("total_cost_cents", fpick[f])) for f in funds), _money(cost_all),
         _share(cost_all, cost_all)]) +
        f'<p class="note">Medical assistance includes {_money(relief)} of 倾斜救助 (relief for a heavy burden).</p>')
    classes = ben["classes"]
    names = ben["class_names"]
    present = {c for c, ok in zip(classes, valid) if ok}
    order = [c for c in ben["class_order"] if c in present] + sorted(x for x in present if x and x not in names)
    order += [x for x in ("", None) if x in present]
    pid = t["patient_id"].to_pylist()
    rows = []
    for c in order:
        pick = [ok and x == c for ok, x in zip(valid, classes)]
        n = sum(pick)
        cost = tot("total_cost_cents", pick)
        label = c if c else ("none" if c == "" else "not listed")
        zh = names.get(c, "-") if c else ("无" if c == "" else "不在人员名单")
        rows.append([label, zh, n, len({p for p, ok in zip(pid, pick) if ok}), _money(cost),
                     *(_share(tot(col, pick), cost) for col, *_ in BENEFIT_TIERS),
                     _money(_mean_cents(tot("patient_cents", pick), n))])
    sec.append(f"<p>{_h('按救助对象类别', 'By assistance class')}</p>" + _table(
        [_h("类别", "class"), _h("名称", "name"), _h("住院", "stays"), _h("人数", "persons"), _h("费用", "cost"),
         *(_h(zh, en) for _, zh, en in BENEFIT_TIERS), _h("人均每次负担", "patient per stay")], rows, 2,
        "benefit-classes",
        [_h("合计", "total"), "", n_valid, len({p for p, ok in zip(pid, valid) if ok}), _money(cost_all),
         *(_share(tot(col, valid), cost_all) for col, *_ in BENEFIT_TIERS),
         _money(_mean_cents(tot("patient_cents", valid), n_valid)) if n_valid else "-"]))
    return "\n".join(sec)


def _methods_section(cases: pa.Table) -> str:
    """Cases and payment by payment method (多元复合式: DRG/DIP, per diem, fee for service, none);
    money summed in integer cents."""
    keys = np.array(pc.fill_null(cases["payment_method"], "(none)").to_pylist(), dtype=object)
    amount = np.round(pc.fill_null(cases["amount"], 0.0).to_numpy(zero_copy_only=False) * 100).astype(np.int64)
    cost = np.round(pc.fill_null(cases["total_cost"], 0.0).to_numpy(zero_copy_only=False) * 100).astype(np.int64)
    rows = [[k, int((keys == k).sum()), _money(int(amount[keys == k].sum())), _money(int(cost[keys == k].sum()))]
            for k in sorted(set(keys.tolist()))]
    total = [_h("合计", "total"), int(cases.num_rows), _money(int(amount.sum())), _money(int(cost.sum()))]
    return "\n".join([f"<h2>{_h('支付方式', 'Payment methods')}</h2>",
                      '<p class="note">Every case row says which method priced it (payment_method): drg / dip by '
                      'group, per_diem 按床日, fee_for_service 按项目, none without points; all in one point pool '
                      '(docs/settlement.md).</p>',
                      _table(["method", _h("病例", "cases"), _h("支付", "payment"), _h("费用", "cost")], rows, 1,
                             "methods", total)])


def _unpriced_section(cases: pa.Table) -> str:
    """Unpriced cases by pricing reason, and the invalid / ungroupable ones by grouping reason."""
    unp = cases.filter(pc.equal(cases["case_type"], "unpriced"))
    sec = [f"<h2>{_h('未计点病例及原因', 'Unpriced and invalid cases, with reasons')}</h2>"]
    if unp.num_rows == 0:
        sec.append("<p>Every case is priced.</p>")
        return "\n".join(sec)
    known = reason_ids()

    def words(code):
        return (describe(code, "zh"), describe(code, "en")) if code in known else ("", "")

    def by(column, table, tid):
        keys = pc.fill_null(table[column], "(none)")
        t = pa.table({"k": keys, "cost": pc.fill_null(table["total_cost"], 0.0)}).group_by("k").aggregate(
            [("cost", "count"), ("cost", "sum")]).sort_by("k")
        rows = [[k, *words(k), int(c), f"{s:,.2f}"]
                for k, c, s in zip(t["k"].to_pylist(), t["cost_count"].to_pylist(), t["cost_sum"].to_pylist())]
        total = [_h("合计", "total"), "", "", int(table.num_rows), f"{pc.sum(table['total_cost']).as_py() or 0:,.2f}"]
        return _table(["reason", _h("说明", "meaning"), "", _h("病例", "cases"), _h("费用", "cost")], rows, 3, tid, total)

    sec.append(f"<p>{_h('按计点原因', 'By pricing reason')}</p>" + by("pricing_reason", unp, "unpriced"))
    bad = unp.filter(pc.is_in(pc.fill_null(unp["status"], ""), pa.array(["invalid", "ungroupable"])))
    if bad.num_rows:
        sec.append(f"<p>{_h('按分组原因（无效或无法入组）', 'By grouping reason (invalid or ungroupable)')}</p>" +
                   by("reason", bad, "invalid"))
    return "\n".join(sec)


def write_report(ledger_path, out_html, outputs=None, hospitals=None, scheme=None, findings=None,
                 benefits=None, persons=None) -> Path:
    """Write the report of a settled ledger (and of its settled outputs, if given) atomically.

    ``hospitals``: a CSV of hospital_id, name, level (names and levels in the tables; levels
    otherwise from the policy's ``coefficients.hospital_level``). ``scheme``: a scheme (or its
    path) whose group names label the groups. ``findings``: a monitoring findings CSV (section
    智能监控). ``benefits``: a benefits stays file, with ``persons`` (the persons CSV it was
    computed with) for the assistance classes (section 患者负担)."""
    led = read_ledger(ledger_path)
    periods = sorted({r["period"] for r in led["runs"] if r["kind"] == "monthly"})
    names = read_hospitals(hospitals) if hospitals else None
    group_names = None
    if scheme is not None:
        from drgdip.grouper.drg.api import load_scheme
        group_names = dict(load_scheme(scheme).names)
    page = build_report(led, read_cases(outputs, periods), names, group_names,
                        read_findings(findings) if findings else None,
                        read_benefits(benefits, persons) if benefits else None)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


# ---------------------------------------------------------------- what-if between schemes

def compare_page(comparison, limit: int = 200) -> str:
    """The page of a what-if between two schemes (分组方案切换测算, :mod:`weights.report.scheme_compare`):
    the summary, the transition matrix (largest first, ``limit`` rows and the count of the
    rest), and points and payment per hospital, department and group."""
    s = comparison.summary
    a, b = comparison.labels
    sections = [f"<h2>{_h('概要', 'Summary')}</h2>" + _table(
        [_h("项目", "item"), _h("数值", "value")],
        [["records", f"{s['records']:,}"], [f"scheme A ({a})", s["scheme_a"]], [f"scheme B ({b})", s["scheme_b"]],
         ["same DRG", f"{s['same_drg']:,} ({s['same_drg_pct']:.2f} %)"], ["same ADRG", f"{s['same_adrg_pct']:.2f} %"],
         ["same MDC", f"{s['same_mdc_pct']:.2f} %"], ["distinct (A, B) pairs", f"{s['distinct_transitions']:,}"],
         ["status A", ", ".join(f"{k} {v:,}" for k, v in s["status_a"].items())],
         ["status B", ", ".join(f"{k} {v:,}" for k, v in s["status_b"].items())]]
        + ([[f"fund {f}: pool", _money(round(s["pool"][f] * 100))] for f in s.get("pool", {})]
           + [[f"fund {f}: point value A / B", f"{pv[0]:.6f} / {pv[1]:.6f}"] for f, pv in s.get("point_value", {}).items()]
           + ([["unpriced A / B", f"{s['unpriced_a']:,} / {s['unpriced_b']:,}"]] if "unpriced_a" in s else [])),
        2, "compare-summary")]
    tr = comparison.transitions.to_pylist()
    rows = [[t["drg_a"], t["name_a"], t["drg_b"], t["name_b"], f"{t['cases']:,}", f"{t['share_pct']:.4f}"]
            for t in tr[:limit]]
    more = f"<p class=\"note\">{len(tr) - limit:,} more pairs in transitions.csv</p>" if len(tr) > limit else ""
    sections.append(f"<h2>{_h('病组转移矩阵', 'Transitions between groups')}</h2>" + _table(
        ["DRG A", _h("名称", "name"), "DRG B", _h("名称", "name"), _h("病例", "cases"), _h("占比 %", "share %")],
        rows, 4, "transitions") + more)
    for title, table, key in ((("各医疗机构", "By hospital"), comparison.by_hospital, "hospital_id"),
                              (("各科室", "By department"), comparison.by_department, "dept"),
                              (("各原病组", "By group under A"), comparison.by_group, "drg_a")):
        if table is None:
            continue
        rows = [[r[key], f"{r['cases']:,}", f"{r['points_a']:,.4f}", f"{r['points_b']:,.4f}",
                 f"{r['payment_a']:,.2f}", f"{r['payment_b']:,.2f}", f"{r['payment_change']:+,.2f}",
                 "-" if r["payment_change_pct"] is None else f"{r['payment_change_pct']:+.2f}"]
                for r in table.sort_by([("payment_change", "ascending"), (key, "ascending")]).to_pylist()]
        sections.append(f"<h2>{_h(*title)}</h2>" + _table(
            [key, _h("病例", "cases"), _h("点数 A", "points A"), _h("点数 B", "points B"), _h("支付 A", "payment A"),
             _h("支付 B", "payment B"), _h("变化", "change"), _h("变化 %", "change %")], rows, 1, key))
    title = "drgdip 分组方案切换测算 what-if between schemes"
    head = (f"<h1>{title}</h1><p>{html.escape(a)} → {html.escape(b)}. Payment at a constant pool per fund "
            "(费用中性: the records' total cost, shared out by points on each side); rules in docs/compare.md.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n{head}\n" + "\n".join(sections) + "\n</body></html>\n")
