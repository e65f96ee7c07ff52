"""Code strings to ids in compiled code: split Arrow string buffers and look tokens up in a hash table.

Pure numba functions over the raw buffers of an Arrow string array (offsets and UTF-8
bytes): tokens are split on ``|``, trimmed of ASCII blanks and looked up, byte for byte, in
an open-addressing table of every string met so far (:class:`StringTable`). A token the
table does not hold comes back as ``UNSEEN`` with its position; :mod:`grouper.drg.encode`
resolves those few in Python (normalisation, edition mapping) and adds them to the table,
so each distinct string costs Python work once per run, not once per row.

The table keeps a key's first 16 bytes, its length and its id in the slot itself (one
cache line a probe): a token is packed into two 64-bit words while it is scanned, hashed
from them, and compared word to word; only keys longer than 16 bytes are compared byte
for byte against the key buffer as well. Codes are 5–12 bytes, so a lookup is one memory
access where it was four (slot, key offsets, key bytes, id).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit, prange

UNSEEN = -9
SEP = 0x7C  # '|'
#: slot columns: the key's bytes 0-7 and 8-15 (little-endian, zero-padded), length | key index << 32, id
W0, W1, META, ID = range(4)
INLINE = 16


@njit(cache=True, inline="always")
def _mix(w0, w1, n):
    h = w0 * np.uint64(0x9E3779B97F4A7C15) + (w1 ^ np.uint64(n)) * np.uint64(0xC2B2AE3D27D4EB4F)
    return h ^ (h >> np.uint64(31))


@njit(cache=True, inline="always")
def _pack(data, a, b):
    """The first 16 bytes of data[a:b] as two little-endian words (zero-padded)."""
    w0 = np.uint64(0)
    w1 = np.uint64(0)
    for k in range(min(b - a, INLINE)):
        c = np.uint64(data[a + k])
        if k < 8:
            w0 |= c << np.uint64(8 * k)
        else:
            w1 |= c << np.uint64(8 * (k - 8))
    return w0, w1


@njit(cache=True, inline="always")
def _truncate(w0, w1, n):
    """Keep the first n bytes of the packed words (the trailing blanks scanned past are dropped)."""
    if n < 8:
        return w0 & ((np.uint64(1) << np.uint64(8 * n)) - np.uint64(1)), np.uint64(0)
    if n < INLINE:
        return w0, w1 & ((np.uint64(1) << np.uint64(8 * (n - 8))) - np.uint64(1))
    return w0, w1


@njit(cache=True)
def build_table(key_offsets, key_data, key_ids, capacity):
    """Slots (uint64 [capacity, 4]: W0, W1, META, ID; META 0 empty) of an open-addressing table
    over the keys (capacity a power of two)."""
    slots = np.zeros((capacity, 4), dtype=np.uint64)
    mask = np.uint64(capacity - 1)
    for i in range(key_offsets.shape[0] - 1):
        a, b = key_offsets[i], key_offsets[i + 1]
        n = b - a
        w0, w1 = _pack(key_data, a, b)
        j = _mix(w0, w1, n) & mask
        while slots[j, META] != 0:
            j = (j + np.uint64(1)) & mask
        slots[j, W0] = w0
        slots[j, W1] = w1
        slots[j, META] = np.uint64(n) | (np.uint64(i) << np.uint64(32))
        slots[j, ID] = np.uint64(np.int64(key_ids[i]))
    return slots


@njit(cache=True, inline="always")
def _count(data, a, b0, split):
    """Tokens of data[a:b0] that are not blank (split on '|' when ``split``)."""
    n = 0
    seen = False
    for k in range(a, b0):
        c = data[k]
        if split and c == SEP:
            if seen:
                n += 1
            seen = False
        elif c != 32 and c != 9:
            seen = True
    if seen:
        n += 1
    return n


@njit(cache=True, inline="always")
def _lookup(data, x, y, w0, w1, slots, key_offsets, key_data, mask):
    """The id of data[x:y] (packed as w0, w1), or UNSEEN."""
    n = y - x
    j = _mix(w0, w1, n) & mask
    while True:
        meta = slots[j, META]
        if meta == 0:
            return UNSEEN
        if (meta & np.uint64(0xFFFFFFFF)) == np.uint64(n) and slots[j, W0] == w0 and slots[j, W1] == w1:
            if n <= INLINE:
                return np.int64(slots[j, ID])
            ka = key_offsets[np.int64(meta >> np.uint64(32))] + INLINE
            same = True
            for q in range(INLINE, n):
                if key_data[ka + q - INLINE] != data[x + q]:
                    same = False
                    break
            if same:
                return np.int64(slots[j, ID])
        j = (j + np.uint64(1)) & mask


@njit(cache=True, parallel=True)
def tokenize(row_offsets, value_offsets, data, valid, split, slots, key_offsets, key_data):
    """Ids of the tokens of every row, rows in parallel.

    Row r holds values ``row_offsets[r]..row_offsets[r+1]`` of the string array
    (``value_offsets``/``data``/``valid``); with ``split`` each value is further split on
    '|'. Returns (row_ptr int64 [rows+1], ids int32, token_start int64, token_end int64):
    known tokens get their id from the table, unknown ones ``UNSEEN`` and their byte span
    (``token_start``/``token_end`` are set only where the id is ``UNSEEN``). A first pass
    counts each row's tokens, a second packs, hashes and looks them up in place."""
    rows = row_offsets.shape[0] - 1
    counts = np.zeros(rows, dtype=np.int64)
    for r in prange(rows):
        n = 0
        for v in range(row_offsets[r], row_offsets[r + 1]):
            if valid[v]:
                n += _count(data, value_offsets[v], value_offsets[v + 1], split)
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
            while a < b0:
                while a < b0 and (data[a] == 32 or data[a] == 9):       # leading blanks
                    a += 1
                x = a
                last = a
                w0 = np.uint64(0)
                w1 = np.uint64(0)
                while a < b0:
                    c = data[a]
                    if split and c == SEP:
                        break
                    k = a - x
                    if k < 8:
                        w0 |= np.uint64(c) << np.uint64(8 * k)
                    elif k < INLINE:
                        w1 |= np.uint64(c) << np.uint64(8 * (k - 8))
                    if c != 32 and c != 9:
                        last = a + 1
                    a += 1
                a += 1                                                  # past the separator
                if last > x:
                    w0, w1 = _truncate(w0, w1, last - x)
                    found = _lookup(data, x, last, w0, w1, slots, key_offsets, key_data, mask)
                    ids[t] = found
                    if found == UNSEEN:
                        starts[t] = x
                        ends[t] = last
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
        self.slots = build_table(self.key_offsets, self.key_data, self.ids, capacity)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The table arguments of :func:`tokenize`: (slots, key_offsets, key_data)."""
        return self.slots, self.key_offsets, self.key_data

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
