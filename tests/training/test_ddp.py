"""Two DDP processes train the same pair as one: the README's command on the shipped digits
config, on CPU processes (gloo), against one process with the doubled batch.

The runs are in float64 (``--trainer.precision 64-true``): in float32 the processes' gradient
sums are added in another order (1e-7 apart after an epoch), and a ReLU whose input sits that
close to zero flips and is amplified (0.0136 apart after the second epoch of the second case).
In float64 nothing sits that close, so any difference left is a difference of the training."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from lwlc.data import DigitsDataModule
from lwlc_runs import DIGITS, QUIET, members

GLOBAL_BATCH = 32


def fit(root: Path, devices: int, val_size: float) -> None:
    """``lwlc fit`` of the shipped digits config (its barrier Callback included) for two epochs,
    as a user types it, on ``devices`` CPU processes with the per-process batch 32 / devices."""
    ddp = ["--trainer.devices", str(devices), "--trainer.strategy", "ddp"] if devices > 1 else []
    command = [
        *(sys.executable, "-m", "lwlc", "fit", "--config", DIGITS),
        *("--trainer.default_root_dir", str(root), "--trainer.max_epochs", "2"),
        *("--trainer.accelerator", "cpu", *ddp),
        *("--data.init_args.batch_size", str(GLOBAL_BATCH // devices)),
        *("--data.init_args.val_size", str(val_size), "--trainer.precision", "64-true", *QUIET),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def barriers(root: Path) -> dict[tuple[str, ...], tuple[float, float]]:
    """The Callback's rows by (epoch, step, plan, group, rest_from, split, reference)."""
    with open(root / "barriers" / "barriers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keyed = {
        tuple(
            r[k] for k in ("epoch", "step", "plan", "group", "rest_from", "split", "reference")
        ): (
            float(r["loss_barrier"]),
            float(r["error_barrier"]),
        )
        for r in rows
    }
    assert len(keyed) == len(rows), "a row was written twice"
    return keyed


@pytest.mark.slow
@pytest.mark.parametrize(
    ("val_size", "last_batch"),
    [(0.1009, 13), (0.1092, 1)],
    ids=["shares-7-and-6", "one-process-only-padding"],
)
def test_two_processes_with_half_the_batch_train_the_pair_of_one(
    tmp_path: Path, val_size: float, last_batch: int
) -> None:
    # The training set does not split evenly: an odd size, and a short last global batch.
    train = len(DigitsDataModule(val_size=val_size).tensors("train")[1])
    assert train % 2 == 1 and train % GLOBAL_BATCH == last_batch
    fit(tmp_path / "one", 1, val_size)
    fit(tmp_path / "two", 2, val_size)

    one, two = (members(tmp_path / n / "checkpoints" / "last.ckpt") for n in ("one", "two"))
    assert one.keys() == two.keys() == {"a", "b"}
    for member, state in one.items():
        assert state.keys() == two[member].keys()
        for key, tensor in state.items():
            assert (two[member][key] - tensor).abs().max().item() <= 1e-12, (member, key)

    expected, got = barriers(tmp_path / "one"), barriers(tmp_path / "two")
    assert got.keys() == expected.keys()
    assert sorted({int(k[1]) for k in expected}) == [
        0,
        train // GLOBAL_BATCH + 1,
        2 * (train // GLOBAL_BATCH + 1),
    ]
    for key, values in expected.items():
        assert got[key] == pytest.approx(values, abs=1e-10), key
