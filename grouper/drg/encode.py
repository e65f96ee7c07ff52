"""The Arrow ↔ array boundary: record batches in, the kernel's integer arrays out, and back.

Code strings become integer ids through Arrow dictionary encoding: each distinct string
of a batch is looked up once (and cached across batches), never once per row. A code is
looked up as written, then normalised (blanks, full-width characters, case), then through
the edition mapping when a code set is given (国家临床版 → 医保版). Ids: >= 0 a code of the
scheme, -1 not used by the scheme, -2 not a code of the code set (when one is given).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drgdip.arrowio import CODE_SEPARATORS, canonical_columns, code_list, numeric, text
from drgdip.codesets.normalize import normalize_code
from drgdip.grouper.drg.scheme import FIELDS
from drgdip.grouper.tokens import UNSEEN, StringTable, string_buffers, tokenize

#: the canonical input columns the encoder reads (all a file read for grouping needs)
INPUT_ROLES = FIELDS + ("sex", "diagnoses", "procedures")

SEX_WORDS = {"1": 1, "男": 1, "M": 1, "MALE": 1, "2": 2, "女": 2, "F": 2, "FEMALE": 2}


@dataclass
class CodeSet:
    """Optional national code set: which codes exist and how old editions map to them."""
    diagnoses: object = None      # codesets.code_tables.CodeTable
    procedures: object = None
    diagnosis_map: dict | None = None
    procedure_map: dict | None = None

    @classmethod
    def from_folder(cls, folder) -> "CodeSet":
        from pathlib import Path

        from drgdip.codesets.code_tables import load_code_table, load_mapping
        f = Path(folder)
        need = ["ZD_INFO.dat", "SS_INFO.dat"]
        missing = [n for n in need if not (f / n).exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: not a code-set folder, missing {', '.join(missing)}")
        return cls(load_code_table(f / "ZD_INFO.dat"), load_code_table(f / "SS_INFO.dat"),
                   load_mapping(f / "ZD_MAP.dat") if (f / "ZD_MAP.dat").exists() else None,
                   load_mapping(f / "SS_MAP.dat") if (f / "SS_MAP.dat").exists() else None)


@dataclass
class Encoded:
    values: np.ndarray      # float64 [n, len(FIELDS)]
    sex: np.ndarray         # int8
    diag_ptr: np.ndarray    # int64 [n+1]
    diag_ids: np.ndarray    # int32
    proc_ptr: np.ndarray
    proc_ids: np.ndarray
    bad_value: np.ndarray   # bool: a field present but unreadable

    @property
    def n(self) -> int:
        return self.sex.shape[0]


class Encoder:
    """Turns record batches into kernel arrays for one scheme (and optional code set)."""

    def __init__(self, scheme, codes: CodeSet | None = None):
        self.scheme = scheme
        self.codes = codes
        self._cache = {"diag": {}, "proc": {}}
        # every string met so far and its id: a batch's tokens are split and matched in
        # compiled code (grouper.tokens); only strings never seen go to Python
        self._tables = {k: StringTable() for k in ("diag", "proc")}
        # the last dictionary met per kind and its (entry_ptr, ids): batches of one row group share it
        self._dict_cache: dict = {}

    def code_id(self, code: str | None, kind: str) -> int:
        cache = self._cache[kind]
        hit = cache.get(code)
        if hit is not None:
            return hit
        cache[code] = result = self._lookup(code, kind)
        return result

    def _lookup(self, code, kind) -> int:
        if code is None:
            return -3
        index = self.scheme.diag_index if kind == "diag" else self.scheme.proc_index
        if code in index:
            return index[code]
        norm = normalize_code(code)
        if not norm:
            return -3
        if norm in index:
            return index[norm]
        table = mapping = None
        if self.codes is not None:
            table = self.codes.diagnoses if kind == "diag" else self.codes.procedures
            mapping = self.codes.diagnosis_map if kind == "diag" else self.codes.procedure_map
        if mapping:
            mapped = mapping.get(norm)
            if mapped is not None and mapped in index:
                return index[mapped]
            if mapped is not None and table is not None and mapped in table:
                return -1
        if table is not None and norm not in table:
            return -2
        return -1

    def _codes(self, array, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(row_ptr, ids) of a code column: compiled split and lookup, Python for new strings."""
        if array is None:
            return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        t = array.type
        listed = pa.types.is_list(t) or pa.types.is_large_list(t)
        if pa.types.is_dictionary(t) or (listed and pa.types.is_dictionary(t.value_type)):
            return self._dictionary_codes(array, n, kind)
        if listed:
            row_offsets = np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
            values, split = array.values, False
            if not pa.types.is_string(values.type):
                values = values.cast(pa.string())
        else:
            row_offsets = np.arange(n + 1, dtype=np.int64)
            values, split = (array if pa.types.is_string(t) else array.cast(pa.string())), True
        offsets, data, valid = string_buffers(values)
        table = self._tables[kind]
        args = (row_offsets, offsets, data, valid, split)
        row_ptr, ids, starts, ends = tokenize(*args, *table.arrays())
        unseen = ids == UNSEEN
        if unseen.any():
            lengths = ends[unseen] - starts[unseen]
            total = int(lengths.sum())
            first = np.repeat(starts[unseen] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
            raw = data[first + np.arange(total)]
            offs = np.zeros(len(lengths) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offs[1:])
            words = pc.unique(pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offs), pa.py_buffer(raw.tobytes())))
            if split and pc.any(pc.match_substring_regex(words, CODE_SEPARATORS)).as_py():
                # codes separated by something other than '|': split by every separator, then as lists
                return self._codes(code_list(array, n), n, kind)
            table.add({w.encode("utf-8"): self.code_id(w, kind) for w in words.to_pylist()})
            row_ptr, ids, _, _ = tokenize(*args, *table.arrays())
        keep = ids != -3          # strings that normalise to nothing
        if keep.all():
            return row_ptr, ids
        row = np.repeat(np.arange(n), np.diff(row_ptr))
        counts = np.bincount(row[keep], minlength=n)
        new = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=new[1:])
        return new, ids[keep]

    def _dictionary_codes(self, array, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(row_ptr, ids) of a dictionary column (or a list of dictionary values): each distinct
        string of the dictionary is split and looked up once, rows take their entry's ids."""
        listed = not pa.types.is_dictionary(array.type)
        if listed:
            row_offsets = np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
            values = array.values
        else:
            row_offsets, values = np.arange(n + 1, dtype=np.int64), array
        dictionary = values.dictionary
        key = (kind, listed)
        cached = self._dict_cache.get(key)
        if cached is not None and (cached[0] is dictionary or cached[0].equals(dictionary)):
            dptr, dids = cached[1], cached[2]
        else:
            m = len(dictionary)
            entries = pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32)), dictionary) \
                if listed else dictionary          # list values are single codes, text may hold several
            dptr, dids = self._codes(entries, m, kind)
            self._dict_cache[key] = (dictionary, dptr, dids)
        idx = values.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        valid = idx >= 0
        safe = np.where(valid, idx, 0)
        counts = np.where(valid, dptr[safe + 1] - dptr[safe], 0)
        vptr = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=vptr[1:])
        total = int(vptr[-1])
        gather = np.repeat(dptr[safe] - vptr[:-1], counts) + np.arange(total, dtype=np.int64)
        return vptr[row_offsets], dids[gather]

    def encode(self, batch: pa.RecordBatch | pa.Table) -> Encoded:
        n = batch.num_rows
        cols = canonical_columns(batch.schema)
        get = lambda name: batch.column(cols[name]) if name in cols else None  # noqa: E731
        values = np.empty((n, len(self.scheme.fields)), dtype=np.float64)
        bad = np.zeros(n, dtype=bool)
        for j, f in enumerate(FIELDS):
            v, b = numeric(get(f), n)
            values[:, j] = v.to_numpy(zero_copy_only=False)
            bad |= np.asarray(b.to_numpy(zero_copy_only=False), dtype=bool)
        sex_text = text(get("sex"), n)
        enc = sex_text.dictionary_encode()
        lut = np.array([SEX_WORDS.get(str(w).strip().upper(), -1) for w in enc.dictionary.to_pylist()] + [0],
                       dtype=np.int8)
        idx = enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)
        sex = lut[idx] if n else np.zeros(0, dtype=np.int8)
        dptr, dids = self._codes(get("diagnoses"), n, "diag")
        pptr, pids = self._codes(get("procedures"), n, "proc")
        for j, (name, kind, lst) in enumerate(self.scheme.derived_fields, start=len(FIELDS)):
            ptr, ids = (pptr, pids) if kind == "proc" else (dptr, dids)
            values[:, j] = _any_in_list(self._in_list(kind, lst), ptr, ids, n)
        return Encoded(values, np.ascontiguousarray(sex, dtype=np.int8), dptr, dids, pptr, pids, bad)

    def _in_list(self, kind: str, lst: int) -> np.ndarray:
        """Per code id of the scheme: is it in list ``lst`` (cached)."""
        key = (kind, lst)
        cache = self.__dict__.setdefault("_in_list_cache", {})
        if key not in cache:
            a = self.scheme.arrays
            ptr, ids = (a["proc_list_ptr"], a["proc_list_ids"]) if kind == "proc" else (a["diag_list_ptr"], a["diag_list_ids"])
            owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
            flag = np.zeros(len(ptr) - 1, dtype=bool)
            flag[owner[ids == lst]] = True
            cache[key] = flag
        return cache[key]


def _any_in_list(in_list: np.ndarray, ptr: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    """1.0 for rows with a code in the list, else 0.0."""
    hit = np.zeros(len(ids), dtype=bool)
    ok = ids >= 0
    hit[ok] = in_list[ids[ok]]
    row = np.repeat(np.arange(n), np.diff(ptr))
    return (np.bincount(row[hit], minlength=n) > 0).astype(np.float64)


# ------------------------------------------------------------------ results back to Arrow

def _take(labels: list[str], ids: np.ndarray, missing: str | None, dictionary: bool = False) -> pa.Array:
    if dictionary:
        # indices into the labels (+ the stand-in for "none" when there is one); nulls stay nulls
        # (distinct values only: several reasons share one status)
        first: dict[str, int] = {}
        remap = np.array([first.setdefault(x, len(first)) for x in list(labels) + [missing or ""]], dtype=np.int32)
        idx = remap[np.where(ids < 0, len(labels), ids)]
        mask = (ids < 0) if missing is None else None
        return pa.DictionaryArray.from_arrays(pa.array(idx, mask=mask), pa.array(list(first), type=pa.string()))
    arr = pa.array(list(labels) + [missing], type=pa.string())
    safe = np.where(ids < 0, len(labels), ids).astype(np.int64)
    return arr.take(pa.array(safe))


def result_columns(scheme, mdc: np.ndarray, adrg: np.ndarray, drg: np.ndarray, reason: np.ndarray,
                   dictionary: bool = False) -> dict[str, pa.Array]:
    """The output columns ``mdc, adrg, drg, status, reason`` from the kernel's arrays.

    With ``dictionary`` they are dictionary-encoded strings (indices into the scheme's code
    lists and the reason table): the same values, written and read back far faster."""
    from drgdip.codesets.reasons import reason_table
    table = reason_table()
    return {
        "mdc": _take(scheme.mdc_codes, mdc.astype(np.int64), None, dictionary),
        "adrg": _take(scheme.adrg_codes, adrg.astype(np.int64), None, dictionary),
        "drg": _take(scheme.drg_codes, drg.astype(np.int64), "0000", dictionary),
        "status": _take([r.status for r in table], reason.astype(np.int64), None, dictionary),
        "reason": _take([r.code for r in table], reason.astype(np.int64), None, dictionary),
    }
