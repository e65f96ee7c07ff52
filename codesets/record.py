"""The discharge record (医保结算清单 settlement list): canonical columns and their aliases.

Defined once, here. Readers rename any alias to the canonical name before anything
else looks at a column: the national platform's upload field names (interface 4101,
``setl_id``, ``gend``, ``nwb_bir_wt``…) and the settlement list's Chinese item names
(结算ID, 性别, 新生儿出生体重…) are both accepted.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Field:
    name: str
    type: pa.DataType
    zh: str
    en: str
    aliases: tuple[str, ...] = ()


_S, _I, _F = pa.string(), pa.int64(), pa.float64()

#: Every canonical column, in the order documents list them.
FIELDS: tuple[Field, ...] = (
    Field("id", _S, "结算ID", "settlement (record) id", ("setl_id", "mdtrt_id", "结算ID", "结算id", "就诊ID")),
    Field("hospital_id", _S, "定点医疗机构代码", "designated hospital code", ("fixmedins_code", "定点医疗机构代码", "医疗机构代码")),
    Field("patient_id", _S, "人员编号", "insured person id", ("psn_no", "人员编号")),
    Field("medical_record_no", _S, "病案号", "medical record number", ("medcasno", "病案号")),
    Field("sex", _S, "性别", "sex (1 male, 2 female)", ("gend", "gender", "性别")),
    Field("birth_date", _S, "出生日期", "date of birth", ("brdy", "出生日期")),
    Field("age", _F, "年龄", "age in years", ("年龄", "age_years")),
    Field("age_days", _F, "年龄不足1周岁天数", "age in days when under one year", ("nwb_age", "年龄不足1周岁天数", "年龄(天)")),
    Field("birth_weight_g", _F, "新生儿出生体重", "newborn birth weight in grams", ("nwb_bir_wt", "新生儿出生体重", "birth_weight")),
    Field("admission_weight_g", _F, "新生儿入院体重", "newborn admission weight in grams", ("nwb_adm_wt", "新生儿入院体重")),
    Field("admission_date", _S, "入院时间", "admission date", ("adm_time", "入院时间", "入院日期")),
    Field("discharge_date", _S, "出院时间", "discharge date", ("dscg_time", "出院时间", "出院日期")),
    Field("los_days", _F, "住院天数", "length of stay in days", ("act_ipt_days", "住院天数", "实际住院天数", "los")),
    Field("discharge_disposition", _S, "离院方式", "discharge disposition (1 ordered, 2 transfer, 3 community, 4 against advice, 5 death, 9 other)", ("dscg_way", "离院方式")),
    Field("dept", _S, "出院科别", "discharge department", ("dscg_caty", "出院科别", "科室", "department")),
    Field("doctor_id", _S, "医保医师代码", "doctor code", ("chfpdr_code", "主诊医师代码", "医保医师代码", "doctor")),
    Field("ventilation_hours", _F, "呼吸机使用时间", "invasive ventilator hours", ("vent_used_dura", "呼吸机使用时间")),
    Field("diagnoses", pa.list_(pa.string()), "诊断编码", "diagnosis codes, principal first", ("diag_code", "诊断编码", "diagnosis_codes")),
    Field("procedures", pa.list_(pa.string()), "手术操作编码", "procedure codes, principal first", ("oprn_oprt_code", "手术操作编码", "procedure_codes")),
    Field("fund", _S, "险种类型", "fund: employee (职工) or resident (居民)", ("insutype", "hi_type", "险种类型", "险种")),
    Field("total_cost", _F, "医疗总费用", "total medical cost in yuan", ("medfee_sumamt", "医疗总费用", "总费用")),
    Field("personal_share", _F, "个人负担", "what the patient bears for the stay, in yuan", ("psn_part_amt", "个人负担", "个人支付", "个人自付")),
    Field("fund_paid", _F, "统筹基金支付", "paid by the pooled fund, in yuan", ("hifp_pay", "统筹基金支付")),
    # fee categories (费用分类) of the settlement list
    Field("fee_bed", _F, "床位费", "bed fee", ("床位费",)),
    Field("fee_consultation", _F, "诊察费", "consultation fee", ("诊察费",)),
    Field("fee_examination", _F, "检查费", "examination fee", ("检查费",)),
    Field("fee_laboratory", _F, "化验费", "laboratory fee", ("化验费",)),
    Field("fee_treatment", _F, "治疗费", "treatment fee", ("治疗费",)),
    Field("fee_surgery", _F, "手术费", "surgery fee", ("手术费",)),
    Field("fee_nursing", _F, "护理费", "nursing fee", ("护理费",)),
    Field("fee_materials", _F, "卫生材料费", "medical materials fee", ("卫生材料费",)),
    Field("fee_western_drugs", _F, "西药费", "western drugs fee", ("西药费",)),
    Field("fee_herbal_pieces", _F, "中药饮片费", "decoction pieces fee", ("中药饮片费",)),
    Field("fee_patent_drugs", _F, "中成药费", "Chinese patent drugs fee", ("中成药费",)),
    Field("fee_general_service", _F, "一般诊疗费", "general service fee", ("一般诊疗费",)),
    Field("fee_registration", _F, "挂号费", "registration fee", ("挂号费",)),
    Field("fee_other", _F, "其他费", "other fees", ("其他费",)),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
FEE_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.name.startswith("fee_"))

#: Columns the CHS-DRG grouper reads.
GROUPING_COLUMNS = ("sex", "age", "age_days", "birth_weight_g", "los_days",
                    "discharge_disposition", "ventilation_hours", "diagnoses", "procedures")

_ALIAS: dict[str, str] = {}
for _f in FIELDS:
    for _a in (_f.name, *_f.aliases):
        _ALIAS[_a.lower()] = _f.name


def canonical_name(column: str) -> str:
    """The canonical name of a column, or the column unchanged if it is none of ours."""
    return _ALIAS.get(column.strip().lower(), column)


def canonical_names(columns: list[str]) -> dict[str, str]:
    """Map of input column → canonical name for the columns that are aliases.

    The first column that claims a canonical name wins; a later alias of the same
    field keeps its own name (it passes through untouched)."""
    taken = {c for c in columns if canonical_name(c) == c and c in BY_NAME}
    out: dict[str, str] = {}
    for c in columns:
        target = canonical_name(c)
        if target != c and target not in taken:
            out[c] = target
            taken.add(target)
    return out
