"""Results-only output (issue 17): key + results by default, --keep, --keep all, the row key."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from drgdip.cli import main
from drgdip.grouper.drg.api import (
    Grouper,
    group_file,
    group_table,
    load_scheme,
    output_plan,
)

RESULTS = ["mdc", "adrg", "drg", "status", "reason"]


@pytest.fixture(scope="module")
def teaching():
    return load_scheme(None)


def _table(n=300, with_id=True):
    diags = ["J18.900|E11.900", "J18.900", "I21.001", "", "X99.999", "P07.300"]
    cols = {"setl_id": [f"S{i:05d}" for i in range(n)]} if with_id else {}
    cols.update({"hospital_id": [f"H{i % 3}" for i in range(n)], "sex": ["1", "2", None][:1] * n,
                 "age": [20 + i % 60 for i in range(n)], "diagnoses": [diags[i % len(diags)] for i in range(n)],
                 "notes": [f"free text {i}" for i in range(n)]})
    return pa.table(cols)


def test_default_writes_the_key_and_dictionary_encoded_results(tmp_path, teaching):
    t = _table()
    pq.write_table(t, tmp_path / "in.parquet")
    counts = group_file(tmp_path / "in.parquet", tmp_path / "out.parquet", teaching, batch_size=64)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names == ["setl_id"] + RESULTS
    assert all(pa.types.is_dictionary(out.schema.field(c).type) for c in RESULTS)
    expected = group_table(t, teaching)
    assert out.column("setl_id").to_pylist() == t.column("setl_id").to_pylist()
    for c in RESULTS:
        assert out.column(c).cast(pa.string()).to_pylist() == expected.column(c).to_pylist(), c
    assert sum(counts.values()) == 300
    assert out.column("mdc").null_count == expected.column("mdc").null_count > 0


def test_keep_names_columns_and_all_passes_everything(tmp_path, teaching):
    t = _table()
    pq.write_table(t, tmp_path / "in.parquet")
    r = CliRunner().invoke(main, ["group", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "k.parquet"),
                                  "--keep", "notes,hospital_id", "--quiet"])
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "k.parquet").column_names == ["setl_id", "hospital_id", "notes"] + RESULTS
    r = CliRunner().invoke(main, ["group", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "a.parquet"),
                                  "--keep", "all", "--quiet"])
    assert r.exit_code == 0, r.output
    a = pq.read_table(tmp_path / "a.parquet")
    assert a.column_names == t.column_names + RESULTS
    assert a.select(t.column_names).equals(t)
    r = CliRunner().invoke(main, ["group", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "x.parquet"),
                                  "--keep", "nope", "--quiet"])
    assert r.exit_code == 2 and "nope" in r.output


def test_without_an_id_the_key_is_the_row_position_across_batches(tmp_path, teaching):
    t = _table(250, with_id=False)
    pacsv.write_csv(t, tmp_path / "in.csv")
    group_file(tmp_path / "in.csv", tmp_path / "out.csv", teaching, batch_size=64)
    out = pacsv.read_csv(tmp_path / "out.csv", convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in RESULTS}))
    assert out.column_names == ["row"] + RESULTS
    assert out.column("row").to_pylist() == list(range(250))
    assert out.column("drg").to_pylist() == group_table(t, teaching).column("drg").to_pylist()


def test_only_the_needed_and_kept_columns_are_read():
    names = ["setl_id", "gend", "年龄", "诊断编码", "procedures", "notes", "hospital_id", "los_days", "mdc"]
    read, write, add_row = output_plan(names, None)
    assert read == ["setl_id", "gend", "年龄", "诊断编码", "procedures", "los_days"]
    assert write == ["setl_id"] and not add_row
    read, write, _ = output_plan(names, ["hospital_id"])
    assert "hospital_id" in read and "notes" not in read and write == ["setl_id", "hospital_id"]
    assert output_plan(names, "all")[0] is None
    assert output_plan(names[1:], None)[2]                       # no id: a row key
    assert output_plan(["row", "sex", "notes"], ["row", "notes"])[1:] == (["notes"], True)


def test_reruns_are_byte_identical_in_every_mode(tmp_path, teaching):
    pq.write_table(_table(), tmp_path / "in.parquet")
    for keep, ext in ((None, "parquet"), ("all", "parquet"), (None, "csv"), (["notes"], "arrow")):
        a, b = tmp_path / f"a.{ext}", tmp_path / f"b.{ext}"
        group_file(tmp_path / "in.parquet", a, teaching, batch_size=100, keep=keep)
        group_file(tmp_path / "in.parquet", b, teaching, batch_size=100, keep=keep)
        assert a.read_bytes() == b.read_bytes(), (keep, ext)


def test_dip_file_output_is_key_plus_results_unless_kept(tmp_path):
    from drgdip.grouper.dip.api import group_dip_file
    from drgdip.weights.dip_catalog import build_catalog
    from tests.dip_example import POLICY, history
    h = history()
    cat = build_catalog(h, POLICY)
    pq.write_table(h, tmp_path / "h.parquet")
    n = group_dip_file(tmp_path / "h.parquet", tmp_path / "d.parquet", cat, batch_size=5)
    d = pq.read_table(tmp_path / "d.parquet")
    assert n == h.num_rows and d.column("id").to_pylist() == h.column("id").to_pylist()
    assert d.column_names[0] == "id" and "total_cost" not in d.column_names
    assert all(c.startswith("dip_") for c in d.column_names[1:])
    group_dip_file(tmp_path / "h.parquet", tmp_path / "all.parquet", cat, keep="all")
    assert pq.read_table(tmp_path / "all.parquet").column_names[:5] == h.column_names


def _dict_list(rows):
    flat = [c for r in rows for c in r]
    offsets = [0]
    for r in rows:
        offsets.append(offsets[-1] + len(r))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat).dictionary_encode())


def test_dictionary_code_columns_group_like_plain_ones(tmp_path, teaching):
    rows = [["J18.900", "E11.900"], ["J18.900"], [], ["I21.001", " e11.900 "], ["X99.999"], ["P07.300", "J18.900"]] * 50
    text = ["|".join(r) for r in rows]
    plain = pa.table({"sex": ["1"] * len(rows), "age": [50] * len(rows), "diagnoses": text})
    expected = group_table(plain, teaching).column("drg").to_pylist()
    assert len(set(expected)) > 2
    g = Grouper(teaching)
    as_dict = pa.array(text).dictionary_encode()
    with_nulls = pa.array(text[:-1] + [None]).dictionary_encode()
    semicolons = pa.array([t.replace("|", ";") for t in text]).dictionary_encode()
    for col, exp in ((as_dict, expected), (_dict_list(rows), expected), (semicolons, expected),
                     (with_nulls, expected[:-1] + [group_table(plain.slice(0, 1).set_column(
                         2, "diagnoses", pa.array([None], pa.string())), teaching).column("drg")[0].as_py()]),
                     (as_dict.slice(7), expected[7:])):
        t = pa.table({"sex": ["1"] * len(col), "age": [50] * len(col), "diagnoses": col})
        got = g.group_batch(t).column("drg").to_pylist()
        assert got == exp
    # a Parquet file holding list<dictionary> code columns is read row group by row group
    pq.write_table(pa.table({"id": list(range(len(rows))), "sex": ["1"] * len(rows), "age": [50] * len(rows),
                             "diagnoses": _dict_list(rows)}), tmp_path / "d.parquet", row_group_size=70)
    group_file(tmp_path / "d.parquet", tmp_path / "o.parquet", teaching, batch_size=32)
    assert pq.read_table(tmp_path / "o.parquet").column("drg").cast(pa.string()).to_pylist() == expected


@pytest.mark.parametrize("ext", ["parquet", "csv", "arrow"])
def test_a_file_without_any_grouping_column_still_gives_one_row_per_record(tmp_path, teaching, ext):
    from drgdip.arrowio import read_table, write_table
    write_table(pa.table({"notes": [f"x{i}" for i in range(100)]}), tmp_path / f"in.{ext}")
    counts = group_file(tmp_path / f"in.{ext}", tmp_path / f"out.{ext}", teaching, batch_size=30)
    out = read_table(tmp_path / f"out.{ext}")
    assert counts == {"invalid": 100}
    assert out.num_rows == 100 and [str(x) for x in out.column("row").to_pylist()] == [str(i) for i in range(100)]
    assert set(out.column("reason").cast(pa.string()).to_pylist()) == {"MISSING_SEX"}


# ---------------------------------------------------------------- folder output (issue 17)

def _parts(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_folder_output_is_the_file_output_in_part_files_in_order(tmp_path, teaching):
    t = _table(1000)
    pq.write_table(t, tmp_path / "in.parquet")
    for keep in (None, "all"):
        counts = group_file(tmp_path / "in.parquet", tmp_path / "one.parquet", teaching, batch_size=128, keep=keep)
        assert group_file(tmp_path / "in.parquet", tmp_path / "ds", teaching, batch_size=128, keep=keep) == counts
        # 1000 records in batches of 128: 8 parts, numbered in input order, 128 rows each but the last
        assert _parts(tmp_path / "ds") == [f"part-{k:05d}.parquet" for k in range(8)]
        assert [pq.ParquetFile(tmp_path / "ds" / p).metadata.num_rows for p in _parts(tmp_path / "ds")] \
            == [128] * 7 + [104]
        one, ds = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "ds")
        assert ds.num_rows == 1000 and ds.column("setl_id").to_pylist() == t.column("setl_id").to_pylist()
        assert ds.equals(one), keep
        # a rerun replaces the dataset with identical bytes, part by part
        before = {p: (tmp_path / "ds" / p).read_bytes() for p in _parts(tmp_path / "ds")}
        group_file(tmp_path / "in.parquet", tmp_path / "ds", teaching, batch_size=128, keep=keep)
        assert {p: (tmp_path / "ds" / p).read_bytes() for p in _parts(tmp_path / "ds")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]          # no temporary left


def test_a_failed_folder_output_leaves_the_previous_dataset_as_it_was(tmp_path, teaching):
    from drgdip.arrowio import transform_file
    pq.write_table(_table(600), tmp_path / "in.parquet")
    group_file(tmp_path / "in.parquet", tmp_path / "ds", teaching, batch_size=200)
    before = {p: (tmp_path / "ds" / p).read_bytes() for p in _parts(tmp_path / "ds")}
    calls = []

    def fn(batch):
        calls.append(batch.num_rows)
        if len(calls) == 3:                      # two parts written or being written
            raise RuntimeError("boom")
        return batch

    with pytest.raises(RuntimeError):
        transform_file(tmp_path / "in.parquet", tmp_path / "ds", fn, batch_size=100)
    assert {p: (tmp_path / "ds" / p).read_bytes() for p in _parts(tmp_path / "ds")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_folder_output_never_replaces_a_folder_of_other_files(tmp_path, teaching):
    pq.write_table(_table(50), tmp_path / "in.parquet")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    r = CliRunner().invoke(main, ["group", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "mine"), "--quiet"])
    assert r.exit_code == 2 and "other files" in r.output and "Traceback" not in r.output
    assert _parts(tmp_path / "mine") == ["notes.txt"]
    r = CliRunner().invoke(main, ["group", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "new.d") + "/",
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "new.d").num_rows == 50
    assert "-o grouped/" in CliRunner().invoke(main, ["group", "--help"]).output
