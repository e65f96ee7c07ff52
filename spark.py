"""Scale-out on Apache Spark (Spark 分布式分组): group a DataFrame of discharge records with ``mapInArrow``.

>>> from drgdip.spark import group_dataframe
>>> grouped = group_dataframe(df, "CHS_DRG_11.drgscheme")                 # id + mdc, adrg, drg, status, reason
>>> dip = group_dataframe(df, method="dip", catalog="catalog.parquet")     # id + dip_* columns
>>> s = settle_dataframe(grouped_records, "weights.csv", "region.toml", "2026-10")   # = drgdip settle, to the cent

pyspark is imported only by :func:`group_dataframe` (install ``drgdip[spark]``); everything
else here is plain Python and Arrow, so the executors' side can be tested without Spark.

- :func:`output_schema`: the output columns and their types before any record is grouped
  (``mapInArrow`` needs them up front).
- :class:`BatchGrouper`: the picklable callable Spark ships to the executors. It carries the
  compiled scheme (or DIP catalogue) as bytes and their SHA-256; each executor process loads
  it once into :data:`_LOADED`, a module-level cache keyed by that hash, and reuses it for
  every task (a closure or a ``__main__`` cache would be copied into every task by cloudpickle).
- threads: the kernel runs ``threads`` threads per task (default 1: Spark already runs one
  task per core); also set ``NUMBA_NUM_THREADS`` in the executors' environment
  (``spark.executorEnv.NUMBA_NUM_THREADS``) so numba does not size its pool by the cores.
- :func:`warm`: compiles every kernel variant a Spark batch triggers (Arrow IPC buffers are
  read-only, and numba compiles read-only arrays separately), e.g. once per executor image.
- input columns named like output columns (``status``, ``drg``, ``dip_group``, …) are renamed
  ``input_<name>`` with a warning, never silently replaced.

- :func:`settle_dataframe`: monthly pre-settlement (月度预结算) as map (``price_cases`` per batch
  on Spark) and reduce (``settle_period`` on the driver over the priced rows sorted by an
  explicit row key), equal to the cent to ``drgdip settle`` (docs/spark.md).

Spark has no file order: the records need a key column (``id`` or an alias such as
``setl_id``), which is written first, as :func:`drgdip.grouper.drg.api.group_file` does.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings

from drgdip.grouper.drg.kernel import ensure_cache_dir

ensure_cache_dir()

import pyarrow as pa  # noqa: E402

from drgdip.arrowio import InputError, canonical_columns  # noqa: E402

METHODS = ("drg", "dip")
#: the prefix given to an input column whose name an output column takes
RENAMED_PREFIX = "input_"

#: per executor process: (kind, SHA-256) → the loaded scheme / catalogue / code set
_LOADED: dict[tuple[str, str], object] = {}


def result_schema(method: str = "drg") -> pa.Schema:
    """The result columns of a method, with their Arrow types, in output order."""
    if method == "drg":
        from drgdip.grouper.drg.api import OUTPUT_COLUMNS
        return pa.schema([(n, pa.string()) for n in OUTPUT_COLUMNS])
    if method == "dip":
        from drgdip.grouper.dip.api import output_schema as dip_schema
        return dip_schema()
    raise InputError(f"method {method!r}: use one of {', '.join(METHODS)}")


def clashing_columns(names, method: str = "drg") -> dict[str, str]:
    """Input column → the name it is given because an output column has its name."""
    taken = set(result_schema(method).names)
    out = {}
    for n in names:
        if n in taken:
            new = RENAMED_PREFIX + n
            while new in names or new in taken:
                new = RENAMED_PREFIX + new
            out[n] = new
    return out


def written_columns(names: list[str], keep=None) -> list[str]:
    """The input columns written before the results: the key (``id`` or its alias), then ``keep``
    (``"all"``: every column). Without a key column and nothing kept: InputError."""
    if isinstance(keep, str):
        keep = [keep]
    keep = list(keep or [])
    if "all" in keep:
        return list(names)
    missing = [k for k in keep if k not in names]
    if missing:
        raise InputError(f"keep {', '.join(missing)}: no such input column (columns: {', '.join(names[:30])})")
    key = canonical_columns(pa.schema([(n, pa.null()) for n in names])).get("id")
    if key is None and not keep:
        raise InputError("the records have no id column (结算ID, setl_id or an alias): Spark keeps no file order, "
                         "so every output row needs the record's key; add one, or pass keep=[...] or keep='all'")
    return ([key] if key else []) + [n for n in names if n in keep and n != key]


def output_schema(input_schema, method: str = "drg", keep=None, *, columns: list[str] | None = None):
    """The output schema of grouping records of ``input_schema``: the written input columns
    (:func:`written_columns` of ``keep``, after renaming clashes; or exactly ``columns``) with
    their types, then the result columns.

    ``input_schema``: a ``pyarrow.Schema`` (returns one) or a Spark ``StructType`` (returns a
    ``StructType``, ready for ``mapInArrow``)."""
    arrow = isinstance(input_schema, pa.Schema)
    if not arrow:
        from pyspark.sql.pandas.types import from_arrow_type
        from pyspark.sql.types import StructField, StructType
    items = [(f.name, f.type if arrow else f.dataType, f.nullable) for f in (input_schema if arrow else input_schema.fields)]
    renamed = clashing_columns([n for n, _, _ in items], method)
    by_name = {renamed.get(n, n): (renamed.get(n, n), t, nl) for n, t, nl in items}
    write = columns if columns is not None else written_columns(list(by_name), keep)
    missing = [c for c in write if c not in by_name]
    if missing:
        raise InputError(f"no such input column: {', '.join(missing)}")
    if arrow:
        return pa.schema([pa.field(*by_name[n]) for n in write] + list(result_schema(method)))
    return StructType([StructField(*by_name[n]) for n in write] +
                      [StructField(f.name, from_arrow_type(f.type), True) for f in result_schema(method)])


# ---------------------------------------------------------------- what the executors run

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load(kind: str, digest: str, data: bytes):
    """The object behind ``data``, loaded once per process (keyed by kind and SHA-256)."""
    key = (kind, digest)
    hit = _LOADED.get(key)
    if hit is None:
        if kind == "scheme":
            from drgdip.grouper.drg.scheme import Scheme
            hit = Scheme.load(io.BytesIO(data))
        elif kind == "catalog":
            import pyarrow.ipc as ipc

            from drgdip.grouper.dip.api import prepare_catalog
            hit = prepare_catalog(ipc.open_stream(pa.py_buffer(data)).read_all())
        else:
            hit = pickle.loads(data)        # the code set (CodeSet), pickled by the driver
        _LOADED[key] = hit
    return hit


class BatchGrouper:
    """The picklable per-batch function behind :func:`group_dataframe` (``mapInArrow``).

    ``BatchGrouper(scheme=..., method="drg", codes=None, catalog=None, write=[...], threads=1)``;
    called with an iterator of record batches it yields the grouped batches, each with the
    ``write`` input columns then the result columns, cast to :attr:`schema`. What it needs is
    held as bytes with their SHA-256 and loaded once per executor process (:data:`_LOADED`)."""

    def __init__(self, scheme=None, *, method: str = "drg", codes=None, catalog=None, write=None,
                 threads: int | None = 1, input_schema: pa.Schema | None = None):
        if method not in METHODS:
            raise InputError(f"method {method!r}: use one of {', '.join(METHODS)}")
        self.method = method
        self.threads = threads
        self.write = list(write) if write is not None else None
        self.scheme_bytes = self.catalog_bytes = self.codes_bytes = None
        if method == "drg":
            from drgdip.grouper.drg.api import load_scheme
            self.scheme_bytes = load_scheme(scheme).to_bytes()
            if codes is not None:
                from drgdip.grouper.drg.api import load_codes
                self.codes_bytes = pickle.dumps(load_codes(codes) if isinstance(codes, (str, os.PathLike)) else codes,
                                                protocol=pickle.HIGHEST_PROTOCOL)
        else:
            if catalog is None:
                raise InputError("DIP grouping needs a catalogue (catalog=path or table; see drgdip dip build)")
            from drgdip.grouper.dip.api import load_catalog
            table = load_catalog(catalog)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            self.catalog_bytes = sink.getvalue().to_pybytes()
        self.digests = {k: _sha(v) for k, v in (("scheme", self.scheme_bytes), ("catalog", self.catalog_bytes),
                                                 ("codes", self.codes_bytes)) if v is not None}
        self.schema = (output_schema(input_schema, method, columns=self.write)
                       if input_schema is not None and self.write is not None else None)

    @property
    def key(self) -> str:
        """SHA-256 of what this grouper groups with (scheme or catalogue, and code set)."""
        return _sha("|".join(f"{k}={v}" for k, v in sorted(self.digests.items())).encode())

    def _grouper(self):
        if self.method == "dip":
            return _load("catalog", self.digests["catalog"], self.catalog_bytes)
        key = ("grouper", self.key + f"/{self.threads}")
        g = _LOADED.get(key)
        if g is None:
            from drgdip.grouper.drg.api import Grouper
            scheme = _load("scheme", self.digests["scheme"], self.scheme_bytes)
            codes = _load("codes", self.digests["codes"], self.codes_bytes) if self.codes_bytes else None
            g = _LOADED[key] = Grouper(scheme, codes, threads=self.threads)
        return g

    def group(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """One batch grouped (the written columns, then the results)."""
        write = self.write if self.write is not None else batch.schema.names
        if self.method == "drg":
            g = self._grouper()
            out = g.group_batch(batch, columns=write)
        else:
            from drgdip.grouper.dip.api import group_dip
            from drgdip.grouper.drg import kernel
            kernel.set_threads(self.threads)
            t = group_dip(pa.Table.from_batches([batch]), self._grouper())
            t = t.select(write + list(result_schema("dip").names)).combine_chunks()
            out = t.to_batches()[0] if t.num_rows else pa.RecordBatch.from_pylist([], schema=t.schema)
        schema = self.schema or out.schema
        if out.schema.equals(schema):
            return out
        return pa.RecordBatch.from_arrays([out.column(i).cast(f.type) for i, f in enumerate(schema)], schema=schema)

    def __call__(self, batches):
        for batch in batches:
            if batch.num_rows:
                yield self.group(batch)


def warm(scheme=None, codes=None, catalog=None, threads: int | None = 1) -> dict[str, int]:
    """Compile every kernel variant grouping can run into numba's cache: from batches built in
    memory (writable buffers) and from batches read back from an Arrow IPC stream (read-only
    buffers, as Spark hands them to Python). ``catalog`` given: the DIP kernels too. Returns the
    number of compiled signatures per kernel."""
    from drgdip.grouper import tokens
    from drgdip.grouper.dip import match as dip_match
    from drgdip.grouper.drg import kernel
    sample = pa.RecordBatch.from_pylist([
        {"id": "w1", "sex": "1", "age": 60, "age_days": None, "birth_weight_g": None, "los_days": 5,
         "diagnoses": "I21.000|E11.900", "procedures": "36.0600"},
        {"id": "w2", "sex": "2", "age": 0, "age_days": 3, "birth_weight_g": 3200, "los_days": 2,
         "diagnoses": "P07.100", "procedures": None}],
        schema=pa.schema([("id", pa.string()), ("sex", pa.string()), ("age", pa.int64()), ("age_days", pa.int64()),
                          ("birth_weight_g", pa.int64()), ("los_days", pa.int64()), ("diagnoses", pa.string()),
                          ("procedures", pa.string())]))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, sample.schema) as w:
        w.write_batch(sample)
    read_only = pa.ipc.open_stream(sink.getvalue()).read_next_batch()
    # through a Table: RecordBatch.cast is pyarrow >= 16
    double = pa.Table.from_batches([sample]).cast(pa.schema(
        [(f.name, pa.float64() if pa.types.is_integer(f.type) else f.type) for f in sample.schema])).to_batches()[0]
    groupers = [BatchGrouper(scheme, codes=codes, threads=threads, write=["id"])]
    if catalog is not None:
        groupers.append(BatchGrouper(method="dip", catalog=catalog, threads=threads, write=["id"]))
    for g in groupers:
        for b in (sample, read_only, double):
            g.group(b)
            g.group(b.slice(0, 0)) if g.method == "drg" else None
    out = {}
    for mod in (kernel, tokens, dip_match):
        for name in dir(mod):
            f = getattr(mod, name)
            if hasattr(f, "signatures") and getattr(f, "__module__", "") == mod.__name__:
                out[f"{mod.__name__.removeprefix('drgdip.grouper.')}.{name}"] = len(f.signatures)
    return out


# ---------------------------------------------------------------- the Spark side

def group_dataframe(df, scheme=None, *, method: str = "drg", catalog=None, codes=None, keep=None,
                    threads: int | None = 1):
    """Group a Spark DataFrame of discharge records; returns a DataFrame with the key column,
    the ``keep`` columns (``"all"``: every input column) and the result columns.

    ``method="drg"``: ``scheme`` (a ``.drgscheme`` file, a folder of published tables, a
    ``Scheme`` or None for the teaching scheme), optional ``codes`` (code-set folder or
    ``CodeSet``); results ``mdc, adrg, drg, status, reason``. ``method="dip"``: ``catalog``
    (a catalogue file or table); results the ``dip_*`` columns of
    :func:`drgdip.grouper.dip.api.group_dip`. ``threads``: kernel threads per Spark task.

    Input columns named like result columns are renamed ``input_<name>`` (a warning says so)."""
    renamed = clashing_columns(df.columns, method)
    if renamed:
        warnings.warn("input column(s) named like output columns renamed: "
                      + ", ".join(f"{a} -> {b}" for a, b in renamed.items()), stacklevel=2)
        for a, b in renamed.items():
            df = df.withColumnRenamed(a, b)
    names = list(df.columns)
    write = written_columns(names, keep)
    from pyspark.sql.pandas.types import to_arrow_schema
    arrow_in = to_arrow_schema(df.schema)
    fn = BatchGrouper(scheme, method=method, codes=codes, catalog=catalog, write=write, threads=threads,
                      input_schema=arrow_in)
    return df.mapInArrow(fn, output_schema(df.schema, method, columns=write))


# ---------------------------------------------------------------- settlement: map on Spark, reduce exactly

#: the Arrow types of the columns price_cases adds (weights.settlement.points.PRICE_COLUMNS)
PRICE_TYPES = {"fund_key": pa.string(), "weight": pa.float64(), "group_mean_cost": pa.float64(),
               "cost_ratio": pa.float64(), "coefficient": pa.float64(), "base_points": pa.float64(),
               "case_type": pa.string(), "pricing_reason": pa.string(), "payment_method": pa.string(),
               "points": pa.float64()}
#: the record roles a settlement reads (weights.settlement.settle.settle_period and runs.check_priced)
SETTLE_ROLES = ("id", "hospital_id", "fund", "total_cost", "personal_share", "discharge_date", "los_days")


class BatchPricer:
    """The picklable map step of :func:`settle_dataframe`: ``price_cases`` on each batch, keeping
    only the columns the settlement reads. Correct per batch only when no case depends on
    another: the policy's group means come from the weight table (``group_mean = "table"``) and
    every settlement id is unique within what it is given (duplicates are priced together on
    the driver)."""

    def __init__(self, weights: pa.Table, policy, period: str, group_column: str, columns: list[str]):
        self.policy = policy
        self.period = period
        self.group_column = group_column
        self.columns = list(columns)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, weights.schema) as w:
            w.write_table(weights)
        self.weights_bytes = sink.getvalue().to_pybytes()
        self.digest = _sha(self.weights_bytes)

    def price(self, table: pa.Table) -> pa.Table:
        from drgdip.weights.settlement.points import price_cases
        key = ("weights", self.digest)
        weights = _LOADED.get(key)
        if weights is None:
            weights = _LOADED[key] = pa.ipc.open_stream(pa.py_buffer(self.weights_bytes)).read_all()
        priced = price_cases(table, weights, self.policy, group_column=self.group_column, period=self.period)
        return priced.select(self.columns + list(PRICE_TYPES)).cast(
            pa.schema([priced.schema.field(c) for c in self.columns] + [(k, t) for k, t in PRICE_TYPES.items()]))

    def __call__(self, batches):
        for batch in batches:
            if batch.num_rows:
                yield from self.price(pa.Table.from_batches([batch])).to_batches()


def settle_dataframe(df, weights, policy, period: str, *, group_column: str = "drg", order_by: str | None = None):
    """Monthly pre-settlement (月度预结算) of a Spark DataFrame of grouped records: the same
    :class:`~drgdip.weights.settlement.settle.Settlement`, to the cent, as ``drgdip settle`` on one
    machine gives for the same records in ``order_by`` order (default: the id column).

    Map (Spark): each batch priced by ``price_cases``; records whose settlement id occurs more
    than once are priced together on the driver, so they are all found (DUPLICATE_SETTLEMENT_ID).
    Reduce (driver): the priced rows, only the columns the settlement reads, sorted by the
    explicit row key (Spark has no file order and largest-remainder rounding gives ties to the
    earlier row), go through ``settle_period``, whose sums are exact (integer cents and exact
    point totals), so the result does not depend on how Spark split the work.

    ``weights``: a weight-table file or table (``drg, weight, mean_cost``); ``policy``: a policy
    file or ``Policy``. Refused: ``deviation.group_mean = "period"`` (each case's ratio needs the
    mean over the whole period; settle on one machine), ``readmission.days`` > 0 (readmissions
    pair stays across the file), and records without an id column."""
    from drgdip.weights.relative_weights import read_weight_table
    from drgdip.weights.settlement.policy import load_policy
    from drgdip.weights.settlement.settle import settle_period
    pol = policy if not isinstance(policy, (str, os.PathLike)) else load_policy(policy)
    if pol.deviation.group_mean == "period":
        raise InputError(f"{pol.path or 'policy'}: deviation.group_mean = \"period\" makes every case depend on "
                         "the whole period's group means; settle_dataframe prices batch by batch and needs "
                         "group_mean = \"table\" (or settle on one machine with drgdip settle)")
    srv = pol.special_review
    if srv.quota_share < 1.0 or srv.hospital_quota_share < 1.0 or srv.min_group_cases > 0:
        raise InputError(f"{pol.path or 'policy'}: special_review's quota or min_group_cases makes a case depend on "
                         "the whole period; settle_dataframe prices batch by batch (settle on one machine with "
                         "drgdip settle)")
    if pol.readmission.days > 0:
        raise InputError(f"{pol.path or 'policy'}: readmission.days = {pol.readmission.days} pairs stays across the "
                         "whole file; settle_dataframe prices batch by batch and does not find them: set "
                         "readmission.days = 0 (or settle on one machine with drgdip settle)")
    table = weights if isinstance(weights, pa.Table) else read_weight_table(weights, group_column)
    names = list(df.columns)
    roles = canonical_columns(pa.schema([(n, pa.null()) for n in names]))
    if "id" not in roles:
        raise InputError("the records have no id column (结算ID, setl_id or an alias): a settlement on Spark needs "
                         "each record's key, to find duplicates and to order the rounding")
    key = order_by or roles["id"]
    if key not in names:
        raise InputError(f"order_by {key!r}: no such column")
    needed = {roles[r] for r in SETTLE_ROLES if r in roles} | {key, group_column}
    if "status" in names:
        needed.add("status")
    sr = pol.special_review.flag_column
    if sr in names:
        needed.add(sr)
    wards = pol.per_diem.wards              # per-diem wards read the department and the diagnoses
    for role, used in (("dept", any(w.departments for w in wards)),
                       ("diagnoses", any(w.diagnosis_prefixes for w in wards))):
        if used and role in roles:
            needed.add(roles[role])
    cols = [n for n in names if n in needed]
    from pyspark.sql import functions as F
    df = df.select(*cols)
    dup_ids = df.groupBy(roles["id"]).count().filter(F.col("count") > 1).select(roles["id"])
    single = df.join(dup_ids, on=roles["id"], how="left_anti")
    repeated = df.join(dup_ids, on=roles["id"], how="left_semi")
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
    arrow_in = to_arrow_schema(df.select(*cols).schema)
    out_schema = pa.schema([arrow_in.field(c) for c in cols] + [(k, t) for k, t in PRICE_TYPES.items()])
    pricer = BatchPricer(table, pol, period, group_column, cols)
    mapped = single.select(*cols).mapInArrow(pricer, from_arrow_schema(out_schema))
    parts = [_to_arrow(mapped, out_schema)]
    rep = _to_arrow(repeated.select(*cols), arrow_in)
    if rep.num_rows:
        parts.append(pricer.price(rep).cast(out_schema))
    priced = pa.concat_tables(parts).sort_by([(key, "ascending")])
    return settle_period(priced, pol, period, group_column=group_column)


def _to_arrow(df, schema: pa.Schema) -> pa.Table:
    """A DataFrame collected to the driver as an Arrow table of ``schema``."""
    if hasattr(df, "toArrow"):                     # pyspark >= 4.0
        t = df.toArrow()
    else:                                          # pragma: no cover - pyspark 3.5
        t = pa.Table.from_pandas(df.toPandas(), preserve_index=False)
    if t.num_rows == 0:
        return schema.empty_table()
    return t.select(schema.names).cast(schema)
