"""The toolkit of the paper's recipes (``experiments/*/recipe.py``): train, measure, read back.

Recipes chain lwlc's own commands (``lwlc fit`` to train a pair, ``lwlc analyze`` to measure
it) and read the results back, so an experiment computes exactly what a user of those commands
would get. This module is public so that recipes import it instead of the ``lwlc experiment``
command that runs them (which would be an import loop through importlib).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lwlc.core.errors import LwlcError
from lwlc.formats.io import read_csv

Result = dict[str, float | str]
Rows = list[dict[str, object]]
# The user's extra ``lwlc fit`` arguments for every pair of the running recipe.
FIT_OVERRIDES: ContextVar[tuple[str, ...]] = ContextVar("FIT_OVERRIDES", default=())


def repo_root() -> Path:
    """The repository holding lwlc's ``src/``, ``configs/`` and ``experiments/``."""
    import lwlc

    return Path(lwlc.__file__).resolve().parents[2]


def fit(
    configs: Sequence[str | Path],
    root: Path,
    overrides: Sequence[str] = (),
    extra_configs: Sequence[str | Path] = (),
) -> Path:
    """Train with ``lwlc fit`` into ``root``; returns the final checkpoint (``last.ckpt``).

    The base ``configs`` are applied in order with their callbacks removed, then the recipe's
    ``extra_configs`` (which may add callbacks), then ``overrides``, then the user's
    ``--fit`` arguments. Metrics go to a CSV logger in ``root/logs``.
    """
    from lwlc.commands import lightning_cli  # not the dispatcher, which loads the recipes

    args = ["fit"]
    for path in configs:
        args += ["--config", str(path)]
    args.append("--trainer.callbacks=[]")
    for path in extra_configs:
        args += ["--config", str(path)]
    args += [
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.logger.init_args.name=logs",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        # Lightning 2.6 refreshes last.ckpt only when a top-k checkpoint is saved, so with a
        # validation-accuracy monitor last.ckpt would be the best epoch, not the final
        # weights. Monitoring the step (always improving) keeps last.ckpt the final model.
        "--checkpoint.monitor=step",
        "--checkpoint.mode=max",
        *overrides,
        *FIT_OVERRIDES.get(),
    ]
    lightning_cli.run(args)
    return root / "checkpoints" / "last.ckpt"


def analyze(ckpt: Path, out: Path, options: Sequence[str] = ()) -> tuple[Rows, Rows]:
    """Measure a paired checkpoint with ``lwlc analyze`` into ``out``; (curves, barriers) rows."""
    from lwlc.commands import analyze as analyze_tool

    analyze_tool.main(["--ckpt", str(ckpt), "--out", str(out), "--overwrite", *options])
    return read_csv(out / "curves.csv"), read_csv(out / "barriers.csv")


def select_layers(ckpt: Path, out: Path, options: Sequence[str] = ()) -> dict[str, Any]:
    """Choose and merge a paired checkpoint's layers with ``lwlc merge --groups auto`` into the
    new file ``out`` (``merged.ckpt``); its selection report (``out.selection.json``) read back."""
    from lwlc.commands import merge

    merge.main(["--ckpt", str(ckpt), "--groups", "auto", "--out", str(out), *options])
    return json.loads(Path(f"{out}.selection.json").read_text())


@dataclass(frozen=True)
class PairSetup:
    """One pair to train: the network (configs applied in order), how A and B are made, and
    the seed (None: the configs' own seeds, one pair per pairing)."""

    network: str
    pairing: str
    description: str
    configs: tuple[str, ...]
    overrides: tuple[str, ...]
    seed: int | None = None

    @property
    def key(self) -> str:
        """The pair's folder under the run and its prefix in ``result.json``:
        ``network/pairing`` or ``network/pairing/seed<s>``."""
        seed = "" if self.seed is None else f"/seed{self.seed}"
        return f"{self.network}/{self.pairing}{seed}"

    @property
    def name(self) -> str:
        """The key as a file-name stem (figures): ``network_pairing[_seed<s>]``."""
        return self.key.replace("/", "_")

    def describe(self, result: Result) -> None:
        """Record the pairing's description and, for seeded pairs, add the seed to the pair's
        ``seeds`` list (the report reads ``network/pairing/seed<s>/...`` for each)."""
        base = f"{self.network}/{self.pairing}/"
        result[base + "pairing"] = self.description
        if self.seed is not None:
            seeds = [s for s in str(result.get(base + "seeds", "")).split(",") if s]
            result[base + "seeds"] = ",".join([*seeds, str(self.seed)])

    def fit(
        self, root: Path, extra_configs: Sequence[str] = (), overrides: Sequence[str] = ()
    ) -> Path:
        """Train this pair with ``lwlc fit`` into ``root``; the final checkpoint."""
        base = [config(c) for c in self.configs]
        extra = [config(c) for c in extra_configs]
        return fit(base, root, [*self.overrides, *overrides], extra)


# The paper's default pairing, the authors' Figure 1 pairing and fully independent runs
# (science.md section 6, item 1): description and the ``lwlc fit`` arguments that make it.
PAIRINGS = {
    "shared_init": (
        "same initialisation, different data order",
        ("--model.init_args.init_seed_b=0",),
    ),
    "half_data": (
        "same initialisation, each on its own half of the training data (the authors' Figure 1)",
        ("--model.init_args.init_seed_b=0", "--model.init_args.member_data=halves"),
    ),
    "independent": (
        "different initialisation, different data order",
        ("--model.init_args.init_seed_b=1",),
    ),
}
# B's seeds of a seeded pair: seed + this offset (its data order always; its init when
# independent), so no two seeds' pairs share a member's seed.
SEED_OFFSET = 1000
# Quick and smoke: the paper's MNIST network (3 hidden layers) on the embedded digits.
# fmnist: the paper's MNIST network at its own size on the real Fashion-MNIST (CPU).
# fmnist_resnet: the paper's no-norm ResNet-18 at width 8 on the real Fashion-MNIST (CPU).
# Full: the paper's CIFAR-10 networks and schedules.
NETWORKS = {
    "smoke": {"mlp": ("configs/digits_mlp.yaml", "experiments/full_vs_single/quick.yaml")},
    "quick": {"mlp": ("configs/digits_mlp.yaml", "experiments/full_vs_single/quick.yaml")},
    "fmnist": {"mlp": ("configs/paper_mnist_mlp.yaml", "experiments/full_vs_single/fmnist.yaml")},
    "fmnist_resnet": {"resnet18": ("configs/paper_fmnist_resnet18.yaml",)},
    "full": {
        "vgg11": ("configs/cifar10_vgg.yaml",),
        "resnet18": ("configs/cifar10_resnet18.yaml",),
    },
}
# The pairings and seeds of a scale unless it is listed here: shared_init and independent, the
# configs' own seeds (one pair each).
SCALE_PAIRINGS = {"fmnist_resnet": ("shared_init", "half_data", "independent")}
SCALE_SEEDS = {"fmnist_resnet": (0, 1, 2)}
# The user's ``--seeds`` for the running recipe (None: the scale's own).
SEEDS: ContextVar[tuple[int, ...] | None] = ContextVar("SEEDS", default=None)
SMOKE_TRAINING = (
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=5",
    "--trainer.log_every_n_steps=1",
)


def seeded(pairing: str, seed: int) -> tuple[str, ...]:
    """The ``lwlc fit`` arguments of ``pairing`` at ``seed``: A's init and order seed and the
    global seed are ``seed``; B's order seed is ``seed + SEED_OFFSET``, its init seed too when
    independent, else A's."""
    init_b = seed + SEED_OFFSET if pairing == "independent" else seed
    halves = ("--model.init_args.member_data=halves",) if pairing == "half_data" else ()
    return (
        f"--seed_everything={seed}",
        f"--model.init_args.init_seed_a={seed}",
        f"--model.init_args.init_seed_b={init_b}",
        f"--model.init_args.order_seed_a={seed}",
        f"--model.init_args.order_seed_b={seed + SEED_OFFSET}",
        *halves,
    )


def pair_setups(scale: str, pairings: Sequence[str] | None = None) -> list[PairSetup]:
    """The pairs an experiment trains at ``scale``: every network of the scale x ``pairings``
    (default: the scale's) x the seeds (``--seeds``, else the scale's; none: one pair)."""
    chosen = pairings or SCALE_PAIRINGS.get(scale, ("shared_init", "independent"))
    seeds = SEEDS.get() or SCALE_SEEDS.get(scale)
    smoke = SMOKE_TRAINING if scale == "smoke" else ()
    setups = []
    for network, configs in NETWORKS[scale].items():
        for pairing in chosen:
            description, plain = PAIRINGS[pairing]
            for seed in seeds or [None]:
                overrides = plain if seed is None else seeded(pairing, seed)
                setups.append(
                    PairSetup(network, pairing, description, configs, (*overrides, *smoke), seed)
                )
    return setups


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` CPU threads, then restore the previous number.

    Tiny models gain nothing from more threads and lose a lot on a busy machine.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def config(path: str) -> Path:
    """A file of the repository (``configs/...`` or ``experiments/...``), checked to exist."""
    found = repo_root() / path
    if not found.is_file():
        raise LwlcError(f"{found} is missing: run the experiments from a source checkout of lwlc")
    return found


def rows_where(rows: Sequence[Mapping[str, object]], **match: object) -> Rows:
    """The rows whose columns equal every given value."""
    return [dict(r) for r in rows if all(r.get(k) == v for k, v in match.items())]


def value(rows: Sequence[Mapping[str, object]], column: str, **match: object) -> float:
    """``column`` of the one row matching ``match``; LwlcError when there is not exactly one."""
    hits = rows_where(rows, **match)
    if len(hits) != 1:
        raise LwlcError(f"expected one result row for {match}, found {len(hits)}")
    return float(hits[0][column])  # type: ignore[arg-type]


def largest(values: Sequence[float]) -> float:
    """The maximum, NaN if any value is NaN (a broken model is never hidden by a max)."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def full_vs_layers(
    barriers: Sequence[Mapping[str, object]], reference: str = "midpoint", plan: str = "single"
) -> Result:
    """The full model's loss/error barrier next to the largest one among ``plan``'s paths.

    Error barriers are fractions. The layer reported is the path with the largest loss barrier.
    """
    rows = rows_where(barriers, reference=reference)
    layered = rows_where(rows, plan=plan)
    if not layered:
        raise LwlcError(f"no {plan!r} barriers with reference {reference!r} in the results")
    worst = max(layered, key=lambda r: float(r["loss_barrier"]))  # type: ignore[arg-type]
    return {
        "full_loss_barrier": value(rows, "loss_barrier", plan="full"),
        f"max_{plan}_loss_barrier": largest([float(r["loss_barrier"]) for r in layered]),  # type: ignore[arg-type]
        f"max_{plan}_layer": f"{worst['group']} (rest {worst['rest_from']})",
        "full_error_barrier": value(rows, "error_barrier", plan="full"),
        f"max_{plan}_error_barrier": largest([float(r["error_barrier"]) for r in layered]),  # type: ignore[arg-type]
    }


def accuracies(curves: Sequence[Mapping[str, object]]) -> Result:
    """Accuracy of the whole models A and B (the ends of the full path) on the analysed split."""
    full = rows_where(curves, plan="full")
    return {
        "acc_a": value(full, "accuracy", alpha=0.0),
        "acc_b": value(full, "accuracy", alpha=1.0),
    }
