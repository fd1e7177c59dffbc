"""Train the paper-scale CIFAR-10 pairs on a GPU for a few epochs: the barrier appears, and the pace.

Runs ``lwlc fit`` on ``configs/paper_cifar10_resnet18.yaml`` (ResNet-18 without normalisation) and
``configs/paper_cifar10_vgg11.yaml`` (VGG-11, torchvision layout) as shipped, except for what a
short run must change: a stop after ``--epochs`` epochs (``max_epochs`` stays 200, so the
learning-rate schedules are the full run's), a wall-clock limit (``trainer.max_time``, from
``--budget-s``), the run folder, the Callback's plans (``--plans``, default the full model only, to
spend the budget on training; ``--plans full,single`` adds every single layer, reported as the
worst one per epoch), splits (``--splits``, default test) and sample budget (``--max-samples``,
default the configs': the whole split) and, when CIFAR-10 is not on the machine, the data
(``--show-data`` prints which data a run would use and stops). The Callback
measures the full-model barrier after every epoch (the configs' ``at_epochs`` 0-9), so its
``barriers.csv`` shows the barrier rise from 0 at the initialisation (both members share it).

Data, in this order (``--data auto``; the report names the one used):
  1. CIFAR-10 from ``--cifar-root`` (``cifar-10-batches-py`` in it; default ``data/``);
  2. Fashion-MNIST's real IDX files, padded to 32x32 and repeated over 3 channels so the configs'
     networks run unchanged: searched in ``--fmnist-root``, ``data/fashion-mnist/`` of this
     checkout, then ``/usr/share/datasets/fashion-mnist`` (Debian's package). For a GPU machine
     without internet: ``mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz
     data/fashion-mnist/`` here (30 MB, git-ignored under data/) and carry ``data/fashion-mnist``
     with the working tree;
  3. fabricated CIFAR-shaped images with random labels (labelled "fabricated": the barrier then
     means nothing, the pace still does).

For each pair it records the time of every training epoch (the Callback's evaluations excluded,
the GPU synchronised), images per second (both members' images: a pair step trains two networks
on a batch each), the Callback's seconds per evaluation, and projects the configs' full run: 200
epochs at the median epoch time after the first, plus 20 evaluations (after epochs 0-9, then every
20). Figures are appended to benchmarks/RESULTS.md with the device (torch.cuda.get_device_name).

    python benchmarks/paper_gpu.py --budget-s 420          # on the GPU, both pairs, ~7 minutes
    python benchmarks/paper_gpu.py --cpu-check             # tiny, on a CPU, under 2 minutes
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from lwlc.data.base import TensorDataModule
from lwlc.data.mnist import FashionMNISTDataModule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
CONFIGS = {
    "resnet18": ROOT / "configs" / "paper_cifar10_resnet18.yaml",
    "vgg11": ROOT / "configs" / "paper_cifar10_vgg11.yaml",
}
FMNIST_DIRS = (ROOT / "data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))
FMNIST_FILE = "train-images-idx3-ubyte"
SCHEDULE_EPOCHS = 200
SCHEDULE_EVALUATIONS = 10 + SCHEDULE_EPOCHS // 20  # after epochs 0-9, and every 20 up to 200
RESERVE_S = 60  # per pair: process start, data loading and the Callback's last evaluation
DATA_LABELS = {
    "cifar10": "CIFAR-10",
    "fashion-mnist": "Fashion-MNIST (real IDX files) padded to 3x32x32 - not CIFAR-10",
    "fabricated": "FABRICATED random images and labels (barriers meaningless)",
}


class FashionMNIST32(FashionMNISTDataModule):
    """Fashion-MNIST as 3x32x32 images (zero-padded by 2, the grey channel repeated), so that the
    CIFAR-10 configs' networks take it unchanged."""

    name = "FashionMNIST (padded to 3x32x32)"
    input_shape = (3, 32, 32)
    mean = FashionMNISTDataModule.mean * 3
    std = FashionMNISTDataModule.std * 3

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        train_x, train_y, test_x, test_y = super()._load()
        grow = lambda x: F.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()  # noqa: E731
        return grow(train_x), train_y, grow(test_x), test_y


class FabricatedCIFAR10(TensorDataModule):
    """Random CIFAR-shaped images and labels (no files needed; nothing to learn)."""

    name = "fabricated CIFAR-10-shaped data (random images and labels)"
    num_classes = 10
    input_shape = (3, 32, 32)
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, samples: int = 50_000, test_samples: int = 10_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.samples, self.test_samples = samples, test_samples

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(0)
        n = self.samples + self.test_samples
        images = torch.rand(n, *self.input_shape, generator=g)
        labels = torch.randint(0, 10, (n,), generator=g)
        cut = self.samples
        return images[:cut], labels[:cut], images[cut:], labels[cut:]


class EpochClock(pl.Callback):
    """Seconds and images of every training epoch, written to ``path`` after each epoch (so a
    run stopped by ``max_time`` keeps them); stops training after ``stop_after`` epochs, so the
    learning-rate schedules stay those of the configs' 200 epochs. Listed before the barrier
    Callback, so its epoch end runs before that Callback's evaluation."""

    def __init__(self, path: str, stop_after: int) -> None:
        self.path = Path(path)
        self.stop_after = stop_after
        self.epochs: list[dict[str, float]] = []
        self._start, self._images = 0.0, 0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()
        self._start, self._images = time.perf_counter(), 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._images += count_images(batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()
        self.epochs.append({"seconds": time.perf_counter() - self._start, "images": self._images})
        self.path.write_text(json.dumps(self.epochs))
        if len(self.epochs) >= self.stop_after:
            trainer.should_stop = True


def count_images(batch: Any) -> int:
    """Images in a training batch: an (inputs, labels) pair, or one such pair per member."""
    if isinstance(batch, dict):
        return sum(count_images(b) for b in batch.values())
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], (list, tuple, dict)):
        return sum(count_images(b) for b in batch)
    return len(batch[0])


def find_data(args: argparse.Namespace) -> tuple[str, str]:
    """(kind, root) of the data to use: cifar10, fashion-mnist or fabricated."""
    cifar = Path(args.cifar_root) / "cifar-10-batches-py"
    if args.data in ("auto", "cifar10") and cifar.is_dir():
        return "cifar10", args.cifar_root
    if args.data == "cifar10":
        raise SystemExit(f"CIFAR-10 not found: no {cifar}/ (use --data auto to fall back)")
    dirs = ([Path(args.fmnist_root)] if args.fmnist_root else []) + list(FMNIST_DIRS)
    found = next((d for d in dirs if any(d.glob(FMNIST_FILE + "*"))), None)
    if args.data in ("auto", "fashion-mnist") and found is not None:
        return "fashion-mnist", str(found)
    if args.data == "fashion-mnist":
        raise SystemExit(f"Fashion-MNIST not found in {', '.join(map(str, dirs))}")
    return "fabricated", ""


def max_time(seconds: float) -> str:
    """Lightning's ``max_time`` string, DD:HH:MM:SS."""
    s = int(max(seconds, 1))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def derived_config(
    name: str, args: argparse.Namespace, data: tuple[str, str], run_dir: Path, max_time_s: float
) -> dict[str, Any]:
    """The paper config with the short run's changes (and nothing else)."""
    config = yaml.safe_load(CONFIGS[name].read_text())
    trainer = config["trainer"]
    trainer["max_time"] = max_time(max_time_s)
    trainer["default_root_dir"] = str(run_dir)
    trainer["enable_progress_bar"] = False
    if args.precision:
        trainer["precision"] = args.precision
    barrier = trainer["callbacks"][0]
    options = callback_options(barrier)
    options["plans"] = args.plans.split(",")
    if args.splits:
        options["splits"] = args.splits.split(",")
    if args.max_samples:
        options["max_samples"] = args.max_samples
    clock = {
        "class_path": "paper_gpu.EpochClock",
        "init_args": {"path": str(run_dir / "epochs.json"), "stop_after": args.epochs},
    }
    trainer["callbacks"] = [clock, *trainer["callbacks"]]
    kind, root = data
    shared = config["data"]["init_args"]
    if kind == "cifar10":
        shared["root"] = root
    else:
        keep = {k: shared[k] for k in ("batch_size", "eval_batch_size", "val_size", "num_workers")}
        if kind == "fashion-mnist":
            config["data"] = {
                "class_path": "paper_gpu.FashionMNIST32",
                "init_args": {**keep, "root": root},
            }
        else:
            config["data"] = {"class_path": "paper_gpu.FabricatedCIFAR10", "init_args": keep}
    if args.cpu_check:  # tiny: a narrow network, a few batches, a small evaluation
        config["model"]["init_args"]["model"]["init_args"]["width"] = 8
        trainer.update(accelerator="cpu", limit_train_batches=3, limit_val_batches=1)
        options["max_samples"] = 64
        config["data"]["init_args"]["num_workers"] = 0
        if kind == "fabricated":
            config["data"]["init_args"].update(samples=512, test_samples=128)
    return config


def callback_options(barrier: dict[str, Any]) -> dict[str, Any]:
    """The barrier Callback's options in a config entry (its init_args, or their ``spec``)."""
    options = barrier["init_args"]
    spec = options.get("spec")
    if isinstance(spec, dict):
        return spec.get("init_args", spec)
    return options


def full_barriers(path: Path, plan: str = "full") -> dict[int, float]:
    """Epoch -> the largest loss barrier of ``plan``'s paths (midpoint reference, test split):
    the full model's, or the worst single layer's (either rest)."""
    if not path.is_file():
        return {}
    with path.open() as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["plan"] == plan
            and r["reference"] == "midpoint"
            and r.get("split", "test") == "test"
        ]
    out: dict[int, float] = {}
    for r in rows:
        epoch = int(float(r["epoch"]))
        out[epoch] = max(out.get(epoch, -float("inf")), float(r["loss_barrier"]))
    return out


def eval_seconds(run_dir: Path) -> list[float]:
    """The Callback's seconds per evaluation (its ``barrier/seconds`` metric)."""
    seconds = []
    for metrics in run_dir.rglob("metrics.csv"):
        with metrics.open() as f:
            seconds += [
                float(r["barrier/seconds"]) for r in csv.DictReader(f) if r.get("barrier/seconds")
            ]
    return seconds


def run_pair(
    name: str, args: argparse.Namespace, data: tuple[str, str], max_time_s: float
) -> dict[str, Any]:
    """One ``lwlc fit`` of the derived config in a fresh process; what it measured."""
    run_dir = Path(args.out) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "epochs.json").unlink(missing_ok=True)
    config_file = Path(args.out) / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(derived_config(name, args, data, run_dir, max_time_s)))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "benchmarks"), env.get("PYTHONPATH", "")]
    )
    command = [sys.executable, "-m", "lwlc", "fit", "--config", str(config_file), "--overwrite"]
    started = time.perf_counter()
    with (run_dir / "fit.log").open("w") as log:
        done = subprocess.run(
            command,
            cwd=run_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=max_time_s + 10 * RESERVE_S,
        )
    wall = time.perf_counter() - started
    if done.returncode:
        tail = (run_dir / "fit.log").read_text().splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"lwlc fit of {name} failed ({done.returncode}); see {run_dir}/fit.log")
    epochs = (
        json.loads((run_dir / "epochs.json").read_text())
        if (run_dir / "epochs.json").exists()
        else []
    )
    log = (run_dir / "fit.log").read_text()
    # setup's line: "lwlc: data: <name> from <source> (<n> train, ...)"
    source = next(
        (line.split(" from ", 1)[-1] for line in log.splitlines() if "lwlc: data: " in line), "?"
    )
    return {
        "name": name,
        "epochs": epochs,
        "wall": wall,
        "source": source,
        "run_dir": run_dir,
        "barriers": full_barriers(run_dir / "barriers" / "barriers.csv"),
        "single": full_barriers(run_dir / "barriers" / "barriers.csv", "single"),
        "evals": eval_seconds(run_dir),
    }


def row(r: dict[str, Any], precision: str) -> str:
    """A results-table row: pace, projection and the barrier by epoch."""
    times = [e["seconds"] for e in r["epochs"]]
    images = [e["images"] for e in r["epochs"]]
    if not times:
        return f"| {r['name']} | {precision} | 0 | - | - | - | - | - | - | (no epoch finished in {r['wall']:.0f} s) | - |"
    steady = times[1:] or times
    epoch_s = statistics.median(steady)
    rate = statistics.median([n / t for n, t in zip(images[1:] or images, steady, strict=True)])
    per_eval = statistics.mean(r["evals"]) if r["evals"] else 0.0
    hours = (SCHEDULE_EPOCHS * epoch_s + SCHEDULE_EVALUATIONS * per_eval) / 3600
    from lwlc.results.console import shown  # noise prints as 0.00, never -0.00

    barriers = ", ".join(f"{e}: {shown(b, 2)}" for e, b in sorted(r["barriers"].items())) or "-"
    single = ", ".join(f"{e}: {shown(b, 2)}" for e, b in sorted(r.get("single", {}).items())) or "-"
    return (
        f"| {r['name']} | {precision} | {len(times)} | {times[0]:.1f} | {epoch_s:.1f} | {rate:,.0f} | "
        f"{per_eval:.1f} ({len(r['evals'])}) | {r['wall']:.0f} | {hours:.1f} | {barriers} | "
        f"{single} |"
    )


def device_name(cpu_check: bool) -> str:
    if torch.cuda.is_available() and not cpu_check:
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", default="resnet18,vgg11", help=f"comma-separated, of {', '.join(CONFIGS)}"
    )
    p.add_argument(
        "--epochs", type=int, default=5, help="epochs of each pair (max_time may stop it sooner)"
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=420,
        help="seconds for all pairs together, start-up included",
    )
    p.add_argument(
        "--data", choices=["auto", "cifar10", "fashion-mnist", "fabricated"], default="auto"
    )
    p.add_argument(
        "--cifar-root", default=str(ROOT / "data"), help="folder holding cifar-10-batches-py"
    )
    p.add_argument(
        "--fmnist-root",
        default="",
        help="folder holding the Fashion-MNIST IDX files (searched first)",
    )
    p.add_argument(
        "--plans", default="full", help="the Callback's plans (the configs: full,single)"
    )
    p.add_argument(
        "--splits", default="test", help="the Callback's splits (the configs: test,train)"
    )
    p.add_argument(
        "--max-samples",
        type=int,
        default=None,
        help="samples per split the Callback measures (default: the configs', the whole split)",
    )
    p.add_argument(
        "--show-data",
        action="store_true",
        help="print the data this run would use (and how it was found), then stop",
    )
    p.add_argument(
        "--precision", default="", help="trainer precision (the configs: 32-true; e.g. bf16-mixed)"
    )
    p.add_argument(
        "--cpu-check", action="store_true", help="tiny run on a CPU: width 8, 3 batches, 2 epochs"
    )
    p.add_argument(
        "--out", default=os.environ.get("OUT", "/tmp/lwlc_paper_gpu"), help="run folders"
    )
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args()
    if args.cpu_check:
        args.epochs = min(args.epochs, 2)
    elif not torch.cuda.is_available() and not args.show_data:
        raise SystemExit("no CUDA device: this script is for a GPU (use --cpu-check on a CPU)")
    names = args.models.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    data = find_data(args)
    print(f"paper_gpu: data {data[0]} {data[1]}: {DATA_LABELS[data[0]]}", flush=True)
    if args.show_data:
        return
    started, results = time.perf_counter(), []
    for i, name in enumerate(names):
        left = args.budget_s - (time.perf_counter() - started)
        max_time = left / (len(names) - i) - RESERVE_S
        print(f"paper_gpu: {name}, training for at most {max_time:.0f} s", flush=True)
        results.append(run_pair(name, args, data, max_time))
        print(row(results[-1], args.precision or "32-true"), flush=True)

    labels = DATA_LABELS
    section = "\n".join(
        [
            "",
            f"## paper_gpu, {datetime.date.today()}: paper-scale CIFAR-10 pairs{' (CPU check, tiny)' if args.cpu_check else ''}",
            "",
            f"Device: {device_name(args.cpu_check)}; torch {torch.__version__}, lightning {pl.__version__}. "
            f"Data: {labels[data[0]]}, from {results[0]['source'] if results else '?'}. "
            f"`python benchmarks/paper_gpu.py{' --cpu-check' if args.cpu_check else ''} --budget-s {args.budget_s:.0f} --epochs {args.epochs}`: "
            f"configs/paper_cifar10_*.yaml as shipped (batch 64, SGD, the authors' schedules; precision {args.precision or '32-true'}) "
            f"but for a stop after {args.epochs} epochs (the 200-epoch schedules kept), max_time and the Callback's plans ({args.plans}; "
            + (
                "64 samples per split, at width 8, 3 batches an epoch)"
                if args.cpu_check
                else f"splits {args.splits}, "
                f"{args.max_samples or 'all'} samples per split, the configs' alphas)"
            )
            + ".",
            "'images/s': both members' training images per second (median over epochs after the first); epoch times "
            "exclude the Callback's evaluations; 'projected h': 200 epochs at the median epoch time plus the configs' 20 "
            "evaluations at the measured cost; barrier: full-model loss barrier (midpoint reference, test) after each "
            "epoch (0 = the shared initialisation).",
            "",
            "| pair | precision | epochs | first epoch s | epoch s | images/s | s per evaluation (n) | wall s | projected h (200 epochs) | full-model barrier by epoch | max single-layer barrier by epoch |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *(row(r, args.precision or "32-true") for r in results),
            "",
        ]
    )
    with open(args.results, "a") as f:
        f.write(section)
    print(section, flush=True)


if __name__ == "__main__":
    main()
