"""Issue 17, DIP read path: each distinct code string read once, only the needed columns read,
list code columns read as Parquet dictionaries; the results equal those of the record-by-record
keying that came before (``_before`` below, the pre-issue-17 ``group_dip``), bad records included."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from drgdip.arrowio import read_table
from drgdip.grouper.dip import auxiliary as A
from drgdip.grouper.dip.api import (
    _ages,
    _cases,
    _encode,
    file_plan,
    group_dip,
    group_dip_file,
    prepare_catalog,
)
from drgdip.grouper.dip.match import MATCH_NAMES, run_kernel
from drgdip.weights.dip_catalog import build_catalog
from tests.conftest import need_shared
from tests.dip_example import history

DIAGS = ["K80.100", "k80.100 ", "K80.101x001", "K80.000", "K80.200", "C34.100", "C78.000", "Z51.000", "Z51.100",
         "I10.x00", "E11.900", "I50.000", "N18.500", "Ｋ８０．１００", "A01.002+G01*", "+G01*", "", None, "ZZ", "8"]
PROCS = ["51.2300", "51.2200", "51.1000", "99.2100", "92.2400", "99.2500", "54.5100", "51.2300 ", "５１．２３００",
         "", None, "XX.9999", "45.1300"]


def _before(table, catalog, auxiliary=True) -> pa.Table:
    """``group_dip`` as it was before issue 17: the keys of every record built from its strings."""
    table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
    cat = prepare_catalog(catalog)
    meta = cat.meta
    c = _cases(table, meta["excluded_procedures"], meta["procedure_types"])
    d, ci, unknown, ptr, ids = _encode(c, cat.compiled)
    kind, row = run_kernel(cat.compiled, d, ci, c.ctype, unknown, ptr, ids)
    grouped = kind > 0
    safe = np.where(grouped, row, 0).astype(np.int64)
    mask = pa.array(~grouped)
    group = pc.if_else(mask, pa.scalar(None, pa.string()), cat.table["group_key"].combine_chunks().take(pa.array(safe)))
    score = np.where(grouped, cat.table["score"].to_numpy()[safe], np.nan)
    reason = c.reason.copy()
    names = np.array(["", "DIP_EXACT", "DIP_CONTAINED", "DIP_COMPREHENSIVE"], dtype=object)
    reason[reason == ""] = names[kind[reason == ""]]
    reason[reason == ""] = "DIP_NO_GROUP"
    status = np.where(grouped, "grouped", np.where(reason == "DIP_NO_GROUP", "ungroupable", "invalid"))
    aux = meta.get("auxiliary", {})
    coefs = {"severity": np.ones(c.n), "tumour": np.ones(c.n), "age": np.ones(c.n)}
    if aux.get("enabled"):
        ages = _ages(table, c.cols, c.n)
        feats = A.case_features(c.diagnoses, c.procedures, c.principal, ages[0], ages[1], aux)
        cci = feats["cci"]
        if auxiliary:
            coefs = A.apply(feats, aux.get("rows", []), aux, c.n)
    else:
        cci = A.cci_index(c.diagnoses)
    coef = np.round(coefs["severity"] * coefs["tumour"] * coefs["age"], 4)

    def col(x):
        return pa.array(np.where(grouped, x, np.nan), pa.float64(), mask=~grouped)

    out = {"dip_group": group, "dip_score": col(score),
           "dip_match": pc.if_else(mask, pa.scalar(None, pa.string()),
                                   pa.array(MATCH_NAMES, pa.string()).take(pa.array(kind.astype(np.int64)))),
           "dip_status": pa.array(status, pa.string()), "dip_reason": pa.array(reason, pa.string()),
           "dip_cci": pa.array(cci, pa.int64()), "dip_coef_severity": col(np.round(coefs["severity"], 4)),
           "dip_coef_tumour": col(np.round(coefs["tumour"], 4)), "dip_coef_age": col(np.round(coefs["age"], 4)),
           "dip_coefficient": col(coef), "dip_adjusted_score": col(np.round(score * coef, 4))}
    base = table.select([n for n in table.column_names if n not in out])
    for name, arr in out.items():
        base = base.append_column(name, arr)
    return base


def _records(n: int, seed: int) -> pa.Table:
    """Records mixing good codes with every kind of bad one (blank, full-width, lower case, a lone
    asterisk half, unreadable, null lists, empty lists, duplicates, excluded and unknown procedures)."""
    rng = np.random.default_rng(seed)
    codes = DIAGS if seed == 1 else DIAGS + ["J18.900"]      # the catalogue's history (seed 1) has no J18
    diags, procs = [], []
    for i in range(n):
        k = int(rng.integers(0, 6))
        diags.append(None if k == 0 and i % 7 == 0 else [codes[j] for j in rng.integers(0, len(codes), k)])
        m = int(rng.integers(0, 5))
        procs.append(None if m == 0 and i % 5 == 0 else [PROCS[j] for j in rng.integers(0, len(PROCS), m)])
    age = rng.integers(0, 95, n).astype(float)
    age[rng.random(n) < 0.05] = np.nan
    return pa.table({"id": [f"r{i}" for i in range(n)], "age": pa.array(age, from_pandas=True),
                     "age_days": pa.array(np.where(age < 1, 20.0, np.nan), from_pandas=True),
                     "diagnoses": pa.array(diags, pa.list_(pa.string())),
                     "procedures": pa.array(procs, pa.list_(pa.string())),
                     "total_cost": rng.lognormal(9, 0.4, n)})


@pytest.fixture(scope="module")
def catalog():
    """The worked example's history plus tumour and other cases: core, comprehensive and
    auxiliary rows (severity, tumour and age learned with small thresholds)."""
    h = history()
    extra = _records(3000, 1).drop_columns(["age_days"])
    extra = extra.append_column("year", pa.array([2025] * extra.num_rows)).select(
        ["id", "year", "diagnoses", "procedures", "total_cost", "age"])
    extra = extra.set_column(2, "diagnoses", pc.binary_join(extra["diagnoses"], "|")) \
                 .set_column(3, "procedures", pc.binary_join(extra["procedures"], "|"))
    h = h.append_column("age", pa.array([50.0] * h.num_rows)).select(extra.column_names)
    h = pa.concat_tables([h.cast(extra.schema), extra])
    policy = {"min_cases": 3, "excluded_procedures": ["99.2"],
              "auxiliary_rules": {"min_cases": 5, "min_difference": 0.0, "z": 0.0}}
    return prepare_catalog(build_catalog(h, policy))


def test_catalog_fixture_has_every_part(catalog):
    kinds = set(catalog.table["kind"].to_pylist())
    assert kinds == {"core", "comprehensive"}
    assert catalog.meta["auxiliary"]["enabled"]


@pytest.mark.parametrize("auxiliary", [True, False])
def test_equals_before_on_bad_records(catalog, auxiliary):
    t = _records(5000, 2)
    new, old = group_dip(t, catalog, auxiliary), _before(t, catalog, auxiliary)
    assert new.equals(old)
    reasons = set(new["dip_reason"].to_pylist())
    # the records reach every outcome, so equality is not that of two empty paths
    assert {"DIP_EXACT", "DIP_COMPREHENSIVE", "DIP_NO_GROUP", "DIP_BAD_PROCEDURE", "DIP_BAD_DIAGNOSIS",
            "MISSING_DIAGNOSIS"} <= reasons
    assert pc.max(new["dip_cci"]).as_py() > 0


def test_equals_before_on_text_dictionary_sliced_and_chunked_columns(catalog):
    t = _records(3000, 3)
    text = t.set_column(3, "diagnoses", pc.binary_join(t["diagnoses"], "|")) \
            .set_column(4, "procedures", pc.binary_join(t["procedures"], ";"))
    expected = _before(text, catalog)
    assert group_dip(text, catalog).equals(expected)
    # list<dictionary<string>> (as read from Parquet with read_dictionary), one and several chunks
    dict_type = pa.list_(pa.dictionary(pa.int32(), pa.string()))
    d = t.set_column(3, "diagnoses", t["diagnoses"].cast(dict_type)).set_column(4, "procedures",
                                                                              t["procedures"].cast(dict_type))
    out = group_dip(d, catalog)
    assert out.drop_columns(["diagnoses", "procedures"]).equals(_before(t, catalog).drop_columns(
        ["diagnoses", "procedures"]))
    two = pa.Table.from_batches(d.to_batches(max_chunksize=1000))
    assert group_dip(two, catalog).drop_columns(["diagnoses", "procedures"]).equals(
        out.drop_columns(["diagnoses", "procedures"]))
    sliced = t.slice(700, 900)
    assert group_dip(sliced, catalog).equals(_before(sliced, catalog))


def test_distinct_codes_read_once_per_batch():
    lists = pa.array([["b", "a", None], [], None, ["a", "a"]], pa.list_(pa.string()))
    ptr, entry, codes = A.listed_entries(lists)
    assert ptr.tolist() == [0, 3, 3, 3, 5]
    assert codes.to_pylist() == ["b", "a"]
    assert entry.tolist() == [0, 1, -1, 1, 1]


def test_conformance_records_equal_before(catalog):
    cases = read_table(need_shared("conformance", "chs-drg-1.1-cases.csv"))
    assert group_dip(cases, catalog).equals(_before(cases, catalog))


def test_file_reads_only_what_it_needs_and_equals_before(tmp_path, catalog):
    t = _records(20000, 4).append_column("hospital_id", pa.array(["H1"] * 20000)) \
                         .append_column("notes", pa.array(["x" * 40] * 20000))
    src = tmp_path / "in.parquet"
    pq.write_table(t, src, row_group_size=8192)
    read, write, add_row = file_plan(t.column_names)
    assert read == ["id", "age", "age_days", "diagnoses", "procedures"] and write == ["id"] and not add_row
    assert file_plan(t.column_names, "all")[0] is None
    assert file_plan(t.column_names, ["notes"])[0] == ["id", "age", "age_days", "diagnoses", "procedures", "notes"]
    for keep, cols in ((None, ["id"]), (["hospital_id", "diagnoses"], ["id", "diagnoses", "hospital_id"]),
                       ("all", t.column_names)):
        dst = tmp_path / "out.parquet"
        assert group_dip_file(src, dst, catalog, batch_size=4096, keep=keep) == 20000
        got = pq.read_table(dst)
        expected = pa.concat_tables(_before(b, catalog) for b in pq.ParquetFile(src).iter_batches(4096))
        results = [c for c in expected.column_names if c.startswith("dip_")]
        assert got.equals(expected.select(cols + results)), keep
    # no id column: the row key counts records across batches and row groups
    src2 = tmp_path / "noid.csv"
    pa.csv.write_csv(t.drop_columns(["id"]).set_column(2, "diagnoses", pc.binary_join(t["diagnoses"], "|"))
                     .set_column(3, "procedures", pc.binary_join(t["procedures"], "|")), src2)
    dst = tmp_path / "out2.parquet"
    group_dip_file(src2, dst, catalog, batch_size=3000)
    got = pq.read_table(dst)
    assert got["row"].to_pylist() == list(range(20000))
    assert got.drop_columns(["row"]).equals(_before(read_table(src2), catalog).select(
        [c for c in got.column_names if c != "row"]))


def test_dictionaries_read_only_when_the_batches_stay_those_of_a_plain_read(tmp_path, catalog):
    """Row groups of whole batches: code columns read as dictionaries; otherwise as text (a
    dictionary read goes row group by row group): either way the output bytes of a plain read."""
    from drgdip.grouper.dip.api import _list_columns
    t = _records(9000, 5)
    even, odd = tmp_path / "even.parquet", tmp_path / "odd.parquet"
    pq.write_table(t, even, row_group_size=4000)
    pq.write_table(t, odd, row_group_size=3000)
    assert _list_columns(even, None, 2000) == ["diagnoses", "procedures"]
    assert _list_columns(odd, None, 2000) == []
    for src in (even, odd):
        a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
        group_dip_file(src, a, catalog, batch_size=2000)
        expected = [_before(x, catalog).select(["id"] + [c for c in _before(x, catalog).column_names
                                                        if c.startswith("dip_")])
                    for x in pq.ParquetFile(src).iter_batches(2000)]
        with pq.ParquetWriter(b, expected[0].schema) as w:
            for x in expected:
                w.write_table(x)
        assert pq.read_table(a).equals(pq.read_table(b))
        assert pq.ParquetFile(a).metadata.num_row_groups == len(expected)
