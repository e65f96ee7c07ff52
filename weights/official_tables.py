"""Official weight tables as published (官方病组权重表): read into the project's weight format.

A city publishes its DRG table as a CSV with its own headers: RW (权重, 初始权重, 标准分值),
payment standards per hospital level and fund (支付标准（三级职工）), base rates (费率), level
coefficients (等级系数), flags (基础病组 / 同等费率病组, 中医优势病组, 单议病组, 不稳定病组),
low/high multiple thresholds (低倍/高倍临界值). :func:`import_table` maps each header to a project
column with the aliases of ``official_columns.toml`` (data, not code), laid under a user's map,
and keeps every published column verbatim as ``src_<header>`` strings, so nothing is lost.

Rows that are not groups (blank, titles, notes, totals, repeated headers) are dropped and
counted by reason; a code repeated with different contents is dropped (or refused, per
``[rows].duplicate_codes``). The counts, the header mapping and the flags found are in the
table's schema metadata (:func:`import_report`). Reference: docs/official_tables.md.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import pyarrow as pa

from drgdip.arrowio import InputError, _encoding

ALIASES_FILE = Path(__file__).with_name("official_columns.toml")
KINDS = ("code", "text", "number", "money", "flag", "threshold")
FLAG_COLUMNS_ORDER = ("basic_group", "review_group", "tcm_group", "unstable_group")
META_KEY = b"drgdip.official_table"
DUPLICATE_RULES = ("drop", "error")
THRESHOLD_UNITS = ("auto", "multiple", "yuan")
_MAP_KEYS = {"columns", "categories", "values", "rows", "qualifiers"}


def norm(s: str) -> str:
    """A header or cell as compared: NFKC (full-width → half-width), no whitespace, upper case."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", s or "")).upper()


# ---------------------------------------------------------------- the alias file and user maps

def _load_toml(path, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such {what}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid TOML: {str(exc).splitlines()[0]}") from None


def check_column_map(m: dict, where: str) -> dict:
    """Validate a user's column map (``[weight_table]`` of a policy or a --region-columns file).

    Keys: ``columns`` (project column → header or list of headers, exact spellings),
    ``categories.headers`` / ``categories.values``, ``values.true`` / ``values.false``,
    ``rows.*`` (as in official_columns.toml), ``qualifiers.*``. One-line InputError if bad."""
    if not isinstance(m, dict):
        raise InputError(f"{where}: weight_table must be a table")
    unknown = set(m) - _MAP_KEYS
    if unknown:
        raise InputError(f"{where}: weight_table: unknown key {sorted(unknown)[0]!r} "
                         f"(known: {', '.join(sorted(_MAP_KEYS))})")
    cols = m.get("columns", {})
    if not isinstance(cols, dict):
        raise InputError(f"{where}: weight_table.columns must be a table of column = \"header\"")
    for k, v in cols.items():
        if isinstance(v, str):
            continue
        if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise InputError(f"{where}: weight_table.columns.{k} must be a header or a list of headers")
    cats = m.get("categories", {})
    if not isinstance(cats, dict) or not isinstance(cats.get("values", {}), dict):
        raise InputError(f"{where}: weight_table.categories must be a table (headers, values)")
    for word, flags in cats.get("values", {}).items():
        if not (isinstance(flags, list) and all(f in FLAG_COLUMNS_ORDER for f in flags)):
            raise InputError(f"{where}: weight_table.categories.values.{word} must be a list of "
                             f"{', '.join(FLAG_COLUMNS_ORDER)}")
    vals = m.get("values", {})
    for k in ("true", "false"):
        v = vals.get(k, []) if isinstance(vals, dict) else None
        if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise InputError(f"{where}: weight_table.values.{k} must be a list of words")
    quals = m.get("qualifiers", {})
    if not isinstance(quals, dict) or set(quals) - {"level", "fund", "ignore"}:
        raise InputError(f"{where}: weight_table.qualifiers takes level, fund (word = key) and ignore (words)")
    for k in ("level", "fund"):
        v = quals.get(k, {})
        if not (isinstance(v, dict) and all(isinstance(x, str) and re.fullmatch(r"[a-z0-9_]+", x) for x in v.values())):
            raise InputError(f"{where}: weight_table.qualifiers.{k} must map words to keys of a-z, 0-9, _")
    if not (isinstance(quals.get("ignore", []), list) and all(isinstance(x, str) for x in quals.get("ignore", []))):
        raise InputError(f"{where}: weight_table.qualifiers.ignore must be a list of words")
    rows = m.get("rows", {})
    if not isinstance(rows, dict):
        raise InputError(f"{where}: weight_table.rows must be a table")
    if "duplicate_codes" in rows and rows["duplicate_codes"] not in DUPLICATE_RULES:
        raise InputError(f"{where}: weight_table.rows.duplicate_codes must be one of {', '.join(DUPLICATE_RULES)}")
    if "threshold_unit" in rows and rows["threshold_unit"] not in THRESHOLD_UNITS:
        raise InputError(f"{where}: weight_table.rows.threshold_unit must be one of {', '.join(THRESHOLD_UNITS)}")
    if "not_codes" in rows and not (isinstance(rows["not_codes"], list)
                                    and all(isinstance(x, str) for x in rows["not_codes"])):
        raise InputError(f"{where}: weight_table.rows.not_codes must be a list of words")
    if "code_pattern" in rows:
        try:
            re.compile(rows["code_pattern"])
        except (re.error, TypeError):
            raise InputError(f"{where}: weight_table.rows.code_pattern is not a regular expression") from None
    return m


def load_column_map(path) -> dict:
    """A user's map from a TOML file: its ``[weight_table]`` section (so a policy file works), else
    the whole file in the same form."""
    data = _load_toml(path, "column map")
    if "weight_table" in data:
        m = data["weight_table"]
    elif set(data) <= _MAP_KEYS:
        m = data
    else:
        raise InputError(f"{path}: has no [weight_table] section (and is not a column map: "
                         f"{sorted(set(data) - _MAP_KEYS)[0]!r} is not one of {', '.join(sorted(_MAP_KEYS))})")
    return check_column_map(m, str(path))


@dataclass
class _Spec:
    rows: dict
    true: set
    false: set
    units: dict
    qualifiers: dict                      # normalised word → (kind, key)
    columns: dict                         # project column → dict(kind, per_level, headers, inverse)
    cat_headers: set
    cat_values: dict                      # normalised word → list of flags
    user_headers: dict = field(default_factory=dict)   # normalised header → project column


def _spec(column_map: dict | None) -> _Spec:
    with ALIASES_FILE.open("rb") as fh:
        base = tomllib.load(fh)
    user = column_map or {}
    rows = {**base["rows"], **user.get("rows", {})}
    vals = base["values"]
    uv = user.get("values", {})
    true = {norm(x) for x in vals["true"] + uv.get("true", [])}
    false = {norm(x) for x in vals["false"] + uv.get("false", [])}
    true -= {norm(x) for x in uv.get("false", [])}
    false -= {norm(x) for x in uv.get("true", [])}
    units = {norm(k): Decimal(str(v)) for k, v in vals["units"].items()}
    q: dict[str, tuple[str, str]] = {}
    bq = {k: dict(v) if isinstance(v, dict) else v for k, v in base["qualifiers"].items()}
    for kind, words in user.get("qualifiers", {}).items():
        if isinstance(words, dict) and isinstance(bq.get(kind), dict):
            bq[kind].update(words)
        elif isinstance(words, list) and isinstance(bq.get(kind), list):
            bq[kind] = bq[kind] + words
    for kind, words in bq.items():
        if isinstance(words, dict):
            for w, key in words.items():
                q[norm(w)] = (kind, key)
        else:
            for w in words:
                q[norm(w)] = ("ignore", "")
    for w in units:
        q.setdefault(w, ("unit", w))
    columns = {}
    for name, c in base["columns"].items():
        if c["kind"] not in KINDS:
            raise InputError(f"{ALIASES_FILE}: columns.{name}.kind {c['kind']!r} is not one of {KINDS}")
        columns[name] = {"kind": c["kind"], "per_level": bool(c.get("per_level", False)),
                         "headers": [norm(h) for h in c["headers"]],
                         "inverse": [norm(h) for h in c.get("inverse_headers", [])]}
    user_headers = {}
    for name, hs in user.get("columns", {}).items():
        if _user_target(name, columns, q) is None:
            raise InputError(f"column map: unknown project column {name!r} (known: {', '.join(columns)}, "
                             "not_<flag>, or <per-level column>_<level>_<fund>)")
        for h in [hs] if isinstance(hs, str) else hs:
            user_headers[norm(h)] = name
    cats = base["categories"]
    ucats = user.get("categories", {})
    cat_headers = {norm(h) for h in cats["headers"] + ucats.get("headers", [])}
    cat_values = {norm(k): list(v) for k, v in {**cats["values"], **ucats.get("values", {})}.items()}
    return _Spec(rows, true, false, units, q, columns, cat_headers, cat_values, user_headers)


def _user_target(name: str, columns: dict, qualifiers: dict) -> tuple[str, bool] | None:
    """(project column, inverse) a user's map key means: a column, ``not_<flag>`` (a header that
    means the opposite), or ``<per-level column>_<key>…`` (payment_standard_level3_employee)."""
    if name in columns:
        return name, False
    if name.startswith("not_") and columns.get(name[4:], {}).get("kind") == "flag":
        return name[4:], True
    keys = {key for kind, key in qualifiers.values() if kind in ("level", "fund")}
    for base, c in columns.items():
        if c["per_level"] and name.startswith(base + "_"):
            rest = name[len(base) + 1:]
            for k in sorted(keys, key=len, reverse=True):
                rest = rest.replace(k, "")
            if set(rest) <= {"_"}:
                return base, False
    return None


# ---------------------------------------------------------------- header matching

def _qualifiers(rest: str, spec: _Spec) -> list[tuple[str, str]] | None:
    """The qualifier words that make up ``rest`` (longest first), or None if some text is not one."""
    out = []
    words = sorted(spec.qualifiers, key=len, reverse=True)
    i = 0
    while i < len(rest):
        for w in words:
            if rest.startswith(w, i):
                kind, key = spec.qualifiers[w]
                if kind != "ignore":
                    out.append((kind, key))
                i += len(w)
                break
        else:
            return None
    return out


@dataclass
class _Match:
    column: str                           # project column (base name)
    kind: str
    qualifiers: list                      # [(kind, key)] level/fund/unit
    inverse: bool = False
    category: bool = False
    out: str | None = None                # the output name a user's map gave


def _match_header(h: str, spec: _Spec) -> _Match | None:
    """The project column a normalised header means, or None (kept as src_ only)."""
    if h in spec.user_headers:
        name = spec.user_headers[h]
        base, inv = _user_target(name, spec.columns, spec.qualifiers)
        return _Match(base, spec.columns[base]["kind"], [], inverse=inv, out=name if not inv else base)
    if h in spec.cat_headers:
        return _Match("category", "category", [], category=True)
    claimed = {(_user_target(v, spec.columns, spec.qualifiers) or (v, False))[0] for v in spec.user_headers.values()}
    best: tuple[int, _Match] | None = None
    for name, c in spec.columns.items():
        if name in claimed and not spec.columns[name]["per_level"]:
            continue
        for aliases, inverse in ((c["headers"], False), (c["inverse"], True)):
            for a in aliases:
                at = h.find(a)
                if at < 0:
                    continue
                q = _qualifiers(h[:at] + h[at + len(a):], spec)
                if q is None:
                    continue
                if best is None or len(a) > best[0]:
                    best = (len(a), _Match(name, c["kind"], q, inverse=inverse))
    return best[1] if best else None


def _out_name(m: _Match, spec: _Spec) -> str:
    if m.out:
        return m.out
    keys = [k for kind, k in m.qualifiers if kind not in ("unit",)]
    if spec.columns[m.column]["per_level"] and keys:
        return "_".join([m.column, *keys])
    return m.column


# ---------------------------------------------------------------- cells

def _number(cell: str, spec: _Spec, unit: Decimal | None) -> tuple[Decimal | None, bool, bool]:
    """(value, was text, was percent) of a published cell; blank → (None, False, False)."""
    s = norm(cell)
    if s == "":
        return None, False, False
    factor = unit if unit is not None else Decimal(1)
    pct = False
    for w in sorted(spec.units, key=len, reverse=True):
        if s.endswith(w) and len(s) > len(w):
            s = s[: -len(w)]
            factor = spec.units[w]
            pct = w == "%"
            break
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?", s):
        s = s.replace(",", "")
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([E][+-]?\d+)?", s):
        return None, True, False
    try:
        return Decimal(s) * factor, False, pct
    except InvalidOperation:
        return None, True, False


def _read_rows(path: Path, encoding: str | None) -> tuple[list[list[str]], str]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(f"{path}: empty file, no header line")
    if b"\x00" in raw[:65536]:
        raise InputError(f"{path}: not a text table (binary data); export the table as CSV")
    enc = _encoding(path, encoding)
    try:
        txt = raw.decode(enc)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not {enc} text at byte {exc.start}; try --encoding gb18030 or utf-8") from None
    txt = txt.lstrip("\ufeff")
    try:
        rows = list(csv.reader(io.StringIO(txt, newline="")))
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV: {exc}") from None
    return rows, enc


def _header(rows: list[list[str]], spec: _Spec, path: Path) -> tuple[int, int, int]:
    """(header row index, rows it spans, code column)."""
    for i, r in enumerate(rows[: int(spec.rows["header_search_rows"])]):
        for j, cell in enumerate(r):
            m = _match_header(norm(cell), spec)
            if m is not None and m.column == "drg" and m.kind == "code":
                span = 1
                while i + span < len(rows):
                    nxt = rows[i + span]
                    code_cell = nxt[j].strip() if j < len(nxt) else ""
                    cells = [c.strip() for c in nxt if c.strip()]
                    if code_cell or not cells or any(_number(c, spec, None)[0] is not None for c in cells):
                        break
                    span += 1
                return i, span, j
    raise InputError(f"{path}: no group-code column found in the first {spec.rows['header_search_rows']} rows "
                     f"(a header such as {', '.join(spec.columns['drg']['headers'][:3])}); "
                     "name it with --region-columns (columns.drg = \"…\")")


def _header_names(rows: list[list[str]], start: int, span: int, width: int) -> list[str]:
    """Published header of each column; a header over several rows (merged cells) is joined as
    ``upper（lower）``, the upper one carried right over the empty cells of a merged span."""
    top = [(rows[start][k].strip() if k < len(rows[start]) else "") for k in range(width)]
    if span == 1:
        return top
    filled, last = [], ""
    for k in range(width):
        last = top[k] or last
        filled.append(last)
    out = []
    for k in range(width):
        lowers = [rows[start + s][k].strip() for s in range(1, span) if k < len(rows[start + s]) and rows[start + s][k].strip()]
        up = filled[k] if lowers else top[k]
        out.append(f"{up}（{'，'.join(lowers)}）" if lowers and up else (lowers[0] if lowers else up))
    return out


# ---------------------------------------------------------------- import

def import_table(path, column_map: dict | None = None, encoding: str | None = None) -> pa.Table:
    """Read a published DRG weight table (CSV, GBK or UTF-8) into the project's weight format.

    Columns: ``drg``, ``name``, ``weight`` (float64, null where the table prints no number,
    e.g. 按项目据实支付), ``mean_cost`` and ``payment_standard[_<level>][_<fund>]`` /
    ``base_rate…`` (decimal, exactly as published), ``level_coefficient_<level>`` (float64),
    flags ``basic_group`` / ``review_group`` / ``tcm_group`` / ``unstable_group`` (bool; only
    those the table has), ``low_k`` / ``high_k`` (float multiples), then every published column
    verbatim as ``src_<header>``. ``column_map``: a user's map (see :func:`check_column_map`).
    The import report (rows dropped by reason, flags, header mapping) is in the schema
    metadata: :func:`import_report`. InputError with one line for a file that cannot be used."""
    path = Path(path)
    spec = _spec(check_column_map(column_map, "column map") if column_map else None)
    rows, enc = _read_rows(path, encoding)
    h0, span, code_col = _header(rows, spec, path)
    width = max(len(r) for r in rows)
    headers = _header_names(rows, h0, span, width)
    while width > 1 and not headers[width - 1] and all(len(r) < width or not r[width - 1].strip() for r in rows):
        width -= 1                                   # trailing empty columns (a comma at each line's end)
    headers = headers[:width]
    # header → project column
    matches: dict[int, _Match] = {}
    names: dict[str, int] = {}
    for k, h in enumerate(headers):
        m = _match_header(norm(h), spec)
        if m is None:
            continue
        if m.kind == "code" and k != code_col:
            continue
        if m.category:
            matches[k] = m
            continue
        out = _out_name(m, spec)
        if out in names:
            raise InputError(f"{path}: columns {headers[names[out]]!r} and {h!r} both mean {out}; "
                             "choose one with --region-columns (columns." + out + " = \"…\")")
        names[out] = k
        matches[k] = m
    # rows
    pat = re.compile(spec.rows["code_pattern"])
    not_codes = {norm(w) for w in spec.rows.get("not_codes", [])}
    dropped: dict[str, int] = {"title": h0}
    examples: dict[str, list[str]] = {}
    header_codes = {norm(headers[code_col])}
    body: list[list[str]] = []
    for r in rows[h0 + span:]:
        r = [c for c in r[:width]] + [""] * (width - len(r))
        code = unicodedata.normalize("NFKC", r[code_col]).strip()
        if not any(c.strip() for c in r):
            why = "blank"
        elif norm(code) in header_codes:
            why = "repeated_header"
        elif not pat.match(code) or norm(code) in not_codes:
            why = "not_a_group"
        else:
            body.append([code] + r)
            continue
        dropped[why] = dropped.get(why, 0) + 1
        ex = examples.setdefault(why, [])
        if len(ex) < 3:
            ex.append(next((c.strip() for c in r if c.strip()), "")[:40])
    # duplicates
    by_code: dict[str, list[int]] = {}
    for i, r in enumerate(body):
        by_code.setdefault(r[0], []).append(i)
    drop_idx: set[int] = set()
    for code, ix in by_code.items():
        if len(ix) == 1:
            continue
        if all(body[i][1:] == body[ix[0]][1:] for i in ix):
            drop_idx.update(ix[1:])
            dropped["duplicate_identical"] = dropped.get("duplicate_identical", 0) + len(ix) - 1
            examples.setdefault("duplicate_identical", []).append(code)
            continue
        if spec.rows["duplicate_codes"] == "error":
            raise InputError(f"{path}: group {code} appears {len(ix)} times with different contents "
                             f"(rows {', '.join(str(h0 + span + 1 + i) for i in ix)}); fix the file, or set "
                             "rows.duplicate_codes = \"drop\" in the column map")
        drop_idx.update(ix)
        dropped["duplicate_code"] = dropped.get("duplicate_code", 0) + len(ix)
        examples.setdefault("duplicate_code", []).append(code)
    body = [r for i, r in enumerate(body) if i not in drop_idx]
    if not body:
        raise InputError(f"{path}: no group rows (no code in column {headers[code_col]!r} matches "
                         f"{spec.rows['code_pattern']})")
    n = len(body)
    cell = lambda r, k: r[k + 1]  # noqa: E731 - body rows carry the normalised code first

    # build the project columns
    arrays: dict[str, pa.Array] = {}
    text_values: dict[str, dict[str, int]] = {}
    unknown_words: dict[str, dict[str, int]] = {}
    flags: dict[str, int] = {}
    thresholds: dict[str, str] = {}
    mapping: dict[str, str] = {}
    pending_thresholds = []
    for k, m in sorted(matches.items()):
        h = headers[k]
        if m.category:
            words = [norm(cell(r, k)) for r in body]
            for f in FLAG_COLUMNS_ORDER:
                hit = [w in spec.cat_values and f in spec.cat_values[w] for w in words]
                if any(hit):
                    if f in arrays:
                        raise InputError(f"{path}: {f} is given twice (a flag column and {h!r}); keep one "
                                         "with --region-columns")
                    arrays[f] = pa.array(hit, pa.bool_())
                    mapping[f] = h
            for w in words:
                if w and w not in spec.cat_values:
                    unknown_words.setdefault(h, {}).setdefault(w, 0)
                    unknown_words[h][w] += 1
            continue
        out = _out_name(m, spec)
        mapping[out] = h
        unit = next((spec.units[key] for kind, key in m.qualifiers if kind == "unit"), None)
        if m.kind == "code":
            arrays[out] = pa.array([r[0] for r in body], pa.string())
        elif m.kind == "text":
            arrays[out] = pa.array([cell(r, k).strip() or None for r in body], pa.string())
        elif m.kind == "flag":
            vals = []
            for r in body:
                w = norm(cell(r, k))
                if w == "" or w in spec.false:
                    v = False
                elif w in spec.true:
                    v = True
                else:
                    unknown_words.setdefault(h, {}).setdefault(w, 0)
                    unknown_words[h][w] += 1
                    v = None
                vals.append(None if v is None else (v != m.inverse))
            if out in arrays:
                raise InputError(f"{path}: {out} is given twice ({mapping[out]!r} and a category column)")
            arrays[out] = pa.array(vals, pa.bool_())
        else:
            nums, pcts = [], []
            for r in body:
                v, was_text, pct = _number(cell(r, k), spec, unit)
                if was_text:
                    text_values.setdefault(out, {}).setdefault(cell(r, k).strip(), 0)
                    text_values[out][cell(r, k).strip()] += 1
                nums.append(v)
                pcts.append(pct)
            if m.kind == "number":
                arrays[out] = pa.array([None if v is None else float(v) for v in nums], pa.float64())
            elif m.kind == "money":
                scale = max([2] + [max(0, -v.as_tuple().exponent) for v in nums if v is not None])
                if scale > 18:
                    raise InputError(f"{path}: column {h!r} has more than 18 decimals")
                q = Decimal(1).scaleb(-scale)
                arrays[out] = pa.array([None if v is None else v.quantize(q) for v in nums],
                                       pa.decimal128(38, scale))
            else:   # threshold
                pending_thresholds.append((out, h, m, nums, pcts))
    for out, h, m, nums, pcts in pending_thresholds:
        unit_rule = spec.rows["threshold_unit"]
        present = [v for v, p in zip(nums, pcts) if v is not None and not p]
        yuan = unit_rule == "yuan" or (unit_rule == "auto" and present and
                                       max(present) > Decimal(str(spec.rows["max_multiple"])))
        if yuan:
            levels = [key for kind, key in m.qualifiers if kind in ("level", "fund")]
            ref_name = "_".join(["payment_standard", *levels])
            if ref_name not in arrays:
                ps = sorted(c for c in arrays if c.startswith("payment_standard"))
                ref_name = ps[0] if len(ps) == 1 else ("mean_cost" if "mean_cost" in arrays else None)
            if ref_name is None:
                raise InputError(f"{path}: {h!r} holds amounts (up to {max(present)}), not multiples, and the "
                                 "table has no payment standard or mean cost to divide them by; set "
                                 "rows.threshold_unit in --region-columns")
            ref = arrays[ref_name].to_pylist()
            q = Decimal(1).scaleb(-int(spec.rows["threshold_decimals"]))
            vals = [None if v is None or not r else float((v / r).quantize(q, rounding=ROUND_HALF_UP))
                    for v, r in zip(nums, ref)]
            thresholds[out] = f"{h} (yuan) / {mapping[ref_name]}"
        else:
            vals = [None if v is None else float(v) for v in nums]
            thresholds[out] = f"{h} (multiple)"
        arrays[out] = pa.array(vals, pa.float64())
    if "drg" not in arrays:
        arrays["drg"] = pa.array([r[0] for r in body], pa.string())
        mapping["drg"] = headers[code_col]
    if "weight" not in arrays:
        raise InputError(f"{path}: no weight column ({', '.join(spec.columns['weight']['headers'][:4])} …) among "
                         f"{', '.join(h for h in headers if h)}; name it with --region-columns "
                         "(columns.weight = \"…\")")
    for f in FLAG_COLUMNS_ORDER:
        if f in arrays:
            flags[f] = sum(1 for v in arrays[f].to_pylist() if v)
    order = ["drg", "name", "weight", "mean_cost"]
    order += sorted(c for c in arrays if c.startswith(("payment_standard", "base_rate", "level_coefficient")))
    order += [f for f in FLAG_COLUMNS_ORDER] + ["low_k", "high_k"]
    cols = {c: arrays[c] for c in order if c in arrays}
    seen: dict[str, int] = {}
    for k, h in enumerate(headers):
        base = f"src_{h or f'column{k + 1}'}"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}_{seen[base]}"
        cols[name] = pa.array([cell(r, k) if cell(r, k) != "" else None for r in body], pa.string())
    no_weight = sum(1 for v in arrays["weight"].to_pylist() if v is None)
    report = {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "encoding": enc,
        "header_row": h0 + 1,
        "header_rows": span,
        "groups": n,
        "rows_dropped": {k: v for k, v in dropped.items() if v},
        "dropped_examples": {k: v for k, v in examples.items() if dropped.get(k)},
        "flags": flags,
        "columns": mapping,
        "unmapped": [h for k, h in enumerate(headers) if k not in matches and h],
        "thresholds": thresholds,
        "groups_without_weight": no_weight,
        "text_values": text_values,
        "unknown_words": unknown_words,
    }
    t = pa.table(cols)
    return t.replace_schema_metadata({META_KEY: json.dumps(report, ensure_ascii=False, sort_keys=True).encode()})


def import_report(table: pa.Table) -> dict:
    """The import report kept in an imported table's schema metadata ({} if none)."""
    meta = table.schema.metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else {}


def summary_text(report: dict) -> str:
    """The import report in a few lines for the CLI."""
    lines = [f"{report['file']} ({report['encoding']}): {report['groups']} groups read, "
             f"{report['groups_without_weight']} without a weight"]
    d = report["rows_dropped"]
    if d:
        parts = []
        for k, v in sorted(d.items()):
            ex = report["dropped_examples"].get(k)
            parts.append(f"{k} {v}" + (f" ({', '.join(ex)})" if ex else ""))
        lines.append("rows dropped: " + "; ".join(parts))
    else:
        lines.append("rows dropped: none")
    f = report["flags"]
    lines.append("flags: " + (", ".join(f"{k} {v}" for k, v in f.items()) if f else "none in this table"))
    for out, how in report["thresholds"].items():
        lines.append(f"{out}: from {how}")
    for col, vals in report["text_values"].items():
        lines.append(f"{col}: not a number, read as empty: " + ", ".join(f"{w!r} ×{c}" for w, c in vals.items()))
    for col, vals in report["unknown_words"].items():
        lines.append(f"{col}: words not recognised (flag left empty; add them to the column map): "
                     + ", ".join(f"{w!r} ×{c}" for w, c in vals.items()))
    if report["unmapped"]:
        lines.append("kept as src_ only: " + ", ".join(report["unmapped"]))
    return "\n".join(lines)


def import_file(path, out, column_map_path=None, encoding: str | None = None) -> dict:
    """Import ``path`` and write it atomically to ``out`` (.parquet or .csv); the report."""
    from drgdip.arrowio import write_table
    cmap = load_column_map(column_map_path) if column_map_path else None
    t = import_table(path, cmap, encoding)
    write_table(t, out)
    return import_report(t)


__all__ = ["import_table", "import_report", "import_file", "load_column_map", "check_column_map", "summary_text",
           "norm"]

