"""DIP matching throughput: the plain-Python reference path vs the numba kernel.

    python -m drgdip.bench.dip_throughput --records 200000

Builds a synthetic catalogue (one history of clinically shaped K80/K81/K35/J18 cases),
then matches N synthetic new cases with both paths on the same encoded input, checks
they agree, and prints records/s for each, the ratio, and the catalogue's core count.
Key building and Arrow encoding are timed separately (they are shared by both paths).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from drgdip.grouper.dip.api import _cases, _encode, prepare_catalog
from drgdip.grouper.dip.match import match_reference, run_kernel
from drgdip.weights.dip_catalog import build_catalog

DIAGS = ["K80.100", "K80.000", "K80.200", "K81.000", "K35.800", "J18.900", "I10.x00", "N20.000"]
PROCS = ["51.2300", "51.2200", "51.1000", "54.5100", "47.0100", "47.0900", "99.2100", "88.7600",
         "45.1300", "96.0400", "87.4400", "56.0x00", "98.5100", "59.8x00", "93.9600", "99.0400"]


def synthetic(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 4, n)
    procs = ["|".join(rng.choice(PROCS, m, replace=False)) for m in k]
    return pa.table({"year": rng.choice([2023, 2024, 2025], n).tolist(),
                     "diagnoses": rng.choice(DIAGS, n).tolist(), "procedures": procs,
                     "total_cost": rng.lognormal(9, 0.5, n).round(2).tolist()})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--history", type=int, default=20_000)
    args = ap.parse_args(argv)
    cat = prepare_catalog(build_catalog(synthetic(args.history, 1), {"min_cases": 15, "auxiliary": []}))
    cores = int(sum(k == "core" for k in cat.table["kind"].to_pylist()))
    cases = synthetic(args.records, 2)
    t0 = time.perf_counter()
    c = _cases(cases, cat.meta["excluded_procedures"], cat.meta["procedure_types"])
    d, ci, unknown, ptr, ids = _encode(c, cat.compiled)
    t_keys = time.perf_counter() - t0
    run_kernel(cat.compiled, d[:10], ci[:10], c.ctype[:10], unknown[:10], ptr[:11], ids)  # compile / load cache
    t0 = time.perf_counter()
    kind, row = run_kernel(cat.compiled, d, ci, c.ctype, unknown, ptr, ids)
    t_kernel = time.perf_counter() - t0
    subs, cats, types, sets = c.subcat.to_pylist(), c.cat.to_pylist(), c.ctype.tolist(), c.counted.to_pylist()
    t0 = time.perf_counter()
    rk, rr = match_reference(cat.compiled, subs, cats, types, sets)
    t_ref = time.perf_counter() - t0
    agree = kind.tolist() == rk and row.tolist() == rr
    from drgdip.grouper.dip.api import group_dip
    t0 = time.perf_counter()
    group_dip(cases, cat)
    t_full = time.perf_counter() - t0
    n = args.records
    print(f"catalogue: {cores} core groups, {cat.table.num_rows - cores} comprehensive")
    print(f"keys + encoding (shared): {n / t_keys:,.0f} records/s")
    print(f"reference (Python):       {n / t_ref:,.0f} records/s")
    print(f"numba kernel:             {n / t_kernel:,.0f} records/s")
    print(f"group_dip end to end:     {n / t_full:,.0f} records/s (keys, kernel, output columns; no auxiliary factors)")
    print(f"ratio kernel / reference: {t_ref / t_kernel:,.1f}x   results identical: {agree}")
    if not agree:
        raise SystemExit("kernel and reference disagree")


if __name__ == "__main__":
    main()
