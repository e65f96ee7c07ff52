"""DIP throughput: the plain-Python reference path vs the numba kernel, and the command end to end.

    python -m drgdip.bench.dip_throughput --records 200000 [--e2e-records 1000000] [--work DIR]

(a) in process: builds a synthetic catalogue (one history of clinically shaped
    K80/K81/K35/J18 cases), then matches N synthetic new cases with both paths on the same
    encoded input, checks they agree, and prints records/s for each, the ratio, and the
    catalogue's core count. Key building and Arrow encoding are timed separately (they are
    shared by both paths).
(b) end to end (``--e2e-records M``, 0 to skip): a synthetic region (``drgdip synth``,
    teaching scheme) gives a history of two years (20,000 records a month) and its DIP
    catalogue (``drgdip dip catalog --scheme <teaching>``, default ``[dip]``: every
    auxiliary factor) and M records of 2024 (one synthesised month of at most
    ``--synth-max`` records, repeated with distinct ids, written in row groups of 131,072);
    then ``drgdip group --method dip`` runs as a separate process per output mode (default:
    key + results; ``--keep all``): wall time and the child's peak RSS, against the I/O
    floor of the mode, pyarrow alone reading the columns the command reads
    (:func:`grouper.dip.api.file_plan`) and writing exactly the file it wrote.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]
TEACHING = ROOT / "grouper" / "drg" / "teaching_scheme"
ROW_GROUP = 1 << 17


def _cli(*args: str) -> None:
    import subprocess
    import sys
    subprocess.run([sys.executable, "-m", "drgdip", *args], cwd=ROOT, capture_output=True, text=True, check=True)


def region_input(n: int, work: Path, synth_max: int = 1_000_000) -> Path:
    """``work/records-N.parquet``: N synthetic records of 2024-01 (``drgdip synth``, seed 5),
    the synthesised month (at most ``synth_max`` records) repeated with each copy's ids
    prefixed by its number, cut to N, in row groups of :data:`ROW_GROUP` (kept and reused)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    out = work / f"records-{n}.parquet"
    if out.exists():
        return out
    base = work / f"synth-{min(n, synth_max)}.parquet"
    if not base.exists():
        _cli("synth", "-o", str(base), "--years", "2024", "--months", "1", "--seed", "5",
             "--records-per-month", str(min(n, synth_max)))
    src = pq.ParquetFile(base)
    tmp = out.with_suffix(".tmp")
    left, copy = n, 0
    with pq.ParquetWriter(tmp, src.schema_arrow, compression="zstd") as w:
        while left > 0:
            for batch in src.iter_batches(batch_size=ROW_GROUP):
                if left <= 0:
                    break
                batch = batch.slice(0, min(left, batch.num_rows))
                if copy:
                    i = batch.schema.get_field_index("id")
                    ids = pc.binary_join_element_wise(pa.scalar(f"C{copy}"), batch.column(i), "-")
                    batch = batch.set_column(i, "id", ids)
                w.write_batch(batch, row_group_size=ROW_GROUP)
                left -= batch.num_rows
            copy += 1
    tmp.rename(out)
    return out


def region_catalog(work: Path) -> Path:
    """The DIP catalogue of a synthetic two-year history (kept and reused in ``work``)."""
    cat = work / "dip-catalog.parquet"
    if not cat.exists():
        hist = work / "history.parquet"
        _cli("synth", "-o", str(hist), "--years", "2022,2023", "--months", "12", "--seed", "3",
             "--records-per-month", "20000")
        _cli("dip", "catalog", str(hist), "-o", str(cat), "--scheme", str(TEACHING))
    return cat


def run_timed(cmd: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s: user + system, peak RSS KB) of a child process run from the checkout.

    The CPU time (the children's rusage before and after: only this child ends in between)
    is what the command's work costs, little changed by other jobs on a shared machine; the
    wall time is what a user waits."""
    import resource

    from drgdip.bench.throughput import run_measured
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, rss_kb = run_measured(cmd, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, rss_kb


def io_floor(src: Path, reference: Path, dst: Path, read, write) -> tuple[float, float]:
    """Seconds for pyarrow alone to read the columns READ of SRC batch by batch and write the
    file REFERENCE (the command's output): its columns WRITE taken from the input batches,
    the others (results) loaded before the clock starts; same writer, same batches.
    Returns (wall s, CPU s of this process, its threads included)."""
    import pyarrow.parquet as pq

    from drgdip.arrowio import DEFAULT_BATCH_SIZE, AtomicWriter, open_batches
    names = pq.ParquetFile(reference).schema_arrow.names
    results = pq.read_table(reference, columns=[c for c in names if c not in write]).combine_chunks()
    t0, c0 = time.perf_counter(), time.process_time()
    start, writer = 0, None
    for batch in open_batches(src, DEFAULT_BATCH_SIZE, columns=read):
        res = results.slice(start, batch.num_rows)
        out = pa.RecordBatch.from_arrays([batch.column(c) if c in write else res.column(c).chunk(0) for c in names],
                                         names=names)
        if writer is None:
            writer = AtomicWriter(dst, out.schema, sample=out).__enter__()
        writer.write(out)
        start += batch.num_rows
    writer.__exit__(None, None, None)
    return time.perf_counter() - t0, time.process_time() - c0


#: output modes of ``drgdip group --method dip`` measured end to end: (label, extra options, keep)
MODES = (("default (key + results)", [], None), ("--keep all", ["--keep", "all"], "all"))


def end_to_end(n: int, work: Path, synth_max: int = 1_000_000) -> list[dict]:
    """One row per output mode: records/s, wall s, peak RSS MB, output MB, I/O floor."""
    import pyarrow.parquet as pq

    from drgdip.arrowio import file_columns
    from drgdip.grouper.dip.api import file_plan
    src, cat = region_input(n, work, synth_max), region_catalog(work)
    rows = []
    for label, extra, keep in MODES:
        dst = work / "dip-out.parquet"
        cmd = [os.sys.executable, "-m", "drgdip", "group", str(src), "-o", str(dst), "--method", "dip",
               "--catalog", str(cat), "--quiet", *extra]
        load = os.getloadavg()[0]
        seconds, cpu, rss_kb = run_timed(cmd)
        if pq.ParquetFile(dst).metadata.num_rows != n:
            raise RuntimeError(f"drgdip group --method dip wrote {pq.ParquetFile(dst).metadata.num_rows} rows for {n}")
        read, write, _ = file_plan(file_columns(src), keep)
        floor, floor_cpu = io_floor(src, dst, work / "floor.parquet", read, write)
        rows.append({"mode": label, "load": load, "rps": n / seconds, "seconds": seconds, "cpu_seconds": cpu,
                     "peak_rss_mb": rss_kb / 1024, "output_mb": dst.stat().st_size / 2**20,
                     "read_columns": len(read) if read is not None else len(file_columns(src)),
                     "floor_rps": n / floor, "floor_share": floor / seconds, "floor_cpu_seconds": floor_cpu,
                     "command": " ".join(["drgdip", *cmd[3:]]).replace(str(work) + "/", "")})
    return rows


def print_end_to_end(n: int, rows: list[dict], what: str) -> None:
    print(f"end to end, {n:,} records, cpu_count {os.cpu_count()}:")
    print(f"  {'mode':<28}{'load':>6}{'records/s':>11}{'wall s':>8}{'CPU s':>8}{'peak RSS MB':>12}{'out MB':>8}"
          f"{'cols':>5}{'floor rec/s':>12}{'floor CPU s':>12}{'share':>7}{'CPU share':>10}")
    for r in rows:
        print(f"  {r['mode']:<28}{r['load']:>6.2f}{r['rps']:>11,.0f}{r['seconds']:>8.1f}{r['cpu_seconds']:>8.1f}"
              f"{r['peak_rss_mb']:>12,.0f}{r['output_mb']:>8,.1f}{r['read_columns']:>5}{r['floor_rps']:>12,.0f}"
              f"{r['floor_cpu_seconds']:>12.1f}{r['floor_share']:>7.0%}{r['floor_cpu_seconds'] / r['cpu_seconds']:>10.0%}")
    for r in rows:
        print(f"  command: {r['command']}")
    print("  load: 1-minute load average before the run; CPU s: user + system seconds of the command (of this "
          "process for the floor); share: floor seconds / command seconds, wall and CPU; cols: input columns read; "
          + what)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--history", type=int, default=20_000)
    ap.add_argument("--e2e-records", type=int, default=None, help="records end to end (default --records; 0: skip)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the synthetic files (kept, reused)")
    ap.add_argument("--synth-max", type=int, default=1_000_000, help="largest month synthesised; bigger inputs repeat it")
    args = ap.parse_args(argv)
    print(f"cpu_count {os.cpu_count()}")
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
    e2e = args.records if args.e2e_records is None else args.e2e_records
    if e2e:
        work = args.work or Path(tempfile.mkdtemp(prefix="dip-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        print_end_to_end(e2e, end_to_end(e2e, work, args.synth_max),
                         "I/O floor: pyarrow alone reading the columns the command reads and writing its output file")


if __name__ == "__main__":
    main()
