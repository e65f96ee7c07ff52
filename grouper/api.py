"""Library API of the CHS-DRG grouper: what the CLI, a notebook or a Spark job calls.

>>> scheme = load_scheme("../shared/data/chs-drg/CHS_DRG_11")      # or a .drgscheme file
>>> grouped = group_table(records, scheme)                          # input columns + mdc, adrg, drg, status, reason
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from codesets.reasons import reason_table
from grouper import kernel
from grouper.compile import SchemeError, compile_scheme
from grouper.encode import CodeSet, Encoder, result_columns
from grouper.io import DEFAULT_BATCH_SIZE, AtomicWriter, as_table, transform_file
from grouper.scheme import Scheme

TEACHING_SCHEME = Path(__file__).with_name("teaching_scheme")
OUTPUT_COLUMNS = ("mdc", "adrg", "drg", "status", "reason")


def load_scheme(path: str | os.PathLike | Scheme | None = None, rules: str | os.PathLike | None = None,
                allow_gaps: bool = False) -> Scheme:
    """A compiled scheme from a ``.drgscheme`` file or a folder of published tables.

    ``None`` gives the built-in teaching scheme (教学方案, not an official one)."""
    if isinstance(path, Scheme):
        return path
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

    def __init__(self, scheme: Scheme, codes: CodeSet | None = None):
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
                                enc.proc_ptr, enc.proc_ids, enc.bad_value)
        return m, a, d, self._reason_map[r]

    def group_batch(self, batch: pa.RecordBatch | pa.Table):
        """The batch with its columns unchanged, in order, plus ``mdc, adrg, drg, status, reason``."""
        m, a, d, r = self.arrays(batch)
        self.reason_counts += np.bincount(r, minlength=len(self.reason_counts))
        cols = result_columns(self.scheme, m, a, d, r)
        names = [n for n in batch.schema.names if n not in OUTPUT_COLUMNS]
        arrays = [batch.column(n) for n in names] + [cols[k] for k in OUTPUT_COLUMNS]
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


def group_file(src: str | os.PathLike, dst: str | os.PathLike, scheme: Scheme, codes: CodeSet | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE, progress=None, check_dst: str | os.PathLike | None = None,
               code_tables: dict | None = None) -> dict:
    """Stream SRC through the grouper into DST (written atomically). Returns counts by status.

    With ``check_dst``, the settlement-list quality-control rules (codesets.qc) run on the
    same batches and their findings go to that file (``findings`` in the returned counts)."""
    g = Grouper(scheme, codes)
    if check_dst is None:
        transform_file(src, dst, g.group_batch, batch_size, progress)
        return g.status_counts()
    from codesets.qc import FINDING_SCHEMA, run_qc
    found = 0
    with AtomicWriter(check_dst, FINDING_SCHEMA) as findings:
        def step(batch):
            nonlocal found
            out = g.group_batch(batch)
            f = run_qc(out, code_tables=code_tables, scheme=scheme)
            findings.write(f)
            found += f.num_rows
            return out
        transform_file(src, dst, step, batch_size, progress)
    return {**g.status_counts(), "findings": found}
