"""The settlement ledger (结算台账): every settlement run, in an embedded SQLite database.

SQLite (stdlib, transactional, one file): each run is written in ONE transaction, so a
run that fails half-way leaves the ledger as it was. A run records its period and kind
(monthly 月度预结算 / annual 年度清算), revision, time, scheme id, the policy text and
hash, the SHA-256 of every input file, the per-fund figures (point values) and the
per-hospital results (money in integer cents). Settling a period that is already settled
is refused unless ``reopen``; the new run is then the next revision and the previous one
is kept, marked superseded.

With ``[readmission] across_periods`` a monthly run also keeps, in ``readmission_tail``, the
stays discharged in the month's last ``days`` days (weights/settlement/readmission.py
``TAIL_COLUMNS``): what the next months need to pair a readmission with an earlier stay of this
month. The table is created, and a reopened month's rows replaced, inside the run's transaction.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pyarrow as pa

from drgdip.arrowio import InputError

SCHEMA_VERSION = 3      # 2: the fund's limits (issue 12): columns added, NULL in runs recorded before
#                         3: hospital_group_totals (consumption indices group by group, issue 12)
#                            and readmission_tail (readmissions across months), created by the first run recorded

ADDED_COLUMNS = (
    ("fund_results", "projected_point_value", "REAL"), ("fund_results", "reserve_cents", "INTEGER"),
    ("fund_results", "reserve_used_cents", "INTEGER"), ("fund_results", "cap_cut_cents", "INTEGER"),
    ("hospital_results", "held_cents", "INTEGER"), ("hospital_results", "los_days", "REAL"),
    ("hospital_results", "incentive_coefficient", "REAL"), ("hospital_results", "settled_points", "REAL"),
    ("hospital_results", "quality_score", "REAL"), ("hospital_results", "quality_refund_cents", "INTEGER"),
    ("hospital_results", "quality_kept_cents", "INTEGER"), ("hospital_results", "quality_reason", "TEXT"),
    ("hospital_results", "monthly_held_cents", "INTEGER"), ("hospital_results", "cap_cut_cents", "INTEGER"),
    # special review (特例单议): cases held undecided and their cost; 0 in runs recorded before
    ("hospital_results", "held_cases", "INTEGER NOT NULL DEFAULT 0"),
    ("hospital_results", "held_cost_cents", "INTEGER NOT NULL DEFAULT 0"),
)
#: tables added after version 1: (name, DDL); created, like the columns, inside the transaction
#: of the first run recorded with this version (a failed run leaves an old ledger as it was)
ADDED_TABLES = (
    # per monthly run, hospital, payment method and group: the priced cases, their cost and Σ length
    # of stay, for 费用/时间消耗指数 group by group (docs/settlement.md §9); no rows in runs recorded before
    ("hospital_group_totals", """CREATE TABLE IF NOT EXISTS hospital_group_totals (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    hospital_id TEXT NOT NULL,
    method TEXT NOT NULL,
    group_key TEXT NOT NULL,
    cases INTEGER NOT NULL,
    cost_cents INTEGER NOT NULL,
    los_days REAL NOT NULL,
    PRIMARY KEY (run_id, hospital_id, method, group_key))"""),
    # the earlier months' stays a readmission can pair with (docs/settlement.md "Readmissions
    # across months"), then the index the next month's read uses
    ("readmission_tail", """CREATE TABLE IF NOT EXISTS readmission_tail (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    seq INTEGER NOT NULL,
    key_kind TEXT NOT NULL,
    settlement_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    hospital_id TEXT NOT NULL,
    readmission_key TEXT NOT NULL,
    admission_day INTEGER NOT NULL,
    discharge_day INTEGER NOT NULL,
    fund_key TEXT,
    points REAL,
    cut INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
)"""),
    ("readmission_tail", "CREATE INDEX IF NOT EXISTS readmission_tail_day ON readmission_tail (discharge_day)"),
)
GROUP_FIELDS = ("hospital_id", "method", "group_key", "cases", "cost_cents", "los_days")
#: added columns read as 0 (not NULL) where a ledger of before has none
ZERO_DEFAULT = frozenset(("held_cases", "held_cost_cents"))

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    period TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('monthly', 'annual')),
    revision INTEGER NOT NULL,
    current INTEGER NOT NULL CHECK (current IN (0, 1)),
    created_at TEXT NOT NULL,
    scheme_id TEXT,
    policy_sha256 TEXT NOT NULL,
    policy_text TEXT NOT NULL,
    inputs TEXT NOT NULL,
    summary TEXT NOT NULL,
    UNIQUE (period, kind, revision)
);
CREATE TABLE IF NOT EXISTS fund_results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    fund TEXT NOT NULL,
    budget_cents INTEGER,
    personal_share_cents INTEGER NOT NULL,
    total_points REAL NOT NULL,
    point_value REAL,
    cases INTEGER NOT NULL,
    projected_point_value REAL,
    reserve_cents INTEGER,
    reserve_used_cents INTEGER,
    cap_cut_cents INTEGER,
    PRIMARY KEY (run_id, fund)
);
CREATE TABLE IF NOT EXISTS hospital_results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    hospital_id TEXT NOT NULL,
    fund TEXT NOT NULL,
    cases INTEGER NOT NULL,
    unpriced_cases INTEGER NOT NULL,
    weight_sum REAL NOT NULL,
    points REAL NOT NULL,
    point_value REAL,
    personal_share_cents INTEGER NOT NULL,
    payment_cents INTEGER NOT NULL,
    amount_due_cents INTEGER NOT NULL,
    withheld_cents INTEGER NOT NULL,
    paid_cents INTEGER NOT NULL,
    cost_cents INTEGER NOT NULL,
    unpriced_cost_cents INTEGER NOT NULL,
    adjustment_cents INTEGER,
    monthly_paid_cents INTEGER,
    balance_cents INTEGER,
    held_cents INTEGER,
    los_days REAL,
    incentive_coefficient REAL,
    settled_points REAL,
    quality_score REAL,
    quality_refund_cents INTEGER,
    quality_kept_cents INTEGER,
    quality_reason TEXT,
    monthly_held_cents INTEGER,
    cap_cut_cents INTEGER,
    held_cases INTEGER NOT NULL DEFAULT 0,
    held_cost_cents INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, hospital_id, fund)
);
CREATE INDEX IF NOT EXISTS runs_period ON runs (kind, period, current);
"""

HOSPITAL_FIELDS = ("hospital_id", "fund", "cases", "unpriced_cases", "weight_sum", "points", "point_value",
                   "personal_share_cents", "payment_cents", "amount_due_cents", "withheld_cents", "paid_cents",
                   "cost_cents", "unpriced_cost_cents", "adjustment_cents", "monthly_paid_cents", "balance_cents") + \
    tuple(c for t, c, _ in ADDED_COLUMNS if t == "hospital_results")
FUND_FIELDS = ("budget_cents", "personal_share_cents", "total_points", "point_value", "cases") + \
    tuple(c for t, c, _ in ADDED_COLUMNS if t == "fund_results")


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a ledger of an earlier version the columns added since (inside the caller's transaction)."""
    for table, col, kind in ADDED_COLUMNS:
        if col not in table_columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
    for _, ddl in ADDED_TABLES:
        conn.execute(ddl)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


class LedgerError(InputError):
    """A ledger operation refused (one line for a person)."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_path(path: str | os.PathLike, new_ledger: bool = False) -> None:
    """Refuse a ledger path that would silently start a fresh ledger somewhere unintended:
    a ledger whose folder does not exist is created (with its folders) only with
    ``new_ledger``; ``new_ledger`` on a ledger that exists is refused too."""
    p = Path(path)
    if p.exists():
        if not p.is_file():
            raise LedgerError(f"{p}: is not a ledger file")
        if new_ledger:
            raise LedgerError(f"{p}: the ledger already exists; drop --new-ledger to add to it")
    elif not p.parent.is_dir() and not new_ledger:
        raise LedgerError(f"{p}: no such ledger, and its folder {p.parent} does not exist; "
                          "check the path, or pass --new-ledger to start a new ledger there")


def connect(path: str | os.PathLike, create: bool = True, parents: bool = False) -> sqlite3.Connection:
    """Open (and create when asked) a ledger database; autocommit mode, explicit transactions.
    Missing folders are created only with ``parents`` (see :func:`check_path`)."""
    p = Path(path)
    if not create and not p.is_file():
        raise LedgerError(f"{p}: no such ledger")
    if create and not p.parent.is_dir():
        if not parents:
            raise LedgerError(f"{p}: its folder {p.parent} does not exist (pass --new-ledger to create it)")
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(p), isolation_level=None, timeout=30)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_DDL)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{p}: not a drgdip ledger ({exc})") from None
    return conn


def current_run(conn: sqlite3.Connection, period: str, kind: str) -> dict | None:
    row = conn.execute("SELECT run_id, revision, created_at FROM runs WHERE period=? AND kind=? AND current=1",
                       (period, kind)).fetchone()
    return None if row is None else {"run_id": row[0], "revision": row[1], "created_at": row[2]}


def check_open(conn: sqlite3.Connection, period: str, kind: str, reopen: bool) -> int:
    """The revision a new run of this period would get, or LedgerError if settled and not reopened."""
    cur = current_run(conn, period, kind)
    if cur is None:
        last = conn.execute("SELECT MAX(revision) FROM runs WHERE period=? AND kind=?", (period, kind)).fetchone()[0]
        return (last or 0) + 1
    if not reopen:
        raise LedgerError(f"{kind} settlement of {period} is already recorded (revision {cur['revision']}, "
                          f"{cur['created_at']}); use --reopen to settle it again as revision {cur['revision'] + 1}")
    return cur["revision"] + 1


def record_run(conn: sqlite3.Connection, settlement, *, policy, inputs: dict[str, str], scheme_id: str | None,
               reopen: bool = False, now: str | None = None, readmission_tail: pa.Table | None = None,
               key_kind: str | None = None) -> int:
    """Write one settlement run (all of it or nothing). Returns its revision.

    ``readmission_tail``: the month's stays for the next months' readmission pairing
    (readmission.TAIL_COLUMNS, key made as ``key_kind``); the superseded revision's rows go."""
    created = now or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    h = settlement.hospitals
    cols = {name: (h[name].to_pylist() if name in h.column_names else
                   [0 if name in ZERO_DEFAULT else None] * h.num_rows) for name in HOSPITAL_FIELDS}
    rows = list(zip(*(cols[name] for name in HOSPITAL_FIELDS)))
    try:
        conn.execute("BEGIN IMMEDIATE")
        _add_columns(conn)
        revision = check_open(conn, settlement.period, settlement.kind, reopen)
        conn.execute("DELETE FROM readmission_tail WHERE run_id IN (SELECT run_id FROM runs WHERE period=? AND"
                     " kind=? AND current=1)", (settlement.period, settlement.kind))
        conn.execute("UPDATE runs SET current=0 WHERE period=? AND kind=? AND current=1",
                     (settlement.period, settlement.kind))
        cur = conn.execute(
            "INSERT INTO runs (period, kind, revision, current, created_at, scheme_id, policy_sha256, policy_text,"
            " inputs, summary) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (settlement.period, settlement.kind, revision, 1, created, scheme_id, policy.sha256, policy.source,
             json.dumps(inputs, sort_keys=True, ensure_ascii=False),
             json.dumps(settlement.summary(), sort_keys=True, ensure_ascii=False)))
        run_id = cur.lastrowid
        for fund, f in sorted(settlement.funds.items()):
            def cents(name):
                return None if f.get(name) is None else round(f[name] * 100)
            conn.execute(f"INSERT INTO fund_results (run_id, fund, {', '.join(FUND_FIELDS)}) VALUES "
                         f"(?, ?, {', '.join('?' * len(FUND_FIELDS))})",
                         (run_id, fund, cents("budget"), round(f["personal_share"] * 100), f["total_points"],
                          f["point_value"], f["cases"], f.get("projected_point_value"), cents("reserve"),
                          cents("reserve_used"), cents("cap_cut")))
        conn.executemany(f"INSERT INTO hospital_results (run_id, {', '.join(HOSPITAL_FIELDS)}) VALUES "
                         f"(?, {', '.join('?' * len(HOSPITAL_FIELDS))})",
                         [(run_id, *(None if isinstance(v, float) and v != v else v for v in r)) for r in rows])
        if readmission_tail is not None and readmission_tail.num_rows:
            t = readmission_tail
            names = ("settlement_id", "patient_id", "hospital_id", "readmission_key", "admission_day",
                     "discharge_day", "fund_key", "points", "cut")
            sql = (f"INSERT INTO readmission_tail (run_id, seq, key_kind, {', '.join(names)}) VALUES "
                   f"(?, ?, ?, {', '.join('?' * len(names))})")
            for lo in range(0, t.num_rows, 1 << 13):      # in chunks: no Python row for every stay at once
                part = t.slice(lo, 1 << 13)
                data = zip(*(part[c].to_pylist() for c in names))
                conn.executemany(sql, [(run_id, lo + i, key_kind, *(None if isinstance(v, float) and v != v else v
                                                                    for v in r)) for i, r in enumerate(data)])
        _record_groups(conn, run_id, getattr(settlement, "groups", None))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return revision


def readmission_tail(conn: sqlite3.Connection, period: str, key_kind: str, from_day: int, keep=None) -> pa.Table:
    """The stays kept by the current monthly runs of the periods before ``period`` (key made as
    ``key_kind``) discharged on ``from_day`` or later, oldest period first, each in its file order;
    with their ``period``. Empty when the ledger has none (or no such table yet). ``keep``
    (table → bool mask): only those rows, applied chunk by chunk as they are read."""
    names = ("settlement_id", "patient_id", "hospital_id", "readmission_key", "admission_day", "discharge_day",
             "fund_key", "points", "cut")
    types = (pa.string(),) * 4 + (pa.int32(), pa.int32(), pa.string(), pa.float64(), pa.bool_())
    have = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='readmission_tail'").fetchone()
    def table(rows):
        cols = list(zip(*rows)) if rows else [[] for _ in range(len(names) + 1)]
        out = {"period": pa.array(list(cols[0]), pa.string())}
        for name, typ, c in zip(names, types, cols[1:]):
            out[name] = pa.array([bool(v) for v in c] if typ == pa.bool_() else list(c), typ)
        return pa.table(out)
    parts = [table([])]
    if have is not None:
        cur = conn.execute(
            f"SELECT r.period, {', '.join('t.' + c for c in names)} FROM readmission_tail t JOIN runs r"
            " USING (run_id) WHERE r.kind='monthly' AND r.current=1 AND r.period < ? AND t.key_kind=? AND"
            " t.discharge_day >= ? ORDER BY r.period, t.seq", (period, key_kind, from_day))
        while rows := cur.fetchmany(1 << 13):
            t = table(rows)
            parts.append(t if keep is None else t.filter(pa.array(keep(t))))
    return pa.concat_tables(parts)


def monthly_rows(conn: sqlite3.Connection, year: str) -> tuple[pa.Table, list[str]]:
    """The hospital rows of the year's current monthly runs, and the months they cover."""
    months = [r[0] for r in conn.execute(
        "SELECT period FROM runs WHERE kind='monthly' AND current=1 AND period LIKE ? ORDER BY period",
        (f"{year}-%",))]
    if not months:
        raise LedgerError(f"the ledger has no monthly settlement of {year}: settle its months first")
    names = HOSPITAL_FIELDS[:14] + ("los_days", "held_cases", "held_cost_cents")
    have = table_columns(conn, "hospital_results")
    sel = ", ".join(f"h.{c}" if c in have else f"{0 if c in ZERO_DEFAULT else 'NULL'} AS {c}" for c in names)
    q = (f"SELECT {sel} FROM hospital_results h JOIN runs r "
         "USING (run_id) WHERE r.kind='monthly' AND r.current=1 AND r.period LIKE ? ORDER BY r.period, "
         "h.hospital_id, h.fund")
    data = conn.execute(q, (f"{year}-%",)).fetchall()
    cols = list(zip(*data)) if data else [[] for _ in names]
    types = {"hospital_id": pa.string(), "fund": pa.string(), "weight_sum": pa.float64(), "points": pa.float64(),
             "point_value": pa.float64(), "los_days": pa.float64()}
    return pa.table({n: pa.array(list(c), types.get(n, pa.int64())) for n, c in zip(names, cols)}), months


def _record_groups(conn: sqlite3.Connection, run_id: int, groups: pa.Table | None) -> None:
    """A monthly run's totals per hospital, method and group (inside record_run's transaction)."""
    if groups is None or groups.num_rows == 0:
        return
    conn.executemany(f"INSERT INTO hospital_group_totals (run_id, {', '.join(GROUP_FIELDS)}) VALUES "
                     f"(?, {', '.join('?' * len(GROUP_FIELDS))})",
                     [(run_id, *r) for r in zip(*(groups[c].to_pylist() for c in GROUP_FIELDS))])


def group_totals(conn: sqlite3.Connection, year: str) -> tuple[pa.Table, list[str]]:
    """The year's totals per hospital, method and group (GROUP_FIELDS, summed over its current
    monthly runs; sorted), and the months with priced cases but no group rows (recorded before
    the ledger kept them: the consumption indices group by group cannot be computed)."""
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    months = conn.execute(
        "SELECT r.period, r.run_id, (SELECT COALESCE(SUM(h.cases), 0) FROM hospital_results h WHERE h.run_id=r.run_id)"
        " FROM runs r WHERE r.kind='monthly' AND r.current=1 AND r.period LIKE ? ORDER BY r.period",
        (f"{year}-%",)).fetchall()
    if "hospital_group_totals" not in have:
        return pa.table({c: pa.array([], pa.float64() if c == "los_days" else pa.string() if c in
                                      ("hospital_id", "method", "group_key") else pa.int64()) for c in GROUP_FIELDS}), \
            [p for p, _, c in months if c]
    with_rows = {r[0] for r in conn.execute("SELECT DISTINCT run_id FROM hospital_group_totals")}
    missing = [p for p, run, c in months if c and run not in with_rows]
    data = conn.execute(
        "SELECT g.hospital_id, g.method, g.group_key, SUM(g.cases), SUM(g.cost_cents), SUM(g.los_days)"
        " FROM hospital_group_totals g JOIN runs r USING (run_id) WHERE r.kind='monthly' AND r.current=1"
        " AND r.period LIKE ? GROUP BY g.hospital_id, g.method, g.group_key"
        " ORDER BY g.hospital_id, g.method, g.group_key", (f"{year}-%",)).fetchall()
    cols = list(zip(*data)) if data else [[] for _ in GROUP_FIELDS]
    types = (pa.string(), pa.string(), pa.string(), pa.int64(), pa.int64(), pa.float64())
    return pa.table({n: pa.array(list(c), t) for n, c, t in zip(GROUP_FIELDS, cols, types)}), missing


def annual_funds(conn: sqlite3.Connection, year: str) -> dict[str, tuple[float, int]]:
    """fund → (total points, personal share in cents) of the year's current annual settlement
    (empty when there is none): the history a projected point value may start from."""
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT f.fund, f.total_points, f.personal_share_cents FROM fund_results f JOIN runs r USING (run_id)"
        " WHERE r.kind='annual' AND r.current=1 AND r.period=? ORDER BY f.fund", (year,))}


def stale_annual_runs(conn: sqlite3.Connection) -> set[int]:
    """run_ids of current annual settlements made stale: a month of their year was settled or
    reopened (recorded) after them, so the annual figures no longer match the months."""
    return {r[0] for r in conn.execute(
        "SELECT a.run_id FROM runs a WHERE a.kind='annual' AND a.current=1 AND EXISTS (SELECT 1 FROM runs m"
        " WHERE m.kind='monthly' AND substr(m.period, 1, 4)=a.period AND m.run_id > a.run_id)")}


def runs(conn: sqlite3.Connection) -> list[dict]:
    """Every run, oldest first, with its per-fund point values.

    Each run's ``state`` is "current", "superseded" or "stale" (a current annual settlement
    with a month of its year settled or reopened after it; also ``stale`` = True)."""
    out = []
    stale = stale_annual_runs(conn)
    have = table_columns(conn, "fund_results")
    hospital_have = table_columns(conn, "hospital_results")
    added = [c for t, c, _ in ADDED_COLUMNS if t == "fund_results"]
    extra = ", ".join(c if c in have else f"NULL AS {c}" for c in added)
    for row in conn.execute("SELECT run_id, period, kind, revision, current, created_at, scheme_id, policy_sha256,"
                            " inputs FROM runs ORDER BY run_id"):
        funds = conn.execute(f"SELECT fund, budget_cents, personal_share_cents, total_points, point_value, cases,"
                             f" {extra} FROM fund_results WHERE run_id=? ORDER BY fund", (row[0],)).fetchall()
        hospitals = conn.execute("SELECT COUNT(*), SUM(amount_due_cents), SUM(paid_cents) FROM hospital_results"
                                 " WHERE run_id=?", (row[0],)).fetchone()
        held = conn.execute("SELECT hospital_id, SUM(held_cases), SUM(held_cost_cents) FROM hospital_results"
                            " WHERE run_id=? AND held_cases > 0 GROUP BY hospital_id ORDER BY hospital_id",
                            (row[0],)).fetchall() if "held_cases" in hospital_have else []
        out.append({"run_id": row[0], "period": row[1], "kind": row[2], "revision": row[3],
                    "current": bool(row[4]), "stale": row[0] in stale,
                    "state": "stale" if row[0] in stale else "current" if row[4] else "superseded",
                    "created_at": row[5], "scheme_id": row[6], "policy_sha256": row[7],
                    "inputs": json.loads(row[8]),
                    "funds": [{"fund": f[0], "budget": None if f[1] is None else f[1] / 100, "personal_share":
                               f[2] / 100, "total_points": f[3], "point_value": f[4], "cases": f[5],
                               **dict(zip(added, f[6:]))} for f in funds],
                    "hospitals": hospitals[0], "amount_due": (hospitals[1] or 0) / 100,
                    "paid": (hospitals[2] or 0) / 100,
                    "held": [{"hospital_id": h[0], "cases": h[1], "cost": h[2] / 100} for h in held]})
    return out


def show(path: str | os.PathLike) -> str:
    """A printable account of what was settled, when, with what."""
    with closing(connect(path, create=False)) as conn:
        rs = runs(conn)
    if not rs:
        return f"{path}: no settlement recorded"
    lines = [f"{'run':>4} {'period':<8} {'kind':<8} {'rev':>3} {'state':<10} {'fund':<9} {'cases':>8} "
             f"{'points':>14} {'point value':>12} {'budget':>16} {'hospitals':>9} {'recorded (UTC)':<25} policy / scheme"]
    for r in rs:
        state = r["state"]
        for i, f in enumerate(r["funds"] or [{"fund": "-", "cases": 0, "total_points": 0.0, "point_value": None,
                                              "budget": None}]):
            pv = "-" if f["point_value"] is None else f"{f['point_value']:.6f}"
            bud = "-" if f["budget"] is None else f"{f['budget']:.2f}"
            tail = (f"{r['created_at']:<25} {r['policy_sha256'][:12]} / {r['scheme_id'] or '-'}" if i == 0 else "")
            lines.append(f"{r['run_id'] if i == 0 else '':>4} {r['period'] if i == 0 else '':<8} "
                         f"{r['kind'] if i == 0 else '':<8} {r['revision'] if i == 0 else '':>3} "
                         f"{state if i == 0 else '':<10} {f['fund']:<9} {f['cases']:>8} {f['total_points']:>14.4f} "
                         f"{pv:>12} {bud:>16} {r['hospitals'] if i == 0 else '':>9} {tail}")
        for f in r["funds"]:
            bits = []
            if f.get("projected_point_value") is not None:
                bits.append(f"projected point value {f['projected_point_value']:.6f}")
            if f.get("reserve_cents") is not None:
                bits.append(f"reserve {f['reserve_cents'] / 100:.2f}, used {(f['reserve_used_cents'] or 0) / 100:.2f}, "
                            f"cut by the cap {(f['cap_cut_cents'] or 0) / 100:.2f}")
            if bits:
                lines.append(f"{'':>4}   {f['fund']}: " + "; ".join(bits))
        for name, digest in sorted(r["inputs"].items()):
            lines.append(f"{'':>4}   input {name}: {digest}")
        if r["held"]:
            n_held = sum(h["cases"] for h in r["held"])
            cost = sum(round(h["cost"] * 100) for h in r["held"]) / 100
            lines.append(f"{'':>4}   held for special review, undecided: {n_held} case(s), cost {cost:.2f} ("
                         + ", ".join(f"{h['hospital_id']} {h['cases']}: {h['cost']:.2f}" for h in r["held"]) + ")")
        if r["stale"]:
            lines.append(f"{'':>4}   stale: a month of {r['period']} was settled after this annual settlement; "
                         f"settle {r['period']} --final --reopen")
    return "\n".join(lines)
