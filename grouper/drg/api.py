"""Library API of the CHS-DRG grouper: what the CLI, a notebook or a Spark job calls.

>>> scheme = load_scheme("../shared/data/chs-drg/CHS_DRG_11")      # or a .drgscheme file
>>> grouped = group_table(records, scheme)                          # input columns + mdc, adrg, drg, status, reason
>>> group_file("discharges.parquet", "grouped.parquet", scheme)     # id + mdc, adrg, drg, status, reason

Files (``group_file``) are written results-only by default: the record's key column (the
input's ``id`` column under its own name, e.g. ``setl_id``; without one a ``row`` column, the
record's 0-based position in the input) plus the results, dictionary-encoded, joined back
on the key; ``keep=`` adds input columns, ``keep="all"`` passes every one through.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

# numba's OpenMP workers spin after each parallel region; beside the reader and writer
# threads of the streaming path that spinning takes a core from them (must be set before
# the OpenMP runtime loads, i.e. before the first parallel kernel runs)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from drgdip.arrowio import (
    DEFAULT_BATCH_SIZE,
    AtomicWriter,
    InputError,
    as_table,
    canonical_columns,
    check_batch_size,
    file_columns,
    refuse_overwrite,
    transform_file,
)
from drgdip.codesets.reasons import reason_table
from drgdip.grouper.drg import kernel
from drgdip.grouper.drg.compile import SchemeError, compile_scheme
from drgdip.grouper.drg.encode import INPUT_ROLES, CodeSet, Encoder, result_columns
from drgdip.grouper.drg.scheme import Scheme

TEACHING_SCHEME = Path(__file__).with_name("teaching_scheme")
OUTPUT_COLUMNS = ("mdc", "adrg", "drg", "status", "reason")
#: the key written when the input has no ``id`` column: the record's 0-based position in the input
ROW_COLUMN = "row"


def load_scheme(path: str | os.PathLike | Scheme | None = None, rules: str | os.PathLike | None = None,
                allow_gaps: bool = False) -> Scheme:
    """A compiled scheme from a ``.drgscheme`` file or a folder of published tables.

    ``None`` or ``"teaching"`` gives the built-in teaching scheme (教学方案, not an official one)."""
    if isinstance(path, Scheme):
        return path
    if path == "teaching" and not Path(path).exists():
        path = None
    p = Path(path) if path is not None else TEACHING_SCHEME
    if p.is_dir():
        scheme, _ = compile_scheme(p, rules, allow_gaps=allow_gaps)
        return scheme
    if not p.exists():
        raise SchemeError(f"{p}: no such scheme file or folder")
    return Scheme.load(p)


def load_codes(folder: str | os.PathLike | None) -> CodeSet | None:
    """The national code set (ZD_INFO / SS_INFO and mappings) from a folder, or None."""
    return CodeSet.from_folder(folder) if folder else None


class Grouper:
    """A scheme (and optional code set) ready to group many batches."""

    def __init__(self, scheme: Scheme, codes: CodeSet | None = None, threads: int | None = None):
        #: kernel threads (None: numba's setting, all cores by default; see kernel.set_threads)
        self.threads = threads
        self.scheme = scheme
        self.encoder = Encoder(scheme, codes)
        self._reason_map = kernel.reason_map()
        #: records grouped so far by reason id (codesets.reasons order)
        self.reason_counts = np.zeros(len(reason_table()), dtype=np.int64)

    def status_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reason, n in zip(reason_table(), self.reason_counts):
            if n:
                out[reason.status] = out.get(reason.status, 0) + int(n)
        return out

    def arrays(self, batch: pa.RecordBatch | pa.Table):
        """Kernel results for a batch: (mdc idx, adrg id, drg id, reason id in the reason table)."""
        enc = self.encoder.encode(batch)
        m, a, d, r = kernel.run(self.scheme, enc.values, enc.sex, enc.diag_ptr, enc.diag_ids,
                                enc.proc_ptr, enc.proc_ids, enc.bad_value, threads=self.threads)
        return m, a, d, self._reason_map[r]

    def group_batch(self, batch: pa.RecordBatch | pa.Table, columns: list[str] | None = None,
                    dictionary: bool = False, row_start: int | None = None):
        """The batch's columns unchanged, in order, plus ``mdc, adrg, drg, status, reason``.

        ``columns``: only these input columns are written before the results (default all).
        ``dictionary``: results as dictionary-encoded strings. ``row_start``: add a ``row``
        column numbering the records from there (the key of inputs without an id)."""
        m, a, d, r = self.arrays(batch)
        self.reason_counts += np.bincount(r, minlength=len(self.reason_counts))
        return self.assemble(batch, (m, a, d, r), columns, dictionary, row_start)

    def assemble(self, batch, results, columns=None, dictionary=False, row_start=None):
        """The output of :meth:`group_batch` from the batch and its kernel results."""
        cols = result_columns(self.scheme, *results, dictionary=dictionary)
        names = [n for n in (batch.schema.names if columns is None else columns) if n not in OUTPUT_COLUMNS]
        arrays = [batch.column(n) for n in names]
        if row_start is not None:
            names = [ROW_COLUMN] + names
            arrays = [pa.array(np.arange(row_start, row_start + batch.num_rows, dtype=np.int64))] + arrays
        arrays += [cols[k] for k in OUTPUT_COLUMNS]
        names = names + list(OUTPUT_COLUMNS)
        if isinstance(batch, pa.Table):
            return pa.Table.from_arrays(arrays, names=names)
        return pa.RecordBatch.from_arrays(arrays, names=names)


def group_table(data, scheme: Scheme | str | os.PathLike | None = None, codes: CodeSet | None = None) -> pa.Table:
    """Group a whole table (Arrow Table, pandas DataFrame or path)."""
    table = as_table(data)
    return Grouper(load_scheme(scheme), codes).group_batch(table.combine_chunks())


def group_batches(batches: Iterable[pa.RecordBatch], scheme: Scheme, codes: CodeSet | None = None) -> Iterator[pa.RecordBatch]:
    g = Grouper(scheme, codes)
    for b in batches:
        yield g.group_batch(b)


def output_plan(names: list[str], keep=None, need_all: bool = False) -> tuple[list[str] | None, list[str], bool]:
    """(columns to read or None for all, input columns to write, whether to add a ``row`` key).

    ``keep``: ``None`` the key only; ``"all"`` every input column; else an iterable of input
    column names (``"all"`` among them means all) written after the key."""
    if isinstance(keep, str):
        keep = [keep]
    keep = list(keep or [])
    roles = canonical_columns(pa.schema([(n, pa.null()) for n in names]))
    if "all" in keep:
        write = [n for n in names if n not in OUTPUT_COLUMNS]
        return None, write, False
    missing = [k for k in keep if k not in names]
    if missing:
        raise InputError(f"--keep {', '.join(missing)}: no such input column (columns: {', '.join(names[:30])})")
    key = roles.get("id")
    # without an id the key is the added ``row`` column: an input column of that name gives way
    write = ([key] if key else []) + [n for n in names if n in keep and n != key and n not in OUTPUT_COLUMNS
                                      and (key or n != ROW_COLUMN)]
    if need_all:
        return None, write, key is None
    read = {roles[c] for c in INPUT_ROLES if c in roles} | set(write)
    return [n for n in names if n in read], write, key is None


def group_file(src: str | os.PathLike, dst: str | os.PathLike, scheme: Scheme, codes: CodeSet | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE, progress=None, check_dst: str | os.PathLike | None = None,
               code_tables: dict | None = None, keep=None, encoding: str | None = None) -> dict:
    """Stream SRC through the grouper into DST (written atomically). Returns counts by status.

    DST holds the key column (the input's ``id`` column, or ``row``, the 0-based input
    position, when there is none), the ``keep`` columns (``"all"``: every input column, as
    :func:`group_table` does) and ``mdc, adrg, drg, status, reason`` as dictionary-encoded
    strings, one row per input record in input order. Only the columns grouping needs and
    the kept ones are read. ``encoding`` applies to CSV input (default: detected).

    With ``check_dst``, the settlement-list quality-control rules (codesets.qc) run on the
    same batches and their findings go to that file (``findings`` in the returned counts)."""
    refuse_overwrite(src, dst)
    if check_dst is not None:
        refuse_overwrite([src, dst], check_dst)
    check_batch_size(batch_size)
    names = file_columns(src, encoding)
    read, write, add_row = output_plan(names, keep, need_all=check_dst is not None)
    g = Grouper(scheme, codes)
    seen = 0

    def group(batch):
        nonlocal seen
        out = g.group_batch(batch, columns=write, dictionary=True, row_start=seen if add_row else None)
        seen += batch.num_rows
        return out

    def group_and_check(batch):
        nonlocal seen, found
        m, a, d, r = g.arrays(batch)
        g.reason_counts += np.bincount(r, minlength=len(g.reason_counts))
        f = run_qc(g.assemble(batch, (m, a, d, r)), code_tables=code_tables, scheme=scheme)
        findings.write(f)
        found += f.num_rows
        out = g.assemble(batch, (m, a, d, r), write, True, seen if add_row else None)
        seen += batch.num_rows
        return out

    if check_dst is None:
        transform_file(src, dst, group, batch_size, progress, encoding=encoding, columns=read)
        return g.status_counts()
    from drgdip.codesets.qc import FINDING_SCHEMA, run_qc
    found = 0
    with AtomicWriter(check_dst, FINDING_SCHEMA) as findings:
        transform_file(src, dst, group_and_check, batch_size, progress, encoding=encoding, columns=read)
    return {**g.status_counts(), "findings": found}
