"""Code normalisation (编码规范化): codes as hospitals write them → the official spelling.

Rules, applied in this order (the same in the scalar and the vectorised version):

1. Unicode NFKC folding, so full-width characters become half-width (``Ｉ２１．０００`` →
   ``I21.000``, ``＋`` → ``+``, ``＊`` → ``*``, the ideographic space → a space), plus a few
   look-alikes NFKC leaves alone (:data:`LOOKALIKES`: ``×`` → ``x``, ``。`` and ``·`` → ``.``,
   ``†`` → ``+``, zero-width characters removed).
2. Every blank removed (leading, trailing and inside: a code never contains a space).
3. Upper case, except the extension marker: the official tables write a lower-case ``x``
   inside a code (``I21.000x005``, ``33.6x00``, ``X00.x00``) and an upper-case letter
   only at the start of a diagnosis code (chapter letters, including ``X`` for X00–X84) or
   of the asterisk half of a pair (``A01.002+G01*``). So ``X`` at the start or right after
   ``+`` stays upper case; every other ``X`` becomes ``x``.
4. An empty result is null; null stays null.

The vectorised version works over Arrow string arrays with ``pyarrow.compute`` for
ASCII values; values with any non-ASCII character (rare: full-width input) go through
the scalar version once per distinct value, never once per row.
"""
from __future__ import annotations

import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

#: Characters NFKC does not fold but hospitals use in place of ASCII ones.
LOOKALIKES = {
    "\u00d7": "x",   # × multiplication sign
    "\u3002": ".",   # 。 ideographic full stop
    "\u00b7": ".",   # · middle dot
    "\u2020": "+",   # † dagger
    "\u200b": "",    # zero-width space
    "\u200c": "",
    "\u200d": "",
    "\ufeff": "",    # byte-order mark / zero-width no-break space
}
_LOOKALIKE_TABLE = str.maketrans(LOOKALIKES)

_BLANKS = r"[\t\n\v\f\r ]+"
_BLANKS_RE = re.compile(_BLANKS)
# an X that is neither at the start nor right after '+': the extension marker x
_INNER_X = r"([^+])X"
_INNER_X_RE = re.compile(_INNER_X)


def _ascii_rules(s: str, lower_x: bool = True) -> str:
    s = _BLANKS_RE.sub("", s).upper()
    if not lower_x:
        return s
    # twice: a match consumes the character before X, so "XX" needs a second pass
    s = _INNER_X_RE.sub(r"\1x", s)
    return _INNER_X_RE.sub(r"\1x", s)


def normalize_code(s: str | None, lower_x: bool = True) -> str | None:
    """One code in its official spelling (None for None or a blank string).

    ``lower_x=False`` skips rule 3's lower-case extension ``x`` (for the standards whose
    codes are upper case throughout: hospital, doctor, drug, consumable codes...)."""
    if s is None:
        return None
    s = str(s)
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s).translate(_LOOKALIKE_TABLE)
    s = _ascii_rules(s, lower_x)
    return s or None


def _normalize_string_array(arr: pa.Array, lower_x: bool = True) -> pa.Array:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    out_type = arr.type
    s = pc.replace_substring_regex(arr, _BLANKS, "")
    s = pc.utf8_upper(s)
    if lower_x:
        s = pc.replace_substring_regex(s, _INNER_X, r"\1x")
        s = pc.replace_substring_regex(s, _INNER_X, r"\1x")
    ascii_ = pc.fill_null(pc.string_is_ascii(arr), True)
    if not pc.all(ascii_).as_py():
        # rare path: distinct non-ASCII values, each normalised once in Python
        odd = pc.filter(arr, pc.invert(ascii_))
        distinct = pc.unique(odd)
        fixed = pa.array([normalize_code(v, lower_x) for v in distinct.to_pylist()], type=out_type)
        idx = pc.index_in(arr, value_set=distinct)
        s = pc.if_else(ascii_, s, pc.take(fixed, idx))
    empty = pc.fill_null(pc.equal(s, ""), False)
    return pc.if_else(empty, pa.scalar(None, out_type), s)


def normalize_codes(arr, lower_x: bool = True):
    """Normalise an Arrow array of codes; nulls stay null.

    Accepts string arrays, list<string> arrays (each element normalised, list shape and
    null lists kept), chunked arrays of either, and dictionary-encoded strings.
    ``lower_x``: as in :func:`normalize_code`."""
    if isinstance(arr, pa.ChunkedArray):
        return pa.chunked_array([normalize_codes(c, lower_x) for c in arr.chunks],
                                type=_result_type(arr.type))
    if not isinstance(arr, pa.Array):
        arr = pa.array(arr, type=pa.string())
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if len(arr) == 0:
            return arr.cast(pa.list_(pa.string()))
        offsets = arr.offsets
        start = offsets[0].as_py()
        values = arr.values.slice(start, offsets[-1].as_py() - start)
        new_values = _normalize_string_array(values.cast(pa.string()), lower_x)
        rebased = pc.subtract(offsets, offsets[0])
        cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
        return cls.from_arrays(rebased, new_values, mask=arr.is_null())
    if pa.types.is_dictionary(t):
        arr = arr.cast(pa.string())
    return _normalize_string_array(arr, lower_x)


def _result_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_list(t):
        return pa.large_list(pa.string())
    if pa.types.is_list(t):
        return pa.list_(pa.string())
    if pa.types.is_large_string(t):
        return pa.large_string()
    return pa.string()


# ---------------------------------------------------------------- dagger / asterisk pairs

def split_pair(code: str | None) -> tuple[str | None, str | None]:
    """``A01.002+G01*`` → (``A01.002``, ``G01*``); a plain code → (code, None).

    The first half is the etiology (dagger, 剑号) code, the second the manifestation
    (asterisk, 星号) code. Apply to normalised codes."""
    if code is None:
        return None, None
    head, sep, tail = code.partition("+")
    return head or None, (tail or None) if sep else None


def split_pairs(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Vectorised :func:`split_pair` over a normalised string array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    parts = pc.extract_regex(arr, r"^(?P<head>[^+]*)(?:\+(?P<tail>.*))?$")
    head, tail = pc.struct_field(parts, [0]), pc.struct_field(parts, [1])
    none = pa.scalar(None, pa.string())
    head = pc.if_else(pc.fill_null(pc.equal(head, ""), False), none, head)
    tail = pc.if_else(pc.fill_null(pc.equal(tail, ""), False), none, tail)
    return head, tail
