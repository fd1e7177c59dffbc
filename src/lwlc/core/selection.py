"""Choose which layer groups to average: the largest set (by parameter count) that stays within
a loss budget of the better endpoint, measured exactly by the engine.

Two layers of this module:

* :func:`search` is pure combinatorics over group indices. It takes the groups' sizes, a callable
  that returns the selection-split loss of a batch of candidate sets, and the loss limit. With
  few groups (``exhaustive_max``, 12 by default) it measures every subset at once and returns the
  largest that fits; beyond that it is greedy: round 1 measures every single group in one batch
  (the single-layer barriers), round 2 adds the groups in order of their loss increase per
  parameter whenever the set with them, measured as a whole, still fits, and later rounds measure
  every extension of the set (one batch) and add the fitting one of least increase per parameter
  until none fits. Barriers do not add, so every
  accepted set is a measured set, and the result is maximal: no remaining group can be added
  within the limit. About 2-3 measurements per group instead of one per group per round.
* :func:`select_groups` measures candidate sets of real networks with the engine
  (:class:`lwlc.core.engine.Evaluator`: shared prefixes, batched, exact). Two networks are
  interpolated A -> B (alpha, per group if wished) with the rest from one of them; k networks are
  averaged (uniform or weighted), the rest from one member, evaluated as the path from that
  member to the soup at coefficient 1 on the chosen groups.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lwlc.core.engine import Evaluator, Metrics
from lwlc.core.errors import LwlcError
from lwlc.core.layers import Group
from lwlc.core.soup import check_weights, group_coefficients, member_name, mixed_state, soup_state
from lwlc.core.spec import BATCH_SIZE, BN_BATCH_SIZE

SEARCHES = ("exhaustive", "greedy")
BUDGET_OF = ("a", "b", "better")
CHUNK = 512  # candidate models per engine call: bounds the activations held at once
Losses = Callable[[Sequence[frozenset[int]]], Sequence[float]]


@dataclass(frozen=True)
class Step:
    """One measured candidate set: the search round, its members (group indices), the group just
    added (None for a whole subset), its selection loss, whether it fits and was accepted."""

    round: int
    members: tuple[int, ...]
    added: int | None
    loss: float
    fits: bool
    accepted: bool


@dataclass
class SearchResult:
    """Which search ran, the chosen group indices (forward order) and every step measured."""

    search: str
    chosen: tuple[int, ...]
    limit: float
    steps: list[Step]


def _fits(loss: float, limit: float) -> bool:
    return math.isfinite(loss) and loss <= limit


def _exhaustive(sizes: Sequence[int], losses_of: Losses, limit: float) -> SearchResult:
    """Every subset of the groups; the largest (then lowest loss) that fits."""
    n = len(sizes)
    subsets = [c for r in range(n + 1) for c in itertools.combinations(range(n), r)]
    losses = list(losses_of([frozenset(s) for s in subsets]))
    fitting = [i for i, s in enumerate(subsets) if _fits(losses[i], limit)]
    best = min(fitting, key=lambda i: (-sum(sizes[j] for j in subsets[i]), losses[i]), default=0)
    steps = [
        Step(0, s, None, losses[i], _fits(losses[i], limit), i == best)
        for i, s in enumerate(subsets)
    ]
    return SearchResult("exhaustive", subsets[best], limit, steps)


def _cost(loss: float, base: float, size: int) -> tuple[float, int]:
    """A group's order in the greedy search: its loss above ``base`` per parameter (free groups,
    at or below ``base``, first), the larger first on ties: knapsack's greedy rule, so that a
    large layer that fits is not crowded out by many small ones."""
    return max(loss - base, 0.0) / max(size, 1), -size


def _greedy(sizes: Sequence[int], losses_of: Losses, limit: float) -> SearchResult:
    """Round 1 measures every single group in one batch (the single-layer barriers); round 2
    tries the groups in order of their loss above the unaveraged model's per parameter
    (:func:`_cost`), adding each whose set, measured as a whole, still fits; later rounds measure
    every extension of the set in one batch and add the fitting one of least cost, until none
    fits (so the set is maximal)."""
    n = len(sizes)
    base = losses_of([frozenset()])[0]
    singles = list(losses_of([frozenset({g}) for g in range(n)]))
    steps = [Step(1, (g,), g, singles[g], _fits(singles[g], limit), False) for g in range(n)]
    chosen: tuple[int, ...] = ()
    current, remaining = base, []
    for g in sorted(range(n), key=lambda g: _cost(singles[g], base, sizes[g])):
        members = tuple(sorted((*chosen, g)))
        loss = singles[g] if not chosen else losses_of([frozenset(members)])[0]
        fits = _fits(loss, limit)
        steps.append(Step(2, members, g, loss, fits, fits))
        if fits:
            chosen, current = members, loss
        else:
            remaining.append(g)
    rnd = 2
    while True:
        rnd += 1
        sets = [tuple(sorted((*chosen, g))) for g in remaining]
        losses = list(losses_of([frozenset(s) for s in sets])) if sets else []
        fitting = [i for i in range(len(sets)) if _fits(losses[i], limit)]
        pick = min(
            fitting, key=lambda i: _cost(losses[i], current, sizes[remaining[i]]), default=None
        )
        steps += [
            Step(rnd, s, remaining[i], losses[i], _fits(losses[i], limit), i == pick)
            for i, s in enumerate(sets)
        ]
        if pick is None:
            return SearchResult("greedy", chosen, limit, steps)
        chosen, current = sets[pick], losses[pick]
        remaining.pop(pick)


def search(
    sizes: Sequence[int], losses_of: Losses, limit: float, exhaustive_max: int = 12
) -> SearchResult:
    """The largest set of groups whose loss (``losses_of``, one value per candidate set of group
    indices) is at most ``limit``: exhaustive up to ``exhaustive_max`` groups, greedy beyond."""
    if len(sizes) <= exhaustive_max:
        return _exhaustive(sizes, losses_of, limit)
    return _greedy(sizes, losses_of, limit)


def group_sizes(
    model: nn.Module, state: Mapping[str, Tensor], groups: Sequence[Group]
) -> list[int]:
    """Parameters per group (buffers such as BatchNorm statistics do not count; a model whose
    groups hold no parameters counts every floating-point value instead)."""
    params = {n for n, _ in model.named_parameters()}
    sizes = [sum(state[k].numel() for k in g.keys if k in params) for g in groups]
    if sum(sizes):
        return sizes
    return [sum(state[k].numel() for k in g.keys if state[k].is_floating_point()) for g in groups]


@dataclass
class Candidates:
    """Evaluates sets of groups with the engine: ``start`` on the rest, ``end`` on the chosen
    groups at coefficient ``alphas[group]`` (two networks: start A, end B, rest coefficient 0 or
    1; k networks: start the rest member, end the soup, coefficient 1)."""

    evaluator: Evaluator
    groups: Sequence[Group]
    rest: float
    alphas: Sequence[float]
    splits: Mapping[str, tuple[Tensor, Tensor]]
    calibration: Tensor | None = None
    batch_size: int = BATCH_SIZE
    cache: dict[tuple[str, tuple[float, ...]], Metrics] = field(default_factory=dict)

    def coefficients(
        self, members: frozenset[int], alphas: Mapping[int, float] | None = None
    ) -> tuple[float, ...]:
        """One coefficient per state-dict key for the model averaging ``members``."""
        ev = self.evaluator
        chosen = {i: (alphas or {}).get(i, self.alphas[i]) for i in members}
        return group_coefficients(ev.keys, ev.float_keys, self.groups, chosen, self.rest)

    def metrics(self, models: Sequence[tuple[float, ...]], split: str) -> list[Metrics]:
        """Loss and accuracy of every model on ``split`` (measured once, in chunks)."""
        todo = list(dict.fromkeys(m for m in models if (split, m) not in self.cache))
        x, y = self.splits[split]
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i : i + CHUNK]
            found = self.evaluator.evaluate(chunk, x, y, self.batch_size, self.calibration)
            self.cache.update({(split, m): r for m, r in zip(chunk, found, strict=True)})
        return [self.cache[(split, m)] for m in models]

    def losses(self, sets: Sequence[frozenset[int]], split: str) -> list[float]:
        """The loss on ``split`` of the model averaging each set."""
        return [r.loss for r in self.metrics([self.coefficients(s) for s in sets], split)]


def reference_loss(member_losses: Sequence[float], budget_of: str) -> tuple[int, float]:
    """(member index, loss) the budget is counted from: member a, b, or the better (best) one."""
    if budget_of not in BUDGET_OF:
        raise LwlcError(f"--budget-of must be one of {', '.join(BUDGET_OF)}, got {budget_of!r}")
    if budget_of in ("a", "b") and len(member_losses) != 2:
        raise LwlcError(f"--budget-of {budget_of} needs two networks: use 'better' for k models")
    i = {"a": 0, "b": 1}.get(
        budget_of, min(range(len(member_losses)), key=member_losses.__getitem__)
    )
    return i, member_losses[i]


@dataclass
class Selection:
    """What :func:`select_groups` found. ``alphas`` maps each chosen group's index to its
    coefficient (two networks: the weight of B; k networks: 1, the soup); ``metrics`` maps a model
    name (``member_a``, ..., ``full_average``, ``chosen``) to its loss/accuracy per split;
    ``step_metrics`` holds the same for every step of the search."""

    result: SearchResult
    groups: list[Group]
    sizes: list[int]
    budget: float
    budget_of: str
    reference: str
    select_split: str
    rest: int
    weights: list[float] | None
    alphas: dict[int, float]
    metrics: dict[str, dict[str, Metrics]]
    step_metrics: list[dict[str, Metrics]]
    candidates: Candidates
    start: Mapping[str, Tensor]
    end: Mapping[str, Tensor]

    @property
    def chosen(self) -> list[Group]:
        """The chosen groups, in forward order."""
        return [self.groups[i] for i in self.result.chosen]

    def fraction(self, members: Sequence[int]) -> float:
        """The share of all groups' parameters held by ``members``."""
        return sum(self.sizes[i] for i in members) / (sum(self.sizes) or 1)

    def coefficients(self) -> tuple[float, ...]:
        """The chosen model's coefficient per key (start -> end)."""
        return self.candidates.coefficients(frozenset(self.result.chosen), self.alphas)

    def soup_barriers(self) -> dict[str, dict[str, float]]:
        """Per group (and ``all``), the loss of the model averaging that group alone (the rest
        from the rest model) minus the weighted mean of the members' losses (uniform for two
        networks), on every split: the k-model barrier (``lwlc.core.soup.measure_soup``'s)."""
        cand, members = self.candidates, [n for n in self.metrics if n.startswith("member_")]
        sets = {g.name: frozenset([i]) for i, g in enumerate(self.groups)}
        sets["all"] = frozenset(range(len(self.groups)))
        out: dict[str, dict[str, float]] = {}
        weights = self.weights or [1.0 / len(members)] * len(members)
        for split in cand.splits:
            mean = sum(
                w * self.metrics[m][split].loss for w, m in zip(weights, members, strict=True)
            )
            losses = cand.losses(list(sets.values()), split)
            for name, loss in zip(sets, losses, strict=True):
                out.setdefault(name, {})[split] = loss - mean
        return out

    def state(self) -> dict[str, Tensor]:
        """The chosen model's state dict: exactly the model measured as ``chosen``."""
        return mixed_state(self.start, self.end, self.coefficients())


ALPHA_GRID = tuple(i / 10 for i in range(1, 10))


def tune_alphas(sel: Selection, grid: Sequence[float] = ALPHA_GRID) -> Selection:
    """Each chosen group's alpha from ``grid`` (and its current one) on the selection split, one
    group at a time in forward order, the others held: the loss never rises. Two networks only."""
    if sel.weights is not None:
        raise LwlcError("--alpha auto applies to two networks; k networks take --weights")
    cand, chosen = sel.candidates, frozenset(sel.result.chosen)
    for i in sel.result.chosen:
        values = list(dict.fromkeys([sel.alphas[i], *grid]))
        models = [cand.coefficients(chosen, {**sel.alphas, i: a}) for a in values]
        losses = [m.loss for m in cand.metrics(models, sel.select_split)]
        sel.alphas[i] = values[min(range(len(values)), key=losses.__getitem__)]
    c = sel.coefficients()
    sel.metrics["chosen"] = {sp: cand.metrics([c], sp)[0] for sp in cand.splits}
    return sel


def _alone(cand: Candidates) -> dict[str, Metrics]:
    """The start network's own metrics on every split (no group averaged, the rest its own)."""
    return {sp: cand.metrics([cand.coefficients(frozenset())], sp)[0] for sp in cand.splits}


def _search_or_measure(
    sizes: Sequence[int], losses_of: Losses, limit: float, exhaustive_max: int,
    fixed: Sequence[int] | None,
) -> SearchResult:  # fmt: skip
    """The search, or (``fixed`` groups) the one measured step of the given set."""
    if fixed is None:
        return search(sizes, losses_of, limit, exhaustive_max)
    chosen = tuple(sorted(set(fixed)))
    loss = losses_of([frozenset(chosen)])[0]
    return SearchResult(
        "given", chosen, limit, [Step(0, chosen, None, loss, _fits(loss, limit), True)]
    )


def _check_request(budget: float, k: int, split: str, splits: Mapping[str, object]) -> None:
    """Refuse a negative budget, fewer than two networks, or no data for the selection split."""
    if not (math.isfinite(budget) and budget >= 0):
        raise LwlcError(f"--budget must be a number >= 0 (nats), got {budget}")
    if k < 2:
        raise LwlcError(f"selection needs at least 2 networks, got {k}")
    if split not in splits:
        raise LwlcError(f"no data for the selection split {split!r}")


def select_groups(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    groups: Sequence[Group],
    splits: Mapping[str, tuple[Tensor, Tensor]],
    budget: float,
    *,
    select_split: str = "val",
    budget_of: str = "better",
    rest_from: int | None = None,
    alpha: float = 0.5,
    weights: Sequence[float] | None = None,
    exhaustive_max: int = 12,
    fixed: Sequence[int] | None = None,
    bn: str = "keep",
    calibration: Tensor | None = None,
    bn_batch_size: int = BN_BATCH_SIZE,
    device: str | torch.device = "cpu",
    batch_size: int = BATCH_SIZE,
) -> Selection:
    """The largest set of ``groups`` whose average of ``states`` (two: A -> B at ``alpha``; k:
    the soup with ``weights``, uniform by default) keeps the loss on ``select_split`` within
    ``budget`` nats of ``budget_of``'s loss; the rest from member ``rest_from`` (default: the
    one with the lowest loss). ``fixed``: measure these group indices instead of searching. Every
    other split in ``splits`` is measured for the report only.
    """
    _check_request(budget, len(states), select_split, splits)
    k = len(states)
    w = check_weights(weights, k) if (weights is not None or k > 2) else None

    def candidates(start: Mapping[str, Tensor], end: Mapping[str, Tensor], rest: float,
                   coefficient: float) -> Candidates:  # fmt: skip
        ev = Evaluator(model, start, end, device, bn, bn_batch_size=bn_batch_size)
        return Candidates(ev, groups, rest, [coefficient] * len(groups), splits, calibration,
                          batch_size)  # fmt: skip

    members = [_alone(candidates(state, state, 0.0, 0.0)) for state in states]
    ref, ref_loss = reference_loss([m[select_split].loss for m in members], budget_of)
    rest = ref if rest_from is None else rest_from
    if not 0 <= rest < k:
        raise LwlcError(f"rest_from must name one of the {k} networks, got {rest}")
    if w is None:
        start, end = states[0], states[1]
        cand = candidates(start, end, float(rest), alpha)
    else:
        start, end = states[rest], soup_state(states, w)
        cand = candidates(start, end, 0.0, 1.0)
    sizes = group_sizes(model, states[0], groups)
    losses_of = lambda sets: cand.losses(sets, select_split)  # noqa: E731
    result = _search_or_measure(sizes, losses_of, ref_loss + budget, exhaustive_max, fixed)
    metrics, steps = _report_metrics(cand, result, members)
    return Selection(
        result, list(groups), sizes, budget, budget_of, member_name(ref), select_split, rest, w,
        {i: cand.alphas[i] for i in result.chosen}, metrics, steps, cand, start, end,
    )  # fmt: skip


def _report_metrics(
    cand: Candidates, result: SearchResult, members: Sequence[dict[str, Metrics]]
) -> tuple[dict[str, dict[str, Metrics]], list[dict[str, Metrics]]]:
    """Every split's metrics of the members, the full average, the chosen model and every step
    (measured once each: the engine's cache returns the selection split's search results)."""
    splits = list(cand.splits)
    metrics = {f"member_{member_name(i)}": m for i, m in enumerate(members)}
    for name, s in (("full_average", range(len(cand.groups))), ("chosen", result.chosen)):
        c = cand.coefficients(frozenset(s))
        metrics[name] = {sp: cand.metrics([c], sp)[0] for sp in splits}
    coeffs = [cand.coefficients(frozenset(st.members)) for st in result.steps]
    per_split = {sp: cand.metrics(coeffs, sp) for sp in splits}
    return metrics, [{sp: per_split[sp][i] for sp in splits} for i in range(len(coeffs))]


def _members_text(members: Sequence[int], groups: Sequence[Group]) -> str:
    return "+".join(groups[i].name for i in members)


def selection_rows(sel: Selection) -> list[dict[str, object]]:
    """One row per measured step (the CSV and the API's table): the round, the set, the group
    added, the fraction of parameters averaged, loss and accuracy on every split, fits, accepted."""
    rows = []
    for i, (step, found) in enumerate(zip(sel.result.steps, sel.step_metrics, strict=True)):
        row: dict[str, object] = {
            "step": i,
            "search": sel.result.search,
            "round": step.round,
            "groups": _members_text(step.members, sel.groups),
            "added": "" if step.added is None else sel.groups[step.added].name,
            "n_groups": len(step.members),
            "fraction": sel.fraction(step.members),
        }
        for split, m in found.items():
            row[f"{split}_loss"], row[f"{split}_accuracy"] = m.loss, m.accuracy
        row.update(fits=step.fits, accepted=step.accepted)
        rows.append(row)
    return rows


def selection_summary(sel: Selection) -> dict[str, object]:
    """What the JSON report holds: the choice, the budget, and every named model's numbers."""
    return {
        "search": sel.result.search,
        "chosen": [g.name for g in sel.chosen],
        "fraction": sel.fraction(sel.result.chosen),
        "groups": [g.name for g in sel.groups],
        "parameters": dict(zip((g.name for g in sel.groups), sel.sizes, strict=True)),
        "budget": sel.budget,
        "budget_of": sel.budget_of,
        "reference": sel.reference,
        "limit": sel.result.limit,
        "select_split": sel.select_split,
        "rest_from": member_name(sel.rest),
        "alphas": {sel.groups[i].name: a for i, a in sel.alphas.items()},
        "weights": sel.weights,
        "models": {
            name: {s: {"loss": m.loss, "accuracy": m.accuracy} for s, m in found.items()}
            for name, found in sel.metrics.items()
        },
        "soup_barriers": sel.soup_barriers(),
    }
