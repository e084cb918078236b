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


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for a module: tiny tensors on a shared 2-core machine, where OpenMP
    barriers cost more than they give. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
