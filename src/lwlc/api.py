"""lwlc in Python: ``lwlc.measure`` and ``lwlc.merge_models`` on any two ``nn.Module``s
(``lwlc.measure_soup``, ``lwlc.merge_models`` and ``lwlc.select_layers`` also on k).

The same measurement as ``lwlc analyze`` (one :class:`~lwlc.core.spec.MeasureSpec`, the same engine,
the same rows), without files: the networks are modules, the data tensors, a DataLoader or a data
module. Results come back as pandas DataFrames with a ``plot`` method.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lwlc.core import layers, selection, soup
from lwlc.core.barriers import BARRIER_COLUMNS, CURVE_COLUMNS
from lwlc.core.calibration import batchnorm_layers, recalibrated_state
from lwlc.core.errors import LwlcError
from lwlc.core.measurement import measure_extras, plan_paths, prepare
from lwlc.core.measures import MEASURE_COLUMNS
from lwlc.core.selection import member_name
from lwlc.core.soup import Alpha, merge_states
from lwlc.core.spec import MeasureSpec

Data = Mapping[str, tuple[Tensor, Tensor]] | tuple[Tensor, Tensor] | DataLoader | Any


@dataclass
class Measurement:
    """What ``lwlc.measure`` found: the rows ``lwlc analyze`` writes, as DataFrames.

    Attributes:
        curves: One row per evaluated model: plan, group, rest_from, split, alpha, loss,
            accuracy (``curves.csv``).
        barriers: One row per path, split and reference (``path``, ``models``, ``midpoint``):
            loss_barrier in nats, error_barrier as a fraction (``barriers.csv``).
        endpoints: Loss and accuracy of A and B on each split.
        layers: The layer groups, in forward order, with their tensors.
        spec: The measurement's spec.
        measures: The rows of ``spec.measures`` (``measures.csv``): measure, group, between,
            split, alpha, value; empty when none were asked for.
    """

    curves: pd.DataFrame
    barriers: pd.DataFrame
    endpoints: dict[str, dict[str, float]]
    layers: dict[str, list[str]]
    spec: MeasureSpec
    measures: pd.DataFrame

    def barrier(self, plan: str = "full", group: str = "all", reference: str = "models",
                split: str | None = None, rest_from: str = "a") -> float:  # fmt: skip
        """One loss barrier, e.g. the full model's against the two whole models."""
        b = self.barriers
        rows = b[
            (b.plan == plan) & (b.group == group) & (b.reference == reference)
            & (b.split == (split or self.spec.splits[0])) & (b.rest_from == rest_from)
        ]  # fmt: skip
        if len(rows) != 1:
            raise LwlcError(
                f"no single barrier for plan={plan!r}, group={group!r}, reference={reference!r}"
            )
        return float(rows.loss_barrier.iloc[0])

    def plot(self, out_dir: str | Path, reference: str = "models") -> list[Path]:
        """Draw ``curves_<split>.png`` and ``barriers_<split>.png`` into ``out_dir`` (as
        ``lwlc analyze`` does); returns the files written."""
        from lwlc import figures

        rows = {k: df.to_dict("records") for k, df in (("c", self.curves), ("b", self.barriers))}
        return figures.save_analysis_figures(Path(out_dir), rows["c"], rows["b"], reference)


def _state(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    return {k: v.detach().cpu() for k, v in state.items()}


def _tensors(data: Any, limit: int | None) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)`` from a pair of tensors or every batch of a DataLoader."""
    if isinstance(data, DataLoader):
        xs, ys = zip(*((b[0], b[1]) for b in data), strict=True)
        data = (torch.cat(xs), torch.cat(ys))
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise LwlcError(
            "data must be (inputs, targets), a DataLoader of such batches, {split: (inputs, "
            "targets)} or a data module"
        )
    x, y = data
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _splits(data: Data, spec: MeasureSpec) -> dict[str, tuple[Tensor, Tensor]]:
    """The data of every split the spec measures."""
    if hasattr(data, "tensors"):  # lwlc's data modules
        return {s: data.tensors(s, spec.max_samples) for s in spec.splits}
    if isinstance(data, Mapping):
        missing = [s for s in spec.splits if s not in data]
        if missing:
            raise LwlcError(f"data has no split {missing[0]!r}: give {{split: (inputs, targets)}}")
        return {s: _tensors(data[s], spec.max_samples) for s in spec.splits}
    if len(spec.splits) != 1:
        raise LwlcError(
            f"one data set for {len(spec.splits)} splits: give {{split: (inputs, targets)}}"
        )
    return {spec.splits[0]: _tensors(data, spec.max_samples)}


def _calibration(
    data: Data, spec: MeasureSpec, calibration: Tensor | None, model: nn.Module
) -> Tensor | None:
    """Training inputs for ``bn="reset"`` (None when the model has no BatchNorm)."""
    if spec.bn != "reset" or not batchnorm_layers(model):
        return None
    if calibration is None and hasattr(data, "tensors"):
        calibration = data.tensors("train", spec.bn_samples)[0]
    if calibration is None:
        raise LwlcError("bn='reset' needs training inputs: pass calibration=train_inputs")
    return calibration[: spec.bn_samples]


def measure(
    model_a: nn.Module,
    model_b: nn.Module | Mapping[str, Tensor],
    data: Data,
    spec: MeasureSpec | None = None,
    *,
    calibration: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> Measurement:
    """Layer-wise connectivity of two networks of one architecture, as ``lwlc analyze``.

    Args:
        model_a: Network A (its architecture is used for both).
        model_b: Network B, or its state dict.
        data: ``(inputs, targets)`` or a DataLoader (for the spec's one split), ``{split:
            (inputs, targets)}``, or an lwlc data module.
        spec: What to measure (default: ``MeasureSpec()``, as ``lwlc analyze``).
        calibration: Training inputs for ``spec.bn == "reset"`` (a data module gives its own).
        device: Where to evaluate.
    """
    spec = spec or MeasureSpec()
    state_a, state_b = _state(model_a), _state(model_b)
    layers.check_compatible(state_a, state_b)
    layers.check_finite(state_a, "A")
    layers.check_finite(state_b, "B")
    model = model_a
    splits = _splits(data, spec)
    example = next(iter(splits.values()))[0][:2]
    groups, paths = plan_paths(spec, model, example)
    samples = _calibration(data, spec, calibration, model)
    result = prepare(spec, model, state_a, state_b, paths, splits, samples, device).run()
    return Measurement(
        curves=pd.DataFrame(result.curves, columns=CURVE_COLUMNS),
        barriers=pd.DataFrame(result.barriers, columns=BARRIER_COLUMNS),
        endpoints=result.endpoints,
        layers={g.name: list(g.keys) for g in groups},
        spec=spec,
        measures=pd.DataFrame(
            measure_extras(spec, model, groups, state_a, state_b, splits) if spec.measures else [],
            columns=MEASURE_COLUMNS,
        ),
    )


Network = nn.Module | Mapping[str, Tensor]


@dataclass
class SoupMeasurement:
    """What ``lwlc.measure_soup`` found: the rows ``lwlc analyze --soup`` writes.

    Attributes:
        barriers: One row per path (its group), rest member and split (``soup_barriers.csv``):
            the soup's loss and error, the members' weighted means, ``loss_barrier`` (nats) and
            ``error_barrier`` (a fraction), their differences.
        endpoints: Each member's loss and accuracy per split (``loss_a``, ``acc_a``, ...).
        layers: The layer groups, in forward order, with their tensors.
        weights: The soup's weight of each member, in order.
        spec: The measurement's spec.
    """

    barriers: pd.DataFrame
    endpoints: dict[str, dict[str, float]]
    layers: dict[str, list[str]]
    weights: list[float]
    spec: MeasureSpec

    def barrier(self, plan: str = "full", group: str = "all", split: str | None = None,
                rest_from: str = "a") -> float:  # fmt: skip
        """One k-model loss barrier, e.g. the whole soup's against the members' mean."""
        b = self.barriers
        rows = b[
            (b.plan == plan) & (b.group == group) & (b.rest_from == rest_from)
            & (b.split == (split or self.spec.splits[0]))
        ]  # fmt: skip
        if len(rows) != 1:
            raise LwlcError(f"no single soup barrier for plan={plan!r}, group={group!r}, "
                            f"rest_from={rest_from!r}")  # fmt: skip
        return float(rows.loss_barrier.iloc[0])


def measure_soup(
    models: Sequence[Network],
    data: Data,
    spec: MeasureSpec | None = None,
    *,
    weights: Sequence[float] | None = None,
    rest_from: Sequence[str] | None = None,
    calibration: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> SoupMeasurement:
    """The k-model barrier of every group, as ``lwlc analyze --soup``: the soup of ``models``
    (``weights``, uniform by default) on each path's group of ``spec``'s plans, the rest from
    each member named in ``rest_from`` (a, b, c, ...; default ``spec.rest_from``), against the
    weighted mean of the members' own loss and error. The first model must be an ``nn.Module``
    (its architecture is used for all); the others may be state dicts. ``data`` as for
    :func:`measure`."""
    spec = spec or MeasureSpec()
    if not models or not isinstance(models[0], nn.Module):
        raise LwlcError("models: give 2 or more networks, the first an nn.Module")
    states = _checked_states(models[0], list(models[1:]))
    w = soup.check_weights(weights, len(states))
    names = [member_name(i) for i in range(len(states))]
    wanted = list(spec.rest_from if rest_from is None else rest_from)
    if not wanted or any(r not in names for r in wanted):
        raise LwlcError(f"rest_from must name members among {', '.join(names)}, got {wanted}")
    splits = _splits(data, spec)
    planned = replace(spec, rest_from=("a",))
    groups, paths = plan_paths(planned, models[0], next(iter(splits.values()))[0][:2])
    samples = _calibration(data, spec, calibration, models[0])
    found = soup.measure_soup(spec, models[0], states, paths, splits, w,
                              [names.index(r) for r in wanted], samples, device)  # fmt: skip
    return SoupMeasurement(
        pd.DataFrame(found.rows, columns=soup.SOUP_COLUMNS), found.endpoints,
        {g.name: list(g.keys) for g in groups}, w, spec,
    )  # fmt: skip


def _others(model_b: Network | Sequence[Network]) -> list[dict[str, Tensor]]:
    """B's state dict, or those of the k-1 other networks."""
    if isinstance(model_b, (nn.Module, Mapping)):
        return [_state(model_b)]
    return [_state(m) for m in model_b]


def _checked_states(model_a: nn.Module, model_b: Network | Sequence[Network]) -> list[dict]:
    states = [_state(model_a), *_others(model_b)]
    for i, state in enumerate(states):
        layers.check_compatible(states[0], state)
        layers.check_finite(state, member_name(i).upper())
    return states


def merge_models(
    model_a: nn.Module,
    model_b: Network | Sequence[Network],
    groups: Sequence[str] = ("*",),
    alpha: Alpha = 0.5,
    rest_from: str = "a",
    *,
    weights: Sequence[float] | None = None,
    calibration: Tensor | None = None,
    bn_batch_size: int = MeasureSpec.bn_batch_size,
) -> nn.Module:
    """A copy of ``model_a`` averaged with B on ``groups`` (names or globs), the rest from A or
    B: the model ``measure`` evaluates at ``alpha`` on that set of layers (``lwlc merge``).

    ``alpha`` may be one number, a list over the chosen groups in forward order, or ``{group:
    alpha}``. ``model_b`` may be a list of networks: then the k networks are averaged on
    ``groups`` (``weights``, uniform by default), the rest from ``rest_from`` (a, b, c, ...).
    With ``calibration`` (training inputs), BatchNorm statistics are recomputed by the same
    procedure as ``bn="reset"``.
    """
    if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= 1.0:
        raise LwlcError(f"alpha must lie in [0, 1], got {alpha}")
    states = _checked_states(model_a, model_b)
    if not (len(rest_from) == 1 and 0 <= ord(rest_from) - ord("a") < len(states)):
        names = ", ".join(repr(member_name(i)) for i in range(len(states)))
        raise LwlcError(f"rest_from must be one of {names}, got {rest_from!r}")
    all_groups = layers.default_groups(model_a)
    chosen = [all_groups.index(g) for g in layers.select(all_groups, list(groups))]
    rest = ord(rest_from) - ord("a")
    state, _ = merge_states(states, all_groups, chosen, alpha, weights, rest)
    return _module_with(model_a, state, calibration, bn_batch_size)


def _module_with(
    model: nn.Module, state: Mapping[str, Tensor], calibration: Tensor | None, bn_batch_size: int
) -> nn.Module:
    """A CPU copy of ``model`` holding ``state`` (BatchNorm recomputed on ``calibration``)."""
    merged = copy.deepcopy(model).cpu()
    if calibration is not None and batchnorm_layers(merged):
        state = recalibrated_state(merged, state, calibration, bn_batch_size)
    merged.load_state_dict(state)
    return merged


@dataclass
class Selection:
    """What ``lwlc.select_layers`` chose, as ``lwlc merge --groups auto`` reports it.

    Attributes:
        groups: The chosen layer groups, in forward order.
        table: One row per measured candidate set (``<out>.selection.csv``).
        summary: The choice, budget and every named model's loss and accuracy per split
            (``<out>.selection.json``).
        found: The core result (:class:`lwlc.core.selection.Selection`).
    """

    groups: list[str]
    table: pd.DataFrame
    summary: dict[str, Any]
    found: selection.Selection
    model: nn.Module
    calibration: Tensor | None = None
    bn_batch_size: int = MeasureSpec.bn_batch_size

    def merge(self) -> nn.Module:
        """The chosen model as a module (BatchNorm recomputed when the selection reset it)."""
        return _module_with(self.model, self.found.state(), self.calibration, self.bn_batch_size)

    def plot(self, path: str | Path) -> Path:
        """Draw the selection figure (loss against the fraction of parameters averaged)."""
        from lwlc.results.selection import selection_figure
        from lwlc.results.style import save_figure

        return save_figure(selection_figure(self.found), path)


def _selection_splits(data: Data, select_split: str, limit: int | None) -> dict[str, Any]:
    """The selection split and, when the data has one, the test split."""
    wanted = tuple(dict.fromkeys((select_split, "test")))
    if hasattr(data, "tensors"):
        return {s: data.tensors(s, limit) for s in wanted}
    if isinstance(data, Mapping):
        if select_split not in data:
            raise LwlcError(
                f"data has no split {select_split!r}: give {{split: (inputs, targets)}}"
            )
        return {s: _tensors(data[s], limit) for s in wanted if s in data}
    return {select_split: _tensors(data, limit)}


def select_layers(
    model_a: nn.Module,
    model_b: Network | Sequence[Network],
    data: Data,
    budget: float = 0.05,
    *,
    select_split: str = "val",
    budget_of: str = "better",
    rest_from: str | None = None,
    alpha: float | str = 0.5,
    weights: Sequence[float] | None = None,
    exhaustive_max: int = 12,
    spec: MeasureSpec | None = None,
    calibration: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> Selection:
    """Which layer groups of two (or k) networks can be averaged within ``budget`` nats of the
    better one's loss on ``select_split``: the search ``lwlc merge --groups auto`` runs.

    ``model_b`` may be a list (k networks: the soup, ``weights`` uniform by default, against the
    best member). ``rest_from`` (a, b, ...; default the better network) supplies the other layers;
    ``alpha="auto"`` then picks each chosen group's alpha on the selection split. ``data`` as for
    :func:`measure`; a data module or ``{split: ...}`` with a ``test`` split also reports held-out
    numbers. ``spec`` gives the evaluation options shared with :func:`measure` (``bn``,
    ``bn_batch_size``, ``max_samples``, ``batch_size``); its plans and alphas play no part.
    """
    spec = spec or MeasureSpec()
    bn, bn_batch_size = spec.bn, spec.bn_batch_size
    states = _checked_states(model_a, model_b)
    groups = layers.default_groups(model_a)
    splits = _selection_splits(data, select_split, spec.max_samples)
    rest = None if rest_from in (None, "better") else ord(str(rest_from)) - ord("a")
    found = selection.select_groups(
        model_a, states, groups, splits, budget, select_split=select_split, budget_of=budget_of,
        rest_from=rest, alpha=0.5 if alpha == "auto" else float(alpha), weights=weights,
        exhaustive_max=exhaustive_max, bn=bn, calibration=calibration,
        bn_batch_size=bn_batch_size, device=device, batch_size=spec.batch_size,
    )  # fmt: skip
    if alpha == "auto":
        selection.tune_alphas(found)
    return Selection(
        [g.name for g in found.chosen], pd.DataFrame(selection.selection_rows(found)),
        selection.selection_summary(found), found, model_a,
        calibration if bn == "reset" else None, bn_batch_size,
    )  # fmt: skip
