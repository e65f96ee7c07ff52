"""DIP auxiliary catalogue: coefficients learned where history supports them, off otherwise."""
import numpy as np
import pyarrow as pa
import pytest
from dip_example import POLICY, history

from drgdip.grouper.dip.api import catalog_meta, group_dip
from drgdip.grouper.dip.auxiliary import cci_index
from drgdip.weights.dip_catalog import build_catalog


def _synthetic():
    """One group; elderly cost x1.5, CHF (CCI 1) x1.3, metastatic tumour x2; deterministic noise."""
    rng = np.random.default_rng(11)
    rows = []
    def add(n, diag, age, mult):
        for _ in range(n):
            rows.append((diag, age, 10000 * mult * rng.uniform(0.9, 1.1)))
    add(200, "K80.100", 40, 1.0)
    add(60, "K80.100", 75, 1.5)               # elderly
    add(60, "K80.100|I50.000", 40, 1.3)       # CCI 1 (heart failure)
    add(5, "K80.100|I50.000|N18.500", 40, 1.8)  # CCI 3: too few cases, merged below
    add(60, "K80.100", 3, 1.02)               # children: no real difference
    add(80, "C16.900", 50, 1.0)               # tumour baseline
    add(40, "C16.900|C78.700", 50, 2.0)       # metastasis
    t = pa.table({"year": [2025] * len(rows), "diagnoses": [r[0] for r in rows],
                  "procedures": [""] * len(rows), "age": [float(r[1]) for r in rows],
                  "total_cost": [round(r[2], 2) for r in rows]})
    return t


@pytest.fixture(scope="module")
def built():
    t = _synthetic()
    return t, build_catalog(t, {"min_cases": 10, "trim": "none"})


def _aux(cat):
    return {(r["factor"], r["key"]): r for r in catalog_meta(cat)["auxiliary"]["rows"]}


def test_learned_coefficients(built):
    t, cat = built
    aux = _aux(cat)
    cost = np.array(t["total_cost"].to_pylist())
    age = np.array(t["age"].to_pylist())
    diag = t["diagnoses"].to_pylist()
    k80 = np.array([d.startswith("K80") for d in diag])
    eld = aux[("age", "elderly")]
    assert eld["applied"] and eld["cases"] == 60
    # one group per diagnosis here, so the coefficient is the ratio of mean costs inside K80.1 ...
    k_mean = cost[k80].mean()
    other = (age >= 6) & (age < 70)
    expect = (cost[k80 & (age >= 70)] / k_mean).mean() / \
        np.concatenate([cost[k80 & other] / k_mean, cost[~k80 & other] / cost[~k80].mean()]).mean()
    assert eld["coefficient"] == round(expect, 4) and 1.3 < eld["coefficient"] < 1.6
    child = aux[("age", "child")]
    assert not child["applied"] and child["coefficient"] == 1.0 and "less than 10%" in child["note"]
    sev1 = aux[("severity", "level1:bin1")]
    assert sev1["applied"] and sev1["label"] == "CCI 1-2" and sev1["cases"] == 60 and 1.2 < sev1["coefficient"] < 1.4
    sev3 = aux[("severity", "level1:bin2")]       # 5 cases: merged into level 1, same coefficient
    assert sev3["cases"] == 5 and sev3["coefficient"] == sev1["coefficient"] and sev3["rests_on_cases"] == 65
    assert "merged" in sev3["note"]
    met = aux[("tumour", "metastasis")]
    assert met["applied"] and 1.8 < met["coefficient"] < 2.2 and met["cases"] == 40
    assert not aux[("tumour", "chemotherapy")]["applied"] and aux[("tumour", "chemotherapy")]["cases"] == 0


def test_applied_on_and_off(built):
    _, cat = built
    new = pa.table({"diagnoses": ["K80.100", "K80.100|I50.000", "C16.900|C78.700", "K80.100"],
                    "procedures": ["", "", "", ""], "age": [80.0, 40.0, 50.0, 3.0]})
    aux = _aux(cat)
    on = group_dip(new, cat).to_pylist()
    assert on[0]["dip_coef_age"] == aux[("age", "elderly")]["coefficient"]
    assert on[1]["dip_coef_severity"] == aux[("severity", "level1:bin1")]["coefficient"] and on[1]["dip_cci"] == 1
    assert on[2]["dip_coef_tumour"] == aux[("tumour", "metastasis")]["coefficient"]
    assert on[3]["dip_coefficient"] == 1.0
    assert on[0]["dip_adjusted_score"] == round(on[0]["dip_score"] * on[0]["dip_coefficient"], 4)
    off = group_dip(new, cat, auxiliary=False).to_pylist()
    assert [r["dip_coefficient"] for r in off] == [1.0] * 4
    assert [r["dip_group"] for r in off] == [r["dip_group"] for r in on]
    # a policy that turns the factors off learns nothing
    cat2 = build_catalog(_synthetic(), {"min_cases": 10, "auxiliary": []})
    assert catalog_meta(cat2)["auxiliary"]["rows"] == []


def test_small_history_supports_nothing():
    rows = catalog_meta(build_catalog(history(), POLICY))["auxiliary"]["rows"]
    assert rows and not any(r["applied"] for r in rows)
    assert all(r["coefficient"] == 1.0 for r in rows)


def test_cci_index_by_family():
    d = pa.array([["K80.100", "I50.000", "I21.000"],          # CHF 1 + MI 1
                  ["K80.100", "K70.300", "K72.100"],          # liver: severe 3 wins over mild 1
                  ["I50.000", "I21.000"],                     # the principal never counts
                  ["C16.900", "C78.700", "C16.900"],          # malignancy 2 vs metastasis 6 → 6
                  None])
    assert cci_index(d).tolist() == [2, 3, 1, 6, 0]


def test_points_carry_the_auxiliary_coefficient(built):
    from drgdip.weights.dip_scores import price_dip_cases
    from drgdip.weights.settlement.policy import parse_policy
    _, cat = built
    new = pa.table({"diagnoses": ["K80.100", "K80.100"], "procedures": ["", ""], "age": [80.0, 40.0],
                    "hospital_id": ["H1", "H1"], "fund": ["职工", "职工"], "discharge_date": ["2026-10-01"] * 2,
                    "personal_share": [0.0, 0.0], "total_cost": [15000.0, 10000.0]})
    g = group_dip(new, cat)
    pol = parse_policy({"budget": {"employee": {"2026-10": 1000.0}}, "coefficients": {"level": {"3A": 1.0},
                        "hospital_level": {"H1": "3A"}}})
    p = price_dip_cases(g, cat, pol).to_pylist()
    coef = _aux(cat)[("age", "elderly")]["coefficient"]
    assert p[0]["case_type"] == "normal" and p[0]["points"] == pytest.approx(g["dip_score"][0].as_py() * coef)
    assert p[1]["points"] == pytest.approx(g["dip_score"][1].as_py())
