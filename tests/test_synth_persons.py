"""The demo's persons file and the benefit columns beside the record (synth.region.make_persons,
stay_facts): seeded, one person per patient, classes for residents only, enrolment facts
consistent with each other, and the records themselves untouched."""
from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from drgdip.synth.region import (
    load_params,
    make_hospitals,
    make_persons,
    stay_facts,
    synthesize_region,
)
from drgdip.weights.settlement.benefits import compute_benefits


@pytest.fixture(scope="module")
def region():
    return synthesize_region(None, seed=3, years=(2025,), months=12, hospitals=5, records_per_month=400)


def test_persons_one_per_patient_and_seeded(region):
    p = make_persons(region, 2025, 3)
    ids = p["patient_id"].to_pylist()
    assert ids == sorted(set(region["patient_id"].to_pylist()))
    assert p.equals(make_persons(region, 2025, 3))
    assert not p.equals(make_persons(region, 2025, 4))
    first_fund = {}
    for pid, f, d, i in sorted(zip(*(region[c].to_pylist() for c in ("patient_id", "fund", "discharge_date", "id"))),
                               key=lambda x: (x[0], x[2], x[3])):
        first_fund.setdefault(pid, f)
    assert p["fund"].to_pylist() == [first_fund[x] for x in ids]
    assert set(p["year"].to_pylist()) == {2025}


def test_classes_and_enrolment_facts(region):
    prm = load_params()["persons"]
    p = make_persons(region, 2025, 3).to_pylist()
    residents = [r for r in p if r["fund"] == "resident"]
    assert all(r["assistance_class"] is None for r in p if r["fund"] != "resident")
    share = sum(r["assistance_class"] is not None for r in residents) / len(residents)
    want = sum(prm["assistance_shares"].values())
    assert abs(share - want) < 4 * np.sqrt(want * (1 - want) / len(residents))
    assert {r["assistance_class"] for r in residents} - {None} == set(prm["assistance_shares"])
    for r in p:
        if r["reenrolled"]:
            assert r["break_years"] >= 1 and r["continuous_years"] == 1 and not r["collective_period"]
            assert 0 <= r["repaid_years"] <= r["break_years"]
            assert r["enrolment_date"].startswith("2025-")
        else:
            assert r["break_years"] == 0 and r["repaid_years"] == 0
        if r["collective_period"]:
            assert r["enrolment_date"] == f"{2025 - r['continuous_years'] + 1}-01-01"
    assert any(r["reenrolled"] for r in p) and any(not r["collective_period"] and not r["reenrolled"] for r in p)


def test_stay_facts_keep_the_records_and_feed_benefits(region):
    hosp = make_hospitals(5, 3)
    t = stay_facts(region, hosp, 3)
    assert t.select(region.column_names).equals(region)
    level = dict(zip(hosp["hospital_id"].to_pylist(), hosp["level"].to_pylist()))
    assert t["hospital_level"].to_pylist() == [level[h] for h in region["hospital_id"].to_pylist()]
    share = pc.divide(t["in_policy_cost"], t["total_cost"]).to_numpy()
    lo, hi = load_params()["stays"]["in_policy_share"]
    assert share.min() >= lo - 1e-3 and share.max() <= hi + 1e-3
    ref = t["referred"].to_numpy(zero_copy_only=False).mean()
    assert abs(ref - load_params()["stays"]["referred_share"]) < 0.03
    cents = np.round(t["in_policy_cost"].to_numpy() * 100)
    assert np.allclose(cents / 100, t["in_policy_cost"].to_numpy())
    # 2025: the waiting period of seed 003 applies to residents enrolled outside the collective period
    b = compute_benefits(t, make_persons(region, 2025, 3))
    st = b.stays
    assert set(st["status"].to_pylist()) >= {"paid", "waiting"}
    ok = st.filter(pc.not_equal(st["status"], "invalid"))
    assert (pc.sum(ok["in_policy_cents"]).as_py() < pc.sum(ok["total_cost_cents"]).as_py())
    assert "BEN_PERSON_NOT_LISTED" not in st["reasons"].to_pylist()
