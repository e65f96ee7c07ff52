"""Code strings to ids in compiled code: split Arrow string buffers and look tokens up in a hash table.

Pure numba functions over the raw buffers of an Arrow string array (offsets and UTF-8
bytes): tokens are split on ``|``, trimmed of ASCII blanks and looked up, byte for byte, in
an open-addressing table of every string met so far (:class:`StringTable`). A token the
table does not hold comes back as ``UNSEEN`` with its position; :mod:`grouper.drg.encode`
resolves those few in Python (normalisation, edition mapping) and adds them to the table,
so each distinct string costs Python work once per run, not once per row.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit, prange

UNSEEN = -9
SEP = 0x7C  # '|'


@njit(cache=True, inline="always")
def _hash(data, a, b):
    h = np.uint64(14695981039346656037)
    for k in range(a, b):
        h = (h ^ np.uint64(data[k])) * np.uint64(1099511628211)
    return h


@njit(cache=True)
def build_table(key_offsets, key_data, capacity):
    """Slots (int32, -1 empty) of an open-addressing table over the keys (capacity a power of two)."""
    slots = np.full(capacity, -1, dtype=np.int32)
    mask = np.uint64(capacity - 1)
    for i in range(key_offsets.shape[0] - 1):
        a, b = key_offsets[i], key_offsets[i + 1]
        j = _hash(key_data, a, b) & mask
        while slots[j] != -1:
            j = (j + np.uint64(1)) & mask
        slots[j] = i
    return slots


@njit(cache=True, inline="always")
def _next_token(data, a, b0, split):
    """(start, end without blanks, next position, hash) of the token at a (start == end: empty)."""
    while a < b0 and (data[a] == 32 or data[a] == 9):   # leading blanks
        a += 1
    h = np.uint64(14695981039346656037)
    b = a
    last = a
    while b < b0:
        c = data[b]
        if split and c == SEP:
            break
        if c != 32 and c != 9:
            last = b + 1
        h = (h ^ np.uint64(c)) * np.uint64(1099511628211)
        b += 1
    if last < b:          # trailing blanks were hashed: hash the trimmed token again
        h = _hash(data, a, last)
    return a, last, b + 1, h


@njit(cache=True, parallel=True)
def tokenize(row_offsets, value_offsets, data, valid, split, slots, key_offsets, key_data, key_ids):
    """Ids of the tokens of every row, rows in parallel.

    Row r holds values ``row_offsets[r]..row_offsets[r+1]`` of the string array
    (``value_offsets``/``data``/``valid``); with ``split`` each value is further split on
    '|'. Returns (row_ptr int64 [rows+1], ids int32, token_start int64, token_end int64):
    known tokens get their id from ``key_ids``, unknown ones ``UNSEEN`` with their byte span.
    A first pass counts each row's tokens, a second hashes and looks them up in place."""
    rows = row_offsets.shape[0] - 1
    counts = np.zeros(rows, dtype=np.int64)
    for r in prange(rows):
        n = 0
        for v in range(row_offsets[r], row_offsets[r + 1]):
            if valid[v]:
                a, b0 = value_offsets[v], value_offsets[v + 1]
                while a <= b0:
                    x, y, a, _ = _next_token(data, a, b0, split)
                    if y > x:
                        n += 1
        counts[r] = n
    row_ptr = np.zeros(rows + 1, dtype=np.int64)
    for r in range(rows):
        row_ptr[r + 1] = row_ptr[r] + counts[r]
    total = row_ptr[rows]
    ids = np.empty(total, dtype=np.int32)
    starts = np.empty(total, dtype=np.int64)
    ends = np.empty(total, dtype=np.int64)
    mask = np.uint64(slots.shape[0] - 1)
    for r in prange(rows):
        t = row_ptr[r]
        for v in range(row_offsets[r], row_offsets[r + 1]):
            if not valid[v]:
                continue
            a, b0 = value_offsets[v], value_offsets[v + 1]
            while a <= b0:
                x, y, a, h = _next_token(data, a, b0, split)
                if y <= x:
                    continue
                j = h & mask
                found = -1
                n = y - x
                while True:
                    k = slots[j]
                    if k == -1:
                        break
                    ka = key_offsets[k]
                    if key_offsets[k + 1] - ka == n:
                        same = True
                        for q in range(n):
                            if key_data[ka + q] != data[x + q]:
                                same = False
                                break
                        if same:
                            found = k
                            break
                    j = (j + np.uint64(1)) & mask
                ids[t] = key_ids[found] if found >= 0 else UNSEEN
                starts[t] = x
                ends[t] = y
                t += 1
    return row_ptr, ids, starts, ends


class StringTable:
    """Every string met so far with its id, as flat buffers and a hash table for :func:`tokenize`."""

    def __init__(self):
        self.keys: list[bytes] = []
        self.ids = np.zeros(0, dtype=np.int32)
        self._index: dict[bytes, int] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        lengths = np.fromiter((len(k) for k in self.keys), dtype=np.int64, count=len(self.keys))
        self.key_offsets = np.zeros(len(self.keys) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.key_offsets[1:])
        self.key_data = np.frombuffer(b"".join(self.keys), dtype=np.uint8) if self.keys else np.zeros(0, np.uint8)
        capacity = 1 << max(4, int(2 * max(len(self.keys), 1) - 1).bit_length())
        self.slots = build_table(self.key_offsets, self.key_data, capacity)

    def add(self, pairs: dict[bytes, int]) -> None:
        new = [(k, v) for k, v in pairs.items() if k not in self._index]
        if not new:
            return
        for k, v in new:
            self._index[k] = len(self.keys)
            self.keys.append(k)
        self.ids = np.concatenate([self.ids, np.array([v for _, v in new], dtype=np.int32)])
        self._rebuild()


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets int64, data uint8, valid bool) of a string array, without copying the bytes."""
    if pa.types.is_large_string(arr.type):
        off_type = np.int64
    else:
        arr = arr.cast(pa.string()) if not pa.types.is_string(arr.type) else arr
        off_type = np.int32
    bufs = arr.buffers()
    n = len(arr)
    offsets = np.frombuffer(bufs[1], dtype=off_type, count=n + 1, offset=arr.offset * np.dtype(off_type).itemsize)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    valid = np.ones(n, dtype=bool) if arr.null_count == 0 else \
        np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return offsets.astype(np.int64), data, valid
