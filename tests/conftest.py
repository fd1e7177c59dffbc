"""Shared pytest configuration: repository paths and isolation of torch's global settings.

The ``slow`` marker is registered in pyproject.toml; ``make test`` deselects it.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Undo a test's torch.set_num_threads (the CLI's ``num_threads`` sets it process-wide)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
