"""DIP cases priced by the settlement's point method; the dip CLI end to end."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from dip_example import POLICY, POLICY_TOML, history

from drgdip.cli import main
from drgdip.grouper.dip.api import group_dip
from drgdip.weights.dip_catalog import build_catalog


def test_points_are_score_times_coefficients():
    from drgdip.weights.dip_scores import price_dip_cases
    from drgdip.weights.settlement.policy import parse_policy
    cat = build_catalog(history(), POLICY)
    t = pa.table({"diagnoses": ["K80.100", "K80.100", "K80.100", "K80.100", ""],
                  "procedures": ["51.2300", "51.2300", "", "51.2300", ""],
                  "hospital_id": ["H1", "H2", "H1", "H1", "H1"], "fund": ["职工"] * 5,
                  "discharge_date": ["2026-10-15"] * 5, "personal_share": [0.0] * 5,
                  "total_cost": [11000.0, 11300.0, 1000.0, 40000.0, 500.0]})
    g = group_dip(t, cat)
    pol = parse_policy({"budget": {"employee": {"2026-10": 20000.0}},
                        "coefficients": {"level": {"3A": 1.0}, "hospital_level": {"H1": "3A"}, "hospital": {"H2": 0.9}},
                        "deviation": {"high_bands": [{"k": 3.0}], "low_k": 0.4}})
    p = price_dip_cases(g, cat, pol, period="2026-10")
    assert p["case_type"].to_pylist() == ["normal", "normal", "low_cost", "high_cost", "unpriced"]
    pts = p["points"].to_pylist()
    assert pts[0] == pytest.approx(127.4101)                         # score x 1
    assert pts[1] == pytest.approx(127.4101 * 0.9)                   # hospital coefficient
    assert pts[2] == pytest.approx(52.9936 * 1000 / 4700)            # low: score x cost / group mean
    assert pts[3] == pytest.approx(127.4101 * ((40000 / 11300 - 3) + 1))  # high: base x ((ratio - k) + 1)
    assert pts[4] is None


def test_cli_catalog_recommend_compare(tmp_path):
    hist = tmp_path / "h.parquet"
    pq.write_table(history(), hist)
    pol = tmp_path / "region.toml"
    pol.write_text(POLICY_TOML, encoding="utf-8")
    out = tmp_path / "cat.parquet"
    r = CliRunner().invoke(main, ["dip", "catalog", str(hist), "--policy", str(pol), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "2 core + 3 comprehensive" in r.output and "not an official table" in r.output
    r = CliRunner().invoke(main, ["dip", "recommend", "--catalog", str(out), "--json",
                                  "--record", json.dumps({"diagnoses": ["K80.100"], "procedures": ["51.2300"]})])
    assert r.exit_code == 0, r.output
    recs = json.loads(r.output)
    assert recs[0]["group_key"] == "K80.1|51.2300" and recs[0]["match"] == "exact"
    r = CliRunner().invoke(main, ["dip", "catalog", "--compare", str(out), str(out), "-o", str(tmp_path / "d.csv")])
    assert r.exit_code == 0 and "both: 5" in r.output


@pytest.mark.parametrize("args, msg", [
    (["dip", "catalog", "missing.parquet", "-o", "x.parquet"], "no such file"),
    (["dip", "catalog"], "HISTORY"),
    (["dip", "recommend", "--catalog", "missing.parquet", "--record", "{}"], "no such file"),
])
def test_cli_bad_input_one_line_exit_2(args, msg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_cli_bad_policy(tmp_path):
    hist = tmp_path / "h.parquet"
    pq.write_table(history(), hist)
    pol = tmp_path / "bad.toml"
    pol.write_text("[dip]\nmin_cases = -1\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["dip", "catalog", str(hist), "--policy", str(pol), "-o", str(tmp_path / "c.parquet")])
    assert r.exit_code == 2 and "min_cases" in r.output
