"""``lwlc experiment``: run one of the paper's experiments from its recipe in ``experiments/``.

A recipe is ``experiments/<name>/recipe.py`` defining ``CLAIM`` (the paper's claim) and
``run(out, scale) -> dict`` (headline numbers). Scales: ``smoke`` (seconds, for the test suite),
``quick`` (minutes on a laptop CPU with embedded data) and ``full`` (the paper's scale, for a
GPU). The runner times the recipe and saves its numbers, the claim and the machine as
``<out>/result.json``.

The recipes' toolkit (train a pair, measure it, read the numbers back) is the public module
:mod:`lwlc.recipes`, which recipes import; they never import this command back.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from lwlc.commands.errors import argument_error, short_help
from lwlc.core.errors import LwlcError
from lwlc.formats import outputs
from lwlc.formats.io import write_json
from lwlc.recipes import FIT_OVERRIDES, SEEDS, repo_root

SCALES = ("smoke", "quick", "fmnist", "fmnist_resnet", "full")
# The scales a recipe runs at unless it declares its own ``SCALES``.
RECIPE_SCALES = ("smoke", "quick", "full")
ENV_DIR = "LWLC_EXPERIMENTS"
RECIPE_FILE = "recipe.py"
REPORT_FILE = "report.py"
MARK = ".lwlc-experiment"


def experiments_dir() -> Path:
    """Where recipes live: ``$LWLC_EXPERIMENTS`` or the repository's ``experiments/``."""
    return Path(os.environ.get(ENV_DIR) or repo_root() / "experiments")


def recipe_names() -> list[str]:
    """The names of the available recipes (folders holding a recipe.py), sorted."""
    root = experiments_dir()
    if not root.is_dir():
        raise LwlcError(
            f"no experiments folder at {root}: run from a source checkout of lwlc or set "
            f"{ENV_DIR} to the folder holding the recipes"
        )
    return sorted(p.parent.name for p in root.glob(f"*/{RECIPE_FILE}"))


def load_module(path: Path, name: str) -> ModuleType:
    """Import the Python file ``path`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in a recipe look their module up there
    spec.loader.exec_module(module)
    return module


def report(runs: Path | None) -> Path:
    """Write ``REPRODUCTION.md`` with the experiments folder's ``report.py``; its path.

    ``runs`` holds the run folders (``NAME-SCALE/``) to copy in first; None renders the copies.
    """
    path = experiments_dir() / REPORT_FILE
    if not path.is_file():
        raise LwlcError(f"no {REPORT_FILE} in {experiments_dir()}: run from a source checkout")
    generator = load_module(path, "lwlc_experiments.report")
    return generator.write(experiments_dir(), experiments_dir().parent, runs)


def load_recipe(name: str) -> ModuleType:
    """Import ``experiments/<name>/recipe.py`` and check that it defines CLAIM and run."""
    names = recipe_names()
    if name not in names:
        raise LwlcError(f"unknown experiment {name!r}; available: {', '.join(names) or 'none'}")
    path = experiments_dir() / name / RECIPE_FILE
    module = load_module(path, f"lwlc_experiments.{name}")
    missing = [attr for attr in ("CLAIM", "run") if not hasattr(module, attr)]
    if missing:
        raise LwlcError(
            f"recipe {path} does not define {', '.join(missing)}: see experiments/README.md"
        )
    return module


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), so reruns can tell machines apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """The machine a result was measured on: CPU, cores, load, accelerator, library versions."""
    import torch

    import lwlc

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lwlc": lwlc.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def git_state(name: str) -> dict[str, object]:
    """The commit a recipe ran at and whether its folder had uncommitted changes.

    Lets a report tell a result made by the recipe at HEAD from a stale one. Empty when the
    recipes are not in a git checkout.
    """
    folder = experiments_dir() / name

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "recipe_modified": bool(git("status", "--porcelain", "--", ".")),
        }
    except (OSError, subprocess.CalledProcessError):
        return {}


def prepare_out(out: Path, overwrite: bool) -> None:
    """Make ``out`` an empty, marked folder; replace an earlier run's only with ``overwrite``.

    The mark (``.lwlc-experiment``) keeps ``--overwrite`` from deleting a folder that some
    other program filled. ``out`` may be a symbolic link to a folder: the run goes there, and
    ``--overwrite`` empties that folder but keeps the link, and removes links inside it as
    links, never what they point to.
    """
    outputs.check_out(out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARK).exists():
            raise LwlcError(
                f"--out {out} is not empty and not an lwlc experiment folder: choose another path"
            )
        if not overwrite:
            raise LwlcError(f"--out {out} holds an earlier run: pass --overwrite to replace it")
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARK).touch()


def check_scale(recipe: ModuleType, name: str, scale: str) -> None:
    """Refuse a scale the recipe does not run at (``SCALES`` in the recipe, else the three)."""
    scales = getattr(recipe, "SCALES", RECIPE_SCALES)
    if scale not in scales:
        raise LwlcError(f"experiment {name!r} has no {scale} scale; it runs at {', '.join(scales)}")


def run_experiment(
    name: str,
    scale: str,
    out: Path,
    fit_overrides: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run recipe ``name`` at ``scale`` into ``out``; save and return its result record.

    ``fit_overrides`` are appended to every ``lwlc fit`` of the recipe (e.g. fewer epochs);
    ``seeds`` replace the scale's seeds (one pair per pairing and seed).
    """
    if scale not in SCALES:
        raise LwlcError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    recipe = load_recipe(name)
    check_scale(recipe, name, scale)
    state = git_state(name)
    started = time.perf_counter()
    token = FIT_OVERRIDES.set(tuple(fit_overrides))
    seeds_token = SEEDS.set(tuple(seeds) if seeds else None)
    try:
        headline = recipe.run(out, scale)
    finally:
        FIT_OVERRIDES.reset(token)
        SEEDS.reset(seeds_token)
    record = {
        **headline,
        "run": {
            "experiment": name,
            "scale": scale,
            "fit_overrides": list(fit_overrides),
            "seeds": list(seeds) if seeds else None,
            "claim": recipe.CLAIM,
            "wall_time_s": round(time.perf_counter() - started, 1),
            "machine": machine(),
            **state,
        },
    }
    write_json(out / "result.json", record)
    return record


def format_headline(record: Mapping[str, Any]) -> str:
    """The headline numbers of a result record, one ``key: value`` line each."""
    run = record["run"]
    lines = [f"{run['experiment']} ({run['scale']}), {run['wall_time_s']} s"]
    for key, value in record.items():
        if key != "run":
            lines.append(
                f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}"
            )
    return "\n".join(lines)


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as integers (None: the scale's own seeds); a bad list is a user error."""
    if text is None:
        return None
    try:
        seeds = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise LwlcError(
            f"--seeds {text!r} is not a comma-separated list of integers, e.g. 0,1,2"
        ) from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise LwlcError(f"--seeds {text!r} must be distinct non-negative integers, e.g. 0,1,2")
    return seeds


def build_parser() -> Any:
    """The ``lwlc experiment`` argument parser."""
    from jsonargparse import ArgumentParser

    p = short_help(ArgumentParser)(
        prog="lwlc experiment",
        description="Run one of the paper's experiments (see experiments/README.md).",
        exit_on_error=False,
    )
    p.add_argument("name", type=str, nargs="?", default=None, help="the experiment (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and their claims")
    p.add_argument("--quick", action="store_true", help="minutes on a CPU with embedded data")
    p.add_argument("--smoke", action="store_true", help="seconds: checks that the recipe runs")
    p.add_argument(
        "--fmnist",
        action="store_true",
        help="real Fashion-MNIST at full size on a CPU (experiments 1-3; about 10 minutes each)",
    )
    p.add_argument(
        "--fmnist-resnet",
        action="store_true",
        help="the paper's no-norm ResNet-18 (width 8) on the real Fashion-MNIST, 3 pairings x 3 "
        "seeds (experiments 1-3; hours on a CPU)",
    )
    p.add_argument(
        "--seeds",
        type=str | None,
        default=None,
        help="comma-separated seeds, one pair per pairing and seed (default: the scale's)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="copy the runs in --runs into experiments/results/, write experiments/REPRODUCTION.md",
    )
    p.add_argument(
        "--runs",
        type=str | None,
        default="runs/experiments",
        help="with --report: the folder of run folders NAME-SCALE (null: render the copies)",
    )
    p.add_argument(
        "--out", type=str | None, default=None, help="default runs/experiments/NAME-SCALE"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument(
        "--fit",
        action="append",
        type=str,
        default=[],
        help="extra lwlc fit argument for every pair (repeatable): --fit=--trainer.max_epochs=9",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lwlc experiment`` (the CLI turns LwlcError into one line)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except Exception as err:  # jsonargparse's ArgumentError
        raise argument_error(err, "experiment") from None
    if args.list:
        for name in recipe_names():
            print(f"{name}: {load_recipe(name).CLAIM}")
        return
    if args.report:
        print(f"wrote {report(None if args.runs is None else Path(args.runs))}")
        return
    if args.name is None:
        raise LwlcError(
            "name an experiment, e.g. lwlc experiment full_vs_single --quick (see --list)"
        )
    chosen = [s for s in ("quick", "smoke", "fmnist", "fmnist_resnet") if getattr(args, s)]
    if len(chosen) > 1:
        flags = " and ".join("--" + c.replace("_", "-") for c in chosen)
        raise LwlcError(f"{flags} exclude each other: choose one scale")
    scale = chosen[0] if chosen else "full"
    out = Path(args.out or Path("runs") / "experiments" / f"{args.name}-{scale}")
    # an unknown name, scale or seed list fails before anything is created
    check_scale(load_recipe(args.name), args.name, scale)
    seeds = parse_seeds(args.seeds)
    prepare_out(out, args.overwrite)
    record = run_experiment(args.name, scale, out, args.fit, seeds)
    print(format_headline(record))
    print(f"result: {out / 'result.json'}")
