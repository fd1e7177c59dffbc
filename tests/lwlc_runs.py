"""Tiny real ``lwlc fit`` runs on the digits data, shared by the analyze and reliability tests.

Each run is the command a user types (in-process, through ``lwlc.commands.cli.main``), shortened to
a few optimizer steps so that a test module can afford its own.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

from conftest import CONFIGS
from lwlc.commands.cli import main
from lwlc.models import MLP

DIGITS = str(CONFIGS / "digits_mlp.yaml")
QUIET = [
    "--trainer.logger",
    "false",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
SINGLE_WIDTH = 32


def fit_pair(root: Path, *args: str, batches: int = 5) -> Path:
    """``lwlc fit`` of the demo config for one short epoch; returns ``last.ckpt``."""
    main(
        ["fit", "--config", DIGITS, "--trainer.default_root_dir", str(root)]
        + [
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            str(batches),
            *QUIET,
            *args,
        ]
    )
    return root / "checkpoints" / "last.ckpt"


def single_config(root: Path, seed: int) -> Path:
    """A config training one MLP (``ClassifierModule``) on digits, initialised under ``seed``."""
    config = {
        "seed_everything": seed,
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 5,
            "accelerator": "cpu",
            "deterministic": True,
            "default_root_dir": str(root),
        },
        "model": {
            "class_path": "lwlc.training.ClassifierModule",
            "init_args": {
                "model": {
                    "class_path": "lwlc.models.MLP",
                    "init_args": {"in_features": 64, "num_classes": 10, "width": SINGLE_WIDTH},
                }
            },
        },
        "data": {"class_path": "lwlc.data.DigitsDataModule", "init_args": {"batch_size": 32}},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}},
    }
    path = root.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def fit_single(root: Path, seed: int) -> Path:
    """``lwlc fit`` of one small MLP; returns ``last.ckpt``."""
    main(["fit", "--config", str(single_config(root, seed)), *QUIET])
    return root / "checkpoints" / "last.ckpt"


def members(ckpt: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The networks in a checkpoint, read independently of lwlc: ``a``/``b`` or ``model``."""
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    out: dict[str, dict[str, torch.Tensor]] = {}
    for prefix, label in (("net_a.", "a"), ("net_b.", "b"), ("net.", "model")):
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if own:
            out[label] = own
    return out


def mlp_of(ckpt: Path) -> MLP:
    """The MLP described by a checkpoint's saved config."""
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    return MLP(**hparams["model"]["init_args"])


def quiet_trainer(**kwargs) -> pl.Trainer:
    """A CPU Trainer that logs, checkpoints, validates and prints nothing (Python-level fits)."""
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kwargs,
    )
