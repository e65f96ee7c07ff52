"""Compile a scheme's published tables and general rules into a :class:`Scheme`.

Like a regular-expression engine: compile once, then match many records. Inputs are
the folder's text tables (read by :mod:`grouper.drg.scheme_text`), the general rules
(``rules.toml`` in the folder, else ``grouper/drg/rules/chs-drg-1.x.toml``) and the
wording vocabulary (``grouper/drg/wording.toml``) for conditions stated in group names.
"""
from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from drgdip.arrowio import InputError
from drgdip.grouper.drg.scheme import (
    FIELDS,
    ROLE_APX,
    ROLE_ORPX,
    ROLE_ORPX_EXCEPT,
    ROLE_PPX,
    ROLES,
    Scheme,
)
from drgdip.grouper.drg.scheme_text import (
    ERRATA,
    Problem,
    SchemeText,
    read_scheme_text,
    wording,
)

COMPILER_VERSION = "2"
DEFAULT_RULES = Path(__file__).with_name("rules") / "chs-drg-1.x.toml"


class SchemeError(InputError):
    """A scheme that cannot be compiled; carries the problems found."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = problems or []


def load_rules(folder: Path, rules_path: str | Path | None = None) -> tuple[dict, Path]:
    path = Path(rules_path) if rules_path else (folder / "rules.toml" if (folder / "rules.toml").exists() else DEFAULT_RULES)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh), path
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SchemeError(f"{path}: cannot read the scheme's general rules: {exc}") from None


def _scheme_meta(folder: Path) -> dict:
    p = folder / "scheme.toml"
    if p.exists():
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    return {"name": folder.name, "official": None}


def name_conditions(name: str) -> list[tuple[str, float, float]]:
    """Conditions a group's name states (出生体重＜1500g, 小于等于6岁, 13天及以上, …)."""
    text = re.sub(r"\s+", "", name.replace("~~", ""))
    out = []
    for spec in wording().get("name_conditions", []):
        m = re.search(spec["pattern"], text)
        if not m:
            continue
        g = lambda k: float(m.group(spec[k]))  # noqa: E731
        lo, hi = -math.inf, math.inf
        if "lo" in spec:
            lo = g("lo")
        if "hi" in spec:
            hi = g("hi")
        if "hi_fixed" in spec:
            hi = float(spec["hi_fixed"])
        if "equals" in spec:
            lo = hi = float(spec["equals"])
        if "lt" in spec:
            hi = float(np.nextafter(g("lt"), -math.inf))
        if "gt" in spec:
            lo = float(np.nextafter(g("gt"), math.inf))
        if spec["field"] in [c[0] for c in out]:
            continue
        out.append((spec["field"], lo, hi))
    return out


def severity_of(name: str) -> int | None:
    text = re.sub(r"\s+", "", name.replace("~~", ""))
    for spec in wording().get("severity", []):
        if re.search(spec["pattern"], text):
            return int(spec["level"])
    return None


def _conds_text(cs) -> str:
    out = []
    for f, lo, hi in cs:
        if lo == hi:
            out.append(f"{f} = {lo:g}")
        elif lo == -math.inf:
            out.append(f"{f} ≤ {hi:g}")
        elif hi == math.inf:
            out.append(f"{f} ≥ {lo:g}")
        else:
            out.append(f"{lo:g} ≤ {f} ≤ {hi:g}")
    return ", ".join(out)


def _describe(a) -> str:
    """An ADRG's entry rule in words: alternatives (或) of terms (+) of lists."""
    alts = []
    for alt in a.alternatives:
        terms = []
        for term in alt:
            opts = [f"{a.lists[i].role}:{a.lists[i].heading}" + (f"[{len(a.lists[i].codes)}]" if a.lists[i].role in
                                                                   ("pdx", "odx", "adx", "ppx", "apx") else "")
                    for i in term]
            terms.append(opts[0] if len(opts) == 1 else "(" + " 或 ".join(opts) + ")")
        alts.append(" + ".join(terms))
    return " | 或 | ".join(alts)


def _csr(rows: list[list[int]], dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(rows) + 1, dtype=np.int32)
    for i, r in enumerate(rows):
        ptr[i + 1] = ptr[i] + len(r)
    flat = np.fromiter((x for r in rows for x in r), dtype=dtype, count=int(ptr[-1]))
    return ptr, flat


def compile_scheme(folder: str | Path, rules_path: str | Path | None = None, allow_gaps: bool = False,
                   audit: list | None = None) -> tuple[Scheme, list[Problem]]:
    """Compile a scheme folder. Raises :class:`SchemeError` on problems unless ``allow_gaps``.

    ``audit``: a list that receives, for every ADRG and DRG, how each part of its rule was
    read (see :func:`audit_scheme`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SchemeError(f"{folder}: not a scheme folder")
    try:
        st = read_scheme_text(folder)
    except FileNotFoundError as exc:
        raise SchemeError(str(exc)) from None
    rules, rules_file = load_rules(folder, rules_path)
    problems = list(st.problems)
    scheme = _build(st, rules, problems, audit)
    h = hashlib.sha256(st.source_hash.encode())
    h.update(Path(rules_file).read_bytes())
    h.update(Path(__file__).with_name("wording.toml").read_bytes())
    h.update(ERRATA.read_bytes())
    meta = _scheme_meta(folder)
    scheme.meta.update({
        "name": meta.get("name", folder.name), "version": str(meta.get("version", folder.name)),
        "official": meta.get("official"), "note": meta.get("note", ""), "source": folder.name,
        "source_hash": h.hexdigest(), "tables_hash": st.source_hash, "rules": rules.get("name", rules_file.name),
        "compiler_version": COMPILER_VERSION, "problems": len(problems),
        "errata": [list(e) for e in st.errata],
        "counts": {"mdc": len(st.mdcs), "adrg": len(st.adrgs), "drg": len(st.drgs),
                   "mcc": len(st.mcc), "cc": len(st.cc), "exclusion_tables": len(st.exclusions)},
    })
    if problems and not allow_gaps:
        raise SchemeError(f"{folder}: {len(problems)} line(s) could not be read; first: {problems[0]}", problems)
    return scheme, problems


def _build(st: SchemeText, rules: dict, problems: list[Problem], audit: list | None = None) -> Scheme:
    def note(level, code, part, how, detail=""):
        if audit is not None:
            audit.append({"level": level, "code": code, "part": part, "how": how, "detail": detail})

    diag: dict[str, int] = {}
    proc: dict[str, int] = {}

    def d_id(c):
        return diag.setdefault(c, len(diag))

    def p_id(c):
        return proc.setdefault(c, len(proc))

    list_names: list[str] = []
    diag_member: dict[int, set[int]] = defaultdict(set)
    proc_member: dict[int, set[int]] = defaultdict(set)

    def new_list(label: str, codes, universe: str) -> int:
        lid = len(list_names)
        list_names.append(label)
        for c in codes:
            if universe == "diag":
                diag_member[d_id(c)].add(lid)
            else:
                proc_member[p_id(c)].add(lid)
        return lid

    # MDC tables and body regions
    mdc_by_code = {m.code: m for m in st.mdcs}
    mdc_table: dict[str, int] = {}
    mdc_regions: dict[str, list[int]] = {}
    for m in st.mdcs:
        mdc_table[m.code] = new_list(f"{m.code} 主诊表", m.principal, "diag") if m.principal else -1
        mdc_regions[m.code] = [new_list(f"{m.code} {r}", codes, "diag") for r, codes in m.regions.items()]
    # exclusion tables
    excl_id = {t: new_list(f"排除表 表 {t}", codes, "diag") for t, codes in st.exclusions.items()}
    # OR procedures
    for c in st.or_procedures:
        p_id(c)
    for c in list(st.mcc) + list(st.cc):
        d_id(c)

    # ADRGs
    kinds = {}
    for letters, kind in ((rules.get("surgical_letters", ""), 0), (rules.get("operative_letters", ""), 1),
                          (rules.get("medical_letters", ""), 2)):
        for ch in letters:
            kinds[ch] = kind
    adrg_order = {code: i for i, code in enumerate(st.adrg_names)}
    adrgs = sorted(st.adrgs, key=lambda a: adrg_order.get(a.code, len(adrg_order)))
    adrg_codes = [a.code for a in adrgs]
    adrg_by_code = {a.code: a for a in adrgs}
    adrg_lists: dict[str, list[int]] = {}
    for a in adrgs:
        ids = []
        for i, lst in enumerate(a.lists):
            role = lst.role
            if role in ("pdx", "odx", "adx"):
                ids.append(new_list(f"{a.code} {lst.heading}", lst.codes, "diag"))
            elif role in ("ppx", "apx"):
                ids.append(new_list(f"{a.code} {lst.heading}", lst.codes, "proc"))
            else:
                ids.append(-1)
        adrg_lists[a.code] = ids

    # fields derived from code lists (rules' derived_fields): base record fields come first
    derived = []
    for name, spec in rules.get("derived_fields", {}).items():
        kind = "proc" if "procedures" in spec else "diag"
        codes = spec.get("procedures", spec.get("diagnoses", []))
        derived.append([name, kind, new_list(f"derived field {name}", codes, kind)])
    fields = list(FIELDS) + [d[0] for d in derived]

    # three pools of conditions (ADRG, DRG candidate, MDC), concatenated at the end
    pools: dict[str, list[tuple[int, float, float]]] = {"adrg": [], "cand": [], "mdc": []}

    def add_conds(cs, pool: str, where: str = "") -> int:
        for f, lo, hi in cs:
            if f not in fields:
                problems.append(Problem("rules", 0, where, f"condition on field {f!r}, which neither the record "
                                        "nor the rules' derived_fields define"))
                continue
            pools[pool].append((fields.index(f), lo, hi))
        return len(pools[pool])

    mdc_rules = rules.get("mdc", {})
    alt_ptr, term_ptr, opt_ptr = [0], [0], [0]
    opt_role, opt_list = [], []
    adrg_cond_ptr = [0]
    adrg_drg_ptr = [0]
    cand_drg, cand_min, cand_max, cand_cond_ptr = [], [], [], [0]
    drg_codes = list(st.drgs)
    drg_index = {c: i for i, c in enumerate(drg_codes)}
    by_adrg = defaultdict(list)
    for c in drg_codes:
        by_adrg[c[:3]].append(c)
    needs_or = rules.get("surgical_needs_or_procedure", False)
    proc_roles = {ROLE_PPX, ROLE_APX, ROLE_ORPX, ROLE_ORPX_EXCEPT}
    for a in adrgs:
        ids = adrg_lists[a.code]
        alts = []
        for alt in a.alternatives:
            terms = []
            for term in alt:
                opts = []
                for i in term:
                    lst = a.lists[i]
                    role = ROLES.index(lst.role)
                    if lst.role == "orpx_except":
                        other = adrg_by_code.get(lst.codes[0])
                        codes = [c for l2 in (other.lists if other else []) if l2.role in ("ppx", "apx") for c in l2.codes]
                        if other is None:
                            problems.append(Problem("4_ADRG_DETAIL.txt", lst.line, lst.heading, f"names unknown ADRG {lst.codes[0]}"))
                        opts.append((role, new_list(f"{a.code} {lst.heading}", codes, "proc")))
                    elif lst.role == "pdx_mdc":
                        opts.append((role, mdc_table.get(lst.codes[0], -1)))
                    else:
                        opts.append((role, ids[i]))
                terms.append(opts)
            alts.append(terms)
        kind = kinds.get(a.code[1], 2)
        if a.stated and not a.alternatives:
            problems.append(Problem("4_ADRG_DETAIL.txt", a.line, a.code, f"ADRG whose {a.stated} rule line(s) give no entry rule"))
        if alts:
            note("ADRG", a.code, "entry", a.source, _describe(a))
        if kind == 0 and needs_or:
            if not alts:
                alts = [[]]
                note("ADRG", a.code, "entry", "defaulted",
                     "no rule line: any operating-room principal procedure (rules: surgical_needs_or_procedure)")
            elif any(not any(r in proc_roles for t in terms for r, _ in t) for terms in alts):
                note("ADRG", a.code, "procedure", "general rule",
                     "surgical ADRG whose rule names no procedure: an operating-room principal procedure "
                     "(rules: surgical_needs_or_procedure)")
            for terms in alts:
                if not any(r in proc_roles for t in terms for r, _ in t):
                    terms.append([(ROLE_ORPX, -1)])
        if not alts or not any(alts):
            problems.append(Problem("4_ADRG_DETAIL.txt", a.line, a.code, "ADRG without any entry rule"))
        for terms in alts:
            for opts in terms:
                for r, l in opts:
                    opt_role.append(r)
                    opt_list.append(l)
                opt_ptr.append(len(opt_role))
            term_ptr.append(len(opt_ptr) - 1)
        alt_ptr.append(len(term_ptr) - 1)
        # conditions from the ADRG's name, plus the MDC's defaults for fields it does not state
        cs = name_conditions(a.name)
        if cs:
            note("ADRG", a.code, "conditions", "name", _conds_text(cs))
        stated = {c[0] for c in cs}
        for c in mdc_rules.get(a.mdc, {}).get("adrg_default_conditions", []):
            if c["field"] not in stated and not ({"age", "age_days"} & stated and c["field"] in ("age", "age_days")):
                cs.append((c["field"], float(c.get("min", -math.inf)), float(c.get("max", math.inf))))
                note("ADRG", a.code, "conditions", "general rule",
                     f"{_conds_text(cs[-1:])} ({a.mdc} adrg_default_conditions: the name states none)")
        adrg_cond_ptr.append(add_conds(cs, "adrg", a.code))
        # DRG candidates
        adrg_state = {f for f, _, _ in cs}
        drgs = by_adrg.get(a.code, [])
        sev = {c: severity_of(st.drgs[c]) for c in drgs}
        levels = {s for s in sev.values() if s is not None}
        cands = []
        for pos, c in enumerate(drgs):
            dc = [x for x in name_conditions(st.drgs[c]) if x[0] not in adrg_state]
            s = sev[c]
            if s is None:
                lo, hi = 0, 2
            elif s == 2:
                lo = 1 if (1 not in levels and rules.get("mcc_group_takes_cc_without_cc_group")) else 2
                hi = 2
            elif s == 1:
                lo = 1
                hi = 2 if (2 not in levels and rules.get("cc_group_takes_mcc_without_mcc_group")) else 1
            else:
                lo, hi = 0, 2
            if s is not None:
                note("DRG", c, "severity", "name", f"{('none', 'CC', 'MCC')[s]}: takes levels {lo}-{hi}")
            if dc:
                note("DRG", c, "conditions", "name", _conds_text(dc))
            if s is None and not dc:
                note("DRG", c, "not split", "literal", "the name states no severity or condition")
            rank = (0 if dc else 1, -(s if s is not None else -1), pos)
            cands.append((rank, c, lo, hi, dc))
        for _, c, lo, hi, dc in sorted(cands):
            cand_drg.append(drg_index[c])
            cand_min.append(lo)
            cand_max.append(hi)
            cand_cond_ptr.append(add_conds(dc, "cand", c))
        adrg_drg_ptr.append(len(cand_drg))
        if not drgs:
            problems.append(Problem("3_DRG.txt", 0, a.code, "ADRG has no DRG"))

    # MDCs in trial order
    order = list(rules.get("mdc_order", []))
    order = [m for m in order if m in mdc_by_code] + [m.code for m in st.mdcs if m.code not in order]
    mdc_entry, mdc_tab, mdc_sex, mdc_minr, mdc_cond_ptr = [], [], [], [], [0]
    mdc_region_rows, mdc_adrg_rows, mdc_surg_end, mdc_qy = [], [], [], []
    qy_mdcs = set(rules.get("ambiguous_group_mdcs", []))
    adrg_id = {c: i for i, c in enumerate(adrg_codes)}
    mdc_conds = []
    for code in order:
        r = mdc_rules.get(code, {})
        mdc_entry.append(1 if r.get("entry") == "or_principal_procedure" else 0)
        mdc_tab.append(mdc_table.get(code, -1))
        mdc_sex.append(int(r.get("sex", 0)))
        mdc_minr.append(int(r.get("min_regions", 0)))
        mdc_region_rows.append(mdc_regions.get(code, []) if r.get("min_regions") else [])
        cs = [(c["field"], float(c.get("min", -math.inf)), float(c.get("max", math.inf))) for c in r.get("conditions", [])]
        mdc_conds.append(cs)
        members = [x for x in adrgs if x.mdc == code]
        members.sort(key=lambda x: (kinds.get(x.code[1], 2), adrg_order.get(x.code, 0)))
        mdc_adrg_rows.append([adrg_id[x.code] for x in members])
        mdc_surg_end.append(sum(1 for x in members if kinds.get(x.code[1], 2) == 0))
        qy = f"{code[3]}QY"
        if code in qy_mdcs or "*" in qy_mdcs:
            if qy not in drg_index:
                drg_index[qy] = len(drg_codes)
                drg_codes.append(qy)
            mdc_qy.append(drg_index[qy])
        else:
            mdc_qy.append(-1)
    for cs in mdc_conds:
        mdc_cond_ptr.append(add_conds(cs, "mdc"))
    n_adrg_c, n_cand_c = len(pools["adrg"]), len(pools["cand"])
    cand_cond_ptr = [p + n_adrg_c for p in cand_cond_ptr]
    mdc_cond_ptr = [p + n_adrg_c + n_cand_c for p in mdc_cond_ptr]
    conds = pools["adrg"] + pools["cand"] + pools["mdc"]

    # CC / MCC
    cc_level = np.zeros(len(diag), dtype=np.int8)
    cc_table = np.full(len(diag), -1, dtype=np.int32)
    for table, level in ((st.cc, 1), (st.mcc, 2)):
        for c, t in table.items():
            i = diag[c]
            cc_level[i] = level
            cc_table[i] = excl_id.get(t, -1) if t else -1

    # ADRG prefilter: per code and position (principal / other), a bitmask of the ADRGs with
    # a list that could take the code there; an ADRG can only match a record one of whose
    # codes sets its bit, unless its rule has a term no code list backs (operating-room or
    # no-procedure roles): those are always tried.
    n_adrg = len(adrg_codes)
    words = max(1, (n_adrg + 63) // 64)
    masks = {k: np.zeros((len(diag) if k[0] == "d" else len(proc), words), dtype=np.uint64)
             for k in ("dp", "ds", "pp", "ps")}
    positions = {"pdx": ("dp",), "odx": ("ds",), "adx": ("dp", "ds"), "ppx": ("pp",), "apx": ("pp", "ps")}
    adrg_always = np.zeros(n_adrg, dtype=np.uint8)
    list_adrgs: dict[int, set[tuple[str, int]]] = defaultdict(set)
    for a_i in range(n_adrg):
        for o in range(opt_ptr[term_ptr[alt_ptr[a_i]]], opt_ptr[term_ptr[alt_ptr[a_i + 1]]]):
            role, lst = ROLES[opt_role[o]], opt_list[o]
            if role in positions:
                for pos in positions[role]:
                    list_adrgs[lst].add((pos, a_i))
            else:
                adrg_always[a_i] = 1
    for member in (diag_member, proc_member):
        for code_id, lists in member.items():
            for lst in lists:
                for pos, a_i in list_adrgs.get(lst, ()):
                    if (pos[0] == "d") == (member is diag_member):
                        masks[pos][code_id, a_i // 64] |= np.uint64(1) << np.uint64(a_i % 64)
    diag_s_any = masks["ds"].any(axis=1).astype(np.uint8)
    proc_s_any = masks["ps"].any(axis=1).astype(np.uint8)

    # per diagnosis, the MDCs (bit = trial position) whose principal-diagnosis table holds it
    diag_mdc = np.zeros(len(diag), dtype=np.uint64)
    table_pos = {mdc_tab[m]: m for m in range(len(order)) if mdc_tab[m] >= 0}
    for code_id, lists in diag_member.items():
        for lst in lists:
            if lst in table_pos:
                diag_mdc[code_id] |= np.uint64(1) << np.uint64(table_pos[lst])

    diag_codes = [c for c, _ in sorted(diag.items(), key=lambda kv: kv[1])]
    proc_codes = [c for c, _ in sorted(proc.items(), key=lambda kv: kv[1])]
    dptr, dflat = _csr([sorted(diag_member.get(i, ())) for i in range(len(diag_codes))])
    pptr, pflat = _csr([sorted(proc_member.get(i, ())) for i in range(len(proc_codes))])
    is_or = np.zeros(len(proc_codes), dtype=np.int8)
    for c in st.or_procedures:
        is_or[proc[c]] = 1
    rptr, rflat = _csr(mdc_region_rows)
    aptr, aflat = _csr(mdc_adrg_rows)
    surg_end = [int(aptr[i]) + n for i, n in enumerate(mdc_surg_end)]
    i32 = lambda x: np.asarray(x, dtype=np.int32)  # noqa: E731
    arrays = {
        "diag_list_ptr": dptr, "diag_list_ids": dflat, "proc_list_ptr": pptr, "proc_list_ids": pflat,
        "proc_is_or": is_or, "cc_level": cc_level, "cc_table": cc_table,
        "mdc_entry": i32(mdc_entry), "mdc_table": i32(mdc_tab), "mdc_sex": i32(mdc_sex),
        "mdc_min_regions": i32(mdc_minr), "mdc_region_ptr": rptr, "mdc_regions": rflat,
        "mdc_cond_ptr": i32(mdc_cond_ptr), "mdc_adrg_ptr": aptr, "mdc_adrgs": aflat,
        "mdc_surgical_end": i32(surg_end), "mdc_qy_drg": i32(mdc_qy),
        "diag_mdc_mask": diag_mdc, "adrg_always": adrg_always,
        "diag_adrg_mask_p": masks["dp"], "diag_adrg_mask_s": masks["ds"], "diag_s_any": diag_s_any,
        "proc_adrg_mask_p": masks["pp"], "proc_adrg_mask_s": masks["ps"], "proc_s_any": proc_s_any,
        "adrg_alt_ptr": i32(alt_ptr), "alt_term_ptr": i32(term_ptr), "term_opt_ptr": i32(opt_ptr),
        "opt_role": i32(opt_role), "opt_list": i32(opt_list), "adrg_cond_ptr": i32(adrg_cond_ptr),
        "adrg_drg_ptr": i32(adrg_drg_ptr), "cand_drg": i32(cand_drg), "cand_sev_min": i32(cand_min),
        "cand_sev_max": i32(cand_max), "cand_cond_ptr": i32(cand_cond_ptr),
        "cond_field": i32([c[0] for c in conds]), "cond_lo": np.asarray([c[1] for c in conds], dtype=np.float64),
        "cond_hi": np.asarray([c[2] for c in conds], dtype=np.float64),
    }
    names = {}
    names.update({m.code: m.name for m in st.mdcs})
    names.update(st.adrg_names)
    names.update(st.drgs)
    names.update({c: f"{names.get('MDC' + c[0], c[0])} 歧义组 (ambiguous)" for c in drg_codes if c.endswith("QY")})
    names.update(st.procedure_names)
    names.update(st.diagnosis_names)
    validation = dict(rules.get("validation", {}))
    return Scheme(meta={"fields": fields, "derived_fields": derived}, arrays=arrays, diag_codes=diag_codes,
                  proc_codes=proc_codes, mdc_codes=order, adrg_codes=adrg_codes, drg_codes=drg_codes, names=names,
                  list_names=list_names, validation=validation)


# ------------------------------------------------------------------ audit

#: how a part of a rule can be read; all but "literal" and "erratum" are inferred
HOW = ("literal", "erratum", "cross-reference", "name", "general rule", "defaulted")


def audit_scheme(folder: str | Path, rules_path: str | Path | None = None) -> dict:
    """For every ADRG and DRG of a scheme folder, how each part of its rule was read.

    Returns ``{"rows": [...], "problems": [...], "meta": {...}}``; each row is
    ``{"level": "ADRG"|"DRG", "code", "part", "how", "detail"}`` where ``part`` is ``entry``
    (the ADRG's lists), ``procedure`` (a surgical ADRG's operating-room procedure that its rule
    does not list), ``conditions`` (age, weight, days…), ``severity`` or ``not split``, and ``how``
    one of :data:`HOW`: read literally from the tables, supplied by an erratum
    (rules/errata.toml), resolved through a cross-reference (见 JD2 手术表), stated by the group's
    name, by a general rule (rules TOML), or defaulted where the table states nothing."""
    rows: list[dict] = []
    scheme, problems = compile_scheme(folder, rules_path, allow_gaps=True, audit=rows)
    names = scheme.names
    for r in rows:
        r["name"] = names.get(r["code"], "")
    return {"rows": rows, "problems": problems, "meta": scheme.meta}


def audit_text(report: dict, every_row: bool = False) -> str:
    """The audit as text: counts per part and how, then every ADRG-level rule not read literally
    (or, with ``every_row``, every row as tab-separated values)."""
    rows, meta = report["rows"], report["meta"]
    if every_row:
        out = ["level\tcode\tname\tpart\thow\tdetail"]
        out += [f"{r['level']}\t{r['code']}\t{r['name']}\t{r['part']}\t{r['how']}\t{r['detail']}" for r in rows]
        return "\n".join(out)
    c = meta.get("counts", {})
    out = [f"{meta.get('source', '')}: {c.get('adrg', 0)} ADRG, {c.get('drg', 0)} DRG; "
           f"{len(report['problems'])} unread line(s)"]
    for p in report["problems"]:
        out.append(f"  unread: {p}")
    counts = Counter((r["level"], r["part"], r["how"]) for r in rows)
    for level, part in (("ADRG", "entry"), ("ADRG", "procedure"), ("ADRG", "conditions"),
                        ("DRG", "severity"), ("DRG", "conditions"), ("DRG", "not split")):
        found = [f"{how} {counts[(level, part, how)]}" for how in HOW if counts[(level, part, how)]]
        out.append(f"{level} {part}: {', '.join(found) if found else '-'}")
    for what, reason in meta.get("errata", []):
        out.append(f"erratum applied: {what} ({reason})")
    odd = [r for r in rows if r["level"] == "ADRG" and r["how"] != "literal" and r["part"] != "conditions"]
    if odd:
        out.append("ADRG rules not read literally:")
        out += [f"  {r['code']} {r['name']}: {r['part']} {r['how']}: {r['detail']}" for r in odd]
    return "\n".join(out)
