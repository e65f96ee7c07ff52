"""DIP (按病种分值付费) library API: build a catalogue, group cases, recommend, compare.

``build_catalog(history, policy=None, procedure_types=None, scheme=None) -> pa.Table``
    The local catalogue (本地化病种库) from history: one row per group, columns
    :data:`CATALOG_COLUMNS`; the build's parameters, the procedure type table used, the
    auxiliary catalogue (辅助目录) and the history rows left out (by reason) are JSON in
    the schema metadata under ``drgdip.dip`` (a ``.meta.json`` file beside a CSV).
``load_catalog(path) / write_catalog(table, path)``
``group_dip(table, catalog, auxiliary=True) -> pa.Table``
    Input columns unchanged + :data:`OUTPUT_COLUMNS`.
``recommend(record, catalog) -> list[dict]``
    Every candidate group of one record with its score and why it matches or not, best first.
``compare_catalogs(a, b) -> pa.Table``
    How two catalogues differ (ours, or the national DIP 2.0 layout: diagnosis code,
    procedure codes, score).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import (
    InputError,
    as_table,
    canonical_columns,
    code_list,
    numeric,
    read_table,
    text,
    write_table,
)
from drgdip.grouper.dip import keys as K
from drgdip.grouper.dip.match import (
    MATCH_NAMES,
    CompiledCatalog,
    compile_arrays,
    run_kernel,
)
from drgdip.grouper.drg.kernel import ensure_cache_dir  # noqa: F401  (numba's cache folder first: dip_match caches)

META_KEY = b"drgdip.dip"
FORMAT = "drgdip-dip-catalog/1"
KINDS = ("core", "comprehensive")
CATALOG_COLUMNS = ("group_key", "kind", "diagnosis", "procedures", "procedure_type", "cases",
                   "cases_trimmed", "mean_cost", "cv", "score")
OUTPUT_COLUMNS = ("dip_group", "dip_score", "dip_match", "dip_status", "dip_reason", "dip_cci",
                  "dip_coef_severity", "dip_coef_tumour", "dip_coef_age", "dip_coefficient", "dip_adjusted_score")
#: the Arrow type of each output column, known before any record is grouped (Spark's mapInArrow needs it)
OUTPUT_TYPES = {"dip_group": pa.string(), "dip_score": pa.float64(), "dip_match": pa.string(),
                "dip_status": pa.string(), "dip_reason": pa.string(), "dip_cci": pa.int64(),
                "dip_coef_severity": pa.float64(), "dip_coef_tumour": pa.float64(), "dip_coef_age": pa.float64(),
                "dip_coefficient": pa.float64(), "dip_adjusted_score": pa.float64()}
BUILTIN_TYPES_SOURCE = "built-in teaching table grouper/dip/dip_procedure_types.csv (ICD-9-CM-3 section titles; not an official table)"


# ---------------------------------------------------------------- procedure types

def types_from_scheme(scheme) -> dict[str, str]:
    """Procedure types derived from a compiled CHS-DRG scheme: codes in the procedure lists
    of surgical ADRGs (second letter A–J) are surgery, of operative-procedure ADRGs (K–Q)
    therapeutic (surgery wins when both)."""
    from drgdip.grouper.drg.scheme import ROLE_APX, ROLE_PPX
    a = scheme.arrays
    list_type: dict[int, int] = {}
    for ai, code in enumerate(scheme.adrg_codes):
        letter = code[1:2].upper()
        t = K.TYPE_ID["surgery"] if "A" <= letter <= "J" else K.TYPE_ID["therapeutic"] if "K" <= letter <= "Q" else 0
        if not t:
            continue
        for alt in range(a["adrg_alt_ptr"][ai], a["adrg_alt_ptr"][ai + 1]):
            for term in range(a["alt_term_ptr"][alt], a["alt_term_ptr"][alt + 1]):
                for o in range(a["term_opt_ptr"][term], a["term_opt_ptr"][term + 1]):
                    if a["opt_role"][o] in (ROLE_PPX, ROLE_APX):
                        lst = int(a["opt_list"][o])
                        list_type[lst] = max(list_type.get(lst, 0), t)
    out = {}
    ptr, ids = a["proc_list_ptr"], a["proc_list_ids"]
    for p, code in enumerate(scheme.proc_codes):
        t = max((list_type.get(int(x), 0) for x in ids[ptr[p]:ptr[p + 1]]), default=0)
        if t:
            out[K.normalize_scalar(code)] = K.TYPES[t]
    return out


def resolve_type_table(policy, procedure_types=None, scheme=None) -> tuple[dict[str, str], str]:
    """(prefix → type, a sentence saying where it came from)."""
    table = K.builtin_type_table()
    source = BUILTIN_TYPES_SOURCE
    if scheme is not None:
        if isinstance(scheme, (str, os.PathLike)):
            try:
                from drgdip.grouper.drg.api import load_scheme
            except ImportError as exc:  # pragma: no cover - the DRG grouper is not installed
                raise InputError(f"cannot load a CHS-DRG scheme here ({exc})") from None
            scheme = load_scheme(scheme)
        derived = types_from_scheme(scheme)
        table.update(derived)
        name = getattr(scheme, "label", None) or "scheme"
        source = (f"derived from CHS-DRG scheme {name}: {len(derived)} procedures in surgical ADRG lists = surgery, "
                  f"in operative-procedure ADRG lists = therapeutic; other codes from the {BUILTIN_TYPES_SOURCE}")
    if procedure_types is not None:
        given = dict(procedure_types) if isinstance(procedure_types, dict) else K.read_type_table(procedure_types)
        bad = [k for k, v in given.items() if v not in K.TYPES[1:]]
        if bad:
            raise InputError(f"procedure type table: {bad[0]!r} has a type outside {', '.join(K.TYPES[1:])}")
        table.update({K.normalize_scalar(k): v for k, v in given.items()})
        where = procedure_types if not isinstance(procedure_types, dict) else "given as a mapping"
        source = f"procedure type table {where} ({len(given)} entries) over " + source
    if policy.procedure_types:
        table.update(policy.procedure_types)
        source += f"; {len(policy.procedure_types)} overrides from the policy's [dip.procedure_types]"
    return dict(sorted(table.items())), source


def output_schema() -> pa.Schema:
    """The result columns :func:`group_dip` appends, with their types, in order."""
    return pa.schema([(n, OUTPUT_TYPES[n]) for n in OUTPUT_COLUMNS])


# ---------------------------------------------------------------- cases → keys

@dataclass
class _Cases:
    n: int
    cols: dict
    diagnoses: pa.ListArray
    procedures: pa.ListArray
    principal: pa.Array
    subcat: pa.Array
    cat: pa.Array
    counted: pa.ListArray
    ctype: np.ndarray        # 0..3, -1 when the record cannot be keyed
    reason: np.ndarray       # "" or the invalid reason code


def _cases(table: pa.Table, excluded, type_table) -> _Cases:
    n = table.num_rows
    cols = canonical_columns(table.schema)
    if "diagnoses" not in cols:
        raise InputError("records have no diagnoses column (诊断编码, diag_code or an alias of it)")
    diags = K.normalize_array(code_list(table[cols["diagnoses"]], n))
    procs = code_list(table[cols["procedures"]], n) if "procedures" in cols else code_list(None, n)
    prin = K.principal(diags)
    sub = K.diagnosis_subcategory(prin)
    cat = K.diagnosis_category(sub)
    counted = K.counted_procedures(procs, excluded)
    ctype, unknown = K.case_types(counted, type_table)
    reason = np.full(n, "", dtype=object)
    reason[unknown > 0] = "DIP_BAD_PROCEDURE"
    reason[pc.is_null(sub).to_numpy(zero_copy_only=False)] = "DIP_BAD_DIAGNOSIS"
    reason[pc.is_null(prin).to_numpy(zero_copy_only=False)] = "MISSING_DIAGNOSIS"
    ctype = np.where(reason == "", ctype, -1).astype(np.int8)
    return _Cases(n, cols, diags, procs, prin, sub, cat, counted, ctype, reason)


def _core_keys(c: _Cases) -> pa.Array:
    return pc.binary_join_element_wise(c.subcat, K.procedure_key(c.counted), "|")


def _comp_keys(c: _Cases) -> pa.Array:
    names = pa.array(K.TYPES)
    tname = names.take(pa.array(np.maximum(c.ctype, 0).astype(np.int64)))
    return pc.binary_join_element_wise(c.cat, tname, "|")


def _np(a, fill):
    return pc.fill_null(a, fill).to_numpy(zero_copy_only=False)


def _ages(table, cols, n):
    age = _np(numeric(table[cols["age"]], n)[0], np.nan) if "age" in cols else np.full(n, np.nan)
    days = _np(numeric(table[cols["age_days"]], n)[0], np.nan) if "age_days" in cols else np.full(n, np.nan)
    return age, days


# ---------------------------------------------------------------- files

def catalog_meta(catalog: pa.Table) -> dict:
    raw = (catalog.schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def write_catalog(catalog: pa.Table, path) -> None:
    """Parquet keeps the metadata inside; CSV gets ``<name>.meta.json`` beside it."""
    path = Path(path)
    write_table(catalog, path)
    if path.suffix.lower() == ".csv":
        from drgdip.arrowio import publish, temp_path
        side = _sidecar(path)
        tmp = temp_path(side)
        tmp.write_text(json.dumps(catalog_meta(catalog), ensure_ascii=False, sort_keys=True, indent=1) + "\n",
                       encoding="utf-8")
        publish(tmp, side)


def load_catalog(path) -> pa.Table:
    """A catalogue file (ours, Parquet or CSV) as a checked table with its metadata."""
    if isinstance(path, pa.Table):
        return _check_catalog(path, catalog_meta(path), "catalogue")
    path = Path(path)
    t = read_table(path)
    meta = catalog_meta(t)
    side = _sidecar(path)
    if not meta and side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{side}: not valid JSON ({exc})") from None
    return _check_catalog(t, meta, str(path))


def _check_catalog(t: pa.Table, meta: dict, where: str) -> pa.Table:
    need = ("group_key", "kind", "diagnosis", "procedures", "score")
    missing = [c for c in need if c not in t.column_names]
    if missing:
        raise InputError(f"{where}: not a DIP catalogue, missing column(s) {', '.join(missing)}")
    n = t.num_rows
    keys = text(t["group_key"], n)
    if pc.any(pc.is_null(keys)).as_py():
        raise InputError(f"{where}: a row has no group_key")
    if len(pc.unique(keys)) != n:
        raise InputError(f"{where}: group_key values are not unique")
    kinds = text(t["kind"], n)
    if not pc.all(pc.fill_null(pc.is_in(kinds, pa.array(KINDS)), False)).as_py():
        raise InputError(f"{where}: kind must be core or comprehensive on every row")
    score, bad = numeric(t["score"], n)
    if pc.any(bad).as_py() or not pc.all(pc.fill_null(pc.greater(score, 0), False)).as_py():
        raise InputError(f"{where}: every score must be a positive number")
    ptype = text(t["procedure_type"], n) if "procedure_type" in t.column_names else pa.nulls(n, pa.string())
    comp = _np(pc.equal(kinds, "comprehensive"), False)
    if comp.any() and not pc.all(pc.fill_null(pc.is_in(ptype, pa.array(K.TYPES)), False).filter(pa.array(comp))).as_py():
        raise InputError(f"{where}: comprehensive rows need a procedure_type ({', '.join(K.TYPES)})")
    procs = K.counted_procedures(code_list(t["procedures"], n))
    cols = {"group_key": keys, "kind": kinds, "diagnosis": text(t["diagnosis"], n), "procedures": procs,
            "procedure_type": ptype, "score": score}
    for name in ("cases", "cases_trimmed", "mean_cost", "cv"):
        if name in t.column_names:
            cols[name] = numeric(t[name], n)[0]
    out = pa.table(cols)
    out = out.select([c for c in CATALOG_COLUMNS if c in out.column_names])
    if "review_group" in t.column_names:      # optional: 单议病种 flag (settlement's special review)
        out = out.append_column("review_group", text(t["review_group"], n))
    meta = dict(meta)
    meta.setdefault("procedure_types", K.builtin_type_table())
    meta.setdefault("procedure_type_source", BUILTIN_TYPES_SOURCE)
    meta.setdefault("excluded_procedures", [])
    meta.setdefault("auxiliary", {"enabled": [], "rows": []})
    return out.replace_schema_metadata({META_KEY: json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()})


# ---------------------------------------------------------------- grouping

@dataclass
class DipCatalog:
    """A loaded catalogue compiled for the kernel (compile once, group many batches)."""
    table: pa.Table
    meta: dict
    compiled: CompiledCatalog


def prepare_catalog(catalog) -> DipCatalog:
    if isinstance(catalog, DipCatalog):
        return catalog
    t = load_catalog(catalog)
    meta = catalog_meta(t)
    kinds = t["kind"].to_pylist()
    core = [i for i, k in enumerate(kinds) if k == "core"]
    comp = [i for i, k in enumerate(kinds) if k == "comprehensive"]
    diag = t["diagnosis"].to_pylist()
    procs = t["procedures"].to_pylist()
    keys = t["group_key"].to_pylist()
    score = t["score"].to_pylist()
    ptab = meta["procedure_types"]
    core_types = K.case_types(t["procedures"].take(pa.array(core, pa.int64())), ptab)[0] if core else []
    ptype = t["procedure_type"].to_pylist()
    cc = compile_arrays(
        [diag[i] for i in core], [procs[i] for i in core], list(core_types), [score[i] for i in core],
        [keys[i] for i in core], core,
        [diag[i] for i in comp], [K.TYPE_ID[ptype[i]] for i in comp], comp)
    return DipCatalog(t, meta, cc)


def _encode(c: _Cases, cc: CompiledCatalog):
    d = _np(pc.index_in(c.subcat, value_set=pa.array(cc.diag_vocab, pa.string())), -1).astype(np.int32)
    cat = _np(pc.index_in(c.cat, value_set=pa.array(cc.cat_vocab, pa.string())), -1).astype(np.int32)
    values, parents = K._flat(c.counted)
    ids = _np(pc.index_in(values, value_set=pa.array(cc.proc_vocab, pa.string())), -1).astype(np.int32)
    known = ids >= 0
    unknown = np.bincount(parents[~known], minlength=c.n).astype(np.int64)
    counts = np.bincount(parents[known], minlength=c.n)
    ptr = np.zeros(c.n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return d, cat, unknown, ptr, ids[known]


#: dip_reason by reason id (:func:`_case_arrays`): matched kinds 1-3, then the others
REASON_NAMES = ("", "DIP_EXACT", "DIP_CONTAINED", "DIP_COMPREHENSIVE", "DIP_NO_GROUP",
                "DIP_BAD_PROCEDURE", "DIP_BAD_DIAGNOSIS", "MISSING_DIAGNOSIS")
_NO_GROUP, _BAD_PROCEDURE, _BAD_DIAGNOSIS, _MISSING_DIAGNOSIS = 4, 5, 6, 7


def _listed(table: pa.Table, name: str | None, n: int):
    """(CSR ptr, entry of each listed code, distinct codes normalised) of a code column: a list
    column's values (dictionary-encoded ones as they are), text split on the separators."""
    from drgdip.grouper.dip.auxiliary import listed_entries
    if name is None:
        return listed_entries(code_list(None, n))[0], np.zeros(0, np.int32), pa.array([], pa.string())
    col = table[name]
    t = col.type
    if not ((pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_dictionary(t.value_type)):
        col = code_list(col, n)
    elif isinstance(col, pa.ChunkedArray) and col.num_chunks != 1:
        col = pa.chunked_array([c.cast(pa.list_(pa.string())) for c in col.chunks]).combine_chunks()
    ptr, entry, codes = listed_entries(col)
    return ptr, entry, K._normalize_distinct(codes)


def _entries(values: np.ndarray, entry: np.ndarray, missing):
    return np.append(values, np.array([missing], dtype=values.dtype))[entry]


@dataclass
class _Arrays:
    """The kernel's input for a batch, and the record's keying failure (0 or a reason id)."""
    reason: np.ndarray
    d: np.ndarray
    cat: np.ndarray
    ctype: np.ndarray
    unknown: np.ndarray
    ptr: np.ndarray
    ids: np.ndarray
    feats: dict


def _case_arrays(table: pa.Table, meta: dict, cc: CompiledCatalog, features: bool) -> _Arrays:
    """What :func:`_cases` and :func:`_encode` give (and the auxiliary features of
    ``auxiliary.case_features``), computed once per distinct code string of the batch (each
    entry of a dictionary column's dictionary, else of the batch's own dictionary): normalised,
    principal part, subcategory and category ids, procedure type and vocabulary id, CCI
    family, tumour flags; the records only take their entries' results."""
    from drgdip.grouper.dip import auxiliary as A
    from drgdip.grouper.dip.match import case_procedures, row_bits, secondary_cci
    n = table.num_rows
    cols = canonical_columns(table.schema)
    if "diagnoses" not in cols:
        raise InputError("records have no diagnoses column (诊断编码, diag_code or an alias of it)")
    dptr, dentry, dcodes = _listed(table, cols["diagnoses"], n)
    pptr, pentry, pcodes = _listed(table, cols.get("procedures"), n)
    # diagnoses: the principal's part before '+', its subcategory and category, per entry
    head = pc.replace_substring_regex(dcodes, r"\+.*$", "")
    head = pc.if_else(pc.equal(head, ""), pa.scalar(None, pa.string()), head)
    sub = K.diagnosis_subcategory(head)
    has = dptr[1:] > dptr[:-1]
    first = np.where(has, dentry[np.minimum(dptr[:-1], max(len(dentry) - 1, 0))] if len(dentry) else -1, -1)
    first = first.astype(np.int32)
    prin_ok = _entries(_np(pc.is_valid(head), False).astype(bool), first, False)
    sub_ok = _entries(_np(pc.is_valid(sub), False).astype(bool), first, False)
    d = _entries(_np(pc.index_in(sub, value_set=pa.array(cc.diag_vocab, pa.string())), -1).astype(np.int32), first, -1)
    ci = _entries(_np(pc.index_in(K.diagnosis_category(sub), value_set=pa.array(cc.cat_vocab, pa.string())), -1)
                  .astype(np.int32), first, -1)
    # procedures: counted (normalised, not excluded), their type and vocabulary id, per entry
    keep = _np(pc.is_valid(pcodes), False).astype(bool)
    if meta["excluded_procedures"]:
        keep &= ~K.starts_with_any(pcodes, meta["excluded_procedures"])
    canon = _np(pc.dictionary_encode(pcodes).indices, -1).astype(np.int64)
    vocab = _np(pc.index_in(pcodes, value_set=pa.array(cc.proc_vocab, pa.string())), -1).astype(np.int32)
    ptype = K.procedure_types(pcodes, meta["procedure_types"])
    ctype, bad_type, unknown, ptr, ids = case_procedures(pptr, pentry, keep, canon, vocab, ptype)
    reason = np.zeros(n, dtype=np.int8)
    reason[bad_type > 0] = _BAD_PROCEDURE
    reason[~sub_ok] = _BAD_DIAGNOSIS
    reason[~prin_ok] = _MISSING_DIAGNOSIS
    ctype = np.where(reason == 0, ctype, -1).astype(np.int8)
    fam, wt, nf = A.cci_families(dcodes)
    cci = secondary_cci(dptr, _entries(fam, dentry, -1), _entries(wt, dentry, 0), nf)
    feats = {"cci": cci}
    aux = meta.get("auxiliary", {})
    if features:
        tum = aux["tumour"]
        is_tumour = _entries(A.starts_with_any(head, tum["principal"]), first, False)
        dbits = np.zeros(len(dcodes), np.uint8)
        pbits = np.zeros(len(pcodes), np.uint8)
        for k, (dx, px) in enumerate(((tum["metastasis"], ()),
                                      (tum["radiotherapy_diagnoses"], tum["radiotherapy_procedures"]),
                                      (tum["chemotherapy_diagnoses"], tum["chemotherapy_procedures"]))):
            if dx:
                dbits |= (A.starts_with_any(dcodes, dx).astype(np.uint8) << k)
            if px:
                pbits |= (A.starts_with_any(pcodes, px).astype(np.uint8) << k)
        bits = row_bits(dptr, _entries(dbits, dentry, 0), True) | row_bits(pptr, _entries(pbits, pentry, 0), False)
        flags = ((bits[:, None] >> np.arange(len(A.TUMOUR_FLAGS), dtype=np.uint8)) & 1).astype(bool)
        flags &= is_tumour[:, None]
        age, days = _ages(table, cols, n)
        feats.update({"severity_bin": A.severity_bin(cci, aux["severity_bins"]), "is_tumour": is_tumour,
                      "tumour_flags": flags, "age_band": A.age_band(age, days, aux["age_bands"])})
    return _Arrays(reason, d, ci, ctype, unknown, ptr, ids, feats)


def group_dip(table, catalog, auxiliary: bool = True) -> pa.Table:
    """Input columns unchanged + dip_group, dip_score, dip_match, dip_status, dip_reason,
    dip_cci and the auxiliary coefficients (columns of the same names in the input are replaced)."""
    from drgdip.grouper.dip import auxiliary as A

    table = as_table(table)
    cat = prepare_catalog(catalog)
    meta = cat.meta
    aux = meta.get("auxiliary", {})
    a = _case_arrays(table, meta, cat.compiled, bool(aux.get("enabled")))
    n = table.num_rows
    kind, row = run_kernel(cat.compiled, a.d, a.cat, a.ctype, a.unknown, a.ptr, a.ids)
    grouped = kind > 0
    safe = np.where(grouped, row, 0).astype(np.int64)
    mask = pa.array(~grouped)
    take = pa.array(safe)
    group = pc.if_else(mask, pa.scalar(None, pa.string()), cat.table["group_key"].combine_chunks().take(take)) \
        if cat.table.num_rows else pa.nulls(n, pa.string())
    score = np.where(grouped, cat.table["score"].to_numpy()[safe] if cat.table.num_rows else 0.0, np.nan)
    reason = np.where(a.reason > 0, a.reason, np.where(grouped, kind, _NO_GROUP)).astype(np.int64)
    status = np.where(grouped, 0, np.where(reason == _NO_GROUP, 1, 2))
    coefs = {"severity": np.ones(n), "tumour": np.ones(n), "age": np.ones(n)}
    cci = a.feats["cci"]
    if aux.get("enabled") and auxiliary:
        coefs = A.apply(a.feats, aux.get("rows", []), aux, n)
    coef = np.round(coefs["severity"] * coefs["tumour"] * coefs["age"], 4)

    def col(x, typ):
        return pa.array(np.where(grouped, x, np.nan) if typ == pa.float64() else x, typ, mask=~grouped)

    out = {
        "dip_group": group,
        "dip_score": col(score, pa.float64()),
        "dip_match": pc.if_else(mask, pa.scalar(None, pa.string()),
                                pa.array(MATCH_NAMES, pa.string()).take(pa.array(kind.astype(np.int64)))),
        "dip_status": pa.array(["grouped", "ungroupable", "invalid"], pa.string()).take(pa.array(status)),
        "dip_reason": pa.array(REASON_NAMES, pa.string()).take(pa.array(reason)),
        "dip_cci": pa.array(cci, pa.int64()),
        "dip_coef_severity": col(np.round(coefs["severity"], 4), pa.float64()),
        "dip_coef_tumour": col(np.round(coefs["tumour"], 4), pa.float64()),
        "dip_coef_age": col(np.round(coefs["age"], 4), pa.float64()),
        "dip_coefficient": col(coef, pa.float64()),
        "dip_adjusted_score": col(np.round(score * coef, 4), pa.float64()),
    }
    keep = [c for c in table.column_names if c not in out]
    base = table.select(keep)
    for name, arr in out.items():
        base = base.append_column(name, arr)
    return base


# ---------------------------------------------------------------- recommend

def recommend(record: dict, catalog) -> list[dict]:
    """Every candidate group for one record, best first: the group the grouper picks, then
    the other matching groups, then the rest of the record's subcategory and category by
    score; each with why it matches or not."""
    if not isinstance(record, dict):
        raise InputError("a record is a JSON object with at least diagnoses (and procedures)")
    rec = {k: ("|".join(map(str, v)) if isinstance(v, list) else v) for k, v in record.items()}
    table = pa.Table.from_pylist([rec])
    cat = prepare_catalog(catalog)
    res = group_dip(table, cat)
    r = res.slice(0, 1).to_pylist()[0]
    c = _cases(table, cat.meta["excluded_procedures"], cat.meta["procedure_types"])
    if c.reason[0]:
        from drgdip.codesets.reasons import describe
        try:
            msg = describe(c.reason[0])
        except KeyError:
            msg = c.reason[0]
        raise InputError(f"record cannot be keyed: {c.reason[0]}: {msg}")
    sub, cat_code = c.subcat[0].as_py(), c.cat[0].as_py()
    case_procs = set(c.counted[0].as_py())
    ctype = int(c.ctype[0])
    t = cat.table
    out = []
    ptab = cat.meta["procedure_types"]
    for i, (key, kind, dg, procs, ptype, score) in enumerate(zip(
            t["group_key"].to_pylist(), t["kind"].to_pylist(), t["diagnosis"].to_pylist(),
            t["procedures"].to_pylist(), t["procedure_type"].to_pylist(), t["score"].to_pylist())):
        if not ((kind == "core" and dg == sub) or (kind == "comprehensive" and dg == cat_code)):
            continue
        gs = set(procs)
        if kind == "core":
            gtype = int(K.case_types(pa.array([sorted(gs)], pa.list_(pa.string())), ptab)[0][0])
            if gs == case_procs:
                match, why = "exact", "procedure set equals the record's counted procedures"
            elif not gs:
                match, why = None, "conservative group (no procedure); the record has counted procedures"
            elif not gs <= case_procs:
                match, why = None, "the record lacks " + ", ".join(sorted(gs - case_procs))
            elif gtype != ctype:
                match, why = None, (f"the record has all of its procedures but its procedure type is "
                                    f"{K.TYPES[ctype]}, the group's is {K.TYPES[gtype]}")
            else:
                match, why = "contained", "the record has all its procedures plus " + ", ".join(sorted(case_procs - gs))
        else:
            if ptype == K.TYPES[ctype]:
                match, why = "comprehensive", f"comprehensive group of category {cat_code}, type {ptype} ({K.TYPE_ZH[ptype]})"
            else:
                match, why = None, f"the record's procedure type is {K.TYPES[ctype]}, not {ptype}"
        out.append({"group_key": key, "kind": kind, "diagnosis": dg, "procedures": sorted(gs),
                    "procedure_type": ptype, "score": score, "match": match,
                    "chosen": key == r["dip_group"], "why": why})
    order = {"exact": 0, "contained": 1, "comprehensive": 2, None: 3}
    out.sort(key=lambda x: (not x["chosen"], order[x["match"]], -x["score"], -len(x["procedures"]), x["group_key"]))
    for rank, x in enumerate(out, start=1):
        x["rank"] = rank
        if x["chosen"]:
            x["coefficient"] = r["dip_coefficient"]
            x["adjusted_score"] = r["dip_adjusted_score"]
    return out


# ---------------------------------------------------------------- compare

_REF_ALIASES = {
    "diagnosis": ("diagnosis", "diagnosis_code", "主要诊断编码", "主要诊断代码", "诊断编码", "主诊断编码", "疾病编码", "病种编码"),
    "procedures": ("procedures", "procedure_codes", "手术操作编码", "手术操作代码", "操作编码", "手术编码"),
    "score": ("score", "分值", "病种分值", "基准分值"),
    "cases": ("cases", "病例数", "例数"),
}
_NO_PROCEDURE_WORDS = ("", "none", "-", "无", "保守治疗", "保守治療")


def read_reference(data) -> pa.Table:
    """A catalogue in our layout or the national DIP 2.0 layout as (key, diagnosis, procedures, score, cases)."""
    t = as_table(data)
    where = str(data) if isinstance(data, (str, os.PathLike)) else "catalogue"
    low = {n.strip().lower(): n for n in t.column_names}
    pick = {}
    for role, names in _REF_ALIASES.items():
        for a in names:
            if a.lower() in low:
                pick[role] = low[a.lower()]
                break
    missing = [r for r in ("diagnosis", "score") if r not in pick]
    if missing:
        raise InputError(f"{where}: no {' or '.join(missing)} column (expected e.g. {_REF_ALIASES[missing[0]][:3]})")
    n = t.num_rows
    dg = K.normalize_array(text(t[pick["diagnosis"]], n))
    kind = text(t["kind"], n) if "kind" in t.column_names else pa.array(["core"] * n)
    sub = K.diagnosis_subcategory(dg)
    is_cat = pc.fill_null(pc.match_substring_regex(dg, r"^[A-Z][0-9]{2}$"), False)
    diag = pc.if_else(pc.equal(kind, "comprehensive"), dg, pc.if_else(is_cat, dg, sub))
    if "procedures" in pick and pa.types.is_list(t.schema.field(pick["procedures"]).type):
        procs = K.counted_procedures(code_list(t[pick["procedures"]], n))
    elif "procedures" in pick:
        ptext = text(t[pick["procedures"]], n)
        ptext = pc.if_else(pc.is_in(pc.fill_null(ptext, ""), pa.array(_NO_PROCEDURE_WORDS)), pa.scalar(None, pa.string()), ptext)
        ptext = pc.replace_substring_regex(pc.fill_null(ptext, ""), r"[+/、\s]+", "|")
        procs = K.counted_procedures(code_list(ptext, n))
    else:
        procs = K.counted_procedures(code_list(None, n))
    if "group_key" in t.column_names and "kind" in t.column_names:
        key = text(t["group_key"], n)
    else:
        key = pc.binary_join_element_wise(diag, K.procedure_key(procs), "|")
    score, _ = numeric(t[pick["score"]], n)
    cases = numeric(t[pick["cases"]], n)[0] if "cases" in pick else pa.nulls(n, pa.float64())
    return pa.table({"key": key, "diagnosis": diag, "procedures": procs, "score": score, "cases": cases})


def compare_catalogs(a, b) -> pa.Table:
    """One row per group key in either catalogue: in_a, in_b, scores, score_ratio = b / a."""
    ra, rb = read_reference(a), read_reference(b)
    for name, r in (("first", ra), ("second", rb)):
        if len(pc.unique(r["key"])) != r.num_rows:
            raise InputError(f"the {name} catalogue lists a diagnosis x procedure key twice")
    keys = sorted(set(ra["key"].to_pylist()) | set(rb["key"].to_pylist()))
    ka = {k: i for i, k in enumerate(ra["key"].to_pylist())}
    kb = {k: i for i, k in enumerate(rb["key"].to_pylist())}

    def pick(r, kmap, col):
        vals = r[col].to_pylist()
        return [vals[kmap[k]] if k in kmap else None for k in keys]

    da, db = pick(ra, ka, "diagnosis"), pick(rb, kb, "diagnosis")
    pa_, pb = pick(ra, ka, "procedures"), pick(rb, kb, "procedures")
    sa, sb = pick(ra, ka, "score"), pick(rb, kb, "score")
    ratio = [round(y / x, 4) if x and y else None for x, y in zip(sa, sb)]
    status = ["both" if k in ka and k in kb else "only_a" if k in ka else "only_b" for k in keys]
    return pa.table({
        "group_key": pa.array(keys, pa.string()),
        "diagnosis": pa.array([x if x is not None else y for x, y in zip(da, db)], pa.string()),
        "procedures": pa.array([x if x is not None else y for x, y in zip(pa_, pb)], pa.list_(pa.string())),
        "status": pa.array(status, pa.string()),
        "score_a": pa.array(sa, pa.float64()), "score_b": pa.array(sb, pa.float64()),
        "score_ratio": pa.array(ratio, pa.float64()),
        "cases_a": pa.array(pick(ra, ka, "cases"), pa.float64()), "cases_b": pa.array(pick(rb, kb, "cases"), pa.float64()),
    })


# ---------------------------------------------------------------- files

#: canonical input columns :func:`group_dip` reads
INPUT_ROLES = ("diagnoses", "procedures", "age", "age_days")


def file_plan(names: list[str], keep=None) -> tuple[list[str] | None, list[str], bool]:
    """(input columns :func:`group_dip_file` reads, None for all; input columns it writes; whether
    it adds a ``row`` key), for an input with columns NAMES: as ``grouper.drg.api.output_plan``,
    the columns read being those grouping needs (:data:`INPUT_ROLES`) and the written ones."""
    from drgdip.grouper.drg.api import output_plan
    read, write, add_row = output_plan(names, keep, need_all=True)
    if read is None and not (keep == "all" or (not isinstance(keep, str) and "all" in (keep or []))):
        roles = canonical_columns(pa.schema([(n, pa.null()) for n in names]))
        need = {roles[c] for c in INPUT_ROLES if c in roles} | set(write)
        read = [n for n in names if n in need]
    return read, write, add_row


def _list_columns(src, names: list[str] | None, batch_size: int) -> list[str]:
    """The code columns of a Parquet SRC stored as lists: read as dictionaries (each distinct code
    once per row group) by :func:`group_dip_file`. Dictionaries are read row group by row group,
    so only when every row group but the last holds a whole number of batches: the batches, and
    so the output's row groups, are then those of a plain read (the same output bytes)."""
    from drgdip.arrowio import file_format
    if file_format(src) != "parquet":
        return []
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(src)
    meta = pf.metadata
    if any(meta.row_group(g).num_rows % batch_size for g in range(meta.num_row_groups - 1)):
        return []
    schema = pf.schema_arrow
    roles = canonical_columns(schema)
    out = []
    for c in ("diagnoses", "procedures"):
        name = roles.get(c)
        if name is not None and (names is None or name in names):
            t = schema.field(name).type
            if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_string(t.value_type):
                out.append(name)
    return out


def group_dip_file(src, dst, catalog, batch_size: int | None = None, progress=None, keep=None,
                   encoding: str | None = None) -> int:
    """Stream SRC through :func:`group_dip` into DST (written atomically); returns the records written.

    Like :func:`grouper.drg.api.group_file`: DST holds the key column (the input's ``id``, else
    ``row``, the 0-based input position), the ``keep`` columns (``"all"``: every input column)
    and the ``dip_*`` result columns, one row per input record in input order."""
    from drgdip.arrowio import DEFAULT_BATCH_SIZE, file_columns, transform_file
    from drgdip.grouper.drg.api import ROW_COLUMN

    prepared = prepare_catalog(catalog)
    read, write, add_row = file_plan(file_columns(src, encoding), keep)
    seen = 0

    def step(batch):
        nonlocal seen
        out = group_dip(batch, prepared)
        results = [n for n in out.column_names if n.startswith("dip_") and n not in write]
        out = out.select(write + results)
        if add_row:
            out = out.add_column(0, ROW_COLUMN, pa.array(np.arange(seen, seen + out.num_rows, dtype=np.int64)))
        seen += batch.num_rows
        return out

    batch_size = batch_size or DEFAULT_BATCH_SIZE
    dicts = [c for c in _list_columns(src, read, batch_size) if c not in write]   # written ones stay as they are
    return transform_file(src, dst, step, batch_size, progress, encoding=encoding, columns=read,
                          read_dictionary=dicts or None)
