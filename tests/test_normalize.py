"""Code normalisation: hospital spellings → official spelling, scalar and vectorised alike."""
from __future__ import annotations

import pyarrow as pa
import pytest

from drgdip.codesets.normalize import (
    normalize_code,
    normalize_codes,
    split_pair,
    split_pairs,
)
from tests.conftest import need_shared

CASES = [
    (" i21.000X005 ", "I21.000x005"),          # blanks, case, extension marker
    ("Ｉ２１．０００ｘ００５", "I21.000x005"),     # full-width
    ("I21。000×005", "I21.000x005"),            # look-alikes NFKC leaves alone
    ("a01.002 + g01 *", "A01.002+G01*"),        # dagger/asterisk pair with blanks
    ("A01.002†G01＊", "A01.002+G01*"),          # dagger sign, full-width asterisk
    ("33.6X00", "33.6x00"),                     # procedure extension
    ("00.5500X008", "00.5500x008"),
    ("x00.X00", "X00.x00"),                     # chapter X keeps its capital
    ("a01.000x003+x", "A01.000x003+X"),         # X right after + keeps its capital
    ("17.912a0", "17.912A0"),                   # procedure letter suffixes are upper case
    ("\u3000K80.1\u3000", "K80.1"),             # ideographic spaces
    ("I21.0XX1", "I21.0xx1"),                   # consecutive inner X
    ("", None),
    ("   ", None),
    (None, None),
]


@pytest.mark.parametrize("raw,expected", CASES)
def test_scalar(raw, expected):
    assert normalize_code(raw) == expected


def test_vector_matches_scalar_on_every_case():
    raw = [c[0] for c in CASES]
    assert normalize_codes(pa.array(raw, type=pa.string())).to_pylist() == [c[1] for c in CASES]


def test_list_array_keeps_shape_and_null_lists():
    arr = pa.array([["i21.000", None, " k80.1 "], None, [], ["33.6X00"]], type=pa.list_(pa.string()))
    out = normalize_codes(arr.slice(1))  # a slice: offsets must be rebased correctly
    assert out.to_pylist() == [None, [], ["33.6x00"]]
    assert normalize_codes(arr).to_pylist()[0] == ["I21.000", None, "K80.1"]


def test_chunked_and_dictionary_inputs():
    ch = pa.chunked_array([pa.array(["i21.0"]), pa.array([None, "ｋ80.1"])])
    assert normalize_codes(ch).to_pylist() == ["I21.0", None, "K80.1"]
    d = pa.array(["i21.0", "i21.0", None]).dictionary_encode()
    assert normalize_codes(d).to_pylist() == ["I21.0", "I21.0", None]


def test_split_pair_scalar_and_vector():
    assert split_pair("A01.002+G01*") == ("A01.002", "G01*")
    assert split_pair("I21.000") == ("I21.000", None)
    head, tail = split_pairs(pa.array(["A01.002+G01*", "I21.000", None]))
    assert head.to_pylist() == ["A01.002", "I21.000", None]
    assert tail.to_pylist() == ["G01*", None, None]


@pytest.mark.parametrize("name", ["ZD_INFO.dat", "SS_INFO.dat"])
def test_official_codes_are_fixed_points(name):
    path = need_shared("codesets", name)
    codes = [line.split(" ", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert normalize_codes(pa.array(codes)).to_pylist() == codes
    # and a messy spelling of each comes back to the official one
    messy = [" " + c.lower() + "\u3000" for c in codes]
    assert normalize_codes(pa.array(messy)).to_pylist() == codes
