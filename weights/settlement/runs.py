"""Whole runs behind the commands: files in, weights or a settlement out, recorded in the ledger.

``make_weights`` (drgdip weights), ``settle_month`` (drgdip settle PERIOD RECORDS) and
``settle_annual`` (drgdip settle YEAR --final). Order of a monthly run: read and check
everything, refuse early if the period is settled (and not reopened), write the outputs
into a temporary folder, record the run in the ledger (one transaction), then move the
folder into place. A failure at any step leaves the previous outputs and the ledger as
they were.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from tqdm import tqdm

from drgdip.arrowio import (
    DEFAULT_BATCH_SIZE,
    AtomicWriter,
    InputError,
    canonical_columns,
    file_format,
    open_batches,
    publish,
    repeated_values,
    temp_path,
    text,
    write_table,
)
from drgdip.weights.relative_weights import WeightHistory, read_weight_table
from drgdip.weights.settlement import ledger as ledger_mod
from drgdip.weights.settlement import special_review as review_mod
from drgdip.weights.settlement.points import add_group_costs, month_of, price_cases
from drgdip.weights.settlement.policy import FUNDS, load_policy
from drgdip.weights.settlement.readmission import (
    ReadmissionIndex,
    Readmissions,
    StayTail,
    check_columns,
    eligible_of,
    recoveries,
    recovery_cases,
    tail_from,
)
from drgdip.weights.settlement.readmission import _hash as _readmission_hash
from drgdip.weights.settlement.readmission import key_kind as readmission_key_kind
from drgdip.weights.settlement.settle import (
    MonthTotals,
    Settlement,
    case_amounts,
    hospitals_csv_table,
    review_table,
    settle_year,
)


def _progress(total: int, quiet: bool, desc: str):
    return tqdm(total=total, desc=desc, unit="step", disable=quiet, leave=False, file=None)


def scheme_id(scheme: str | os.PathLike | None) -> str | None:
    """name:sha256-prefix of a compiled scheme file (or the folder name of a scheme folder)."""
    if scheme is None:
        return None
    if scheme == "teaching" and not Path(scheme).exists():
        return "teaching_scheme"                  # the built-in scheme, as the demo records it
    p = Path(scheme)
    if p.is_file():
        return f"{p.name}:{ledger_mod.file_sha256(p)[:16]}"
    return p.name


def group_if_needed(table: pa.Table, scheme, group_column: str = "drg") -> pa.Table:
    """The records as given if they carry the group column, else grouped with the scheme."""
    grouper = _grouper_for(table.schema, scheme, group_column)
    return table if grouper is None else grouper.group_batch(table.combine_chunks())

def make_weights(history_path, policy_path, out_path, scheme=None, group_column: str = "drg",
                 quiet: bool = False, batch_size: int = DEFAULT_BATCH_SIZE):
    """Read history batch by batch, group it if needed, compute weights, write them (Parquet or CSV).

    The history is never held whole: each batch leaves 22 bytes per usable case in a spill
    file of a :class:`~weights.relative_weights.WeightHistory`, in a private folder beside
    ``out_path`` removed at the end (the per-group trimming needs every cost of a group, read
    back in chunks); the weights do not depend on ``batch_size``."""
    with _progress(3, quiet, "weights") as bar:
        policy = load_policy(policy_path)
        bar.update()
        schema = next(iter(open_batches(history_path, batch_size))).schema
        grouper = _grouper_for(schema, scheme, group_column)
        spill = temp_path(Path(out_path), folder=True)
        try:
            with WeightHistory(group_column, spill) as hist:
                for b in open_batches(history_path, batch_size):
                    t = pa.Table.from_batches([b])
                    hist.add(grouper.group_batch(t) if grouper is not None else t)
                result = hist.finish(policy)
        finally:
            shutil.rmtree(spill, ignore_errors=True)
        bar.update()
        write_table(result.table, out_path)
        bar.update()
    return result


def _atomic_dir(out: Path) -> Path:
    """A private temporary folder beside ``out`` (pid-named; stale ones of killed runs removed)."""
    return temp_path(Path(out), folder=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace folder ``out`` by ``tmp`` (the old one is removed only once the new one is in place)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
    try:
        publish(tmp, out)                 # the folder gets an ordinary folder's permissions under the umask
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary_json(settlement: Settlement, extra: dict) -> str:
    doc = settlement.summary()
    doc.update(extra)
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_outputs(folder: Path, settlement: Settlement, extra: dict) -> None:
    """cases.parquet, review.csv (monthly), hospitals.csv, summary.json into ``folder``."""
    if settlement.cases is not None:
        write_table(settlement.cases, folder / "cases.parquet")
        write_table(review_table(settlement.cases), folder / "review.csv")
    write_table(hospitals_csv_table(settlement.hospitals), folder / "hospitals.csv")
    (folder / "summary.json").write_text(summary_json(settlement, extra), encoding="utf-8")


_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_YEAR = re.compile(r"^\d{4}$")


def check_month_period(period: str, policy) -> None:
    """Refuse a period that is not a month YYYY-MM, or one the policy gives no fund money for."""
    if not _MONTH.match(period):
        raise InputError(f"period {period!r}: a monthly settlement needs YYYY-MM with a month 01-12 "
                         "(use --final with YYYY for a year)")
    if not any(policy.has_money_for(f, period) for f in FUNDS):
        what = "budget or rate" if policy.form == "rate" else "budget"
        raise InputError(f"period {period}: the policy {policy.path or ''} has no {what} for it "
                         f"(add [budget.employee] \"{period}\" = … to the policy)")


#: rows per row group of cases.parquet: fixed, so the file does not depend on the batch size
ROW_GROUP_ROWS = 1 << 17


def _grouper_for(schema: pa.Schema, scheme, group_column: str):
    """None when the records carry the group column, else a Grouper for the scheme."""
    if group_column in schema.names:
        return None
    if scheme is None:
        raise InputError(f"records have no {group_column!r} column: pass --scheme to group them first")
    try:
        from drgdip.grouper.drg import api
    except ImportError as exc:  # the grouper is optional for pricing already-grouped records
        raise InputError(f"records have no {group_column!r} column and the grouper is not available ({exc})") from None
    return api.Grouper(api.load_scheme(scheme))


def column_batches(path, names: list[str], batch_size: int = DEFAULT_BATCH_SIZE):
    """Only the named columns of a record file, batch by batch (a Parquet file reads no other)."""
    if file_format(path) != "parquet":
        for b in open_batches(path, batch_size):
            yield b.select(names)
        return
    try:
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 22)
        for b in pf.iter_batches(batch_size=batch_size, columns=names):
            yield b
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read as parquet: {first}") from None


def duplicate_ids(path, id_column: str, batch_size: int = DEFAULT_BATCH_SIZE,
                  spill_dir=None) -> tuple[pa.Array, int]:
    """(settlement ids occurring more than once in the file, number of records), reading the
    id column alone, in bounded memory (hash partitions spilled to ``spill_dir``, default the
    system's temporary folder; hash collisions resolved exactly): :func:`arrowio.repeated_values`."""
    def ids():
        return (text(b.column(0), b.num_rows) for b in column_batches(path, [id_column], batch_size))
    return repeated_values(ids, spill_dir)


def _existing_folder(out) -> Path | None:
    """The nearest existing folder holding ``out`` (where its spill files can go), or None."""
    if out is None:
        return None
    d = Path(out).absolute().parent
    while not d.is_dir():
        d = d.parent
    return d


def _count_rows(path, column: str, batch_size: int) -> int:
    return sum(b.num_rows for b in column_batches(path, [column], batch_size))


def _period_means(records_path, batch_size, grouper, weights, policy, group_column, period, dups,
                  keep=None) -> np.ndarray:
    """The file's mean cost per weight-table row (deviation.group_mean = "period"): a pass of its own
    (``keep(table) -> bool mask``: only those records, e.g. the DRG hospitals' of a mixed run)."""
    sums, counts = _group_sums(records_path, batch_size, grouper, weights, policy, group_column, period, dups, keep)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _group_sums(records_path, batch_size, grouper, weights, policy, group_column, period, dups, keep=None):
    """(cost sums, priceable case counts) per weight-table row over the whole file (``keep``: as
    :func:`_period_means`)."""
    k = weights.num_rows
    sums, counts = np.zeros(k, np.float64), np.zeros(k, np.int64)
    for b in open_batches(records_path, batch_size):
        t = pa.Table.from_batches([b])
        if keep is not None:
            t = t.filter(pa.array(keep(t)))
        if grouper is not None:
            t = grouper.group_batch(t)
        add_group_costs(t, weights, policy, sums, counts, group_column=group_column, period=period,
                        duplicate_ids=dups)
    return sums, counts


def _quota_pass(batches, rows: int, price) -> np.ndarray:
    """Per record of the file, accepted for special review within the quota (特例单议比例):
    each batch priced with every candidate accepted, the candidates (hospital, ratio, id) and
    each hospital's reviewable cases kept, then :func:`special_review.fill_quota` once."""
    sr_hosp, sr_ratio, sr_ids, sr_rows = [], [], [], []
    names: dict[str, int] = {}
    base = np.zeros(0, np.int64)
    off = 0
    for t in batches:
        priced = price(t, review_mod.ReviewContext(accepted=np.ones(t.num_rows, bool)), None)
        hnames, hcode, ids = review_mod.quota_keys(priced)
        local = np.array([names.setdefault(h, len(names)) for h in hnames] or [0], np.int64)
        code = local[hcode] if t.num_rows else hcode
        trig = priced["review_trigger"]
        eligible = review_mod.quota_base(priced)
        cand = pc.is_valid(trig).to_numpy(zero_copy_only=False)
        if len(base) < len(names):
            base = np.concatenate([base, np.zeros(len(names) - len(base), np.int64)])
        np.add.at(base, code[eligible], 1)
        ratio = pc.fill_null(priced["cost_ratio"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        sr_hosp.append(code[cand])
        sr_ratio.append(ratio[cand])
        sr_ids.append(ids[cand])
        sr_rows.append(np.flatnonzero(cand) + off)
        off += t.num_rows
    accepted = np.zeros(rows, bool)
    if sr_rows:
        policy = price.policy
        cand_rows = np.concatenate(sr_rows)
        accepted[cand_rows] = review_mod.fill_quota(
            np.concatenate(sr_hosp), np.concatenate(sr_ratio), np.concatenate(sr_ids), base, int(base.sum()),
            policy.special_review.quota_share, policy.special_review.hospital_quota_share)
    return accepted


def _readmissions(records_path, batch_size, grouper, policy, group_column, schema, dups, period=None,
                  ledger_path=None) -> Readmissions:
    """The file's readmission pairs (policy [readmission]): a pass keeping 33 bytes per record
    (weights/settlement/readmission.py), then a read of the id column naming the earlier stays.

    With ``across_periods`` (and ``period``): the stays of the month's tail are kept
    (``found.tail``, for the ledger) and the earlier months' tails in the ledger (those of the
    file's patients, discharged on or after the file's first admission − days, and not of a
    settlement id in this file) are paired with the file's stays."""
    present = canonical_columns(schema)
    check_columns(schema.names, policy)
    rp = policy.readmission
    across = rp.across_periods and period is not None
    index = ReadmissionIndex(policy, group_column, dups, tail_from=tail_from(period, rp.days) if across else None)
    key = rp.key
    if grouper is None or key == "principal_diagnosis":
        names = [present[c] for c in ("id", "patient_id", "hospital_id", "admission_date", "discharge_date")
                 if c in present]
        if key == "principal_diagnosis" and "diagnoses" in present:
            names.append(present["diagnoses"])
        else:
            names += [c for c in (group_column, "adrg") if c in schema.names]
        for b in column_batches(records_path, list(dict.fromkeys(names)), batch_size):
            index.add(pa.Table.from_batches([b]))
    else:
        for b in open_batches(records_path, batch_size):
            index.add(grouper.group_batch(pa.Table.from_batches([b])))
    earlier = None
    if across and ledger_path is not None and Path(ledger_path).is_file() and index.min_admission is not None:
        patients = index.patients()

        def mine(t: pa.Table) -> np.ndarray:      # the file's patients only
            return np.isin(_readmission_hash(t["patient_id"].combine_chunks()), patients)
        with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
            earlier = ledger_mod.readmission_tail(conn, period, readmission_key_kind(policy),
                                                  index.min_admission - rp.days, keep=mine)
        if earlier.num_rows and "id" in present:   # a stay settled again in this file pairs as this file's
            seen = np.zeros(earlier.num_rows, bool)
            prev_ids = earlier["settlement_id"].combine_chunks()
            for b in column_batches(records_path, [present["id"]], batch_size):
                ids = text(b.column(0), b.num_rows)
                seen |= pc.fill_null(pc.is_in(prev_ids, value_set=ids.drop_null()), False).to_numpy(
                    zero_copy_only=False) if len(ids.drop_null()) else False
            earlier = earlier.filter(pa.array(~seen))
    found = index.finish(earlier)
    found.tail = index.tail_rows() if across else None
    if "id" in present and found.pairs:
        found.name_earlier(text(b.column(0), b.num_rows)
                           for b in column_batches(records_path, [present["id"]], batch_size))
    return found


def _usual_points(batches, readm: Readmissions, price, accepted, decided) -> dict:
    """``payment = "combine"``: file row → points by the usual rules (no readmission payment) of the
    rows that are the earlier stay of a pair or in the month's tail, in a pricing pass of its own."""
    want = np.union1d(readm.earlier_rows(), readm.tail["row"].to_numpy() if readm.tail is not None
                      and readm.tail.num_rows else np.zeros(0, np.int64))
    out: dict = {}
    off = 0
    for t in batches:
        n = t.num_rows
        lo, hi = np.searchsorted(want, [off, off + n])
        if hi > lo:
            ctx = review_mod.ReviewContext(accepted=None if accepted is None else accepted[off:off + n],
                                           decisions=decided)
            none = pa.table({"readmission_of": pa.nulls(n, pa.string()), "has_readmission": pa.array(np.zeros(n, bool))})
            priced = price(t, ctx, none)
            ok = eligible_of(priced)
            pts = pc.fill_null(priced["points"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
            for r in want[lo:hi]:
                i = int(r - off)
                out[int(r)] = float(pts[i]) if ok[i] else np.nan
        off += n
    return out


class _RowGroups:
    """cases.parquet written in row groups of ROW_GROUP_ROWS whatever the batches written."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.writer = AtomicWriter(path, schema).__enter__()
        self.buf: list[pa.RecordBatch] = []
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.buf.append(batch)
        self.rows += batch.num_rows
        while self.rows >= ROW_GROUP_ROWS:
            t = pa.Table.from_batches(self.buf, self.writer.schema)
            self.writer.write(t.slice(0, ROW_GROUP_ROWS).combine_chunks())
            rest = t.slice(ROW_GROUP_ROWS)
            self.buf, self.rows = rest.to_batches(), rest.num_rows

    def close(self, exc: BaseException | None = None) -> None:
        if exc is None and (self.rows or self.writer.rows == 0):
            self.writer.write(pa.Table.from_batches(self.buf, self.writer.schema).combine_chunks())
        self.writer.__exit__(type(exc) if exc else None, exc, None)


def _write_cases(folder: Path, spill: Path, amount: np.ndarray, batch_size: int) -> None:
    """cases.parquet and review.csv from the spilled priced batches and each case's cents."""
    reader = ipc.open_file(spill)
    cases = review = None
    off = 0
    try:
        for i in range(reader.num_record_batches):
            b = reader.get_batch(i)
            out = case_amounts(b, amount[off:off + b.num_rows])
            off += b.num_rows
            if cases is None:
                cases = _RowGroups(folder / "cases.parquet", out.schema)
            listed = review_table(pa.Table.from_batches([out]))
            if review is None:
                review = AtomicWriter(folder / "review.csv", listed.schema).__enter__()
            cases.write(out)
            review.write(listed)
    except BaseException as exc:
        if cases is not None:
            cases.close(exc)
            review.__exit__(type(exc), exc, None)
        raise
    if cases is not None:
        cases.close()
        review.__exit__(None, None, None)


def settle_month(period: str, records_path, *, policy_path, weights_path, ledger_path, out=None, scheme=None,
                 reopen: bool = False, group_column: str = "drg", quiet: bool = False,
                 now: str | None = None, new_ledger: bool = False,
                 batch_size: int = DEFAULT_BATCH_SIZE, benefits=None, method: str = "drg",
                 catalog=None, decisions=None) -> Settlement:
    """Monthly pre-settlement of one period's discharge records (see the module doc).

    ``decisions``: the payment office's special-review decisions (特例单议结果, a CSV of id,
    decision, points; :func:`weights.settlement.special_review.read_decisions`), applied to the period's
    cases under review; with ``reopen`` the month is recorded as a new revision. The run
    writes ``decisions.csv``: every row of the file, applied or refused with a reason.

    ``benefits``: the output of ``drgdip benefits`` (weights.settlement.benefits) for these stays; each
    record's personal share (个人负担) is then its ``personal_share`` there, joined by ``id``,
    instead of the records' own column. Every record must have its row (refused otherwise).

    ``method``: ``drg`` (the weights, grouping with ``scheme`` when the records have no group
    column), ``dip`` (each batch grouped by the DIP ``catalog`` and priced by its scores, no
    weights; point value per ``[dip_settlement]``) or ``mixed`` (the hospitals of
    ``[dip_settlement] hospitals`` by DIP, the others by DRG, one point pool): see
    :mod:`weights.settlement.dip_settle` and docs/settlement.md "DIP settlement".

    The file is streamed ``batch_size`` records at a time, never held whole: a read of the
    id column finds duplicate settlement ids; with ``deviation.group_mean = "period"`` a
    pass sums each group's cost; then each batch is grouped (when it has no group column),
    priced and counted (:class:`MonthTotals`: 13 bytes per case, appended to files) and
    spilled to a temporary Arrow file beside the output; the point value priced, the spilled cases are
    written out with their amounts. The outputs do not depend on ``batch_size``.

    Refused (InputError / LedgerError, nothing written or recorded): a period that is not
    YYYY-MM or has no budget in the policy; a ledger whose folder does not exist (unless
    ``new_ledger``); a file with no records, without a discharge date or personal share
    column, none of whose
    records falls in the period, or none of which can be priced."""
    with _progress(7, quiet, f"settle {period}") as bar:
        policy = load_policy(policy_path)
        check_month_period(period, policy)
        decided = review_mod.read_decisions(decisions) if decisions is not None else None
        ledger_mod.check_path(ledger_path, new_ledger)
        if Path(ledger_path).exists():   # refuse early; a new ledger is only created by a successful run
            with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
                ledger_mod.check_open(conn, period, "monthly", reopen)
        bar.update()
        schema = next(iter(open_batches(records_path, batch_size))).schema
        present = canonical_columns(schema)
        if "id" in present:
            dups, rows = duplicate_ids(records_path, present["id"], batch_size,
                                       spill_dir=_existing_folder(out))
        else:
            dups, rows = None, _count_rows(records_path, schema.names[0], batch_size)
        if rows == 0:
            raise InputError(f"{records_path}: has no records (a header only); nothing to settle")
        if "discharge_date" not in present:
            raise InputError(f"{records_path}: has no discharge_date column (出院时间, dscg_time or an alias): "
                             f"cannot tell which records belong to {period}")
        shares = _benefit_shares(benefits, records_path, present, batch_size) if benefits is not None else None
        if "personal_share" not in present and shares is None:
            raise InputError(f"{records_path}: has no personal_share column (个人负担, or an alias): the point "
                             "value counts the patients' share (docs/settlement.md §1.3); or pass the "
                             "benefits of the stays (--benefits)")

        def batches():
            for b in open_batches(records_path, batch_size):
                t = pa.Table.from_batches([b])
                if shares is not None:
                    t = _with_benefit_shares(t, present, shares)
                yield t
        price, pool = _month_pricer(method, catalog, policy, period, dups, records_path, batch_size, schema,
                                    scheme, weights_path, group_column, batches, ledger_path=ledger_path)
        accepted = _quota_pass(batches(), rows, price) if review_mod.quota_active(policy.special_review) else None
        readm = price.readmissions
        usual = stay_tail = recovered = None
        if readm is not None:       # readmissions across months (docs/settlement.md "Readmissions across months")
            if policy.readmission.payment == "combine":
                usual = _usual_points(batches(), readm, price, accepted, decided)
                readm.earlier_points = {r: usual[int(r)] for r in readm.earlier_rows()}
            if readm.tail is not None:
                stay_tail = StayTail(readm.tail, policy, period)
            recovered = recoveries(readm, policy)
            later_ids: dict = {}
        bar.update()
        tmp = _atomic_dir(Path(out)) if out is not None else None
        scratch = tempfile.mkdtemp(prefix=".settle-") if tmp is None else None
        # the per-case state (13 bytes a case) and the cents go to files: flat memory
        totals = MonthTotals(policy, period, rows + (recovered.num_rows if recovered is not None else 0),
                             pool_total=pool, spill=tmp if tmp is not None else scratch, group_column=group_column)
        reasons: dict[str, int] = {}
        methods: dict[str, int] = {}
        unpriced: dict[str, int] = {}
        in_period, with_points = False, 0
        review_counts: dict[str, int] = {}
        known_ids: set[str] = set()
        applied_ids: set[str] = set()
        reviewed_ids: set[str] = set()
        offset = 0
        spill = spill_writer = None
        try:
            for t in batches():
                ctx = review_mod.ReviewContext(
                    accepted=None if accepted is None else accepted[offset:offset + t.num_rows], decisions=decided)
                flags = price.readmissions.batch(offset, t.num_rows) if price.readmissions is not None else None
                priced = price(t, ctx, flags)
                if stay_tail is not None:
                    stay_tail.take(offset, priced, present.get("id"), flags, usual)
                if recovered is not None and recovered.num_rows:
                    lr = recovered["later"].to_numpy()
                    lr = lr[(lr >= offset) & (lr < offset + t.num_rows)]
                    if lr.size:
                        ids = text(priced[present["id"]], priced.num_rows) if "id" in present else None
                        for r in lr:
                            later_ids[int(r)] = ids[int(r - offset)].as_py() if ids is not None else f"row {int(r)}"
                offset += t.num_rows
                totals.add(priced)
                _review_counts(priced, review_counts)
                if decided is not None and "id" in present:
                    _match_decisions(priced, present["id"], decided, known_ids, applied_ids, reviewed_ids)
                for r, c in _reason_counts(priced).items():
                    reasons[r] = reasons.get(r, 0) + c
                for r, c in _reason_counts(priced, "payment_method").items():
                    methods[r] = methods.get(r, 0) + c
                unp = priced.filter(pc.equal(priced["case_type"], "unpriced"))
                for r, c in _reason_counts(unp).items():
                    unpriced[r] = unpriced.get(r, 0) + c
                with_points += priced.num_rows - priced["points"].null_count
                month = month_of(priced[present["discharge_date"]])
                in_period = in_period or bool(pc.any(pc.fill_null(pc.equal(month, period), False)).as_py())
                if tmp is not None:
                    if spill_writer is None:
                        spill = tmp / ".priced.arrow"
                        spill_writer = ipc.new_file(str(spill), priced.schema)
                    spill_writer.write_table(priced)
            if recovered is not None and recovered.num_rows:   # the earlier stays' cut, booked this month
                priced = recovery_cases(recovered, [later_ids.get(int(r)) for r in recovered["later"].to_numpy()],
                                        priced.schema)
                totals.add(priced)
                for r, c in _reason_counts(priced).items():
                    reasons[r] = reasons.get(r, 0) + c
                if spill_writer is not None:
                    spill_writer.write_table(priced)
            if spill_writer is not None:
                spill_writer.close()
                spill_writer = None
            bar.update()
            reasons = dict(sorted(reasons.items()))
            if not in_period:
                raise InputError(f"{records_path}: none of its {totals.rows} records is discharged in {period} "
                                 "(wrong file or wrong period?)")
            if with_points == 0:
                top = ", ".join(f"{c} {r}" for r, c in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))[:3])
                raise InputError(f"{records_path}: none of its {totals.rows} records can be priced ({top}); "
                                 "see docs/reasons.md")
            pa.default_memory_pool().release_unused()     # the batches' memory back before the cents
            result, amount = totals.finish()
            if unpriced:
                result.notes.append(f"{sum(unpriced.values())} of {totals.rows} record(s) not priced, listed for "
                                    "review: " + ", ".join(f"{c} {r}" for r, c in
                                                          sorted(unpriced.items(), key=lambda x: (-x[1], x[0]))))
            bar.update()
            inputs = {"records": ledger_mod.file_sha256(records_path), "policy": policy.sha256}
            if weights_path is not None and method != "dip":
                inputs["weights"] = ledger_mod.file_sha256(weights_path)
            if benefits is not None:
                inputs["benefits"] = ledger_mod.file_sha256(benefits)
            sid = scheme_id(scheme)
            if scheme is not None and Path(scheme).is_file():
                inputs["scheme"] = ledger_mod.file_sha256(scheme)
            extra = {"inputs": inputs, "scheme_id": sid, "policy_name": policy.name, "form": policy.form,
                     "reasons": reasons, "payment_methods": dict(sorted(methods.items()))}
            if method != "drg":
                _dip_extra(extra, method, catalog, policy)
            if review_counts:
                extra["special_review"] = dict(sorted(review_counts.items()))
            if decided is not None:
                inputs["decisions"] = ledger_mod.file_sha256(decisions)
                outcome = review_mod.decision_results(decided, applied_ids, known_ids, reviewed_ids)
                vc = pc.value_counts(outcome["status"]) if outcome.num_rows else None
                extra["decisions"] = {} if vc is None else {
                    v.as_py(): c.as_py() for v, c in zip(vc.field("values"), vc.field("counts"))}
                refused = outcome.num_rows - extra["decisions"].get("applied", 0)
                result.notes.append(f"decisions {Path(decisions).name}: {extra['decisions'].get('applied', 0)} "
                                    f"applied, {refused} refused (see decisions.csv)")
            if tmp is not None:
                _write_cases(tmp, spill, amount, batch_size)
                spill.unlink()
                write_outputs(tmp, result, extra)
                if decided is not None:
                    write_table(outcome, tmp / "decisions.csv")
            if hasattr(amount, "unlink"):
                amount.unlink()
            bar.update()
            with closing(ledger_mod.connect(ledger_path, parents=new_ledger)) as conn:
                ledger_mod.record_run(conn, result, policy=policy, inputs=inputs, scheme_id=sid, reopen=reopen,
                                      now=now, readmission_tail=stay_tail.table() if stay_tail is not None else None,
                                      key_kind=readmission_key_kind(policy))
            if tmp is not None:
                _swap_in(tmp, Path(out))
                tmp = None
            bar.update()
        finally:
            if spill_writer is not None:
                spill_writer.close()
            totals.store.close()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    return result


def _month_pricer(method, catalog, policy, period, dups, records_path, batch_size, schema, scheme, weights_path,
                  group_column, batches=None, ledger_path=None):
    """(batch → priced cases, the point value's pool total or None) of a monthly run by ``method``.

    ``batches()``: the file's batches as priced (with the benefits' personal shares), for the DIP
    group counts of special review's small_group (default: the file as read)."""
    from drgdip.weights.settlement import dip_settle
    if method not in dip_settle.METHODS:
        raise InputError(f"method {method!r}: use one of {', '.join(dip_settle.METHODS)}")
    if method != "drg" and catalog is None:
        raise InputError(f"--method {method} needs the DIP catalogue (--catalog)")
    drg = None
    if method != "dip":
        if weights_path is None:
            raise InputError(f"--method {method} needs the weight table (--weights)")
        grouper = _grouper_for(schema, scheme, group_column)
        weights = read_weight_table(weights_path, group_column)
        means = counts = None
        if policy.deviation.group_mean != "table" or review_mod.needs_group_counts(policy.special_review):
            keep = None
            if method == "mixed":              # the DRG groups' means over the DRG hospitals' cases only
                hosp = pa.array(list(policy.dip_settlement.hospitals), pa.string())
                col = canonical_columns(schema).get("hospital_id")
                if col is not None:
                    def keep(t, col=col, hosp=hosp):
                        return ~pc.fill_null(pc.is_in(text(t[col], t.num_rows), value_set=hosp),
                                             False).to_numpy(zero_copy_only=False)
            sums, counts = _group_sums(records_path, batch_size, grouper, weights, policy, group_column, period,
                                       dups, keep)
            if policy.deviation.group_mean != "table":
                with np.errstate(invalid="ignore", divide="ignore"):
                    means = sums / counts

        # readmissions (policy [readmission]): pairs over the whole file, then flags batch by batch
        readm = None
        if policy.readmission.days > 0:
            if method != "drg":
                raise InputError(f"{policy.path or 'policy'}: readmission.days = {policy.readmission.days}: "
                                 f"readmissions are paired by --method drg or dip, not --method {method} "
                                 "(settle the two methods in two runs with pool = \"separate\", or set "
                                 "readmission.days = 0)")
            readm = _readmissions(records_path, batch_size, grouper, policy, group_column, schema, dups, period,
                                  ledger_path)

        def drg(t: pa.Table, review=None, readmissions=None) -> pa.Table:
            if grouper is not None:
                t = grouper.group_batch(t)
            if review is not None:
                review.group_counts = counts
            return price_cases(t, weights, policy, group_column=group_column, period=period,
                               duplicate_ids=dups, group_means=means, review=review, readmissions=readmissions)
        drg.policy, drg.readmissions = policy, readm
        if method == "drg":
            if policy.dip_settlement is not None and policy.dip_settlement.hospitals \
                    and policy.dip_settlement.pool == "separate":
                def separate(t, review=None, readmissions=None):
                    return dip_settle.leave_dip_hospitals(drg(t, review, readmissions), policy)
                separate.policy, separate.readmissions = policy, readm
                return separate, None
            return drg, None
    pricer = dip_settle.DipPricer(catalog, policy, period, method, duplicate_ids=dups, drg_price=drg)
    if review_mod.needs_group_counts(policy.special_review):   # small_group: DIP group sizes over the file
        pricer.group_counts = np.zeros(pricer.catalog.table.num_rows, np.int64)
        for t in (batches() if batches is not None else
                  (pa.Table.from_batches([b]) for b in open_batches(records_path, batch_size))):
            pricer.count_groups(t, pricer.group_counts)
    readm = None
    if method == "dip" and policy.readmission.days > 0:      # paired on dip_group or the principal diagnosis
        readm = _readmissions(records_path, batch_size, _DipGrouper(pricer), policy, "dip_group", schema, dups)

    def dip(t, review=None, readmissions=None):
        return pricer(t, review, readmissions)
    dip.policy, dip.readmissions = policy, readm
    return dip, (dip_settle.pool_total(policy, period) if method == "dip" else None)


class _DipGrouper:
    """``group_batch`` by the DIP catalogue (the readmission pass's grouper of a DIP run)."""

    def __init__(self, pricer):
        self.pricer = pricer

    def group_batch(self, t: pa.Table) -> pa.Table:
        return self.pricer.group(t)


def _dip_extra(extra: dict, method: str, catalog, policy) -> None:
    """The DIP run's inputs and summary fields (catalogue hash, method, forms used)."""
    from drgdip.weights.settlement import dip_settle
    extra["inputs"]["catalog"] = ledger_mod.file_sha256(catalog)
    extra["inputs"]["method"] = method
    ds = policy.dip_settlement
    extra["method"] = method
    extra["dip"] = {"point_value": ds.point_value if method == "dip" else "budget_personal",
                    "reimbursement_ratio": dict(ds.reimbursement_ratio) if method == "dip" else None,
                    "budget_point_value": dip_settle.budget_point_value(catalog),
                    "reference_means": ds.reference_means or "catalogue mean_cost",
                    "high_k": ds.high_k, "low_k": ds.low_k,
                    "hospitals": list(ds.hospitals), "pool": ds.pool, "points_factor": ds.points_factor}
    if ds.reference_means:
        ref = Path(ds.reference_means)
        if not ref.is_absolute() and policy.path:
            ref = Path(policy.path).parent / ref
        extra["inputs"]["reference_means"] = ledger_mod.file_sha256(ref)


def _benefit_shares(benefits, records_path, present: dict, batch_size: int) -> tuple[pa.Array, pa.Array]:
    """(ids, personal shares) of a benefits output, checked: unique ids covering every record."""
    from drgdip.arrowio import read_table
    t = read_table(benefits)
    for c in ("id", "personal_share"):
        if c not in t.column_names:
            raise InputError(f"{benefits}: not a benefits output (drgdip benefits): no {c} column")
    if "id" not in present:
        raise InputError(f"{records_path}: has no id column: the benefits are joined to the records by id")
    ids = text(t["id"], t.num_rows)
    if pc.count_distinct(ids).as_py() != len(ids) - ids.null_count:
        raise InputError(f"{benefits}: an id occurs more than once")
    missing, first = 0, None
    for b in open_batches(records_path, batch_size):
        rid = text(b.column(present["id"]), b.num_rows)
        absent = pc.invert(pc.is_in(rid, value_set=ids))
        k = pc.sum(absent).as_py() or 0
        if k and first is None:
            first = rid.filter(absent)[0].as_py()
        missing += k
    if missing:
        raise InputError(f"{benefits}: {missing} record(s) of {records_path} have no row (first id {first!r}): "
                         "compute the benefits of the same records")
    return ids, t["personal_share"].combine_chunks()


def _with_benefit_shares(t: pa.Table, present: dict, shares) -> pa.Table:
    ids, ps = shares
    at = pc.index_in(text(t[present["id"]], t.num_rows), value_set=ids)
    col = ps.take(at)      # a stay invalid there has no share: unpriced with BAD_PERSONAL_SHARE
    name = present.get("personal_share", "personal_share")
    if name in t.column_names:
        return t.set_column(t.schema.get_field_index(name), name, col)
    return t.append_column(name, col)


def read_scores(path) -> dict[str, float]:
    """The year-end assessment scores (质量考核得分): a CSV (or Parquet) with columns
    hospital_id, score (0–100), one row per hospital. InputError (one line) when unusable."""
    from drgdip.arrowio import numeric, read_table
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such scores file")
    t = read_table(p)
    for c in ("hospital_id", "score"):
        if c not in t.column_names:
            raise InputError(f"{p}: a scores file needs columns hospital_id, score (it has "
                             f"{', '.join(t.column_names) or 'none'})")
    ids = text(t["hospital_id"], t.num_rows).to_pylist()
    vals, _ = numeric(t["score"], t.num_rows)
    vals = vals.to_pylist() if hasattr(vals, "to_pylist") else list(vals)
    out: dict[str, float] = {}
    for i, (h, v) in enumerate(zip(ids, vals)):
        if not h:
            raise InputError(f"{p}: row {i + 2} has no hospital_id")
        if v is None or not (0 <= float(v) <= 100):
            raise InputError(f"{p}: row {i + 2} ({h}): score {t['score'][i].as_py()!r} is not a number from 0 to 100")
        if h in out:
            raise InputError(f"{p}: hospital {h} is listed twice")
        out[h] = float(v)
    return out


def settle_annual(year: str, *, policy_path, ledger_path, out=None, reopen: bool = False,
                  quiet: bool = False, now: str | None = None, partial_year: bool = False,
                  scores=None, method: str = "drg") -> Settlement:
    """Annual settlement (清算) of a year from the ledger's monthly runs.

    Refused unless all twelve months of the year are settled, or ``partial_year`` (the year's
    budget is then spread over the months there are, and a note says which). ``scores``: a
    file of year-end assessment scores (hospital_id, score) for the quality refund
    (质量保证金返还, policy [quality]); see :func:`read_scores`. ``method`` ``dip``: the
    months must have been settled by DIP, and the year's point value takes the
    ``[dip_settlement]`` form (docs/settlement.md "DIP settlement")."""
    if not _YEAR.match(year):
        raise InputError(f"period {year!r}: an annual settlement (--final) needs a year, YYYY")
    policy = load_policy(policy_path)
    score_map = read_scores(scores) if scores is not None else None
    with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
        ledger_mod.check_open(conn, year, "annual", reopen)
        monthly, months = ledger_mod.monthly_rows(conn, year)
        previous = ledger_mod.annual_funds(conn, str(int(year) - 1))
        pool = _annual_pool(conn, method, policy, year)
        groups = _year_groups(conn, policy, year)
    if len(months) < 12:
        missing = [f"{year}-{m:02d}" for m in range(1, 13) if f"{year}-{m:02d}" not in months]
        if not partial_year:
            raise InputError(f"annual settlement of {year}: {len(missing)} month(s) not settled "
                             f"({', '.join(missing)}); settle them, or pass --partial-year to spread the year's "
                             f"budget over the {len(months)} settled month(s)")
    result = settle_year(monthly, policy, year, scores=score_map, previous=previous, pool_total=pool, groups=groups)
    if len(months) < 12:
        result.notes.append(f"only {len(months)} month(s) settled in {year}: {', '.join(months)} (--partial-year)")
    inputs = {"policy": policy.sha256, "months": ",".join(months)}
    if scores is not None:
        inputs["scores"] = ledger_mod.file_sha256(scores)
    extra = {"inputs": inputs, "months": months, "policy_name": policy.name, "form": policy.form}
    if method != "drg":
        extra["method"] = method
    tmp = _atomic_dir(Path(out)) if out is not None else None
    try:
        if tmp is not None:
            write_outputs(tmp, result, extra)
        with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
            ledger_mod.record_run(conn, result, policy=policy, inputs=inputs, scheme_id=None, reopen=reopen, now=now)
        if tmp is not None:
            _swap_in(tmp, Path(out))
            tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _year_groups(conn, policy, year: str):
    """The year's totals per hospital and group for the consumption indices group by group
    (``incentives.index_form = "per_group"``), or None when the policy does not need them; a
    month recorded before the ledger kept them is refused (its totals cannot be rebuilt)."""
    lim = policy.fund_limits
    if lim.index_form != "per_group" or not ({"cost", "time"} & set(lim.incentive_bands)):
        return None
    groups, missing = ledger_mod.group_totals(conn, year)
    if missing:
        raise InputError(f"annual settlement of {year}: incentives.index_form = \"per_group\" needs each month's "
                         f"totals per hospital and group, which month(s) {', '.join(missing)} (recorded before the "
                         "ledger kept them) lack; settle them again (--reopen), or set incentives.index_form = "
                         "\"per_weight\"")
    return groups


def _annual_pool(conn, method: str, policy, year: str):
    """The year's pool total for ``method`` (None: the DRG form), after checking that every
    settled month of the year was settled by that method (a DIP year over DRG months, or the
    other way round, is refused)."""
    from drgdip.weights.settlement import dip_settle
    if method not in dip_settle.METHODS:
        raise InputError(f"method {method!r}: use one of {', '.join(dip_settle.METHODS)}")
    rows = conn.execute("SELECT period, inputs FROM runs WHERE kind='monthly' AND current=1 AND period LIKE ? "
                        "ORDER BY period", (f"{year}-%",)).fetchall()
    other = [f"{p} ({m})" for p, inputs in rows if (m := json.loads(inputs or "{}").get("method", "drg")) != method]
    if other:
        raise InputError(f"annual settlement of {year} --method {method}: month(s) {', '.join(other)} were settled "
                         "by another method; settle the year with the method its months used")
    return dip_settle.pool_total(policy, year) if method == "dip" else None


def _review_counts(priced: pa.Table, into: dict[str, int]) -> None:
    """Add a batch's special-review cases (特例单议) by status and by trigger to ``into``."""
    for col, prefix in (("review_status", "status"), ("review_trigger", "trigger")):
        for v, c in _reason_counts(priced.filter(pc.is_valid(priced[col])), col).items():
            into[f"{prefix}:{v}"] = into.get(f"{prefix}:{v}", 0) + c


def _match_decisions(priced: pa.Table, id_column: str, decided, known: set, applied: set, reviewed: set) -> None:
    """Collect the decision ids found in a batch, those applied (the case decided) and those of
    cases under review that the decision could not decide (normal/actual without base points)."""
    ids = text(priced[id_column], priced.num_rows)
    hit = pc.fill_null(pc.is_in(ids, value_set=decided.ids), False)
    if not pc.any(hit).as_py():
        return
    known.update(ids.filter(hit).to_pylist())
    status = priced["review_status"]
    if isinstance(status, pa.ChunkedArray):        # Array.filter takes an Array mask (pyarrow 15)
        status = status.combine_chunks()
    done = pc.and_(hit, pc.fill_null(pc.equal(status, "decided"), False))
    applied.update(ids.filter(done).to_pylist())
    waiting = pc.and_(hit, pc.fill_null(pc.is_in(status, pa.array(["held", "interim"])), False))
    reviewed.update(ids.filter(waiting).to_pylist())


def _reason_counts(priced: pa.Table, column: str = "pricing_reason") -> dict[str, int]:
    vc = pc.value_counts(priced[column])
    return {v.as_py(): c.as_py() for v, c in sorted(zip(vc.field("values"), vc.field("counts")),
                                                      key=lambda x: x[0].as_py())}


def summary_text(settlement: Settlement) -> str:
    """The printed summary table, one line per fund."""
    annual = settlement.kind == "annual"
    head = (f"{'fund':<9} {'cases':>8} {'unpriced':>8} {'points':>14} {'point value':>12} {'budget':>16} "
            f"{'personal':>14} {'amount due':>16} " + (f"{'adjustment':>12} {'balance':>14}" if annual else
                                                      f"{'withheld':>14} {'paid':>16}"))
    lines = [f"{settlement.kind} settlement {settlement.period}", head]
    for fund, f in sorted(settlement.funds.items()):
        pv = "-" if f["point_value"] is None else f"{f['point_value']:.6f}"
        bud = "-" if f["budget"] is None else f"{f['budget']:.2f}"
        tail = (f"{f['adjustment']:>12.2f} {f['balance']:>14.2f}" if annual else
                f"{f['withheld']:>14.2f} {f['paid']:>16.2f}")
        lines.append(f"{fund:<9} {f['cases']:>8} {f['unpriced_cases']:>8} {f['total_points']:>14.4f} {pv:>12} "
                     f"{bud:>16} {f['personal_share']:>14.2f} {f['amount_due']:>16.2f} {tail}")
    lines += fund_limit_lines(settlement)
    lines += [f"note: {n}" for n in settlement.notes]
    return "\n".join(lines)


def fund_limit_lines(settlement: Settlement) -> list[str]:
    """One line per fund and rule of the fund's limits that is on (docs/settlement.md §7): projected
    and settlement point values, reserve and cap, quality refund, advances held."""
    lines: list[str] = []
    for fund, f in sorted(settlement.funds.items()):
        if "projected_point_value" in f:
            pv = f["projected_point_value"]
            lines.append(f"{fund}: projected (预算) point value {'-' if pv is None else f'{pv:.6f}'} "
                         f"({f['projected_source']}), settlement (结算) point value "
                         f"{'-' if f['point_value'] is None else format(f['point_value'], '.6f')}")
        if "reserve" in f:
            lines.append(f"{fund}: budget {f['budget']:.2f}, reserve (调剂金) {f['reserve']:.2f}, cap "
                         f"{f['reserve_cap']}: the year's due {f['spend_before_cap']:.2f}, reserve used "
                         f"{f['reserve_used']:.2f}, cut by the cap {f['cap_cut']:.2f}")
        if "quality_refund" in f:
            lines.append(f"{fund}: withholding (质量保证金) refunded {f['quality_refund']:.2f}, kept by the fund "
                         f"{f['quality_kept']:.2f}")
        if "monthly_held" in f:
            lines.append(f"{fund}: held back by the months' advances (预拨) {f['monthly_held']:.2f}, cleared now")
        if "held" in f:
            lines.append(f"{fund}: advance share {f['advance_share']:g}: held back {f['held']:.2f} until the year")
    return lines
