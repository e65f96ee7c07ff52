"""DIP catalogue building: the hand-worked example of docs/dip.md, reproduced exactly."""
import json

import numpy as np
import pyarrow as pa
import pytest
from dip_example import POLICY, POLICY_TOML, history

from drgdip.arrowio import InputError
from drgdip.grouper.dip.api import (
    catalog_meta,
    compare_catalogs,
    load_catalog,
    write_catalog,
)
from drgdip.weights.dip_catalog import build_catalog
from drgdip.weights.dip_scores import load_dip_policy, year_weight_map


@pytest.fixture(scope="module")
def catalog():
    return build_catalog(history(), POLICY)


def _rows(cat):
    return {r["group_key"]: r for r in cat.to_pylist()}


def test_hand_worked_catalogue(catalog):
    rows = _rows(catalog)
    assert sorted(rows) == ["K80.1|51.2300", "K80.1|none", "K80|conservative", "K80|diagnostic", "K80|surgery"]
    a = rows["K80.1|51.2300"]
    # 99.2100 (injection) does not count, so a6 joins A; a7 (60000) is trimmed at 2 SD
    assert (a["kind"], a["diagnosis"], a["procedures"], a["cases"], a["cases_trimmed"]) == \
        ("core", "K80.1", ["51.2300"], 7, 1)
    assert a["mean_cost"] == 11300.00          # (1*9000 + 2*10000 + 7*12000) / 10
    assert a["score"] == 127.4101              # 11300 / 8869 * 100
    assert a["cv"] == 0.1499
    b = rows["K80.1|none"]
    assert (b["kind"], b["cases"], b["mean_cost"], b["score"]) == ("core", 5, 4700.00, 52.9936)  # (2*4000+7*4900)/9
    assert rows["K80|surgery"]["mean_cost"] == 14000.00     # c1, c2 (2 < 3 cases) and d1 (K80.0)
    assert rows["K80|surgery"]["score"] == 157.8532
    assert rows["K80|diagnostic"]["mean_cost"] == 7000.00   # 51.1000 = diagnostic procedure on biliary tract
    assert rows["K80|conservative"]["score"] == 45.1009
    meta = catalog_meta(catalog)
    assert meta["overall_mean_cost"] == 8869.00             # (1*9000 + 2*6000 + 7*9670) / 10
    assert meta["years"] == {"2023": 1.0, "2024": 2.0, "2025": 7.0}
    assert meta["core_groups"] == 2 and meta["comprehensive_groups"] == 3
    assert meta["cases_used"] == 19 and meta["cases_trimmed"] == 1
    assert "not an official table" in meta["procedure_type_source"]


def test_riv_over_kept_cases(catalog):
    groups = {"A": [8000, 10000, 10000, 11000, 13000, 12000], "B": [3000, 5000, 4400, 5400, 4900],
              "S": [15000, 17000, 10000], "C": [4000, 4000], "D": [6000, 8000]}
    allv = np.array([v for g in groups.values() for v in g], float)
    ssw = sum(((np.array(g, float) - np.mean(g)) ** 2).sum() for g in groups.values())
    assert catalog_meta(catalog)["riv"] == round(1 - ssw / ((allv - allv.mean()) ** 2).sum(), 4)


def test_defaults_make_everything_comprehensive():
    cat = build_catalog(history())     # min 15 cases: no core group; no trimming at 3 SD of 7 cases here
    assert set(cat["kind"].to_pylist()) == {"comprehensive"}
    assert catalog_meta(cat)["min_cases"] == 15


def test_policy_file_and_year_weights(tmp_path):
    p = tmp_path / "region.toml"
    p.write_text(POLICY_TOML + "base = 1000\n", encoding="utf-8")
    cat = build_catalog(history(), p)
    assert _rows(cat)["K80.1|51.2300"]["score"] == 1274.1008   # x1000 base
    assert year_weight_map(np.array([2021, 2022, 2023, 2024, 2025]), (1, 2, 7)) == \
        {2021: 0.0, 2022: 0.0, 2023: 1.0, 2024: 2.0, 2025: 7.0}


def test_old_years_and_bad_rows_are_counted_not_silent():
    h = history()
    extra = pa.table({"id": ["o1", "x1", "x2"], "year": [2020, 2025, None], "diagnoses": ["K80.100", "K80.100", "K80.100"],
                      "procedures": ["", "", ""], "total_cost": [99999.0, None, 100.0]})
    cat = build_catalog(pa.concat_tables([h, extra]), POLICY)
    meta = catalog_meta(cat)
    assert meta["history_excluded"] == {"DIP_BAD_COST": 1, "DIP_NO_YEAR": 1, "DIP_OLD_YEAR": 1}
    assert _rows(cat)["K80.1|none"]["score"] == 52.9936


@pytest.mark.parametrize("bad, msg", [
    ({"min_cases": 0}, "min_cases"), ({"year_weights": []}, "year_weights"), ({"trim": "iqr"}, "trim"),
    ({"base": "100"}, "base"), ({"mincases": 3}, "unknown key"), ({"auxiliary": ["cci"]}, "auxiliary"),
    ({"procedure_types": {"51": "operation"}}, "procedure_types"),
])
def test_policy_validation(bad, msg):
    with pytest.raises(ValueError, match=msg):
        load_dip_policy({"dip": bad})


def test_unusable_history():
    with pytest.raises(InputError, match="total_cost"):
        build_catalog(pa.table({"diagnoses": ["K80.100"]}), POLICY)
    with pytest.raises(InputError, match="no usable case"):
        build_catalog(pa.table({"diagnoses": ["K80.100"], "total_cost": [-1.0]}), POLICY)


def test_percentile_trim():
    cat = build_catalog(history(), {**POLICY, "trim": "percentile", "trim_percentiles": [0, 90]})
    a = _rows(cat)["K80.1|51.2300"]
    assert a["cases_trimmed"] == 1 and a["mean_cost"] == 11300.00   # the 60000 case is above the 90th percentile


def test_files_roundtrip_identical(tmp_path, catalog):
    for name in ("cat.parquet", "cat.csv"):
        write_catalog(catalog, tmp_path / name)
        back = load_catalog(tmp_path / name)
        assert back.select(["group_key", "score", "procedures"]).to_pylist() == \
            catalog.select(["group_key", "score", "procedures"]).to_pylist()
        assert catalog_meta(back)["excluded_procedures"] == ["99.2"]
    write_catalog(build_catalog(history(), POLICY), tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "cat.parquet").read_bytes()
    assert json.loads((tmp_path / "cat.csv.meta.json").read_text())["min_cases"] == 3


def test_bad_catalogue_files(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("group_key,kind,diagnosis,procedures,score\nK80.1|none,core,K80.1,,-3\n", encoding="utf-8")
    with pytest.raises(InputError, match="positive"):
        load_catalog(p)
    p.write_text("group_key,diagnosis\nx,y\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing column"):
        load_catalog(p)


def test_compare_with_national_layout(tmp_path, catalog):
    ref = tmp_path / "national.csv"
    ref.write_text("主要诊断编码,手术操作编码,分值\nK80.100,51.2300,120\nK80.100,保守治疗,60\nK80.100,51.2200+51.1000,200\n",
                   encoding="utf-8")
    diff = {r["group_key"]: r for r in compare_catalogs(catalog, ref).to_pylist()}
    assert diff["K80.1|51.2300"]["status"] == "both"
    assert diff["K80.1|51.2300"]["score_ratio"] == round(120 / 127.4101, 4)
    assert diff["K80.1|none"]["score_b"] == 60
    assert diff["K80.1|51.1000+51.2200"]["status"] == "only_b"
    assert diff["K80|surgery"]["status"] == "only_a"


def test_procedure_type_table_override(tmp_path):
    p = tmp_path / "types.csv"
    p.write_text("prefix,type\n51.10,therapeutic\n", encoding="utf-8")
    cat = build_catalog(history(), POLICY, procedure_types=p)
    assert "K80|therapeutic" in _rows(cat) and "K80|diagnostic" not in _rows(cat)
    assert catalog_meta(cat)["procedure_type_source"].startswith(f"procedure type table {p}")
    cat2 = build_catalog(history(), {**POLICY, "procedure_types": {"51.1": "surgery"}})
    assert _rows(cat2)["K80|surgery"]["cases"] == 5
    bad = tmp_path / "bad.csv"
    bad.write_text("prefix,type\n51.10,operation\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        build_catalog(history(), POLICY, procedure_types=bad)


def test_procedure_types_derived_from_a_drg_scheme():
    api = pytest.importorskip("drgdip.grouper.drg.api")
    from drgdip.grouper.dip.api import types_from_scheme
    scheme = api.load_scheme(None)
    derived = types_from_scheme(scheme)
    assert set(derived.values()) == {"surgery", "therapeutic"}
    cat = build_catalog(history(), POLICY, scheme=scheme)
    meta = catalog_meta(cat)
    assert "derived from CHS-DRG scheme" in meta["procedure_type_source"]
    some = next(iter(derived))
    assert meta["procedure_types"][some] == derived[some]


def test_years_from_discharge_dates_alone(catalog):
    """A history with a discharge date and no `year` column (as the demo writes it) builds the
    same catalogue; rows whose date has no readable year are counted as DIP_NO_YEAR."""
    h = history()
    years = h["year"].to_pylist()
    dated = h.drop(["year"]).append_column("discharge_date", pa.array([f"{y}-06-30" for y in years]))
    bad = dated.slice(0, 1).set_column(dated.schema.get_field_index("discharge_date"), "discharge_date",
                                       pa.array(["30/06/2024"]))
    cat = build_catalog(pa.concat_tables([dated, bad]), POLICY)
    assert _rows(cat) == _rows(catalog)
    meta = catalog_meta(cat)
    assert meta["years"] == {"2023": 1.0, "2024": 2.0, "2025": 7.0}
    assert meta["history_excluded"] == {"DIP_NO_YEAR": 1}
