"""Shared fixtures: where ../shared/data is, and skipping cleanly when it is not there."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """../shared/data beside the project root, or $DRGDIP_SHARED_DATA."""
    env = os.environ.get("DRGDIP_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def need_shared(*parts: str) -> Path:
    """The path under shared/data, or skip the test saying what is missing."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data missing: {path} (place the shared material at ../shared beside the project root)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return need_shared()
