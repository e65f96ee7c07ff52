"""Encoder (Arrow table → kernel arrays) on 100k synthetic records (``pytest bench/``)."""
from __future__ import annotations

from drgdip.grouper.drg.encode import Encoder


def test_encoder_100k(benchmark, scheme, records):
    encoder = Encoder(scheme)
    enc = benchmark(encoder.encode, records)
    assert enc.n == records.num_rows
    assert enc.diag_ptr[-1] == len(enc.diag_ids)
