"""Every figure of the settlement report, recomputed from what the settlement wrote
(settled/<period>/hospitals.csv, summary.json, cases.parquet): no number on the page is
taken on trust, totals rows equal the sum of their rows, and "cases" says which cases."""
from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from drgdip.synth.demo import run_demo
from drgdip.weights.report.settlement_report import write_report


class _Tables(HTMLParser):
    """table id → rows of cell texts (header row first, the totals row last when present)."""

    def __init__(self):
        super().__init__()
        self.tables, self._id, self._row, self._cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id")
            self.tables[self._id] = []
        elif tag == "tr" and self._id:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._id].append(self._row)
            self._row = None
        elif tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def cents(text: str) -> int:
    return round(float(text.replace(",", "")) * 100)


def csv_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _stays(t):
    return t.filter(pc.invert(pc.fill_null(pc.equal(t["case_type"], "adjustment"), False)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures") / "demo"
    run = run_demo(out, seed=5, progress=False, records_per_month=250, hospitals=5)
    p = _Tables()
    p.feed(Path(run["report"]).read_text(encoding="utf-8"))
    months = [f"2024-{m:02d}" for m in range(1, 13)]
    return {"out": out, "tables": p.tables, "months": months, "run": run,
            "hosp": {m: csv_rows(out / "settled" / m / "hospitals.csv") for m in months},
            "summary": {m: json.loads((out / "settled" / m / "summary.json").read_text(encoding="utf-8")) for m in months},
            # the stays (not the readmissions' recovery rows, case type adjustment: settlement.md
            # "Readmissions across months"; the report leaves them out of its case counts too)
            "cases": {m: _stays(pq.read_table(out / "settled" / m / "cases.parquet")) for m in months},
            "annual": csv_rows(out / "settled" / "2024" / "hospitals.csv")}


def body(table):
    return [r for r in table[1:] if not r[0].startswith("合计")]


def total(table):
    assert table[-1][0] == "合计 total"
    return table[-1]


def test_point_value_table(demo):
    rows = {(r[0], r[2]): r for r in body(demo["tables"]["point-values"])}
    tr = total(demo["tables"]["point-values"])
    funds = [f for m in demo["months"] for f in demo["summary"][m]["funds"].values()]
    assert [int(tr[3]), int(tr[4]), int(tr[5])] == [sum(f["cases"] for f in funds),
                                                    sum(f["unpriced_cases"] for f in funds),
                                                    sum(f["cases"] + f["unpriced_cases"] for f in funds)]
    assert int(tr[5]) == sum(c.num_rows for c in demo["cases"].values())
    assert cents(tr[8]) == sum(round(f["budget"] * 100) for f in funds)
    for m in demo["months"]:
        for fund, f in demo["summary"][m]["funds"].items():
            r = rows[(m, fund)]
            assert int(r[3]) == f["cases"] and int(r[4]) == f["unpriced_cases"]
            assert int(r[5]) == f["cases"] + f["unpriced_cases"]
            c = demo["cases"][m]
            assert int(r[5]) == pc.sum(pc.equal(c["fund_key"], fund)).as_py()   # all cases = the cases file's
            assert float(r[6].replace(",", "")) == pytest.approx(f["total_points"], abs=0.05)
            assert float(r[7]) == pytest.approx(f["point_value"], abs=5e-5)
            assert cents(r[8]) == round(f["budget"] * 100)


HOSPITAL_MONEY = ("payment", "cost", "due", "withheld", "held", "paid", "ucost")


def test_hospital_table_cmi_and_totals(demo):
    t = demo["tables"]["hospitals"]
    names = {r["hospital_id"]: r for r in csv_rows(demo["out"] / "hospitals.csv")}
    got = {r[0]: r for r in body(t)}
    assert sorted(got) == sorted(names)
    sums = {k: 0 for k in ("priced", "unpriced", "payment", "cost", "due", "withheld", "held", "paid", "ucost")}
    for h, r in got.items():
        rows = [x for m in demo["months"] for x in demo["hosp"][m] if x["hospital_id"] == h]
        want = {"priced": sum(int(x["cases"]) for x in rows), "unpriced": sum(int(x["unpriced_cases"]) for x in rows),
                "payment": sum(cents(x["payment"]) for x in rows), "cost": sum(cents(x["cost"]) for x in rows),
                "due": sum(cents(x["amount_due"]) for x in rows), "withheld": sum(cents(x["withheld"]) for x in rows),
                "held": sum(cents(x.get("held", "0")) for x in rows),
                "paid": sum(cents(x["paid"]) for x in rows), "ucost": sum(cents(x["unpriced_cost"]) for x in rows)}
        assert r[1] == names[h]["name"] and r[2] == names[h]["level"]
        assert [int(r[3]), int(r[4])] == [want["priced"], want["unpriced"]]
        assert [cents(r[i]) for i in (5, 6, 8, 9, 10, 11, 12)] == [want[k] for k in HOSPITAL_MONEY]
        assert cents(r[7]) == want["payment"] - want["cost"]
        assert want["paid"] == want["due"] - want["withheld"] - want["held"]       # the advance share held back
        for k in sums:
            sums[k] += want[k]
        # priced cases and CMI straight from the cases: Σ weight of the priced ones / their number
        # (a fee-for-service case has no weight: it counts 0, as in the settlement's weight_sum)
        priced = [(w, p) for m in demo["months"] for w, p, hh in zip(
            demo["cases"][m]["weight"].to_pylist(), demo["cases"][m]["points"].to_pylist(),
            demo["cases"][m]["hospital_id"].to_pylist()) if hh == h and p is not None]
        cmi_row = next(x for x in demo["tables"]["cmi"][1:] if x[0] == h)
        assert int(cmi_row[2]) == len(priced) == want["priced"]
        assert float(cmi_row[4]) == pytest.approx(sum(w or 0.0 for w, _ in priced) / len(priced), abs=5e-4)
    tr = total(t)
    assert [int(tr[3]), int(tr[4])] == [sums["priced"], sums["unpriced"]]
    assert [cents(tr[i]) for i in (5, 6, 8, 9, 10, 11, 12)] == [sums[k] for k in HOSPITAL_MONEY]
    # the totals equal the funds' own totals of the months
    fund_paid = sum(round(f["paid"] * 100) for m in demo["months"] for f in demo["summary"][m]["funds"].values())
    fund_cases = sum(f["cases"] for m in demo["months"] for f in demo["summary"][m]["funds"].values())
    assert cents(tr[11]) == fund_paid and int(tr[3]) == fund_cases
    assert sums["held"] > 0                       # the demo pays 90 % in advance ([advance] share)


def test_monthly_trend_tables(demo):
    for tid, col, read in (("trend-paid", "paid", cents), ("trend-cases", "cases", int)):
        t = demo["tables"][tid]
        assert t[0][1:13] == demo["months"]
        col_sums = [0] * 12
        for r in body(t):
            want = [sum(read(x[col]) for x in demo["hosp"][m] if x["hospital_id"] == r[0]) for m in demo["months"]]
            assert [read(v) for v in r[1:13]] == want and read(r[13]) == sum(want)
            col_sums = [a + b for a, b in zip(col_sums, want)]
        assert [read(v) for v in total(t)[1:13]] == col_sums and read(total(t)[13]) == sum(col_sums)


def test_unpriced_and_deviation_tables(demo):
    allc = [demo["cases"][m] for m in demo["months"]]
    reasons: dict[str, list] = {}
    for c in allc:
        for ct, why, cost in zip(c["case_type"].to_pylist(), c["pricing_reason"].to_pylist(),
                                 c["total_cost"].to_pylist()):
            if ct == "unpriced":
                reasons.setdefault(why, []).append(cost)
    t = demo["tables"]["unpriced"]
    got = {r[0]: (int(r[3]), cents(r[4])) for r in body(t)}
    assert got == {k: (len(v), round(sum(v) * 100)) for k, v in reasons.items()}
    assert int(total(t)[3]) == sum(len(v) for v in reasons.values())
    dev = {r[0]: r for r in body(demo["tables"]["deviation"])}
    for m, c in zip(demo["months"], allc):
        r = dev[m]
        priced = c["points"].is_valid()
        assert int(r[1]) == c.num_rows and int(r[2]) == pc.sum(priced).as_py()
        for i, kind in enumerate(("high_cost", "low_cost", "special_review"), start=3):
            n = pc.sum(pc.equal(c["case_type"], kind)).as_py() or 0
            assert r[i] == f"{n} ({n / max(int(r[2]), 1):.1%})"
    # "all cases" is the same number wherever it appears
    pv_all = {}
    for r in demo["tables"]["point-values"][1:]:
        if r[1] == "monthly":
            pv_all[r[0]] = pv_all.get(r[0], 0) + int(r[5])
    assert all(pv_all[m] == int(dev[m][1]) for m in demo["months"])


def test_loss_groups_and_names(demo):
    from drgdip.grouper.drg.api import load_scheme
    names = load_scheme().names
    rows = body(demo["tables"]["loss-groups"])
    assert rows
    for r in rows:
        amount = cost = 0.0
        n = 0
        for c in demo["cases"].values():       # the cases paid by group (not per diem, not by items)
            for g, a, tc, pm in zip(c["drg"].to_pylist(), c["amount"].to_pylist(), c["total_cost"].to_pylist(),
                                    c["payment_method"].to_pylist()):
                if g == r[0] and a is not None and pm not in ("per_diem", "fee_for_service"):
                    amount, cost, n = amount + a, cost + tc, n + 1
        assert r[1] == names[r[0]] and int(r[2]) == n
        assert cents(r[3]) == round((amount - cost) * 100)


def test_annual_table(demo):
    t = demo["tables"]["annual"]
    rows = [r for r in t[1:] if r[1] != "合计 total"]
    want = {(x["hospital_id"], x["fund"]): x for x in demo["annual"]}
    assert len(rows) == len(want)
    for r in rows:
        x = want[(r[1], r[3])]
        assert int(r[4]) == int(x["cases"])
        assert [cents(v) for v in r[5:12]] == [cents(x.get(k, "0")) for k in ANNUAL_MONEY]
        # paid = amount due + adjustment − withholding kept − the cap's cut; balance = paid − monthly paid
        assert cents(r[9]) == cents(r[5]) + cents(r[6]) - cents(r[7]) - cents(r[8])
        assert cents(r[11]) == cents(r[9]) - cents(r[10])
    for tr in (r for r in t[1:] if r[1] == "合计 total"):
        m = [x for x in demo["annual"] if x["fund"] == tr[3]]
        assert [cents(v) for v in tr[5:12]] == [sum(cents(x.get(k, "0")) for x in m) for k in ANNUAL_MONEY]


ANNUAL_MONEY = ("amount_due", "adjustment", "quality_kept", "cap_cut", "paid", "monthly_paid", "balance")


def test_fund_limits_table(demo):
    """Reserve, cap, projected and settlement point values, withholding refunded/kept and the advances held,
    per fund: the annual summary.json's figures, and the hospitals' sums."""
    summary = json.loads((demo["out"] / "settled" / "2024" / "summary.json").read_text(encoding="utf-8"))
    rows = {r[1]: r for r in demo["tables"]["fund-limits"][1:]}
    assert sorted(rows) == sorted(summary["funds"])
    for fund, f in summary["funds"].items():
        r = rows[fund]
        m = [x for x in demo["annual"] if x["fund"] == fund]
        assert [cents(v) for v in r[2:6]] == [round(f[k] * 100) for k in ("budget", "reserve", "reserve_used",
                                                                           "cap_cut")]
        assert float(r[6]) == pytest.approx(f["projected_point_value"], abs=5e-5)
        assert float(r[7]) == pytest.approx(f["point_value"], abs=5e-5)
        assert [cents(v) for v in r[8:12]] == [round(f[k] * 100) for k in ("quality_refund", "quality_kept",
                                                                           "monthly_held", "budget_spent")]
        assert cents(r[8]) == sum(cents(x["quality_refund"]) for x in m)
        assert cents(r[10]) == sum(cents(x["monthly_held"]) for x in m)
        # the year never pays more than budget + reserve
        assert cents(r[11]) <= cents(r[2]) + cents(r[3])
        assert cents(r[11]) == round(f["spend_before_cap"] * 100) - cents(r[5])


def test_sources_and_as_of_come_from_the_ledger(demo, tmp_path):
    import sqlite3
    with sqlite3.connect(demo["out"] / "ledger.db") as conn:
        runs = conn.execute("SELECT period, kind, revision, created_at, inputs FROM runs WHERE current=1").fetchall()
    src = {(r[0], r[1]): r for r in demo["tables"]["sources"][1:]}
    assert len(src) == len(runs)
    for period, kind, rev, created, inputs in runs:
        r = src[(period, kind)]
        assert int(r[2]) == rev and r[3] == "current" and r[4] == created
        for k, v in json.loads(inputs).items():
            assert f"{k} {v[:16] if len(v) == 64 else v}" in r[7]
    page = Path(demo["run"]["report"]).read_text(encoding="utf-8")
    assert re.search(r'<time id="as-of">([^<]+)</time>', page).group(1) == max(r[3] for r in runs)
    # the same ledger and outputs give the same bytes, whenever the report is written
    from drgdip.grouper.drg.api import TEACHING_SCHEME
    again = write_report(demo["out"] / "ledger.db", tmp_path / "again.html", outputs=demo["out"] / "settled",
                         hospitals=demo["out"] / "hospitals.csv", scheme=str(TEACHING_SCHEME),
                         findings=demo["out"] / "findings.csv", benefits=demo["out"] / "benefits.parquet",
                         persons=demo["out"] / "persons.csv")
    assert again.read_bytes() == Path(demo["run"]["report"]).read_bytes()
    # without the monitoring and benefits files, the page has neither section
    bare = write_report(demo["out"] / "ledger.db", tmp_path / "bare.html", outputs=demo["out"] / "settled")
    text_ = bare.read_text(encoding="utf-8")
    assert ">Monitoring<" not in text_ and ">Patient burden<" not in text_ and ">Annual settlement<" in text_


# ----------------------------------------------------------------- monitoring and the patient's side

def test_monitoring_tables(demo):
    findings = csv_rows(demo["out"] / "findings.csv")
    flagged = [f for f in findings if f["status"] == "flagged"]
    assert flagged, "the demo plants anomalies: some rule must flag"
    t = demo["tables"]
    rules = {r[0]: r for r in body(t["monitor-rules"])}
    assert sorted(rules) == sorted({f["rule"] for f in findings})
    for rule, r in rules.items():
        mine = [f for f in flagged if f["rule"] == rule]
        assert int(r[3]) == len(mine)
        assert int(r[4]) == len({f["hospital_id"] for f in mine if f["hospital_id"]})
        assert int(r[5]) == sum(1 for f in findings if f["rule"] == rule and f["status"] != "flagged")
    tr = total(t["monitor-rules"])
    assert int(tr[3]) == len(flagged) == sum(int(r[3]) for r in rules.values())
    # by hospital: one column per rule that flagged, a row per hospital, totals both ways
    head = t["monitor-hospitals"][0]
    cols = head[2:-1]
    assert sorted(cols) == sorted({f["rule"] for f in flagged})
    names = {r["hospital_id"]: r["name"] for r in csv_rows(demo["out"] / "hospitals.csv")}
    for r in body(t["monitor-hospitals"]):
        assert r[1] == names.get(r[0], "-")
        want = [sum(1 for f in flagged if (f["hospital_id"] or "-") == r[0] and f["rule"] == c) for c in cols]
        assert [int(v) for v in r[2:-1]] == want and int(r[-1]) == sum(want)
    ht = total(t["monitor-hospitals"])
    assert [int(v) for v in ht[2:-1]] == [sum(1 for f in flagged if f["rule"] == c) for c in cols]
    assert int(ht[-1]) == len(flagged)
    # by doctor: most findings first; the totals row counts every doctor
    with_doc = [f for f in flagged if f["doctor_id"]]
    drows = body(t["monitor-doctors"])
    dcols = t["monitor-doctors"][0][2:-1]
    counts = [int(r[-1]) for r in drows]
    assert counts == sorted(counts, reverse=True) and len(drows) <= 30
    for r in drows:
        want = [sum(1 for f in with_doc if f["doctor_id"] == r[0] and f["rule"] == c) for c in dcols]
        assert [int(v) for v in r[2:-1]] == want and int(r[-1]) == sum(want)
    assert int(total(t["monitor-doctors"])[-1]) == len(with_doc)
    # drill-down: the first 200 flagged findings in file order, with both sentences
    fr = t["monitor-findings"][1:]
    assert len(fr) == min(200, len(flagged))
    for r, f in zip(fr, flagged):
        assert r[0] == f["rule"] and r[2] == (f["hospital_id"] or "-") and r[4] == (f["patient_id"] or "-")
        assert r[6] == " ".join(f"{f['message_zh']}{f['message_en']}".split())
    page = Path(demo["run"]["report"]).read_text(encoding="utf-8")
    if len(flagged) > 200:
        assert f"{len(flagged) - 200} more are in the file" in page


def _benefit_rows(demo):
    stays = pq.read_table(demo["out"] / "benefits.parquet").to_pylist()
    persons = {r["patient_id"]: r["assistance_class"] for r in csv_rows(demo["out"] / "persons.csv")}
    return [s for s in stays if s["status"] != "invalid"], persons, stays


def test_benefit_tier_table(demo):
    valid, _, stays = _benefit_rows(demo)
    t = demo["tables"]["benefit-tiers"]
    funds = t[0][1:-2]
    assert funds == sorted({s["fund"] for s in valid})
    tiers = ("fund_basic_cents", "fund_critical_cents", "assistance_cents", "patient_cents")
    rows = body(t)
    assert [r[0] for r in rows] == [
        "基本医保统筹基金 basic fund",
        "大病保险 / 职工大额医疗费用补助 critical-illness insurance / employee large-claim top-up",
        "医疗救助 medical assistance", "个人负担 patient"]
    cost = sum(s["total_cost_cents"] for s in valid)
    for r, col in zip(rows, tiers):
        per_fund = [sum(s[col] for s in valid if s["fund"] == f) for f in funds]
        assert [cents(v) for v in r[1:-2]] == per_fund
        assert cents(r[-2]) == sum(per_fund)
        assert r[-1] == f"{sum(per_fund) / cost:.1%}"
    tr = total(t)
    assert cents(tr[-2]) == cost == sum(cents(r[-2]) for r in rows)       # the tiers add up to the cost
    for j, f in enumerate(funds, start=1):
        assert cents(tr[j]) == sum(s["total_cost_cents"] for s in valid if s["fund"] == f)
    page = Path(demo["run"]["report"]).read_text(encoding="utf-8")
    n_invalid = sum(1 for s in stays if s["status"] == "invalid")
    assert f"{len(stays)} stays: {sum(1 for s in stays if s['status'] == 'paid')} paid" in page
    assert f"{n_invalid} invalid" in page


def test_benefit_class_table(demo):
    valid, persons, _ = _benefit_rows(demo)
    t = demo["tables"]["benefit-classes"]
    classes = {}
    for s in valid:
        c = persons.get(s["patient_id"])
        classes.setdefault("not listed" if c is None else (c or "none"), []).append(s)
    rows = {r[0]: r for r in body(t)}
    assert sorted(rows) == sorted(classes)
    assert {"minimum_living", "extreme_poverty", "none"} <= set(rows)
    for c, ss in classes.items():
        r = rows[c]
        cost = sum(s["total_cost_cents"] for s in ss)
        assert int(r[2]) == len(ss) and int(r[3]) == len({s["patient_id"] for s in ss}) and cents(r[4]) == cost
        for v, col in zip(r[5:9], ("fund_basic_cents", "fund_critical_cents", "assistance_cents", "patient_cents")):
            assert v == f"{sum(s[col] for s in ss) / cost:.1%}"
        patient = sum(s["patient_cents"] for s in ss)
        assert cents(r[9]) == (2 * patient + len(ss)) // (2 * len(ss))
    tr = total(t)
    assert int(tr[2]) == len(valid) == sum(int(r[2]) for r in rows.values())
    assert cents(tr[4]) == sum(s["total_cost_cents"] for s in valid)
    # assistance goes to the assistance classes only
    assert rows["none"][7] == "0.0%"


def test_report_refuses_unusable_monitoring_and_benefit_files(demo, tmp_path):
    from drgdip.weights.report.settlement_report import read_benefits, read_findings
    bad = tmp_path / "findings.csv"
    bad.write_text("rule,hospital_id\nSPLIT_ADMISSION,H1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="findings file needs the columns"):
        read_findings(bad)
    import pyarrow as pa
    import pyarrow.parquet as pq_
    t = pq.read_table(demo["out"] / "benefits.parquet").drop_columns(["patient_cents"])
    pq_.write_table(t, tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="patient_cents"):
        read_benefits(tmp_path / "b.parquet", demo["out"] / "persons.csv")
    assert isinstance(t, pa.Table)


def test_payment_methods_table(demo):
    """Cases, payment and cost per payment_method straight from the cases, in cents; the demo's
    policy has per-diem wards and the fee-for-service fallback, so both appear."""
    want: dict[str, list[int]] = {}
    for c in demo["cases"].values():
        for pm, a, tc in zip(c["payment_method"].to_pylist(), c["amount"].to_pylist(), c["total_cost"].to_pylist()):
            w = want.setdefault(pm, [0, 0, 0])
            w[0] += 1
            w[1] += round((a or 0.0) * 100)
            w[2] += round(tc * 100)
    t = demo["tables"]["methods"]
    got = {r[0]: [int(r[1]), cents(r[2]), cents(r[3])] for r in body(t)}
    assert got == want and {"drg", "per_diem", "fee_for_service"} <= set(got)
    assert [int(total(t)[1]), cents(total(t)[2])] == [sum(w[0] for w in want.values()),
                                                       sum(w[1] for w in want.values())]
    # the summary.json of each month counts the same
    from collections import Counter
    for m in demo["months"]:
        assert demo["summary"][m]["payment_methods"] == dict(Counter(demo["cases"][m]["payment_method"].to_pylist()))
