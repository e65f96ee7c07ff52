"""Codes as hospitals write them: case, blanks, full-width characters, old editions via the mapping."""
from __future__ import annotations

import pyarrow as pa
from conftest import need_shared

from drgdip.grouper.drg.api import group_table, load_codes, load_scheme


def _one(scheme, codes=None, **rec):
    base = {"sex": "1", "age": 40.0, "diagnoses": [], "procedures": []}
    base.update(rec)
    return group_table(pa.Table.from_pylist([base]), scheme, codes).to_pylist()[0]


def test_case_and_blanks_are_normalised():
    scheme = load_scheme(None)
    written = _one(scheme, diagnoses=[" j18.900 "])
    assert _one(scheme, diagnoses=["Ｊ１８．９００"])["drg"] == written["drg"]
    assert written["drg"] == _one(scheme, diagnoses=["J18.900"])["drg"] != "0000"


def test_old_edition_codes_map_and_unknown_codes_are_invalid():
    scheme = load_scheme(need_shared("chs-drg", "CHS_DRG_11"))
    codes = load_codes(need_shared("codesets"))
    # A01.000x002 is an older code the mapping sends to A01.003 (伤寒杆菌性脓毒症)
    assert _one(scheme, diagnoses=["A01.000x002"])["reason"] == "NO_MDC"
    mapped = _one(scheme, codes, diagnoses=["A01.000x002"])
    assert mapped["drg"] == _one(scheme, diagnoses=["A01.003"])["drg"] != "0000"
    bad = _one(scheme, codes, diagnoses=["XYZ.123"])
    assert (bad["status"], bad["reason"]) == ("invalid", "UNKNOWN_DIAGNOSIS")
    warn = _one(scheme, codes, diagnoses=["A01.003", "NOT.A.CODE"])
    assert (warn["status"], warn["reason"]) == ("grouped", "UNKNOWN_SECONDARY_IGNORED")
