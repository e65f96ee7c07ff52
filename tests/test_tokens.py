"""The compiled token splitter and string table (grouper.tokens) against a plain-Python reading."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from drgdip.arrowio import read_table
from drgdip.grouper.tokens import UNSEEN, StringTable, string_buffers, tokenize
from tests.conftest import need_shared


def _reference(values, split, known):
    """Each row's tokens (split on '|' with ``split``, trimmed of spaces and tabs, empty ones
    dropped) and their ids in ``known`` (UNSEEN when absent)."""
    rows = []
    for v in values:
        parts = [] if v is None else (v.split("|") if split else [v])
        toks = [p.strip(" \t") for p in parts]
        rows.append([known.get(t.encode("utf-8"), UNSEEN) for t in toks if t])
    return rows


def _run(values, split, table):
    arr = pa.array(values, type=pa.string())
    offsets, data, valid = string_buffers(arr)
    row_ptr, ids, starts, ends = tokenize(np.arange(len(arr) + 1, dtype=np.int64), offsets, data, valid, split,
                                          *table.arrays())
    rows = [ids[row_ptr[r]:row_ptr[r + 1]].tolist() for r in range(len(arr))]
    spans = [bytes(data[starts[k]:ends[k]]) for k in np.flatnonzero(ids == UNSEEN)]
    return rows, spans


# lengths around the 8- and 16-byte words a key is packed into, keys sharing their first 16
# bytes, interior blanks, a NUL byte, non-ASCII text
KEYS = ["A", "J18.900", "J18.9000", "I21.001x0", "ABCDEFGHIJKLMNO", "ABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOPQ",
        "ABCDEFGHIJKLMNOPR", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "A B", "A\x00", "肺炎", "Z99.9\t9"]


@pytest.mark.parametrize("split", [True, False])
def test_tokens_match_the_plain_python_split_and_lookup(split):
    table = StringTable()
    known = {k.encode("utf-8"): i * 7 - 3 for i, k in enumerate(KEYS)}       # negative ids too
    table.add(known)
    values = ["J18.900|I21.001x0", " J18.900 | \tA\t|", "||", "", None, "   ", "ABCDEFGHIJKLMNOPQ|ABCDEFGHIJKLMNOPR",
              "ABCDEFGHIJKLMNOPS|ABCDEFGHIJKLMNOP|ABCDEFGHIJKLMNO", "A B|A  B|A\x00|A", "肺炎|肺 炎",
              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789|ABCDEFGHIJKLMNOPQRSTUVWXYZ012345678X", "J18.9000 ", "Z99.9\t9",
              "J18.900\t\t", "new.code|J18.900|another one "]
    rows, spans = _run(values, split, table)
    assert rows == _reference(values, split, known)
    tokens = [p.strip(" \t") for v in values if v is not None for p in (v.split("|") if split else [v])]
    assert spans == [t.encode("utf-8") for t in tokens if t and t.encode("utf-8") not in known]
    assert (b"ABCDEFGHIJKLMNOPS" in spans) == split and (b"A  B" in spans) == split


def test_a_table_grown_batch_by_batch_finds_every_key():
    table, known = StringTable(), {}
    rng = np.random.default_rng(1)
    for step in range(5):
        new = {f"K{step}.{i:04d}{'x' * int(rng.integers(0, 14))}".encode(): int(rng.integers(-3, 5000))
               for i in range(300)}
        table.add(new)
        known.update(new)
    values = ["|".join(k.decode() for k in list(known)[i::97]) for i in range(97)] + ["nope|" + list(known)[0].decode()]
    rows, spans = _run(values, True, table)
    assert rows == _reference(values, True, known)
    assert spans == [b"nope"]


def test_conformance_code_lists_split_and_look_up_like_python():
    for cases in ("chs-drg-1.1-cases.csv", "chs-drg-1.1-beijing-cases.csv"):
        t = read_table(need_shared("conformance", cases))
        for col in ("diagnoses", "procedures"):
            values = t.column(col).combine_chunks().cast(pa.string()).to_pylist()
            tokens = {tok.strip(" \t") for v in values if v for tok in v.split("|")} - {""}
            # half the distinct codes known: the rest must come back UNSEEN with their bytes
            known = {k.encode(): i for i, k in enumerate(sorted(tokens)) if i % 2 == 0}
            table = StringTable()
            table.add(known)
            rows, spans = _run(values, True, table)
            assert rows == _reference(values, True, known), (cases, col)
            assert all(s not in known for s in spans) and len(spans) == sum(r.count(UNSEEN) for r in rows)
