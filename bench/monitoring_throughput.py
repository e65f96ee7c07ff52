"""Monitoring throughput: ``python -m drgdip.bench.monitoring_throughput --records N`` prints records/s.

Plants anomalies into a seeded synthetic region (:mod:`synth.anomalies`, teaching scheme),
groups it once, and tiles it to N records in a temporary Parquet file (each copy gets its
own record and patient ids, so episodes never join across copies); then times
:func:`weights.monitoring.rules.monitor_file` over that file with the given number of parts and
reports records/s, findings, the Arrow memory pool's peak and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def tiled_file(path: Path, records: int, seed: int = 5, base_per_month: int = 2000) -> int:
    """Write ``records`` grouped records to PATH (Parquet), tiles of one planted region."""
    from drgdip.grouper.drg.api import group_table
    from drgdip.synth.anomalies import plant_anomalies
    base = group_table(plant_anomalies(seed, records_per_month=base_per_month).records)
    written, k = 0, 0
    with pq.ParquetWriter(path, base.schema, compression="zstd") as w:
        while written < records:
            t = base.slice(0, min(base.num_rows, records - written))
            tag = pa.scalar(f"-{k}")
            t = t.set_column(t.schema.get_field_index("id"), "id", pc.binary_join_element_wise(t["id"], tag, ""))
            t = t.set_column(t.schema.get_field_index("patient_id"), "patient_id",
                             pc.binary_join_element_wise(t["patient_id"], tag, ""))
            w.write_table(t, row_group_size=1 << 16)
            written += t.num_rows
            k += 1
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=None, help="parts (default: automatic, 2 M rows per part)")
    ap.add_argument("--batch", type=int, default=1 << 16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from drgdip.weights.monitoring.rules import monitor_file
    with tempfile.TemporaryDirectory(prefix="drgdip-bench-monitor-") as tmp:
        src = Path(tmp) / "records.parquet"
        n = tiled_file(src, args.records)
        pool = pa.default_memory_pool()
        start = time.perf_counter()
        res = monitor_file(src, Path(tmp) / "findings.parquet", partitions=args.partitions,
                           batch_size=args.batch, tmp_dir=tmp)
        dt = time.perf_counter() - start
    out = {"records": n, "seconds": round(dt, 2), "records_per_s": round(n / dt), "findings": res.findings.num_rows,
           "partitions": args.partitions or "auto", "arrow_peak_mb": round(pool.max_memory() / 2 ** 20, 1),
           "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{n} records, {out['findings']} findings, {dt:.2f} s, {out['records_per_s']:,} records/s, "
              f"parts {out['partitions']}, Arrow peak {out['arrow_peak_mb']} MB, max RSS {out['max_rss_mb']} MB")


if __name__ == "__main__":  # pragma: no cover
    main()
