"""Every rule of the four published 1.x tables read as published: `scheme audit` (issue 13 §1).

A rule the table states must be read from the table (literally, or through the list a
cross-reference names), never defaulted; where a transcription lacks what the scheme states,
an erratum (grouper/drg/rules/errata.toml) supplies it and the audit says so.
"""
from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import need_shared

from drgdip.grouper.drg.api import group_table
from drgdip.grouper.drg.compile import audit_scheme, audit_text, compile_scheme
from drgdip.grouper.drg.scheme_text import read_scheme_text

VERSIONS = ["CHS_DRG_10", "CHS_DRG_10P", "CHS_DRG_11", "CHS_DRG_11_BJ"]
#: ADRG entry rules not read from the ADRG's own lines, per version, with how
NOT_OWN_LINES = {
    "CHS_DRG_10": {c: "erratum" for c in ("SB1", "TB1", "VC1", "WJ1", "XJ1", "ZZ1")},
    "CHS_DRG_10P": {"VC1": "cross-reference"},
    "CHS_DRG_11": {},
    "CHS_DRG_11_BJ": {},
}


@pytest.fixture(scope="module", params=VERSIONS)
def audited(request):
    folder = need_shared("chs-drg", request.param)
    return request.param, folder, audit_scheme(folder)


def test_every_line_is_read(audited):
    version, _, report = audited
    assert [str(p) for p in report["problems"]] == []


def test_no_entry_rule_is_defaulted_and_every_adrg_has_one(audited):
    version, folder, report = audited
    st = read_scheme_text(folder)
    entry = {r["code"]: r["how"] for r in report["rows"] if r["level"] == "ADRG" and r["part"] == "entry"}
    assert set(entry) == {a.code for a in st.adrgs}
    assert [c for c, how in entry.items() if how == "defaulted"] == []
    assert {c: how for c, how in entry.items() if how != "literal"} == NOT_OWN_LINES[version]
    # a stated rule (lines under the ADRG or after its name) is never read as anything but itself
    for a in st.adrgs:
        if a.stated:
            assert entry[a.code] in ("literal", "cross-reference", "erratum"), a.code
            assert a.alternatives, a.code


def test_audit_text_names_what_is_not_literal(audited):
    version, _, report = audited
    text = audit_text(report)
    assert "0 unread line(s)" in text
    for code, how in NOT_OWN_LINES[version].items():
        assert f"  {code} " in text and f"entry {how}" in text
    rows = audit_text(report, every_row=True).splitlines()
    assert rows[0].split("\t") == ["level", "code", "name", "part", "how", "detail"]
    assert len(rows) == len(report["rows"]) + 1


def test_1_0_revised_vc1_is_jd2s_procedure_list():
    """`VC1 与损伤有关的清创术~~见 JD2 手术表`: JD2's principal-procedure list, not any OR procedure."""
    folder = need_shared("chs-drg", "CHS_DRG_10P")
    st = read_scheme_text(folder)
    adrgs = {a.code: a for a in st.adrgs}
    vc1, jd2 = adrgs["VC1"], adrgs["JD2"]
    assert vc1.source == "cross-reference"
    assert [(lst.role, lst.codes) for lst in vc1.lists] == [(lst.role, lst.codes) for lst in jd2.lists if lst.role == "ppx"]
    scheme, _ = compile_scheme(folder)
    mdcv = {m.code: m for m in st.mdcs}["MDCV"].principal
    dx = next(c for c in mdcv if c.startswith("T") and not any(c in m.principal for m in st.mdcs if m.code in ("MDCZ", "MDCY")))
    orp = set(st.or_procedures)
    debridement = next(c for c in jd2.lists[0].codes if c in orp)
    other = next(c for c in adrgs["VJ1"].lists[0].codes if c in orp and c not in jd2.lists[0].codes)

    def drg(px):
        rec = {"sex": "1", "age": 40.0, "age_days": None, "birth_weight_g": None, "diagnoses": [dx], "procedures": [px]}
        return group_table(pa.Table.from_pylist([rec]), scheme).to_pylist()[0]["drg"]
    assert drg(debridement)[:3] == "VC1"
    assert drg(other)[:3] == "VJ1"


def test_1_0_revised_ah1_ecmo_alone():
    """1.0 revised AH1 `入组条件一：` tracheotomy + ventilation ≥ 96 h, `入组条件二：` ECMO."""
    st = read_scheme_text(need_shared("chs-drg", "CHS_DRG_10P"))
    ah1 = {a.code: a for a in st.adrgs}["AH1"]
    shapes = [[[ah1.lists[i].codes for i in term] for term in alt] for alt in ah1.alternatives]
    assert len(shapes) == 2
    assert shapes[1] == [[["39.6500"]]]
    assert "96.7201" in shapes[0][1][0] and "39.6500" not in shapes[0][0][0] + shapes[0][1][0]


def test_1_0_errata_are_applied_only_to_those_tables():
    st10 = read_scheme_text(need_shared("chs-drg", "CHS_DRG_10"))
    assert len(st10.errata) == 7
    assert st10.exclusions["7-18"] == []
    zz1 = {a.code: a for a in st10.adrgs}["ZZ1"]
    assert [lst.role for lst in zz1.lists] == ["pdx_mdc", "nopx"] and zz1.source == "erratum"
    st11 = read_scheme_text(need_shared("chs-drg", "CHS_DRG_11"))
    assert st11.errata == [] and "7-18" in st11.exclusions and st11.exclusions["7-18"]


def test_scheme_audit_command(tmp_path):
    from click.testing import CliRunner

    from drgdip.cli import main
    folder = need_shared("chs-drg", "CHS_DRG_10P")
    out = CliRunner().invoke(main, ["scheme", "audit", str(folder)])
    assert out.exit_code == 0, out.output
    assert "ADRG entry: literal 375, cross-reference 1" in out.output
    bad = CliRunner().invoke(main, ["scheme", "audit", str(tmp_path)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
