"""Shared fixtures: where ../shared/data is, and skipping cleanly when it is not there."""
from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small demo (seed 7, 200 records a month, 5 hospitals), run once per test session
    through the CLI; the independent recomputation's tests (test_independent_*.py) share it."""
    out = tmp_path_factory.mktemp("independent") / "demo"
    subprocess.run([sys.executable, "-m", "drgdip", "demo", "-o", str(out), "--seed", "7",
                    "--records-per-month", "200", "--hospitals", "5", "--quiet"],
                   check=True, capture_output=True, text=True)
    return out
