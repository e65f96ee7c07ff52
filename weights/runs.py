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

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from drgdip.arrowio import InputError, canonical_columns, read_table, write_table
from drgdip.weights import ledger as ledger_mod
from drgdip.weights.points import month_of, price_cases
from drgdip.weights.policy import FUNDS, load_policy
from drgdip.weights.relative_weights import compute_weights, read_weight_table
from drgdip.weights.settlement import Settlement, hospitals_csv_table, review_table, settle_period, settle_year


def _progress(total: int, quiet: bool, desc: str):
    return tqdm(total=total, desc=desc, unit="step", disable=quiet, leave=False, file=None)


def scheme_id(scheme: str | os.PathLike | None) -> str | None:
    """name:sha256-prefix of a compiled scheme file (or the folder name of a scheme folder)."""
    if scheme is None:
        return None
    p = Path(scheme)
    if p.is_file():
        return f"{p.name}:{ledger_mod.file_sha256(p)[:16]}"
    return p.name


def group_if_needed(table: pa.Table, scheme, group_column: str = "drg") -> pa.Table:
    """The records as given if they carry the group column, else grouped with the scheme."""
    if group_column in table.column_names:
        return table
    if scheme is None:
        raise InputError(f"records have no {group_column!r} column: pass --scheme to group them first")
    try:
        from drgdip.grouper import api
    except ImportError as exc:  # the grouper is optional for pricing already-grouped records
        raise InputError(f"records have no {group_column!r} column and the grouper is not available ({exc})") from None
    return api.group_table(table, api.load_scheme(scheme))


def make_weights(history_path, policy_path, out_path, scheme=None, group_column: str = "drg",
                 quiet: bool = False):
    """Read history, group it if needed, compute weights, write them (Parquet or CSV)."""
    with _progress(4, quiet, "weights") as bar:
        policy = load_policy(policy_path)
        bar.update()
        history = group_if_needed(read_table(history_path), scheme, group_column)
        bar.update()
        result = compute_weights(history, policy, group_column)
        bar.update()
        write_table(result.table, out_path)
        bar.update()
    return result


def _atomic_dir(out: Path):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace folder ``out`` by ``tmp`` (the old one is removed only once the new one is in place)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
    try:
        os.replace(tmp, out)
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


def check_priced(priced: pa.Table, period: str, records_path) -> None:
    """Refuse a file none of whose records can be settled in the period (nothing to record)."""
    reasons = _reason_counts(priced)
    month = month_of(priced[canonical_columns(priced.schema)["discharge_date"]])
    if not pc.any(pc.fill_null(pc.equal(month, period), False)).as_py():
        raise InputError(f"{records_path}: none of its {priced.num_rows} records is discharged in {period} "
                         "(wrong file or wrong period?)")
    if pc.sum(pc.is_valid(priced["points"])).as_py() in (0, None):
        top = ", ".join(f"{c} {r}" for r, c in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))[:3])
        raise InputError(f"{records_path}: none of its {priced.num_rows} records can be priced ({top}); "
                         "see docs/reasons.md")


def unpriced_note(priced: pa.Table) -> str | None:
    """One line: how many records are not priced, by reason (the file's summary)."""
    unp = priced.filter(pc.equal(priced["case_type"], "unpriced"))
    if unp.num_rows == 0:
        return None
    rc = _reason_counts(unp)
    return (f"{unp.num_rows} of {priced.num_rows} record(s) not priced, listed for review: "
            + ", ".join(f"{c} {r}" for r, c in sorted(rc.items(), key=lambda x: (-x[1], x[0]))))


def settle_month(period: str, records_path, *, policy_path, weights_path, ledger_path, out=None, scheme=None,
                 reopen: bool = False, group_column: str = "drg", quiet: bool = False,
                 now: str | None = None, new_ledger: bool = False) -> Settlement:
    """Monthly pre-settlement of one period's discharge records (see the module doc).

    Refused (InputError / LedgerError, nothing written or recorded): a period that is not
    YYYY-MM or has no budget in the policy; a ledger whose folder does not exist (unless
    ``new_ledger``); a file with no records, without a discharge date or personal share
    column, none of whose
    records falls in the period, or none of which can be priced."""
    with _progress(7, quiet, f"settle {period}") as bar:
        policy = load_policy(policy_path)
        check_month_period(period, policy)
        ledger_mod.check_path(ledger_path, new_ledger)
        if Path(ledger_path).exists():   # refuse early; a new ledger is only created by a successful run
            with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
                ledger_mod.check_open(conn, period, "monthly", reopen)
        bar.update()
        records = read_table(records_path)
        if records.num_rows == 0:
            raise InputError(f"{records_path}: has no records (a header only); nothing to settle")
        present = canonical_columns(records.schema)
        if "discharge_date" not in present:
            raise InputError(f"{records_path}: has no discharge_date column (出院时间, dscg_time or an alias): "
                             f"cannot tell which records belong to {period}")
        if "personal_share" not in present:
            raise InputError(f"{records_path}: has no personal_share column (个人负担, or an alias): the point "
                             "value counts the patients' share (docs/settlement.md §1.3)")
        bar.update()
        records = group_if_needed(records, scheme, group_column)
        bar.update()
        weights = read_weight_table(weights_path, group_column)
        priced = price_cases(records, weights, policy, group_column=group_column, period=period)
        check_priced(priced, period, records_path)
        bar.update()
        result = settle_period(priced, policy, period)
        note = unpriced_note(priced)
        if note:
            result.notes.append(note)
        bar.update()
        inputs = {"records": ledger_mod.file_sha256(records_path), "weights": ledger_mod.file_sha256(weights_path),
                  "policy": policy.sha256}
        sid = scheme_id(scheme)
        if scheme is not None and Path(scheme).is_file():
            inputs["scheme"] = ledger_mod.file_sha256(scheme)
        extra = {"inputs": inputs, "scheme_id": sid, "policy_name": policy.name, "form": policy.form,
                 "reasons": _reason_counts(priced)}
        tmp = _atomic_dir(Path(out)) if out is not None else None
        try:
            if tmp is not None:
                write_outputs(tmp, result, extra)
            bar.update()
            with closing(ledger_mod.connect(ledger_path, parents=new_ledger)) as conn:
                ledger_mod.record_run(conn, result, policy=policy, inputs=inputs, scheme_id=sid, reopen=reopen,
                                      now=now)
            if tmp is not None:
                _swap_in(tmp, Path(out))
                tmp = None
            bar.update()
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    return result


def settle_annual(year: str, *, policy_path, ledger_path, out=None, reopen: bool = False,
                  quiet: bool = False, now: str | None = None, partial_year: bool = False) -> Settlement:
    """Annual settlement (清算) of a year from the ledger's monthly runs.

    Refused unless all twelve months of the year are settled, or ``partial_year`` (the year's
    budget is then spread over the months there are, and a note says which)."""
    if not _YEAR.match(year):
        raise InputError(f"period {year!r}: an annual settlement (--final) needs a year, YYYY")
    policy = load_policy(policy_path)
    with closing(ledger_mod.connect(ledger_path, create=False)) as conn:
        ledger_mod.check_open(conn, year, "annual", reopen)
        monthly, months = ledger_mod.monthly_rows(conn, year)
    if len(months) < 12:
        missing = [f"{year}-{m:02d}" for m in range(1, 13) if f"{year}-{m:02d}" not in months]
        if not partial_year:
            raise InputError(f"annual settlement of {year}: {len(missing)} month(s) not settled "
                             f"({', '.join(missing)}); settle them, or pass --partial-year to spread the year's "
                             f"budget over the {len(months)} settled month(s)")
    result = settle_year(monthly, policy, year)
    if len(months) < 12:
        result.notes.append(f"only {len(months)} month(s) settled in {year}: {', '.join(months)} (--partial-year)")
    inputs = {"policy": policy.sha256, "months": ",".join(months)}
    extra = {"inputs": inputs, "months": months, "policy_name": policy.name, "form": policy.form}
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


def _reason_counts(priced: pa.Table) -> dict[str, int]:
    vc = pc.value_counts(priced["pricing_reason"])
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
    lines += [f"note: {n}" for n in settlement.notes]
    return "\n".join(lines)
