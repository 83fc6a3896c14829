"""Shared test fixtures: paths to the handbook data and small slices of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(
    os.environ.get("TXWATCH_DATA_DIR", PROJECT_ROOT.parent / "shared/data/handbook")
)


@pytest.fixture(scope="session")
def handbook_files() -> list[Path]:
    files = sorted(DATA_DIR.glob("transactions-*.csv.gz"))
    assert files, f"handbook data not found in {DATA_DIR}; set TXWATCH_DATA_DIR"
    return files


@pytest.fixture(scope="session")
def april_frame(handbook_files):
    """The first ten days of April: about 95,000 labelled transactions."""
    from training.dataset import load_handbook

    return load_handbook(handbook_files[:1], "2018-04-01", "2018-04-11")
