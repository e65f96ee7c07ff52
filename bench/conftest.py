"""Fixtures for the pytest-benchmark suites (``pytest bench/``): a scheme and 100k synthetic records."""
from __future__ import annotations

import pytest

from drgdip.bench.synthetic import synthetic_records
from drgdip.grouper.drg.api import load_scheme
from drgdip.grouper.drg.encode import Encoder

N = 100_000


@pytest.fixture(scope="session")
def scheme():
    return load_scheme(None)


@pytest.fixture(scope="session")
def records(scheme):
    return synthetic_records(scheme, N, seed=0)


@pytest.fixture(scope="session")
def encoded(scheme, records):
    return Encoder(scheme).encode(records)
