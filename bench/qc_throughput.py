"""QC throughput: ``python -m drgdip.bench.qc_throughput --records N [--e2e-records M] [--work DIR]``.

(a) in process: builds N synthetic settlement-list records by sampling the conformance cases
    (or, without ../shared/data, a small built-in mix) and adds hospital, doctor, dates and
    fees so that every rule kind runs; times :func:`codesets.qc.run_qc` over 65,536-record
    batches.
(b) end to end (``--e2e-records M``, 0 to skip): ``drgdip check`` as a separate process on M
    records of the synthetic region (the same file as ``bench.dip_throughput``: ``drgdip
    synth``, 2024-01, row groups of 131,072), with the shared code tables, then also with
    ``--scheme`` (the teaching scheme: grouping results for the rules only it decides): wall
    time and the child's peak RSS, against the I/O floor, pyarrow alone reading the columns
    the command reads (:func:`codesets.qc.read_columns`) and writing the findings file it
    wrote (loaded first, written in as many batches as the input has).
"""
from __future__ import annotations

import argparse
import os
import tempfile
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


ROOT = Path(__file__).resolve().parents[1]


def io_floor(src: Path, findings: Path, dst: Path, read) -> tuple[float, float]:
    """Seconds for pyarrow alone to read the columns READ of SRC batch by batch and write the
    findings file FINDINGS (loaded before the clock starts), a slice of it after each batch."""
    import pyarrow.parquet as pq

    from drgdip.arrowio import DEFAULT_BATCH_SIZE, AtomicWriter, open_batches
    f = pq.read_table(findings).combine_chunks()
    batches = -(-pq.ParquetFile(src).metadata.num_rows // DEFAULT_BATCH_SIZE)
    step = -(-f.num_rows // max(batches, 1))
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    with AtomicWriter(dst, f.schema) as w:
        for _ in open_batches(src, DEFAULT_BATCH_SIZE, columns=read):
            w.write(f.slice(done, step))
            done += step
    return time.perf_counter() - t0, time.process_time() - c0


def end_to_end(n: int, work: Path, synth_max: int = 1_000_000) -> list[dict]:
    """``drgdip check`` on N synthetic region records, per mode: records/s, peak RSS, I/O floor."""
    import pyarrow.parquet as pq

    from drgdip.arrowio import file_columns
    from drgdip.bench.dip_throughput import TEACHING, region_input, run_timed
    from drgdip.codesets.qc import load_rules, read_columns
    src = region_input(n, work, synth_max)
    scheme = work / "teaching.drgscheme"          # compiled once: compiling the tables is not what is measured
    if not scheme.exists():
        from drgdip.grouper.drg.api import load_scheme
        load_scheme(TEACHING).save(scheme)
    codes = SHARED / "codesets"
    base = ["--code-tables", str(codes)] if codes.exists() else []
    rows = []
    for label, extra, grouping in (("code tables" if base else "no code tables", base, False),
                                   ("code tables + --scheme" if base else "--scheme", [*base, "--scheme", str(scheme)],
                                    True)):
        dst = work / "findings.parquet"
        cmd = [os.sys.executable, "-m", "drgdip", "check", str(src), "-o", str(dst), "--quiet", *extra]
        load = os.getloadavg()[0]
        seconds, cpu, rss_kb = run_timed(cmd)
        found = pq.ParquetFile(dst).metadata.num_rows
        read = read_columns(file_columns(src), load_rules(), grouping=grouping)
        floor, floor_cpu = io_floor(src, dst, work / "floor.parquet", read)
        rows.append({"mode": label, "load": load, "rps": n / seconds, "seconds": seconds, "cpu_seconds": cpu,
                     "floor_cpu_seconds": floor_cpu,
                     "peak_rss_mb": rss_kb / 1024, "output_mb": dst.stat().st_size / 2**20, "findings": found,
                     "read_columns": len(read) if read is not None else len(file_columns(src)),
                     "floor_rps": n / floor, "floor_share": floor / seconds,
                     "command": " ".join(["drgdip", *cmd[3:]]).replace(str(work) + "/", "")})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1 << 16)
    ap.add_argument("--e2e-records", type=int, default=None, help="records end to end (default --records; 0: skip)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the synthetic files (kept, reused)")
    ap.add_argument("--synth-max", type=int, default=1_000_000, help="largest month synthesised; bigger inputs repeat it")
    args = ap.parse_args(argv)
    print(f"cpu_count {os.cpu_count()}")
    tables = load_code_tables(SHARED / "codesets") if (SHARED / "codesets").exists() else {}
    t = synthetic(args.records)
    start = time.perf_counter()
    findings = 0
    for b in t.to_batches(max_chunksize=args.batch):
        findings += run_qc(b, code_tables=tables).num_rows
    dt = time.perf_counter() - start
    print(f"{args.records} records, {findings} findings, {dt:.2f} s, {args.records / dt:,.0f} records/s "
          f"({'with' if tables else 'without'} code tables)")
    e2e = args.records if args.e2e_records is None else args.e2e_records
    if e2e:
        from drgdip.bench.dip_throughput import print_end_to_end
        work = args.work or Path(tempfile.mkdtemp(prefix="qc-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        rows = end_to_end(e2e, work, args.synth_max)
        print_end_to_end(e2e, rows, "I/O floor: pyarrow alone reading the columns the command reads and "
                         "writing its findings file; findings: " + ", ".join(f"{r['findings']:,}" for r in rows))


if __name__ == "__main__":
    main()
