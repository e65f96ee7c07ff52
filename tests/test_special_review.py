"""Special case review (特例单议): the worked example of docs/settlement.md §"Special case review",
the quota's order, the decisions file, and the lifecycle hold → decisions → new revision → annual."""
import csv
from contextlib import closing

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from drgdip.arrowio import InputError
from drgdip.weights.settlement import ledger
from drgdip.weights.settlement.points import price_cases
from drgdip.weights.settlement.policy import PolicyError, parse_policy
from drgdip.weights.settlement.runs import settle_annual, settle_month
from drgdip.weights.settlement.settle import review_table, settle_period
from drgdip.weights.settlement.special_review import (
    ReviewContext,
    fill_quota,
    read_decisions,
)

# --- the worked example of docs/settlement.md, "Special case review 特例单议" ---------------

SR_POLICY = {
    "budget": {"employee": {"2026-10": 20000.00, "2026": 20000.00}},
    "deviation": {"high_bands": [{"k": 3.0}], "low_k": 0.4},
    "special_review": {"cost_multiple": 4.0, "low_cost_multiple": 0.2, "los_days_above": 60,
                       "new_technology_codes": ["NT01"], "payment": "hold", "hospital_quota_share": 0.5},
}
SR_WEIGHTS = pa.table({"drg": ["A", "B"], "weight": [1.0, 2.0], "mean_cost": [10000.0, 20000.0]})
SR_CASES = pa.table({
    "id": ["1", "2", "3", "4", "5", "6"],
    "hospital_id": ["H1", "H1", "H1", "H1", "H2", "H2"],
    "fund": ["employee"] * 6,
    "discharge_date": ["2026-10-0%d" % i for i in range(1, 7)],
    "drg": ["A", "A", "B", "B", "A", "B"],
    "total_cost": [9000.0, 50000.0, 2000.0, 22000.0, 12000.0, 18000.0],
    "personal_share": [1000.0, 2000.0, 200.0, 2000.0, 1000.0, 1800.0],
    "los_days": [8, 20, 3, 70, 10, 12],
    "procedures": [[], ["X1"], [], ["X2"], ["NT01", "X3"], []],
})
SR_DECISIONS = "id,decision,points\n2,points,400\n4,normal,\n5,actual,\n99,normal,\n3,normal,\n6,maybe,\n"


def _month(decisions=None):
    p = parse_policy(SR_POLICY)
    ctx = ReviewContext(decisions=decisions)
    return settle_period(price_cases(SR_CASES, SR_WEIGHTS, p, period="2026-10", review=ctx), p, "2026-10")


def _cents(t, col):
    return [round(x * 100) if x is not None else None for x in t[col].to_pylist()]


def test_worked_example_held_month():
    s = _month()
    c = s.cases
    assert c["review_trigger"].to_pylist() == [None, "cost_high", "cost_low", "long_stay", "new_technology", None]
    assert c["review_status"].to_pylist() == [None, "held", "over_quota", "held", "held", None]
    assert c["pricing_reason"].to_pylist() == ["PRICED_NORMAL", "SPECIAL_REVIEW_HOLD", "SPECIAL_REVIEW_OVER_QUOTA",
                                               "SPECIAL_REVIEW_HOLD", "SPECIAL_REVIEW_HOLD", "PRICED_NORMAL"]
    assert c["case_type"].to_pylist()[2] == "low_cost"           # over the quota: the ordinary rule
    assert c["points"].to_pylist() == [pytest.approx(100), None, pytest.approx(20), None, None, pytest.approx(200)]
    assert s.funds["employee"]["point_value"] == pytest.approx(71.875)
    assert _cents(c, "amount") == [718750, None, 143750, None, None, 1437500]
    h = {r["hospital_id"]: r for r in s.hospitals.to_pylist()}
    assert (h["H1"]["payment_cents"], h["H1"]["amount_due_cents"]) == (862500, 742500)
    assert (h["H2"]["payment_cents"], h["H2"]["amount_due_cents"]) == (1437500, 1257500)
    assert (h["H1"]["held_cases"], h["H1"]["held_cost_cents"]) == (2, 7200000)
    assert (h["H2"]["held_cases"], h["H2"]["held_cost_cents"]) == (1, 1200000)
    assert s.funds["employee"]["held_cases"] == 3 and s.funds["employee"]["held_cost"] == 84000.00
    assert any("3 case(s) held for special review" in n and "H1 2 (72000.00)" in n for n in s.notes)
    listed = review_table(c)
    assert listed["id"].to_pylist() == ["2", "3", "4", "5"]
    assert listed["normal_points"].to_pylist() == pytest.approx([100, 200, 200, 100])
    assert listed["actual_points"].to_pylist() == pytest.approx([500, 20, 220, 120])


def test_worked_example_decided_month(tmp_path):
    f = tmp_path / "decisions.csv"
    f.write_text(SR_DECISIONS, encoding="utf-8")
    d = read_decisions(f)
    assert d.rows["status"].to_pylist() == ["usable"] * 5 + ["refused"]
    assert d.rows["reason"].to_pylist()[5] == "DECISION_MALFORMED"
    s = _month(d)
    c = s.cases
    assert c["review_status"].to_pylist() == [None, "decided", "over_quota", "decided", "decided", None]
    assert c["pricing_reason"].to_pylist()[1:5] == ["SPECIAL_REVIEW_DECIDED_POINTS", "SPECIAL_REVIEW_OVER_QUOTA",
                                                    "SPECIAL_REVIEW_DECIDED_NORMAL", "SPECIAL_REVIEW_DECIDED_ACTUAL"]
    assert c["points"].to_pylist() == pytest.approx([100, 400, 20, 200, 120, 200])
    assert s.funds["employee"]["total_points"] == pytest.approx(1040)
    assert s.funds["employee"]["personal_share"] == 8000.00
    assert _cents(c, "amount") == [269231, 1076923, 53846, 538462, 323077, 538461]
    h = {r["hospital_id"]: r for r in s.hospitals.to_pylist()}
    assert (h["H1"]["payment_cents"], h["H1"]["amount_due_cents"], h["H1"]["held_cases"]) == (1938462, 1418462, 0)
    assert (h["H2"]["payment_cents"], h["H2"]["amount_due_cents"], h["H2"]["held_cases"]) == (861538, 581538, 0)


def test_reject_prices_by_the_ordinary_rules_and_ungroupable_needs_points(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("id,decision,points\n2,reject,\n7,normal,\n", encoding="utf-8")
    pol = dict(SR_POLICY, special_review=dict(SR_POLICY["special_review"], ungroupable=True,
                                              hospital_quota_share=1.0))
    cases = pa.concat_tables([SR_CASES, pa.table({
        "id": ["7"], "hospital_id": ["H2"], "fund": ["employee"], "discharge_date": ["2026-10-07"],
        "drg": ["0000"], "total_cost": [5000.0], "personal_share": [500.0], "los_days": [4],
        "procedures": [[]]}).cast(SR_CASES.schema)])
    p = parse_policy(pol)
    t = price_cases(cases, SR_WEIGHTS, p, period="2026-10", review=ReviewContext(decisions=read_decisions(f)))
    assert t["case_type"].to_pylist()[1] == "high_cost"             # ratio 5 > 3: add-on 100 × (1 + 2) = 300
    assert t["points"].to_pylist()[1] == pytest.approx(300)
    assert t["pricing_reason"].to_pylist()[1] == "SPECIAL_REVIEW_REJECTED"
    assert t["case_type"].to_pylist()[6] == "special_review" and t["points"].to_pylist()[6] is None
    assert (t["review_trigger"].to_pylist()[6], t["review_status"].to_pylist()[6]) == ("ungroupable", "held")


def test_quota_order_ratio_descending_then_id():
    # H0 has 4 reviewable cases, cap floor(0.5 × 4) = 2; equal ratios go by id ("a" < "b")
    acc = fill_quota(np.array([0, 0, 0]), np.array([2.0, 5.0, 5.0]), np.array(["c", "b", "a"], dtype=object),
                     np.array([4]), 4, 1.0, 0.5)
    assert acc.tolist() == [False, True, True]
    # region cap floor(0.05 × 30) = 1 wins over the hospitals' room
    acc = fill_quota(np.array([0, 1]), np.array([np.nan, 6.0]), np.array(["x", "y"], dtype=object),
                     np.array([10, 20]), 30, 0.05, 1.0)
    assert acc.tolist() == [False, True]


def test_policy_fields_checked():
    b = {"budget": {"employee": {"2026-10": 1000.0}}}
    with pytest.raises(PolicyError, match="special_review.low_cost_multiple"):
        parse_policy(dict(b, special_review={"low_cost_multiple": 0.5}))
    with pytest.raises(PolicyError, match="special_review.quota_share"):
        parse_policy(dict(b, special_review={"quota_share": 1.5}))
    with pytest.raises(PolicyError, match="special_review.new_technology_codes"):
        parse_policy(dict(b, special_review={"new_technology_codes": "NT01"}))
    d = parse_policy(b).special_review
    assert (d.quota_share, d.hospital_quota_share, d.min_group_cases, d.ungroupable) == (1.0, 1.0, 0, False)


def test_small_group_and_review_group_triggers():
    pol = parse_policy({"budget": {"employee": {"2026-10": 1000.0}}, "special_review": {"min_group_cases": 3}})
    w = SR_WEIGHTS.append_column("review_group", pa.array([False, True]))
    t = price_cases(SR_CASES, w, pol, period="2026-10")
    # A has 3 cases, B 3: none small; B is a review group: its cases are reviewed
    assert t["review_trigger"].to_pylist() == [None, None, "review_group", "review_group", None, "review_group"]
    t = price_cases(SR_CASES.slice(0, 4), w.drop_columns(["review_group"]), pol, period="2026-10")
    assert t["review_trigger"].to_pylist() == ["small_group"] * 4
    assert t["pricing_reason"].to_pylist() == ["SPECIAL_REVIEW_SMALL_GROUP"] * 4


# --- the lifecycle through the files and the ledger ----------------------------------------

def _files(tmp_path):
    pol = tmp_path / "region.toml"
    pol.write_text('[budget.employee]\n"2026-10" = 20000.00\n"2026" = 20000.00\n'
                   '[deviation]\nhigh_bands = [{ k = 3.0 }]\nlow_k = 0.4\n'
                   '[special_review]\ncost_multiple = 4.0\nlow_cost_multiple = 0.2\nlos_days_above = 60\n'
                   'new_technology_codes = ["NT01"]\npayment = "hold"\nhospital_quota_share = 0.5\n',
                   encoding="utf-8")
    import pyarrow.parquet as pq
    rec = tmp_path / "oct.parquet"
    pq.write_table(SR_CASES, rec)
    w = tmp_path / "w.parquet"
    pq.write_table(SR_WEIGHTS, w)
    d = tmp_path / "decisions.csv"
    d.write_text(SR_DECISIONS, encoding="utf-8")
    return pol, rec, w, d


def _runs(db):
    with closing(ledger.connect(db, create=False)) as conn:
        return [(r["period"], r["kind"], r["revision"], r["state"]) for r in ledger.runs(conn)]


def test_lifecycle_hold_decide_new_revision_annual(tmp_path):
    pol, rec, w, d = _files(tmp_path)
    db = tmp_path / "region.db"
    kw = dict(policy_path=pol, weights_path=w, ledger_path=db, quiet=True, now="2026-11-05T00:00:00+00:00")
    settle_month("2026-10", rec, out=tmp_path / "rev1", **kw)
    year = settle_annual("2026", policy_path=pol, ledger_path=db, quiet=True, partial_year=True)
    assert year.funds["employee"]["total_points"] == pytest.approx(320)
    assert year.funds["employee"]["held_cases"] == 3 and year.funds["employee"]["held_cost"] == 84000.00
    assert any("3 case(s) held for special review" in n for n in year.notes)
    rows = list(csv.DictReader(open(tmp_path / "rev1" / "review.csv", encoding="utf-8")))
    assert [(r["id"], r["review_trigger"], r["review_status"]) for r in rows] == [
        ("2", "cost_high", "held"), ("3", "cost_low", "over_quota"), ("4", "long_stay", "held"),
        ("5", "new_technology", "held")]
    assert "held for special review, undecided: 3 case(s), cost 84000.00 (H1 2: 72000.00, H2 1: 12000.00)" \
        in ledger.show(db)

    # a decisions file that cannot be used leaves the ledger and the outputs as they were
    bad = tmp_path / "bad.csv"
    bad.write_text("case,verdict\n2,normal\n", encoding="utf-8")
    before = _runs(db)
    with pytest.raises(InputError, match="needs an id column"):
        settle_month("2026-10", rec, out=tmp_path / "rev1", decisions=bad, reopen=True, **kw)
    assert _runs(db) == before

    settle_month("2026-10", rec, out=tmp_path / "rev2", decisions=d, reopen=True, **kw)
    assert _runs(db)[-1] == ("2026-10", "monthly", 2, "current")
    assert ("2026", "annual", 1, "stale") in _runs(db)
    out = {r["id"]: (r["status"], r["reason"]) for r in csv.DictReader(open(tmp_path / "rev2" / "decisions.csv",
                                                                              encoding="utf-8"))}
    assert out == {"2": ("applied", ""), "4": ("applied", ""), "5": ("applied", ""),
                   "99": ("refused", "DECISION_UNKNOWN_ID"), "3": ("refused", "DECISION_NOT_UNDER_REVIEW"),
                   "6": ("refused", "DECISION_MALFORMED")}
    year = settle_annual("2026", policy_path=pol, ledger_path=db, quiet=True, partial_year=True, reopen=True)
    assert year.funds["employee"]["total_points"] == pytest.approx(1040)
    assert year.funds["employee"]["held_cases"] == 0
    h = {r["hospital_id"]: r for r in year.hospitals.to_pylist()}
    assert (h["H1"]["payment_cents"], h["H2"]["payment_cents"]) == (1938462, 861538)

    # the same inputs give the same files, byte for byte (another ledger, the same decisions)
    db2 = tmp_path / "again.db"
    kw2 = dict(kw, ledger_path=db2)
    settle_month("2026-10", rec, out=tmp_path / "again", decisions=d, **kw2)
    for name in ("cases.parquet", "review.csv", "hospitals.csv", "summary.json", "decisions.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "rev2" / name).read_bytes(), name


def test_quota_is_the_same_batch_by_batch(tmp_path):
    pol, rec, w, d = _files(tmp_path)
    outs = []
    for bs in (1, 4, 100):
        db = tmp_path / f"b{bs}.db"
        settle_month("2026-10", rec, policy_path=pol, weights_path=w, ledger_path=db, out=tmp_path / f"o{bs}",
                     quiet=True, batch_size=bs, decisions=d, now="2026-11-05T00:00:00+00:00")
        outs.append(pacsv.read_csv(tmp_path / f"o{bs}" / "review.csv").to_pylist())
    assert outs[0] == outs[1] == outs[2]
    assert [r["review_status"] for r in outs[0]] == ["decided", "over_quota", "decided", "decided"]


def test_every_special_review_field_is_documented():
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    fields = tomllib.loads((root / "weights" / "settlement" / "policy_defaults.toml").read_text(encoding="utf-8"))["special_review"]
    doc = (root / "docs" / "policy.md").read_text(encoding="utf-8")
    section = doc[doc.index("## [special_review]"):doc.index("## [records]")]
    assert len(fields) == 12
    for name in fields:
        assert f"| `{name}` |" in section, name


def test_settle_cli_with_decisions_and_a_bad_file(tmp_path):
    from click.testing import CliRunner

    from drgdip.cli import main
    pol, rec, w, d = _files(tmp_path)
    base = ["settle", "2026-10", str(rec), "--policy", str(pol), "--weights", str(w), "--ledger",
            str(tmp_path / "l.db"), "--quiet"]
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "o1")])
    assert r.exit_code == 0, r.output
    assert "3 case(s) held for special review" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("id,verdict\n2,normal\n", encoding="utf-8")
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "o2"), "--decisions", str(bad), "--reopen"])
    assert r.exit_code == 2 and "needs a decision column" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o2").exists()
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "o2"), "--decisions", str(d), "--reopen"])
    assert r.exit_code == 0, r.output
    assert "decisions decisions.csv: 3 applied, 3 refused" in r.output
    with closing(ledger.connect(tmp_path / "l.db", create=False)) as conn:
        assert [x["revision"] for x in ledger.runs(conn)] == [1, 2]
