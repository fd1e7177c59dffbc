"""Fit time of ``configs/cifar10_resnet18.yaml`` on a GPU with and without its barrier Callback.

The config as shipped (bf16-mixed, the Callback's paper schedule: after epochs 0-9, then every 20,
and at the end; full model and single layers on 1,000 validation samples), shortened to
``--epochs`` epochs, on CIFAR-10 files fabricated in the real format (random images, 50,000 for
training by default: this machine is offline, and the timing does not depend on the pixels). Each variant is one ``lwlc fit``
in a fresh process (see bench_callback.py, whose child mode it uses; W&B offline). A 200-epoch
run cannot be timed in a short GPU lease, so the overhead of the full schedule is also projected
from the measured parts: 20 evaluations (epochs 0-9, 20, 40, ..., 200) of the measured cost each,
against 200 epochs of the measured epoch time. The result is appended to benchmarks/RESULTS.md.

    python benchmarks/bench_callback_gpu.py --epochs 1 --results $OUT/callback_gpu.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cifar10_resnet18.yaml"
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from bench_callback import WITHOUT, barrier_seconds  # noqa: E402
from bench_pair import RESULTS  # noqa: E402

SCHEDULE_EPOCHS = 200
SCHEDULE_EVALUATIONS = 10 + SCHEDULE_EPOCHS // 20  # after epochs 0-9, and every 20 up to 200


def child(args: list[str], out: str) -> None:
    """``lwlc fit`` in this process, accepting the fabricated files (their md5 sums cannot match)."""
    import torchvision.datasets.cifar
    from bench_callback import child as timed_fit

    torchvision.datasets.cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
    timed_fit(str(CONFIG), args, out)


def run(args: list[str]) -> dict[str, float]:
    """One timed fit in a fresh process and scratch folder."""
    with tempfile.TemporaryDirectory(prefix="bench_callback_gpu_") as scratch:
        out = Path(scratch) / "timing.json"
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        command = [sys.executable, __file__, "--child", json.dumps(args), "--out", str(out)]
        subprocess.run(command, cwd=scratch, env=env, check=True, stdout=subprocess.DEVNULL)
        timing = json.loads(out.read_text())
        timing["evaluations"], timing["sweep_s"] = barrier_seconds(Path(scratch))
        return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default="/tmp/lwlc_cifar10", help="where to fabricate CIFAR-10")
    parser.add_argument("--per-batch", type=int, default=10_000, help="images per training file (5 files)")
    parser.add_argument("--extra", default="", help="more `lwlc fit` arguments (a smoke test on a CPU)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(json.loads(args.child), args.out)
        return

    import torch

    from fixtures_data import write_cifar10

    if not (Path(args.data) / "cifar-10-batches-py").exists():
        write_cifar10(Path(args.data), per_batch=args.per_batch, n_test=2 * args.per_batch)
    common = ["--trainer.max_epochs", str(args.epochs), "--data.init_args.root", args.data]
    common += shlex.split(args.extra)
    without = run(common + WITHOUT)
    with_ = run(common)
    epoch_s = without["fit_s"] / args.epochs
    per_eval = with_["callback_s"] / max(with_["evaluations"], 1)
    projected = SCHEDULE_EVALUATIONS * per_eval / (SCHEDULE_EPOCHS * epoch_s)
    measured = (with_["fit_s"] - without["fit_s"]) / without["fit_s"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    section = (
        f"\n## bench_callback_gpu, {datetime.date.today()}: cifar10_resnet18 with and without the "
        f"barrier Callback\n\nMachine: {device}, torch {torch.__version__}. `lwlc fit --config "
        f"configs/cifar10_resnet18.yaml --trainer.max_epochs {args.epochs}` (bf16-mixed, batch 64, "
        f"CIFAR-10 fabricated in the real format, {5 * args.per_batch:,} training images), each "
        "variant once in a fresh process, W&B offline."
        + (f" Extra arguments: `{args.extra}`." if args.extra else "")
        + "\n\n"
        "| epochs | fit s without | fit s with | overhead (measured) | evaluations | s per evaluation "
        "| s in sweeps | projected overhead, 200 epochs |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {args.epochs} | {without['fit_s']:.1f} | {with_['fit_s']:.1f} | {100 * measured:+.1f}% "
        f"| {with_['evaluations']} | {per_eval:.2f} | {with_['sweep_s']:.2f} | {100 * projected:+.1f}% |\n"
    )
    print(section, flush=True)
    with open(args.results, "a") as f:
        f.write(section)


if __name__ == "__main__":
    main()
