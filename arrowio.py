"""The Arrow boundary (Arrow 边界): record files in and out, and the column helpers every layer uses.

The one place that touches file formats, below every other module (docs/architecture.md):
the readers, :func:`text`, :func:`numeric`, :func:`code_list`, :func:`canonical_columns`, the
atomic writers, and :class:`InputError`, the exception of everything a person can fix.

Reads Parquet, Arrow IPC (file or stream) and CSV in record batches, so memory stays
bounded whatever the input size; writes outputs atomically (a temporary file beside
the target, renamed over it only when complete). Column names stay as the user wrote
them: :func:`canonical_columns` says which input column plays which canonical role
(see :mod:`codesets.record`).

File safety, shared by every command: :func:`refuse_overwrite` stops a command whose output
is one of its inputs; temporary files and folders carry the writer's pid in their name
(``.out.parquet.<pid>.<random>.tmp``) and stale ones of the same target, whose pid is dead,
are removed at the next write (:func:`clean_stale`); published outputs get the permissions
of an ordinary file under the umask (:func:`publish`); CSV text cells that a spreadsheet would
run as a formula are prefixed with ``'`` (:func:`csv_safe`); CSV input in UTF-8 (with or
without BOM) or GB18030/GBK is detected (:func:`detect_encoding`).
"""
from __future__ import annotations

import codecs
import contextlib
import functools
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from drgdip.codesets.record import BY_NAME, canonical_names

DEFAULT_BATCH_SIZE = 1 << 16
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".arrow": "arrow",
           ".feather": "arrow", ".ipc": "arrow", ".arrows": "arrow"}


#: separators of codes written in one text cell, besides '|' (full-width ones included)
CODE_SEPARATORS = r"[;,；，｜]"


class InputError(ValueError):
    """A file that cannot be used; the message is one line, meant for a person."""


# ---------------------------------------------------------------- file safety

def refuse_overwrite(inputs, output) -> None:
    """Raise :class:`InputError` when OUTPUT is (or resolves to) one of INPUTS.

    ``inputs`` is a path or an iterable of paths (``None`` entries are ignored). Paths are
    compared resolved (symlinks, ``..``) and, when both exist, with ``os.path.samefile``
    (hard links)."""
    if output is None:
        return
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out = Path(output)
    for src in inputs:
        if src is None:
            continue
        src = Path(src)
        same = src.resolve() == out.resolve()
        if not same and src.exists() and out.exists():
            try:
                same = os.path.samefile(src, out)
            except OSError:
                same = False
        if same:
            raise InputError(f"{output}: the output is also an input ({src}); write to another file")


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (no window in which
    another thread would create files with a zero umask)."""
    try:
        m = re.search(r"^Umask:\s+([0-7]+)", Path("/proc/self/status").read_text(), re.M)
        if m:
            return int(m.group(1), 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def temp_path(target: str | os.PathLike, folder: bool = False) -> Path:
    """A new private temporary file (or folder) beside TARGET, named with this process's pid.

    Stale temporaries of the same target left by a killed run are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    prefix = f".{target.name}.{os.getpid()}."
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries ``.<target name>.<pid>.*.tmp`` beside TARGET whose pid is dead.

    Only temporaries of this target are touched, and only those of a process that no longer
    runs (a run killed by SIGKILL or SIGTERM). Returns what was removed."""
    target = Path(target)
    # <pid>.<the 8 characters mkstemp/mkdtemp add>.tmp, so another target's temporaries never match
    pattern = re.compile(re.escape(f".{target.name}.") + r"(\d+)\.[a-z0-9_]{8}\.tmp$")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pattern.match(p.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def publish(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give TMP the permissions of a new file (0666) or folder (0777) under the umask and rename it to TARGET.

    ``mkstemp``/``mkdtemp`` create private (0600/0700) temporaries; a published output must
    be readable the way any file the user writes is."""
    tmp = Path(tmp)
    mode = (0o777 if tmp.is_dir() else 0o666) & ~_umask()
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def detect_encoding(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """``utf-8-sig`` (BOM), ``utf-8`` or ``gb18030`` (a superset of GBK and GB2312) for a text file.

    The whole file is checked as UTF-8 in chunks (a GBK byte may come late); anything that is
    not valid UTF-8 is read as GB18030. The answer is remembered
    per file (path, inode, size, modification time)."""
    p = Path(path)
    st = p.stat()
    return _detect_encoding(str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, chunk)


@functools.lru_cache(maxsize=64)
def _detect_encoding(path: str, inode: int, size: int, mtime_ns: int, chunk: int) -> str:
    with Path(path).open("rb") as fh:
        head = fh.read(3)
        if head == codecs.BOM_UTF8:
            return "utf-8-sig"
        fh.seek(0)
        dec = codecs.getincrementaldecoder("utf-8")()
        try:
            while True:
                block = fh.read(chunk)
                if not block:
                    dec.decode(b"", final=True)
                    return "utf-8"
                dec.decode(block)
        except UnicodeDecodeError:
            return "gb18030"


def _encoding(path: Path, encoding: str | None) -> str:
    if encoding is None or encoding == "auto":
        return detect_encoding(path)
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}; use auto, utf-8, gb18030 or gbk") from None
    return "utf-8-sig" if name == "utf-8" else name     # a BOM is never data


def file_format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    try:
        return FORMATS[ext]
    except KeyError:
        raise InputError(f"{path}: unknown file type {ext or '(none)'}; use .parquet, .csv or .arrow") from None


def _csv_reader(path: Path, batch_size: int, encoding: str | None = None, columns=None):
    enc = _encoding(path, encoding)
    with path.open("rb") as fh:
        head = fh.readline()
    if not head.strip():
        raise InputError(f"{path}: empty file, no header line")
    try:
        first = head.decode(enc)
    except UnicodeDecodeError:
        raise InputError(f"{path}: the header line is not {enc} text; try --encoding gb18030 or utf-8") from None
    header = [h.strip().strip('"') for h in first.lstrip("\ufeff").rstrip("\r\n").split(",")]
    # every CSV column is read as text: passthrough columns keep their exact spelling and
    # a malformed number in one row cannot stop the batch; typed views are made later.
    types = {name: pa.string() for name in header}
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_size * 256),
                                       encoding="utf8" if enc in ("utf-8", "utf-8-sig") else enc),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                             null_values=[""], quoted_strings_can_be_null=True,
                                             include_columns=[c for c in header if c in set(columns)]
                                             if columns is not None else None),
    )


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    return int(batch_size)


def file_columns(path: str | os.PathLike, encoding: str | None = None) -> list[str]:
    """The column names of a record file, without reading its rows."""
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file() or path.stat().st_size == 0:
        return next(open_batches(path)).schema.names      # raises the usual one-line error
    try:
        if fmt == "parquet":
            return pq.ParquetFile(path).schema_arrow.names
        if fmt == "arrow":
            try:
                return ipc.open_file(path).schema.names
            except pa.ArrowInvalid:
                return ipc.open_stream(path).schema.names
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: cannot read as {fmt}: {str(exc).strip().splitlines()[0]}") from None
    return _csv_reader(path, DEFAULT_BATCH_SIZE, encoding).schema.names


def open_batches(path: str | os.PathLike, batch_size: int = DEFAULT_BATCH_SIZE, encoding: str | None = None,
                 columns=None, read_dictionary=None) -> Iterator[pa.RecordBatch]:
    """Yield the file's record batches (original column names and types).

    ``columns``: read only these (file order kept; names the file lacks are ignored).
    ``encoding`` (CSV only): ``None``/``"auto"`` detects UTF-8 (with or without BOM) or
    GB18030; any Python codec name is accepted. ``read_dictionary`` (Parquet only): columns
    read as Arrow dictionaries, row group by row group."""
    path = Path(path)
    batch_size = check_batch_size(batch_size)
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
            names = pq.ParquetFile(path).schema_arrow.names
            cols = None if columns is None else [c for c in names if c in set(columns)]
            dicts = [c for c in (read_dictionary or ()) if cols is None or c in cols]
            pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 22,
                                read_dictionary=_leaf_paths(path, dicts) or None)
            nested_dict = any(_nested_dictionary(f.type) for f in pf.schema_arrow if cols is None or f.name in cols)
            yielded = False
            if dicts or nested_dict:
                # dictionary columns (a list of dictionary values written from Arrow, or ones asked for)
                # come back whole only one row group at a time: "Nested data conversions not
                # implemented for chunked array outputs" otherwise
                for g in range(pf.num_row_groups):
                    for b in pf.iter_batches(batch_size=batch_size, row_groups=[g], columns=cols):
                        yielded = True
                        yield b
            else:
                for b in pf.iter_batches(batch_size=batch_size, columns=cols):
                    yielded = True
                    yield b
            if not yielded:
                schema = pf.schema_arrow
                if cols is not None:
                    schema = pa.schema([schema.field(c) for c in cols])
                yield pa.RecordBatch.from_pylist([], schema=schema)
        elif fmt == "arrow":
            try:
                reader = ipc.open_file(path)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
                schema = reader.schema
            except pa.ArrowInvalid:
                reader = ipc.open_stream(path)
                batches, schema = iter(reader), reader.schema
            if columns is not None:
                keep = [c for c in schema.names if c in set(columns)]
                schema = pa.schema([schema.field(c) for c in keep])
                batches = (b.select(keep) for b in batches)
            yielded = False
            for b in batches:
                for off in range(0, max(b.num_rows, 1), batch_size):
                    yielded = True
                    yield b.slice(off, batch_size)
            if not yielded:
                yield pa.RecordBatch.from_pylist([], schema=schema)
        else:
            reader = _csv_reader(path, batch_size, encoding, columns)
            yielded = False
            for b in reader:
                for off in range(0, b.num_rows, batch_size):
                    yielded = True
                    yield b.slice(off, batch_size)
            if not yielded:
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if fmt == "csv" and "UTF8" in first:
            first += "; the file is not UTF-8: give its encoding with --encoding (e.g. gb18030)"
        raise InputError(f"{path}: cannot read as {fmt}: {first}") from None


def _leaf_paths(path: Path, names: list[str]) -> list[str]:
    """Parquet leaf paths of the columns NAMES (``diagnoses`` → ``diagnoses.list.element`` for a
    list): pyarrow's ``read_dictionary`` names leaves, a list column by its element's path."""
    if not names:
        return []
    schema = pq.ParquetFile(path).schema
    leaves = [schema.column(i).path for i in range(len(schema))]
    return [p for n in names for p in leaves if p == n or p.startswith(n + ".")]


def _nested_dictionary(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.types.is_dictionary(t.value_type) or _nested_dictionary(t.value_type)
    if pa.types.is_struct(t):
        return any(_nested_dictionary(f.type) or pa.types.is_dictionary(f.type) for f in t)
    return False


def read_table(path: str | os.PathLike, encoding: str | None = None) -> pa.Table:
    """The whole file as one table (for small inputs: catalogues, histories in tests)."""
    batches = list(open_batches(path, encoding=encoding))
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
    """A code column as list<string>: lists pass through; text is split on '|' (also '｜' ',' ';' '，' '；')."""
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
    text = pc.replace_substring_regex(array, CODE_SEPARATORS, "|")
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


#: hash partitions of :func:`repeated_values` (by the hash's top bits): one is in memory at a time
HASH_PARTITIONS = 16


def value_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash (uint64) of each string of VALUES (no nulls), the same in every process."""
    import pandas as pd
    return np.asarray(pd.util.hash_array(np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)),
                      np.uint64)


def repeated_values(read, spill_dir=None) -> tuple[pa.Array, int]:
    """(the strings occurring more than once, number of values read, nulls included) over the
    string arrays ``read()`` yields (``read`` is called once, twice when two hashes are equal: a
    file's id column read again). A first read writes a 64-bit hash per value into
    :data:`HASH_PARTITIONS` files by the hash's top bits (in ``spill_dir``, default the
    system's temporary folder), each partition is then sorted alone (memory: 8 bytes per value
    of one partition); the second read collects the values of the repeated hashes and counts
    them exactly, so a hash collision never makes a value repeated. Nulls are never repeated;
    the result is in order of first occurrence."""
    rows = 0
    shift = np.uint64(64 - int(HASH_PARTITIONS).bit_length() + 1)
    twice_parts = []
    with tempfile.TemporaryDirectory(prefix=".drgdip-ids-", dir=spill_dir) as d:
        files = [open(Path(d) / f"h{i}", "w+b") for i in range(HASH_PARTITIONS)]
        try:
            for values in read():
                rows += len(values)
                h = value_hashes(values.drop_null())
                part = (h >> shift).astype(np.intp)
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange(HASH_PARTITIONS + 1))
                hs = h[order]
                for i in range(HASH_PARTITIONS):
                    if bounds[i + 1] > bounds[i]:
                        hs[bounds[i]:bounds[i + 1]].tofile(files[i])
            for fh in files:
                fh.flush()
                fh.seek(0)
                h = np.fromfile(fh, np.uint64)
                h.sort()
                twice_parts.append(np.unique(h[1:][h[1:] == h[:-1]]))
                del h
        finally:
            for fh in files:
                fh.close()
    twice = np.concatenate(twice_parts)
    if twice.size == 0:
        return pa.array([], pa.string()), rows
    found = []
    for values in read():
        values = values.drop_null()
        found.append(values.filter(pa.array(np.isin(value_hashes(values), twice))))
    vc = pc.value_counts(pa.chunked_array(found, pa.string()))
    return vc.field("values").filter(pc.greater(vc.field("counts"), 1)), rows


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
        self._tmp = temp_path(self.path)
        if self.fmt == "parquet":
            self._writer = _parquet_writer(self._tmp, self.schema, _dictionary_columns(self.schema, self.sample))
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
                publish(self._tmp, self.path)
            else:
                self._tmp.unlink(missing_ok=True)
        return False


def _parquet_writer(path, schema: pa.Schema, dictionary) -> pq.ParquetWriter:
    """The Parquet writer of every output: zstd, ``dictionary`` columns dictionary-encoded, no
    min/max statistics on list columns (nobody filters on them and they cost time)."""
    flat = [f.name for f in schema if not pa.types.is_nested(f.type)]
    return pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=dictionary,
                            write_statistics=(flat or False) if len(flat) < len(schema) else True)


#: part files of a folder output (a Parquet dataset), numbered in input order
PART_NAME = "part-{:05d}.parquet"
_PART_RE = re.compile(r"part-\d{5,}\.parquet$")


def is_folder_output(path: str | os.PathLike) -> bool:
    """Is PATH meant as a folder output (a dataset of Parquet part files)?

    Yes when it ends with a path separator, is an existing folder, or has no file extension."""
    raw = os.fspath(path)
    p = Path(raw)
    return raw.endswith(("/", os.sep)) or p.is_dir() or p.suffix == ""


class DatasetWriter:
    """Write record batches as a folder of Parquet part files, one part per batch:
    ``part-00000.parquet``, ``part-00001.parquet``… in input order (a Parquet dataset; readers
    such as ``pyarrow.parquet.read_table(folder)`` take the parts in name order).

    Parts are independent files, so :func:`transform_file` writes two at a time in two
    threads. The folder is built as a temporary folder beside PATH and renamed to PATH only
    when every part is written; on an exception it is removed and PATH is left as it was. An
    existing PATH is replaced only if it is such a dataset itself (nothing but part files):
    it is renamed aside, the new folder renamed in, then the old one removed."""

    #: part files written at the same time
    parallel = 2

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, sample: pa.RecordBatch | pa.Table | None = None):
        self.path = Path(path)
        self.schema = schema
        self.sample = sample
        self.rows = 0
        self.parts = 0
        self._tmp = None
        self._dictionary = None
        self._lock = threading.Lock()

    def __enter__(self):
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: exists and is a file; give a folder name for a folder output")
        if self.path.is_dir() and any(not _PART_RE.match(e.name) for e in self.path.iterdir()):
            raise InputError(f"{self.path}: the folder holds other files than part-NNNNN.parquet; "
                             "give a new or empty folder")
        self._tmp = temp_path(self.path, folder=True)
        self._dictionary = _dictionary_columns(self.schema, self.sample)
        return self

    def next_part(self) -> int:
        """The number of the next part (called in input order, before the part is written)."""
        self.parts += 1
        return self.parts - 1

    def write(self, batch: pa.RecordBatch | pa.Table, part: int | None = None) -> None:
        if part is None:
            part = self.next_part()
        w = _parquet_writer(self._tmp / PART_NAME.format(part), self.schema, self._dictionary)
        try:
            if isinstance(batch, pa.Table):
                w.write_table(batch)
            else:
                w.write_batch(batch)
        finally:
            w.close()
        with self._lock:
            self.rows += batch.num_rows

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return False
        for f in self._tmp.iterdir():
            os.chmod(f, 0o666 & ~_umask())
        if self.path.is_dir():
            aside = temp_path(self.path, folder=True)
            os.replace(self.path, aside / "old")
            publish(self._tmp, self.path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            publish(self._tmp, self.path)
        return False




def month_of(dates: pa.Array | pa.ChunkedArray) -> pa.Array:
    """"YYYY-MM" of each date (text or date/timestamp), null when unreadable, impossible
    (2024-02-30, 2024-13-01) or missing. Text dates are YYYY-MM-DD (also / . or no
    separator), optionally followed by a time; a bare YYYY-MM is read as that month."""
    if isinstance(dates, pa.ChunkedArray):
        dates = dates.combine_chunks()
    n = len(dates)
    if pa.types.is_timestamp(dates.type) or pa.types.is_date(dates.type):
        dates = pc.strftime(dates, format="%Y-%m-%d") if pa.types.is_timestamp(dates.type) else dates.cast(pa.string())
    s = text(dates, n)
    enc = pc.dictionary_encode(s)          # a batch has few distinct dates: read each once
    if len(enc.dictionary) < n:
        return _month_of_text(enc.dictionary).take(enc.indices)
    return _month_of_text(s)


def _month_of_text(s: pa.Array) -> pa.Array:
    """:func:`month_of` of text dates, value by value."""
    m = pc.extract_regex(s, r"^(?P<y>\d{4})[-/.]?(?P<m>0[1-9]|1[0-2])(?:[-/.]?(?P<d>\d{2}))?(?:$|[ T])")
    y, mo, d = pc.struct_field(m, [0]), pc.struct_field(m, [1]), pc.struct_field(m, [2])
    month = pc.binary_join_element_wise(y, mo, "-")
    # a day is checked by reading the date and writing it back: an impossible day rolls over
    has_day = pc.fill_null(pc.not_equal(d, ""), False)
    ymd = pc.binary_join_element_wise(month, pc.if_else(has_day, d, "01"), "-")
    back = pc.strftime(pc.strptime(ymd, format="%Y-%m-%d", unit="s", error_is_null=True), format="%Y-%m-%d")
    real = pc.fill_null(pc.equal(back, ymd), False)
    return pc.if_else(real, month, pa.scalar(None, pa.string()))

def day_numbers(array, n: int) -> pa.Array:
    """Dates (text YYYY-MM-DD, YYYYMMDD, YYYY/MM/DD with an optional time, or date/timestamp) as
    int32 days since 1970-01-01; null when missing or unreadable (``array`` None: all null).
    The monitoring rules and the readmission pairing read dates with it."""
    if array is None:
        return pa.nulls(n, pa.int32())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_timestamp(array.type):
        return pc.cast(pc.cast(pc.cast(array, pa.timestamp("s")), pa.date32()), pa.int32())
    if pa.types.is_date(array.type):
        return pc.cast(pc.cast(array, pa.date32()), pa.int32())
    s = pc.replace_substring(text(array, n), "/", "-")
    s = pc.replace_substring_regex(s, r"^(\d{4})(\d{2})(\d{2})", r"\1-\2-\3")
    ts = pc.strptime(pc.utf8_slice_codeunits(s, 0, 10), format="%Y-%m-%d", unit="s", error_is_null=True)
    return pc.cast(pc.cast(ts, pa.date32()), pa.int32())


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
        elif pa.types.is_dictionary(f.type):
            fields.append(pa.field(f.name, f.type.value_type))
        else:
            fields.append(f)
    return pa.schema(fields)


#: a CSV text cell starting with one of these is run as a formula by spreadsheets
FORMULA_START = r"^[=+\-@]"
_PLAIN_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"


def csv_safe(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Text cells starting with ``= + - @`` get a leading ``'`` (spreadsheet formula injection).

    Only text is touched: numeric columns, and text cells that are a plain number such as
    ``-3.5`` or ``+86``, stay as they are."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return col
    risky = pc.and_(pc.match_substring_regex(col, FORMULA_START),
                    pc.invert(pc.match_substring_regex(col, _PLAIN_NUMBER)))
    if not pc.any(risky).as_py():
        return col
    return pc.if_else(risky, pc.binary_join_element_wise("'", col, ""), col)


def _csv_ready(batch):
    """List columns are written to CSV '|'-joined, the way the conformance files spell them; text made
    spreadsheet-safe (:func:`csv_safe`)."""
    cols, names = [], []
    for name, col in zip(batch.schema.names, batch.columns):
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.binary_join(col, "|")
        col = csv_safe(col)
        cols.append(col)
        names.append(name)
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(cols, names=names)
    return pa.RecordBatch.from_arrays(cols, names=names)


def write_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write a whole table atomically (format from the extension)."""
    with AtomicWriter(path, table.schema if file_format(path) != "csv" else _csv_ready(table).schema) as w:
        w.write(table)


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM raises SystemExit inside the block, so the temporary is removed on the way out.

    Only in the main thread and only when nobody installed a SIGTERM handler."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def transform_file(src: str | os.PathLike, dst: str | os.PathLike, fn, batch_size: int = DEFAULT_BATCH_SIZE,
                   progress=None, encoding: str | None = None, columns=None, read_dictionary=None) -> int:
    """Stream SRC batch by batch through ``fn`` (batch → batch) into DST, written atomically.

    DST must not be SRC (:func:`refuse_overwrite`). ``encoding``, ``columns`` and
    ``read_dictionary`` are passed to :func:`open_batches`. A DST that names a folder
    (:func:`is_folder_output`) is written as a dataset of Parquet part files, one a batch
    (:class:`DatasetWriter`).

    Reading the next batch and writing the previous one run in background threads while
    ``fn`` works on the current one (Arrow releases the GIL for file I/O and encoding); at
    most one batch waits on the reading side and one on the writing side (two for a folder,
    whose parts are written two at a time), so memory stays bounded by a few batches. On any
    error DST is left as it was."""
    from concurrent.futures import ThreadPoolExecutor

    refuse_overwrite(src, dst)
    check_batch_size(batch_size)
    folder = is_folder_output(dst)
    if not folder:
        file_format(dst)                  # an unknown extension stops before any reading
    batches = open_batches(src, batch_size, encoding=encoding, columns=columns, read_dictionary=read_dictionary)
    end = object()
    writer = None
    rows = 0
    parallel = DatasetWriter.parallel if folder else 1
    with _sigterm_as_exit(), ThreadPoolExecutor(1, thread_name_prefix="drgdip-read") as reader, \
            ThreadPoolExecutor(parallel, thread_name_prefix="drgdip-write") as writing:
        pending: list = []
        try:
            pending_read = reader.submit(next, batches, end)
            while True:
                batch = pending_read.result()
                if batch is end:
                    break
                pending_read = reader.submit(next, batches, end)
                out = fn(batch)
                if writer is None:
                    writer = (DatasetWriter if folder else AtomicWriter)(dst, out.schema, sample=out).__enter__()
                if len(pending) >= parallel:
                    pending.pop(0).result()
                if folder:
                    pending.append(writing.submit(writer.write, out, writer.next_part()))
                else:
                    pending.append(writing.submit(writer.write, out))
                rows += out.num_rows
                if progress is not None:
                    progress(out.num_rows)
            while pending:
                pending.pop(0).result()
        except BaseException as exc:
            for p in pending:
                p.exception()                      # let the writes in flight finish first
            if writer is not None:
                writer.__exit__(type(exc), exc, exc.__traceback__)
            raise
    if writer is not None:
        writer.__exit__(None, None, None)
    return rows
