"""Where a record's time goes in ``drgdip group`` (阶段剖析): each stage of the streaming path timed in process.

    python -m drgdip.bench.stages in.parquet --scheme scheme.drgscheme [--keep all] [--threads 1]

Runs :func:`grouper.drg.api.group_file` once on a small slice (to load the compiled kernels),
then on the whole file with a timer around each stage: reading a batch (reader thread),
encoding (numeric fields, sex, code lists and the compiled tokenizer within them, derived
fields), the kernel, building the result columns and the output batch, writing a batch
(writer thread), and the main thread waiting for the reader or the writer. Each stage gets
its wall seconds and the CPU seconds of the thread that ran it (``time.thread_time``: the
compiled parallel loops also run on numba's worker threads, and Arrow decompresses in its
own pool, so those stages' thread CPU is a part of their cost; ``--threads 1`` runs the
numba loops in one thread). The process CPU seconds over the run are printed with the
load average: on a shared machine wall seconds stretch with the load, CPU seconds much less.
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pyarrow.parquet as pq

STAGES = {
    "read a batch (reader thread)": None,
    "encode": ("encode", "Encoder", "encode"),
    "  code lists": ("encode", "Encoder", "_codes"),
    "    tokenizer (compiled)": ("encode", None, "tokenize"),
    "  numeric fields": ("encode", None, "numeric"),
    "  sex": ("encode", None, "text"),
    "  derived fields": ("encode", None, "_any_in_list"),
    "kernel": ("kernel", None, "run"),
    "result columns + output batch": ("api", "Grouper", "assemble"),
    "write a batch (writer thread)": ("arrowio", "AtomicWriter", "write"),
    "write a part (writer threads)": ("arrowio", "DatasetWriter", "write"),
    "main thread waiting for reader/writer": None,
}


def profile(src: str, scheme_path: str | None, dst: str, keep=None) -> dict:
    """Seconds per stage ({stage: (wall, thread CPU)}), wall and process CPU of one ``group_file``."""
    from drgdip import arrowio
    from drgdip.grouper.drg import api, encode, kernel
    mods = {"arrowio": arrowio, "api": api, "encode": encode, "kernel": kernel}
    wall, cpu = collections.defaultdict(float), collections.defaultdict(float)
    lock = threading.Lock()
    saved = []

    def timed(label, f):
        def g(*a, **k):
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return f(*a, **k)
            finally:
                with lock:
                    wall[label] += time.perf_counter() - w0
                    cpu[label] += time.thread_time() - c0
        return g

    def patch(owner, name, new):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    for label, where in STAGES.items():
        if where is None:
            continue
        mod, cls, name = where
        owner = getattr(mods[mod], cls, None) if cls else mods[mod]
        if owner is None:                       # an older checkout without that writer
            continue
        patch(owner, name, timed(label.strip(), getattr(owner, name)))
    open_batches = arrowio.open_batches

    def reading(*a, **k):
        it = open_batches(*a, **k)
        step = timed("read a batch (reader thread)", lambda: next(it, None))
        while (b := step()) is not None:
            yield b
    patch(arrowio, "open_batches", reading)
    result = Future.result

    def waiting(self, *a, **k):
        if threading.current_thread() is not threading.main_thread():
            return result(self, *a, **k)
        return timed("main thread waiting for reader/writer", result)(self, *a, **k)
    patch(Future, "result", waiting)
    try:
        scheme = api.load_scheme(scheme_path)
        with tempfile.TemporaryDirectory(prefix="drgdip-stages-") as tmp:
            warm = Path(tmp) / "warm.parquet"
            pq.write_table(pq.ParquetFile(src).read_row_group(0).slice(0, 2000), warm)
            api.group_file(warm, Path(tmp) / "warm-out.parquet", scheme, keep=keep)
        wall.clear()
        cpu.clear()
        load = os.getloadavg()[0]
        w0, c0 = time.perf_counter(), time.process_time()
        api.group_file(src, dst, scheme, keep=keep)
        total_wall, total_cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        for owner, name, f in reversed(saved):
            setattr(owner, name, f)
    return {"records": pq.ParquetFile(src).metadata.num_rows, "wall": total_wall, "process_cpu": total_cpu,
            "load_before": load, "load_after": os.getloadavg()[0],
            "stages": {k.strip(): (wall[k.strip()], cpu[k.strip()]) for k in STAGES if k.strip() in wall}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m drgdip.bench.stages", description=__doc__.split("\n")[0])
    p.add_argument("records")
    p.add_argument("--scheme", default=None)
    p.add_argument("-o", "--output", default=None, help="output (default: a temporary file); a folder for part files")
    p.add_argument("--keep", default=None)
    p.add_argument("--threads", type=int, default=None, help="numba threads (set before numba starts)")
    a = p.parse_args(argv)
    if a.threads:
        import numba
        numba.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="drgdip-stages-") as tmp:
        r = profile(a.records, a.scheme, a.output or str(Path(tmp) / "out.parquet"), a.keep)
    n = r["records"]
    print(f"{n:,} records  cpu_count {os.cpu_count()}  load average {r['load_before']:.2f} before, "
          f"{r['load_after']:.2f} after")
    print(f"wall {r['wall']:.2f} s ({r['wall'] / n * 1e6:.3f} us/record)  process CPU {r['process_cpu']:.2f} s "
          f"({r['process_cpu'] / n * 1e6:.3f} us/record, {r['process_cpu'] / r['wall']:.2f} cores busy)")
    print(f"  {'stage':<40}{'wall s':>9}{'us/rec':>9}{'thread CPU s':>14}{'us/rec':>9}")
    for label in STAGES:
        k = label.strip()
        if k in r["stages"]:
            w, c = r["stages"][k]
            print(f"  {label:<40}{w:>9.2f}{w / n * 1e6:>9.3f}{c:>14.2f}{c / n * 1e6:>9.3f}")
    return r


if __name__ == "__main__":
    main()
