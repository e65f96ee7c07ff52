"""The 15 coding standards: each layout's valid examples parse, invalid ones get the right problem."""
from __future__ import annotations

import pyarrow as pa
import pytest

from drgdip.codesets.standards import (
    identify,
    parse_code,
    parse_codes,
    standards,
    validate_codes,
)
from tests.conftest import need_shared


def test_fifteen_standards_numbered():
    assert sorted({s.number for s in standards().values()}) == list(range(1, 16))


@pytest.mark.parametrize("sid,layout,example",
                         [(s.id, l.name, e) for s in standards().values() for l in s.layouts for e in l.examples])
def test_examples_are_valid(sid, layout, example):
    p = parse_code(example, sid)
    assert p.valid and p.layout.name == layout


# (standard, code, expected problem) — worked by hand from the layouts in standards.toml
INVALID = [
    ("diagnosis", "I21.0", "CODE_BAD_LAYOUT"),            # 4-character WHO code, not the 6-digit edition
    ("diagnosis", "I21.000x05", "CODE_BAD_LAYOUT"),       # extension needs 3 digits
    ("diagnosis", "A01.002+G01", "CODE_BAD_LAYOUT"),      # asterisk half without its *
    ("diagnosis", "I21.000，", "CODE_BAD_CHARS"),          # full-width comma folds to ',': not allowed
    ("procedure", "36.06", "CODE_BAD_LAYOUT"),
    ("procedure", "36.0601x08", "CODE_BAD_LAYOUT"),
    ("fixed_hospital", "H1101050001", "CODE_BAD_LENGTH"),
    ("fixed_hospital", "P11010500001", "CODE_BAD_PREFIX"),
    ("fixed_hospital", "H99010500001", "CODE_BAD_REGION"),   # 99 is no province
    ("fixed_hospital", "H1101050000A", "CODE_BAD_LAYOUT"),
    ("fixed_pharmacy", "P1101050001", "CODE_BAD_LENGTH"),
    ("doctor", "D11010500012", "CODE_BAD_LENGTH"),
    ("doctor", "N110105000123", "CODE_BAD_PREFIX"),
    ("nurse", "N000105000001", "CODE_BAD_REGION"),
    ("pharmacist", "HX110105000001", "CODE_BAD_PREFIX"),
    ("consumable", "C010101001130380755", "CODE_BAD_LENGTH"),
    ("consumable", "C01010100113038O7555", "CODE_BAD_LAYOUT"),   # letter O in a digit segment
    ("drug", "XA01ABD075A00201010048", "CODE_BAD_LENGTH"),
    ("drug", "Q000100121", "CODE_BAD_PREFIX"),
    ("drug", "X1A01BD075A002010100483", "CODE_BAD_LAYOUT"),
    ("drug", "xa01abd075a002010100483", None),            # lower case is folded, inner X/x stays upper
    ("drug", "XA01ABX075A002010100483", None),
    ("service_item", "00110100001000", "CODE_BAD_LENGTH"),
    ("chronic_disease", "M0390", "CODE_BAD_LENGTH"),
    ("insurance_unit", "单位01", "CODE_BAD_CHARS"),
    ("day_surgery", "A" * 31, "CODE_TOO_LONG"),
]


@pytest.mark.parametrize("sid,code,problem", INVALID)
def test_invalid_examples(sid, code, problem):
    p = parse_code(code, sid)
    assert p.problem == problem and p.valid == (problem is None)


def test_vectorised_matches_scalar():
    codes = [c for _, c, _ in INVALID if _ == "fixed_hospital"] + ["H11010500001", None, " h11010500001 "]
    vec = validate_codes(pa.array(codes), "fixed_hospital").to_pylist()
    assert vec == [parse_code(c, "fixed_hospital").problem for c in codes]
    assert vec[-3:] == [None, None, None]


def test_parse_codes_segments():
    t = parse_codes(pa.array(["XA01ABD075A002010100483", "T000100121", "Z"]), "drug")
    assert t["layout"].to_pylist() == ["western-drug", "decoction-pieces", None]
    assert t["manufacturer"].to_pylist() == ["00483", None, None]
    assert t["body"].to_pylist() == [None, "000100121", None]
    d = parse_codes(pa.array(["A01.000x005+J17.0*", "I21.000"]), "diagnosis")
    assert d["asterisk"].to_pylist() == ["J17.0*", None]
    assert d["local"].to_pylist() == ["005", None]


def test_identify_prefers_published_layouts():
    assert [p.standard.id for p in identify("H11010500001")] == ["fixed_hospital"]
    assert [p.standard.id for p in identify("C0101010011303807555")] == ["consumable"]
    assert [p.standard.id for p in identify("I21.000x005")] == ["diagnosis"]
    # a code that fits no published layout still says which catch-all standards accept it
    assert {p.standard.id for p in identify("ABC123")} == {"disease_settlement", "day_surgery",
                                                           "insurance_unit", "insurance_staff"}


@pytest.mark.parametrize("name,sid", [("ZD_INFO.dat", "diagnosis"), ("SS_INFO.dat", "procedure")])
def test_every_code_of_the_edition_fits_its_layout(name, sid):
    path = need_shared("codesets", name)
    codes = [l.split(" ", 1)[0] for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    assert validate_codes(pa.array(codes), sid).null_count == len(codes)
