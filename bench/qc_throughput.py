"""QC throughput: ``python -m drgdip.bench.qc_throughput --records N`` prints records/s.

Builds N synthetic settlement-list records by sampling the conformance cases (or, without
../shared/data, a small built-in mix) and adds hospital, doctor, dates and fees so that
every rule kind runs; times :func:`codesets.qc.run_qc` over 65,536-record batches.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from drgdip.codesets.qc import load_code_tables, run_qc

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def synthetic(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    cases = SHARED / "conformance" / "chs-drg-1.1-cases.csv"
    if cases.exists():
        from drgdip.arrowio import read_table
        base = read_table(cases).select(["sex", "age", "age_days", "birth_weight_g", "los_days",
                                         "diagnoses", "procedures"])
    else:
        base = pa.table({"sex": ["1", "2"], "age": ["40", "0"], "age_days": [None, "3"],
                         "birth_weight_g": [None, None], "los_days": ["5", "0"],
                         "diagnoses": ["K80.100|O80.000", "P07.300|P07.300"], "procedures": ["51.2300", None]})
    t = base.take(pa.array(rng.integers(0, base.num_rows, n)))
    fee_a = np.round(rng.uniform(0, 5000, n), 2)
    fee_b = np.round(rng.uniform(0, 5000, n), 2)
    total = np.round(fee_a + fee_b + np.where(rng.random(n) < 0.01, 1.0, 0.0), 2)
    hospitals = np.array(["H11010500001", "H44030500123", "H1101050001"])
    return t.append_column("id", pa.array([str(i) for i in range(n)])) \
            .append_column("hospital_id", pa.array(hospitals[rng.integers(0, 3, n)])) \
            .append_column("doctor_id", pa.array(["D110105000123"] * n)) \
            .append_column("admission_date", pa.array(["2024-01-01"] * n)) \
            .append_column("discharge_date", pa.array(["2024-01-09"] * n)) \
            .append_column("fee_surgery", pa.array(fee_a)).append_column("fee_bed", pa.array(fee_b)) \
            .append_column("total_cost", pa.array(total))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1 << 16)
    args = ap.parse_args(argv)
    tables = load_code_tables(SHARED / "codesets") if (SHARED / "codesets").exists() else {}
    t = synthetic(args.records)
    start = time.perf_counter()
    findings = 0
    for b in t.to_batches(max_chunksize=args.batch):
        findings += run_qc(b, code_tables=tables).num_rows
    dt = time.perf_counter() - start
    print(f"{args.records} records, {findings} findings, {dt:.2f} s, {args.records / dt:,.0f} records/s "
          f"({'with' if tables else 'without'} code tables)")


if __name__ == "__main__":
    main()
