"""DIP catalogue matching (病种目录匹配): a numba kernel over integer-encoded keys.

The catalogue is compiled once into sorted arrays:

* per diagnosis subcategory id, a CSR list of its core groups (核心病种) in priority order
  (score descending, then more procedures, then group key), each with its sorted
  procedure-id set and its procedure type;
* a (category id × procedure type) → comprehensive group (综合病种) table.

A case is its subcategory id, category id, procedure type and sorted procedure ids
(procedures absent from every core group are only counted). Matching, first that applies:

1. exact (完全匹配): a core group whose procedure set equals the case's;
2. contained (包含匹配): the first core group in priority order whose non-empty procedure
   set is a proper subset of the case's and whose procedure type equals the case's (a
   surgical case never lands in a diagnostic-only group);
3. comprehensive (综合病种): the group of the case's category and procedure type;
4. none.

:func:`match_reference` is the plain-Python version of the same rules (the reference the
kernel is tested against, and the bench's baseline).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

NONE, EXACT, CONTAINED, COMPREHENSIVE = 0, 1, 2, 3
MATCH_NAMES = ("none", "exact", "contained", "comprehensive")
N_TYPES = 4


@dataclass(frozen=True)
class CompiledCatalog:
    """Arrays the kernel reads, plus the vocabularies that encode a case."""
    diag_vocab: tuple[str, ...]     # subcategories with core groups, sorted
    proc_vocab: tuple[str, ...]     # procedures in core groups, sorted (id order = string order)
    cat_vocab: tuple[str, ...]      # categories with comprehensive groups, sorted
    diag_ptr: np.ndarray            # int64[n_diag + 1] → slots in core_* arrays
    core_ptr: np.ndarray            # int64[n_core + 1] → core_procs
    core_procs: np.ndarray          # int32, sorted within each group
    core_type: np.ndarray           # int8 procedure type of each core group
    core_row: np.ndarray            # int32 catalogue row of each core slot
    comp_row: np.ndarray            # int32[n_cat * N_TYPES], -1 where absent


def compile_arrays(core_diag, core_procs, core_type, core_score, core_key, core_row,
                   comp_cat, comp_type, comp_row) -> CompiledCatalog:
    """Compile catalogue rows (Python sequences) into kernel arrays."""
    diag_vocab = tuple(sorted(set(core_diag)))
    proc_vocab = tuple(sorted({p for ps in core_procs for p in ps}))
    cat_vocab = tuple(sorted(set(comp_cat)))
    d_id = {d: i for i, d in enumerate(diag_vocab)}
    p_id = {p: i for i, p in enumerate(proc_vocab)}
    c_id = {c: i for i, c in enumerate(cat_vocab)}
    order = sorted(range(len(core_diag)),
                   key=lambda i: (d_id[core_diag[i]], -float(core_score[i]), -len(core_procs[i]), core_key[i]))
    diag_ptr = np.zeros(len(diag_vocab) + 1, dtype=np.int64)
    for i in order:
        diag_ptr[d_id[core_diag[i]] + 1] += 1
    np.cumsum(diag_ptr, out=diag_ptr)
    core_ptr = np.zeros(len(order) + 1, dtype=np.int64)
    procs: list[int] = []
    for slot, i in enumerate(order):
        ids = sorted(p_id[p] for p in set(core_procs[i]))
        procs.extend(ids)
        core_ptr[slot + 1] = len(procs)
    comp = np.full(len(cat_vocab) * N_TYPES, -1, dtype=np.int32)
    for c, t, r in zip(comp_cat, comp_type, comp_row):
        comp[c_id[c] * N_TYPES + int(t)] = r
    return CompiledCatalog(
        diag_vocab=diag_vocab, proc_vocab=proc_vocab, cat_vocab=cat_vocab,
        diag_ptr=diag_ptr, core_ptr=core_ptr, core_procs=np.array(procs, dtype=np.int32),
        core_type=np.array([core_type[i] for i in order], dtype=np.int8),
        core_row=np.array([core_row[i] for i in order], dtype=np.int32), comp_row=comp)


@njit(cache=True, nogil=True)
def _is_subset(a, a0, a1, b, b0, b1):
    """Sorted a[a0:a1] ⊆ sorted b[b0:b1]."""
    j = b0
    for i in range(a0, a1):
        x = a[i]
        while j < b1 and b[j] < x:
            j += 1
        if j == b1 or b[j] != x:
            return False
        j += 1
    return True


@njit(cache=True, nogil=True)
def match_cases(case_diag, case_cat, case_type, case_unknown, case_ptr, case_procs,
                diag_ptr, core_ptr, core_procs, core_type, core_row, comp_row):
    """(match kind int8, catalogue row int32) per case; row -1 with kind NONE.

    case_diag / case_cat: ids or -1; case_type: 0..3 or -1 (unreadable: no match);
    case_unknown: count of the case's counted procedures not in the vocabulary;
    case_ptr/case_procs: CSR of the case's known procedure ids, sorted, unique."""
    n = case_diag.shape[0]
    kind = np.zeros(n, np.int8)
    row = np.full(n, -1, np.int32)
    for i in range(n):
        t = case_type[i]
        if t < 0:
            continue
        a0 = case_ptr[i]
        a1 = case_ptr[i + 1]
        m = a1 - a0
        total = m + case_unknown[i]
        d = case_diag[i]
        best = -1
        best_kind = NONE
        if d >= 0:
            for g in range(diag_ptr[d], diag_ptr[d + 1]):
                g0 = core_ptr[g]
                g1 = core_ptr[g + 1]
                k = g1 - g0
                if k == total:
                    if k == m:
                        eq = True
                        for j in range(k):
                            if core_procs[g0 + j] != case_procs[a0 + j]:
                                eq = False
                                break
                        if eq:
                            best = g
                            best_kind = EXACT
                            break
                elif best < 0 and k > 0 and k < total and core_type[g] == t:
                    if _is_subset(core_procs, g0, g1, case_procs, a0, a1):
                        best = g
                        best_kind = CONTAINED
        if best >= 0:
            kind[i] = best_kind
            row[i] = core_row[best]
            continue
        c = case_cat[i]
        if c >= 0:
            r = comp_row[c * 4 + t]
            if r >= 0:
                kind[i] = COMPREHENSIVE
                row[i] = r
    return kind, row


def run_kernel(cc: CompiledCatalog, case_diag, case_cat, case_type, case_unknown, case_ptr, case_procs):
    return match_cases(case_diag, case_cat, case_type, case_unknown, case_ptr, case_procs,
                       cc.diag_ptr, cc.core_ptr, cc.core_procs, cc.core_type, cc.core_row, cc.comp_row)


def match_reference(cc: CompiledCatalog, diags, cats, types, proc_sets) -> tuple[list[int], list[int]]:
    """Plain-Python matching of cases given as strings (same rules as the kernel)."""
    groups: dict[str, list[tuple[frozenset, int, int]]] = {}
    for d_i, d in enumerate(cc.diag_vocab):
        lst = []
        for g in range(cc.diag_ptr[d_i], cc.diag_ptr[d_i + 1]):
            ps = frozenset(cc.proc_vocab[p] for p in cc.core_procs[cc.core_ptr[g]:cc.core_ptr[g + 1]])
            lst.append((ps, int(cc.core_type[g]), int(cc.core_row[g])))
        groups[d] = lst
    comp = {}
    for c_i, c in enumerate(cc.cat_vocab):
        for t in range(N_TYPES):
            r = int(cc.comp_row[c_i * N_TYPES + t])
            if r >= 0:
                comp[(c, t)] = r
    kinds, rows = [], []
    for d, c, t, ps in zip(diags, cats, types, proc_sets):
        if t is None or t < 0:
            kinds.append(NONE)
            rows.append(-1)
            continue
        ps = frozenset(ps)
        found = None
        contained = None
        for gs, gt, r in groups.get(d, ()):
            if gs == ps:
                found = (EXACT, r)
                break
            if contained is None and gs and gs < ps and gt == t:
                contained = (CONTAINED, r)
        found = found or contained
        if found is None and (c, t) in comp:
            found = (COMPREHENSIVE, comp[(c, t)])
        kinds.append(found[0] if found else NONE)
        rows.append(found[1] if found else -1)
    return kinds, rows


# ---------------------------------------------------------------- per-record kernels over listed codes

@njit(cache=True, nogil=True)
def case_procedures(ptr, entry, keep, canon, vocab, ptype):
    """A case's counted procedures from its listed codes, each code read through its entry.

    ptr: int64[n + 1] CSR of the listed codes; entry: int32 dictionary entry of each listed
    code (-1 null); per entry: keep (counts: normalised, not excluded), canon (id of the
    normalised string: equal strings, equal ids), vocab (id in the catalogue's procedure
    vocabulary, -1 absent), ptype (procedure type 1..3, -1 unknown).
    Returns (case type int8: highest type of the counted procedures, 0 none; count of counted
    procedures of unknown type; count of distinct counted procedures not in the vocabulary;
    CSR ptr int64 and ids int32 of the distinct counted procedures in the vocabulary, sorted)."""
    n = ptr.shape[0] - 1
    ctype = np.zeros(n, np.int8)
    bad_type = np.zeros(n, np.int64)
    unknown = np.zeros(n, np.int64)
    out_ptr = np.zeros(n + 1, np.int64)
    out = np.empty(ptr[n] - ptr[0], np.int32)
    seen = np.empty(64, np.int64)
    k = 0
    for i in range(n):
        m = 0
        for j in range(ptr[i], ptr[i + 1]):
            e = entry[j]
            if e < 0 or not keep[e]:
                continue
            c = canon[e]
            dup = False
            for q in range(m):
                if seen[q] == c:
                    dup = True
                    break
            if dup:
                continue
            if m == seen.shape[0]:
                bigger = np.empty(2 * m, np.int64)
                bigger[:m] = seen[:m]
                seen = bigger
            seen[m] = c
            m += 1
            t = ptype[e]
            if t < 0:
                bad_type[i] += 1
            elif t > ctype[i]:
                ctype[i] = t
            v = vocab[e]
            if v < 0:
                unknown[i] += 1
            else:
                # insertion into the sorted run out[out_ptr[i]:k]
                p = k
                while p > out_ptr[i] and out[p - 1] > v:
                    out[p] = out[p - 1]
                    p -= 1
                out[p] = v
                k += 1
        out_ptr[i + 1] = k
    return ctype, bad_type, unknown, out_ptr, out[:k].copy()


@njit(cache=True, nogil=True)
def secondary_cci(ptr, family, weight, n_families):
    """CCI index of each case: over its listed codes after the first (secondary diagnoses), the
    highest weight per family, summed. family/weight: per listed code (family -1: none)."""
    n = ptr.shape[0] - 1
    out = np.zeros(n, np.int64)
    best = np.zeros(max(n_families, 1), np.int64)
    for i in range(n):
        a = ptr[i] + 1
        b = ptr[i + 1]
        if a >= b:
            continue
        best[:] = 0
        for j in range(a, b):
            f = family[j]
            if f >= 0 and weight[j] > best[f]:
                best[f] = weight[j]
        s = 0
        for f in range(n_families):
            s += best[f]
        out[i] = s
    return out


@njit(cache=True, nogil=True)
def row_bits(ptr, bits, skip_first):
    """Bitwise or of each case's listed codes' bits (after the first one with skip_first)."""
    n = ptr.shape[0] - 1
    out = np.zeros(n, np.uint8)
    for i in range(n):
        acc = np.uint8(0)
        for j in range(ptr[i] + (1 if skip_first else 0), ptr[i + 1]):
            acc |= bits[j]
        out[i] = acc
    return out
