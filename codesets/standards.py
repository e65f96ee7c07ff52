"""The 15 medical-insurance coding standards (医保信息业务编码标准): layouts, parsers, validators.

Layouts are data (``standards.toml`` beside this module): per standard one or more
layouts, each a regular expression whose named groups are the code's segments, a status
(``verified`` / ``reported`` / ``unpublished``) and example codes. Validation is
vectorised over Arrow string arrays; a code that fails gets the first problem found, in
this order (reason codes of ``reasons.csv``, area ``qc``):

``CODE_BAD_CHARS`` → ``CODE_TOO_LONG`` → ``CODE_BAD_PREFIX`` → ``CODE_BAD_LENGTH`` →
``CODE_BAD_REGION`` → ``CODE_BAD_LAYOUT``.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import InputError
from drgdip.codesets.normalize import normalize_code, normalize_codes

PROBLEMS = ("CODE_BAD_CHARS", "CODE_TOO_LONG", "CODE_BAD_PREFIX", "CODE_BAD_LENGTH",
            "CODE_BAD_REGION", "CODE_BAD_LAYOUT")
_CHARS = r"^[0-9A-Za-z.+*]+$"
_MARKER = re.compile(r"\(\?P<marker>([^)]*)\)")


@dataclass(frozen=True)
class Layout:
    name: str
    status: str
    regex: str
    examples: tuple[str, ...]
    segments: dict
    length: int | None = None
    region: str | None = None

    @property
    def marker(self) -> str | None:
        """The regex of the leading marker segment (e.g. ``H``, ``H[YJ]``), if any."""
        m = _MARKER.search(self.regex)
        return m.group(1) if m else None


@dataclass(frozen=True)
class Standard:
    id: str
    number: int
    zh: str
    en: str
    max_length: int
    layouts: tuple[Layout, ...]
    columns: tuple[str, ...] = ()
    lower_x: bool = False     # codes use a lower-case extension x (ICD editions)

    @property
    def has_code(self) -> bool:
        return any(l.regex for l in self.layouts)


@lru_cache(maxsize=1)
def _data() -> dict:
    with Path(__file__).with_name("standards.toml").open("rb") as fh:
        return tomllib.load(fh)


@lru_cache(maxsize=1)
def standards() -> dict[str, Standard]:
    """All standards by id, in file order."""
    out = {}
    for s in _data()["standard"]:
        layouts = tuple(Layout(l["name"], l["status"], l["regex"], tuple(l.get("examples", ())),
                               dict(l.get("segments", {})), l.get("length"), l.get("region"))
                        for l in s["layout"])
        out[s["id"]] = Standard(s["id"], s["number"], s["zh"], s["en"], s.get("max_length", 0),
                                layouts, tuple(s.get("columns", ())), bool(s.get("lower_x", False)))
    return out


def provinces() -> frozenset[str]:
    return frozenset(_data()["provinces"]["codes"])


def get_standard(standard: str | Standard) -> Standard:
    if isinstance(standard, Standard):
        return standard
    try:
        return standards()[standard]
    except KeyError:
        raise InputError(f"unknown coding standard {standard!r}; known: {', '.join(standards())}") from None


# ---------------------------------------------------------------- vectorised

def _as_strings(arr) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not isinstance(arr, pa.Array):
        arr = pa.array(arr, type=pa.string())
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _layout_ok(s: pa.Array, layout: Layout) -> tuple[pa.Array, pa.Array]:
    """(shape matches, shape matches and region is valid) per value."""
    shape = pc.fill_null(pc.match_substring_regex(s, layout.regex), False)
    if not layout.region:
        return shape, shape
    region = pc.struct_field(pc.extract_regex(pc.if_else(shape, s, pa.scalar(None, pa.string())),
                                              layout.regex), [layout.region])
    prov = pc.utf8_slice_codeunits(region, 0, 2)
    ok = pc.fill_null(pc.is_in(prov, value_set=pa.array(sorted(provinces()))), False)
    return shape, pc.and_(shape, ok)


def validate_codes(arr, standard: str | Standard, normalize: bool = True) -> pa.Array:
    """Problem code per value (string), null where the code is valid or null."""
    std = get_standard(standard)
    s = normalize_codes(_as_strings(arr), std.lower_x) if normalize else _as_strings(arr)
    n = len(s)
    present = pc.is_valid(s)
    layouts = [l for l in std.layouts if l.regex]
    if not layouts:
        return pa.nulls(n, pa.string())
    false = pa.array(np.zeros(n, dtype=bool))
    valid, shape_any, prefix_any, length_any = false, false, false, false
    has_marker = any(l.marker for l in layouts)
    for l in layouts:
        shape, ok = _layout_ok(s, l)
        valid, shape_any = pc.or_(valid, ok), pc.or_(shape_any, shape)
        if l.marker:
            pre = pc.fill_null(pc.match_substring_regex(s, "^(?:" + l.marker + ")"), False)
            prefix_any = pc.or_(prefix_any, pre)
            if l.length:
                length_any = pc.or_(length_any, pc.and_(pre, pc.equal(pc.utf8_length(s), l.length)))
            else:
                length_any = pc.or_(length_any, pre)
    if not has_marker:
        prefix_any = pa.array(np.ones(n, dtype=bool))
        fixed = [l.length for l in layouts if l.length]
        length_any = (pc.fill_null(pc.is_in(pc.utf8_length(s), value_set=pa.array(fixed, pa.int32())), False)
                      if fixed and len(fixed) == len(layouts) else pa.array(np.ones(n, dtype=bool)))
    bad = pc.and_(present, pc.invert(valid))
    chars_bad = pc.invert(pc.fill_null(pc.match_substring_regex(s, _CHARS), False))
    too_long = (pc.fill_null(pc.greater(pc.utf8_length(s), std.max_length), False)
                if std.max_length else false)
    conds = [chars_bad, too_long, pc.invert(prefix_any), pc.invert(length_any), shape_any, pa.array(np.ones(n, dtype=bool))]
    conds = [pc.and_(bad, c) for c in conds]
    struct = pa.StructArray.from_arrays(conds, [f"c{i}" for i in range(len(conds))])
    return pc.case_when(struct, *[pa.scalar(p) for p in PROBLEMS])


def parse_codes(arr, standard: str | Standard, normalize: bool = True) -> pa.Table:
    """Vectorised parse: columns ``code``, ``layout`` (name of the first layout that fits,
    null if none) and one column per segment name of the standard (null where absent)."""
    std = get_standard(standard)
    s = normalize_codes(_as_strings(arr), std.lower_x) if normalize else _as_strings(arr)
    n = len(s)
    names: list[str] = []
    for l in std.layouts:
        names += [g for g in re.compile(l.regex).groupindex if g not in names] if l.regex else []
    layout_col = pa.nulls(n, pa.string())
    seg_cols = {g: pa.nulls(n, pa.string()) for g in names}
    taken = pa.array(np.zeros(n, dtype=bool))
    for l in std.layouts:
        if not l.regex:
            continue
        _, ok = _layout_ok(s, l)
        use = pc.and_(ok, pc.invert(taken))
        taken = pc.or_(taken, use)
        layout_col = pc.if_else(use, pa.scalar(l.name), layout_col)
        parts = pc.extract_regex(pc.if_else(use, s, pa.scalar(None, pa.string())), l.regex)
        for g in re.compile(l.regex).groupindex:
            v = pc.struct_field(parts, [g])
            v = pc.if_else(pc.fill_null(pc.equal(v, ""), False), pa.scalar(None, pa.string()), v)
            seg_cols[g] = pc.if_else(use, v, seg_cols[g])
    return pa.table({"code": s, "layout": layout_col, **seg_cols})


# ---------------------------------------------------------------- scalar

@dataclass(frozen=True)
class ParsedCode:
    code: str | None
    standard: Standard
    layout: Layout | None
    segments: dict            # segment name → value (only segments present)
    problem: str | None       # None when valid

    @property
    def valid(self) -> bool:
        return self.problem is None and self.code is not None


def parse_code(code: str | None, standard: str | Standard) -> ParsedCode:
    """Parse one code against a standard (the scalar twin of :func:`parse_codes`)."""
    std = get_standard(standard)
    norm = normalize_code(code, std.lower_x)
    problem = validate_codes(pa.array([norm], pa.string()), std, normalize=False)[0].as_py()
    layout, segments = None, {}
    if norm is not None and problem is None:
        for l in std.layouts:
            m = re.fullmatch(l.regex, norm) if l.regex else None
            if m:
                layout, segments = l, {k: v for k, v in m.groupdict().items() if v}
                break
    if norm is None:
        problem = None
    return ParsedCode(norm, std, layout, segments, problem)


def identify(code: str | None) -> list[ParsedCode]:
    """Every standard whose layout the code fits, verified layouts first; the catch-all
    layouts of standards whose layout is unpublished count only when nothing else fits."""
    found = [p for s in standards().values() if s.has_code
             for p in [parse_code(code, s)] if p.valid]
    rank = {"verified": 0, "reported": 1, "unpublished": 2}
    found.sort(key=lambda p: (rank[p.layout.status], p.standard.number))
    specific = [p for p in found if p.layout.status != "unpublished"]
    return specific or found
