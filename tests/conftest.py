"""Shared test helpers: where the shared fixtures live, and markers for optional hardware."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The parity fixtures live beside the project root (../shared); CI has them there too.
SHARED = Path(os.environ.get("V2A_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "mmaudio"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"shared fixtures not found at {FIXTURES} (set V2A_SHARED)")
    return FIXTURES
