"""``average="auto"``: the layer groups to average, chosen from the clients' own losses.

As ``lwlc merge --groups auto`` chooses the groups of two models: the largest set (by parameter
count) whose loss stays within ``budget`` nats of the networks' own, found by
:func:`lwlc.core.selection.search` (every subset for few groups, greedy with re-measurement
beyond). Here a candidate set S means: every client's model takes the clients' weighted average
on S and keeps its own tensors elsewhere, and its loss is measured by each client on its own
data. The server asks the clients through Flower evaluate messages (``evaluate.layer_sets``: the
client's model, the average and the candidate sets of one search step); each client replies the
loss and accuracy of every candidate on its data and its sample count; the server weights them
by samples and compares with the clients' own models (S empty) plus the budget.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from lwlc.core import layers
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.core.selection import Candidates, SearchResult, group_sizes, search
from lwlc.formats.io import atomic_file

ACTION = "layer_sets"  # the ClientApp's evaluate action: message type "evaluate.layer_sets"
SPLITS = ("test", "train")
SEPARATOR = ";"  # a candidate set travels as its group names joined by this
# One client's answer to one search step: (samples, loss per set, accuracy per set).
Answer = tuple[int, Sequence[float], Sequence[float]]
Ask = Callable[[list[str]], list[Answer]]


@dataclass(frozen=True)
class AutoSelection:
    """How ``LayerwiseFedAvg(average="auto")`` chooses the groups to average.

    Args:
        budget: Nats of loss (the clients' sample-weighted mean on their own data) allowed above
            the clients' own models (nothing averaged); as ``lwlc merge --budget``.
        select_after: Rounds of local training (nothing averaged) before the first choice; the
            choice is made at the start of round ``select_after + 1``.
        every: Choose again every ``every`` rounds after the first choice (0: keep it).
        choose_from: Layer names or globs (as ``lwlc merge --groups``) of the groups that may be
            averaged; the others stay personal. ``None``: every group.
        split: The clients' data the candidates are measured on: ``test`` (each client's own test
            set, what Flower's evaluate round scores) or ``train`` (its training part).
        exhaustive_max: Up to this many groups every subset is measured; beyond, greedy.
        csv_path: Where every measured step goes (the CSV of ``lwlc merge --groups auto`` with
            ``server_round``, ``budget`` and ``limit`` in front; the clients' own loss is
            ``limit - budget``), rewritten atomically after each choice.
        wandb: Also log each choice to the active W&B run.
    """

    budget: float = 0.05
    select_after: int = 1
    every: int = 0
    choose_from: Sequence[str] | None = None
    split: str = "test"
    exhaustive_max: int = 12
    csv_path: str | Path | None = None
    wandb: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget) and self.budget >= 0):
            raise LwlcError(f"budget must be a number >= 0 (nats), got {self.budget}")
        if self.select_after < 1:
            raise LwlcError(
                f"select_after must be >= 1 (rounds of local training before choosing: at "
                f"round 1 every client holds the same model), got {self.select_after}"
            )
        if self.every < 0:
            raise LwlcError(f"every must be >= 0 (0: choose once), got {self.every}")
        if self.split not in SPLITS:
            raise LwlcError(f"unknown split {self.split!r}; choose from {', '.join(SPLITS)}")
        if self.exhaustive_max < 0:
            raise LwlcError(f"exhaustive_max must be >= 0, got {self.exhaustive_max}")

    def due(self, server_round: int) -> bool:
        """Whether the groups are chosen at the start of ``server_round``."""
        since = server_round - 1 - self.select_after
        return since == 0 or (since > 0 and self.every > 0 and since % self.every == 0)


def encode(names: Sequence[str]) -> str:
    """A candidate set as it travels in a ConfigRecord."""
    return SEPARATOR.join(names)


def decode(text: str) -> list[str]:
    """The group names of an encoded candidate set."""
    return [n for n in text.split(SEPARATOR) if n]


def weighted_metrics(answers: Sequence[Answer], count: int) -> list[tuple[float, float]]:
    """(loss, accuracy) of each of ``count`` sets: the clients' answers weighted by samples."""
    total = sum(n for n, _, _ in answers)
    if not total:
        raise LwlcError(
            "no client answered with data for the layer selection: check that the clients "
            "hold samples in the selection split"
        )
    return [
        (
            sum(n * losses[i] for n, losses, _ in answers) / total,
            sum(n * accs[i] for n, _, accs in answers) / total,
        )
        for i in range(count)
    ]


@dataclass
class Selector:
    """The server's side of ``auto``: asks the clients, searches, and records every step."""

    options: AutoSelection
    groups: list[layers.Group]
    sizes: list[int]
    rows: list[dict[str, object]] = field(default_factory=list)
    results: dict[int, SearchResult] = field(default_factory=dict)

    @classmethod
    def for_model(cls, options: AutoSelection, model: nn.Module) -> Selector:
        """The groups that may be chosen (``choose_from``) and their parameter counts."""
        groups = layers.default_groups(model)
        if options.choose_from is not None:
            groups = layers.select(groups, list(options.choose_from))
        return cls(options, groups, group_sizes(model, model.state_dict(), groups))

    def choose(self, server_round: int, ask: Ask) -> list[str]:
        """The chosen group names (forward order): ``ask`` sends one search step's candidate
        sets to the clients and returns their answers."""
        found: dict[frozenset[int], tuple[float, float]] = {}

        def losses_of(sets: Sequence[frozenset[int]]) -> list[float]:
            todo = [s for s in dict.fromkeys(sets) if s not in found]
            if todo:
                texts = [encode([self.groups[i].name for i in sorted(s)]) for s in todo]
                found.update(zip(todo, weighted_metrics(ask(texts), len(todo)), strict=True))
            return [found[s][0] for s in sets]

        own = losses_of([frozenset()])[0]
        result = search(
            self.sizes, losses_of, own + self.options.budget, self.options.exhaustive_max
        )
        self.results[server_round] = result
        self._record(server_round, result, found)
        return [self.groups[i].name for i in result.chosen]

    def _record(
        self,
        server_round: int,
        result: SearchResult,
        found: Mapping[frozenset[int], tuple[float, float]],
    ) -> None:
        """The steps as rows (merge's selection columns), to the CSV and W&B."""
        split, total = self.options.split, sum(self.sizes) or 1
        rows = []
        for i, step in enumerate(result.steps):
            loss, accuracy = found[frozenset(step.members)]
            rows.append({
                "server_round": server_round, "budget": self.options.budget,
                "limit": result.limit, "step": i, "search": result.search, "round": step.round,
                "groups": "+".join(self.groups[j].name for j in step.members),
                "added": "" if step.added is None else self.groups[step.added].name,
                "n_groups": len(step.members),
                "fraction": sum(self.sizes[j] for j in step.members) / total,
                f"{split}_loss": loss, f"{split}_accuracy": accuracy,
                "fits": step.fits, "accepted": step.accepted,
            })  # fmt: skip
        self.rows.extend(rows)
        if self.options.csv_path is not None:
            with atomic_file(Path(self.options.csv_path)) as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)
        if self.options.wandb:
            log_selection(server_round, result, rows, [self.groups[i].name for i in result.chosen])


def log_selection(
    server_round: int, result: SearchResult, rows: Sequence[Mapping[str, object]],
    chosen: Sequence[str],
) -> None:  # fmt: skip
    """One choice to the active W&B run: the chosen groups, its search and every step."""
    import wandb

    if wandb.run is None:
        raise LwlcError("AutoSelection(wandb=True) needs an active W&B run: call wandb.init()")
    columns = list(rows[0])
    wandb.log({
        "flower/round": server_round,
        "flower/selection/search": wandb.Html(result.search),
        "flower/selection/chosen": wandb.Html(", ".join(chosen) or "(none)"),
        "flower/selection/limit": result.limit,
        "flower/selection/steps": wandb.Table(
            columns=columns, data=[[r[c] for c in columns] for r in rows]
        ),
    })  # fmt: skip


@torch.no_grad()
def layer_set_metrics(
    model: nn.Module,
    own: Mapping[str, Tensor],
    average: Mapping[str, Tensor],
    sets: Sequence[str],
    inputs: Tensor,
    targets: Tensor,
) -> tuple[list[float], list[float]]:
    """The client's side: loss and accuracy on (inputs, targets) of each candidate set's model
    (``average`` on the set's groups, ``own`` elsewhere), measured with the engine."""
    groups = layers.default_groups(model)
    index = {g.name: i for i, g in enumerate(groups)}
    unknown = sorted({n for s in sets for n in decode(s)} - set(index))
    if unknown:
        raise LwlcError(
            f"the server asked for layer group {unknown[0]!r}, which this client's model lacks: "
            "give the server and the clients the same architecture"
        )
    if not len(targets):
        return [0.0] * len(sets), [0.0] * len(sets)
    candidates = Candidates(
        Evaluator(model, own, average), groups, 0.0, [1.0] * len(groups), {"own": (inputs, targets)}
    )
    members = [frozenset(index[n] for n in decode(s)) for s in sets]
    found = candidates.metrics([candidates.coefficients(m) for m in members], "own")
    return [m.loss for m in found], [m.accuracy for m in found]
