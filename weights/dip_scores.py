"""DIP scores (病种分值) from history, and the DIP part of a region's policy file.

``score_g = year-weighted trimmed mean cost of group g / year-weighted mean cost of all
cases × base``. Years are weighted oldest → newest by the policy (default 1:2:7: the
newest history year takes the last weight); a group missing a year is averaged over the
years it has, weights renormalised. Outliers are trimmed per group (pooled over years)
before any mean. Group quality: CV per group, RIV over the catalogue.

The policy's defaults live in ``dip_defaults.toml`` beside this module; a region's file
overrides any key under its own ``[dip]`` table.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from drgdip.arrowio import InputError

_DEFAULTS_PATH = Path(__file__).with_name("dip_defaults.toml")
TRIM_METHODS = ("sd", "percentile", "none")
AUX_FACTORS = ("severity", "tumour", "age")
PROCEDURE_TYPES = ("diagnostic", "therapeutic", "surgery")


@dataclass(frozen=True)
class AgeBand:
    name: str
    min_age: float
    max_age: float


@dataclass(frozen=True)
class DipPolicy:
    """The ``[dip]`` table of a policy file (DIP 分值付费 parameters)."""
    base: float
    min_cases: int
    year_weights: tuple[float, ...]
    excluded_procedures: tuple[str, ...]
    trim: str
    trim_sd: float
    trim_percentiles: tuple[float, float]
    auxiliary: tuple[str, ...]
    aux_min_cases: int
    aux_min_difference: float
    aux_z: float
    severity_bins: tuple[int, ...]
    tumour: dict = field(hash=False)
    age_bands: tuple[AgeBand, ...]
    procedure_types: dict = field(hash=False)
    source: str = "defaults"

    def to_json(self) -> dict:
        d = asdict(self)
        d["age_bands"] = [asdict(b) for b in self.age_bands]
        return json.loads(json.dumps(d, sort_keys=True))


def _defaults() -> dict:
    with _DEFAULTS_PATH.open("rb") as fh:
        return tomllib.load(fh)["dip"]


def _merge(base: dict, over: dict, where: str) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            known = ", ".join(sorted(base))
            raise InputError(f"{where}: unknown key {k!r} (known: {known})")
        if isinstance(base[k], dict) and k != "procedure_types":
            if not isinstance(v, dict):
                raise InputError(f"{where}.{k}: expected a table")
            out[k] = _merge(base[k], v, f"{where}.{k}")
        else:
            out[k] = v
    return out


def _num(d: dict, key: str, where: str, lo: float | None = None, integer: bool = False):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{where}.{key}: expected a number, got {v!r}")
    if integer and int(v) != v:
        raise InputError(f"{where}.{key}: expected a whole number, got {v!r}")
    if lo is not None and v < lo:
        raise InputError(f"{where}.{key}: must be at least {lo}, got {v!r}")
    return int(v) if integer else float(v)


def _codes(v, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise InputError(f"{where}: expected a list of code prefixes (strings)")
    from drgdip.grouper.dip.keys import normalize_scalar
    return tuple(sorted({normalize_scalar(x) for x in v}))


def policy_from_dict(user: dict | None, source: str = "policy") -> DipPolicy:
    """Validate a ``[dip]`` table (already parsed) merged over the defaults."""
    d = _merge(_defaults(), user or {}, "[dip]")
    w = "[dip]"
    yw = d["year_weights"]
    if not isinstance(yw, list) or not yw or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 for x in yw) or sum(yw) <= 0:
        raise InputError(f"{w}.year_weights: expected a list of non-negative numbers (oldest -> newest) with a positive sum, got {yw!r}")
    if d["trim"] not in TRIM_METHODS:
        raise InputError(f"{w}.trim: expected one of {', '.join(TRIM_METHODS)}, got {d['trim']!r}")
    tp = d["trim_percentiles"]
    if not (isinstance(tp, list) and len(tp) == 2 and all(isinstance(x, (int, float)) for x in tp) and 0 <= tp[0] < tp[1] <= 100):
        raise InputError(f"{w}.trim_percentiles: expected [low, high] with 0 <= low < high <= 100, got {tp!r}")
    aux = d["auxiliary"]
    if not isinstance(aux, list) or any(a not in AUX_FACTORS for a in aux):
        raise InputError(f"{w}.auxiliary: expected a list drawn from {', '.join(AUX_FACTORS)}, got {aux!r}")
    rules = d["auxiliary_rules"]
    bins = rules["severity_bins"]
    if not (isinstance(bins, list) and bins and bins[0] == 0 and all(isinstance(b, int) for b in bins)
            and all(a < b for a, b in zip(bins, bins[1:]))):
        raise InputError(f"{w}.auxiliary_rules.severity_bins: expected increasing whole numbers starting at 0, got {bins!r}")
    tumour = {k: _codes(v, f"{w}.tumour.{k}") for k, v in d["tumour"].items()}
    bands = []
    for i, b in enumerate(d["age_bands"]):
        if not isinstance(b, dict) or set(b) != {"name", "min_age", "max_age"}:
            raise InputError(f"{w}.age_bands[{i}]: expected name, min_age, max_age")
        lo = _num(b, "min_age", f"{w}.age_bands[{i}]", 0)
        hi = _num(b, "max_age", f"{w}.age_bands[{i}]", 0)
        if hi <= lo:
            raise InputError(f"{w}.age_bands[{i}]: max_age must exceed min_age")
        bands.append(AgeBand(str(b["name"]), lo, hi))
    bands.sort(key=lambda b: b.min_age)
    for a, b in zip(bands, bands[1:]):
        if b.min_age < a.max_age:
            raise InputError(f"{w}.age_bands: {a.name!r} and {b.name!r} overlap")
    ptypes = d["procedure_types"]
    if not isinstance(ptypes, dict) or any(t not in PROCEDURE_TYPES for t in ptypes.values()):
        raise InputError(f"{w}.procedure_types: expected code prefix = one of {', '.join(PROCEDURE_TYPES)}")
    from drgdip.grouper.dip.keys import normalize_scalar
    return DipPolicy(
        base=_num(d, "base", w, 1e-9),
        min_cases=_num(d, "min_cases", w, 1, integer=True),
        year_weights=tuple(float(x) for x in yw),
        excluded_procedures=_codes(d["excluded_procedures"], f"{w}.excluded_procedures"),
        trim=d["trim"],
        trim_sd=_num(d, "trim_sd", w, 1e-9),
        trim_percentiles=(float(tp[0]), float(tp[1])),
        auxiliary=tuple(a for a in AUX_FACTORS if a in aux),
        aux_min_cases=_num(rules, "min_cases", f"{w}.auxiliary_rules", 2, integer=True),
        aux_min_difference=_num(rules, "min_difference", f"{w}.auxiliary_rules", 0),
        aux_z=_num(rules, "z", f"{w}.auxiliary_rules", 0),
        severity_bins=tuple(bins),
        tumour=tumour,
        age_bands=tuple(bands),
        procedure_types={normalize_scalar(k): v for k, v in sorted(ptypes.items())},
        source=source,
    )


def load_dip_policy(path=None) -> DipPolicy:
    """The DIP policy: defaults, overridden by the ``[dip]`` table of PATH (if given)."""
    if path is None:
        return policy_from_dict(None, "defaults")
    if isinstance(path, DipPolicy):
        return path
    if isinstance(path, dict):
        return policy_from_dict(path.get("dip", path), "dict")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: policy file not found")
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML: {exc}") from None
    dip = doc.get("dip", {})
    if not isinstance(dip, dict):
        raise InputError(f"{p}: [dip] must be a table")
    return policy_from_dict(dip, str(p))


# ---------------------------------------------------------------- scores

def year_weight_map(years: np.ndarray, weights: tuple[float, ...]) -> dict[int, float]:
    """History year → weight: the newest year takes the last weight, the one before the
    second-to-last, …; years older than the weight list get weight 0."""
    uniq = sorted({int(y) for y in np.unique(years)})
    out = {}
    for k, y in enumerate(reversed(uniq)):
        out[y] = float(weights[len(weights) - 1 - k]) if k < len(weights) else 0.0
    return out


def trim_mask(cost: np.ndarray, group: np.ndarray, n_groups: int, policy: DipPolicy) -> np.ndarray:
    """True for cases kept after per-group outlier trimming (groups under 3 cases untouched)."""
    keep = np.ones(len(cost), dtype=bool)
    if policy.trim == "none" or len(cost) == 0:
        return keep
    n = np.bincount(group, minlength=n_groups)
    if policy.trim == "sd":
        s = np.bincount(group, weights=cost, minlength=n_groups)
        mean = s / np.maximum(n, 1)
        dev = cost - mean[group]
        var = np.bincount(group, weights=dev * dev, minlength=n_groups) / np.maximum(n, 1)
        sd = np.sqrt(var)
        keep = np.abs(dev) <= policy.trim_sd * sd[group] * (1 + 1e-12) + 1e-9
    else:
        order = np.lexsort((cost, group))
        lo_q, hi_q = policy.trim_percentiles
        starts = np.concatenate(([0], np.cumsum(n)[:-1]))
        for g in np.nonzero(n >= 3)[0]:
            idx = order[starts[g]:starts[g] + n[g]]
            lo, hi = np.percentile(cost[idx], [lo_q, hi_q])
            keep[idx] = (cost[idx] >= lo) & (cost[idx] <= hi)
    keep[n[group] < 3] = True
    return keep


@dataclass
class ScoreResult:
    cases: np.ndarray          # per group, cases in weighted years
    cases_trimmed: np.ndarray  # per group, cases removed as outliers
    mean_cost: np.ndarray      # per group, year-weighted trimmed mean (yuan, unrounded)
    score: np.ndarray          # per group
    cv: np.ndarray             # per group
    plain_mean: np.ndarray     # per group, trimmed mean pooled over years (for the auxiliary catalogue)
    keep: np.ndarray           # per case, kept after trimming
    overall_mean: float
    riv: float
    year_weights: dict


def compute_scores(cost: np.ndarray, group: np.ndarray, year: np.ndarray, n_groups: int,
                   policy: DipPolicy) -> ScoreResult:
    """Scores for groups 0..n_groups-1 from per-case cost, group index and year."""
    cost = np.asarray(cost, dtype=np.float64)
    group = np.asarray(group, dtype=np.int64)
    weights = year_weight_map(year, policy.year_weights)
    years = sorted(weights)
    keep = trim_mask(cost, group, n_groups, policy)
    cases = np.bincount(group, minlength=n_groups)
    kept_cases = np.bincount(group[keep], minlength=n_groups)
    num = np.zeros(n_groups)
    den = np.zeros(n_groups)
    overall_num = overall_den = 0.0
    for y in years:
        w = weights[y]
        m = keep & (year == y)
        if w == 0 or not m.any():
            continue
        cnt = np.bincount(group[m], minlength=n_groups)
        tot = np.bincount(group[m], weights=cost[m], minlength=n_groups)
        has = cnt > 0
        num[has] += w * tot[has] / cnt[has]
        den[has] += w
        overall_num += w * cost[m].mean()
        overall_den += w
    mean_cost = np.divide(num, den, out=np.full(n_groups, np.nan), where=den > 0)
    overall = overall_num / overall_den if overall_den > 0 else float("nan")
    score = mean_cost / overall * policy.base
    kc, kg = cost[keep], group[keep]
    tot = np.bincount(kg, weights=kc, minlength=n_groups)
    plain = np.divide(tot, kept_cases, out=np.full(n_groups, np.nan), where=kept_cases > 0)
    dev = kc - plain[kg]
    ssw_g = np.bincount(kg, weights=dev * dev, minlength=n_groups)
    sd = np.sqrt(np.divide(ssw_g, kept_cases, out=np.zeros(n_groups), where=kept_cases > 0))
    cv = np.divide(sd, plain, out=np.full(n_groups, np.nan), where=plain > 0)
    sst = float(((kc - kc.mean()) ** 2).sum()) if len(kc) else 0.0
    riv = 1.0 - float(ssw_g.sum()) / sst if sst > 0 else float("nan")
    return ScoreResult(cases=cases, cases_trimmed=cases - kept_cases, mean_cost=mean_cost, score=score,
                       cv=cv, plain_mean=plain, keep=keep, overall_mean=overall, riv=riv,
                       year_weights=weights)


# ---------------------------------------------------------------- pricing (point method)

def price_dip_cases(grouped, catalog, policy, period: str | None = None, duplicate_ids=None,
                    reference_means=None, review=None, readmissions=None):
    """Price DIP-grouped cases with the settlement's point method (``weights.settlement.points.price_cases``).

    points = score × auxiliary coefficient × hospital coefficient, deviation cases
    included: each (group, coefficient, level) triple is priced as its own group whose weight is
    score × coefficient / base (so deviation bands read a relative weight, as for DRG)
    with ``base_points`` = the catalogue's base, and whose mean cost is the group's
    mean cost × coefficient. The辅助目录 coefficient is the grouping's ``dip_coefficient``
    (severity × tumour × age, :func:`grouper.dip.api.group_dip`), so points = the case's
    ``dip_adjusted_score`` × hospital coefficient.

    ``reference_means`` (columns group_key, level, mean_cost; :func:`weights.settlement.dip_settle.load_reference_means`):
    the prior year's mean cost of the group at hospitals of the case's level
    (``coefficients.hospital_level``; 上一年度同级别定点医疗机构次均费用) replaces the catalogue's
    mean_cost for the cost ratio where it has a row. ``duplicate_ids``: as for price_cases.
    Adds the input's columns nothing but price_cases' columns (a ``status`` column of the
    input is read as the DIP grouping's ``dip_status`` and given back unchanged).

    Special review (特例单议, ``policy.special_review``) and readmissions (再入院,
    ``policy.readmission``) are the DRG rules on DIP group codes (docs/settlement.md "DIP
    settlement" 6-7): ``review`` (a
    :class:`weights.settlement.special_review.ReviewContext`: the quota's verdict and the
    decisions of the whole file; its ``group_counts``, when given, are per catalogue row, the
    period's priceable cases of each DIP group, see :func:`dip_group_counts`; None: all from
    ``grouped`` alone); a catalogue column ``review_group`` marks 单议病组. ``readmissions``: the
    file's :meth:`weights.settlement.readmission.Readmissions.batch` of these rows, paired on
    ``dip_group`` (key ``group``) or the principal diagnosis (None: paired within ``grouped``);
    key ``adrg`` is refused (PolicyError): DIP has no ADRG."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from drgdip.arrowio import canonical_columns, text
    from drgdip.grouper.dip.api import catalog_meta, prepare_catalog
    from drgdip.weights.settlement import special_review as review_mod
    from drgdip.weights.settlement.points import price_cases
    from drgdip.weights.settlement.readmission import detect_table

    check_dip_readmission(policy)
    cat = prepare_catalog(catalog)
    base = float(catalog_meta(cat.table).get("base", 100.0))
    if "dip_group" not in grouped.column_names:
        raise InputError("records have no dip_group column: group them with the DIP catalogue first")
    n = grouped.num_rows
    coef = pc.fill_null(grouped["dip_coefficient"], 1.0) if "dip_coefficient" in grouped.column_names \
        else pa.array(np.ones(n))
    coef_txt = pc.cast(pc.round(coef, 4), pa.string())
    cols = canonical_columns(grouped.schema)
    if reference_means is not None and "hospital_id" in cols:
        hosp = pc.fill_null(text(grouped[cols["hospital_id"]], n), "")
        enc = pc.dictionary_encode(hosp)
        lv = pa.array([policy.hospital_level.get(h, "") for h in enc.dictionary.to_pylist()] or [""], pa.string())
        level = lv.take(pc.fill_null(enc.indices, 0))
    else:
        level = pa.array([""] * n, pa.string())
    key = pc.binary_join_element_wise(grouped["dip_group"], coef_txt, level, "@")
    t = cat.table
    uniq = pc.unique(key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key).drop_null()
    parts = pc.split_pattern(uniq, "@", max_splits=2)
    g = pc.list_element(parts, 0)
    c = pc.cast(pc.list_element(parts, 1), pa.float64()).to_numpy(zero_copy_only=False)
    at = pc.index_in(g, value_set=t["group_key"]).to_numpy(zero_copy_only=False)
    found = ~np.isnan(at.astype(np.float64))
    idx = np.where(found, at, 0).astype(np.int64)
    score = t["score"].to_numpy()[idx] if t.num_rows else np.zeros(len(idx))
    mean = (t["mean_cost"].to_numpy(zero_copy_only=False)[idx] if "mean_cost" in t.column_names
            else np.full(len(idx), np.nan))
    if reference_means is not None and len(uniq):
        ref_key = pc.binary_join_element_wise(reference_means["group_key"], reference_means["level"], "@")
        mine = pc.binary_join_element_wise(g, pc.list_element(parts, 2), "@")
        rat = pc.index_in(mine, value_set=ref_key).to_numpy(zero_copy_only=False)
        has = ~np.isnan(rat.astype(np.float64))
        ref_mean = reference_means["mean_cost"].to_numpy(zero_copy_only=False)
        mean = np.where(has, ref_mean[np.where(has, rat, 0).astype(np.int64)] if len(ref_mean) else np.nan, mean)
    weights = pa.table({"_dip_key": uniq,
                        "weight": pa.array(np.where(found, score * c / base, np.nan)),
                        "mean_cost": pa.array(np.where(found, mean * c, np.nan))})
    if "review_group" in t.column_names and t.num_rows:        # 单议病组 of the catalogue
        flag = t["review_group"].take(pa.array(idx))
        weights = weights.append_column("review_group", pc.if_else(pa.array(found), flag,
                                                                   pa.scalar(None, flag.type)))
    cases = _dip_status(grouped).append_column("_dip_key", key)
    sr = policy.special_review
    if review_mod.needs_group_counts(sr):     # small_group: counted per DIP group code, not per key
        counts = review.group_counts if review is not None else None
        if counts is None:
            counts = np.zeros(t.num_rows, np.int64)
            dip_group_counts(cases, cat, policy, counts, period=period, duplicate_ids=duplicate_ids)
        per_key = np.where(found, np.asarray(counts)[idx] if len(counts) else 0, 0).astype(np.int64)
        review = dataclasses.replace(review or review_mod.ReviewContext(), group_counts=per_key)
    if policy.readmission.days > 0 and readmissions is None:
        readmissions = detect_table(cases, policy, "dip_group", duplicate_ids)
    priced = price_cases(cases, weights, policy, group_column="_dip_key", weight_column="weight",
                         base_points=base, period=period, duplicate_ids=duplicate_ids,
                         method="dip", review=review, readmissions=readmissions)
    if "status" in grouped.column_names:
        priced = priced.set_column(priced.schema.get_field_index("status"), "status", grouped["status"])
    return priced.drop_columns(["_dip_key"])


def check_dip_readmission(policy) -> None:
    """Refuse ``[readmission] key = "adrg"`` for DIP (PolicyError): ADRG is a DRG concept; a DIP
    readmission is paired on the DIP group code (``group``) or the principal diagnosis."""
    from drgdip.weights.settlement.policy import PolicyError
    rp = getattr(policy, "readmission", None)
    if rp is not None and rp.days > 0 and rp.key == "adrg":
        raise PolicyError(f"{getattr(policy, 'path', None) or 'policy'}: readmission.key = \"adrg\" has no meaning "
                          "for DIP (no ADRG): use key = \"group\" (the DIP group code) or \"principal_diagnosis\"")


def _dip_status(grouped):
    """The DIP-grouped records with their ``status`` read as the DIP grouping's ``dip_status``."""
    if "status" in grouped.column_names and "dip_status" in grouped.column_names:
        return grouped.set_column(grouped.schema.get_field_index("status"), "status", grouped["dip_status"])
    return grouped


def dip_group_counts(grouped, catalog, policy, counts: np.ndarray, period: str | None = None,
                     duplicate_ids=None) -> None:
    """Add the priceable cases of each DIP group (a catalogue row: ``counts`` has the catalogue's
    length) among the DIP-grouped records ``grouped`` to ``counts``: the period's group sizes
    that special review's ``small_group`` trigger reads (``min_group_cases``), over DIP group
    codes (whatever the case's 辅助目录 coefficient or hospital level). Batch after batch they
    add up to the whole file's."""
    import pyarrow as pa

    from drgdip.grouper.dip.api import prepare_catalog
    from drgdip.weights.settlement.points import add_group_costs
    t = prepare_catalog(catalog).table
    table = pa.table({"dip_group": t["group_key"], "weight": t["score"]})
    pol = dataclasses.replace(policy, deviation=dataclasses.replace(policy.deviation, group_mean="period"))
    sums = np.zeros(t.num_rows, np.float64)
    add_group_costs(_dip_status(grouped), table, pol, sums, counts, group_column="dip_group",
                    period=period, duplicate_ids=duplicate_ids)
