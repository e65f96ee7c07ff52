"""The benchmark harness runs end to end on a tiny input; synthetic records are seeded and well formed.

No timing is asserted: only that every path ran, produced positive rates and agreed."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc

from drgdip.bench import throughput
from drgdip.bench.synthetic import INVALID_CODE, synthetic_records
from drgdip.grouper.drg.api import load_scheme


def test_synthetic_records_are_deterministic_and_shaped():
    scheme = load_scheme(None)
    a = synthetic_records(scheme, 3000, seed=7)
    assert a.equals(synthetic_records(scheme, 3000, seed=7))
    assert not a.equals(synthetic_records(scheme, 3000, seed=8))
    assert a.column_names == ["id", "sex", "age", "age_days", "birth_weight_g", "los_days",
                              "discharge_disposition", "diagnoses", "procedures"]
    diags = pc.split_pattern(a["diagnoses"], "|")
    n_diag = pc.list_value_length(diags).to_numpy()
    assert n_diag.min() >= 1 and n_diag.max() <= 16
    n_proc = pc.list_value_length(pc.split_pattern(a["procedures"], "|")).fill_null(0).to_numpy()
    assert n_proc.max() <= 6
    newborn = a["age_days"].is_valid().to_numpy(zero_copy_only=False)
    assert 0.02 < newborn.mean() < 0.08
    assert (a["age"].to_numpy()[newborn] == 0).all()
    assert a["birth_weight_g"].is_valid().to_numpy(zero_copy_only=False)[newborn].all()
    principal = pc.list_element(diags, 0).to_numpy(zero_copy_only=False)
    assert 0.002 < np.mean(principal == INVALID_CODE) < 0.03
    known = set(scheme.diag_codes)
    assert all(c in known for c in principal if c != INVALID_CODE)


def test_throughput_main_tiny(capsys):
    r = throughput.main(["--records", "2000", "--sample", "200", "--repeat", "1", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(r))
    for key in ("python_rps", "kernel_rps", "encoder_rps", "e2e_rps", "e2e_peak_rss_mb", "kernel_over_python"):
        assert r[key] > 0, key
    assert r["records"] == r["e2e_records"] == 2000 and r["sample"] == 200
    assert r["cpu_count"] >= 1
    assert r["python_matches_kernel"] is True
    modes = {m["mode"]: m for m in r["modes"]}
    assert len(modes) == 5 and all(m["rps"] > 0 and m["peak_rss_mb"] > 0 and m["cpu_seconds"] > 0
                                   for m in modes.values())
    folder = modes["default, -o folder/ (part files)"]
    assert folder["command"].split(" -o ")[1].startswith("out/") and "io_floor_rps" not in folder
    assert modes["--keep all, -o folder/ (part files)"]["output_mb"] > folder["output_mb"]
    assert "--keep all" in modes["--keep all"]["command"]
    assert modes["--keep all"]["output_mb"] > modes["default (key + results)"]["output_mb"]
    assert modes["default (key + results)"]["io_floor_rps"] > 0
