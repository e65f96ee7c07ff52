"""Code tables and edition mappings: parsing, lookups, names, unmapped reporting."""
from __future__ import annotations

import pyarrow as pa
import pytest

from drgdip.codesets.code_tables import (
    TableError,
    load_code_table,
    load_mapping,
    load_mapping_table,
)
from tests.conftest import need_shared


@pytest.fixture
def small_table(tmp_path):
    p = tmp_path / "zd.dat"
    p.write_text("\ufeffI21.000 急性前壁心肌梗死\nI21.000x005 急性前壁尖部心肌梗死\n\n"
                 "# comment\nA01.002+G01* 伤寒性脑膜炎\ni21.000 重复\nK80.1\n", encoding="utf-8")
    return p


def test_parse_small_table(small_table):
    t = load_code_table(small_table)
    assert t.codes == ["I21.000", "I21.000x005", "A01.002+G01*", "K80.1"]
    assert t.index["A01.002+G01*"] == 2
    assert t.names["I21.000"] == "急性前壁心肌梗死"   # first line wins
    assert t.names["K80.1"] == ""                    # a code without a name is kept
    assert t.duplicates == ["I21.000"]
    assert "i21.000X005" in t


def test_lookup_names_contains(small_table):
    t = load_code_table(small_table)
    arr = pa.array([["i21.000x005", "Z99.999", None], None, [" a01.002+g01* "]])
    assert t.lookup(arr).to_pylist() == [[1, -1, None], None, [2]]
    assert t.names_of(arr).to_pylist() == [["急性前壁尖部心肌梗死", None, None], None, ["伤寒性脑膜炎"]]
    assert t.contains(pa.array(["K80.1", "K80.2", None])).to_pylist() == [True, False, None]


def test_cache_is_invalidated_when_the_file_changes(small_table):
    a = load_code_table(small_table)
    assert load_code_table(small_table) is a
    small_table.write_text("Z00.000 x\n", encoding="utf-8")
    assert load_code_table(small_table).codes == ["Z00.000"]


def test_bad_tables(tmp_path):
    with pytest.raises(TableError, match="no such"):
        load_code_table(tmp_path / "missing.dat")
    empty = tmp_path / "empty.dat"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(TableError, match="no codes"):
        load_code_table(empty)


def test_mapping_reports_conflicts_rejects_and_unmapped(tmp_path):
    p = tmp_path / "map.dat"
    p.write_text("A01.000x002 A01.003\nA01.000x002 A01.004\nlonely\nB00.1 B00.100\n", encoding="utf-8")
    m = load_mapping_table(p)
    assert m.pairs == {"A01.000x002": "A01.003", "B00.1": "B00.100"}
    assert m.conflicts == [("A01.000x002", "A01.003", "A01.004")]
    assert m.rejected == [(3, "lonely")]
    mapped, unmapped = m.map(pa.array(["a01.000X002", "Q99.9", None]))
    assert mapped.to_pylist() == ["A01.003", "Q99.9", None]   # the unmapped code is kept
    assert unmapped.to_pylist() == [False, True, False]
    ml, ul = m.map(pa.array([["B00.1", "zz"], None]))
    assert ml.to_pylist() == [["B00.100", "ZZ"], None]
    assert ul.to_pylist() == [[False, True], None]


def test_csv_tables(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("code,name\nK80.100,胆囊结石伴有其他胆囊炎\n", encoding="utf-8")
    assert load_code_table(p).names == {"K80.100": "胆囊结石伴有其他胆囊炎"}
    q = tmp_path / "m.csv"
    q.write_text("source,target\nK80.1,K80.100\n", encoding="utf-8")
    assert load_mapping(q) == {"K80.1": "K80.100"}


def test_shared_tables():
    zd = load_code_table(need_shared("codesets", "ZD_INFO.dat"))
    ss = load_code_table(need_shared("codesets", "SS_INFO.dat"))
    assert len(zd) == 33304 and not zd.duplicates and not zd.rejected
    assert len(ss) == 13686 and not ss.rejected
    assert zd.names["I21.000x005"] == "急性前壁尖部心肌梗死"
    assert ss.codes[0] == "00.0100"
    zmap = load_mapping_table(need_shared("codesets", "ZD_MAP.dat"))
    assert zmap.pairs["A01.000x002"] == "A01.003"
    assert not zmap.conflicts
    # every mapping target is a code of the insurance edition
    targets = pa.array(sorted(set(zmap.pairs.values())))
    assert zd.lookup(targets).to_pylist().count(-1) == 0
