"""Time to the first line of each ``lwlc`` command's help, set-up and argument errors, as a ratio
to ``python -c "import torch"`` measured in the same run (issue 27: within 1.5x).

Every case runs in a fresh interpreter, interleaved with the ``import torch`` reference,
``--repeat`` times; the table shows medians. The first line is the first line on stdout or
stderr (help text, ``lwlc: error: ...``, the first of ``--print_config`` or ``--list-layers``).
The Lightning commands' help and unknown-flag errors come from answers the real LightningCLI
recorded (``lwlc.commands.lightning_cache``, in a cache folder of this run, recorded by one
untimed run of each before timing, as ``make setup`` records them); the "no cache" cases time the
real LightningCLI, as a first run after installing without ``make setup`` meets it.

    python benchmarks/bench_startup.py [--repeat 5] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LWLC = [sys.executable, "-m", "lwlc"]
REFERENCE = [sys.executable, "-c", "import torch"]
NO_CACHE = "no cache: "  # a case's name prefix: timed without lightning_cache's answers
DIGITS = str(ROOT / "configs" / "digits_mlp.yaml")


def cases(ckpt: str) -> dict[str, list[str]]:
    """Each case's ``lwlc`` arguments (``ckpt``: a small pair checkpoint)."""
    return {
        "lwlc --help": ["--help"],
        "analyze --help": ["analyze", "--help"],
        "plot --help": ["plot", "--help"],
        "merge --help": ["merge", "--help"],
        "experiment --help": ["experiment", "--help"],
        "fit --help": ["fit", "--help"],
        "analyze --print_config": ["analyze", "--ckpt", ckpt, "--print_config"],
        "analyze --list-layers": ["analyze", "--ckpt", ckpt, "--list-layers"],
        "error: unknown command": ["anlyze"],
        "error: analyze unknown flag": ["analyze", "--alpha", "0.5"],
        "error: analyze missing file": ["analyze", "--ckpt", "missing.ckpt"],
        "error: merge bad value": ["merge", "--ckpt", ckpt, "--alpha", "2", "--out", "x"],
        "error: plot missing folder": ["plot", "missing_run"],
        "error: fit missing config": ["fit", "--config", "missing.yaml"],
        "error: fit unknown flag": ["fit", "--trainer.max_epoch", "5"],
        "error: fit unknown flag after --config": [
            "fit", "--config", DIGITS, "--trainer.max_epoch", "5"
        ],  # fmt: skip
        "error: validate missing ckpt": ["validate", "--ckpt_path", "missing.ckpt"],
        NO_CACHE + "fit --help": ["fit", "--help"],
        NO_CACHE + "error: fit unknown flag": ["fit", "--trainer.max_epoch", "5"],
        "fit --config --print_config (real parser)": ["fit", "--config", DIGITS, "--print_config"],
    }


def first_line_seconds(command: list[str], cwd: str, cache: str = "") -> float:
    """Seconds from starting ``command`` to its first line of output (or to its end), with
    ``cache`` as lwlc's cache folder (empty: none)."""
    start = time.perf_counter()
    env = {**_env(), "LWLC_CACHE_DIR": cache}
    with subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    ) as process:
        assert process.stdout is not None
        process.stdout.readline()
        took = time.perf_counter() - start
        process.kill()
    return took


def _env() -> dict[str, str]:
    """This checkout's src first, W&B offline."""
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline"}


def pair_checkpoint(folder: Path) -> str:
    """A small pair checkpoint as ``lwlc fit`` writes it (digits MLP, untrained)."""
    import torch

    from lwlc.models import MLP

    config = {"class_path": "lwlc.models.MLP", "init_args": {"width": 64}}
    nets = [MLP(**config["init_args"]) for _ in "ab"]
    pairs = zip("ab", nets, strict=True)
    state = {f"net_{m}.{k}": v for m, net in pairs for k, v in net.state_dict().items()}
    data = {"_class_path": "lwlc.data.DigitsDataModule", "batch_size": 64}
    hparams = {"_class_path": "lwlc.training.PairedModule", "model": config}
    path = folder / "pair.ckpt"
    torch.save(
        {"state_dict": state, "hyper_parameters": hparams, "datamodule_hyper_parameters": data},
        path,
    )
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--markdown", action="store_true", help="print a RESULTS.md table")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        all_cases = cases(pair_checkpoint(Path(tmp)))
        cache = str(Path(tmp) / "cache")
        for argv in (["fit", "--help"], ["fit", "--bogus"]):  # what `make setup` records
            subprocess.run([*LWLC, *argv], cwd=tmp, env={**_env(), "LWLC_CACHE_DIR": cache},
                           capture_output=True, check=False)  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in ["import torch", *all_cases]}
        for _ in range(args.repeat):
            for name, argv in all_cases.items():
                times["import torch"].append(first_line_seconds(REFERENCE, tmp))
                used = "" if name.startswith(NO_CACHE) else cache
                times[name].append(first_line_seconds([*LWLC, *argv], tmp, used))
    report(times, args.markdown)


def cpu_name() -> str:
    """The processor's model name (Linux), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def report(times: dict[str, list[float]], markdown: bool) -> None:
    """One row per case: median seconds and the ratio to the median ``import torch``."""
    torch_s = statistics.median(times["import torch"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, "
        f"load {load:.1f}; python {platform.python_version()}; import torch {torch_s:.2f} s "
        f"(median of {len(times['import torch'])})"
    )
    if markdown:
        print("\n| case | first line s | ratio to import torch |\n| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        row = (name, f"{median:.2f}", f"{median / torch_s:.2f}")
        print(f"| {' | '.join(row)} |" if markdown else f"{row[0]:<30} {row[1]:>7} s {row[2]:>6}x")


if __name__ == "__main__":
    main()
