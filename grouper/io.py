"""Record files in and out: the one place that touches file formats.

Reads Parquet, Arrow IPC (file or stream) and CSV in record batches, so memory stays
bounded whatever the input size; writes outputs atomically (a temporary file beside
the target, renamed over it only when complete). Column names stay as the user wrote
them: :func:`canonical_columns` says which input column plays which canonical role
(see :mod:`codesets.record`).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from codesets.record import BY_NAME, canonical_names

DEFAULT_BATCH_SIZE = 1 << 16
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".arrow": "arrow",
           ".feather": "arrow", ".ipc": "arrow", ".arrows": "arrow"}


class InputError(Exception):
    """A file that cannot be used; the message is one line, meant for a person."""


def file_format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    try:
        return FORMATS[ext]
    except KeyError:
        raise InputError(f"{path}: unknown file type {ext or '(none)'}; use .parquet, .csv or .arrow") from None


def _csv_reader(path: Path, batch_size: int):
    with path.open("rb") as fh:
        head = fh.readline()
    if not head.strip():
        raise InputError(f"{path}: empty file, no header line")
    header = [h.strip().strip('"') for h in head.decode("utf-8-sig").rstrip("\r\n").split(",")]
    # every CSV column is read as text: passthrough columns keep their exact spelling and
    # a malformed number in one row cannot stop the batch; typed views are made later.
    types = {name: pa.string() for name in header}
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_size * 256), encoding="utf8"),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                             null_values=[""], quoted_strings_can_be_null=True),
    )


def open_batches(path: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[pa.RecordBatch]:
    """Yield the file's record batches (original column names and types)."""
    path = Path(path)
    fmt = file_format(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a record file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        if fmt == "parquet":
            # no pre-buffering and a buffered stream: memory stays flat whatever the row-group
            # size (pre-buffered reads keep every row group read so far in the memory pool)
            pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 22)
            yielded = False
            for b in pf.iter_batches(batch_size=batch_size):
                yielded = True
                yield b
            if not yielded:
                yield pa.RecordBatch.from_pylist([], schema=pf.schema_arrow)
        elif fmt == "arrow":
            try:
                reader = ipc.open_file(path)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
                schema = reader.schema
            except pa.ArrowInvalid:
                reader = ipc.open_stream(path)
                batches, schema = iter(reader), reader.schema
            yielded = False
            for b in batches:
                for off in range(0, max(b.num_rows, 1), batch_size):
                    yielded = True
                    yield b.slice(off, batch_size)
            if not yielded:
                yield pa.RecordBatch.from_pylist([], schema=schema)
        else:
            reader = _csv_reader(path, batch_size)
            yielded = False
            for b in reader:
                for off in range(0, b.num_rows, batch_size):
                    yielded = True
                    yield b.slice(off, batch_size)
            if not yielded:
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read as {fmt}: {first}") from None


def read_table(path: str | os.PathLike) -> pa.Table:
    """The whole file as one table (for small inputs: catalogues, histories in tests)."""
    batches = list(open_batches(path))
    return pa.Table.from_batches(batches)


def as_table(data) -> pa.Table:
    """Accept a pyarrow Table/RecordBatch, a pandas DataFrame or a path."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, (str, os.PathLike)):
        return read_table(data)
    try:
        import pandas as pd
        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"expected a pyarrow Table, a pandas DataFrame or a path, got {type(data).__name__}")


# ---------------------------------------------------------------- canonical views

def canonical_columns(schema: pa.Schema) -> dict[str, str]:
    """canonical name → input column name, for every input column that plays a role."""
    names = schema.names
    out = {n: n for n in names if n in BY_NAME}
    for src, dst in canonical_names(names).items():
        out.setdefault(dst, src)
    return out


def code_list(array: pa.Array | pa.ChunkedArray | None, length: int) -> pa.ListArray:
    """A code column as list<string>: lists pass through; text is split on '|' (also ',' ';')."""
    if array is None:
        return pa.array([None] * length, type=pa.list_(pa.string()))
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    t = array.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if not pa.types.is_string(t.value_type):
            array = array.cast(pa.list_(pa.string()))
        if pa.types.is_large_list(array.type):
            array = array.cast(pa.list_(pa.string()))
        return array
    if pa.types.is_dictionary(t):
        array = array.cast(pa.string())
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)):
        array = array.cast(pa.string())
    text = pc.replace_substring_regex(array, r"[;,；，]", "|")
    parts = pc.split_pattern(pc.utf8_trim_whitespace(text), "|")
    return parts.cast(pa.list_(pa.string()))


def numeric(array: pa.Array | pa.ChunkedArray | None, length: int) -> tuple[pa.Array, pa.Array]:
    """(float64 values with nulls, bool mask of values present but unreadable)."""
    if array is None:
        return pa.nulls(length, pa.float64()), pa.array(np.zeros(length, dtype=bool))
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_boolean(array.type):
        return array.cast(pa.float64()), pa.array(np.zeros(length, dtype=bool))
    text = pc.utf8_trim_whitespace(array.cast(pa.string()))
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    ok = pc.match_substring_regex(text, r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
    clean = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    values = pc.cast(clean, pa.float64())
    bad = pc.and_(pc.is_valid(text), pc.invert(pc.fill_null(ok, False)))
    return values, pc.fill_null(bad, False)


def text(array: pa.Array | pa.ChunkedArray | None, length: int) -> pa.Array:
    """A column as trimmed strings with empty → null."""
    if array is None:
        return pa.nulls(length, pa.string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_floating(array.type):
        # 1.0 → "1": codes such as sex or disposition stored as floats
        array = pc.cast(pc.round(array), pa.int64())
    s = pc.utf8_trim_whitespace(array.cast(pa.string()))
    return pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)


# ---------------------------------------------------------------- writing

class AtomicWriter:
    """Write record batches to PATH through a temporary file renamed on success.

    Use as a context manager; on an exception the temporary file is removed and the
    previous content of PATH (if any) is left untouched."""

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, sample: pa.RecordBatch | pa.Table | None = None):
        self.path = Path(path)
        self.fmt = file_format(self.path)
        self.schema = schema
        self.sample = sample
        self.rows = 0
        self._tmp = None
        self._writer = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        if self.fmt == "parquet":
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd",
                                            use_dictionary=_dictionary_columns(self.schema, self.sample))
        elif self.fmt == "arrow":
            self._sink = pa.OSFile(str(self._tmp), "wb")
            self._writer = ipc.new_file(self._sink, self.schema)
        else:
            self._writer = pacsv.CSVWriter(self._tmp, _csv_schema(self.schema))
        return self

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self.fmt == "csv":
            batch = _csv_ready(batch)
        if isinstance(batch, pa.Table):
            self._writer.write_table(batch)
        else:
            self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def __exit__(self, exc_type, exc, tb):
        try:
            self._writer.close()
            if self.fmt == "arrow":
                self._sink.close()
        finally:
            if exc_type is None:
                os.replace(self._tmp, self.path)
            else:
                self._tmp.unlink(missing_ok=True)
        return False


def _dictionary_columns(schema: pa.Schema, sample) -> list[str] | bool:
    """Columns worth Parquet dictionary encoding: repetitive ones in the first batch.

    Trying a dictionary on nearly unique text (ids, code lists) costs time for nothing."""
    if sample is None or sample.num_rows < 1000:
        return True
    out = []
    for name, col in zip(sample.schema.names, sample.columns):
        t = col.type
        if pa.types.is_nested(t):
            continue
        if pa.types.is_dictionary(t) or pc.count_distinct(col).as_py() <= sample.num_rows // 4:
            out.append(name)
    return out


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    fields = []
    for f in schema:
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            fields.append(pa.field(f.name, pa.string()))
        else:
            fields.append(f)
    return pa.schema(fields)


def _csv_ready(batch):
    """List columns are written to CSV '|'-joined, the way the conformance files spell them."""
    cols, names = [], []
    for name, col in zip(batch.schema.names, batch.columns):
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.binary_join(col, "|")
        cols.append(col)
        names.append(name)
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(cols, names=names)
    return pa.RecordBatch.from_arrays(cols, names=names)


def write_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write a whole table atomically (format from the extension)."""
    with AtomicWriter(path, table.schema if file_format(path) != "csv" else _csv_ready(table).schema) as w:
        w.write(table)


def transform_file(src: str | os.PathLike, dst: str | os.PathLike, fn, batch_size: int = DEFAULT_BATCH_SIZE,
                   progress=None) -> int:
    """Stream SRC batch by batch through ``fn`` (batch → batch) into DST, written atomically.

    Reading the next batch and writing the previous one run in background threads while
    ``fn`` works on the current one (Arrow releases the GIL for file I/O and encoding); at
    most one batch waits on each side, so memory stays bounded by a few batches. On any
    error DST is left as it was."""
    from concurrent.futures import ThreadPoolExecutor

    batches = open_batches(src, batch_size)
    end = object()
    writer = None
    rows = 0
    with ThreadPoolExecutor(1, thread_name_prefix="drgdip-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="drgdip-write") as writing:
        pending_write = None
        try:
            pending_read = reader.submit(next, batches, end)
            while True:
                batch = pending_read.result()
                if batch is end:
                    break
                pending_read = reader.submit(next, batches, end)
                out = fn(batch)
                if writer is None:
                    writer = AtomicWriter(dst, out.schema, sample=out).__enter__()
                if pending_write is not None:
                    pending_write.result()
                pending_write = writing.submit(writer.write, out)
                rows += out.num_rows
                if progress is not None:
                    progress(out.num_rows)
            if pending_write is not None:
                pending_write.result()
        except BaseException as exc:
            if pending_write is not None:
                pending_write.exception()          # let the write in flight finish first
            if writer is not None:
                writer.__exit__(type(exc), exc, exc.__traceback__)
            raise
    if writer is not None:
        writer.__exit__(None, None, None)
    return rows
