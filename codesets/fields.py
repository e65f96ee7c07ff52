"""Record-field validation (病例字段校验) shared by quality control: what the grouper and pricing reject.

The CHS-DRG kernel (``grouper/drg/kernel.py``) and case pricing (``weights/settlement/points.py``) reject a
record for the reasons of ``codesets/reasons.csv`` (areas ``group`` and ``pricing``). This
module states the same checks over Arrow columns so that quality control can report
*every* reason a record would be rejected for (the kernel stops at the first), before
grouping. The limits are data, read from the same place the kernel reads them: the
scheme's ``validation`` table (``[validation]`` of ``grouper/drg/rules/chs-drg-1.x.toml``,
copied into every compiled scheme); sex codes are ``codesets/sex_codes.csv``. A test runs
the grouper, pricing and QC over the same bad records and holds them equal.

The column readers (:func:`canonical_columns`, :func:`code_list`, :func:`numeric`,
:func:`text`) are the Arrow boundary's (``arrowio``, below every layer), so QC reads a column
exactly as the grouper does.
"""
from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import canonical_columns, code_list, month_of, numeric, text  # noqa: F401 (re-exported for QC)
from drgdip.codesets.record import BY_NAME, GROUPING_COLUMNS

#: The general rules file whose ``[validation]`` table the compiler copies into schemes.
DEFAULT_RULES_TOML = Path(__file__).resolve().parents[1] / "grouper" / "drg" / "rules" / "chs-drg-1.x.toml"

#: Numeric record fields the grouper reads (a present but unreadable value: BAD_VALUE).
GROUPER_NUMBERS: tuple[str, ...] = tuple(c for c in GROUPING_COLUMNS if BY_NAME[c].type == pa.float64())


# ---------------------------------------------------------------- column readers

# canonical_columns, code_list, numeric, text: the Arrow boundary's own (imported above)


# ---------------------------------------------------------------- limits and codes (data)

@lru_cache(maxsize=4)
def _toml_validation(path: str) -> dict:
    with open(path, "rb") as fh:
        return dict(tomllib.load(fh).get("validation", {}))


def grouper_limits(validation: dict | None = None) -> dict:
    """The grouper's validation limits: a scheme's ``validation`` table (``scheme.validation``)
    over the default rules file's ``[validation]`` over ``validation_limits.toml``."""
    with open(Path(__file__).with_name("validation_limits.toml"), "rb") as fh:
        out = tomllib.load(fh)
    out.update(_toml_validation(str(DEFAULT_RULES_TOML)))
    out.update(validation or {})
    return out


@lru_cache(maxsize=1)
def sex_codes() -> dict[str, int]:
    """Sex as written (upper case) → 1 male, 2 female (``sex_codes.csv``)."""
    with open(Path(__file__).with_name("sex_codes.csv"), encoding="utf-8", newline="") as fh:
        return {row["written"].strip().upper(): int(row["sex"]) for row in csv.DictReader(fh)}


# ---------------------------------------------------------------- the checks

@dataclass
class Problem:
    """Records failing one check: ``mask`` per record, the ``field`` read and its ``value``."""
    reason: str
    field: str
    mask: np.ndarray
    value: pa.Array


def _np(a, fill) -> np.ndarray:
    return np.asarray(pc.fill_null(a, fill).to_numpy(zero_copy_only=False))


def _as_text(a: pa.Array) -> pa.Array:
    return a.cast(pa.string())


def grouping_problems(columns: dict, n: int, limits: dict | None = None) -> list[Problem]:
    """Every field check of the grouping kernel that fails, per record (not only the first).

    ``columns``: canonical name → column (absent fields missing). A field is read as the
    kernel reads it; the checks and their order of dependence are the kernel's: BAD_VALUE
    (a numeric field present but unreadable), MISSING_SEX / INVALID_SEX, MISSING_AGE /
    INVALID_AGE (0 to ``max_age_years``), and for age under one year MISSING_AGE_DAYS /
    INVALID_AGE_DAYS (0 to ``max_age_days_under_one``), then for a newborn (age in days at
    most ``newborn_max_age_days``) MISSING_BIRTH_WEIGHT / INVALID_BIRTH_WEIGHT
    (``min_birth_weight_g`` to ``max_birth_weight_g``). The principal-diagnosis checks are
    QC rules of their own (QC_PRINCIPAL_MISSING, QC_DIAGNOSIS_UNKNOWN)."""
    lim = grouper_limits(limits)
    out: list[Problem] = []
    nums, bad = {}, {}
    for f in GROUPER_NUMBERS:
        raw = columns.get(f)
        nums[f], b = numeric(raw, n)
        bad[f] = _np(b, False).astype(bool)
        if raw is not None:
            out.append(Problem("BAD_VALUE", f, bad[f], text(raw, n)))
    sex = text(columns.get("sex"), n)
    missing_sex = _np(pc.is_null(sex), True).astype(bool)
    known = _np(pc.is_in(pc.utf8_upper(sex), value_set=pa.array(sorted(sex_codes()))), False).astype(bool)
    out.append(Problem("MISSING_SEX", "sex", missing_sex, sex))
    out.append(Problem("INVALID_SEX", "sex", ~missing_sex & ~known, sex))
    age = _np(nums["age"], np.nan).astype(float)
    out.append(Problem("MISSING_AGE", "age", np.isnan(age) & ~bad["age"], _as_text(nums["age"])))
    with np.errstate(invalid="ignore"):
        out.append(Problem("INVALID_AGE", "age", (age < 0) | (age > float(lim["max_age_years"])),
                           _as_text(nums["age"])))
        infant = (age >= 0) & (age < 1)
        ad = _np(nums["age_days"], np.nan).astype(float)
        out.append(Problem("MISSING_AGE_DAYS", "age_days", infant & np.isnan(ad) & ~bad["age_days"],
                           _as_text(nums["age_days"])))
        out.append(Problem("INVALID_AGE_DAYS", "age_days",
                           infant & ((ad < 0) | (ad > float(lim["max_age_days_under_one"]))),
                           _as_text(nums["age_days"])))
        newborn = infant & (ad >= 0) & (ad <= float(lim["newborn_max_age_days"]))
        bw = _np(nums["birth_weight_g"], np.nan).astype(float)
        out.append(Problem("MISSING_BIRTH_WEIGHT", "birth_weight_g",
                           newborn & np.isnan(bw) & ~bad["birth_weight_g"], _as_text(nums["birth_weight_g"])))
        out.append(Problem("INVALID_BIRTH_WEIGHT", "birth_weight_g",
                           newborn & ((bw < float(lim["min_birth_weight_g"])) | (bw > float(lim["max_birth_weight_g"]))),
                           _as_text(nums["birth_weight_g"])))
    return out


def pricing_problems(columns: dict, n: int, fund_labels=None) -> list[Problem]:
    """The record checks of case pricing (``weights.settlement.points.price_cases``) that fail, per record.

    BAD_COST (total cost missing, unreadable, not finite or negative), BAD_PERSONAL_SHARE
    (unreadable or negative), UNKNOWN_FUND (the fund label is none of ``fund_labels``, the
    policy's labels; not checked without them), MISSING_HOSPITAL, BAD_DISCHARGE_DATE (a
    discharge date missing or whose month cannot be read). A column pricing requires that is absent
    is a file-level error there, so no check runs on it here."""
    out: list[Problem] = []
    if "total_cost" in columns:
        raw = columns["total_cost"]
        v, b = numeric(raw, n)
        cost = _np(v, np.nan).astype(float)
        with np.errstate(invalid="ignore"):
            mask = _np(b, False).astype(bool) | ~np.isfinite(cost) | (cost < 0)
        out.append(Problem("BAD_COST", "total_cost", mask, text(raw, n)))
    if "personal_share" in columns:
        raw = columns["personal_share"]
        v, b = numeric(raw, n)
        out.append(Problem("BAD_PERSONAL_SHARE", "personal_share",
                           _np(b, False).astype(bool) | (_np(v, 0.0) < 0), text(raw, n)))
    if "fund" in columns and fund_labels is not None:
        f = pc.utf8_lower(pc.fill_null(text(columns["fund"], n), ""))
        known = _np(pc.is_in(f, value_set=pa.array(sorted(str(x).lower() for x in fund_labels), pa.string())),
                    False).astype(bool)
        out.append(Problem("UNKNOWN_FUND", "fund", ~known, text(columns["fund"], n)))
    if "hospital_id" in columns:
        h = text(columns["hospital_id"], n)
        out.append(Problem("MISSING_HOSPITAL", "hospital_id", _np(pc.is_null(h), True).astype(bool), h))
    if "discharge_date" in columns:
        raw = columns["discharge_date"]
        out.append(Problem("BAD_DISCHARGE_DATE", "discharge_date",        # missing or unreadable
                           _np(pc.is_null(month_of(raw)), True).astype(bool), text(raw, n)))
    return out
