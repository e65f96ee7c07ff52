"""The synthetic region (drgdip synth): deterministic, internally consistent, realistic enough
that the grouper groups almost all of it and says why it does not group the rest."""
from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from drgdip.codesets.record import FEE_COLUMNS, FIELDS
from drgdip.grouper.drg.api import group_table, load_scheme
from drgdip.synth.region import (
    load_params,
    make_hospitals,
    month_counts,
    synthesize_region,
)


@pytest.fixture(scope="module")
def scheme():
    return load_scheme(None)


@pytest.fixture(scope="module")
def region(scheme):
    return synthesize_region(scheme, seed=5, years=[2023, 2024], months=12, hospitals=9, records_per_month=400)


@pytest.fixture(scope="module")
def grouped(region, scheme):
    return group_table(region, scheme)


def _bytes(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def test_same_seed_same_bytes_other_seed_other_records(scheme, region):
    again = synthesize_region(scheme, seed=5, years=[2023, 2024], months=12, hospitals=9, records_per_month=400)
    assert _bytes(again) == _bytes(region)
    other = synthesize_region(scheme, seed=6, years=[2023, 2024], months=12, hospitals=9, records_per_month=400)
    assert other.column("total_cost") != region.column("total_cost")


def test_a_month_does_not_depend_on_the_other_months_asked_for(scheme, region):
    march = synthesize_region(scheme, seed=5, years=[2024], months=[3], hospitals=9, records_per_month=400)
    from_all = region.filter(pc.starts_with(region["discharge_date"], "2024-03"))
    assert march.equals(from_all)


def test_columns_are_the_canonical_record(region):
    assert region.schema.names == [f.name for f in FIELDS]
    assert [region.schema.field(f.name).type for f in FIELDS] == [f.type for f in FIELDS]
    counts = month_counts(400, list(range(1, 13)), load_params())
    assert region.num_rows == 2 * sum(counts)
    assert counts[0] > 400 > counts[6]           # winter peak, summer trough
    assert pc.count_distinct(region["id"]).as_py() == region.num_rows


def test_money_reconciles_to_the_cent(region):
    total = np.round(region["total_cost"].to_numpy() * 100).astype(np.int64)
    fees = sum(np.round(region[c].to_numpy() * 100).astype(np.int64) for c in FEE_COLUMNS)
    assert (fees == total).all()
    personal = np.round(region["personal_share"].to_numpy() * 100).astype(np.int64)
    fund = np.round(region["fund_paid"].to_numpy() * 100).astype(np.int64)
    assert (personal + fund == total).all() and (personal >= 0).all() and (fund >= 0).all()
    assert all((region[c].to_numpy() >= 0).all() for c in FEE_COLUMNS)


def test_dates_stay_and_ages_agree(region):
    adm = region["admission_date"].to_numpy(zero_copy_only=False).astype("datetime64[D]")
    dis = region["discharge_date"].to_numpy(zero_copy_only=False).astype("datetime64[D]")
    los = region["los_days"].to_numpy()
    assert ((dis - adm).astype(int) == los).all() and (los >= 1).all()
    age = region["age"].to_numpy(zero_copy_only=False)
    born = region["birth_date"].to_numpy(zero_copy_only=False).astype("datetime64[D]")
    years = (adm - born).astype(int) / 365.25
    ok = ~np.isnan(age)
    assert (np.abs(years[ok] - age[ok]) <= 1.01).all()


def test_hospitals_have_three_levels_and_national_ids():
    h = make_hospitals(9, 5, load_params())
    assert sorted(set(h["level"].to_pylist())) == ["1", "2", "3"]
    assert all(re.fullmatch(r"H\d{11}", x) for x in h["hospital_id"].to_pylist())
    lv = np.array(h["level"].to_pylist())
    vol = h["volume"].to_numpy()
    assert vol[lv == "3"].mean() > vol[lv == "1"].mean()
    assert h.equals(make_hospitals(9, 5, load_params()))


def test_almost_everything_groups_and_bad_records_carry_reasons(grouped):
    status = grouped["status"].to_numpy(zero_copy_only=False)
    reason = grouped["reason"].to_numpy(zero_copy_only=False)
    assert 0.97 < (status == "grouped").mean() < 0.999
    for r in ("MISSING_DIAGNOSIS", "INVALID_SEX", "MISSING_AGE"):
        assert (reason == r).sum() > 0, r
    assert pc.count_distinct(grouped["drg"]).as_py() > 120      # most of the scheme's 161 DRGs occur
    assert set(grouped["fund"].to_pylist()) == {"employee", "resident"}


def test_a_small_share_of_surgeries_unrelated_to_the_mdc_are_ambiguous(grouped, scheme):
    """synth.toml unrelated_surgery_share: a medical case with an operating-room procedure of another MDC's
    surgical ADRG; the teaching scheme's grouper puts it in its MDC's ambiguous group (歧义组 xQY)."""
    status = np.array(grouped["status"].to_pylist(), dtype=object)
    drg = np.array(pc.fill_null(grouped["drg"], "").to_pylist(), dtype=object)
    amb = status == "ambiguous"
    assert 0.003 < amb.mean() < 0.01
    assert all(d.endswith("QY") and d[0] == m[3] for d, m in zip(drg[amb], np.array(grouped["mdc"].to_pylist())[amb]))
    assert len(set(drg[amb])) >= 4                               # several MDCs
    procs = grouped["procedures"].to_pylist()
    is_or = dict(zip(scheme.proc_codes, np.asarray(scheme.proc_is_or).tolist()))
    assert all(procs[i] and is_or[procs[i][0]] == 1 for i in np.flatnonzero(amb))   # an OR principal procedure
    # dearer than the medical cases of their MDC (× unrelated_surgery_cost)
    cost = grouped["total_cost"].to_numpy(zero_copy_only=False)
    mdc = np.array(grouped["mdc"].to_pylist(), dtype=object)
    adrg = np.array(pc.fill_null(grouped["adrg"], "").to_pylist(), dtype=object)
    medical = (status == "grouped") & np.isin(np.array([a[1:2] for a in adrg]), list("RSTUVWXYZ"))
    for m in set(mdc[amb]) - {"MDCO"}:
        if (amb & (mdc == m)).sum() >= 5:
            assert np.median(cost[amb & (mdc == m)]) > np.median(cost[medical & (mdc == m)]), m


def test_newborns_and_birth_weight_bands(grouped):
    adrg = grouped["adrg"].to_numpy(zero_copy_only=False)
    bw = grouped["birth_weight_g"].to_numpy(zero_copy_only=False)
    days = grouped["age_days"].to_numpy(zero_copy_only=False)
    age = grouped["age"].to_numpy(zero_copy_only=False)
    ps1 = adrg == "PS1"
    assert ps1.sum() > 0 and (bw[ps1] < 1500).all()
    ps4 = adrg == "PS4"
    assert ps4.sum() > 0 and (bw[ps4] > 2499).all()
    pv1 = adrg == "PV1"
    assert pv1.sum() > 0 and (days[pv1] >= 29).all()
    newborn = np.char.startswith(adrg.astype(str), "P")
    assert (age[newborn] == 0).all()
    assert 0.01 < newborn.mean() < 0.12


def test_costs_follow_resource_use_and_hospital_level(grouped):
    t = grouped.filter(pc.equal(grouped["status"], "grouped"))
    cost = t["total_cost"].to_numpy()
    adrg = t["adrg"].to_numpy(zero_copy_only=False).astype(str)
    kind = np.char.slice(adrg, 1, 2) if hasattr(np.char, "slice") else np.array([a[1] for a in adrg])
    surgical = np.isin(kind, list("ABCDEFGHIJ"))
    assert np.median(cost[surgical]) > 1.5 * np.median(cost[~surgical])
    drg = t["drg"].to_numpy(zero_copy_only=False).astype(str)
    sev1 = np.char.endswith(drg, "1")
    sev5 = np.char.endswith(drg, "5")
    assert np.median(cost[sev1]) > np.median(cost[sev5])
    # deviation cases: costs far above their group's mean exist, but are few
    codes, inv = np.unique(drg, return_inverse=True)
    mean = np.bincount(inv, cost) / np.bincount(inv)
    ratio = cost / mean[inv]
    assert 0.005 < (ratio > 3).mean() < 0.05 and 0.005 < (ratio < 0.3).mean() < 0.08
    # employee and resident personal shares differ as documented
    fund = t["fund"].to_numpy(zero_copy_only=False)
    share = t["personal_share"].to_numpy() / cost
    assert share[fund == "employee"].max() <= 0.3001 and share[fund == "resident"].min() >= 0.2999


def test_any_scheme_official_tables_too(shared_data):
    folder = shared_data / "chs-drg" / "CHS_DRG_11"
    if not folder.is_dir():
        pytest.skip(f"shared data missing: {folder}")
    s = load_scheme(folder)
    t = synthesize_region(s, seed=1, years=[2024], months=1, hospitals=6, records_per_month=3000)
    g = group_table(t, s)
    assert (g["status"].to_numpy(zero_copy_only=False) == "grouped").mean() > 0.9
    assert pc.count_distinct(g["drg"]).as_py() > 300
