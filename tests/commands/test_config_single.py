"""configs/digits_mlp_single.yaml trains one network with its own loggers, and the barrier
Callback its comment documents compares it with another run's checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from conftest import CONFIGS
from lwlc.commands.cli import main
from lwlc.models import MLP

SINGLE = str(CONFIGS / "digits_mlp_single.yaml")
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5"]
SHORT += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def test_the_single_config_trains_one_network_and_a_reference_compares_with_it(
    tmp_path: Path,
) -> None:
    first = tmp_path / "single_a"
    main(["fit", "--config", SINGLE, "--trainer.default_root_dir", str(first), *SHORT])

    ckpt = first / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    expected = MLP(in_features=64, num_classes=10, width=128, depth=2).state_dict()
    assert {k: v.shape for k, v in state.items()} == {
        f"net.{k}": v.shape for k, v in expected.items()
    }
    # Its loggers work as configured: CSV metrics of one network, and an offline W&B run.
    with (first / "logs" / "version_0" / "metrics.csv").open() as f:
        columns = set(next(csv.reader(f)))
    assert {"train/loss_epoch", "train/acc", "val/acc", "val/loss"} <= columns
    assert not any(c.startswith(("a/", "b/")) for c in columns)
    assert len(list((first / "wandb").glob("offline-run-*"))) == 1
    assert not (first / "barriers").exists()  # no partner, no barriers

    second = tmp_path / "single_b"
    reference = ["--trainer.callbacks", "lwlc.callbacks.LayerwiseBarrierCallback"]
    reference += ["--trainer.callbacks.reference_ckpt", str(ckpt)]
    reference += ["--trainer.callbacks.every_n_epochs", "1", "--trainer.logger", "false"]
    main(
        ["fit", "--config", SINGLE, "--trainer.default_root_dir", str(second), "--seed_everything"]
        + ["1", "--data.init_args.order_seeds", "[1]", *SHORT, *reference]
    )
    summary = json.loads((second / "barriers" / "summary.json").read_text())
    assert summary["pairing"]["mode"] == "reference"
    assert summary["pairing"]["b"] == f"{ckpt} [model]"
    assert [e["epoch"] for e in summary["evaluations"]] == [0, 1]
