"""Time one epoch of paired training against training the two members one after another.

Both ways run in one process, on the same machine and the same data: lwlc's PairedModule (one
Trainer, both members in every step, one optimizer) and two ClassifierModule runs, one per
member, with the members' init and order seeds. The epoch time is the fastest warm epoch (the
first epoch, with its set-up, is dropped). The ratio paired / (single A + single B) is below 1
when pairing saves time. Cases: the digits MLP and a small CNN on the CPU, and with a GPU also
VGG-11 and ResNet-18 on CIFAR-shaped random data. Results are appended to benchmarks/RESULTS.md.

    python benchmarks/bench_pair.py                # 1 CPU thread (fastest for tiny models)
    python benchmarks/bench_pair.py --threads 2 --epochs 4
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lwlc.data import DigitsDataModule, TensorDataModule
from lwlc.models import MLP, VGG, ResNet18, SmallCNN
from lwlc.training import ClassifierModule, PairedModule, reinitialize

RESULTS = Path(__file__).with_name("RESULTS.md")
SEEDS = {"init_seed_a": 0, "init_seed_b": 1, "order_seed_a": 0, "order_seed_b": 1}


class RandomImages(TensorDataModule):
    """CIFAR-shaped random images and labels, so the GPU cases need no download."""

    name = "random 3x32x32"
    num_classes = 10
    input_shape = (3, 32, 32)
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    samples = 10_000

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(self.samples + 1000, *self.input_shape, generator=generator)
        labels = torch.randint(0, 10, (self.samples + 1000,), generator=generator)
        return images[: self.samples], labels[: self.samples], images[-1000:], labels[-1000:]


class _SGD:
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


class BenchPair(_SGD, PairedModule):
    """PairedModule with a fixed optimizer (the CLI would add it from the config)."""


class BenchSingle(_SGD, ClassifierModule):
    """ClassifierModule with the same fixed optimizer."""


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (device work included)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self._start)


@dataclass
class Case:
    name: str
    model: nn.Module
    data: type[TensorDataModule]
    batch_size: int
    accelerator: str
    channels_last: bool = False


def warm_epoch_seconds(
    module: pl.LightningModule, data: TensorDataModule, case: Case, epochs: int
) -> float:
    """The fastest training epoch after the first, without validation, logging or checkpoints."""
    timer = EpochTimer()
    trainer = pl.Trainer(
        accelerator=case.accelerator,
        devices=1,
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=data)
    return min(timer.times[1:])


def measure(case: Case, epochs: int) -> dict[str, float]:
    """Seconds per epoch of the pair and of each member trained alone."""
    seconds = {}
    pair = BenchPair(case.model, channels_last=case.channels_last, **SEEDS)
    data = case.data(batch_size=case.batch_size, order_seeds=pair.order_seeds)
    seconds["pair"] = warm_epoch_seconds(pair, data, case, epochs)
    for member in ("a", "b"):
        net = copy.deepcopy(case.model)
        reinitialize(net, SEEDS[f"init_seed_{member}"])
        single = BenchSingle(net, channels_last=case.channels_last)
        data = case.data(batch_size=case.batch_size, order_seeds=[SEEDS[f"order_seed_{member}"]])
        seconds[member] = warm_epoch_seconds(single, data, case, epochs)
    return seconds


def cases() -> list[Case]:
    found = [
        Case("digits MLP 64-128-128-10", MLP(), DigitsDataModule, 32, "cpu"),
        Case("digits SmallCNN width 32", SmallCNN(in_channels=1), DigitsDataModule, 32, "cpu"),
    ]
    if torch.cuda.is_available():
        resnet = ResNet18(norm="none")
        found += [
            Case("CIFAR-like VGG-11, BN", VGG(batch_norm=True), RandomImages, 64, "gpu", True),
            Case("CIFAR-like ResNet-18, no norm", resnet, RandomImages, 64, "gpu", True),
        ]
    return found


def machine() -> str:
    """CPU model and core count, the GPU if any."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first dropped)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch is dropped as warm-up")
    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)

    header = (
        f"\n## bench_pair, {datetime.date.today()}: paired vs sequential training, one epoch\n\n"
        f"Machine: {machine()}; torch {torch.__version__}, lightning {pl.__version__}, "
        f"{args.threads} CPU thread(s), fastest of {args.epochs - 1} warm epochs; load average "
        f"{os.getloadavg()[0]:.1f} at the start (other jobs share the machine when above 0).\n\n"
        "| case | device | batch | pair s/epoch | A alone | B alone | ratio pair/(A+B) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = []
    for case in cases():
        s = measure(case, args.epochs)
        ratio = s["pair"] / (s["a"] + s["b"])
        rows.append(
            f"| {case.name} | {case.accelerator} | {case.batch_size} | {s['pair']:.3f} "
            f"| {s['a']:.3f} | {s['b']:.3f} | {ratio:.2f} |\n"
        )
        print(rows[-1], end="", flush=True)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n")
    with RESULTS.open("a") as f:
        f.write(header + "".join(rows))
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
