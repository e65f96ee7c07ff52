"""Synthetic discharge records (合成病案) for benchmarks, drawn from a scheme's own code lists.

Shapes follow the conformance cases: ``id, sex, age, age_days, birth_weight_g, los_days,
discharge_disposition, diagnoses, procedures`` with codes '|'-joined (or ``list<string>``).
Principal diagnoses come from the scheme's MDC principal-diagnosis tables, newborns (about 5%)
from the newborn MDC's table when the scheme has one; 0-15 secondary diagnoses, 0-6 procedures,
about 1% of records carry a code that is in no code list. Fully vectorised and seeded: the same
(scheme, n, seed) always gives the same table.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NEWBORN_SHARE = 0.05
INVALID_SHARE = 0.01
MAX_SECONDARY = 15
MAX_PROCEDURES = 6
INVALID_CODE = "ZZZ.999x999"    # not a code in any ICD-10 edition


def _members(ptr: np.ndarray, ids: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """Code ids whose CSR list memberships (ptr/ids) meet any of ``lists``."""
    hit = np.isin(ids, lists)
    row = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    return np.unique(row[hit])


def principal_pools(scheme) -> tuple[np.ndarray, np.ndarray]:
    """(diagnosis ids in any MDC principal table, ids in the newborn MDC table or the same pool)."""
    a = scheme.arrays
    tables = a["mdc_table"][a["mdc_table"] >= 0]
    pool = _members(a["diag_list_ptr"], a["diag_list_ids"], tables)
    if len(pool) == 0:
        pool = np.arange(len(scheme.diag_codes))
    newborn = pool
    codes = list(scheme.mdc_codes)
    newborn_mdc = scheme.meta.get("newborn_mdc", "MDCP")
    if newborn_mdc in codes and a["mdc_table"][codes.index(newborn_mdc)] >= 0:
        nb = _members(a["diag_list_ptr"], a["diag_list_ids"], a["mdc_table"][[codes.index(newborn_mdc)]])
        if len(nb):
            newborn = nb
    return pool, newborn


def _joined(vocab: pa.Array, counts: np.ndarray, flat_ids: np.ndarray, as_lists: bool) -> pa.Array:
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    lists = pa.ListArray.from_arrays(pa.array(offsets), vocab.take(pa.array(flat_ids)))
    if as_lists:
        return lists
    text = pc.binary_join(lists, "|")
    return pc.if_else(pc.equal(pa.array(counts), 0), pa.scalar(None, pa.string()), text)


def synthetic_records(scheme, n: int, seed: int = 0, as_lists: bool = False) -> pa.Table:
    """``n`` synthetic discharge records for ``scheme`` (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    pool, newborn_pool = principal_pools(scheme)
    n_diag, n_proc = len(scheme.diag_codes), len(scheme.proc_codes)
    diag_vocab = pa.array(list(scheme.diag_codes) + [INVALID_CODE], type=pa.string())
    proc_vocab = pa.array(list(scheme.proc_codes), type=pa.string())

    newborn = rng.random(n) < NEWBORN_SHARE
    invalid = rng.random(n) < INVALID_SHARE
    sex = np.where(rng.random(n) < 0.5, "1", "2")
    age = np.where(newborn, 0, rng.integers(1, 96, n))
    age_days = np.where(newborn, rng.integers(0, 29, n), np.nan)
    weight = np.where(newborn, rng.integers(500, 4501, n), np.nan)
    los = np.maximum(1, rng.gamma(2.0, 4.0, n).astype(np.int64))
    disposition = rng.choice(np.array([1, 2, 3, 4, 5, 9]), n, p=[0.86, 0.04, 0.03, 0.03, 0.01, 0.03])

    pdx = np.where(newborn, newborn_pool[rng.integers(0, len(newborn_pool), n)], pool[rng.integers(0, len(pool), n)])
    pdx = np.where(invalid, n_diag, pdx)
    n_sec = rng.integers(0, MAX_SECONDARY + 1, n)
    counts = 1 + n_sec
    first = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    flat = rng.integers(0, n_diag, int(first[-1]))
    flat[first[:-1]] = pdx
    n_px = rng.integers(0, MAX_PROCEDURES + 1, n)
    px = rng.integers(0, max(n_proc, 1), int(n_px.sum())) if n_proc else np.zeros(0, dtype=np.int64)
    if n_proc == 0:
        n_px = np.zeros(n, dtype=np.int64)

    return pa.table({
        "id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "sex": pa.array(sex, type=pa.string()),
        "age": pa.array(age, type=pa.int32()),
        "age_days": pa.array(age_days, type=pa.float64(), from_pandas=True),
        "birth_weight_g": pa.array(weight, type=pa.float64(), from_pandas=True),
        "los_days": pa.array(los, type=pa.int32()),
        "discharge_disposition": pa.array(disposition.astype(np.int8)),
        "diagnoses": _joined(diag_vocab, counts, flat, as_lists),
        "procedures": _joined(proc_vocab, n_px, px, as_lists),
    })
