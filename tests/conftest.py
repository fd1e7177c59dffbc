"""Shared pytest configuration: repository paths, isolation of torch's global settings, and W&B
kept offline and quiet.

The ``slow`` marker is registered in pyproject.toml; ``make test`` deselects it.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs a worker per core), one torch thread per worker:
    the workers already fill the cores, and more threads would only contend for them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Undo a test's torch.set_num_threads (the CLI's ``num_threads`` sets it process-wide)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test goes online to W&B, even on a machine with credentials, and W&B prints nothing.

    Set in the environment, so ``lwlc`` subprocesses inherit it; tests of the mode choice
    (tests/tracking/test_wandb.py) remove it again in their own fixture.
    """
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _no_answer_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test of ``lwlc fit|validate|test|predict`` meets the real LightningCLI, not answers
    recorded by another test (tests/commands/test_lightning_cache.py sets a folder of its own)."""
    monkeypatch.setenv("LWLC_CACHE_DIR", "")


@pytest.fixture(scope="session")
def reliability_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reliability battery's real checkpoints and crafted files (tests/reliability/battery.py),
    built once per session and shared by the modules there, which must not change them."""
    from battery import make_inputs  # tests/reliability, on the path for the tests there

    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def no_wandb_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """For the tests of W&B itself (tests/tracking): no API key, no netrc, no mode from the
    environment (W&B offline by lwlc's own choice), W&B silent, no run left behind."""
    import wandb

    for name in (
        "WANDB_API_KEY",
        "WANDB_MODE",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_BASE_URL",
        "WANDB_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "no-wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    wandb.finish()
