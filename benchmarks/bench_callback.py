"""Fit time of a shipped config with and without its layer-wise barrier Callback.

Each run is ``lwlc fit`` of the config as a user runs it, in a fresh process in a scratch folder,
timed around ``Trainer.fit``: set-up, training, the Callback's evaluations and logging, its work
at the end of fit and the teardown, but not the imports. "Without" is the same command with
``--trainer.callbacks=[]``; the overhead is (with - without) / without. As the difference of two
noisy wall times it is rough for short fits, so the time spent inside the Callback's hooks is
reported too, and its ratio to the time of the sweeps themselves. Targets (issue 27): as shipped,
at most 10% of a fit of minutes (Fashion-MNIST MLP), and on the seconds-long digits fit no more
than the sweeps plus a fifth. Two setups:

- as shipped: the config's loggers (W&B, offline here, and CSV); with W&B the Callback also logs
  the heatmaps (HTML) every few evaluations and the layers chart after the last one, and draws
  the heatmap PNGs at the end of fit when the config asks for them (``figures: true``);
- measurement only: a CSV logger and ``figures: false``: the sweeps, the CSVs and the scalars.

The variants alternate, and the fastest of ``--repeats`` runs of each is kept. The result is
appended to benchmarks/RESULTS.md.

    python benchmarks/bench_callback.py                      # configs/digits_mlp.yaml, 1 run each
    python benchmarks/bench_callback.py --repeats 3 --config configs/fashion_mnist_mlp.yaml
    python benchmarks/bench_callback.py --setups "as shipped" --fit-args "--trainer.max_epochs 3"
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_pair import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {
    "as shipped": [],
    "measurement only": [
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir", ".", "--trainer.logger.init_args.name", "logs",
        "--trainer.callbacks.init_args.figures", "false",
    ],
}  # fmt: skip
WITHOUT = ["--trainer.callbacks=[]"]
START = ("setup", "on_fit_start")
HOOKS = (*START, "on_train_start", "on_train_batch_end", "on_train_epoch_end", "on_train_end")
# Also the Callback's work outside its hooks: its state in every checkpoint Lightning saves.
WORK = (*HOOKS, "state_dict", "on_exception", "teardown")


def child(config: str, args: list[str], out: str) -> None:
    """Run ``lwlc fit`` here (cwd = a scratch folder) and write its timings to ``out``."""
    from lightning.pytorch import Trainer

    from lwlc.callbacks import LayerwiseBarrierCallback
    from lwlc.commands.cli import main

    timing = {"fit_s": 0.0, "callback_s": 0.0, "start_s": 0.0, "end_s": 0.0}

    def timed(method: Any, key: str) -> Any:
        # wraps: LightningCLI reads Trainer.fit's signature (ckpt_path, ...) to build its parser.
        @functools.wraps(method)
        def run(*call_args: object, **kwargs: object) -> Any:
            start = time.perf_counter()
            try:
                return method(*call_args, **kwargs)
            finally:
                timing[key] += time.perf_counter() - start

        return run

    Trainer.fit = timed(Trainer.fit, "fit_s")
    callback = LayerwiseBarrierCallback
    callback.on_train_end = timed(callback.on_train_end, "end_s")
    for hook in START:
        setattr(callback, hook, timed(getattr(callback, hook), "start_s"))
    for hook in WORK:
        setattr(callback, hook, timed(getattr(callback, hook), "callback_s"))
    main(["fit", "--config", config, "--trainer.enable_progress_bar", "false", *args])
    Path(out).write_text(json.dumps(timing))


def barrier_seconds(folder: Path) -> tuple[int, float]:
    """Evaluations and seconds spent in the Callback's sweeps (its ``barrier/seconds`` metric)."""
    seconds = []
    for metrics in folder.rglob("logs/version_*/metrics.csv"):
        with metrics.open() as f:
            rows = csv.DictReader(f)
            seconds += [float(r["barrier/seconds"]) for r in rows if r.get("barrier/seconds")]
    return len(seconds), sum(seconds)


def run(config: str, args: list[str], threads: int | None) -> dict[str, float]:
    """One timed ``lwlc fit`` in a fresh process and scratch folder."""
    with tempfile.TemporaryDirectory(prefix="bench_callback_") as scratch:
        out = Path(scratch) / "timing.json"
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        command = [sys.executable, __file__, "--config", config, "--child", json.dumps(args)]
        command += ["--out", str(out)] + (["--threads", str(threads)] if threads else [])
        subprocess.run(command, cwd=scratch, env=env, check=True, stdout=subprocess.DEVNULL)
        timing = json.loads(out.read_text())
        timing["evaluations"], timing["sweep_s"] = barrier_seconds(Path(scratch))
        return timing


def measure(config: str, setup: list[str], repeats: int, threads: int | None) -> dict[str, dict]:
    """Fastest run of each variant, alternating so both see the same machine load, and the
    spread (slowest - fastest) of the runs without the Callback: the noise of the difference."""
    runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    for _ in range(repeats):
        runs["without"].append(run(config, setup + WITHOUT, threads))
        runs["with"].append(run(config, setup, threads))
    fastest = {variant: min(found, key=lambda r: r["fit_s"]) for variant, found in runs.items()}
    fits = [r["fit_s"] for r in runs["without"]]
    fastest["without"]["spread_s"] = max(fits) - min(fits)
    ratios = sorted(r["callback_s"] / r["sweep_s"] for r in runs["with"])
    fastest["with"]["ratios"] = ratios
    return fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "digits_mlp.yaml"))
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--setups", default=",".join(SETUPS), help=f"which setups, of: {', '.join(SETUPS)}"
    )
    parser.add_argument(
        "--fit-args", default="", help="more `lwlc fit` arguments, e.g. '--trainer.max_epochs 3'"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = str(Path(args.config).resolve())
    if args.child is not None:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        child(config, json.loads(args.child), args.out)
        return

    name = Path(config).relative_to(ROOT) if Path(config).is_relative_to(ROOT) else config
    load = os.getloadavg()[0]
    rows = []
    extra = shlex.split(args.fit_args)
    for setup in args.setups.split(","):
        r = measure(config, SETUPS[setup] + extra, args.repeats, args.threads)
        without, with_ = r["without"]["fit_s"], r["with"]["fit_s"]
        w = r["with"]
        rows.append(
            f"| {setup} | {without:.1f} | {with_:.1f} | {r['without']['spread_s']:.1f} "
            f"| {100 * (with_ - without) / without:+.1f}% | {w['callback_s']:.2f} "
            f"| {100 * w['callback_s'] / without:.1f}% | {w['start_s']:.2f} "
            f"| {w['evaluations']} | {w['sweep_s']:.2f} | {w['end_s']:.2f} "
            f"| {w['callback_s'] / w['sweep_s']:.2f} | {statistics.median(w['ratios']):.2f} "
            f"({w['ratios'][0]:.2f}-{w['ratios'][-1]:.2f}) |\n"
        )
        print(rows[-1], end="", flush=True)
    section = (
        f"\n## bench_callback, {datetime.date.today()}: fit time with and without the barrier "
        f"Callback\n\nMachine: {machine()}; `lwlc fit --config {name} {args.fit_args}`, the "
        f"Callback's default schedule; fastest of {args.repeats} run(s) each, alternating, in "
        "fresh processes; load "
        f"average {load:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other jobs "
        "share the machine when above 0). 'overhead': (with - without) / without, noisy for short "
        "fits ('spread': slowest - fastest fit without the Callback); 's in Callback': time spent "
        "in the Callback's hooks and in its state_dict (its history in each checkpoint), and its "
        "share of the fit without it; 'at start': its setup and "
        "on_fit_start (run info); 'at end': its fit-end work (last W&B media, heatmap PNGs when "
        "drawn); 'cost / "
        "sweeps': s in Callback over s in sweeps (1.00: the Callback costs its sweeps only), in "
        "the fastest run and the median (range) over all runs with the Callback.\n\n"
        "| setup | fit s without | fit s with | spread s | overhead | s in Callback | share "
        "| s at start | evaluations | s in sweeps | s at end | cost / sweeps "
        "| median (range) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n")
    with RESULTS.open("a") as f:
        f.write(section + "".join(rows))
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
