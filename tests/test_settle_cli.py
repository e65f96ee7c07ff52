"""End to end: drgdip weights / settle / settle --final / ledger show / simulate."""
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from drgdip.cli import main
from drgdip.weights.settlement import runs

REPO = Path(__file__).resolve().parents[1]
POLICY = str(REPO / "examples" / "region.toml")
DRGS = ["BR21", "BR23", "ES29", "FM19"]
MEAN = {"BR21": 30000.0, "BR23": 20000.0, "ES29": 9000.0, "FM19": 45000.0}


def records(n, month, seed, years=None):
    rng = np.random.default_rng(seed)
    d = rng.choice(DRGS, n)
    cost = np.round(np.array([MEAN[x] for x in d]) * rng.lognormal(0, 0.4, n), 2)
    dates = ([f"{y}-06-15" for y in rng.choice(years, n)] if years else [f"{month}-{i % 28 + 1:02d}" for i in range(n)])
    return pa.table({
        "setl_id": [f"S{seed}-{i}" for i in range(n)],
        "fixmedins_code": rng.choice(["H23010000001", "H23010000002", "H23010000004"], n),
        "insutype": rng.choice(["310", "390"], n), "dscg_time": dates, "drg": d, "status": ["grouped"] * n,
        "medfee_sumamt": cost, "个人负担": np.round(cost * 0.25, 2),
        "dept": rng.choice(["心内科", "骨科"], n), "doctor_id": rng.choice(["D1", "D2"], n),
        "los_days": rng.integers(2, 15, n).astype(float)})


@pytest.fixture
def files(tmp_path):
    pq.write_table(records(600, None, 1, years=[2024, 2025]), tmp_path / "history.parquet")
    pq.write_table(records(300, "2026-10", 2), tmp_path / "oct.parquet")
    pq.write_table(records(300, "2026-11", 3), tmp_path / "nov.parquet")
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_weights_settle_refuse_reopen_final_and_show(files):
    t = files
    r = run("weights", t / "history.parquet", "--policy", POLICY, "-o", t / "w.parquet", "--quiet")
    assert r.exit_code == 0, r.output
    assert "4 groups (0 without weight), RIV" in r.stdout
    settle = ["settle", "2026-10", t / "oct.parquet", "--weights", t / "w.parquet", "--policy", POLICY,
              "--ledger", t / "r.db", "--out", t / "out" / "10", "--quiet"]
    r = run(*settle)
    assert r.exit_code == 0, r.output
    assert "employee" in r.stdout and "86000000.00" in r.stdout
    assert sorted(p.name for p in (t / "out" / "10").iterdir()) == ["cases.parquet", "hospitals.csv",
                                                                    "review.csv", "summary.json"]
    cases = pq.read_table(t / "out" / "10" / "cases.parquet")
    assert cases.num_rows == 300
    for col in ("setl_id", "drg", "weight", "case_type", "pricing_reason", "points", "amount"):
        assert col in cases.column_names
    hosp = (t / "out" / "10" / "hospitals.csv").read_text().splitlines()[0]
    for col in ("hospital_id", "fund", "cases", "cmi", "points", "point_value", "personal_share", "amount_due",
                "withheld", "paid", "cost"):
        assert f'"{col}"' in hosp
    r = run(*settle)
    assert r.exit_code == 2 and "already recorded" in r.stderr and "--reopen" in r.stderr
    r = run(*settle, "--reopen")
    assert r.exit_code == 0, r.output
    r = run("settle", "2026-11", t / "nov.parquet", "--weights", t / "w.parquet", "--policy", POLICY,
            "--ledger", t / "r.db", "--quiet")
    assert r.exit_code == 0, r.output
    r = run("settle", "2026", "--final", "--partial-year", "--policy", POLICY, "--ledger", t / "r.db",
            "--out", t / "out" / "2026")
    assert r.exit_code == 0, r.output
    assert "annual settlement 2026" in r.stdout and "only 2 month(s)" in r.stdout
    annual = (t / "out" / "2026" / "hospitals.csv").read_text()
    assert '"balance"' in annual and '"adjustment"' in annual
    r = run("ledger", "show", t / "r.db")
    assert r.exit_code == 0
    assert "superseded" in r.stdout and r.stdout.count("current") == 3
    assert "input records:" in r.stdout


def test_outputs_are_byte_identical_for_the_same_inputs(files):
    t = files
    run("weights", t / "history.parquet", "--policy", POLICY, "-o", t / "w.parquet", "--quiet")
    for name in ("a", "b"):
        r = run("settle", "2026-10", t / "oct.parquet", "--weights", t / "w.parquet", "--policy", POLICY,
                "--ledger", t / f"{name}.db", "--out", t / name, "--quiet")
        assert r.exit_code == 0, r.output
    for f in ("cases.parquet", "hospitals.csv", "summary.json", "review.csv"):
        assert (t / "a" / f).read_bytes() == (t / "b" / f).read_bytes(), f


def test_failing_run_leaves_previous_output_and_ledger(files, monkeypatch):
    t = files
    run("weights", t / "history.parquet", "--policy", POLICY, "-o", t / "w.parquet", "--quiet")
    args = ["settle", "2026-10", t / "oct.parquet", "--weights", t / "w.parquet", "--policy", POLICY,
            "--ledger", t / "r.db", "--out", t / "out", "--quiet"]
    assert run(*args).exit_code == 0
    before = {p.name: p.read_bytes() for p in (t / "out").iterdir()}
    db_before = (t / "r.db").read_bytes()
    # a bad weights file: stops with one line, exit 2
    (t / "bad.csv").write_text("drg,weight\nBR21,heavy\n")
    bad = list(args)
    bad[4] = t / "bad.csv"
    r = run(*bad, "--reopen")
    assert r.exit_code == 2 and "not a number" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # a failure while recording the run, after the outputs were written to the temporary folder
    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(runs.ledger_mod, "record_run", boom)
    with pytest.raises(RuntimeError):
        runs.settle_month("2026-11", t / "nov.parquet", policy_path=POLICY, weights_path=t / "w.parquet",
                          ledger_path=t / "r.db", out=t / "out", reopen=True, quiet=True)
    assert {p.name: p.read_bytes() for p in (t / "out").iterdir()} == before
    assert (t / "r.db").read_bytes() == db_before
    assert [p.name for p in t.iterdir() if p.name.startswith(".out")] == []   # no temporary folder left


def test_records_without_groups_need_a_scheme(files):
    t = files
    pq.write_table(records(5, "2026-10", 4).drop_columns(["drg", "status"]), t / "raw.parquet")
    (t / "w.csv").write_text("drg,weight\nBR21,1.2\n")
    r = run("settle", "2026-10", t / "raw.parquet", "--weights", t / "w.csv", "--policy", POLICY,
            "--ledger", t / "r.db", "--quiet")
    assert r.exit_code == 2 and "pass --scheme" in r.stderr


def test_simulate_revenue_vs_cost(files):
    t = files
    run("weights", t / "history.parquet", "--policy", POLICY, "-o", t / "w.parquet", "--quiet")
    r = run("simulate", t / "oct.parquet", "--hospital", "H23010000001", "--weights", t / "w.parquet",
            "--policy", POLICY, "--point-value", "employee=200", "--point-value", "resident=150",
            "-o", t / "sim.parquet")
    assert r.exit_code == 0, r.output
    assert "by drg" in r.stdout and "by dept" in r.stdout and "by doctor" in r.stdout
    sim = pq.read_table(t / "sim.parquet")
    assert set(sim["fixmedins_code"].to_pylist()) == {"H23010000001"}
    pts = sim["points"].to_numpy(zero_copy_only=False)
    pv = np.where(np.array(sim["fund_key"].to_pylist()) == "employee", 200.0, 150.0)
    assert np.allclose(sim["revenue"].to_numpy(zero_copy_only=False), np.round(pts * pv, 2))
    run("settle", "2026-10", t / "oct.parquet", "--weights", t / "w.parquet", "--policy", POLICY,
        "--ledger", t / "r.db", "--quiet")
    r = run("simulate", t / "oct.parquet", "--weights", t / "w.parquet", "--policy", POLICY, "--ledger", t / "r.db")
    assert r.exit_code == 0 and "ledger 2026-10" in r.stdout


def test_rate_form_with_the_official_harbin_table(tmp_path):
    from tests.conftest import need_shared
    table = need_shared("weights", "harbin-2024.csv")
    (tmp_path / "harbin.toml").write_text(
        '[region]\nform = "rate"\n[rate.employee]\n"2024" = 12252.70\n[rate.resident]\n"2024" = 9649.24\n'
        '[deviation]\ngroup_mean = "period"\n', encoding="utf-8")
    pq.write_table(pa.table({"hospital_id": ["H1", "H1", "H2"], "fund": ["职工", "职工", "居民"],
                             "discharge_date": ["2024-05-01"] * 3, "drg": ["AA19", "NOPE", "AA19"],
                             "total_cost": [200000.0, 5000.0, 150000.0], "personal_share": [20000.0, 500.0, 30000.0]}),
                   tmp_path / "may.parquet")
    r = run("settle", "2024-05", tmp_path / "may.parquet", "--weights", table, "--policy", tmp_path / "harbin.toml",
            "--ledger", tmp_path / "h.db", "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 0, r.output
    cases = pq.read_table(tmp_path / "out" / "cases.parquet").to_pylist()
    # AA19 weighs 18.2858: 18.2858 × 12,252.70 = 224,050.42166 → 224,050.42; × 9,649.24 = 173,686.32 + 2,757.75 = 176,444.07
    assert [c["amount"] for c in cases] == [224050.42, None, 176444.07]
    assert cases[1]["pricing_reason"] == "GROUP_NOT_IN_TABLE" and cases[1]["points"] is None
    review = (tmp_path / "out" / "review.csv").read_text()
    assert "NOPE" in review and "5000" in review


def test_settled_folder_and_files_follow_the_umask(tmp_path):
    """The output folder and its files get ordinary permissions (0755 / 0644 under umask 022),
    not mkdtemp's private 0700; --scheme teaching is recorded as the built-in scheme."""
    import os
    import sqlite3

    from drgdip.synth.demo import run_demo
    d = run_demo(tmp_path / "d", seed=5, progress=False, records_per_month=60, hospitals=3)["out"]
    old = os.umask(0o022)
    try:
        r = CliRunner().invoke(main, ["settle", "2024-03", str(d / "data" / "2024-03.parquet"), "--policy",
                                      str(d / "policy.toml"), "--weights", str(d / "weights.parquet"), "--ledger",
                                      str(tmp_path / "l.db"), "--new-ledger", "--scheme", "teaching",
                                      "-o", str(tmp_path / "out"), "--quiet"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == {0o644}
    with sqlite3.connect(tmp_path / "l.db") as conn:
        assert conn.execute("SELECT scheme_id FROM runs").fetchone()[0] == "teaching_scheme"
