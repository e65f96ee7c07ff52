"""Spark settlement with the policies that couple cases, beside one machine, on the same month.

    python -m drgdip.bench.spark_settle --records 200000 --master "local[2]"

Writes a synthetic grouped month (2026-10, 8 hospitals × 2 funds, ~3 stays per patient) to
a temporary Parquet file and the example region's policy (examples/region.toml) in six
variants: ``plain`` (nothing couples cases), ``quota`` (special review by cost and stay,
quota 5 % / 6 %), ``small groups`` (min_group_cases = N × 0.2), ``readmission`` (15 days,
same ADRG and hospital), ``period means`` (group_mean = "period") and ``all`` of them. Per
variant, after one untimed warm-up of each: ``drgdip settle`` in this process
(``runs.settle_month``, batch size 100,000) and :func:`drgdip.spark.settle_dataframe` (the
DataFrame read from the file), best of ``--runs``; the two results are compared (every fund
figure equal, or the bench stops). Prints seconds per variant and each Spark time as a ratio
to Spark's ``plain`` time in the same run. Needs pyspark and Java. Nothing is written into the
repository.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "drg,weight,mean_cost\nBR21,1.5,30000\nBR23,1.0,20000\nES29,0.45,9000\nFM19,2.25,45000\n"


def month(n: int, seed: int = 7) -> pa.Table:
    """A grouped month of ``n`` records with patients and admission dates (about 1 % duplicates)."""
    rng = np.random.default_rng(seed)
    drgs = np.array(["BR21", "BR23", "ES29", "FM19", "ZZ99"])
    d = rng.choice(drgs, n, p=[0.3, 0.3, 0.2, 0.19, 0.01])
    mean = {"BR21": 30000.0, "BR23": 20000.0, "ES29": 9000.0, "FM19": 45000.0, "ZZ99": 1000.0}
    cost = np.round(np.array([mean[x] for x in d]) * rng.lognormal(0, 0.5, n), 2)
    ids = np.array([f"S{i:08d}" for i in range(n)], dtype=object)
    ids[1::97] = ids[0:-1:97][:len(ids[1::97])]
    k = max(n // 3, 1)
    pid = rng.integers(0, k, n)
    home = np.array([f"H2301000000{h}" for h in rng.integers(1, 9, k)])
    hosp = np.where(rng.random(n) < 0.9, home[pid], rng.choice(home[:8], n))
    los = rng.integers(1, 30, n)
    dis = np.datetime64("2026-10-01") + rng.integers(-1, 31, n).astype("timedelta64[D]")
    t = pa.table({
        "setl_id": ids.tolist(), "fixmedins_code": hosp, "insutype": rng.choice(["310", "390", "999"], n,
                                                                               p=[0.5, 0.49, 0.01]),
        "dscg_time": dis.astype(str).tolist(), "drg": d, "status": np.where(rng.random(n) < 0.02, "ungroupable",
                                                                             "grouped"),
        "medfee_sumamt": cost, "个人负担": np.round(cost * rng.uniform(0.1, 0.4, n), 2),
        "los_days": los.astype(float), "patient_id": [f"P{p:07d}" for p in pid],
        "admission_date": (dis - los.astype("timedelta64[D]")).astype(str).tolist()})
    return t.sort_by("setl_id")


def policies(n: int) -> dict[str, tuple[str, str, str]]:
    quota = "cost_multiple = 3.2\nlos_days_above = 25\nquota_share = 0.05\nhospital_quota_share = 0.06"
    small = f"min_group_cases = {int(n * 0.2)}"
    readm = 'days = 15\nkey = "adrg"\nsame_hospital = true\npayment = "halve_earlier"'
    period = 'group_mean = "period"'
    return {"plain": ("", "", ""), "quota": (quota, "", ""), "small groups": (small, "", ""),
            "readmission": ("", "", readm), "period means": ("", period, ""),
            "all": (quota + "\n" + small, period, readm)}


def policy_file(folder: Path, name: str, special_review: str, deviation: str, readmission: str,
                base: Path = ROOT / "examples" / "region.toml") -> Path:
    """`base` (the repository's examples/region.toml) with the given lines put in its sections.
    `base` is a parameter because an installed drgdip carries no examples/ folder."""
    text = Path(base).read_text(encoding="utf-8")
    head = "[special_review]                    # 特病单议\n"
    for line in special_review.splitlines():
        key = line.split("=")[0].strip()
        text, hits = re.subn(rf"(?m)^{key} *=.*$", line, text)
        if not hits:
            text = text.replace(head, head + line + "\n")
    if deviation:
        text = text.replace('group_mean = "table"', deviation)
    if readmission:
        text += "\n[readmission]\n" + readmission + "\n"
    p = folder / (name.replace(" ", "_") + ".toml")
    p.write_text(text, encoding="utf-8")
    return p


def best(fn, runs: int):
    fn()                                       # warm-up: JVM, Python workers, numba caches
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--batch", type=int, default=20_000, help="spark.sql.execution.arrow.maxRecordsPerBatch")
    ap.add_argument("--partitions", type=int, default=4, help="spark.sql.shuffle.partitions")
    ap.add_argument("--runs", type=int, default=1, help="timed runs per step (the best is shown)")
    ap.add_argument("--only", nargs="*", help="variants to run (default: all)")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    from pyspark.sql import SparkSession

    from drgdip.spark import settle_dataframe
    from drgdip.weights.settlement import runs
    work = Path(tempfile.mkdtemp(prefix="drgdip-spark-settle."))
    try:
        src = work / "month.parquet"
        pq.write_table(month(args.records), src, row_group_size=65536)
        weights = work / "w.csv"
        weights.write_text(WEIGHTS)
        spark = (SparkSession.builder.master(args.master).appName("drgdip-bench-settle")
                 .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", str(args.partitions))
                 .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch))
                 .config("spark.executorEnv.NUMBA_NUM_THREADS", "1").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        rows = []
        count = iter(range(10 ** 6))               # a new ledger per one-machine run
        for name, parts in policies(args.records).items():
            if args.only and name not in args.only:
                continue
            pol = policy_file(work, name, *parts)

            def one():
                i = next(count)
                return runs.settle_month("2026-10", src, policy_path=pol, weights_path=weights,
                                         ledger_path=work / f"l{i}.db", new_ledger=True, quiet=True,
                                         batch_size=100_000)

            def on_spark():
                return settle_dataframe(spark.read.parquet(str(src)), weights, pol, "2026-10")
            t_one, a = best(one, args.runs)
            t_spark, b = best(on_spark, args.runs)
            if a.funds != b.funds:
                raise SystemExit(f"{name}: Spark and one machine disagree: {a.funds} != {b.funds}")
            rows.append((name, t_one, t_spark))
            print(f"  {name}: one machine {t_one:.2f} s, Spark {t_spark:.2f} s", flush=True)
        spark.stop()
        print(f"{args.records} records, master {args.master}, {args.partitions} shuffle partitions, "
              f"maxRecordsPerBatch {args.batch}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        plain = dict((r[0], r[2]) for r in rows).get("plain")
        print(f"{'policy':<14} {'one machine s':>14} {'Spark s':>9} {'Spark / plain Spark':>20}")
        for name, t_one, t_spark in rows:
            ratio = f"{t_spark / plain:.2f}" if plain else "-"
            print(f"{name:<14} {t_one:>14.2f} {t_spark:>9.2f} {ratio:>20}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
