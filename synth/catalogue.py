"""What a synthetic record of each ADRG looks like, read from a compiled scheme.

For every ADRG the generator needs: its MDC, its kind (pre-MDC, surgical, operative,
medical), where its principal diagnosis comes from, which procedures it requires, which
diagnoses it requires besides the principal one, and the record fields its conditions bound
(age in days, birth weight, ...). All of it is read from :class:`grouper.drg.scheme.Scheme`
arrays (the first alternative of each ADRG rule, the first option of each term), so any
scheme, the teaching one or an imported official one, gives its own code lists.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from drgdip.grouper.drg.scheme import ROLES

KINDS = ("premdc", "surgical", "operative", "medical")


@dataclass
class AdrgSpec:
    code: str
    name: str
    mdc: str
    kind: str
    principal: np.ndarray               # diagnosis ids the principal diagnosis is drawn from
    procedures: list[np.ndarray]        # one procedure drawn from each list, first = principal
    secondary: list[np.ndarray]         # one secondary diagnosis drawn from each list
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)   # field → (lo, hi) inclusive
    sex: int = 0                        # the MDC's sex (1 male, 2 female), 0 any


@dataclass
class Catalogue:
    """Code pools of one scheme, as diagnosis / procedure ids of the scheme."""
    diag_codes: np.ndarray              # id → code (object array of str)
    proc_codes: np.ndarray
    cc_level: np.ndarray                # per diagnosis id: 0, 1 CC, 2 MCC
    proc_is_or: np.ndarray
    mdc_principal: dict[str, np.ndarray]
    adrgs: list[AdrgSpec]


def _members(ptr: np.ndarray, ids: np.ndarray, n_lists: int) -> list[np.ndarray]:
    """Invert code → lists CSR into list → sorted code ids."""
    codes = np.repeat(np.arange(len(ptr) - 1, dtype=np.int64), np.diff(ptr))
    order = np.lexsort((codes, ids))
    lists_sorted, codes_sorted = ids[order], codes[order]
    bounds = np.searchsorted(lists_sorted, np.arange(n_lists + 1))
    return [codes_sorted[bounds[k]:bounds[k + 1]] for k in range(n_lists)]


def _conditions(s, start: int, end: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for k in range(start, end):
        name = s.fields[int(s.cond_field[k])]
        lo, hi = float(s.cond_lo[k]), float(s.cond_hi[k])
        plo, phi = out.get(name, (-math.inf, math.inf))
        out[name] = (max(lo, plo), min(hi, phi))
    return out


def build_catalogue(s) -> Catalogue:
    """The generator's view of a compiled scheme ``s``."""
    n_lists = len(s.list_names)
    diag_members = _members(s.diag_list_ptr, s.diag_list_ids, n_lists)
    proc_members = _members(s.proc_list_ptr, s.proc_list_ids, n_lists)
    mdc_principal: dict[str, np.ndarray] = {}
    adrg_mdc: dict[int, int] = {}
    for m, mdc in enumerate(s.mdc_codes):
        if int(s.mdc_entry[m]) == 0 and int(s.mdc_table[m]) >= 0:
            mdc_principal[mdc] = diag_members[int(s.mdc_table[m])]
        for a in s.mdc_adrgs[s.mdc_adrg_ptr[m]:s.mdc_adrg_ptr[m + 1]]:
            adrg_mdc.setdefault(int(a), m)
    ordinary = [v for v in mdc_principal.values() if len(v)]
    all_principal = np.unique(np.concatenate(ordinary)) if ordinary else np.zeros(0, np.int64)
    adrgs: list[AdrgSpec] = []
    for a, code in enumerate(s.adrg_codes):
        if a not in adrg_mdc:
            continue
        m = adrg_mdc[a]
        mdc = s.mdc_codes[m]
        principal, procedures, secondary = None, [], []
        alt = int(s.adrg_alt_ptr[a])
        for t in range(int(s.alt_term_ptr[alt]), int(s.alt_term_ptr[alt + 1])):
            o = int(s.term_opt_ptr[t])
            role, lst = ROLES[int(s.opt_role[o])], int(s.opt_list[o])
            if role in ("pdx", "adx", "pdx_mdc"):
                principal = diag_members[lst]
            elif role == "odx":
                secondary.append(diag_members[lst])
            elif role == "ppx":
                procedures.insert(0, proc_members[lst])
            elif role == "apx":
                procedures.append(proc_members[lst])
            elif role == "orpx":
                procedures.insert(0, np.flatnonzero(s.proc_is_or == 1))
            elif role == "orpx_except":
                pool = np.setdiff1d(np.flatnonzero(s.proc_is_or == 1), proc_members[lst])
                procedures.insert(0, pool)
        if principal is None:
            principal = mdc_principal.get(mdc, all_principal)
            if not len(principal):
                principal = all_principal
        if int(s.mdc_entry[m]) == 1:
            kind = "premdc"
        elif procedures:
            kind = "surgical" if bool(s.proc_is_or[procedures[0]].any()) else "operative"
        else:
            kind = "medical"
        bounds = _conditions(s, int(s.mdc_cond_ptr[m]), int(s.mdc_cond_ptr[m + 1]))
        bounds.update(_conditions(s, int(s.adrg_cond_ptr[a]), int(s.adrg_cond_ptr[a + 1])))
        if not len(principal) or any(not len(p) for p in procedures) or any(not len(d) for d in secondary):
            continue     # a rule whose lists are empty cannot be met by any record
        adrgs.append(AdrgSpec(code, s.names.get(code, code), mdc, kind, principal, procedures, secondary, bounds,
                               int(s.mdc_sex[m])))
    return Catalogue(np.array(s.diag_codes, dtype=object), np.array(s.proc_codes, dtype=object),
                     np.asarray(s.cc_level), np.asarray(s.proc_is_or), mdc_principal, adrgs)
