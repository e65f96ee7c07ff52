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

- :func:`settle_dataframe`: monthly pre-settlement (月度预结算): what couples cases (duplicate
  ids, the period's group counts and means, the special-review quota, readmissions) computed
  first with Spark operations, then map (``price_cases`` per batch on Spark, :class:`BatchPricer`)
  and reduce (``settle_period`` on the driver over the priced rows in file order), equal to the
  cent to ``drgdip settle`` (docs/spark.md "What couples cases").

Spark has no file order: the records need a key column (``id`` or an alias such as
``setl_id``), which is written first, as :func:`drgdip.grouper.drg.api.group_file` does.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings

import numpy as np

from drgdip.grouper.drg.kernel import ensure_cache_dir

ensure_cache_dir()

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

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

#: the Arrow types of the columns price_cases adds (weights.settlement.points.PRICE_COLUMNS);
#: ``readmission_of`` too when the policy pairs readmissions
PRICE_TYPES = {"fund_key": pa.string(), "weight": pa.float64(), "group_mean_cost": pa.float64(),
               "cost_ratio": pa.float64(), "coefficient": pa.float64(), "base_points": pa.float64(),
               "case_type": pa.string(), "pricing_reason": pa.string(), "payment_method": pa.string(),
               "points": pa.float64(), "review_trigger": pa.string(), "review_status": pa.string()}
#: the record roles a settlement reads (weights.settlement.settle.settle_period and runs.check_priced)
SETTLE_ROLES = ("id", "hospital_id", "fund", "total_cost", "personal_share", "discharge_date", "los_days")
#: the row number carried through every step of settle_dataframe: the file order among equal order keys
ROW = "_drgdip_row"
#: the order key's name in the small tables the passes return
KEY = "_drgdip_key"


def _no_readmissions(n: int) -> pa.Table:
    """Readmission flags saying no pair (a pass whose outputs do not depend on them)."""
    return pa.table({"readmission_of": pa.nulls(n, pa.string()), "has_readmission": pa.array(np.zeros(n, bool))})


class BatchPricer:
    """The picklable map step of :func:`settle_dataframe`: ``price_cases`` on each batch, keeping
    only the settlement's columns (``columns``, then the price columns).

    What couples a case to others is computed before, by Spark, and handed over in ``context``
    (a dict, or a Spark ``Broadcast`` of one): ``duplicate_ids`` (settlement ids repeated in the
    DataFrame), ``group_counts`` / ``group_means`` (per weight-table row, over the whole
    period), ``accepted`` (the sorted row numbers :data:`ROW` accepted within the special-review
    quota). With ``readmissions``, a call receives all of a patient's stays (the DataFrame is
    partitioned by patient): the partition is ordered by (``order_key``, :data:`ROW`) and its
    readmissions paired by :func:`weights.settlement.readmission.detect_table` before pricing."""

    def __init__(self, weights: pa.Table, policy, period: str, group_column: str, columns: list[str], *,
                 order_key: str | None = None, context=None, readmissions: bool = False):
        self.policy = policy
        self.period = period
        self.group_column = group_column
        self.columns = list(columns)
        self.order_key = order_key
        self.context = context
        self.readmissions = readmissions
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, weights.schema) as w:
            w.write_table(weights)
        self.weights_bytes = sink.getvalue().to_pybytes()
        self.digest = _sha(self.weights_bytes)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_cache", None)
        return state

    def facts(self) -> dict:
        c = self.context
        if c is None:
            return {}
        return c.value if hasattr(c, "value") and not isinstance(c, dict) else c

    def _cached(self, name: str, make):
        cache = self.__dict__.setdefault("_cache", {})
        if name not in cache:
            cache[name] = make()
        return cache[name]

    def weights(self) -> pa.Table:
        key = ("weights", self.digest)
        weights = _LOADED.get(key)
        if weights is None:
            weights = _LOADED[key] = pa.ipc.open_stream(pa.py_buffer(self.weights_bytes)).read_all()
        return weights

    def duplicate_ids(self) -> pa.Array | None:
        ids = self.facts().get("duplicate_ids")
        return None if ids is None else self._cached("dups", lambda: pa.array(list(ids), pa.string()))

    def review(self, table: pa.Table, accept_all: bool = False):
        """The special-review context of a table: the period's group counts, and the quota's
        verdict for its rows (``accept_all``: every candidate accepted, for the quota pass)."""
        from drgdip.weights.settlement.special_review import ReviewContext
        f = self.facts()
        accepted = None
        if accept_all:
            accepted = np.ones(table.num_rows, bool)
        elif f.get("accepted") is not None:
            rows = table[ROW].to_numpy(zero_copy_only=False)
            accepted = np.isin(rows, f["accepted"])
        return ReviewContext(group_counts=f.get("group_counts"), accepted=accepted)

    def price_cases(self, table: pa.Table, review, readmissions) -> pa.Table:
        from drgdip.weights.settlement.points import price_cases
        return price_cases(table, self.weights(), self.policy, group_column=self.group_column, period=self.period,
                           duplicate_ids=self.duplicate_ids(), group_means=self.facts().get("group_means"),
                           review=review, readmissions=readmissions)

    def price_types(self) -> dict:
        out = dict(PRICE_TYPES)
        if self.policy.readmission.days > 0:
            out["readmission_of"] = pa.string()
        return out

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        return pa.schema([input_schema.field(c) for c in self.columns] + list(self.price_types().items()))

    def price(self, table: pa.Table, readmissions: pa.Table | None = None) -> pa.Table:
        priced = self.price_cases(table, self.review(table), readmissions)
        types = self.price_types()
        return priced.select(self.columns + list(types)).cast(
            pa.schema([priced.schema.field(c) for c in self.columns] + list(types.items())))

    def __call__(self, batches):
        if not self.readmissions:
            for batch in batches:
                if batch.num_rows:
                    yield from self.price(pa.Table.from_batches([batch])).to_batches()
            return
        from drgdip.weights.settlement.readmission import detect_table
        parts = [b for b in batches if b.num_rows]
        if not parts:
            return
        step = max(b.num_rows for b in parts)
        table = pa.Table.from_batches(parts).sort_by([(self.order_key, "ascending"), (ROW, "ascending")])
        flags = detect_table(table, self.policy, self.group_column, self.duplicate_ids())
        for off in range(0, table.num_rows, step):
            n = min(step, table.num_rows - off)
            yield from self.price(table.slice(off, n), flags.slice(off, n)).to_batches()


class GroupCosts:
    """Map step of the group pass: per priceable record its weight-table row and cost
    (:func:`weights.settlement.points.group_cost_rows`), with its order key and row number."""

    def __init__(self, pricer: BatchPricer):
        self.pricer = pricer

    def schema(self, key_type: pa.DataType) -> pa.Schema:
        return pa.schema([("gidx", pa.int64()), ("cost", pa.float64()), (KEY, key_type), (ROW, pa.int64())])

    def __call__(self, batches):
        from drgdip.weights.settlement.points import group_cost_rows
        p = self.pricer
        for batch in batches:
            if not batch.num_rows:
                continue
            t = pa.Table.from_batches([batch])
            gi, cost = group_cost_rows(t, p.weights(), p.policy, p.group_column, period=p.period,
                                       duplicate_ids=p.duplicate_ids())
            keep = pa.array(np.flatnonzero(gi >= 0))
            yield pa.RecordBatch.from_arrays(
                [pa.array(gi[keep.to_numpy()], pa.int64()), pa.array(cost[keep.to_numpy()], pa.float64()),
                 t[p.order_key].take(keep).combine_chunks(), t[ROW].take(keep).combine_chunks()],
                names=["gidx", "cost", KEY, ROW])


def fold_group_costs(table: pa.Table) -> pa.Table:
    """One weight-table row's priceable cases → (gidx, cost_sum, cases): the costs added one at
    a time in file order (order key, then row number), the float sum ``drgdip settle`` gets by
    adding them batch after batch (``np.add.at``; ``np.cumsum`` adds in the same order)."""
    t = table.sort_by([(KEY, "ascending"), (ROW, "ascending")])
    cost = t["cost"].to_numpy()
    total = float(np.cumsum(cost)[-1]) if cost.size else 0.0
    gidx = t["gidx"][0].as_py() if t.num_rows else -1
    return pa.table({"gidx": pa.array([gidx], pa.int64()), "cost_sum": pa.array([total], pa.float64()),
                     "cases": pa.array([t.num_rows], pa.int64())})


class QuotaFacts:
    """Map step of the quota pass (as ``runs._quota_pass`` does per batch): each batch priced
    with every candidate accepted; out come per hospital its reviewable cases (the quota's base:
    a cost ratio, or ungroupable under review) and each candidate's hospital, cost ratio,
    settlement id, order key and row number."""

    def __init__(self, pricer: BatchPricer):
        self.pricer = pricer

    def schema(self, key_type: pa.DataType) -> pa.Schema:
        return pa.schema([("hospital", pa.string()), ("reviewable", pa.int64()), ("candidate", pa.bool_()),
                          (ROW, pa.int64()), (KEY, key_type), ("ratio", pa.float64()), ("sid", pa.string())])

    def __call__(self, batches):
        from drgdip.weights.settlement import special_review as review_mod
        p = self.pricer
        for batch in batches:
            if not batch.num_rows:
                continue
            t = pa.Table.from_batches([batch])
            n = t.num_rows
            flags = _no_readmissions(n) if p.policy.readmission.days > 0 else None
            priced = p.price_cases(t, p.review(t, accept_all=True), flags)
            hnames, hcode, ids = review_mod.quota_keys(priced)
            trig = priced["review_trigger"]
            eligible = review_mod.quota_base(priced)
            cand = np.flatnonzero(pc.is_valid(trig).to_numpy(zero_copy_only=False))
            base = np.bincount(hcode[eligible], minlength=len(hnames))
            ratio = pc.fill_null(priced["cost_ratio"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
            k, c = len(hnames), cand.size
            take = pa.array(cand, pa.int64())
            yield pa.RecordBatch.from_arrays([
                pa.array(list(hnames) + [hnames[i] for i in hcode[cand].tolist()], pa.string()),
                pa.array(np.concatenate([base, np.zeros(c, np.int64)]), pa.int64()),
                pa.array([False] * k + [True] * c, pa.bool_()),
                pa.concat_arrays([pa.nulls(k, pa.int64()), t[ROW].take(take).combine_chunks().cast(pa.int64())]),
                pa.concat_arrays([pa.nulls(k, t[p.order_key].type), t[p.order_key].take(take).combine_chunks()]),
                pa.array(np.concatenate([np.full(k, np.nan), ratio[cand]]), pa.float64()),
                pa.array([None] * k + [str(v) for v in ids[cand].tolist()], pa.string())],
                names=["hospital", "reviewable", "candidate", ROW, KEY, "ratio", "sid"])


def accepted_rows(facts: pa.Table, policy) -> np.ndarray:
    """The row numbers accepted within the special-review quota (sorted), from the quota pass's
    rows: :func:`weights.settlement.special_review.fill_quota` once over the candidates in
    file order (order key, then row number), as ``drgdip settle`` runs it over the file."""
    from drgdip.weights.settlement.special_review import fill_quota
    counts = facts.filter(pc.invert(facts["candidate"])).group_by("hospital").aggregate([("reviewable", "sum")])
    names = {h: i for i, h in enumerate(counts["hospital"].to_pylist())}
    cand = facts.filter(facts["candidate"]).sort_by([(KEY, "ascending"), (ROW, "ascending")])
    for h in cand["hospital"].to_pylist():
        names.setdefault(h, len(names))
    base = np.zeros(len(names), np.int64)
    base[:counts.num_rows] = counts["reviewable_sum"].to_numpy(zero_copy_only=False)
    hcode = np.array([names[h] for h in cand["hospital"].to_pylist()], np.int64)
    ratio = pc.fill_null(cand["ratio"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    ids = np.asarray(cand["sid"].to_pylist(), dtype=object)
    sr = policy.special_review
    ok = fill_quota(hcode, ratio, ids, base, int(base.sum()), sr.quota_share, sr.hospital_quota_share)
    return np.sort(cand[ROW].to_numpy(zero_copy_only=False)[ok])


def _text_expr(field):
    """A Spark column as ``arrowio.text`` reads it (trimmed of Unicode white space, empty → null;
    a floating column rounded half to even first): the settlement's ids and patients compare so."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType
    c = F.col(f"`{field.name}`")
    if isinstance(field.dataType, (DoubleType, FloatType)):
        c = F.bround(c).cast("bigint")
    s = F.regexp_replace(c.cast("string"), r"(?U)^\s+|\s+$", "")
    return F.when(s == "", F.lit(None)).otherwise(s)


def _share(df, facts: dict):
    """The facts as a Spark broadcast (each executor fetches them once), or as they are when the
    session has no SparkContext (Spark Connect)."""
    try:
        return df.sparkSession.sparkContext.broadcast(dict(facts))
    except Exception:                              # pragma: no cover - Spark Connect
        return dict(facts)


def settle_dataframe(df, weights, policy, period: str, *, group_column: str = "drg", order_by: str | None = None):
    """Monthly pre-settlement (月度预结算) of a Spark DataFrame of grouped records: the same
    :class:`~drgdip.weights.settlement.settle.Settlement`, to the cent, as ``drgdip settle`` on one
    machine gives for the same records in ``order_by`` order (default: the id column).

    What couples cases is computed first, with Spark (docs/spark.md "What couples cases"):
    settlement ids repeated in the DataFrame (a ``groupBy``); with ``deviation.group_mean =
    "period"`` or ``special_review.min_group_cases`` each group's cases and cost sum (a
    ``groupBy`` of the priceable cases, each group's costs added in file order); with a
    special-review quota the candidates and each hospital's reviewable cases (collected, the
    quota filled once on the driver by ``special_review.fill_quota``). These small tables are
    broadcast to :class:`BatchPricer`, which prices each batch (``price_cases``); with
    ``readmission.days`` > 0 the records are first partitioned by patient, so each patient's
    stays are paired in one task. Reduce (driver): the priced rows, only the columns the
    settlement reads, sorted by (``order_by``, row number), go through ``settle_period``,
    whose sums are exact.

    File order: rows are ordered by ``order_by`` (nulls last), ties by a row number from
    ``monotonically_increasing_id`` taken once (the DataFrame is persisted for the passes); it
    follows the DataFrame's partitions, so give a unique ``order_by`` when ties must not
    depend on how the input was split.

    ``weights``: a weight-table file or table (``drg, weight, mean_cost``); ``policy``: a policy
    file or ``Policy``. Refused: records without an id column."""
    from drgdip.weights.relative_weights import read_weight_table
    from drgdip.weights.settlement import special_review as review_mod
    from drgdip.weights.settlement.policy import load_policy
    from drgdip.weights.settlement.settle import settle_period
    pol = policy if not isinstance(policy, (str, os.PathLike)) else load_policy(policy)
    table = weights if isinstance(weights, pa.Table) else read_weight_table(weights, group_column)
    names = list(df.columns)
    roles = canonical_columns(pa.schema([(n, pa.null()) for n in names]))
    if "id" not in roles:
        raise InputError("the records have no id column (结算ID, setl_id or an alias): a settlement on Spark needs "
                         "each record's key, to find duplicates and to order the rounding")
    key = order_by or roles["id"]
    if key not in names:
        raise InputError(f"order_by {key!r}: no such column")
    for reserved in (ROW, KEY):
        if reserved in names:
            raise InputError(f"the records have a column {reserved!r}: settle_dataframe numbers the rows under that "
                             "name; rename it")
    sr, rp = pol.special_review, pol.readmission
    if rp.days > 0:
        from drgdip.weights.settlement.readmission import check_columns
        check_columns(names, pol)
    needed = {roles[r] for r in SETTLE_ROLES if r in roles} | {key, group_column}
    if "status" in names:
        needed.add("status")
    if sr.flag_column in names:
        needed.add(sr.flag_column)
    wards = pol.per_diem.wards              # per-diem wards read the department and the diagnoses
    for role, used in (("dept", any(w.departments for w in wards)),
                       ("diagnoses", any(w.diagnosis_prefixes for w in wards))):
        if used and role in roles:
            needed.add(roles[role])
    cols = [n for n in names if n in needed] + [ROW]
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
    df = df.withColumn(ROW, F.monotonically_increasing_id()).persist(StorageLevel.MEMORY_AND_DISK)
    shared = []
    try:
        arrow_in = to_arrow_schema(df.schema)
        key_type = arrow_in.field(key).type
        facts: dict = {}
        ids = df.select(_text_expr(df.schema[roles["id"]]).alias("sid")).filter(F.col("sid").isNotNull())
        dups = ids.groupBy("sid").count().filter(F.col("count") > 1).select("sid")
        facts["duplicate_ids"] = _to_arrow(dups, pa.schema([("sid", pa.string())]))["sid"].to_pylist()
        pricer = BatchPricer(table, pol, period, group_column, cols, order_key=key,
                             readmissions=rp.days > 0)

        def share():
            pricer.context = _share(df, facts)
            shared.append(pricer.context)

        if pol.deviation.group_mean == "period" or review_mod.needs_group_counts(sr):
            share()
            step = GroupCosts(pricer)
            rows = df.mapInArrow(step, from_arrow_schema(step.schema(key_type)))
            per_group = rows.groupBy("gidx").applyInArrow(fold_group_costs, "gidx long, cost_sum double, cases long")
            got = _to_arrow(per_group, pa.schema([("gidx", pa.int64()), ("cost_sum", pa.float64()),
                                                  ("cases", pa.int64())]))
            k = table.num_rows
            sums, counts = np.zeros(k, np.float64), np.zeros(k, np.int64)
            gidx = got["gidx"].to_numpy(zero_copy_only=False)
            sums[gidx] = got["cost_sum"].to_numpy(zero_copy_only=False)
            counts[gidx] = got["cases"].to_numpy(zero_copy_only=False)
            facts["group_counts"] = counts
            if pol.deviation.group_mean != "table":
                with np.errstate(invalid="ignore", divide="ignore"):
                    facts["group_means"] = sums / counts
        if review_mod.quota_active(sr):
            share()
            step = QuotaFacts(pricer)
            schema = step.schema(key_type)
            facts["accepted"] = accepted_rows(_to_arrow(df.mapInArrow(step, from_arrow_schema(schema)), schema), pol)
        share()
        source = df
        if rp.days > 0:                        # each patient's stays in one task
            by = [_text_expr(df.schema[roles["patient_id"]])]
            if rp.same_hospital:
                by.append(_text_expr(df.schema[roles["hospital_id"]]))
            source = df.repartition(*by)
        out_schema = pricer.output_schema(arrow_in)
        mapped = source.mapInArrow(pricer, from_arrow_schema(out_schema))
        priced = _to_arrow(mapped, out_schema).sort_by([(key, "ascending"), (ROW, "ascending")])
    finally:
        for b in shared:
            if hasattr(b, "unpersist"):
                b.unpersist()
        df.unpersist()
    return settle_period(priced.drop_columns([ROW]), pol, period, group_column=group_column)


def _to_arrow(df, schema: pa.Schema) -> pa.Table:
    """A DataFrame collected to the driver as an Arrow table of ``schema``."""
    if hasattr(df, "toArrow"):                     # pyspark >= 4.0
        t = df.toArrow()
    else:                                          # pragma: no cover - pyspark 3.5
        t = pa.Table.from_pandas(df.toPandas(), preserve_index=False)
    if t.num_rows == 0:
        return schema.empty_table()
    return t.select(schema.names).cast(schema)
