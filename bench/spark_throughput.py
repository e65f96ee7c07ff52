"""Records/s through Spark local mode beside the CLI, on the same Parquet file.

    python -m drgdip.bench.spark_throughput --records 400000 --master "local[2]"

Tiles the 1.1 conformance file (../shared/data, or --cases) to N records with unique ids
into a temporary Parquet file, compiles the scheme (--scheme, default the 1.1 tables) once,
then times, each after one untimed warm-up run (JVM, numba caches):

- ``cli``: ``drgdip group`` in a subprocess, one machine, the kernel on all cores;
- ``spark read+write``: Spark reads the file and writes it back (Spark's own transfer);
- ``spark mapInArrow no-op``: the same through a ``mapInArrow`` that returns its batches;
- ``spark group``: the same through :func:`drgdip.spark.group_dataframe` (threads=1 per task).

Prints one line per step (seconds, records/s) and the extra cost of grouping over the
no-op. Needs pyspark and Java (``pip install 'drgdip[spark]'``). Nothing is written into the
repository; the temporary folder is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def tiled(cases: Path, n: int) -> pa.Table:
    from drgdip.arrowio import read_table
    t = read_table(cases).drop_columns([c for c in ("expected_status", "expected_mdc", "expected_adrg",
                                                    "expected_drg") if c in read_table(cases).column_names])
    reps = -(-n // t.num_rows)
    out = pa.concat_tables([t] * reps).slice(0, n)
    ids = np.char.add(np.char.add(np.asarray(out["id"].to_pylist(), dtype=str), "-"),
                      (np.arange(n) // t.num_rows).astype(str))
    return out.set_column(out.column_names.index("id"), "id", pa.array(ids.tolist(), pa.string()))


def timed(fn, runs: int = 1) -> float:
    fn()                                            # warm-up (JVM, numba caches, file cache)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--batch", type=int, default=20_000, help="spark.sql.execution.arrow.maxRecordsPerBatch")
    ap.add_argument("--cases", default=str(SHARED / "conformance" / "chs-drg-1.1-cases.csv"))
    ap.add_argument("--scheme", default=str(SHARED / "chs-drg" / "CHS_DRG_11"))
    ap.add_argument("--runs", type=int, default=1, help="timed runs per step (the best is shown)")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

    from pyspark.sql import SparkSession

    from drgdip.grouper.drg.api import load_scheme
    from drgdip.spark import group_dataframe

    work = Path(tempfile.mkdtemp(prefix="drgdip-spark-bench."))
    try:
        src = work / "records.parquet"
        pq.write_table(tiled(Path(args.cases), args.records), src, row_group_size=65536)
        scheme_file = work / "scheme.drgscheme"
        load_scheme(args.scheme).save(scheme_file)
        n = args.records
        res = {}
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
        res["cli (drgdip group, all cores)"] = timed(lambda: subprocess.run(
            [sys.executable, "-m", "drgdip", "group", str(src), "-o", str(work / "cli.parquet"),
             "--scheme", str(scheme_file), "--quiet"], check=True, env=env, capture_output=True), args.runs)
        spark = (SparkSession.builder.master(args.master).appName("drgdip-bench")
                 .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
                 .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch))
                 .config("spark.executorEnv.NUMBA_NUM_THREADS", "1").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        df = spark.read.parquet(str(src))

        def write(frame, name):
            return lambda: frame.write.mode("overwrite").parquet(str(work / name))

        def noop(batches):
            yield from batches

        res["spark read+write"] = timed(write(df, "rw"), args.runs)
        res["spark mapInArrow no-op"] = timed(write(df.mapInArrow(noop, df.schema), "noop"), args.runs)
        res["spark group (threads=1 per task)"] = timed(write(group_dataframe(df, scheme_file), "group"), args.runs)
        spark.stop()
        print(f"{n} records, master {args.master}, maxRecordsPerBatch {args.batch}, {os.cpu_count()} cores")
        for name, s in res.items():
            print(f"{name:<36} {s:8.2f} s {n / s:>12,.0f} records/s")
        extra = res["spark group (threads=1 per task)"] - res["spark mapInArrow no-op"]
        if extra > 0:
            print(f"grouping over the no-op: +{extra:.2f} s ({n / extra:,.0f} records/s of grouping alone)")
        else:
            print(f"grouping over the no-op: {extra:+.2f} s, within the run-to-run noise of Spark's own transfer")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
