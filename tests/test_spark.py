"""drgdip.spark: output schema, the picklable per-process batch function, threads, numba's cache
folder, warm(); and in Spark local mode (local[2]) the 1.1 conformance file grouped through
Spark equal, row by row, to the single-machine path (DRG and DIP)."""
from __future__ import annotations

import os
import pickle
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pytest
from dip_example import POLICY, history

from drgdip import spark as S
from drgdip.arrowio import InputError, read_table
from drgdip.grouper.dip.api import group_dip
from drgdip.grouper.drg import kernel
from drgdip.grouper.drg.api import OUTPUT_COLUMNS, group_table, load_scheme
from drgdip.weights.dip_catalog import build_catalog

CASES = ("conformance", "chs-drg-1.1-cases.csv")
SCHEME = ("chs-drg", "CHS_DRG_11")


def records() -> pa.Table:
    return pa.table({"setl_id": ["r1", "r2", "r3"], "sex": ["1", "2", "1"], "age": [60, 35, 70],
                     "los_days": [5, 3, 9], "diagnoses": ["K80.100", "K80.100", "K80.200|I10.x00"],
                     "procedures": ["51.2300", None, "51.2300|99.2100"], "status": ["a", "b", "c"]})


def read_only(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch as Spark hands it to Python: read back from an Arrow IPC stream (read-only buffers)."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return ipc.open_stream(sink.getvalue()).read_next_batch()


@pytest.fixture(autouse=True)
def _numba_threads_restored():
    """BatchGrouper(threads=1) sets this process's kernel threads: later test files get theirs back."""
    import numba
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


# ---------------------------------------------------------------- without Spark

def test_output_schema_key_first_clashes_renamed_and_no_key_refused():
    s = S.output_schema(records().schema)
    assert s.names == ["setl_id", *OUTPUT_COLUMNS]
    assert all(s.field(n).type == pa.string() for n in OUTPUT_COLUMNS)
    s = S.output_schema(records().schema, keep="all")
    assert s.names[:8] == ["setl_id", "sex", "age", "los_days", "diagnoses", "procedures", "input_status", "mdc"]
    assert s.field("age").type == pa.int64()
    assert S.clashing_columns(["drg", "input_drg", "x"]) == {"drg": "input_input_drg"}
    with pytest.raises(InputError, match="no id column"):
        S.output_schema(records().drop_columns(["setl_id"]).schema)
    with pytest.raises(InputError, match="nope"):
        S.output_schema(records().schema, keep=["nope"])


def test_dip_output_schema_is_what_group_dip_returns():
    cat = build_catalog(history(), POLICY)
    out = group_dip(records(), cat)
    want = S.output_schema(records().schema, "dip", keep="all")
    got = out.select([n for n in out.column_names if n.startswith("dip_")]).schema
    assert got.equals(pa.schema(list(want)[-len(got):]))
    assert got.names[0] == "dip_group" and got.field("dip_cci").type == pa.int64()


def test_batch_grouper_pickles_and_loads_the_scheme_once_per_process():
    scheme = load_scheme("teaching")
    fn = S.BatchGrouper(scheme, write=["setl_id"], input_schema=records().schema)
    blob = pickle.dumps(fn)
    # the class is pickled by reference to drgdip.spark (an importable module), the scheme as bytes
    assert b"drgdip.spark" in blob and len(blob) > len(fn.scheme_bytes)
    S._LOADED.clear()
    g1, g2 = pickle.loads(blob), pickle.loads(blob)
    out = list(g1(iter([records().to_batches()[0], read_only(records().to_batches()[0])])))
    out += list(g2(iter([records().slice(0, 0).to_batches()[0] if records().slice(0, 0).num_rows else
                         pa.RecordBatch.from_pylist([], schema=records().schema)])))
    assert len(out) == 2                       # an empty batch yields nothing
    want = group_table(records().drop_columns(["status"]), scheme).select(["setl_id", *OUTPUT_COLUMNS])
    for b in out:
        assert b.schema.equals(fn.schema)
        assert pa.Table.from_batches([b]).equals(want)
    list(g2(iter(records().to_batches())))
    kinds = sorted(k[0] for k in S._LOADED)
    assert kinds == ["grouper", "scheme"]       # the second copy reused the first's scheme
    assert ("scheme", fn.digests["scheme"]) in S._LOADED


def test_dip_batch_grouper_matches_group_dip():
    cat = build_catalog(history(), POLICY)
    fn = pickle.loads(pickle.dumps(S.BatchGrouper(method="dip", catalog=cat, write=["setl_id"],
                                                  input_schema=records().schema)))
    got = pa.Table.from_batches(list(fn(iter(records().to_batches()))))
    want = group_dip(records().drop_columns(["status"]), cat)
    want = want.select(["setl_id"] + [n for n in want.column_names if n.startswith("dip_")])
    assert got.equals(want)
    assert got["dip_group"].to_pylist()[0] is not None


def test_threads_are_set_and_checked():
    assert kernel.set_threads(1) == 1
    with pytest.raises(ValueError, match="threads"):
        kernel.set_threads(0)
    g = S.BatchGrouper("teaching", write=["setl_id"], threads=1)
    g.group(records().to_batches()[0])
    import numba
    assert numba.get_num_threads() == 1


def test_cache_dir_falls_back_to_a_writable_temp_folder(tmp_path, monkeypatch):
    from numba.core import config
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(config, "CACHE_DIR", config.CACHE_DIR)
    monkeypatch.setattr(kernel.tempfile, "tempdir", str(tmp_path))
    # both of numba's own places unusable (a folder cannot be made under a file, even as root)
    got = kernel.ensure_cache_dir(blocker / "pkg", blocker / "home")
    assert got == str(tmp_path / f"drgdip-numba-{os.getuid()}")
    assert os.environ["NUMBA_CACHE_DIR"] == got == config.CACHE_DIR
    assert stat.S_IMODE(os.stat(got).st_mode) == 0o700
    # an explicit NUMBA_CACHE_DIR, or a writable place of numba's own, is left alone
    assert kernel.ensure_cache_dir(blocker / "pkg", blocker / "home") is None
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert kernel.ensure_cache_dir(tmp_path / "pkg", blocker / "home") is None
    assert "NUMBA_CACHE_DIR" not in os.environ


def test_saved_scheme_is_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        load_scheme("teaching").save(tmp_path / "t.drgscheme")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "t.drgscheme").st_mode) == 0o644
    assert load_scheme(tmp_path / "t.drgscheme").drg_codes == load_scheme("teaching").drg_codes


def test_warm_compiles_the_read_only_variants():
    cat = build_catalog(history(), POLICY)
    before = S.warm("teaching", catalog=cat)
    from drgdip.grouper import tokens
    # the string splitter met the Arrow data buffer both writable and read-only (as Spark gives it)
    assert {sig[2].mutable for sig in tokens.tokenize.signatures} == {True, False}
    assert before["drg.kernel.group_batch"] >= 1 and before["dip.match.match_cases"] >= 1
    g = S.BatchGrouper("teaching", write=["setl_id"])
    g.group(read_only(records().drop_columns(["status"]).to_batches()[0]))
    assert S.warm("teaching", catalog=cat) == before  # nothing new to compile


def test_group_costs_are_added_in_file_order():
    # 1 + 1e16 rounds to 1e16: in file order (key, then row number) the sum is 0.0, in the order given 1.0
    t = pa.table({"gidx": [3, 3, 3, 3], "cost": [1e16, -1e16, 1.0, 0.0], S.KEY: ["b", "c", "a", "a"],
                  S.ROW: [0, 1, 9, 2]})
    assert float(np.cumsum(t["cost"].to_numpy())[-1]) == 1.0
    out = S.fold_group_costs(t)
    assert out.to_pylist() == [{"gidx": 3, "cost_sum": 0.0, "cases": 4}]


def test_quota_filled_once_over_every_candidate():
    from types import SimpleNamespace
    pol = SimpleNamespace(special_review=SimpleNamespace(quota_share=0.05, hospital_quota_share=0.1))
    # per hospital reviewable cases, as two batches report them: A 60 + 40, B 40 → caps A 10, B 4, region 7
    base = [("A", 60), ("B", 40), ("A", 40)]
    cand = [("B", 9.0, "b0"), ("B", 8.0, "b1"), ("B", 7.0, "b2"), ("B", 6.0, "b3"), ("B", 5.0, "b5"),
            ("B", 5.0, "b4"), ("A", 6.0, "a1"), ("A", 3.0, "a2"), ("A", 2.0, "a4"), ("A", 2.0, "a3"),
            ("A", None, "a5")]
    rows = ([{"hospital": h, "reviewable": c, "candidate": False, S.ROW: None, S.KEY: None, "ratio": None,
              "sid": None} for h, c in base] +
            [{"hospital": h, "reviewable": 0, "candidate": True, S.ROW: 100 + i, S.KEY: sid, "ratio": r, "sid": sid}
             for i, (h, r, sid) in enumerate(cand)])
    facts = pa.Table.from_pylist(rows, schema=S.QuotaFacts(None).schema(pa.string()))
    got = S.accepted_rows(facts, pol)
    # by ratio, ties by id: b0 b1 b2 a1 b3 | b4 b5 over B's cap | a2 a3 | a4 (after a3 though listed
    # before it) and a5 (no ratio: last) over the region's cap
    want = sorted(100 + i for i, (_, _, sid) in enumerate(cand) if sid in {"b0", "b1", "b2", "b3", "a1", "a2", "a3"})
    assert got.tolist() == want


def test_batch_pricer_reads_a_broadcast_context_and_pickles_without_its_cache():
    from types import SimpleNamespace
    w = pa.table({"drg": ["A"], "weight": [1.0], "mean_cost": [100.0]})
    from pathlib import Path

    from drgdip.weights.settlement.policy import load_policy
    pol = load_policy(Path(__file__).resolve().parents[1] / "examples" / "region.toml")
    p = S.BatchPricer(w, pol, "2026-10", "drg", ["setl_id"], context=SimpleNamespace(value={"duplicate_ids": ["x"]}))
    assert p.duplicate_ids().to_pylist() == ["x"] and "_cache" in p.__dict__
    assert "_cache" not in pickle.loads(pickle.dumps(p)).__dict__
    p.context = {"accepted": np.array([2, 5])}
    ctx = p.review(pa.table({S.ROW: [1, 2, 5, 7]}))
    assert ctx.accepted.tolist() == [False, True, True, False] and ctx.group_counts is None


# ---------------------------------------------------------------- in Spark local mode

@pytest.fixture(scope="module")
def spark():
    pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'drgdip[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java runtime (java on PATH or JAVA_HOME): Spark cannot start")
    from pyspark.sql import SparkSession
    # the Python workers inherit the environment the JVM starts with: one numba thread per task,
    # and numba's cache where this process has it (a writable folder: grouper.drg.kernel.ensure_cache_dir)
    saved = os.environ.get("NUMBA_NUM_THREADS")
    os.environ["NUMBA_NUM_THREADS"] = "1"
    builder = (SparkSession.builder.master("local[2]").appName("drgdip-test")
               .config("spark.sql.shuffle.partitions", "2").config("spark.ui.enabled", "false")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
               .config("spark.executorEnv.NUMBA_NUM_THREADS", "1"))
    if os.environ.get("NUMBA_CACHE_DIR"):
        builder = builder.config("spark.executorEnv.NUMBA_CACHE_DIR", os.environ["NUMBA_CACHE_DIR"])
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    assert pyspark.__version__
    try:
        yield session
    finally:
        session.stop()
        if saved is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = saved


def test_spark_groups_the_conformance_file_like_one_machine(spark):
    from conftest import need_shared
    cases, folder = need_shared(*CASES), need_shared(*SCHEME)
    scheme = load_scheme(folder)
    df = spark.read.csv(str(cases), header=True).repartition(3)
    out = S.group_dataframe(df, scheme, keep=["expected_drg"])
    assert out.columns == ["id", "expected_drg", *OUTPUT_COLUMNS]
    got = pa.Table.from_pandas(out.toPandas(), preserve_index=False).sort_by("id")
    want = group_table(read_table(cases), scheme).select(["id", "expected_drg", *OUTPUT_COLUMNS]).sort_by("id")
    assert got.num_rows == want.num_rows == 40000
    for c in want.column_names:
        assert got[c].to_pylist() == want[c].to_pylist(), c
    assert 0.5 < np.mean(np.array(got["drg"].to_pylist()) == np.array(got["expected_drg"].to_pylist()))


def test_spark_dip_and_clashing_column(spark):
    cat = build_catalog(history(), POLICY)
    t = records()
    df = spark.createDataFrame(t.to_pandas()).withColumnRenamed("status", "dip_status")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = S.group_dataframe(df, method="dip", catalog=cat, keep="all")
    assert any("dip_status -> input_dip_status" in str(w.message) for w in caught)
    assert "input_dip_status" in out.columns and out.columns.count("dip_status") == 1
    got = out.toPandas().sort_values("setl_id")
    want = group_dip(t.drop_columns(["status"]), cat).to_pandas()
    assert got["input_dip_status"].tolist() == ["a", "b", "c"]
    for c in ("dip_group", "dip_status", "dip_reason", "dip_cci"):
        assert got[c].tolist() == want[c].tolist(), c
    np.testing.assert_array_equal(got["dip_adjusted_score"].to_numpy(), want["dip_adjusted_score"].to_numpy())


def month_records(n: int, seed: int) -> pa.Table:
    """A demo month (2026-10) of grouped settlement records, with duplicates and unpriced cases."""
    rng = np.random.default_rng(seed)
    drgs = np.array(["BR21", "BR23", "ES29", "FM19", "ZZ99"])
    d = rng.choice(drgs, n, p=[0.3, 0.3, 0.2, 0.19, 0.01])
    mean = {"BR21": 30000.0, "BR23": 20000.0, "ES29": 9000.0, "FM19": 45000.0, "ZZ99": 1000.0}
    cost = np.round(np.array([mean[x] for x in d]) * rng.lognormal(0, 0.5, n), 2)
    ids = [f"S{i:05d}" for i in range(n)]
    for i in range(0, n, 97):               # every 97th record settled twice
        ids[i + 1 if i + 1 < n else i] = ids[i]
    t = pa.table({
        "setl_id": ids, "fixmedins_code": rng.choice([f"H2301000000{k}" for k in range(1, 9)], n),
        "insutype": rng.choice(["310", "390", "999"], n, p=[0.5, 0.49, 0.01]),
        "dscg_time": [f"2026-{'10' if i % 50 else '09'}-{i % 28 + 1:02d}" for i in range(n)],
        "drg": d, "status": np.where(rng.random(n) < 0.02, "ungroupable", "grouped"),
        "medfee_sumamt": cost, "个人负担": np.round(cost * rng.uniform(0.1, 0.4, n), 2),
        "los_days": rng.integers(1, 30, n).astype(float)})
    return t.sort_by("setl_id")


def test_spark_settles_a_month_like_drgdip_settle_to_the_cent(spark, tmp_path):
    from pathlib import Path

    from drgdip.weights.settlement import runs
    policy = str(Path(__file__).resolve().parents[1] / "examples" / "region.toml")
    import pyarrow.parquet as pq
    t = month_records(6000, 7)
    pq_path = tmp_path / "oct.parquet"
    pq.write_table(t, pq_path)
    weights = tmp_path / "w.csv"
    weights.write_text("drg,weight,mean_cost\nBR21,1.5,30000\nBR23,1.0,20000\nES29,0.45,9000\nFM19,2.25,45000\n")
    one = runs.settle_month("2026-10", pq_path, policy_path=policy, weights_path=weights,
                            ledger_path=tmp_path / "l.db", new_ledger=True, quiet=True, out=tmp_path / "one")
    one_cases = pq.read_table(tmp_path / "one" / "cases.parquet")     # the streamed run writes its cases out
    df = spark.read.parquet(str(pq_path)).repartition(4)
    got = S.settle_dataframe(df, weights, policy, "2026-10")
    assert got.hospitals.num_rows == one.hospitals.num_rows >= 16
    for c in one.hospitals.column_names:
        assert got.hospitals[c].to_pylist() == one.hospitals[c].to_pylist(), c
    assert got.funds == one.funds
    a = {k: v for k, v in zip(got.cases["setl_id"].to_pylist(), got.cases["amount"].to_pylist())}
    b = {k: v for k, v in zip(one_cases["setl_id"].to_pylist(), one_cases["amount"].to_pylist())}
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]) or (a[k] != a[k] and b[k] != b[k]) for k in a)   # equal, or both NaN
    reasons = set(got.cases["pricing_reason"].to_pylist())
    assert {"DUPLICATE_SETTLEMENT_ID", "OUT_OF_PERIOD", "UNKNOWN_FUND", "GROUP_NOT_IN_TABLE"} <= reasons


WEIGHTS = "drg,weight,mean_cost\nBR21,1.5,30000\nBR23,1.0,20000\nES29,0.45,9000\nFM19,2.25,45000\n"


def coupled_month(n: int, seed: int) -> pa.Table:
    """month_records with patients (a home hospital each, ~3 stays in the month) and admission
    dates, some stays of a patient on the same days (ties broken by file order), some patient ids
    padded with spaces (the same patient once trimmed), and equal costs in a group (equal ratios)."""
    rng = np.random.default_rng(seed + 1)
    t = month_records(n, seed)
    k = n // 3
    pid = rng.integers(0, k, n)
    home = np.array([f"H2301000000{h}" for h in rng.integers(1, 9, k)])
    hosp = np.where(rng.random(n) < 0.9, home[pid], np.array(t["fixmedins_code"].to_pylist()))
    names = np.array([f"P{p:05d}" for p in pid], dtype=object)
    names[::41] = [" " + v + " " for v in names[::41]]
    dis = np.array(t["dscg_time"].to_pylist(), dtype="datetime64[D]")
    los = np.array(t["los_days"].to_pylist()).astype(int)
    adm = dis - los.astype("timedelta64[D]")
    for i in range(3, n, 113):                 # a second stay on the very days of another of the patient
        names[i], hosp[i], adm[i], dis[i] = names[i - 3], hosp[i - 3], adm[i - 3], dis[i - 3]
    cost = np.array(t["medfee_sumamt"].to_pylist())
    cost[7::211] = 77777.77                    # equal cost ratios within a group
    t = t.set_column(t.schema.get_field_index("fixmedins_code"), "fixmedins_code", pa.array(hosp))
    t = t.set_column(t.schema.get_field_index("dscg_time"), "dscg_time", pa.array(dis.astype(str).tolist()))
    t = t.set_column(t.schema.get_field_index("medfee_sumamt"), "medfee_sumamt", pa.array(cost))
    return t.append_column("patient_id", pa.array(names.tolist(), pa.string())).append_column(
        "admission_date", pa.array(adm.astype(str).tolist()))


def region_policy(tmp_path, special_review: str = "", deviation: str = "", readmission: str = "") -> str:
    """examples/region.toml with lines added to its [special_review] and [deviation] sections and
    a [readmission] section (the bench's own policy builder, so both settle the same policies)."""
    from drgdip.bench.spark_settle import policy_file
    p = policy_file(tmp_path, "policy", special_review, deviation, readmission,
                    base=Path(__file__).resolve().parents[1] / "examples" / "region.toml")
    text = p.read_text(encoding="utf-8")
    for line in special_review.splitlines():    # every line asked for is in the file
        assert line in text, line
    assert not deviation or deviation in text
    return str(p)


CASE_COLUMNS = ("fund_key", "weight", "group_mean_cost", "cost_ratio", "base_points", "case_type", "pricing_reason",
                "payment_method", "points", "review_trigger", "review_status", "readmission_of", "amount",
                "fund_amount")


def settle_both_ways(spark, tmp_path, t: pa.Table, policy: str):
    """(Spark's Settlement, drgdip settle's Settlement, its cases.parquet) for the same month,
    after checking they agree on every hospital row, every fund figure and every case row."""
    import pyarrow.parquet as pq

    from drgdip.weights.settlement import runs
    path = tmp_path / "month.parquet"
    pq.write_table(t, path)
    weights = tmp_path / "w.csv"
    weights.write_text(WEIGHTS)
    one = runs.settle_month("2026-10", path, policy_path=policy, weights_path=weights, ledger_path=tmp_path / "l.db",
                            new_ledger=True, quiet=True, out=tmp_path / "one", batch_size=1000)
    one_cases = pq.read_table(tmp_path / "one" / "cases.parquet")
    got = S.settle_dataframe(spark.read.parquet(str(path)).repartition(4), weights, policy, "2026-10")
    assert got.hospitals.num_rows == one.hospitals.num_rows >= 16
    for c in one.hospitals.column_names:
        assert got.hospitals[c].to_pylist() == one.hospitals[c].to_pylist(), c
    assert got.funds == one.funds
    cols = [c for c in CASE_COLUMNS if c in one_cases.column_names]
    assert [c for c in CASE_COLUMNS if c in got.cases.column_names] == cols

    def rows(cases):        # every case row; copies of a duplicated id compared as a set
        out = [tuple(repr(v) for v in r) for r in zip(*(cases[c].to_pylist() for c in ["setl_id", *cols]))]
        return sorted(out)
    a, b = rows(got.cases), rows(one_cases)
    assert len(a) == len(b) == t.num_rows
    assert a == b
    return got, one, one_cases


def reasons_of(cases) -> dict:
    vc = pc.value_counts(cases["pricing_reason"])
    return {v.as_py(): c.as_py() for v, c in zip(vc.field("values"), vc.field("counts"))}


def test_spark_settles_with_the_special_review_quota(spark, tmp_path):
    policy = region_policy(tmp_path, "cost_multiple = 3.2\nlos_days_above = 25\nquota_share = 0.05\n"
                                     "hospital_quota_share = 0.06")
    got, one, _ = settle_both_ways(spark, tmp_path, coupled_month(6000, 11), policy)
    r = reasons_of(got.cases)
    # the quota bites: candidates accepted up to 5 % of the region's cases, the others over it
    accepted = r["SPECIAL_REVIEW_COST"] + r["SPECIAL_REVIEW_LONG_STAY"]
    assert 200 <= accepted <= int(0.05 * got.cases.num_rows) and r["SPECIAL_REVIEW_OVER_QUOTA"] >= 200


def test_spark_settles_with_small_groups(spark, tmp_path):
    policy = region_policy(tmp_path, "min_group_cases = 1300")
    got, _, _ = settle_both_ways(spark, tmp_path, coupled_month(6000, 12), policy)
    small = got.cases.filter(pc.equal(got.cases["pricing_reason"], "SPECIAL_REVIEW_SMALL_GROUP"))
    assert small.num_rows >= 1000                       # ES29 and FM19 (~1,150 priceable each) are small
    assert set(small["drg"].to_pylist()) == {"ES29", "FM19"}   # BR21, BR23 (~1,750 each) are not


def test_spark_settles_with_readmissions(spark, tmp_path):
    policy = region_policy(tmp_path, readmission='days = 15\nkey = "adrg"\nsame_hospital = true\n'
                                                 'payment = "halve_earlier"\nshare = 0.5')
    t = coupled_month(6000, 13)
    got, _, _ = settle_both_ways(spark, tmp_path, t, policy)
    r = reasons_of(got.cases)
    assert r["READMISSION_WITHIN_DAYS"] >= 100 and r["READMISSION_EARLIER_STAY"] >= 50
    # a padded patient id is the same patient as the trimmed one (paired across Spark partitions)
    by_id = dict(zip(t["setl_id"].to_pylist(), t["patient_id"].to_pylist()))
    pairs = [(a, b) for a, b in zip(got.cases["setl_id"].to_pylist(), got.cases["readmission_of"].to_pylist()) if b]
    assert any(by_id[a] != by_id[b] for a, b in pairs)


def test_spark_settles_with_period_group_means(spark, tmp_path):
    policy = region_policy(tmp_path, deviation='group_mean = "period"')
    got, _, _ = settle_both_ways(spark, tmp_path, coupled_month(6000, 14), policy)
    means = {d: m for d, m in zip(got.cases["drg"].to_pylist(), got.cases["group_mean_cost"].to_pylist())
             if m is not None}
    assert set(means) == {"BR21", "BR23", "ES29", "FM19"}
    assert means["BR21"] != 30000.0 and abs(means["BR21"] / 30000.0 - 1.13) < 0.05   # E[lognormal(0, .5)] ≈ 1.13


def test_spark_settles_with_every_coupling_at_once(spark, tmp_path):
    policy = region_policy(tmp_path, "cost_multiple = 3.2\nlos_days_above = 25\nquota_share = 0.05\n"
                                     "hospital_quota_share = 0.06\n"
                                     "min_group_cases = 1300", deviation='group_mean = "period"',
                           readmission='days = 10\nkey = "group"\nsame_hospital = false\npayment = "second_unpaid"')
    got, _, _ = settle_both_ways(spark, tmp_path, coupled_month(6000, 15), policy)
    r = reasons_of(got.cases)
    for code in ("SPECIAL_REVIEW_OVER_QUOTA", "READMISSION_UNPAID", "DUPLICATE_SETTLEMENT_ID"):
        assert r.get(code, 0) > 0, code


def test_settle_dataframe_refuses_records_without_an_id(tmp_path):
    class Frame:
        columns = ["fixmedins_code", "drg"]
    p = region_policy(tmp_path, deviation='group_mean = "period"')
    (tmp_path / "w.csv").write_text(WEIGHTS)
    with pytest.raises(InputError, match="no id column"):
        S.settle_dataframe(Frame(), tmp_path / "w.csv", p, "2026-10")
