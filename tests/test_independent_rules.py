"""The settlement rules the demo does not turn on, recomputed from the docs alone
(tests/independent_settlement.py) on real `drgdip settle` runs: special review of small groups
and of ungroupable cases, incomplete and short stays sent to review, readmissions not paid or
keyed by principal diagnosis, the projected point value from the previous year, DRG and DIP in
one region (a shared pool with --method mixed, separate pools), the period's group means.

One small demo region (the session's, tests/conftest.py) gives the records, the weights and
the DIP catalogue; each scenario settles one month of it (and its year) through the CLI with a
policy that turns its rules on, and compares every value written with the recomputation."""
from __future__ import annotations

import json
import tomllib
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from independent_settlement import check_month, check_year

PERIOD = "2024-03"


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def toml_text(policy: dict) -> str:
    """A policy dict as TOML: one table per section, nested tables inline."""
    lines = []
    for section, fields in policy.items():
        lines.append(f"[{section}]")
        lines += [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in fields.items()]
        lines.append("")
    return "\n".join(lines)


def demo_policy(demo_dir: Path, dip: bool = False, **sections) -> dict:
    """The demo's policy (DRG, or DIP's) with some sections replaced (None: removed)."""
    policy = tomllib.loads(((demo_dir / "dip") if dip else demo_dir).joinpath("policy.toml").read_text("utf-8"))
    for name, value in sections.items():
        if value is None:
            policy.pop(name, None)
        else:
            policy[name] = value
    return policy


def run(*args) -> str:
    """`drgdip ARGS --quiet`, in this process (click's runner: the command line as typed,
    without an interpreter's start-up per run)."""
    from click.testing import CliRunner

    from drgdip.cli import main
    done = CliRunner().invoke(main, [*map(str, args), "--quiet"], prog_name="drgdip")
    assert done.exit_code == 0, (done.output, done.exception)
    return done.output


def settle(tmp: Path, name: str, records: Path, policy: dict, demo_dir: Path, period: str = PERIOD, method="drg",
           new=True, extra=()) -> Path:
    """One monthly run through the CLI; returns its output folder."""
    ppath = tmp / f"{name}.toml"
    if not ppath.exists():
        ppath.write_text(toml_text(policy), encoding="utf-8")
    out = tmp / name / period
    args = ["settle", period, records, "--policy", ppath, "--ledger", tmp / f"{name}.db", "--out", out,
            "--method", method]
    if method in ("drg", "mixed"):
        args += ["--weights", demo_dir / "weights.parquet"]
    if method in ("dip", "mixed"):
        args += ["--catalog", demo_dir / "dip" / "catalog.parquet"]
    run(*args, *(["--new-ledger"] if new else []), *extra)
    return out


def settle_year(tmp: Path, name: str, year: str, method="drg") -> Path:
    out = tmp / name / year
    run("settle", year, "--final", "--partial-year", "--policy", tmp / f"{name}.toml", "--ledger",
        tmp / f"{name}.db", "--out", out, "--method", method)
    return out


def check(tmp, name, records, out, demo_dir, method="drg", decisions=None, rep=None, period=PERIOD, kept=None,
          tail_out=None):
    return check_month(records, demo_dir / "weights.parquet" if method != "dip" else None, tmp / f"{name}.toml", out,
                       period, rep=rep, method=method, catalog_path=demo_dir / "dip" / "catalog.parquet",
                       decisions_path=decisions, kept=kept, tail_out=tail_out)


def _day(s: str) -> date:
    return date.fromisoformat(str(s)[:10])


@pytest.fixture(scope="module")
def month(demo_dir, tmp_path_factory) -> Path:
    """The demo's March with readmissions, two more ungroupable cases and a disposition or two
    planted: six stays copied as the same patient's next stay, 3 days after the first (the same
    principal diagnosis; three of them in another ADRG and at another hospital; the demo of
    seed 7 ends four of the six in March)."""
    df = pq.read_table(demo_dir / "data" / f"{PERIOD}.parquet").to_pandas()
    early = df[(df["status"] == "grouped") & df["discharge_date"].map(lambda s: _day(s).day <= 18)].head(6)
    copies = []
    for n, (_, r) in enumerate(early.iterrows()):
        c = r.copy()
        adm = _day(r["discharge_date"]) + timedelta(days=3)
        c["id"] = f"{r['id']}R"
        c["admission_date"] = adm.isoformat()
        c["discharge_date"] = (adm + timedelta(days=int(r["los_days"]))).isoformat()
        c["total_cost"] = float(r["total_cost"]) * 0.8
        c["personal_share"] = round(float(r["personal_share"]) * 0.8, 2)
        if n >= 3:
            other = df[(df["adrg"] != r["adrg"]) & (df["status"] == "grouped")].iloc[n]
            c["drg"], c["adrg"], c["mdc"] = other["drg"], other["adrg"], other["mdc"]
        if n == 5:
            c["hospital_id"] = df.loc[df["hospital_id"] != r["hospital_id"], "hospital_id"].iloc[0]
        if _day(c["discharge_date"]).month == 3:
            copies.append(c)
    df = pd.concat([df, pd.DataFrame(copies)], ignore_index=True)
    for i in (10, 11):
        df.loc[i, ["status", "drg", "adrg"]] = ["ungroupable", None, None]
    path = tmp_path_factory.mktemp("month") / f"{PERIOD}.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def agree(rep):
    assert rep.total_differ == 0, rep.text()
    return rep


def cases_of(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "cases.parquet").to_pandas()


def review_policy(demo_dir, payment: str, quota: float) -> dict:
    return demo_policy(demo_dir, special_review={
        "payment": payment, "cost_multiple": 5.0, "low_cost_multiple": 0.1, "los_days_above": 60,
        "min_group_cases": 2, "ungroupable": True, "hospital_quota_share": quota},
        incomplete_stays={"dispositions": ["2", "4", "5"], "payment": "review", "short_stay_days": 2,
                          "short_stay_payment": "review"},
        fee_for_service={"classes": ["ambiguous", "unweighted"], "yuan_per_point": 175.0, "discount": 0.9})


@pytest.mark.parametrize("payment, quota", [("actual", 0.1), ("hold", 1.0)])
def test_small_groups_ungroupable_cases_and_stays_sent_to_review(demo_dir, month, tmp_path, payment, quota):
    """[special_review] min_group_cases and ungroupable (within a quota, and over it),
    [incomplete_stays] payment = "review", then the office's decisions and the year."""
    out = settle(tmp_path, "r", month, review_policy(demo_dir, payment, quota), demo_dir)
    rep = agree(check(tmp_path, "r", month, out, demo_dir))
    cases = cases_of(out)
    reasons = set(cases["pricing_reason"])
    assert {"INCOMPLETE_STAY_REVIEW", "SHORT_STAY_REVIEW"} <= reasons, reasons
    assert (cases["review_trigger"] == "small_group").sum() > 5
    ungroupable = cases[cases["review_trigger"] == "ungroupable"]
    if quota < 1:
        # the ungroupable cases (no ratio: last) are over the quota and stay NOT_GROUPED
        assert {"SPECIAL_REVIEW_SMALL_GROUP", "SPECIAL_REVIEW_OVER_QUOTA"} <= reasons, reasons
        assert set(ungroupable["pricing_reason"]) == {"NOT_GROUPED"} and len(ungroupable) == 3
    else:
        # held, with the reason of every held case under payment = "hold"
        assert list(ungroupable["pricing_reason"]) == ["SPECIAL_REVIEW_HOLD"] * 3
        assert list(ungroupable["review_status"]) == ["held"] * 3
    # the decisions: points for one ungroupable case, normal for another (no base points)
    held = ungroupable["id"].tolist()
    small = cases[(cases["review_trigger"] == "small_group") & (cases["review_status"] != "over_quota")]["id"]
    stay = cases[cases["pricing_reason"] == "INCOMPLETE_STAY_REVIEW"]["id"]
    rows = [f"{held[0]},points,55.5", f"{held[-1]},normal,", f"{small.iloc[0]},reject,", f"{small.iloc[1]},actual,",
            f"{stay.iloc[0]},normal,"]
    dec = tmp_path / "decisions.csv"
    dec.write_text("id,decision,points\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out2 = settle(tmp_path, "r", month, None, demo_dir, new=False, extra=["--decisions", dec, "--reopen"])
    rep2 = agree(check(tmp_path, "r", month, out2, demo_dir, decisions=dec))
    assert rep2.compared[("decisions.csv", "rows (id, status, reason)")] == 1
    year = settle_year(tmp_path, "r", "2024")
    agree(check_year(rep2.months, tmp_path / "r.toml", year, "2024"))
    assert rep.compared[("cases.parquet", "points")] > 150


@pytest.mark.parametrize("key, chars, same", [("principal_diagnosis", 3, False), ("group", 0, True)])
def test_readmissions_left_unpaid(demo_dir, month, tmp_path, key, chars, same):
    """[readmission] payment = "second_unpaid", keyed by principal diagnosis (its category, or
    the whole code) or group, at the same hospital or any; and the year."""
    policy = demo_policy(demo_dir, readmission={"days": 15, "key": key, "diagnosis_chars": chars,
                                                "same_hospital": same, "payment": "second_unpaid"})
    out = settle(tmp_path, "u", month, policy, demo_dir)
    rep = agree(check(tmp_path, "u", month, out, demo_dir))
    cases = cases_of(out)
    unpaid = cases[cases["pricing_reason"] == "READMISSION_UNPAID"]
    # the planted stays that end in March (the month fixture): by diagnosis at any hospital all
    # of them; by group at the same hospital those left in their first stay's group and hospital
    recs = pq.read_table(month, columns=["id", "drg", "hospital_id"]).to_pandas().set_index("id")
    planted = [i for i in recs.index if str(i).endswith("R")]
    if key == "group":
        planted = [i for i in planted if recs.loc[i, "drg"] == recs.loc[i[:-1], "drg"]
                   and recs.loc[i, "hospital_id"] == recs.loc[i[:-1], "hospital_id"]]
    assert len(planted) >= 3
    assert sorted(unpaid["id"]) == sorted(planted), unpaid[["id", "readmission_of"]]
    assert unpaid["points"].isna().all() and set(unpaid["case_type"]) == {"unpriced"}
    assert rep.compared[("cases.parquet", "readmission_of")] == len(cases)
    year = settle_year(tmp_path, "u", "2024")
    agree(check_year(rep.months, tmp_path / "u.toml", year, "2024"))


H_DIP = ["H99010000001", "H99010000003"]


def dip_policy_part(demo_dir, tmp_path, pool: str) -> dict:
    (tmp_path / "reference_means.csv").write_bytes((demo_dir / "dip" / "reference_means.csv").read_bytes())
    part = demo_policy(demo_dir, dip=True)["dip_settlement"]
    return dict(part, hospitals=H_DIP, pool=pool, points_factor=1.2 if pool == "shared" else 1.0)


@pytest.mark.parametrize("group_mean", ["table", "period"])
def test_drg_and_dip_in_one_point_pool(demo_dir, month, tmp_path, group_mean):
    """settlement.md "DRG and DIP in one region", pool = "shared": `--method mixed`, DIP points
    × points_factor in the DRG pool; with deviation.group_mean = "period" the DRG groups' means
    are the DRG hospitals' cases' of the file; and the year."""
    policy = demo_policy(demo_dir, dip_settlement=dip_policy_part(demo_dir, tmp_path, "shared"))
    policy["deviation"]["group_mean"] = group_mean
    policy["readmission"]["days"] = 0  # refused with --method mixed (readmissions pair DRG cases only)
    out = settle(tmp_path, "m", month, policy, demo_dir, method="mixed")
    rep = agree(check(tmp_path, "m", month, out, demo_dir, method="mixed"))
    cases = cases_of(out)
    dip = cases["hospital_id"].isin(H_DIP)
    assert set(cases.loc[dip & cases["points"].notna(), "payment_method"]) <= {"dip", "per_diem", "fee_for_service"}
    assert (cases.loc[dip, "payment_method"] == "dip").sum() > 50
    assert (cases.loc[~dip, "payment_method"] == "drg").sum() > 50
    # points_factor scales DIP points only: a fee-for-service case at a DIP hospital is the
    # cost ÷ 175 × 0.9 of the pool's [fee_for_service], as at a DRG hospital (it was × 1.2:
    # 7.585364571 instead of 6.321137143 for S202403000190)
    ffs = cases[dip & (cases["payment_method"] == "fee_for_service")]
    assert len(ffs) >= 1
    assert (ffs["points"] - ffs["total_cost"] / 175.0 * 0.9).abs().max() < 1e-9
    if group_mean == "period":  # the means differ from the table's
        w = pq.read_table(demo_dir / "weights.parquet").to_pandas().set_index("drg")["mean_cost"]
        drg = cases[cases["payment_method"] == "drg"]
        assert (drg["group_mean_cost"] != drg["drg"].map(w)).sum() > 20
    year = settle_year(tmp_path, "m", "2024", method="mixed")
    agree(check_year(rep.months, tmp_path / "m.toml", year, "2024"))


def test_drg_and_dip_in_separate_pools(demo_dir, month, tmp_path):
    """pool = "separate": a DIP run for the listed hospitals and a DRG run for the others, each
    with its own policy, budget and ledger; the other method's cases SETTLED_BY_OTHER_METHOD."""
    part = dip_policy_part(demo_dir, tmp_path, "separate")
    policies = [demo_policy(demo_dir, dip=True, dip_settlement=part), demo_policy(demo_dir, dip_settlement=part)]
    for p in policies:  # a region-wide quota: its base is the run's own hospitals' cases
        p["special_review"].update(quota_share=0.01, hospital_quota_share=1.0)
    dip_out = settle(tmp_path, "sd", month, policies[0], demo_dir, method="dip")
    drg_out = settle(tmp_path, "sg", month, policies[1], demo_dir, method="drg")
    rep_dip = agree(check(tmp_path, "sd", month, dip_out, demo_dir, method="dip"))
    rep_drg = agree(check(tmp_path, "sg", month, drg_out, demo_dir, method="drg"))
    for out, mine in ((dip_out, "dip"), (drg_out, "drg")):
        cases = cases_of(out)
        other = cases["hospital_id"].isin(H_DIP) != (mine == "dip")
        assert set(cases.loc[other, "pricing_reason"]) == {"SETTLED_BY_OTHER_METHOD"}
        # not priced, not reviewed, not held here (the DIP run held two DRG hospitals' cases:
        # H99010000002's held_cost 58,351.93, counted in both runs)
        assert cases.loc[other, ["weight", "cost_ratio", "review_status", "readmission_of"]].isna().all().all()
        hosp = pd.read_csv(out / "hospitals.csv", dtype={"hospital_id": str})
        held_elsewhere = hosp["hospital_id"].isin(H_DIP) != (mine == "dip")
        assert (hosp.loc[held_elsewhere, "held_cases"] == 0).all()
        if mine == "dip":  # floor(0.01 × its fewer than 100 cases) = 0: over (the whole file's 213: 2)
            # (every DIP candidate is over the quota; with DIP's own triggers there are several)
            status = list(cases["review_status"].dropna())
            assert status and set(status) == {"over_quota"}, status
        assert (cases.loc[~other, "payment_method"] == mine).sum() > 50
    agree(check_year(rep_dip.months, tmp_path / "sd.toml", settle_year(tmp_path, "sd", "2024", method="dip"), "2024",
                     dip=True))
    agree(check_year(rep_drg.months, tmp_path / "sg.toml", settle_year(tmp_path, "sg", "2024"), "2024"))


def test_the_projected_point_value_from_the_previous_year(demo_dir, month, tmp_path):
    """[point_value] projected = "history": the year 2023 (March only, the test month a year
    earlier) has no previous settlement; 2024's projection is 2023's annual points and personal
    share × (1 + growth)."""
    df = pq.read_table(month).to_pandas()
    for col in ("admission_date", "discharge_date"):
        df[col] = df[col].str.replace("2024-", "2023-", n=1, regex=False)
    earlier = tmp_path / "2023-03.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), earlier)
    policy = demo_policy(demo_dir, point_value={"projected": "history", "growth": 0.1})
    for fund in ("employee", "resident"):
        b = policy["budget"][fund]
        b["2023-03"], b["2023"] = b["2024-03"] * 0.95, b["2024"] * 0.95
    out = settle(tmp_path, "h", earlier, policy, demo_dir, period="2023-03")
    rep = agree(check(tmp_path, "h", earlier, out, demo_dir, period="2023-03"))
    y23 = settle_year(tmp_path, "h", "2023")
    agree(check_year(rep.months, tmp_path / "h.toml", y23, "2023", rep=rep))
    out = settle(tmp_path, "h", month, None, demo_dir, new=False)
    check(tmp_path, "h", month, out, demo_dir, rep=rep)
    y24 = settle_year(tmp_path, "h", "2024")
    agree(check_year(rep.months, tmp_path / "h.toml", y24, "2024", rep=rep, previous=rep.years["2023"]))
    summary = json.loads((y24 / "summary.json").read_text(encoding="utf-8"))["funds"]
    assert summary["employee"]["projected_source"] == "history: 2023 × (1 + 0.1)"
    assert rep.compared[("summary.json (year)", "projected_point_value")] == 4  # both years, both funds


def test_the_rate_form_year(demo_dir, month, tmp_path):
    """The rate form (费率法): the employee fund with a published rate for the year (half a
    cent in it), the resident fund's rate from its budget; the month and the year."""
    policy = demo_policy(demo_dir, per_diem=None, fee_for_service=None, point_value=None)
    policy["region"]["form"] = "rate"
    policy["rate"] = {"employee": {"2024": 17500.555}}
    out = settle(tmp_path, "f", month, policy, demo_dir)
    rep = agree(check(tmp_path, "f", month, out, demo_dir))
    year = settle_year(tmp_path, "f", "2024")
    agree(check_year(rep.months, tmp_path / "f.toml", year, "2024", rep=rep))
    summary = json.loads((year / "summary.json").read_text(encoding="utf-8"))["funds"]
    assert summary["employee"]["rate"] == 17500.555 and summary["employee"]["budget"] is None
    assert summary["resident"]["rate"] is None and "reserve" in summary["resident"]
    assert rep.compared[("hospitals.csv (year)", "payment")] == 10


def test_readmissions_combined_within_and_across_months(demo_dir, month, tmp_path):
    """[readmission] payment = "combine" (合并结算): March (its planted readmissions) and April
    settled into one ledger; April gets copies of six stays of March's last 12 days as the
    same patient's next stay in April, in the same ADRG (every other one in its sibling DRG),
    at the group's mean cost, and a readmission of the first of them. Each month against the
    recomputation, April with March's kept stays."""
    policy = demo_policy(demo_dir, readmission={"days": 15, "key": "adrg", "payment": "combine"})
    weights = pq.read_table(demo_dir / "weights.parquet").to_pandas()
    mean = weights.set_index("drg")["mean_cost"]
    march = pq.read_table(month).to_pandas()
    late = march[(march["status"] == "grouped") & march["discharge_date"].map(lambda s: _day(s).day >= 20)
                 & march["discharge_disposition"].astype(str).eq("1") & march["drg"].isin(mean.index)
                 & (march["los_days"] >= 3)].head(6)
    april = pq.read_table(demo_dir / "data" / "2024-04.parquet").to_pandas()
    copies = []
    for n, (_, r) in enumerate(late.iterrows()):
        c = r.copy()
        siblings = sorted(d for d in mean.index if d[:3] == r["drg"][:3] and d != r["drg"])
        if n % 2 and siblings:
            c["drg"] = siblings[0]
        adm = date(2024, 4, 1 + n % 3)
        c["id"] = f"{r['id']}A"
        c["admission_date"] = adm.isoformat()
        c["discharge_date"] = (adm + timedelta(days=int(r["los_days"]))).isoformat()
        c["total_cost"] = float(mean[c["drg"]])
        c["personal_share"] = round(c["total_cost"] * 0.2, 2)
        copies.append(c)
    assert len(copies) == 6
    chain = copies[0].copy()   # a chain March → April → April: paid max(0, its points − B's own) = 0
    adm = _day(copies[0]["discharge_date"]) + timedelta(days=2)
    chain["id"], chain["admission_date"] = f"{copies[0]['id']}2", adm.isoformat()
    chain["los_days"], chain["discharge_date"] = 4.0, (adm + timedelta(days=4)).isoformat()
    copies.append(chain)
    april_path = tmp_path / "2024-04.parquet"
    pq.write_table(pa.Table.from_pandas(pd.concat([april, pd.DataFrame(copies)], ignore_index=True),
                                        preserve_index=False), april_path)
    out3 = settle(tmp_path, "c", month, policy, demo_dir)
    tail: list = []
    rep = agree(check(tmp_path, "c", month, out3, demo_dir, tail_out=tail))
    out4 = settle(tmp_path, "c", april_path, None, demo_dir, period="2024-04", new=False)
    agree(check(tmp_path, "c", april_path, out4, demo_dir, rep=rep, period="2024-04", kept=tail))
    m3, m4 = cases_of(out3), cases_of(out4)
    within = m3[m3["pricing_reason"] == "READMISSION_COMBINED"]
    assert len(within) >= 3 and within["readmission_of"].isin(m3["id"]).all()
    # April: the planted readmissions of March's stays, paid max(0, own points − the earlier's)
    planted = m4[m4["id"].isin([c["id"] for c in copies])].set_index("id")
    assert set(planted["pricing_reason"]) == {"READMISSION_COMBINED"}, planted["pricing_reason"]
    earlier = m3.set_index("id")["points"]
    assert planted.loc[chain["id"], "readmission_of"] == copies[0]["id"]
    assert planted.loc[chain["id"], "points"] == 0 < planted.loc[chain["id"], "base_points"]
    normal = planted[(planted["cost_ratio"] == 1.0) & planted["readmission_of"].isin(m3["id"])]
    assert len(normal) >= 4     # its own points: the base points
    expected = (normal["base_points"] - normal["readmission_of"].map(earlier)).clip(lower=0.0)
    assert (normal["points"] - expected).abs().max() < 1e-9
    assert (normal["points"] > 0).any() and (normal["points"] == 0).any(), normal[["points", "base_points"]]
    # the earlier stays are unchanged (paid as usual in March) and April has no recovery rows
    assert not m4["case_type"].eq("adjustment").any()
    assert rep.compared[("cases.parquet", "points")] > 300
