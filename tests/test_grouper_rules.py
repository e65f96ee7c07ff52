"""Each rule form of the published wording, on a small hand-made scheme folder."""
from __future__ import annotations

import pyarrow as pa
import pytest

from drgdip.grouper.drg.api import group_table, load_scheme
from drgdip.grouper.drg.compile import SchemeError, compile_scheme

DETAIL = """MDCA 先期分组疾病及相关操作
AA1 心脏移植
包含以下主要手术或操作：
37.5100 心脏移植术
AC1 胰/肾联合移植
同时包含以下手术：
52.8000 胰腺移植
和
55.6901 肾异体移植术
MDCF 循环系统疾病及功能障碍
MDCF 主诊表
包含以下主要诊断：
I21.001 急性前壁心肌梗死
I50.900 心力衰竭
I10.x00 特发性（原发性）高血压
FB1 心脏瓣膜手术
包含以下主要诊断+手术表 1+手术表 2
或包含以下主要诊断+手术表 3
主要诊断：
I50.900 心力衰竭
手术表 1：
35.2100 主动脉瓣置换
手术表 2：
39.6100 体外循环
手术表 3：
35.0500 经导管主动脉瓣置换
FM1 经皮冠状动脉支架植入
包含以下主要诊断：
I21.001 急性前壁心肌梗死
包含以下主要手术或操作：
36.0601 冠状动脉药物涂层支架置入术
FJ1 循环系统其他手术
全部手术
FR1 急性心肌梗死
包含以下主要诊断：
I21.001 急性前壁心肌梗死
FT1 高血压
包含以下主要诊断：
I10.x00 特发性（原发性）高血压
MDCN 女性生殖系统疾病及功能障碍
MDCN 主诊表
包含以下主要诊断：
N80.000 子宫内膜异位症
NZ1 女性生殖系统其他疾患
包含以下主要诊断：
N80.000 子宫内膜异位症
MDCP 新生儿及其他围产期新生儿疾病
MDCP 主诊表
包含以下主要诊断：
P07.300 早产婴儿
PS1 极度发育不全（出生体重＜1500g）
主要诊断或其他诊断中包含以下诊断：
P07.300 早产婴儿
PS2 早产儿（出生体重 1500-1999g）
主要诊断或其他诊断中包含以下诊断：
P07.300 早产婴儿
MDCZ 多发严重创伤
MDCZ 主诊表
头颈部创伤
包含以下主要诊断：
S06.000 脑震荡
下肢创伤
包含以下主要诊断：
S72.000 股骨颈骨折
ZZ1 多发性重要创伤无手术
符合 MDCZ 主诊表，且无手术
"""
FILES = {
    "1_MDC.txt": "MDCA 先期分组疾病及相关操作\nMDCF 循环系统疾病及功能障碍\nMDCN 女性生殖系统疾病及功能障碍\nMDCP 新生儿\nMDCZ 多发严重创伤\n",
    "2_ADRG.txt": "AA1 心脏移植\nAC1 胰/肾联合移植\nFB1 心脏瓣膜手术\nFJ1 循环系统其他手术\nFM1 经皮冠状动脉支架植入\nFR1 急性心肌梗死\nFT1 高血压\nNZ1 女性生殖系统其他疾患\nPS1 极度发育不全（出生体重＜1500g）\nPS2 早产儿（出生体重 1500-1999g）\nZZ1 多发性重要创伤无手术\n",
    "3_DRG.txt": "AA19 心脏移植\nAC19 胰/肾联合移植\nFB19 心脏瓣膜手术\nFJ19 循环系统其他手术\nFM19 经皮冠状动脉支架植入\n"
                 "FR11 急性心肌梗死，伴严重并发症或合并症\nFR13 急性心肌梗死，伴并发症或合并症\nFR15 急性心肌梗死，不伴并发症或合并症\n"
                 "FT13 高血压，伴并发症或合并症\nFT15 高血压，不伴并发症或合并症\nNZ19 女性生殖系统其他疾患\n"
                 "PS19 极度发育不全（出生体重＜1500g）\nPS29 早产儿（出生体重1500-1999g）\nZZ19 多发性重要创伤无手术\n",
    "4_ADRG_DETAIL.txt": DETAIL,
    "5_MCC.txt": "疾病编码 疾病名称 排除内容\nJ96.000 急性呼吸衰竭 表 7-1\n",
    "6_CC.txt": "疾病编码 疾病名称 排除内容\nE11.900 2型糖尿病 表 7-2\nI50.900 心力衰竭 表 7-1\n",
    "7_CCE.txt": "表 7-1\n包含以下主要诊断：\nJ96.000 急性呼吸衰竭\n表 7-2\n包含以下主要诊断：\nI10.x00 特发性（原发性）高血压\n",
    "SS_VALID.dat": "37.5100 心脏移植术\n52.8000 胰腺移植\n55.6901 肾异体移植术\n35.2100 主动脉瓣置换\n35.0500 经导管主动脉瓣置换\n39.6100 体外循环\n",
}


@pytest.fixture(scope="module")
def scheme(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scheme")
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return load_scheme(folder)


def g(scheme, **rec):
    base = {"sex": "1", "age": 60.0, "age_days": None, "birth_weight_g": None, "diagnoses": [], "procedures": []}
    base.update(rec)
    out = group_table(pa.Table.from_pylist([base]), scheme).to_pylist()[0]
    return out["drg"], out["status"], out["reason"]


def test_principal_procedure_in_pre_mdc(scheme):
    assert g(scheme, diagnoses=["I50.900"], procedures=["37.5100"])[0] == "AA19"


def test_both_procedure_lists_any_position(scheme):
    # 同时包含以下手术 … 和 …: one procedure from each list, in any position
    assert g(scheme, diagnoses=["I50.900"], procedures=["52.8000", "36.0601", "55.6901"])[0] == "AC19"
    assert g(scheme, diagnoses=["I50.900"], procedures=["52.8000"])[0] != "AC19"


def test_formula_with_procedure_tables(scheme):
    assert g(scheme, diagnoses=["I50.900"], procedures=["35.2100", "39.6100"])[0] == "FB19"
    assert g(scheme, diagnoses=["I50.900"], procedures=["35.0500"])[0] == "FB19"
    # table 1 without table 2: not FB1; the OR procedure lands in the catch-all surgical ADRG
    assert g(scheme, diagnoses=["I50.900"], procedures=["35.2100"])[0] == "FJ19"


def test_principal_diagnosis_and_principal_procedure(scheme):
    assert g(scheme, diagnoses=["I21.001"], procedures=["36.0601"])[0] == "FM19"
    # PCI is no operating-room procedure; with an OR principal procedure the surgical 全部手术 ADRG comes first
    assert g(scheme, diagnoses=["I21.001"], procedures=["35.0500", "36.0601"])[0] == "FJ19"


def test_severity_split_and_exclusion_table(scheme):
    assert g(scheme, diagnoses=["I21.001"])[0] == "FR15"
    assert g(scheme, diagnoses=["I21.001", "E11.900"])[0] == "FR13"
    assert g(scheme, diagnoses=["I21.001", "J96.000"])[0] == "FR11"
    # E11.900 is excluded (表 7-2) when the principal diagnosis is I10.x00
    assert g(scheme, diagnoses=["I10.x00", "E11.900"])[0] == "FT15"
    # FT1 has no MCC-level DRG: an MCC counts at the CC level
    assert g(scheme, diagnoses=["I10.x00", "J96.000"])[0] == "FT13"


def test_sex_restricted_mdc(scheme):
    assert g(scheme, sex="2", diagnoses=["N80.000"])[0] == "NZ19"
    assert g(scheme, sex="1", diagnoses=["N80.000"]) == ("0000", "invalid", "SEX_CONFLICT")


def test_newborn_birth_weight_bands(scheme):
    assert g(scheme, age=0, age_days=3, birth_weight_g=1200, diagnoses=["P07.300"])[0] == "PS19"
    assert g(scheme, age=0, age_days=3, birth_weight_g=1999, diagnoses=["P07.300"])[0] == "PS29"
    assert g(scheme, age=0, age_days=3, diagnoses=["P07.300"]) == ("0000", "invalid", "MISSING_BIRTH_WEIGHT")


def test_multiple_trauma_needs_two_body_regions(scheme):
    assert g(scheme, diagnoses=["S06.000", "S72.000"])[0] == "ZZ19"
    assert g(scheme, diagnoses=["S06.000"])[0] == "0000"


def test_unusable_folder_reports_file_and_line(tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "4_ADRG_DETAIL.txt").write_text(DETAIL.replace("FT1 高血压\n包含以下主要诊断：\n", "FT1 高血压\n"), encoding="utf-8")
    with pytest.raises(SchemeError) as err:
        compile_scheme(tmp_path)
    assert "4_ADRG_DETAIL.txt:" in str(err.value)
    scheme, problems = compile_scheme(tmp_path, allow_gaps=True)
    assert problems and all(p.file == "4_ADRG_DETAIL.txt" for p in problems)


def test_ambiguous_group_when_the_rules_ask_for_it(tmp_path):
    from drgdip.grouper.drg.compile import DEFAULT_RULES
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    # the catch-all surgical ADRG removed: an OR procedure no surgical ADRG takes
    (tmp_path / "4_ADRG_DETAIL.txt").write_text(DETAIL.replace("FJ1 循环系统其他手术\n全部手术\n", ""), encoding="utf-8")
    rules = DEFAULT_RULES.read_text(encoding="utf-8").replace("ambiguous_group_mdcs = []", 'ambiguous_group_mdcs = ["MDCF"]')
    (tmp_path / "rules.toml").write_text(rules, encoding="utf-8")
    scheme = load_scheme(tmp_path, allow_gaps=True)
    assert g(scheme, diagnoses=["I21.001"], procedures=["35.2100"]) == ("FQY", "ambiguous", "AMBIGUOUS_OR_PROCEDURE")
    # without an OR procedure the medical ADRG still applies
    assert g(scheme, diagnoses=["I21.001"])[0] == "FR15"
    # and without the rule, the record goes on to the medical ADRGs
    (tmp_path / "rules.toml").unlink()
    assert g(load_scheme(tmp_path, allow_gaps=True), diagnoses=["I21.001"], procedures=["35.2100"])[0] == "FR15"


def test_split_by_robot_assisted_surgery_and_age_band_is_data(tmp_path):
    """CHS-DRG 3.0-style splits come from group names and the rules' derived fields: no kernel change."""
    files = dict(FILES)
    files["3_DRG.txt"] = files["3_DRG.txt"].replace(
        "FB19 心脏瓣膜手术\n",
        "FB1A 心脏瓣膜手术，机器人辅助\nFB1B 心脏瓣膜手术，小于6岁\nFB19 心脏瓣膜手术\n")
    files["SS_VALID.dat"] += "17.4100 开放性机器人援助操作\n"
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    scheme = load_scheme(tmp_path)
    valve = dict(diagnoses=["I50.900"], procedures=["35.2100", "39.6100"])
    assert g(scheme, **valve)[0] == "FB19"
    assert g(scheme, **{**valve, "procedures": ["35.2100", "39.6100", "17.4100"]})[0] == "FB1A"
    assert g(scheme, age=4.0, **valve)[0] == "FB1B"
    assert "robot_assisted" in scheme.fields


def _folder(tmp_path, detail, adrgs="", drgs="", or_procedures=""):
    files = dict(FILES)
    files["4_ADRG_DETAIL.txt"] = detail
    files["2_ADRG.txt"] += adrgs
    files["3_DRG.txt"] += drgs
    files["SS_VALID.dat"] += or_procedures
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("wording", ["FC1 冠状动脉其他手术~~见 FM1 手术表\n", "FC1 冠状动脉其他手术\n见 FM1 手术表\n"])
def test_cross_reference_reads_the_named_adrgs_list(tmp_path, wording):
    """`VC1 与损伤有关的清创术~~见 JD2 手术表` (1.0 revised): the named ADRG's procedure list, not
    "any operating-room procedure"; after the name or on a line of its own."""
    detail = DETAIL.replace("FJ1 循环系统其他手术\n", wording + "FJ1 循环系统其他手术\n")
    folder = _folder(tmp_path, detail, "FC1 冠状动脉其他手术\n", "FC19 冠状动脉其他手术\n")
    audit: list = []
    scheme, problems = compile_scheme(folder, audit=audit)
    assert problems == []
    # FM1's principal-procedure list only (its principal-diagnosis list is not part of 手术表)
    assert g(scheme, diagnoses=["I50.900"], procedures=["36.0601"])[0] == "FC19"
    # another operating-room procedure is not FC1's: it goes on to the catch-all FJ1
    assert g(scheme, diagnoses=["I50.900"], procedures=["35.2100"])[0] == "FJ19"
    entry = [r for r in audit if r["code"] == "FC1" and r["part"] == "entry"]
    assert [r["how"] for r in entry] == ["cross-reference"]


@pytest.mark.parametrize("target,why", [("FX9", "unknown ADRG"), ("FT1", "no procedures list")])
def test_unresolvable_cross_reference_stops_compile_with_file_and_line(tmp_path, target, why):
    detail = DETAIL.replace("FJ1 循环系统其他手术\n", f"FC1 冠状动脉其他手术\n见 {target} 手术表\nFJ1 循环系统其他手术\n")
    folder = _folder(tmp_path, detail, "FC1 冠状动脉其他手术\n", "FC19 冠状动脉其他手术\n")
    line = detail.splitlines().index(f"见 {target} 手术表") + 1
    with pytest.raises(SchemeError) as err:
        compile_scheme(folder)
    assert f"4_ADRG_DETAIL.txt:{line}:" in str(err.value) and why in str(err.value)


def test_numbered_entry_conditions_are_alternatives(tmp_path):
    """1.0 revised AH1: `入组条件一：` (tracheotomy and ventilation ≥ 96 h) or `入组条件二：` (ECMO)."""
    ah1 = ("AH1 气管切开伴呼吸机支持≥96 小时或~~ECMO\n入组条件一：\n手术同时包含：\n31.2900x001 永久性气管切开术\n和\n"
           "96.7201 呼吸机治疗[大于等于 96 小时]\n入组条件二：\n手术包含：\n39.6500 体外膜氧合[ECMO]\n")
    detail = DETAIL.replace("MDCF 循环系统疾病及功能障碍\n", ah1 + "MDCF 循环系统疾病及功能障碍\n", 1)
    folder = _folder(tmp_path, detail, "AH1 气管切开伴呼吸机支持≥96小时或ECMO\n", "AH19 气管切开伴呼吸机支持≥96小时或ECMO\n",
                     "31.2900x001 永久性气管切开术\n39.6500 体外膜氧合[ECMO]\n")
    scheme, problems = compile_scheme(folder)
    assert problems == []
    assert g(scheme, diagnoses=["I50.900"], procedures=["39.6500"])[0] == "AH19"
    assert g(scheme, diagnoses=["I50.900"], procedures=["31.2900x001", "96.7201"])[0] == "AH19"
    assert g(scheme, diagnoses=["I50.900"], procedures=["31.2900x001"])[0] != "AH19"
    assert g(scheme, diagnoses=["I50.900"], procedures=["96.7201"])[0] != "AH19"


def test_unread_text_after_an_adrg_name_is_reported(tmp_path):
    detail = DETAIL.replace("FJ1 循环系统其他手术\n", "FJ1 循环系统其他手术~~参照 FM1 手术表\n")
    folder = _folder(tmp_path, detail)
    with pytest.raises(SchemeError) as err:
        compile_scheme(folder)
    assert "text after the ADRG's name" in str(err.value)


def test_except_another_adrgs_list_after_the_name(tmp_path):
    """`WJ1 烧伤伴除植皮之外的任何手术室手术~~除 WB1 外手术` (1.1): any OR procedure but WB1's."""
    detail = DETAIL.replace("FJ1 循环系统其他手术\n全部手术\n", "FJ1 循环系统其他手术~~除 FB1 外手术\n")
    audit: list = []
    scheme, problems = compile_scheme(_folder(tmp_path, detail, or_procedures="36.1000 主动脉冠状动脉旁路移植\n"), audit=audit)
    assert problems == []
    fj1 = [r for r in audit if r["code"] == "FJ1"]
    assert [(r["part"], r["how"]) for r in fj1 if r["level"] == "ADRG"] == [("entry", "literal")]
    assert "orpx_except" in fj1[0]["detail"]
    assert g(scheme, diagnoses=["I21.001"], procedures=["36.1000"])[0] == "FJ19"
    # an OR procedure of FB1's lists is not FJ1's, even where FB1 itself does not apply (no I50.900)
    assert g(scheme, diagnoses=["I21.001"], procedures=["35.0500"])[0] == "FR15"


def test_a_stated_rule_that_gives_no_list_is_a_problem_not_a_default(tmp_path):
    # the heading is there, its codes are not: never read as "any OR procedure" or dropped
    detail = DETAIL.replace("FM1 经皮冠状动脉支架植入\n包含以下主要诊断：\nI21.001 急性前壁心肌梗死\n包含以下主要手术或操作：\n36.0601 冠状动脉药物涂层支架置入术\n",
                            "FM1 经皮冠状动脉支架植入\n包含以下主要手术或操作：\n")
    with pytest.raises(SchemeError) as err:
        compile_scheme(_folder(tmp_path, detail))
    assert "FM1" in str(err.value) and "give no entry rule" in str(err.value)
