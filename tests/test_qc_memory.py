"""Issue 17, ``drgdip check`` in bounded memory: the ids a file repeats are found first by a read of
its id column alone (hash partitions, collisions resolved exactly) instead of keeping every id met,
the summary counts are merged batch by batch; findings and summaries equal those of the path
before (every id met kept in a set), and a file without ids numbers its records across the file."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from drgdip import arrowio
from drgdip.codesets import qc
from drgdip.codesets.qc import FINDING_SCHEMA, check_file, run_qc
from tests.test_qc import FUNDS


def _records() -> pa.Table:
    """30 records: ids repeated within and across batches of 4, a null, an empty and a padded id
    (" a " is "a"), some records with a bad age (MISSING_AGE fires on them too)."""
    ids = ["a", "b", "c", "d", "e", None, "a", "f", "", "g", "h", "b", " a ", "i", "j", "k",
           "l", "m", "n", "o", "p", "q", "r", "s", "t", "c", "u", None, "v", "t"]
    n = len(ids)
    age = [None if i % 7 == 3 else "30" for i in range(n)]
    hospital = [None if i % 5 == 4 else f"H{i % 3}" for i in range(n)]
    return pa.table({"id": pa.array(ids, pa.string()), "sex": ["1"] * n, "age": age, "hospital_id": hospital})


def _before(t: pa.Table, batch_size: int, only) -> pa.Table:
    """The findings of the path before: each batch checked with every id met kept in a set."""
    seen, parts = set(), []
    for b in t.to_batches(max_chunksize=batch_size):
        parts.append(run_qc(b, only=only, seen_ids=seen, fund_labels=FUNDS))
    return pa.concat_tables(parts).cast(FINDING_SCHEMA)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_findings_equal_the_set_of_every_id_met(tmp_path, fmt):
    t = _records()
    src = tmp_path / f"in.{fmt}"
    if fmt == "parquet":
        pq.write_table(t, src, row_group_size=8)
    else:
        import pyarrow.csv as pacsv
        pacsv.write_csv(t, src)
    only = {"QC_DUPLICATE_ID", "MISSING_AGE"}
    out = tmp_path / "f.parquet"
    s = check_file(src, out, only=only, batch_size=4, fund_labels=FUNDS)
    expected = _before(arrowio.read_table(src), 4, only)
    got = pq.read_table(out)
    assert got.equals(expected)
    dup = got.filter(pc.equal(got["rule"], "QC_DUPLICATE_ID"))["id"].to_pylist()
    # a (rows 6 and 12, " a " trimmed), b (11), c (25), t (29); the null and empty ids never repeat
    assert dup == ["a", "b", "a", "c", "t"]
    assert s.records == 30 and s.findings == got.num_rows


def test_a_hash_collision_never_makes_a_duplicate(tmp_path, monkeypatch):
    """Every id hashed alike: the second read of the id column counts the real ids."""
    t = _records()
    src = tmp_path / "in.parquet"
    pq.write_table(t, src)
    honest = check_file(src, tmp_path / "a.parquet", only={"QC_DUPLICATE_ID"}, batch_size=4)
    import numpy as np
    monkeypatch.setattr(arrowio, "value_hashes", lambda v: np.zeros(len(v), np.uint64))
    collided = check_file(src, tmp_path / "b.parquet", only={"QC_DUPLICATE_ID"}, batch_size=4)
    assert collided.findings == honest.findings == 5
    assert pq.read_table(tmp_path / "b.parquet").equals(pq.read_table(tmp_path / "a.parquet"))
    rep, rows = arrowio.repeated_values(lambda: iter([pa.array(["x", "y", None]), pa.array(["y", "z", "x"])]))
    assert sorted(rep.to_pylist()) == ["x", "y"] and rows == 6


def test_only_the_repeated_ids_are_kept(tmp_path):
    """The state kept across batches holds the file's 7 repeated ids, not its 1,000."""
    ids = [f"r{i % 993}" for i in range(1000)]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ids}), src)
    state = qc._file_repeats(src, ["id"], qc.load_rules(), None, 64, None)
    assert sorted(state.repeated.to_pylist()) == sorted(f"r{i}" for i in range(7))
    assert qc._file_repeats(src, ["id"], qc.load_rules(), {"MISSING_AGE"}, 64, None) is None
    s = check_file(src, only={"QC_DUPLICATE_ID"}, batch_size=64)
    assert s.findings == 7


def test_summary_merged_batch_by_batch_counts_every_batch(tmp_path):
    t = _records()
    src = tmp_path / "in.parquet"
    pq.write_table(t, src)
    only = {"QC_DUPLICATE_ID", "MISSING_AGE"}
    s = check_file(src, only=only, batch_size=4)
    whole = check_file(src, only=only, batch_size=1000)      # one batch: nothing to merge
    assert s.by_hospital.equals(whole.by_hospital) and s.by_rule.equals(whole.by_rule)
    rows = {(r["hospital_id"], r["rule"]): (r["findings"], r["records"]) for r in s.by_hospital.to_pylist()}
    # MISSING_AGE on rows 3, 10, 17, 24: hospitals H0, H1, H2, (none) (row 24: 24 % 5 == 4)
    for h in ("H0", "H1", "H2", "(none)"):
        assert rows[(h, "MISSING_AGE")] == (1, 1)
    # duplicates on rows 6 (H0), 11 (H2), 12 (H0), 25 (H1), 29 ((none))
    assert rows[("H0", "QC_DUPLICATE_ID")] == (2, 2) and rows[("H2", "QC_DUPLICATE_ID")] == (1, 1)
    assert rows[("H1", "QC_DUPLICATE_ID")] == (1, 1) and rows[("(none)", "QC_DUPLICATE_ID")] == (1, 1)
    assert [(r["rule"], r["findings"], r["records"]) for r in s.by_rule.to_pylist()] == \
        [(r.rule, n, n) for r in qc.load_rules() for n in [{"MISSING_AGE": 4, "QC_DUPLICATE_ID": 5}.get(r.rule)] if n]


def test_records_without_ids_numbered_across_the_file(tmp_path):
    t = _records().drop_columns(["id"])
    src = tmp_path / "in.parquet"
    pq.write_table(t, src, row_group_size=8)
    out = tmp_path / "f.parquet"
    check_file(src, out, only={"MISSING_AGE"}, batch_size=4)
    assert pq.read_table(out)["id"].to_pylist() == ["#3", "#10", "#17", "#24"]
    # no id column: the duplicate-id rule does not run (and reads nothing first)
    assert check_file(src, only={"QC_DUPLICATE_ID"}, batch_size=4).findings == 0
