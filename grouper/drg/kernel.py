"""The CHS-DRG grouping kernel: numba over integer-encoded records and scheme arrays.

Pure functions, arrays in and arrays out, no Python objects and no I/O. One record:
validate → MDCs in the scheme's trial order (entry by principal-diagnosis table or by an
operating-room principal procedure, sex, conditions, body regions) → the MDC's ADRGs in
trial order (alternatives of terms of code lists) → the ADRG's DRG candidates by severity
(MCC/CC with exclusion tables) and conditions. :mod:`grouper.drg.reference` is the same
algorithm in plain Python with a trace, and the tests hold the two equal.

Record arrays: ``values`` float64 [n, len(FIELDS)] (NaN = missing), ``sex`` int8
(1, 2; 0 missing; -1 unreadable), ``diag_ptr``/``diag_ids`` and ``proc_ptr``/``proc_ids``
(CSR, principal first; id -1: not in the scheme, -2: not in the code set).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def _writable_dir(path: Path) -> bool:
    """Can files be created in PATH (made if missing)?"""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def ensure_cache_dir(package_dir: Path | None = None, user_dir: Path | None = None) -> str | None:
    """Give numba a writable cache folder when neither of its own places is writable.

    numba caches compiled kernels (``cache=True``) beside the sources (``__pycache__``) or in
    the user's cache folder (``~/.cache/numba``); with a read-only install and no writable
    HOME (a Spark executor running as a service user) importing fails with "cannot cache
    function ...: no locator available". Then ``NUMBA_CACHE_DIR`` is set to a private folder
    under the temporary directory (``drgdip-numba-<uid>``). An explicit ``NUMBA_CACHE_DIR``
    is left alone. Must run before the first ``@njit(cache=True)`` is decorated; returns the
    folder set, or None."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    package_dir = package_dir or Path(__file__).resolve().parent / "__pycache__"
    if user_dir is None:
        from numba.misc.appdirs import AppDirs
        user_dir = Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)
    if _writable_dir(package_dir) or _writable_dir(user_dir):
        return None
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    folder = Path(tempfile.gettempdir()) / f"drgdip-numba-{uid}"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    from numba.core import config
    config.CACHE_DIR = str(folder)
    return str(folder)


ensure_cache_dir()

import numba  # noqa: E402
from numba import njit, prange  # noqa: E402

from drgdip.codesets.reasons import reason_id

#: Reason codes the kernel can return, in the order of the ``reasons`` argument.
KERNEL_REASONS = (
    "OK", "UNKNOWN_SECONDARY_IGNORED", "NO_MDC", "NO_ADRG", "NO_DRG", "MISSING_DIAGNOSIS",
    "UNKNOWN_DIAGNOSIS", "MISSING_SEX", "INVALID_SEX", "MISSING_AGE", "INVALID_AGE",
    "INVALID_AGE_DAYS", "MISSING_AGE_DAYS", "MISSING_BIRTH_WEIGHT", "INVALID_BIRTH_WEIGHT",
    "SEX_CONFLICT", "BAD_VALUE", "AMBIGUOUS_OR_PROCEDURE",
)
(R_OK, R_SECONDARY_IGNORED, R_NO_MDC, R_NO_ADRG, R_NO_DRG, R_MISSING_DIAGNOSIS, R_UNKNOWN_DIAGNOSIS,
 R_MISSING_SEX, R_INVALID_SEX, R_MISSING_AGE, R_INVALID_AGE, R_INVALID_AGE_DAYS, R_MISSING_AGE_DAYS,
 R_MISSING_BIRTH_WEIGHT, R_INVALID_BIRTH_WEIGHT, R_SEX_CONFLICT, R_BAD_VALUE, R_AMBIGUOUS) = range(len(KERNEL_REASONS))

F_AGE, F_AGE_DAYS, F_BIRTH_WEIGHT, F_LOS, F_VENT = range(5)


def reason_map() -> np.ndarray:
    """Kernel reason index → id in :mod:`codesets.reasons`."""
    return np.array([reason_id(r) for r in KERNEL_REASONS], dtype=np.int16)


@njit(cache=True, inline="always")
def _member(ptr, ids, code, lst):
    if code < 0 or lst < 0:
        return False
    for k in range(ptr[code], ptr[code + 1]):
        if ids[k] == lst:
            return True
        if ids[k] > lst:
            return False
    return False


@njit(cache=True, inline="always")
def _conds_ok(values, i, start, end, cond_field, cond_lo, cond_hi):
    for k in range(start, end):
        v = values[i, cond_field[k]]
        if np.isnan(v) or v < cond_lo[k] or v > cond_hi[k]:
            return False
    return True


@njit(cache=True, inline="always")
def _severity(d0, d1, diag_ids, diag_list_ptr, diag_list_ids, cc_level, cc_table):
    """Highest CC level (0, 1 CC, 2 MCC) among secondary diagnoses not excluded by the principal."""
    pd = diag_ids[d0]
    best = 0
    for k in range(d0 + 1, d1):
        d = diag_ids[k]
        if d < 0:
            continue
        lvl = cc_level[d]
        if lvl <= best:
            continue
        t = cc_table[d]
        if t >= 0 and _member(diag_list_ptr, diag_list_ids, pd, t):
            continue
        best = lvl
    return best


@njit(cache=True, inline="always")
def _any_member(ptr, ids, codes, k0, k1, lst):
    """Is any of codes[k0:k1] in list ``lst``."""
    for k in range(k0, k1):
        if _member(ptr, ids, codes[k], lst):
            return True
    return False


@njit(cache=True, inline="always")
def _term_ok(role, lst, d0, d1, p0, p1, diag_ids, proc_ids, dptr, dids, pptr, pids, proc_is_or):
    pd = diag_ids[d0]
    pp = proc_ids[p0] if p1 > p0 else -1
    if role == 0:    # pdx
        return _member(dptr, dids, pd, lst)
    if role == 1:    # odx
        return _any_member(dptr, dids, diag_ids, d0 + 1, d1, lst)
    if role == 2:    # adx
        return _any_member(dptr, dids, diag_ids, d0, d1, lst)
    if role == 3:    # ppx
        return _member(pptr, pids, pp, lst)
    if role == 4:    # apx
        return _any_member(pptr, pids, proc_ids, p0, p1, lst)
    if role == 5:    # orpx
        return pp >= 0 and proc_is_or[pp] == 1
    if role == 6:    # nopx
        return not (pp >= 0 and proc_is_or[pp] == 1)
    if role == 7:    # orpx_except
        return pp >= 0 and proc_is_or[pp] == 1 and not _member(pptr, pids, pp, lst)
    if role == 8:    # pdx_mdc
        return _member(dptr, dids, pd, lst)
    return False


@njit(cache=True)
def group_range(lo, hi, out_mdc, out_adrg, out_drg, out_reason,
                values, sex, diag_ptr, diag_ids, proc_ptr, proc_ids, bad_value, params, scheme_arrays):
    """Group records lo..hi-1 into the output arrays (mdc index, adrg id, drg id, kernel reason).

    The whole per-record path is one loop body (no call per record): numba passes arrays
    to a function that LLVM does not inline as dozens of scalars, which cost more than the
    grouping itself."""
    (diag_list_ptr, diag_list_ids, proc_list_ptr, proc_list_ids, proc_is_or, cc_level, cc_table,
     mdc_entry, mdc_table, mdc_sex, mdc_min_regions, mdc_region_ptr, mdc_regions, mdc_cond_ptr,
     mdc_adrg_ptr, mdc_adrgs, mdc_surgical_end, mdc_qy_drg, diag_mdc_mask, adrg_always, diag_adrg_mask_p,
     diag_adrg_mask_s, diag_s_any, proc_adrg_mask_p, proc_adrg_mask_s, proc_s_any, adrg_alt_ptr, alt_term_ptr,
     term_opt_ptr, opt_role, opt_list, adrg_cond_ptr, adrg_drg_ptr, cand_drg, cand_sev_min, cand_sev_max,
     cand_cond_ptr, cond_field, cond_lo, cond_hi) = scheme_arrays
    newborn_days, min_bw, max_bw, max_age, fall_through = params[0], params[1], params[2], params[3], params[4]
    n_mdc = mdc_entry.shape[0]
    words = diag_adrg_mask_p.shape[1]
    cand = np.zeros(words, dtype=np.uint64)   # the record's candidate ADRGs (prefilter), reused
    for i in range(lo, hi):
        rm, ra, rd, rr = -1, -1, -1, R_NO_MDC
        d0, d1 = diag_ptr[i], diag_ptr[i + 1]
        p0, p1 = proc_ptr[i], proc_ptr[i + 1]
        s = sex[i]
        age = values[i, F_AGE]
        # -- validation (first failing check gives the reason)
        valid = False
        if bad_value[i]:
            rr = R_BAD_VALUE
        elif s == 0:
            rr = R_MISSING_SEX
        elif s < 0:
            rr = R_INVALID_SEX
        elif np.isnan(age):
            rr = R_MISSING_AGE
        elif age < 0 or age > max_age:
            rr = R_INVALID_AGE
        elif d1 <= d0:
            rr = R_MISSING_DIAGNOSIS
        elif diag_ids[d0] == -2:
            rr = R_UNKNOWN_DIAGNOSIS
        else:
            valid = True
            if age < 1:
                ad = values[i, F_AGE_DAYS]
                if np.isnan(ad):
                    rr, valid = R_MISSING_AGE_DAYS, False
                elif ad < 0 or ad > 365:
                    rr, valid = R_INVALID_AGE_DAYS, False
                elif ad <= newborn_days:
                    bw = values[i, F_BIRTH_WEIGHT]
                    if np.isnan(bw):
                        rr, valid = R_MISSING_BIRTH_WEIGHT, False
                    elif bw < min_bw or bw > max_bw:
                        rr, valid = R_INVALID_BIRTH_WEIGHT, False
        if not valid:
            out_mdc[i], out_adrg[i], out_drg[i], out_reason[i] = -1, -1, -1, rr
            continue
        ok_reason = R_OK
        for k in range(d0 + 1, d1):
            if diag_ids[k] == -2:
                ok_reason = R_SECONDARY_IGNORED
        for k in range(p0, p1):
            if proc_ids[k] == -2:
                ok_reason = R_SECONDARY_IGNORED
        pd = diag_ids[d0]
        pp = proc_ids[p0] if p1 > p0 else -1
        or_pp = pp >= 0 and proc_is_or[pp] == 1
        # candidate ADRGs: those with a list that holds one of the record's codes in its place
        for w in range(words):
            cand[w] = diag_adrg_mask_p[pd, w] if pd >= 0 else 0
        if pp >= 0:
            for w in range(words):
                cand[w] |= proc_adrg_mask_p[pp, w]
        for k in range(d0 + 1, d1):
            c = diag_ids[k]
            if c >= 0 and diag_s_any[c]:
                for w in range(words):
                    cand[w] |= diag_adrg_mask_s[c, w]
        for k in range(p0 + 1, p1):
            c = proc_ids[k]
            if c >= 0 and proc_s_any[c]:
                for w in range(words):
                    cand[w] |= proc_adrg_mask_s[c, w]
        sev = -1
        entered = False
        sex_conflict = False
        done = False
        for m in range(n_mdc):
            # -- MDC entry
            if mdc_entry[m] == 1:
                if not or_pp:
                    continue
            elif pd < 0 or (diag_mdc_mask[pd] >> np.uint64(m)) & np.uint64(1) == 0:
                continue
            if mdc_sex[m] != 0 and s != mdc_sex[m]:
                sex_conflict = True
                continue
            if not _conds_ok(values, i, mdc_cond_ptr[m], mdc_cond_ptr[m + 1], cond_field, cond_lo, cond_hi):
                continue
            if mdc_min_regions[m] > 0:
                n_regions = 0
                for r in range(mdc_region_ptr[m], mdc_region_ptr[m + 1]):
                    for k in range(d0, d1):
                        if _member(diag_list_ptr, diag_list_ids, diag_ids[k], mdc_regions[r]):
                            n_regions += 1
                            break
                if n_regions < mdc_min_regions[m]:
                    continue
            if mdc_entry[m] == 0:
                entered = True
            # -- ADRGs of the MDC in trial order
            for ai in range(mdc_adrg_ptr[m], mdc_adrg_ptr[m + 1]):
                if ai == mdc_surgical_end[m] and mdc_qy_drg[m] >= 0 and or_pp:
                    # an OR procedure that no surgical ADRG of the MDC takes: ambiguous group (歧义组)
                    rm, ra, rd, rr, done = m, -1, mdc_qy_drg[m], R_AMBIGUOUS, True
                    break
                a = mdc_adrgs[ai]
                if adrg_always[a] == 0 and (cand[a >> 6] >> np.uint64(a & 63)) & np.uint64(1) == 0:
                    continue   # none of the record's codes is in any list of this ADRG
                matched = False
                for alt in range(adrg_alt_ptr[a], adrg_alt_ptr[a + 1]):
                    all_terms = True
                    for t in range(alt_term_ptr[alt], alt_term_ptr[alt + 1]):
                        any_opt = False
                        for o in range(term_opt_ptr[t], term_opt_ptr[t + 1]):
                            if _term_ok(opt_role[o], opt_list[o], d0, d1, p0, p1, diag_ids, proc_ids,
                                        diag_list_ptr, diag_list_ids, proc_list_ptr, proc_list_ids, proc_is_or):
                                any_opt = True
                                break
                        if not any_opt:
                            all_terms = False
                            break
                    if all_terms:
                        matched = True
                        break
                if not matched:
                    continue
                if not _conds_ok(values, i, adrg_cond_ptr[a], adrg_cond_ptr[a + 1], cond_field, cond_lo, cond_hi):
                    continue
                # -- DRG by severity and conditions
                if sev < 0:
                    sev = _severity(d0, d1, diag_ids, diag_list_ptr, diag_list_ids, cc_level, cc_table)
                rm, ra, rd, rr, done = m, a, -1, R_NO_DRG, True
                for c in range(adrg_drg_ptr[a], adrg_drg_ptr[a + 1]):
                    if sev < cand_sev_min[c] or sev > cand_sev_max[c]:
                        continue
                    if _conds_ok(values, i, cand_cond_ptr[c], cand_cond_ptr[c + 1], cond_field, cond_lo, cond_hi):
                        rd, rr = cand_drg[c], ok_reason
                        break
                break
            if done:
                break
            if mdc_surgical_end[m] == mdc_adrg_ptr[m + 1] and mdc_qy_drg[m] >= 0 and or_pp:
                rm, ra, rd, rr, done = m, -1, mdc_qy_drg[m], R_AMBIGUOUS, True
                break
            if fall_through == 0:
                rm, rr, done = m, R_NO_ADRG, True
                break
        if not done:
            rr = R_NO_ADRG if entered else (R_SEX_CONFLICT if sex_conflict else R_NO_MDC)
        out_mdc[i], out_adrg[i], out_drg[i], out_reason[i] = rm, ra, rd, rr


#: Records per task of the parallel loop.
CHUNK = 1024


@njit(cache=True, parallel=True)
def group_batch(values, sex, diag_ptr, diag_ids, proc_ptr, proc_ids, bad_value, params, scheme_arrays):
    """All records, in chunks of CHUNK over the cores; ``scheme_arrays`` in SCHEME_ARGS order."""
    n = sex.shape[0]
    out_mdc = np.empty(n, dtype=np.int16)
    out_adrg = np.empty(n, dtype=np.int32)
    out_drg = np.empty(n, dtype=np.int32)
    out_reason = np.empty(n, dtype=np.int16)
    for c in prange((n + CHUNK - 1) // CHUNK):
        group_range(c * CHUNK, min(n, (c + 1) * CHUNK), out_mdc, out_adrg, out_drg, out_reason,
                    values, sex, diag_ptr, diag_ids, proc_ptr, proc_ids, bad_value, params, scheme_arrays)
    return out_mdc, out_adrg, out_drg, out_reason


SCHEME_ARGS = ("diag_list_ptr", "diag_list_ids", "proc_list_ptr", "proc_list_ids", "proc_is_or", "cc_level",
               "cc_table", "mdc_entry", "mdc_table", "mdc_sex", "mdc_min_regions", "mdc_region_ptr",
               "mdc_regions", "mdc_cond_ptr", "mdc_adrg_ptr", "mdc_adrgs", "mdc_surgical_end", "mdc_qy_drg",
               "diag_mdc_mask", "adrg_always", "diag_adrg_mask_p", "diag_adrg_mask_s", "diag_s_any",
               "proc_adrg_mask_p", "proc_adrg_mask_s", "proc_s_any", "adrg_alt_ptr", "alt_term_ptr",
               "term_opt_ptr", "opt_role", "opt_list", "adrg_cond_ptr", "adrg_drg_ptr", "cand_drg",
               "cand_sev_min", "cand_sev_max", "cand_cond_ptr", "cond_field", "cond_lo", "cond_hi")


def scheme_params(scheme) -> np.ndarray:
    v = scheme.validation
    return np.array([float(v.get("newborn_max_age_days", 28)), float(v.get("min_birth_weight_g", 100)),
                     float(v.get("max_birth_weight_g", 10000)), float(v.get("max_age_years", 150)),
                     1.0 if scheme.meta.get("fall_through", True) else 0.0], dtype=np.float64)


def set_threads(threads: int | None) -> int:
    """Threads of the parallel kernels in this thread from now on (None: leave as is); returns the
    number in force. Capped by ``NUMBA_NUM_THREADS`` (default: the cores): set that to the same
    number in a Spark executor's environment, or every Python worker starts a pool per core."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    return numba.get_num_threads()


def run(scheme, values, sex, diag_ptr, diag_ids, proc_ptr, proc_ids, bad_value, threads: int | None = None):
    """Group encoded records with a compiled scheme; returns (mdc idx, adrg id, drg id, kernel reason).

    ``threads``: see :func:`set_threads` (None: numba's current setting, all cores by default)."""
    set_threads(threads)
    return group_batch(values, sex, diag_ptr, diag_ids, proc_ptr, proc_ids, bad_value, scheme_params(scheme),
                       scheme_tuple(scheme))


def scheme_tuple(scheme) -> tuple:
    """The scheme's arrays in the order the kernel unpacks them."""
    return tuple(scheme.arrays[k] for k in SCHEME_ARGS)
