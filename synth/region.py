"""A synthetic region (合成地区): seeded, realistic discharge records for any scheme.

``synthesize_region(scheme, seed, years, months, hospitals, records_per_month) -> pa.Table``
gives settlement-list records (canonical columns of :mod:`codesets.record`) of a region's
hospitals of three levels over the given months. Every distribution and its parameters are
in ``synth.toml`` and explained in docs/synth.md; the code lists come from the scheme
(:mod:`synth.catalogue`). Each month is drawn from its own random stream
``SeedSequence([seed, year, month])``, so the same seed gives the same bytes, and a month's
records do not depend on which other months were asked for.
"""
from __future__ import annotations

import csv
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError
from drgdip.codesets.record import FEE_COLUMNS, FIELDS
from drgdip.synth.catalogue import KINDS, Catalogue, build_catalogue

HERE = Path(__file__).parent
LEVELS = ("3", "2", "1")
HOSPITAL_SCHEMA = pa.schema([("hospital_id", pa.string()), ("name", pa.string()), ("level", pa.string()),
                             ("volume", pa.float64()), ("cost_effect", pa.float64())])


def load_params(path: str | Path | None = None) -> dict:
    """The generator's distributions: ``synth.toml``, or a file of the same shape."""
    with open(path or HERE / "synth.toml", "rb") as fh:
        return tomllib.load(fh)


def load_scheme(scheme=None):
    """A compiled scheme: the object itself, a scheme file or folder, or None (teaching scheme)."""
    if scheme is not None and hasattr(scheme, "arrays"):
        return scheme
    from drgdip.grouper.drg.api import load_scheme as _load
    return _load(scheme)


# ----------------------------------------------------------------- hospitals

def make_hospitals(n: int, seed: int, params: dict | None = None) -> pa.Table:
    """The region's hospitals: id (H + region + sequence), level 3/2/1, volume and cost effect.

    Levels are given in proportion to ``level_shares`` (largest remainder, at least one
    hospital of each level when n ≥ 3), level 3 first."""
    p = params or load_params()
    hp = p["hospitals"]
    if n < 1:
        raise InputError("hospitals must be at least 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    shares = np.array([hp["level_shares"][lv] for lv in LEVELS], dtype=float)
    raw = shares / shares.sum() * n
    counts = np.floor(raw).astype(int)
    if n >= 3:
        counts = np.maximum(counts, 1)
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    rest = np.argsort(-(raw - np.floor(raw)), kind="stable")
    k = 0
    while counts.sum() < n:
        counts[rest[k % 3]] += 1
        k += 1
    level = np.repeat(np.array(LEVELS), counts)
    volume = np.array([hp["volume"][lv] for lv in level]) * rng.lognormal(0.0, hp["volume_sigma"], n)
    effect = np.array([hp["cost_level"][lv] for lv in level]) * rng.lognormal(0.0, hp["cost_sigma"], n)
    seq = np.arange(1, n + 1)
    ids = [f"H{p['region_code']}{i:05d}" for i in seq]
    names = [f"教学市第{i}医院（{lv}级）" for i, lv in zip(seq, level)]
    return pa.table([ids, names, level.tolist(), np.round(volume, 6), np.round(effect, 6)], schema=HOSPITAL_SCHEMA)


# ----------------------------------------------------------------- group profiles

def _csr(pools: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(pools) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in pools])
    ids = np.concatenate(pools).astype(np.int64) if pools and ptr[-1] else np.zeros(0, np.int64)
    return ptr, ids


def _draw(rng, ptr: np.ndarray, ids: np.ndarray, which: np.ndarray) -> np.ndarray:
    """One id from pool ``which[i]`` of a CSR pool table, for every i (-1 where the pool is empty)."""
    lo, size = ptr[which], ptr[which + 1] - ptr[which]
    pick = lo + np.floor(rng.random(len(which)) * np.maximum(size, 1)).astype(np.int64)
    out = np.full(len(which), -1, dtype=np.int64)
    ok = size > 0
    out[ok] = ids[pick[ok]]
    return out


@dataclass
class Profile:
    """Per-ADRG arrays the monthly draws index."""
    cat: Catalogue
    kind: np.ndarray            # index into KINDS
    weight: np.ndarray          # resource weight (cost of a case / base cost)
    prevalence: np.ndarray      # [level, adrg] probabilities
    los_mean: np.ndarray
    principal: tuple            # CSR of principal pools
    procs: list[tuple]          # per slot: CSR of procedure pools
    required: list[tuple]       # per slot: CSR of required secondary pools
    plain: tuple                # CSR of secondary diagnoses without CC level
    newborn: np.ndarray         # bool: age 0 groups
    pregnancy: np.ndarray       # bool per diagnosis id: principal code of the pregnancy chapter
    newborn_code: np.ndarray    # bool per diagnosis id
    bounds: dict                # field → (lo[a], hi[a]) arrays
    mdc_sex: np.ndarray
    dept: np.ndarray            # department name per ADRG
    dept_id: np.ndarray
    unrelated: tuple = (np.zeros(1, np.int64), np.zeros(0, np.int64))   # CSR: surgeries unrelated to the MDC


def _departments() -> dict[tuple[str, str], str]:
    with open(HERE / "departments.csv", encoding="utf-8", newline="") as fh:
        return {(r["mdc"], r["kind"]): r["dept"] for r in csv.DictReader(fh)}


def build_profile(cat: Catalogue, seed: int, params: dict) -> Profile:
    g = params["groups"]
    pt = params["patients"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    specs = cat.adrgs
    n = len(specs)
    if n == 0:
        raise InputError("the scheme has no ADRG a record could be drawn for")
    kind = np.array([KINDS.index(a.kind) for a in specs])
    med = np.array([g["weight"][KINDS[k]][0] for k in kind])
    sig = np.array([g["weight"][KINDS[k]][1] for k in kind])
    weight = med * np.exp(sig * rng.standard_normal(n))
    bw_hi = np.array([a.bounds.get("birth_weight_g", (-math.inf, math.inf))[1] for a in specs])
    low_bw = bw_hi < 2500
    weight[low_bw] *= (2500.0 / np.maximum(bw_hi[low_bw], 1000.0)) ** g["low_birth_weight_exponent"]
    prev = np.array([g["prevalence"][KINDS[k]] for k in kind]) * rng.lognormal(0.0, g["prevalence_sigma"], n)
    age_hi = np.array([a.bounds.get("age", (-math.inf, math.inf))[1] for a in specs])
    prev[age_hi <= 0] *= g["newborn_prevalence"]
    tilt = np.array([params["hospitals"]["mix_tilt"][lv] for lv in LEVELS])
    prevalence = prev[None, :] * weight[None, :] ** tilt[:, None]
    prevalence /= prevalence.sum(axis=1, keepdims=True)
    los_mean = g["los_base"] + g["los_per_weight"] * weight ** 0.6

    codes = cat.diag_codes.astype(str)
    newborn_code = np.char.startswith(codes, pt["newborn_prefix"])
    pregnancy = np.char.startswith(codes, pt["pregnancy_prefix"])
    newborn = age_hi <= 0
    principal = []
    for a, nb in zip(specs, newborn):
        pool = a.principal
        if a.kind == "premdc" or not nb:
            keep = pool[~newborn_code[pool]]
            pool = keep if len(keep) else pool
        principal.append(pool)
    max_p = max(len(a.procedures) for a in specs)
    procs = [_csr([a.procedures[j] if j < len(a.procedures) else np.zeros(0, np.int64) for a in specs])
             for j in range(max_p)]
    max_s = max(len(a.secondary) for a in specs)
    required = [_csr([a.secondary[j] if j < len(a.secondary) else np.zeros(0, np.int64) for a in specs])
                for j in range(max_s)]
    plain_pools = []
    for a in specs:
        pool = cat.mdc_principal.get(a.mdc, a.principal)
        pool = pool[cat.cc_level[pool] == 0]
        plain_pools.append(pool)
    fields = ("age", "age_days", "birth_weight_g", "los_days", "ventilation_hours")
    bounds = {f: (np.array([a.bounds.get(f, (-math.inf, math.inf))[0] for a in specs]),
                  np.array([a.bounds.get(f, (-math.inf, math.inf))[1] for a in specs])) for f in fields}
    depts = _departments()
    dept = np.array([depts.get((a.mdc, "surgical" if a.kind in ("surgical", "premdc") else "medical"), a.mdc)
                     for a in specs], dtype=object)
    names, dept_id = np.unique(dept.astype(str), return_inverse=True)
    return Profile(cat, kind, weight, prevalence, los_mean, _csr(principal), procs, required, _csr(plain_pools),
                   newborn, pregnancy, newborn_code, bounds, np.array([a.sex for a in specs]), dept, dept_id,
                   _unrelated_surgeries(cat, newborn))


def _unrelated_surgeries(cat: Catalogue, newborn: np.ndarray) -> tuple:
    """Per ADRG (CSR): for a medical ADRG of an ordinary MDC, the operating-room procedures of
    other MDCs' surgical ADRGs that no ADRG of its own MDC and no pre-MDC ADRG lists (a
    surgery unrelated to the principal diagnosis: the grouper's ambiguous group 歧义组 QY where
    the scheme has one); empty for the others, and for an MDC whose surgical ADRGs take any
    operating-room procedure."""
    specs = cat.adrgs
    is_or = np.asarray(cat.proc_is_or) == 1

    def union(pools):
        pools = [np.asarray(p, np.int64) for p in pools]
        return np.unique(np.concatenate(pools)) if pools else np.zeros(0, np.int64)
    premdc = union([p for a in specs if a.kind == "premdc" for p in a.procedures])
    own = {m: union([p for a in specs if a.mdc == m for p in a.procedures]) for m in {a.mdc for a in specs}}
    surgical = {m: union([a.procedures[0] for a in specs if a.mdc == m and a.kind == "surgical"])
                for m in own}
    pools = []
    for a, nb in zip(specs, newborn):
        if a.kind != "medical" or nb:
            pools.append(np.zeros(0, np.int64))
            continue
        other = union([v for m, v in surgical.items() if m != a.mdc])
        other = other[is_or[other]] if len(other) else other
        pools.append(np.setdiff1d(other, np.union1d(own[a.mdc], premdc)))
    return _csr(pools)


# ----------------------------------------------------------------- one month

def _uniform_int(rng, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.floor(lo + rng.random(len(lo)) * (hi - lo + 1)).astype(np.int64)


def _list_array(rec: np.ndarray, order: np.ndarray, ids: np.ndarray, codes: np.ndarray, n: int) -> pa.Array:
    """list<string> per record from (record, position, id) entries; duplicates within a record dropped."""
    o = np.lexsort((order, ids, rec))
    rec, order, ids = rec[o], order[o], ids[o]
    keep = np.ones(len(rec), dtype=bool)
    keep[1:] = ~((rec[1:] == rec[:-1]) & (ids[1:] == ids[:-1]))
    rec, order, ids = rec[keep], order[keep], ids[keep]
    o = np.lexsort((order, rec))
    rec, ids = rec[o], ids[o]
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.bincount(rec, minlength=n))
    values = pa.array(codes[ids].tolist(), type=pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _fees(rng, total_cents: np.ndarray, kind: np.ndarray, params: dict) -> np.ndarray:
    """Fee categories in cents, summing exactly to the total (remainder to the largest)."""
    alpha = np.array([params["fees"][k] for k in KINDS], dtype=float)[kind]
    share = rng.gamma(alpha)
    share /= share.sum(axis=1, keepdims=True)
    cents = np.floor(share * total_cents[:, None]).astype(np.int64)
    rest = total_cents - cents.sum(axis=1)
    cents[np.arange(len(cents)), np.argmax(share, axis=1)] += rest
    return cents


def synthesize_month(prof: Profile, hosp: pa.Table, year: int, month: int, n: int, seed: int,
                     params: dict) -> dict:
    """Columns (canonical names → arrays) of one month's discharges."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, year, month]))
    cat, g, pt, fp = prof.cat, params["groups"], params["patients"], params["funds"]
    level = np.array([LEVELS.index(x) for x in hosp.column("level").to_pylist()])
    vol = hosp.column("volume").to_numpy()
    effect = hosp.column("cost_effect").to_numpy()
    h = rng.choice(len(vol), size=n, p=vol / vol.sum())
    lv = level[h]
    a = np.zeros(n, dtype=np.int64)
    u = rng.random(n)
    for k in range(len(LEVELS)):
        sel = lv == k
        cum = np.cumsum(prof.prevalence[k])
        a[sel] = np.minimum(np.searchsorted(cum / cum[-1], u[sel], side="right"), len(cum) - 1)
    kind = prof.kind[a]

    # -- patient
    principal = _draw(rng, *prof.principal, a)
    newborn = prof.newborn[a]
    preg = prof.pregnancy[principal] & ~newborn
    age = np.clip(rng.normal(*pt["adult_age"], n), *pt["adult_age_range"])
    child = rng.random(n) < pt["child_share"]
    age[child] = _uniform_int(rng, np.full(child.sum(), pt["child_age_range"][0]),
                              np.full(child.sum(), pt["child_age_range"][1]))
    pa_lo, pa_hi = pt["pregnancy_age_range"]
    age[preg] = _uniform_int(rng, np.full(preg.sum(), pa_lo), np.full(preg.sum(), pa_hi))
    lo, hi = prof.bounds["age"][0][a], prof.bounds["age"][1][a]
    age = np.floor(np.clip(age, np.maximum(lo, 0), np.minimum(hi, 120)))
    age[newborn] = 0
    age_days = np.full(n, np.nan)
    dlo = np.maximum(prof.bounds["age_days"][0][a][newborn], 0)
    dhi = np.minimum(prof.bounds["age_days"][1][a][newborn], 365)
    age_days[newborn] = np.floor(dlo + (dhi - dlo + 1) * rng.random(newborn.sum()) ** 2)
    age_days[newborn] = np.minimum(age_days[newborn], dhi)
    bw = np.full(n, np.nan)
    blo = np.maximum(prof.bounds["birth_weight_g"][0][a][newborn], pt["birth_weight_range"][0])
    bhi = np.minimum(prof.bounds["birth_weight_g"][1][a][newborn], pt["birth_weight_range"][1])
    term = np.clip(rng.normal(*pt["term_birth_weight"], newborn.sum()), *pt["birth_weight_range"])
    bounded = np.isfinite(prof.bounds["birth_weight_g"][1][a][newborn])
    bw_nb = np.where(bounded, blo + rng.random(newborn.sum()) * (bhi - blo), term)
    bw[newborn] = np.round(np.clip(bw_nb, blo, bhi))
    adm_w = np.where(newborn, bw + np.nan_to_num(age_days) * 25.0, np.nan)
    sex = np.where(rng.random(n) < 0.5, "1", "2").astype(object)
    sex[preg] = "2"
    ms = prof.mdc_sex[a]
    sex[ms == 1] = "1"
    sex[ms == 2] = "2"

    # -- diagnoses: principal, required, MCC / CC by severity, plain comorbidities
    sev = rng.choice(3, size=n, p=np.array(g["severity_shares"]) / np.sum(g["severity_shares"]))
    pool_key = np.where(newborn, 2, np.where(preg, 1, 0))
    ccl = cat.cc_level
    nbc, pgc = prof.newborn_code, prof.pregnancy
    level_pools = {}
    for lvl in (1, 2):
        base = np.flatnonzero(ccl == lvl)
        pools = [base[~nbc[base] & ~pgc[base]], base[~nbc[base]], base[nbc[base]]]
        pools = [p if len(p) else base for p in pools]
        level_pools[lvl] = _csr(pools)
    rec, order, ids = [np.arange(n)], [np.zeros(n, np.int64)], [principal]
    for j, (ptr, pool) in enumerate(prof.required):
        d = _draw(rng, ptr, pool, a)
        ok = d >= 0
        rec.append(np.flatnonzero(ok)); order.append(np.full(ok.sum(), 1 + j)); ids.append(d[ok])
    mcc_rec = np.flatnonzero(sev == 2)
    rec.append(mcc_rec); order.append(np.full(len(mcc_rec), 10))
    ids.append(_draw(rng, *level_pools[2], pool_key[mcc_rec]))
    n_cc = (sev == 1).astype(np.int64) + rng.poisson(g["extra_cc_mean"], n) * (sev > 0)
    cc_rec = np.repeat(np.arange(n), n_cc)
    rec.append(cc_rec); order.append(20 + np.arange(len(cc_rec)) - np.repeat(np.cumsum(n_cc) - n_cc, n_cc))
    ids.append(_draw(rng, *level_pools[1], pool_key[cc_rec]))
    n_plain = rng.poisson(g["plain_secondary_mean"], n)
    pl_rec = np.repeat(np.arange(n), n_plain)
    rec.append(pl_rec); order.append(40 + np.arange(len(pl_rec)) - np.repeat(np.cumsum(n_plain) - n_plain, n_plain))
    ids.append(_draw(rng, *prof.plain, a[pl_rec]))
    rec, order, ids = (np.concatenate(x).astype(np.int64) for x in (rec, order, ids))
    ok = ids >= 0
    rec, order, ids = rec[ok], order[ok], ids[ok]

    # -- bad records: chosen once, disjoint
    br = params["bad_records"]
    r = rng.random(n)
    edges = np.cumsum([br["missing_principal"], br["unknown_principal"], br["invalid_sex"], br["missing_age"]])
    bad = np.searchsorted(edges, r, side="right")          # 0..3 bad kinds, 4 = good
    codes = cat.diag_codes.astype(str)
    if (bad == 1).any():
        unk = np.flatnonzero(bad == 1)
        codes = np.concatenate([codes, np.char.add(np.char.partition(codes[principal[unk]], "x")[:, 0],
                                                   br["unknown_extension"])])
        ids[(order == 0) & np.isin(rec, unk)] = len(cat.diag_codes) + np.arange(len(unk))
    drop = np.isin(rec, np.flatnonzero(bad == 0))
    diagnoses = _list_array(rec[~drop], order[~drop], ids[~drop], codes.astype(object), n)
    sex[bad == 2] = br["invalid_sex_value"]
    age = age.astype(float)
    age[bad == 3] = np.nan
    bw[newborn & (rng.random(n) < br["newborn_missing_weight"])] = np.nan

    # -- procedures and ventilation
    prec, porder, pids = [], [], []
    for j, (ptr, pool) in enumerate(prof.procs):
        d = _draw(rng, ptr, pool, a)
        okp = d >= 0
        prec.append(np.flatnonzero(okp)); porder.append(np.full(okp.sum(), j)); pids.append(d[okp])
    if prec:
        prec, porder, pids = (np.concatenate(x).astype(np.int64) for x in (prec, porder, pids))
    else:
        prec = porder = pids = np.zeros(0, np.int64)
    # a surgery unrelated to the principal diagnosis' MDC (歧义组 QY): its own random stream, so the
    # other draws of the month stay as they were
    qrng = np.random.default_rng(np.random.SeedSequence([seed, year, month, 29]))
    uptr, upool = prof.unrelated
    unrelated = (qrng.random(n) < g["unrelated_surgery_share"]) & (uptr[a + 1] > uptr[a])
    if unrelated.any():
        rows = np.flatnonzero(unrelated)
        prec = np.concatenate([prec, rows])
        porder = np.concatenate([porder, np.full(len(rows), len(prof.procs))])
        pids = np.concatenate([pids, _draw(qrng, uptr, upool, a[rows])])
    procedures = _list_array(prec, porder, pids, cat.proc_codes, n)
    vent = np.zeros(n)
    pcodes = cat.proc_codes.astype(str)
    for prefix, (vlo, vhi) in params["ventilation"].items():
        hit = np.char.startswith(pcodes[pids], prefix) if len(pids) else np.zeros(0, bool)
        rv = np.unique(prec[hit])
        vent[rv] = np.maximum(vent[rv], np.floor(vlo + rng.random(len(rv)) * (vhi - vlo + 1)))

    # -- cost and length of stay
    z = rng.standard_normal(n)
    sig = np.array([g["cost_sigma"][k] for k in KINDS])[kind]
    cost = (params["base_cost_per_weight"] * prof.weight[a] * np.array(g["severity_cost"])[sev]
            * effect[h] * (1 + params["inflation"]) ** (year - params["price_year"]) * np.exp(sig * z - sig ** 2 / 2))
    dv = params["deviation"]
    rd = rng.random(n)
    high = rd < dv["high_share"]
    low = (rd >= dv["high_share"]) & (rd < dv["high_share"] + dv["low_share"])
    mult = np.ones(n)
    mult[high] = rng.uniform(*dv["high_multiplier"], high.sum())
    mult[low] = rng.uniform(*dv["low_multiplier"], low.sum())
    cost *= mult
    cost[unrelated] *= g["unrelated_surgery_cost"]
    total_cents = np.maximum(np.round(cost * 100), 5000).astype(np.int64)
    rho = g["los_cost_correlation"]
    zl = rho * z + math.sqrt(1 - rho ** 2) * rng.standard_normal(n)
    los = prof.los_mean[a] * np.array(g["severity_los"])[sev] * np.sqrt(mult) * np.exp(g["los_sigma"] * zl)
    los[unrelated] *= g["unrelated_surgery_los"]
    los = np.clip(np.round(los), 1, 365)
    los = np.maximum(los, np.ceil(vent / 24))
    los_lo, los_hi = prof.bounds["los_days"][0][a], prof.bounds["los_days"][1][a]
    los = np.clip(los, np.maximum(los_lo, 1), np.minimum(los_hi, 365))

    # -- dates
    first = np.datetime64(f"{year:04d}-{month:02d}-01")
    days = int(((first + np.timedelta64(31, "D")).astype("datetime64[M]").astype("datetime64[D]") - first)
               .astype(np.int64))
    dis = first + rng.integers(0, days, n).astype("timedelta64[D]")
    adm = dis - los.astype(np.int64).astype("timedelta64[D]")
    birth_offset = np.where(newborn, np.nan_to_num(age_days),
                            np.nan_to_num(age, nan=40) * 365.25 + rng.random(n) * 364)
    birth = adm - np.floor(birth_offset).astype(np.int64).astype("timedelta64[D]")

    # -- disposition, fund, money
    disp_keys = list(params["patients"]["dispositions"])
    disp_p = np.array([params["patients"]["dispositions"][k] for k in disp_keys])
    disposition = np.array(disp_keys, dtype=object)[rng.choice(len(disp_keys), n, p=disp_p / disp_p.sum())]
    disposition[rng.random(n) < np.array(pt["death_rate"])[sev]] = "5"
    young = newborn | (age < 18)
    resident = np.where(young, rng.random(n) < fp["child_resident_share"], rng.random(n) >= fp["employee_share"])
    fund = np.where(resident, "resident", "employee").astype(object)
    share = np.where(resident, rng.uniform(*fp["personal_share"]["resident"], n),
                     rng.uniform(*fp["personal_share"]["employee"], n))
    personal_cents = np.round(total_cents * share).astype(np.int64)
    fees = _fees(rng, total_cents, kind, params)

    # -- identifiers
    seq = np.arange(1, n + 1)
    stamp = f"{year:04d}{month:02d}"
    ids_ = np.char.add(f"S{stamp}", np.char.zfill(seq.astype(str), 6))
    n_people = max(int(params["patients"]["patients_per_record"] * n * 12 * 3), 1)
    person = rng.integers(1, n_people + 1, n)
    patient = np.char.add(f"P{params['region_code']}", np.char.zfill(person.astype(str), 9))
    mrn = np.char.add(f"MR{stamp}", np.char.zfill(seq.astype(str), 6))
    hosp_ids = np.array(hosp.column("hospital_id").to_pylist(), dtype=object)
    doc = (h * 100 + prof.dept_id[a]) * 10 + rng.integers(0, params["hospitals"]["doctors_per_department"], n)
    doctor = np.char.add(f"D{params['region_code']}", np.char.zfill(doc.astype(str), 5))

    cols = {
        "id": ids_, "hospital_id": hosp_ids[h], "patient_id": patient, "medical_record_no": mrn, "sex": sex,
        "birth_date": np.datetime_as_string(birth, unit="D"), "age": age, "age_days": age_days,
        "birth_weight_g": bw, "admission_weight_g": adm_w,
        "admission_date": np.datetime_as_string(adm, unit="D"),
        "discharge_date": np.datetime_as_string(dis, unit="D"), "los_days": los,
        "discharge_disposition": disposition, "dept": prof.dept[a], "doctor_id": doctor,
        "ventilation_hours": vent, "diagnoses": diagnoses, "procedures": procedures, "fund": fund,
        "total_cost": total_cents / 100, "personal_share": personal_cents / 100,
        "fund_paid": (total_cents - personal_cents) / 100,
    }
    for j, name in enumerate(FEE_COLUMNS):
        cols[name] = fees[:, j] / 100
    return cols


# ----------------------------------------------------------------- the region

def _months(months) -> list[int]:
    ms = list(range(1, int(months) + 1)) if isinstance(months, (int, np.integer)) else [int(m) for m in months]
    if not ms or any(m < 1 or m > 12 for m in ms):
        raise InputError("months must be a count 1–12 or month numbers 1–12")
    return ms


def month_counts(records_per_month: int, months: list[int], params: dict) -> list[int]:
    """Discharges per month: the mean × the seasonal factor, rounded."""
    amp = params["seasonal_amplitude"]
    return [max(int(round(records_per_month * (1 + amp * math.cos(2 * math.pi * (m - 1) / 12)))), 1) for m in months]


def synthesize_region(scheme=None, seed: int = 0, years=(2024,), months=12, hospitals: int = 12,
                      records_per_month: int = 2000, params: dict | None = None, progress=None) -> pa.Table:
    """Discharge records of a synthetic region, sorted by discharge month and id.

    ``scheme``: compiled scheme, scheme file or folder, or None for the teaching scheme;
    ``years``: years (ints); ``months``: a count (1–12) or month numbers; ``hospitals``:
    number of hospitals; ``records_per_month``: mean discharges per month over the region.
    ``progress``: optional callable called with the number of records after each month."""
    p = params or load_params()
    s = load_scheme(scheme)
    years = [int(y) for y in ([years] if isinstance(years, (int, np.integer)) else years)]
    if not years:
        raise InputError("years must name at least one year")
    if records_per_month < 1:
        raise InputError("records_per_month must be at least 1")
    ms = _months(months)
    prof = build_profile(build_catalogue(s), seed, p)
    hosp = make_hospitals(hospitals, seed, p)
    schema = pa.schema([(f.name, f.type) for f in FIELDS])
    parts = []
    for y in sorted(set(years)):
        for m, cnt in zip(ms, month_counts(records_per_month, ms, p)):
            cols = synthesize_month(prof, hosp, y, m, cnt, seed, p)
            parts.append(pa.table([cols[f.name] if isinstance(cols[f.name], pa.Array)   # NaN → null (missing)
                                   else pa.array(cols[f.name], type=f.type, from_pandas=True) for f in FIELDS],
                                  schema=schema))
            if progress is not None:
                progress(cnt)
    return pa.concat_tables(parts).combine_chunks()


# ----------------------------------------------------------------- the patient's side (benefits)

PERSON_SCHEMA = pa.schema([("patient_id", pa.string()), ("year", pa.int64()), ("fund", pa.string()),
                           ("assistance_class", pa.string()), ("enrolment_date", pa.string()),
                           ("collective_period", pa.bool_()), ("break_years", pa.int64()),
                           ("repaid_years", pa.int64()), ("continuous_years", pa.int64()),
                           ("zero_claim_years", pa.int64()), ("reenrolled", pa.bool_())])


def make_persons(records: pa.Table, year: int, seed: int, params: dict | None = None) -> pa.Table:
    """The persons file of a year (参保人员): one row per distinct ``patient_id`` of ``records``
    (sorted), for :func:`weights.settlement.benefits.compute_benefits`.

    Columns: patient_id, year, fund (of the person's first stay of the year), assistance_class
    (救助对象类别, resident-fund persons only, by ``[persons].assistance_shares``; empty = none) and
    the enrolment facts (参保缴费): enrolment_date, collective_period (集中参保期), break_years
    (断保年数), repaid_years (补缴年数), continuous_years (连续参保年数), zero_claim_years (零报销年数),
    reenrolled. Drawn from the stream ``SeedSequence([seed, year, 17])``: the records' own
    draws are untouched."""
    p = (params or load_params())["persons"]
    t = records.select(["patient_id", "fund", "discharge_date", "id"]).filter(
        pc.is_valid(records["patient_id"]))
    t = t.sort_by([("patient_id", "ascending"), ("discharge_date", "ascending"), ("id", "ascending")])
    pid = np.asarray(t["patient_id"].to_pylist(), dtype=object)
    first = np.ones(len(pid), bool)
    first[1:] = pid[1:] != pid[:-1]
    pid = pid[first]
    fund = np.asarray(t["fund"].to_pylist(), dtype=object)[first]
    n = len(pid)
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(year), 17]))
    classes = list(p["assistance_shares"])
    shares = np.array([p["assistance_shares"][c] for c in classes], dtype=float)
    edges = np.cumsum(shares)
    if edges[-1] > 1:
        raise InputError("[persons].assistance_shares add up to more than 1")
    k = np.searchsorted(edges, rng.random(n), side="right")
    cls = np.array(classes + [None], dtype=object)[k]
    cls[fund != "resident"] = None
    broke = rng.random(n) < p["break_share"]
    brk = np.where(broke, rng.integers(p["break_years"][0], p["break_years"][1] + 1, n), 0)
    repaid = np.where(broke & (rng.random(n) < p["repaid_share"]),
                      np.floor(rng.random(n) * brk).astype(np.int64) + 1, 0)
    outside = broke | (rng.random(n) < p["outside_collective_share"])
    cont = np.where(broke, 1, rng.integers(p["continuous_years"][0], p["continuous_years"][1] + 1, n))
    zero = np.where(rng.random(n) < p["zero_claim_share"],
                    rng.integers(p["zero_claim_years"][0], p["zero_claim_years"][1] + 1, n), 0)
    # enrolled in the collective period: January 1st of the first continuous year; outside it
    # (or after a break): a day of the year itself
    day = rng.integers(0, 365, n).astype("timedelta64[D]")
    start = np.array([np.datetime64(f"{int(year) - int(c) + 1:04d}-01-01") for c in cont])
    enrol = np.where(outside, np.datetime64(f"{int(year):04d}-01-01") + day, start)
    return pa.table([pid.tolist(), np.full(n, int(year)), fund.tolist(), cls.tolist(),
                     np.datetime_as_string(enrol.astype("datetime64[D]"), unit="D").tolist(), (~outside).tolist(),
                     brk.astype(np.int64), repaid.astype(np.int64), cont.astype(np.int64), zero.astype(np.int64),
                     broke.tolist()], schema=PERSON_SCHEMA)


def stay_facts(records: pa.Table, hospitals: pa.Table, seed: int, params: dict | None = None) -> pa.Table:
    """``records`` with the columns the benefits calculator reads beside the record:
    hospital_level (医院等级, from the hospital list), in_policy_cost (政策范围内费用: total
    cost × a share drawn from ``[stays].in_policy_share``, to 0.01) and referred (规范转诊, with
    probability ``[stays].referred_share``), from the stream ``SeedSequence([seed, 19])`` over
    the rows in order. The records' columns are unchanged."""
    p = (params or load_params())["stays"]
    n = records.num_rows
    level = dict(zip(hospitals["hospital_id"].to_pylist(), hospitals["level"].to_pylist()))
    lv = [level.get(h) for h in records["hospital_id"].to_pylist()]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 19]))
    share = rng.uniform(*p["in_policy_share"], n)
    referred = rng.random(n) < p["referred_share"]
    total = np.asarray(pc.fill_null(records["total_cost"], np.nan).to_numpy(zero_copy_only=False), float)
    cents = np.round(np.nan_to_num(total) * 100)
    in_policy = pa.array(np.round(cents * share) / 100, pa.float64(), mask=~np.isfinite(total))
    return records.append_column("hospital_level", pa.array(lv, pa.string())).append_column(
        "in_policy_cost", in_policy).append_column("referred", pa.array(referred, pa.bool_()))
