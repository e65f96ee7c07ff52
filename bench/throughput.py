"""Grouper throughput on synthetic records (吞吐量): plain Python, kernel, encoder, end to end.

    python -m drgdip.bench.throughput --records 2000000 --scheme ../shared/data/chs-drg/CHS_DRG_11

(a) plain Python: ``kernel.group_range`` run by the interpreter (numba's ``py_func``, with the
    helper functions it calls swapped for their ``py_func`` too) over the first ``--sample`` records;
(b) kernel: ``kernel.run`` on the encoded arrays (warmed up first, best of ``--repeat``);
(c) encoder: Arrow table → arrays (best of ``--repeat``);
(d) end to end: Parquet → Parquet in a separate process (``python -m drgdip group`` from this
    checkout), per output mode (default key + results; ``--keep all``; each also into a folder
    of part files written two at a time; default with numba's OpenMP workers left spinning),
    wall time and the child's peak RSS;
(e) the I/O floor of each mode: pyarrow alone reading the columns drgdip reads and writing
    exactly the file it wrote (same writer, zstd).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from drgdip.bench.synthetic import synthetic_records
from drgdip.grouper.drg import kernel
from drgdip.grouper.drg.api import load_scheme
from drgdip.grouper.drg.compile import SchemeError
from drgdip.grouper.drg.encode import Encoder
from drgdip.grouper.drg.reference import group_encoded_py

CHUNK = 1_000_000


@contextlib.contextmanager
def interpreted_kernel():
    """Inside the block every numba function of ``grouper.drg.kernel`` is its plain-Python original."""
    saved = {k: v for k, v in vars(kernel).items() if isinstance(v, numba.core.dispatcher.Dispatcher)}
    try:
        for k, v in saved.items():
            setattr(kernel, k, v.py_func)
        yield kernel.group_range
    finally:
        for k, v in saved.items():
            setattr(kernel, k, v)


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def python_path(scheme, enc, sample: int) -> tuple[float, np.ndarray]:
    """Seconds for the interpreted kernel over records 0..sample-1, and its (sample, 4) results."""
    params = kernel.scheme_params(scheme)
    arrays = kernel.scheme_tuple(scheme)
    cols = [np.empty(sample, dtype=np.int64) for _ in range(4)]
    with interpreted_kernel() as group_range:
        t0 = time.perf_counter()
        group_range(0, sample, *cols, enc.values, enc.sex, enc.diag_ptr, enc.diag_ids, enc.proc_ptr, enc.proc_ids,
                    enc.bad_value, params, arrays)
        return time.perf_counter() - t0, np.stack(cols, axis=1)


def write_input(scheme, n: int, seed: int, path: Path) -> None:
    """``n`` synthetic records into a Parquet file, generated in chunks (bounded memory)."""
    writer = None
    for k, start in enumerate(range(0, n, CHUNK)):
        t = synthetic_records(scheme, min(CHUNK, n - start), seed + k)
        t = t.set_column(0, "id", pa.array(np.arange(start + 1, start + t.num_rows + 1, dtype=np.int64)))
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
    writer.close()


#: output modes measured end to end: (label, extra ``drgdip group`` options, environment)
#: (``FOLDER`` among the options: ``-o`` names a folder, a dataset of part files written two at a time)
FOLDER = "<folder>"
MODES = (("default (key + results)", [], {}),
         ("default, -o folder/ (part files)", [FOLDER], {}),
         ("--keep all", ["--keep", "all"], {}),
         ("--keep all, -o folder/ (part files)", ["--keep", "all", FOLDER], {}),
         ("default, OpenMP workers spinning", [], {"OMP_WAIT_POLICY": "ACTIVE"}))


def _output_rows_and_mb(dst: Path) -> tuple[int, float]:
    files = sorted(dst.iterdir()) if dst.is_dir() else [dst]
    return (sum(pq.ParquetFile(f).metadata.num_rows for f in files),
            sum(f.stat().st_size for f in files) / 2**20)


def end_to_end_command(src: Path, dst: Path, scheme_file: Path, extra: list[str] = ()) -> list[str]:
    """``python -m drgdip group`` run from this checkout's root (never an installed copy's code)."""
    return [sys.executable, "-m", "drgdip", "group", str(src), "-o", str(dst), "--scheme", str(scheme_file),
            "--quiet", *extra]


def io_floor(src: Path, reference: Path, dst: Path, keep_all: bool) -> float:
    """Seconds for pyarrow alone to read the columns ``drgdip group`` reads and write the file it wrote.

    The result columns are taken from drgdip's own output (``reference``), loaded before the
    clock starts; the clock runs over reading the input columns batch by batch, assembling
    the output batches and writing them with the same writer (zstd, same dictionary and
    statistics choices, atomic rename)."""
    from drgdip.arrowio import (
        DEFAULT_BATCH_SIZE,
        AtomicWriter,
        file_columns,
        open_batches,
    )
    from drgdip.grouper.drg.api import OUTPUT_COLUMNS, output_plan
    read, write, add_row = output_plan(file_columns(src), "all" if keep_all else None)
    results = pq.read_table(reference, columns=list(OUTPUT_COLUMNS)).combine_chunks()
    t0 = time.perf_counter()
    start = 0
    writer = None
    for batch in open_batches(src, DEFAULT_BATCH_SIZE, columns=read):
        res = results.slice(start, batch.num_rows)
        arrays = [batch.column(n) for n in write] + [res.column(n).chunk(0) for n in OUTPUT_COLUMNS]
        out = pa.RecordBatch.from_arrays(arrays, names=write + list(OUTPUT_COLUMNS))
        if writer is None:
            writer = AtomicWriter(dst, out.schema, sample=out).__enter__()
        writer.write(out)
        start += batch.num_rows
    writer.__exit__(None, None, None)
    return time.perf_counter() - t0


def _hwm_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def child_cpu_seconds() -> float:
    """User + system CPU seconds of every child waited for so far (a child's share: the difference)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_measured(cmd: list[str], cwd: Path, poll: float = 0.02, env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in KB) of a child process.

    On Linux the peak is the child's own VmHWM, polled every ``poll`` s (the rusage of a child
    inherits the parent's high-water mark from before exec, which would report this process's
    size); elsewhere ``wait4``'s ru_maxrss."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log,
                                env={**os.environ, **(env or {})})
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm_kb(proc.pid))
            time.sleep(poll)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {log.read().decode(errors='replace')[-500:]}")
    if peak == 0:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak


def end_to_end(scheme, n: int, seed: int, workdir: Path) -> dict:
    src, scheme_file = workdir / "in.parquet", workdir / "scheme.drgscheme"
    scheme.save(scheme_file)
    write_input(scheme, n, seed, src)
    root = Path(__file__).resolve().parents[1]
    out = {"e2e_records": n, "e2e_input_mb": src.stat().st_size / 2**20, "modes": []}
    for label, extra, env in MODES:
        folder = FOLDER in extra
        extra = [x for x in extra if x != FOLDER]
        dst = workdir / ("out" if folder else "out.parquet")
        cmd = end_to_end_command(src, dst, scheme_file, extra)
        if folder:
            cmd[cmd.index(str(dst))] = str(dst) + "/"
        load, cpu0 = os.getloadavg()[0], child_cpu_seconds()
        seconds, rss_kb = run_measured(cmd, cwd=root, env=env)
        cpu = child_cpu_seconds() - cpu0
        rows, out_mb = _output_rows_and_mb(dst)
        if rows != n:
            raise RuntimeError(f"end to end wrote {rows} rows for {n} records")
        mode = {"mode": label, "seconds": seconds, "rps": n / seconds, "peak_rss_mb": rss_kb / 1024,
                "output_mb": out_mb, "cpu_seconds": cpu, "cpu_us_per_record": cpu / n * 1e6, "load_before": load,
                "command": " ".join(["drgdip", *cmd[3:]]).replace(str(workdir) + "/", "")
                + "".join(f"  ({k}={v})" for k, v in env.items())}
        if not env and not folder:
            floor_s = io_floor(src, dst, workdir / "floor.parquet", keep_all="all" in extra)
            mode.update({"io_floor_seconds": floor_s, "io_floor_rps": n / floor_s,
                         "io_floor_output_mb": (workdir / "floor.parquet").stat().st_size / 2**20})
        out["modes"].append(mode)
    first = out["modes"][0]
    out.update({"e2e_seconds": first["seconds"], "e2e_rps": first["rps"], "e2e_peak_rss_mb": first["peak_rss_mb"],
                "e2e_command": first["command"]})
    return out


def measure(records: int, scheme_path: str | None = None, sample: int = 2000, seed: int = 0, repeat: int = 3,
            e2e_records: int | None = None) -> dict:
    allow_gaps = False
    load_start = os.getloadavg()[0]
    try:
        scheme = load_scheme(scheme_path)
    except SchemeError:
        scheme, allow_gaps = load_scheme(scheme_path, allow_gaps=True), True
    t0 = time.perf_counter()
    table = synthetic_records(scheme, records, seed)
    gen_s = time.perf_counter() - t0
    encoder = Encoder(scheme)
    encoder.encode(table.slice(0, 100))
    enc_s, enc = _best(lambda: encoder.encode(table), repeat)
    args = (enc.values, enc.sex, enc.diag_ptr, enc.diag_ids, enc.proc_ptr, enc.proc_ids, enc.bad_value)
    kernel.run(scheme, *args)                                 # compile or load the cache
    ker_s, res = _best(lambda: kernel.run(scheme, *args), repeat)
    sample = min(sample, records)
    py_s, py = python_path(scheme, enc, sample)
    same = all(np.array_equal(py[:, j], np.asarray(res[j][:sample], dtype=np.int64)) for j in range(4))
    # the explain path (grouper.drg.reference: the algorithm written for people, no trace kept)
    t0 = time.perf_counter()
    ref = [group_encoded_py(scheme, enc, i)[:4] for i in range(sample)]
    ref_s = time.perf_counter() - t0
    same_ref = all(tuple(int(x) for x in ref[i]) == tuple(int(res[j][i]) for j in range(4)) for i in range(sample))
    out = {"records": records, "sample": sample, "seed": seed, "cpu_count": os.cpu_count(), "load_start": load_start,
           "numba_threads": numba.get_num_threads(), "scheme": scheme.label if hasattr(scheme, "label") else "",
           "allow_gaps": allow_gaps, "generate_seconds": gen_s,
           "python_rps": sample / py_s, "kernel_rps": records / ker_s, "encoder_rps": records / enc_s,
           "kernel_over_python": (records / ker_s) / (sample / py_s), "python_matches_kernel": bool(same),
           "explain_rps": sample / ref_s, "kernel_over_explain": (records / ker_s) / (sample / ref_s),
           "explain_matches_kernel": bool(same_ref)}
    with tempfile.TemporaryDirectory(prefix="drgdip-bench-") as tmp:
        out.update(end_to_end(scheme, e2e_records or records, seed, Path(tmp)))
    out["load_end"] = os.getloadavg()[0]
    return out


def _table(r: dict) -> str:
    lines = [f"scheme {r['scheme']}  records {r['records']:,}  cpu_count {r['cpu_count']}  "
             f"numba threads {r['numba_threads']}  load average {r['load_start']:.2f} at the start, "
             f"{r['load_end']:.2f} at the end",
             f"{'path':<34}{'records/s':>14}",
             f"{'plain Python (sample ' + format(r['sample'], ',') + ')':<34}{r['python_rps']:>14,.0f}",
             f"{'explain path (sample, no trace)':<34}{r['explain_rps']:>14,.0f}",
             f"{'kernel (encoded arrays, warm)':<34}{r['kernel_rps']:>14,.0f}",
             f"{'encoder (Arrow -> arrays)':<34}{r['encoder_rps']:>14,.0f}",
             f"kernel / python = {r['kernel_over_python']:,.0f}x   python == kernel on sample: "
             f"{r['python_matches_kernel']}",
             f"kernel / explain path = {r['kernel_over_explain']:,.0f}x   explain == kernel on sample: "
             f"{r['explain_matches_kernel']}",
             f"end to end, Parquet in ({r['e2e_records']:,} records, {r['e2e_input_mb']:,.0f} MB) -> Parquet out:",
             f"  {'mode':<38}{'records/s':>12}{'seconds':>9}{'CPU us/rec':>11}{'load':>6}{'peak RSS MB':>13}"
             f"{'out MB':>8}{'I/O floor rec/s':>17}{'floor s':>9}{'share':>7}"]
    for m in r["modes"]:
        floor = (f"{m['io_floor_rps']:>17,.0f}{m['io_floor_seconds']:>9.1f}{m['rps'] / m['io_floor_rps']:>7.0%}"
                 if "io_floor_rps" in m else "")
        lines.append(f"  {m['mode']:<38}{m['rps']:>12,.0f}{m['seconds']:>9.1f}{m['cpu_us_per_record']:>11.2f}"
                     f"{m['load_before']:>6.1f}{m['peak_rss_mb']:>13,.0f}{m['output_mb']:>8,.0f}{floor}")
    lines += [f"  command: {m['command']}" for m in r["modes"]]
    lines.append("  I/O floor: pyarrow alone reading the columns drgdip reads and writing the same output file")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m drgdip.bench.throughput", description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--scheme", default=None, help="scheme folder or .drgscheme (default: teaching scheme)")
    p.add_argument("--sample", type=int, default=2000, help="records for the plain-Python path")
    p.add_argument("--e2e-records", type=int, default=None, help="records for end to end (default --records)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = measure(a.records, a.scheme, a.sample, a.seed, a.repeat, a.e2e_records)
    print(json.dumps(r, indent=2) if a.json else _table(r))
    return r


if __name__ == "__main__":
    main()
