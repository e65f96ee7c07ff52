"""settle and weights throughput and memory: ``python -m drgdip.bench.settle_throughput --records 1000000 5000000``.

For each N: synthetic records of one month (``drgdip synth --years 2024 --months 1
--records-per-month N``, teaching scheme, not grouped), the demo's policy and weight table
(``drgdip demo``), then ``drgdip settle 2024-01 … --scheme <teaching scheme> --out …`` and
``drgdip weights records-N.parquet --policy <demo policy> -o … --scheme <teaching scheme>``
(the same records as history, grouped during the run), each under ``/usr/bin/time -v``
(``--commands`` to run only one). Prints per N and command: records, wall, user and system
seconds, records/s and the maximum resident set size, with the load average before the run
(the machine may be shared: figures on a loaded machine are slower, not smaller in memory).

Files go to ``--work`` (default a temporary folder; synthetic files are kept there and
reused when present). Above ``--synth-max`` records (default 5,000,000: the generator needs
about 1.5 GB a million) the file is the ``--synth-max`` month repeated, each copy's
settlement ids (``id``) prefixed with its copy number so that none repeats, then cut to N
rows (``records-N.parquet``), written row group by row group.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHING = ROOT / "grouper" / "drg" / "teaching_scheme"


def _cli(*args: str, timed: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "drgdip", *args]
    if timed:
        cmd = ["/usr/bin/time", "-v", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)


def _time_v(stderr: str) -> dict[str, float]:
    def field(label: str) -> str:
        m = re.search(rf"{re.escape(label)}: (.+)", stderr)
        if not m:
            raise RuntimeError(f"/usr/bin/time gave no {label!r}")
        return m.group(1).strip()
    wall = [float(x) for x in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    seconds = sum(x * 60 ** i for i, x in enumerate(reversed(wall)))
    return {"wall": seconds, "user": float(field("User time (seconds)")),
            "sys": float(field("System time (seconds)")), "rss_mb": int(field("Maximum resident set size (kbytes)")) / 1024}


def _synth(n: int, work: Path) -> Path:
    records = work / f"records-{n}.parquet"
    if not records.exists():
        _cli("synth", "-o", str(records), "--years", "2024", "--months", "1", "--records-per-month", str(n))
    return records


def _repeated(n: int, base: Path, work: Path) -> Path:
    """``base`` repeated until ``n`` rows, ids made distinct per copy (bounded memory)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    records = work / f"records-{n}.parquet"
    if records.exists():
        return records
    src = pq.ParquetFile(base)
    tmp = records.with_suffix(".tmp")
    left, copy = n, 0
    with pq.ParquetWriter(tmp, src.schema_arrow, compression="zstd") as w:
        while left > 0:
            for batch in src.iter_batches(batch_size=1 << 18):
                if left <= 0:
                    break
                batch = batch.slice(0, min(left, batch.num_rows))
                i = batch.schema.get_field_index("id")
                ids = pc.binary_join_element_wise(pa.scalar(f"C{copy}"), batch.column(i).cast(pa.string()), "-")
                w.write_batch(batch.set_column(i, "id", ids))
                left -= batch.num_rows
            copy += 1
    tmp.rename(records)
    return records


def run(n: int, work: Path, batch_size: int, synth_max: int = 5_000_000) -> dict:
    demo = work / "demo"
    if not (demo / "policy.toml").exists():
        _cli("demo", "--out", str(demo))
    records = _synth(n, work) if n <= synth_max else _repeated(n, _synth(synth_max, work), work)
    out, ledger = work / f"settled-{n}", work / f"ledger-{n}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ledger, ignore_errors=True)
    load = os.getloadavg()[0]
    p = _cli("settle", "2024-01", str(records), "--scheme", str(TEACHING), "--weights", str(demo / "weights.parquet"),
             "--policy", str(demo / "policy.toml"), "--ledger", str(ledger / "ledger.db"), "--new-ledger",
             "--out", str(out), "--batch-size", str(batch_size), "--quiet", timed=True)
    t = _time_v(p.stderr)
    rows = _rows(p.stdout)
    return {"records": rows, "load": load, **t, "rate": rows / t["wall"]}


def run_weights(n: int, work: Path, batch_size: int, synth_max: int = 5_000_000) -> dict:
    """``drgdip weights`` on the records of :func:`run` as history; records = rows of the file."""
    import pyarrow.parquet as pq
    demo = work / "demo"
    if not (demo / "policy.toml").exists():
        _cli("demo", "--out", str(demo))
    records = _synth(n, work) if n <= synth_max else _repeated(n, _synth(synth_max, work), work)
    out = work / f"weights-{n}.parquet"
    out.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    p = _cli("weights", str(records), "--policy", str(demo / "policy.toml"), "-o", str(out), "--scheme", str(TEACHING),
             "--batch-size", str(batch_size), "--quiet", timed=True)
    t = _time_v(p.stderr)
    rows = pq.ParquetFile(records).metadata.num_rows
    return {"records": rows, "load": load, **t, "rate": rows / t["wall"]}


def _rows(summary: str) -> int:
    """Cases plus unpriced cases of the printed summary, all funds."""
    return sum(int(a) + int(b) for a, b in re.findall(r"^(?:employee|resident)\s+(\d+)\s+(\d+)", summary, re.M))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--batch-size", type=int, default=1 << 16)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--synth-max", type=int, default=5_000_000,
                    help="largest month synthesised; bigger N repeat it with distinct ids")
    ap.add_argument("--commands", nargs="+", choices=("settle", "weights"), default=["settle", "weights"])
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="settle-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = {"settle": run, "weights": run_weights}
    print(f"{'command':>8} {'records':>10} {'load':>5} {'wall s':>8} {'user s':>8} {'sys s':>7} {'records/s':>10} "
          f"{'max RSS MB':>11}")
    results = []
    for n in args.records:
        for c in args.commands:
            r = {"command": c, **runs[c](n, work, args.batch_size, args.synth_max)}
            results.append(r)
            print(f"{c:>8} {r['records']:>10,} {r['load']:>5.1f} {r['wall']:>8.1f} {r['user']:>8.1f} {r['sys']:>7.1f} "
                  f"{r['rate']:>10,.0f} {r['rss_mb']:>11,.0f}", flush=True)
    return results


if __name__ == "__main__":
    main()
