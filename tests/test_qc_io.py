"""Issue 17, check read path: each distinct code or date read once per batch, only the columns the
rules read are read, duplicate ids found without re-reading every id met; the findings equal those
of reading every column (the path before), for every rule alone and all together, bad records included."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from drgdip.codesets import qc
from drgdip.codesets.qc import (
    FINDING_SCHEMA,
    by_distinct,
    check_file,
    in_ranges,
    load_rules,
    read_columns,
    run_qc,
)
from tests.test_qc import BASE, CASES, FUNDS, code_tables, table  # noqa: F401  (code_tables: a fixture)


def _records(copies: int = 40) -> pa.Table:
    """Every rule's firing and quiet record, repeated, ids repeating across batches, plus a column
    no rule reads."""
    rows = []
    for _, fires, quiet in CASES:
        rows += [fires, quiet]
    keys = {k: None for r in rows for k in r if k not in BASE}
    t = table(*(({**keys, **r} for r in rows * copies)))
    n = t.num_rows
    ids = [f"r{i % (n - 7)}" for i in range(n)]          # the last 7 repeat the first ones
    return t.set_column(t.schema.get_field_index("id"), "id", pa.array(ids)) \
            .append_column("notes", pa.array(["free text"] * n))


def test_by_distinct_equals_the_function_on_every_value():
    codes = pa.array(["O80.000", None, "A01.002+G01*", "O80.000", "", "N40.x00", None, "G01*"] * 50)
    ranges = qc.code_lists()["female_diagnosis"]
    assert by_distinct(codes, lambda c: in_ranges(c, ranges)).equals(in_ranges(codes, ranges))
    split = qc.split_pairs
    for a, b in zip(by_distinct(codes, split), split(codes)):
        assert a.equals(b)
    assert by_distinct(codes.dictionary_encode(), lambda c: pc.is_null(c)).equals(pc.is_null(codes))
    dates = pa.array(["2024-02-30", "2024/01/05", None, "20240105", "2024-01-05 10:00"] * 40)
    assert by_distinct(dates, qc._read_dates).equals(qc._read_dates(dates))
    assert by_distinct(pa.array([], pa.string()), pc.is_null).equals(pa.array([], pa.bool_()))


def _reference(t: pa.Table, rules, tables, batch_size) -> pa.Table:
    """The findings of every batch read with all its columns."""
    seen, parts = set(), []
    for b in t.to_batches(max_chunksize=batch_size):
        parts.append(run_qc(b, rules, tables, fund_labels=FUNDS, seen_ids=seen))
    return pa.concat_tables(parts).cast(FINDING_SCHEMA)


@pytest.mark.parametrize("rule", [r.rule for r in load_rules()])
def test_each_rule_reading_its_columns_equals_reading_all(tmp_path, code_tables, rule):  # noqa: F811
    t = _records(4)
    src = tmp_path / "in.parquet"
    pq.write_table(t, src, row_group_size=100)
    rules = [r for r in load_rules() if r.rule == rule]
    out = tmp_path / "f.parquet"
    s = check_file(src, out, rules=rules, code_tables=code_tables, fund_labels=FUNDS, batch_size=64)
    expected = _reference(t, rules, code_tables, 64)
    assert pq.read_table(out).equals(expected)
    assert s.findings == expected.num_rows > 0


def test_all_rules_reading_their_columns_equal_reading_all(tmp_path, code_tables):  # noqa: F811
    t = _records()
    src = tmp_path / "in.parquet"
    pq.write_table(t, src, row_group_size=700)
    out = tmp_path / "f.parquet"
    s = check_file(src, out, code_tables=code_tables, fund_labels=FUNDS, batch_size=256)
    expected = _reference(t, None, code_tables, 256)
    got = pq.read_table(out)
    assert got.equals(expected)
    assert set(got["rule"].to_pylist()) == {r.rule for r in load_rules()}
    assert s.records == t.num_rows and s.findings == got.num_rows
    dup = got.filter(pc.equal(got["rule"], "QC_DUPLICATE_ID"))["id"].to_pylist()
    assert dup == [f"r{i}" for i in range(7)]          # met in an earlier batch
    assert "notes" not in read_columns(t.column_names)


def test_kinds_read_only_the_columns_read_columns_names(monkeypatch, code_tables):  # noqa: F811
    """Every column a rule's check reads is one read_columns reads for that rule alone."""
    t = _records(1)
    read = []
    raw = qc._View.raw

    def spy(self, name):
        read.append(name)
        return raw(self, name)
    monkeypatch.setattr(qc._View, "raw", spy)
    for r in load_rules():
        read.clear()
        qc._findings(t, [r], code_tables, "en", None, None, fund_labels=FUNDS, seen_ids=set())
        cols = qc.canonical_columns(t.schema)
        used = {cols.get(n, n) for n in read if n in cols}
        assert used <= set(read_columns(t.column_names, [r])), r.rule


def test_ids_met_before_checked_in_the_batch_size():
    seen = set()
    first = run_qc(table({"id": "a"}, {"id": "b"}), only={"QC_DUPLICATE_ID"}, seen_ids=seen)
    assert first.num_rows == 0 and seen == {"a", "b"}
    again = run_qc(table({"id": "c"}, {"id": "a"}, {"id": "c"}), only={"QC_DUPLICATE_ID"}, seen_ids=seen)
    assert again["id"].to_pylist() == ["a", "c"]
    assert np.array_equal(sorted(seen), ["a", "b", "c"])


def test_code_lists_normalised_once_per_distinct_code_equal_value_by_value():
    from drgdip.codesets.normalize import normalize_codes
    t = pa.table({"diagnoses": pa.array([[" k80.100", None, "Ｋ８０．１００"], None, [], ["i21.000x005", "k80.100"]] * 30,
                                        pa.list_(pa.string()))})
    for part in (t, t.slice(3, 50)):
        v = qc._View(part, None)
        expected = normalize_codes(part["diagnoses"].combine_chunks())
        assert v.codes("diagnoses").equals(expected)
