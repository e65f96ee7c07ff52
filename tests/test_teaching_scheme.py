"""The built-in teaching scheme (grouper/drg/teaching_scheme): its files follow the published
CHS-DRG text-table format, and its tables are consistent with one another.

The format checks read the files with a small parser of their own, independent of the
project's importer, so a mistake in either shows up here.
"""
from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from pathlib import Path

from conftest import need_shared

FOLDER = Path(__file__).resolve().parents[1] / "grouper" / "drg" / "teaching_scheme"
FILES = ("1_MDC.txt", "2_ADRG.txt", "3_DRG.txt", "4_ADRG_DETAIL.txt", "5_MCC.txt", "6_CC.txt",
         "7_CCE.txt", "SS_VALID.dat")

DIAG = re.compile(r"^[A-Z][0-9]{2}\.[0-9x][0-9]{2}$")          # I21.000, G20.x00
PROC = re.compile(r"^[0-9]{2}\.[0-9x]{2}[0-9]{2}$")            # 36.0700, 43.7x00
MDC = re.compile(r"^MDC[A-Z]$")
ADRG = re.compile(r"^[A-Z]{2}[0-9]$")
DRG = re.compile(r"^[A-Z]{2}[0-9][1359]$")
TABLE = re.compile(r"^表 7-([0-9]+)$")
HEADINGS = {"包含以下主要诊断：": "dx", "主要诊断或其他诊断中包含以下诊断：": "dx",
            "包含以下主要手术或操作：": "px", "同时包含以下手术：": "px", "和": "px"}


def lines(name: str) -> list[str]:
    text = (FOLDER / name).read_text(encoding="utf-8")
    assert "\r" not in text and "~~" not in text, name
    out = text.split("\n")
    assert out[-1] == "", f"{name} must end with a newline"
    out = out[:-1]
    assert all(line == line.strip() and line for line in out), f"{name}: blank or padded line"
    return out


def code_name(line: str) -> tuple[str, str]:
    code, _, name = line.partition(" ")
    assert code and name.strip(), f"not `code name`: {line!r}"
    return code, name


def parse_detail():
    """4_ADRG_DETAIL.txt → (MDC principal tables, ADRG → MDC, ADRG → [(heading, codes)])."""
    principal: dict[str, list[str]] = {}
    adrg_mdc: dict[str, str] = {}
    adrg_lists: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    mdc = adrg = None
    in_principal = False
    heading = None
    for line in lines("4_ADRG_DETAIL.txt"):
        code, rest = code_name(line) if " " in line else (line, "")
        if MDC.match(code) and rest == "主诊表":
            assert code == mdc, line
            in_principal, adrg, heading = True, None, None
            principal[mdc] = []
        elif MDC.match(code):
            mdc, adrg, in_principal, heading = code, None, False, None
        elif ADRG.match(code):
            assert mdc is not None and code not in adrg_mdc, line
            adrg, in_principal, heading = code, False, None
            adrg_mdc[code] = mdc
        elif line in HEADINGS:
            assert in_principal or adrg is not None, line
            if line == "和":
                assert heading == "同时包含以下手术：" and adrg_lists[adrg][-1][1], "`和` must follow a 同时包含 list"
            elif in_principal:
                assert line == "包含以下主要诊断：" and not principal[mdc], line
            heading = line
            if adrg is not None:
                adrg_lists[adrg].append((line, []))
        else:
            assert heading is not None, f"code line before any heading: {line!r}"
            kind = HEADINGS[heading] if not in_principal else "dx"
            assert (DIAG if kind == "dx" else PROC).match(code), f"{kind} code expected: {line!r}"
            (principal[mdc] if in_principal else adrg_lists[adrg][-1][1]).append(code)
    return principal, adrg_mdc, adrg_lists


def test_every_file_is_there_and_every_line_parses():
    for name in FILES:
        for line in lines(name):
            if name in ("5_MCC.txt", "6_CC.txt") and line == "疾病编码 疾病名称 排除内容":
                continue
            if name == "7_CCE.txt" and (TABLE.match(line) or line == "包含以下主要诊断："):
                continue
            if name == "4_ADRG_DETAIL.txt" and line in HEADINGS:
                continue
            code, _ = code_name(line)
            assert (MDC.match(code) or ADRG.match(code) or DRG.match(code) or DIAG.match(code)
                    or PROC.match(code)), f"{name}: unreadable code in {line!r}"


def test_mdcs_adrgs_and_drgs_belong_together():
    mdcs = [code_name(x)[0] for x in lines("1_MDC.txt")]
    assert all(MDC.match(m) for m in mdcs) and len(set(mdcs)) == len(mdcs)
    assert {"MDCA", "MDCP"} <= set(mdcs) and len(mdcs) >= 8
    adrgs = dict(code_name(x) for x in lines("2_ADRG.txt"))
    assert len(adrgs) == len(lines("2_ADRG.txt")) >= 30
    for a in adrgs:
        assert ADRG.match(a) and f"MDC{a[0]}" in mdcs, f"ADRG {a} has no MDC"
    splits = defaultdict(set)
    for line in lines("3_DRG.txt"):
        drg, name = code_name(line)
        assert DRG.match(drg) and drg[:3] in adrgs, f"DRG {drg} has no ADRG"
        assert name.startswith(adrgs[drg[:3]]), f"DRG {drg} not named after its ADRG"
        splits[drg[:3]].add(drg[3])
    assert set(splits) == set(adrgs), "every ADRG needs at least one DRG"
    for a, s in splits.items():
        assert s in ({"9"}, {"3", "5"}, {"1", "3", "5"}), f"{a}: split {sorted(s)}"
    kinds = {s for s in map(frozenset, splits.values())}
    assert len(kinds) == 3, "the scheme shows every kind of split: 9, 3/5 and 1/3/5"


def test_detail_covers_every_adrg_in_scheme_order():
    principal, adrg_mdc, adrg_lists = parse_detail()
    adrgs = [code_name(x)[0] for x in lines("2_ADRG.txt")]
    assert list(adrg_mdc) == adrgs, "4_ADRG_DETAIL lists the ADRGs in 2_ADRG order"
    mdcs = [code_name(x)[0] for x in lines("1_MDC.txt")]
    assert set(principal) == set(mdcs) - {"MDCA"}, "every MDC but the pre-MDC has a 主诊表"
    for a, mdc in adrg_mdc.items():
        assert mdc == f"MDC{a[0]}", a
        assert adrg_lists[a] and all(codes for _, codes in adrg_lists[a]), f"{a} has an empty list"
    # ADRG kinds: surgical (A–J) and operative (K–Q) name procedures, medical (R–Z) diagnoses
    for a, lists_ in adrg_lists.items():
        kinds = {HEADINGS[h] for h, _ in lists_}
        if a[1] >= "R":
            assert kinds == {"dx"}, a
        else:
            assert "px" in kinds, a
    # a medical ADRG's principal diagnoses are in its MDC's 主诊表
    for a, lists_ in adrg_lists.items():
        for heading, codes in lists_:
            if heading == "包含以下主要诊断：":
                missing = set(codes) - set(principal[adrg_mdc[a]])
                assert not missing, f"{a}: {sorted(missing)} not in the {adrg_mdc[a]} 主诊表"
    kinds = {a[1] <= "J" for a in adrg_lists if a[0] not in "AP"}
    letters = {a[0] for a in adrg_lists}
    assert kinds == {True, False} and len(letters - {"A", "P"}) >= 6


def test_combination_rule_and_diagnosis_plus_procedure_rule_present():
    _, _, adrg_lists = parse_detail()
    headings = {a: [h for h, _ in l] for a, l in adrg_lists.items()}
    assert any(h == ["同时包含以下手术：", "和"] for h in headings.values())
    assert any(h == ["包含以下主要诊断：", "包含以下主要手术或操作："] for h in headings.values())


def test_newborn_groups_split_by_birth_weight_and_age():
    _, adrg_mdc, adrg_lists = parse_detail()
    adrgs = dict(code_name(x) for x in lines("2_ADRG.txt"))
    newborn = {a: n for a, n in adrgs.items() if adrg_mdc[a] == "MDCP"}
    weights = [n for n in newborn.values() if "出生体重" in n]
    assert len(weights) >= 4, "birth-weight bands are named in the official style"
    assert any("＜1500g" in n for n in weights) and any("＞2499g" in n for n in weights)
    assert any("29天≤出生年龄＜1周岁" in n for n in newborn.values())
    for a, n in newborn.items():
        if "出生体重" in n:
            assert [h for h, _ in adrg_lists[a]] == ["主要诊断或其他诊断中包含以下诊断："]


def test_mcc_cc_lines_point_to_existing_exclusion_tables():
    tables: dict[int, list[str]] = {}
    current = None
    cce = lines("7_CCE.txt")
    for i, line in enumerate(cce):
        m = TABLE.match(line)
        if m:
            current = int(m.group(1))
            assert current not in tables and cce[i + 1] == "包含以下主要诊断：", line
            tables[current] = []
        elif line != "包含以下主要诊断：":
            code, _ = code_name(line)
            assert DIAG.match(code), line
            tables[current].append(code)
    assert all(tables.values()), "an exclusion table without codes"
    levels = {}
    for name, level in (("5_MCC.txt", "MCC"), ("6_CC.txt", "CC")):
        body = lines(name)
        assert body[0] == "疾病编码 疾病名称 排除内容"
        for line in body[1:]:
            code, rest = code_name(line)
            m = re.search(r" 表 7-([0-9]+)$", rest)
            assert DIAG.match(code) and m, f"{name}: {line!r}"
            assert int(m.group(1)) in tables, f"{name}: {line!r} names a missing table"
            assert code not in levels, f"{code} listed twice"
            levels[code] = level
    counts = {lv: sum(1 for v in levels.values() if v == lv) for lv in ("MCC", "CC")}
    assert counts["MCC"] >= 40 and counts["CC"] >= 80
    # a complication in its own exclusion table as principal does not count: e.g. a
    # secondary acute respiratory failure beside a principal acute respiratory failure
    tab = {code_name(x)[0]: int(x.rsplit("-", 1)[1]) for x in lines("5_MCC.txt")[1:]}
    assert "J96.000" in tables[tab["J96.000"]]


def test_operating_room_procedures_are_the_surgical_and_pre_mdc_codes():
    _, adrg_mdc, adrg_lists = parse_detail()
    ss = [code_name(x)[0] for x in lines("SS_VALID.dat")]
    assert ss == sorted(set(ss)) and all(PROC.match(c) for c in ss)
    for a, lists_ in adrg_lists.items():
        codes = {c for h, l in lists_ if HEADINGS[h] == "px" for c in l}
        if a[1] <= "J" or a[0] == "A":
            assert codes <= set(ss), f"{a}: {sorted(codes - set(ss))} are not OR procedures"
        else:
            assert not codes & set(ss), f"{a}: operative codes must not be OR procedures"
    in_adrgs = {c for l in adrg_lists.values() for h, codes in l if HEADINGS[h] == "px" for c in codes}
    assert set(ss) - in_adrgs, "at least one OR procedure of no ADRG (for the ambiguous group)"


def test_a_code_has_one_name_everywhere():
    names: dict[str, str] = {}
    for name in FILES[3:]:
        for line in lines(name):
            if " " not in line or line.startswith(("表 ", "疾病编码 ")) or line in HEADINGS:
                continue
            code, rest = code_name(line)
            if not (DIAG.match(code) or PROC.match(code)):
                continue
            rest = re.sub(r" 表 7-[0-9]+$", "", rest)
            assert names.setdefault(code, rest) == rest, f"{code}: {names[code]!r} vs {rest!r} ({name})"


def test_scheme_toml_says_teaching_not_official():
    meta = tomllib.loads((FOLDER / "scheme.toml").read_text(encoding="utf-8"))
    assert meta["name"] == "drgdip teaching scheme" and meta["official"] is False
    assert meta["version"] and "teaching" in meta["note"].lower() and "非官方" in meta["note"]


def test_every_code_is_a_real_code_of_the_medical_insurance_edition():
    codesets = need_shared("codesets")
    diag = {l.split(" ", 1)[0] for l in (codesets / "ZD_INFO.dat").read_text(encoding="utf-8").splitlines()}
    proc = {l.split(" ", 1)[0] for l in (codesets / "SS_INFO.dat").read_text(encoding="utf-8").splitlines()}
    ours = set()
    for name in FILES[3:]:
        for line in lines(name):
            ours.add(line.split(" ", 1)[0])
    d = {c for c in ours if DIAG.match(c)}
    p = {c for c in ours if PROC.match(c)}
    assert len(d) > 150 and len(p) > 60
    assert not d - diag, f"not ICD-10 医保版 2.0 codes: {sorted(d - diag)}"
    assert not p - proc, f"not ICD-9-CM-3 医保版 2.0 codes: {sorted(p - proc)}"


# ---------------------------------------------------------------- through the project's compiler

CASES = [
    # id, sex, age, age_days, birth weight, diagnoses, procedures → expected DRG (worked from the tables)
    ("ami-mcc", "1", 65, None, None, ["I21.000", "J96.000"], [], "FR11"),          # J96.000 MCC, 表7-2 lacks I21
    ("pci-cc", "1", 58, None, None, ["I21.000", "I50.000"], ["36.0700"], "FM13"),   # PCI is operative (not OR)
    ("cc-excluded", "2", 70, None, None, ["J18.900", "J15.900"], [], "ES25"),     # J15.900's 表7-1 holds J18.900
    ("mcc-excluded", "1", 72, None, None, ["J96.000", "J96.900", "E87.600"], [], "EZ13"),  # MCC dropped, CC stays
    ("kidney-tx", "1", 45, None, None, ["N18.500"], ["55.6900"], "AE19"),          # pre-MDC by OR procedure
    ("ecmo-vent", "2", 60, None, None, ["J96.000", "J18.900"], ["96.7200"], "AH13"),
    ("vlbw", "1", 0, 3, 1200, ["P07.100", "P22.000"], [], "PS11"),                 # < 1500 g, P22.000 MCC
    ("lbw", "2", 0, 1, 2200, ["P07.300"], [], "PS39"),                             # 2000-2499 g, not split
    ("infant", "2", 0, 60, 3100, ["P59.900"], [], "PV15"),                         # 29 days ≤ age < 1 year
    ("valve-cabg", "1", 66, None, None, ["I35.000"], ["35.2100", "36.1200"], "FB19"),  # 同时包含 … 和 …
    ("valve", "2", 70, None, None, ["I35.000"], ["35.2200"], "FB25"),
    ("kidney-ca-op", "1", 61, None, None, ["C64.x00", "N17.900"], ["55.5100"], "LA11"),  # diagnosis AND procedure
    ("kidney-ca-med", "1", 61, None, None, ["C64.x00"], [], "LZ15"),               # no procedure: medical ADRG
    ("delivery", "2", 28, None, None, ["O80.000"], [], "OR15"),                    # OR1 splits 3/5
    ("caesarean-mcc", "2", 31, None, None, ["O80.000", "O14.100"], ["74.1x00"], "OB11"),
]


def test_the_project_compiles_and_groups_it_as_worked_by_hand():
    import pyarrow as pa

    from drgdip.grouper.drg.api import group_table, load_scheme

    scheme = load_scheme(None)
    assert scheme.meta["name"] == "drgdip teaching scheme" and scheme.meta["official"] is False
    assert scheme.meta["problems"] == 0
    assert scheme.meta["counts"] == {"mdc": 9, "adrg": 71, "drg": 161, "mcc": 40, "cc": 81, "exclusion_tables": 18}
    t = pa.table({
        "id": [c[0] for c in CASES], "sex": [c[1] for c in CASES], "age": [float(c[2]) for c in CASES],
        "age_days": pa.array([c[3] for c in CASES], pa.float64()),
        "birth_weight_g": pa.array([c[4] for c in CASES], pa.float64()),
        "los_days": [5.0] * len(CASES), "discharge_disposition": ["1"] * len(CASES),
        "diagnoses": [c[5] for c in CASES], "procedures": pa.array([c[6] for c in CASES], pa.list_(pa.string())),
    })
    g = group_table(t, scheme)
    got = dict(zip(g["id"].to_pylist(), g["drg"].to_pylist()))
    assert got == {c[0]: c[7] for c in CASES}
    assert set(g["status"].to_pylist()) == {"grouped"}


def test_the_teaching_rules_are_the_general_rules_with_ambiguous_groups():
    """teaching_scheme/rules.toml = grouper/drg/rules/chs-drg-1.x.toml but its name and the MDCs with
    an ambiguous group (歧义组 QY): the copy cannot drift from the general rules."""
    from drgdip.grouper.drg.compile import DEFAULT_RULES
    general = tomllib.loads(DEFAULT_RULES.read_text(encoding="utf-8"))
    ours = tomllib.loads((FOLDER / "rules.toml").read_text(encoding="utf-8"))
    assert ours.pop("ambiguous_group_mdcs") == ["MDCB", "MDCE", "MDCF", "MDCG", "MDCI", "MDCL", "MDCO"]
    assert general.pop("ambiguous_group_mdcs") == []
    ours.pop("name"), general.pop("name")
    assert ours == general


def test_a_surgery_unrelated_to_the_mdc_is_ambiguous():
    """Heart failure (MDCF) with an appendectomy (GD1's procedure, MDCG): no surgical ADRG of MDCF takes it,
    so FQY, status ambiguous; the same operation with appendicitis is GD1; a newborn's goes to PJ1's
    MDC's medical ADRGs (MDCP has no ambiguous group)."""
    import pyarrow as pa

    from drgdip.grouper.drg.api import group_table, load_scheme

    scheme = load_scheme(None)
    assert [c for c in scheme.drg_codes if c.endswith("QY")] == ["BQY", "EQY", "FQY", "GQY", "IQY", "LQY", "OQY"]
    t = pa.table({"id": ["hf-appendix", "appendicitis", "pneumonia-appendix", "newborn-appendix"],
                  "sex": ["1"] * 4, "age": [70.0, 70.0, 70.0, 0.0], "age_days": pa.array([None, None, None, 3.0]),
                  "birth_weight_g": pa.array([None, None, None, 3200.0]),
                  "los_days": [9.0] * 4, "discharge_disposition": ["1"] * 4,
                  "diagnoses": [["I50.000"], ["K35.800"], ["J18.900"], ["P59.900"]],
                  "procedures": [["47.0900"]] * 4})
    g = group_table(t, scheme)
    assert g["drg"].to_pylist()[:3] == ["FQY", "GD15", "EQY"]     # GD15: GD1 without CC
    assert g["status"].to_pylist()[:3] == ["ambiguous", "grouped", "ambiguous"]
    assert g["mdc"].to_pylist()[3] == "MDCP" and g["status"].to_pylist()[3] != "ambiguous"
