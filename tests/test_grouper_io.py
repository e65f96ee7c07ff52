"""Records in, records out: passthrough, bad input, files, the compiled scheme file."""
from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drgdip.grouper.drg.api import group_file, group_table, load_scheme
from drgdip.grouper.drg.scheme import Scheme


@pytest.fixture(scope="module")
def teaching():
    return load_scheme(None)


def test_columns_pass_through_in_order(teaching):
    t = pa.table({"zz": ["a", "b"], "sex": ["1", "2"], "age": [50, 60], "diagnoses": ["I21.001|E11.900", ""]})
    out = group_table(t, teaching)
    assert out.column_names == ["zz", "sex", "age", "diagnoses", "mdc", "adrg", "drg", "status", "reason"]
    assert out.column("zz").to_pylist() == ["a", "b"]
    assert out.column("reason").to_pylist()[1] == "MISSING_DIAGNOSIS"


def test_bad_records_get_a_reason_never_dropped(teaching):
    rows = [
        {"sex": None, "age": "50", "diagnoses": "I21.001"},
        {"sex": "3", "age": "50", "diagnoses": "I21.001"},
        {"sex": "1", "age": None, "diagnoses": "I21.001"},
        {"sex": "1", "age": "fifty", "diagnoses": "I21.001"},
        {"sex": "1", "age": "0", "diagnoses": "P07.300"},
    ]
    out = group_table(pa.Table.from_pylist(rows), teaching)
    assert out.num_rows == 5
    assert out.column("reason").to_pylist() == ["MISSING_SEX", "INVALID_SEX", "MISSING_AGE", "BAD_VALUE", "MISSING_AGE_DAYS"]
    assert set(out.column("status").to_pylist()) == {"invalid"}


def test_scheme_file_roundtrip_is_byte_identical(tmp_path, teaching):
    a, b = tmp_path / "a.drgscheme", tmp_path / "b.drgscheme"
    teaching.save(a)
    Scheme.load(a).save(b)
    assert a.read_bytes() == b.read_bytes()
    assert Scheme.load(a).drg_codes == teaching.drg_codes


def test_group_file_streams_and_is_deterministic(tmp_path, teaching):
    src = tmp_path / "in.csv"
    src.write_text("id,sex,age,diagnoses,procedures\n" + "".join(f"{i},1,{20 + i % 50},I21.001|E11.900,\n" for i in range(500)), encoding="utf-8")
    out1, out2 = tmp_path / "o1.parquet", tmp_path / "o2.parquet"
    c1 = group_file(src, out1, teaching, batch_size=64)
    group_file(src, out2, teaching, batch_size=64)
    assert sum(c1.values()) == 500
    assert out1.read_bytes() == out2.read_bytes()
    assert pq.read_table(out1).column("id").to_pylist()[:3] == ["0", "1", "2"]


def test_cli_unusable_file_is_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    r = subprocess.run([sys.executable, "-m", "drgdip", "group", str(empty), "-o", str(tmp_path / "o.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "empty" in r.stderr
    assert "Traceback" not in r.stderr


def test_code_lists_in_any_form_give_the_same_groups(teaching):
    forms = [
        pa.table({"sex": ["1"], "age": [50], "diagnoses": ["J18.900|E11.900"], "procedures": [""]}),
        pa.table({"sex": ["1"], "age": [50], "diagnoses": ["J18.900, E11.900"], "procedures": [None]}),
        pa.table({"sex": ["1"], "age": [50], "diagnoses": [["J18.900", "E11.900"]], "procedures": [[]]}),
        pa.table({"gend": ["1"], "年龄": [50], "诊断编码": ["J18.900；E11.900"]}),
    ]
    drgs = {group_table(t, teaching).column("drg")[0].as_py() for t in forms}
    assert len(drgs) == 1 and drgs != {"0000"}


def test_a_failing_batch_leaves_the_previous_output_intact(tmp_path, teaching):
    from drgdip.arrowio import transform_file
    src = tmp_path / "in.csv"
    src.write_text("id,sex,age,diagnoses\n" + "".join(f"{i},1,50,J18.900\n" for i in range(300)), encoding="utf-8")
    dst = tmp_path / "out.csv"
    dst.write_text("previous\n", encoding="utf-8")
    calls = []

    def fn(batch):
        calls.append(batch.num_rows)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return batch

    with pytest.raises(RuntimeError):
        transform_file(src, dst, fn, batch_size=100)
    assert dst.read_text(encoding="utf-8") == "previous\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv")]


def test_group_with_check_writes_findings_beside_the_groups(tmp_path):
    from click.testing import CliRunner

    from drgdip.cli import main
    src = tmp_path / "in.csv"
    src.write_text("id,sex,age,los_days,diagnoses,procedures\n1,1,50,5,J18.900|J18.900,\n2,1,50,0,J18.900,\n",
                   encoding="utf-8")
    r = CliRunner().invoke(main, ["group", str(src), "-o", str(tmp_path / "g.csv"), "--check", str(tmp_path / "f.csv"), "--quiet"])
    assert r.exit_code == 0, r.output
    import pyarrow.csv as pacsv
    f = pacsv.read_csv(tmp_path / "f.csv").to_pylist()
    rules = {(x["id"], x["rule"]) for x in f}
    assert any(i == 1 and "DUP" in rule for i, rule in rules)       # duplicate diagnosis on record 1
    assert any(i == 2 and "LOS" in rule for i, rule in rules)       # length of stay 0 on record 2
    assert "findings" in r.output


@pytest.mark.parametrize("column", [
    pa.array(["J18.900|E11.900", "J18.900"]).dictionary_encode(),
    pa.array(["J18.900|E11.900", "J18.900"], pa.large_string()),
    pa.array([["J18.900", "E11.900"], ["J18.900"]], pa.large_list(pa.large_string())),
    pa.array(["X99.999", "J18.900|E11.900", "J18.900"]).slice(1),
], ids=["dictionary", "large_string", "large_list", "sliced"])
def test_every_arrow_layout_of_a_code_column_groups_alike(teaching, column):
    expected = group_table(pa.table({"sex": ["1", "1"], "age": [50, 60],
                                     "diagnoses": [["J18.900", "E11.900"], ["J18.900"]]}), teaching)
    got = group_table(pa.table({"sex": ["1", "1"], "age": [50, 60], "diagnoses": column}), teaching)
    assert got.column("drg").to_pylist() == expected.column("drg").to_pylist()
    assert expected.column("drg")[0].as_py() != expected.column("drg")[1].as_py()   # the CC counts
