"""lwlc's LR schedules follow the run's length: ``lwlc fit`` of 1 or 3 epochs draws the same shape,
and the shipped CIFAR configs are the paper's schedules over the paper's 200 epochs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from torch import nn

from conftest import CONFIGS
from lwlc.commands.cli import main
from lwlc.data import DigitsDataModule
from lwlc.models import MLP
from lwlc.training import ClassifierModule
from lwlc.training.schedules import StepDecay, WarmupCosine
from lwlc_runs import DIGITS

LR = 0.05  # the digits config's SGD rate
BATCHES = 10


def fit_rates(root: Path, epochs: int, *schedule: str) -> dict[int, float]:
    """``lwlc fit`` of the digits config under ``schedule``; the rate of each optimizer step as
    Lightning's LearningRateMonitor logged it to the CSV logger."""
    main(
        ["fit", "--config", DIGITS, "--trainer.default_root_dir", str(root)]
        + ["--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", str(BATCHES)]
        + ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]
        + ["--trainer.logger.init_args.save_dir", str(root), "--trainer.log_every_n_steps", "1"]
        + ["--trainer.callbacks", "lightning.pytorch.callbacks.LearningRateMonitor"]
        + ["--trainer.callbacks.logging_interval", "step", "--trainer.enable_progress_bar", "false"]
        + ["--trainer.enable_model_summary", "false", *schedule]
    )
    (metrics,) = root.glob("**/metrics.csv")
    with metrics.open() as f:
        return {int(r["step"]): float(r["lr-SGD"]) for r in csv.DictReader(f) if r["lr-SGD"]}


def test_warmup_cosine_spans_a_1_and_a_3_epoch_fit_alike(tmp_path: Path) -> None:
    schedule = ["--lr_scheduler", "lwlc.training.schedules.WarmupCosine"]
    schedule += ["--lr_scheduler.init_args.warmup", "0.2", "--lr_scheduler.init_args.start_factor"]
    schedule += ["0.1"]
    for epochs in (1, 3):
        rates = fit_rates(tmp_path / f"e{epochs}", epochs, *schedule)
        total = epochs * BATCHES
        assert sorted(rates) == list(range(total))  # one rate per optimizer step
        warmup = 0.2 * total
        for step, rate in rates.items():
            if step < warmup:  # 0.005 rising linearly to 0.05
                expected = LR * 0.1 + LR * 0.9 * step / warmup
            else:  # half a cosine period from 0.05 down to 0 at the end of the run
                expected = LR / 2 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
            assert rate == pytest.approx(expected, rel=1e-9, abs=1e-12), (epochs, step)
        assert rates[0] == pytest.approx(0.005)
        assert rates[int(warmup)] == pytest.approx(LR)
        assert rates[int(0.6 * total)] == pytest.approx(LR / 2)  # the cosine's midpoint
        # The run's own length, not a fixed count: no rate is 0 before the last step.
        assert min(rates.values()) > 0
        final = torch.load(tmp_path / f"e{epochs}" / "checkpoints" / "last.ckpt", weights_only=True)
        assert final["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0, abs=1e-12)


def test_step_decay_halves_at_fractions_of_the_run(tmp_path: Path) -> None:
    schedule = ["--lr_scheduler", "lwlc.training.schedules.StepDecay"]
    schedule += ["--lr_scheduler.init_args.every"]
    rates = fit_rates(tmp_path, 2, *schedule, "0.25")  # 20 steps: halved every 5
    assert rates == pytest.approx({s: LR * 0.5 ** (s // 5) for s in range(2 * BATCHES)})


def test_an_endless_run_with_a_run_long_schedule_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fit_rates(tmp_path, -1, "--lr_scheduler", "lwlc.training.schedules.WarmupCosine")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lwlc: error: WarmupCosine spans the whole run, but this run has no end")
    assert "trainer.max_epochs" in err and "\n" not in err and "Traceback" not in err


def rates_per_epoch(
    schedule: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    per_epoch: int,
    optimizer: torch.optim.Optimizer,
) -> list[float]:
    """The rate at the start of each epoch, stepping ``schedule`` after every optimizer step."""
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        for _ in range(per_epoch):
            optimizer.step()
            schedule.step()
    return rates


def shipped_schedule(config: str) -> dict:
    return yaml.safe_load((CONFIGS / config).read_text())["lr_scheduler"]


def test_the_vgg_config_halves_every_30_of_200_epochs_as_steplr() -> None:
    spec = shipped_schedule("cifar10_vgg.yaml")
    assert spec["class_path"] == "lwlc.training.schedules.StepDecay"
    per_epoch = 3
    ours = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    decay = StepDecay(ours, **spec["init_args"], total_steps=200 * per_epoch)
    torchs = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    step_lr = torch.optim.lr_scheduler.StepLR(torchs, step_size=30, gamma=0.5)  # per epoch
    reference = []
    for _ in range(200):
        reference.append(torchs.param_groups[0]["lr"])
        torchs.step()
        step_lr.step()
    assert rates_per_epoch(decay, 200, per_epoch, ours) == pytest.approx(reference, rel=1e-12)


def test_the_resnet_config_warms_up_from_1e_4_over_5_of_200_epochs_then_cosine() -> None:
    spec = shipped_schedule("cifar10_resnet18.yaml")
    assert spec["class_path"] == "lwlc.training.schedules.WarmupCosine"
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    schedule = WarmupCosine(optimizer, **spec["init_args"], total_steps=200 * 4)
    rates = rates_per_epoch(schedule, 201, 4, optimizer)
    assert rates[0] == pytest.approx(1e-4)
    assert rates[1] == pytest.approx(1e-4 + (0.05 - 1e-4) / 5)
    assert rates[5] == pytest.approx(0.05)
    assert rates[5 + 65] == pytest.approx(0.05 * (1 + math.cos(math.pi / 3)) / 2)
    assert rates[200] == pytest.approx(0.0, abs=1e-12)


def test_a_plain_trainer_spans_the_schedule_over_its_run() -> None:
    module = ClassifierModule(
        MLP(64, 10, 16, 1), lr_scheduler=lambda opt: WarmupCosine(opt, warmup=0.5, start_factor=0.5)
    )
    trainer = Trainer(
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=DigitsDataModule())
    (schedule,) = trainer.lr_scheduler_configs
    assert schedule.interval == "step" and schedule.scheduler.total_steps == 6
    assert schedule.scheduler.last_epoch == 6  # stepped after each of the 6 optimizer steps
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
