"""DIP auxiliary catalogue (辅助目录): coefficients learned from history, applied per case.

Three factors, each optional by policy:

* severity (疾病严重程度): a Charlson-style index (CCI) over SECONDARY diagnoses
  (``dip_cci.csv``), binned by the policy's ``severity_bins``; adjacent bins whose
  relative costs do not really differ are merged into one level;
* tumour (肿瘤严重程度): among cases whose principal diagnosis is a tumour, the flags
  metastasis (转移), radiotherapy (放疗), chemotherapy (化疗); a case takes its highest
  applied flag coefficient;
* age (年龄特征): the policy's age bands (children, elderly) against all other ages.

Every coefficient rests on relative costs: a history case's cost / the trimmed mean cost
of its DIP group. A level, flag or band is applied only when it and its baseline each have
at least ``min_cases`` cases, its relative cost differs from the baseline's by at least
``min_difference`` and a two-sided z statistic reaches ``z``; otherwise its coefficient is
1 and the catalogue row says why. Coefficients multiply.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.grouper.dip.keys import _flat, normalize_array, secondary, starts_with_any

CCI_CSV = Path(__file__).with_name("dip_cci.csv")
TUMOUR_FLAGS = ("metastasis", "radiotherapy", "chemotherapy")


@lru_cache(maxsize=1)
def load_cci_table() -> tuple[tuple[str, str, str, int], ...]:
    """(prefix, condition, family, weight) rows of the CCI table (read once a process)."""
    with CCI_CSV.open(encoding="utf-8") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return tuple((r["prefix"], r["condition"], r["family"], int(r["weight"])) for r in rows)


def cci_families(codes: pa.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """(family id per code, -1 for none; its weight; the number of families) by the longest
    prefix of the CCI table each (normalised) code starts with."""
    table = load_cci_table()
    families = sorted({f for _, _, f, _ in table})
    fam_id = {f: i for i, f in enumerate(families)}
    fam = np.full(len(codes), -1, dtype=np.int64)
    wt = np.zeros(len(codes), dtype=np.int64)
    if len(codes) == 0:
        return fam, wt, len(families)
    done = np.zeros(len(codes), dtype=bool)
    by_len: dict[int, dict[str, tuple[int, int]]] = {}
    for p, _, f, w in table:
        by_len.setdefault(len(p), {})[p] = (fam_id[f], w)
    for length in sorted(by_len, reverse=True):
        keys = sorted(by_len[length])
        head = pc.utf8_slice_codeunits(codes, 0, length)
        idx = pc.index_in(head, value_set=pa.array(keys)).to_numpy(zero_copy_only=False).astype(np.float64)
        hit = ~np.isnan(idx) & ~done
        at = idx[hit].astype(np.int64)
        fam[hit] = np.array([by_len[length][k][0] for k in keys], dtype=np.int64)[at]
        wt[hit] = np.array([by_len[length][k][1] for k in keys], dtype=np.int64)[at]
        done |= hit
    return fam, wt, len(families)


def cci_index(diagnoses: pa.ListArray) -> np.ndarray:
    """CCI index of each case from its secondary diagnoses (highest weight per family, summed);
    each distinct code is looked up once."""
    from drgdip.grouper.dip.match import secondary_cci
    ptr, entry, codes = listed_entries(diagnoses)
    fam, wt, nf = cci_families(codes)
    return secondary_cci(ptr, _at(fam, entry, -1), _at(wt, entry, 0), nf)


def _at(values: np.ndarray, entry: np.ndarray, missing):
    """values[entry] with ``missing`` where entry is -1."""
    out = np.append(values, np.array([missing], dtype=values.dtype))
    return out[entry]


def listed_entries(lists: pa.ListArray) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(CSR ptr int64[n + 1], entry int32 of each listed code in the distinct codes, -1 null;
    the distinct codes) of a list<string> or list<dictionary<string>> column."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    n = len(lists)
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.bincount(parents, minlength=n) if len(parents) else np.zeros(n, dtype=np.int64)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    if not pa.types.is_dictionary(values.type):
        values = pc.dictionary_encode(values.cast(pa.string()))
    entry = pc.fill_null(values.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
    return ptr, entry, values.dictionary.cast(pa.string())


def severity_bin(index: np.ndarray, bins) -> np.ndarray:
    return np.searchsorted(np.asarray(bins), index, side="right") - 1


def tumour_features(diagnoses: pa.ListArray, procedures: pa.ListArray, principal_codes: pa.Array,
                    tumour: dict) -> tuple[np.ndarray, np.ndarray]:
    """(is tumour case, flags bool[n, 3] in TUMOUR_FLAGS order)."""
    n = len(diagnoses)
    is_tumour = starts_with_any(principal_codes, tumour["principal"])
    flags = np.zeros((n, len(TUMOUR_FLAGS)), dtype=bool)
    rows, codes = secondary(diagnoses)
    pvals, prows = _flat(procedures)
    pvals = normalize_array(pvals.cast(pa.string())) if len(pvals) else pvals
    spec = {
        "metastasis": (tumour["metastasis"], ()),
        "radiotherapy": (tumour["radiotherapy_diagnoses"], tumour["radiotherapy_procedures"]),
        "chemotherapy": (tumour["chemotherapy_diagnoses"], tumour["chemotherapy_procedures"]),
    }
    for k, name in enumerate(TUMOUR_FLAGS):
        dx, px = spec[name]
        if len(codes) and dx:
            flags[rows[starts_with_any(codes, dx)], k] = True
        if len(pvals) and px:
            flags[prows[starts_with_any(pvals, px)], k] = True
    flags &= is_tumour[:, None]
    return is_tumour, flags


def age_band(age: np.ndarray, age_days: np.ndarray, bands) -> np.ndarray:
    """Index of each case's age band (-1: in none, or age unknown). Age in days counts as age 0."""
    a = np.where(np.isnan(age) & ~np.isnan(age_days), 0.0, age)
    out = np.full(len(a), -1, dtype=np.int64)
    for i, b in enumerate(bands):
        out[(a >= b["min_age"]) & (a < b["max_age"])] = i
    return out


# ---------------------------------------------------------------- learning

def _stats(r: np.ndarray) -> tuple[int, float, float]:
    n = len(r)
    if n == 0:
        return 0, float("nan"), float("nan")
    return n, float(r.mean()), float(r.var(ddof=1)) if n > 1 else 0.0


def _supported(level: np.ndarray, base: np.ndarray, rules: dict) -> tuple[bool, str]:
    n1, m1, v1 = _stats(level)
    n0, m0, v0 = _stats(base)
    if n0 < rules["min_cases"]:
        return False, f"baseline has {n0} cases, fewer than {rules['min_cases']}"
    if n1 < rules["min_cases"]:
        return False, f"{n1} cases, fewer than {rules['min_cases']}"
    diff = m1 / m0 - 1.0
    if abs(diff) < rules["min_difference"]:
        return False, f"relative cost differs from baseline by {diff:+.1%}, less than {rules['min_difference']:.0%}"
    se = np.sqrt(v1 / n1 + v0 / n0)
    z = np.inf if se == 0 else abs(m1 - m0) / se
    if z < rules["z"]:
        return False, f"difference not significant (z = {z:.2f} < {rules['z']})"
    return True, f"differs from baseline by {diff:+.1%} (z = {min(z, 1e9):.2f})"


def _row(factor, key, label, cases, ratio, coefficient, applied, note, rests_on):
    return {"factor": factor, "key": key, "label": label, "cases": int(cases),
            "mean_ratio": None if not np.isfinite(ratio) else round(float(ratio), 4),
            "coefficient": round(float(coefficient), 4), "applied": bool(applied),
            "rests_on_cases": int(rests_on), "note": note}


def learn_severity(ratio: np.ndarray, sev_bin: np.ndarray, bins, rules: dict) -> list[dict]:
    """One row per CCI bin: its level, the level's coefficient and the cases behind it."""
    nb = len(bins)
    levels = [[0]]
    notes = {0: "baseline level"}
    for b in range(1, nb):
        cur = np.isin(sev_bin, levels[-1])
        ok, why = _supported(ratio[sev_bin == b], ratio[cur], rules)
        if ok:
            levels.append([b])
        else:
            levels[-1].append(b)
        notes[b] = ("new level: " if ok else "merged into the level below: ") + why
    base = ratio[np.isin(sev_bin, levels[0])]
    base_ok = len(base) >= rules["min_cases"]
    rows = []
    for li, members in enumerate(levels):
        sel = ratio[np.isin(sev_bin, members)]
        coef = (sel.mean() / base.mean()) if (base_ok and len(sel) and li > 0) else 1.0
        for b in members:
            lo, hi = bins[b], (bins[b + 1] if b + 1 < nb else None)
            label = f"CCI {lo}" if hi == lo + 1 else (f"CCI {lo}-{hi - 1}" if hi is not None else f"CCI {lo}+")
            nbin = int((sev_bin == b).sum())
            note = notes[b] if base_ok else f"not applied: baseline has {len(base)} cases, fewer than {rules['min_cases']}"
            rows.append(_row("severity", f"level{li}:bin{b}", label, nbin,
                             ratio[sev_bin == b].mean() if nbin else np.nan, coef,
                             base_ok and li > 0, note, len(sel)))
    return rows


def learn_flags(factor: str, ratio: np.ndarray, member: np.ndarray, baseline: np.ndarray,
                names, rules: dict, base_label: str) -> list[dict]:
    """Rows for binary features (tumour flags, age bands) against a baseline set of cases."""
    base = ratio[baseline]
    rows = [_row(factor, "baseline", base_label, len(base), base.mean() if len(base) else np.nan,
                 1.0, False, "baseline", len(base))]
    for k, name in enumerate(names):
        sel = ratio[member[:, k]]
        ok, why = _supported(sel, base, rules)
        coef = sel.mean() / base.mean() if ok else 1.0
        rows.append(_row(factor, name, name, len(sel), sel.mean() if len(sel) else np.nan, coef, ok,
                         ("applied: " if ok else "not applied: ") + why, len(sel)))
    return rows


# ---------------------------------------------------------------- features and application

def case_features(diagnoses: pa.ListArray, procedures: pa.ListArray, principal_codes: pa.Array,
                  age: np.ndarray, age_days: np.ndarray, spec: dict) -> dict:
    """Everything the auxiliary catalogue looks at, per case."""
    out = {"cci": cci_index(diagnoses)}
    out["severity_bin"] = severity_bin(out["cci"], spec["severity_bins"])
    out["is_tumour"], out["tumour_flags"] = tumour_features(diagnoses, procedures, principal_codes, spec["tumour"])
    out["age_band"] = age_band(age, age_days, spec["age_bands"])
    return out


def learn(ratio: np.ndarray, feats: dict, spec: dict) -> list[dict]:
    """The auxiliary catalogue's rows for the enabled factors."""
    rules = spec["rules"]
    rows: list[dict] = []
    if "severity" in spec["enabled"]:
        rows += learn_severity(ratio, feats["severity_bin"], spec["severity_bins"], rules)
    if "tumour" in spec["enabled"]:
        t = feats["is_tumour"]
        flags = feats["tumour_flags"]
        rows += learn_flags("tumour", ratio, flags, t & ~flags.any(axis=1), TUMOUR_FLAGS, rules,
                            "tumour cases without any flag")
    if "age" in spec["enabled"]:
        names = [b["name"] for b in spec["age_bands"]]
        member = np.stack([feats["age_band"] == i for i in range(len(names))], axis=1) if names \
            else np.zeros((len(ratio), 0), dtype=bool)
        rows += learn_flags("age", ratio, member, feats["age_band"] < 0, names, rules, "all other ages")
    return rows


def apply(feats: dict, rows: list[dict], spec: dict, n: int) -> dict[str, np.ndarray]:
    """Per-case coefficients: severity, tumour, age (1.0 where nothing applies)."""
    sev = np.ones(n)
    tum = np.ones(n)
    age = np.ones(n)
    for r in rows:
        if not r["applied"]:
            continue
        if r["factor"] == "severity":
            b = int(r["key"].split(":bin")[1])
            sev[feats["severity_bin"] == b] = r["coefficient"]
        elif r["factor"] == "tumour":
            k = TUMOUR_FLAGS.index(r["key"])
            hit = feats["tumour_flags"][:, k]
            tum[hit] = np.where(tum[hit] == 1.0, r["coefficient"], np.maximum(tum[hit], r["coefficient"]))
        elif r["factor"] == "age":
            names = [b["name"] for b in spec["age_bands"]]
            if r["key"] in names:
                age[feats["age_band"] == names.index(r["key"])] = r["coefficient"]
    return {"severity": sev, "tumour": tum, "age": age}
