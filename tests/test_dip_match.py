"""DIP grouping: exact / contained / comprehensive, ties, bad input, kernel = reference."""
import numpy as np
import pyarrow as pa
import pytest
from dip_example import POLICY, history

from drgdip.arrowio import InputError
from drgdip.grouper.dip import keys as K
from drgdip.grouper.dip.api import (
    _cases,
    _encode,
    group_dip,
    load_catalog,
    prepare_catalog,
    recommend,
)
from drgdip.grouper.dip.match import MATCH_NAMES, match_reference, run_kernel
from drgdip.weights.dip_catalog import build_catalog


@pytest.fixture(scope="module")
def catalog():
    return prepare_catalog(build_catalog(history(), POLICY))


def _group(cat, diags, procs, **extra):
    out = group_dip(pa.table({"diagnoses": diags, "procedures": procs, **extra}), cat)
    return out.select(["dip_group", "dip_match", "dip_status", "dip_reason"]).to_pylist()


def test_fallbacks(catalog):
    rows = _group(catalog,
                  ["K80.100", "K80.1", "K80.100|I10.x00", "K80.100", "K80.900", "K80.100", "J18.900"],
                  ["51.2300|99.2100", "51.2300", "51.2300|51.1000", "51.2200|51.1000", "", "99.2900", ""])
    assert [(r["dip_group"], r["dip_match"]) for r in rows] == [
        ("K80.1|51.2300", "exact"),          # the injection does not count
        ("K80.1|51.2300", "exact"),          # K80.1 written without the last digits
        ("K80.1|51.2300", "contained"),      # has 51.2300 plus a diagnostic ERCP
        ("K80|surgery", "comprehensive"),    # open cholecystectomy: no core group
        ("K80|conservative", "comprehensive"),
        ("K80.1|none", "exact"),             # only excluded procedures: conservative core group
        (None, None),
    ]
    assert rows[-1]["dip_status"] == "ungroupable" and rows[-1]["dip_reason"] == "DIP_NO_GROUP"
    assert [r["dip_reason"] for r in rows[:4]] == ["DIP_EXACT", "DIP_EXACT", "DIP_CONTAINED", "DIP_COMPREHENSIVE"]


def test_bad_records_never_stop_the_batch(catalog):
    rows = _group(catalog, [None, "", "123", "K80.100", "K80.100"], ["51.2300", None, "", "ZZ.99|51.2300", None],
                  total_cost=[1.0, 2.0, 3.0, 4.0, 5.0])
    assert [(r["dip_status"], r["dip_reason"]) for r in rows] == [
        ("invalid", "MISSING_DIAGNOSIS"), ("invalid", "MISSING_DIAGNOSIS"), ("invalid", "DIP_BAD_DIAGNOSIS"),
        ("invalid", "DIP_BAD_PROCEDURE"), ("grouped", "DIP_EXACT")]
    with pytest.raises(InputError, match="diagnoses"):
        group_dip(pa.table({"x": [1]}), catalog)


def _hand_catalog():
    return load_catalog(pa.table({
        "group_key": ["K80.1|51.2300", "K80.1|51.2300+54.5100", "K80.1|51.2200", "K80.1|51.1000", "K80|surgery"],
        "kind": ["core", "core", "core", "core", "comprehensive"],
        "diagnosis": ["K80.1", "K80.1", "K80.1", "K80.1", "K80"],
        "procedures": ["51.2300", "51.2300|54.5100", "51.2200", "51.1000", ""],
        "procedure_type": ["surgery", "surgery", "surgery", "diagnostic", "surgery"],
        "score": [120.0, 120.0, 150.0, 50.0, 130.0],
    }))


def test_containment_ties_and_types():
    cat = _hand_catalog()
    rows = _group(cat, ["K80.1"] * 4,
                  ["51.2300|54.5100|54.1100", "51.2200|51.2300", "51.1000|51.2200|99.0400", "51.1000|45.1300"])
    # equal scores 120: the group with more procedures wins
    assert rows[0]["dip_group"] == "K80.1|51.2300+54.5100"
    # two contained surgical groups: the higher score wins
    assert rows[1]["dip_group"] == "K80.1|51.2200"
    assert rows[2]["dip_group"] == "K80.1|51.2200" and rows[2]["dip_match"] == "contained"
    # diagnostic-only case containing the diagnostic core group: contained
    assert rows[3]["dip_group"] == "K80.1|51.1000" and rows[3]["dip_match"] == "contained"
    # a surgical case that contains only the diagnostic group's procedure does not land there
    r = _group(cat, ["K80.1"], ["51.1000|51.3200"])[0]
    assert (r["dip_group"], r["dip_match"]) == ("K80|surgery", "comprehensive")


def test_recommend_explains(catalog):
    recs = recommend({"diag_code": "K80.100|E11.900", "oprn_oprt_code": ["51.1000", "51.2300"]}, catalog)
    assert recs[0]["group_key"] == "K80.1|51.2300" and recs[0]["chosen"] and recs[0]["match"] == "contained"
    assert "51.1000" in recs[0]["why"]
    keys = [r["group_key"] for r in recs]
    assert keys[1] == "K80|surgery" and set(keys) == {"K80.1|51.2300", "K80.1|none", "K80|surgery",
                                                      "K80|diagnostic", "K80|conservative"}
    assert [r["rank"] for r in recs] == [1, 2, 3, 4, 5]
    assert sum(r["chosen"] for r in recs) == 1
    with pytest.raises(ValueError, match="MISSING_DIAGNOSIS"):
        recommend({"diagnoses": "", "procedures": "51.2300"}, catalog)
    with pytest.raises(InputError, match="diagnoses"):
        recommend({"procedures": "51.2300"}, catalog)


def test_kernel_equals_reference_on_random_cases():
    rng = np.random.default_rng(7)
    diags = ["K80.100", "K80.200", "K81.000", "J18.900"]
    procs = ["51.2300", "51.2200", "51.1000", "54.5100", "99.2100", "45.1300", "88.7600", "51.8700"]
    n = 600
    hist = pa.table({
        "year": rng.choice([2024, 2025], n).tolist(),
        "diagnoses": [diags[i] for i in rng.integers(0, 3, n)],
        "procedures": ["|".join(sorted(set(rng.choice(procs, rng.integers(0, 4))))) for _ in range(n)],
        "total_cost": rng.uniform(1000, 20000, n).round(2).tolist()})
    cat = prepare_catalog(build_catalog(hist, {"min_cases": 8, "auxiliary": []}))
    assert (cat.table["kind"].to_numpy(zero_copy_only=False) == "core").sum() >= 5
    new = pa.table({"diagnoses": [diags[i] for i in rng.integers(0, 4, 400)],
                    "procedures": ["|".join(rng.choice(procs, rng.integers(0, 5))) for _ in range(400)]})
    c = _cases(new, cat.meta["excluded_procedures"], cat.meta["procedure_types"])
    kind, row = run_kernel(cat.compiled, *_encode(c, cat.compiled)[:2], c.ctype, *_encode(c, cat.compiled)[2:])
    rk, rr = match_reference(cat.compiled, c.subcat.to_pylist(), c.cat.to_pylist(), c.ctype.tolist(),
                             c.counted.to_pylist())
    assert kind.tolist() == rk and row.tolist() == rr
    assert {MATCH_NAMES[k] for k in rk} >= {"exact", "contained", "comprehensive"}


def test_batches_equal_whole(catalog):
    t = pa.table({"diagnoses": ["K80.100", "K80.200", "K80.100", "X"] * 5,
                  "procedures": ["51.2300", "", "51.1000", ""] * 5})
    whole = group_dip(t, catalog)
    parts = pa.concat_tables([group_dip(t.slice(i, 3), catalog) for i in range(0, 20, 3)])
    assert whole.to_pylist() == parts.to_pylist()


def test_keys_vectorised():
    sub = K.diagnosis_subcategory(pa.array(["K80.100x001", "K801", "I10.x00", "A01.002+G01*", "K8", None]))
    assert sub.to_pylist() == ["K80.1", "K80.1", "I10.x", "A01.0", None, None]
    counted = K.counted_procedures(pa.array([["54.5100", "51.2300", "51.2300", " 99.2100"], None, []]), ("99.2",))
    assert counted.to_pylist() == [["51.2300", "54.5100"], [], []]
    t, unknown = K.case_types(pa.array([["88.7600", "51.1000"], ["99.0400", "51.1000"], ["51.2300", "99.04"], ["Q1"]]),
                              K.builtin_type_table())
    assert t.tolist() == [1, 2, 3, 0] and unknown.tolist() == [0, 0, 0, 1]
