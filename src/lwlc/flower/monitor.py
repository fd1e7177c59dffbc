"""Layer-wise barriers between federated clients' models, measured between rounds.

The same measurement as ``lwlc analyze`` (:func:`lwlc.measure`: one MeasureSpec, the same
engine and rows), between every pair of clients or each client and the clients' weighted
average. Rows go to a CSV (rewritten atomically each round) and, when enabled, to W&B under the
names the training Callback uses. (``LayerwiseFedAvg(average="auto")`` does not choose from
these: it asks the clients for losses on their own data, ``lwlc.flower.selection``.)
"""

from __future__ import annotations

import copy
import csv
import itertools
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lwlc.core.barriers import BARRIER_COLUMNS, METRICS
from lwlc.core.errors import LwlcError
from lwlc.core.spec import MeasureSpec
from lwlc.formats.io import atomic_file

BETWEEN = ("pairs", "average")
COLUMNS = ("round", "client_a", "client_b", *BARRIER_COLUMNS, "averaged")
DEFAULT_SPEC = MeasureSpec(plans=("full", "single"), rest_from=("a",))


def weighted_mean(states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> dict:
    """The clients' weighted average (floating tensors; other tensors from the first client)."""
    total = float(sum(weights))
    mean = {}
    for key, first in states[0].items():
        if not torch.is_floating_point(first):
            mean[key] = first
            continue
        acc = sum((w / total) * s[key].double() for s, w in zip(states, weights, strict=True))
        mean[key] = acc.to(first.dtype)
    return mean


class BarrierMonitor:
    """Measures the layer-wise barriers between clients' models after each ``every`` rounds.

    Args:
        model: The clients' architecture.
        data: What :func:`lwlc.measure` takes: ``(inputs, targets)``, ``{split: (inputs,
            targets)}`` or an lwlc data module (the server's evaluation data).
        spec: The measurement (default: full and single-layer paths, rest from A).
        between: ``pairs`` (every pair of clients) or ``average`` (each client against the
            clients' weighted average).
        csv_path: Where the rows go (``round, client_a, client_b``, analyze's barrier columns,
            ``averaged``: the groups averaged that round).
        wandb: Also log the mean barrier over pairs and the averaged set to the active W&B run.
        every: Measure after every ``every``-th round.
        device: Where to evaluate.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        spec: MeasureSpec | None = None,
        between: str = "pairs",
        csv_path: str | Path | None = None,
        wandb: bool = False,
        every: int = 1,
        device: str = "cpu",
    ) -> None:
        if between not in BETWEEN:
            raise LwlcError(f"unknown between {between!r}; choose from {', '.join(BETWEEN)}")
        if every < 1:
            raise LwlcError(f"every must be >= 1, got {every}")
        self.model = copy.deepcopy(model).cpu()
        self.data = data
        self.spec = spec or DEFAULT_SPEC
        self.between = between
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.wandb = wandb
        self.every = every
        self.device = device
        self.rows: list[dict[str, Any]] = []

    def _pairs(
        self, states: Mapping[int, Mapping[str, Tensor]], weights: Sequence[float]
    ) -> list[tuple[str, Mapping[str, Tensor], str, Mapping[str, Tensor]]]:
        if self.between == "average":
            mean = weighted_mean(list(states.values()), weights)
            return [(str(c), s, "average", mean) for c, s in states.items()]
        ordered = sorted(states.items())
        return [(str(a), sa, str(b), sb) for (a, sa), (b, sb) in itertools.combinations(ordered, 2)]

    def measure(
        self,
        server_round: int,
        states: Mapping[int, Mapping[str, Tensor]],
        weights: Sequence[float],
    ) -> dict[str, float]:
        """Measure (if this round is due) and return each group's single-layer loss barrier
        averaged over the pairs; ``{}`` when the round is skipped or there is no pair."""
        from lwlc.api import measure

        if server_round % self.every:
            return {}
        finite = {c: all(v.isfinite().all() for v in s.values()) for c, s in states.items()}
        diverged = [str(c) for c, ok in finite.items() if not ok]
        if diverged:  # a diverged client is reported, not measured; the run goes on
            print(
                f"lwlc: warning: round {server_round}: client(s) {', '.join(diverged)} have "
                "NaN/Inf weights; their barriers are not measured",
                file=sys.stderr,
                flush=True,
            )
        kept = [(c, s, w) for (c, s), w in zip(states.items(), weights, strict=True) if finite[c]]
        states = {c: s for c, s, _ in kept}
        pairs = self._pairs(states, [w for _, _, w in kept]) if states else []
        rows = []
        for name_a, state_a, name_b, state_b in pairs:
            model_a = copy.deepcopy(self.model)
            model_a.load_state_dict(state_a)
            result = measure(model_a, state_b, self.data, self.spec, device=self.device)
            for row in result.barriers.to_dict("records"):
                rows.append({"round": server_round, "client_a": name_a, "client_b": name_b, **row})
        self.rows.extend(rows)
        return single_layer_barriers(rows, self.spec.splits[0])

    def log_choice(self, server_round: int, groups: Sequence[str]) -> None:
        """Record the groups averaged this round in its rows; write the CSV and W&B."""
        rows = [r for r in self.rows if r["round"] == server_round]
        for row in rows:
            row["averaged"] = ";".join(groups)
        if self.csv_path is not None:
            with atomic_file(self.csv_path) as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
        if self.wandb:
            log_to_wandb(server_round, rows, groups)


def single_layer_barriers(rows: Sequence[Mapping[str, Any]], split: str) -> dict[str, float]:
    """Each group's single-layer loss barrier along its own path (reference ``path``: what
    averaging that layer alone costs), rest from A, on ``split``, averaged over the measured
    pairs (groups in forward order)."""
    per_group: dict[str, list[float]] = {}
    for row in rows:
        if (row["plan"], row["reference"], row["rest_from"], row["split"]) == (
            "single", "path", "a", split,
        ):  # fmt: skip
            per_group.setdefault(str(row["group"]), []).append(float(row["loss_barrier"]))
    return {g: sum(v) / len(v) for g, v in per_group.items()}


def log_to_wandb(
    server_round: int, rows: Sequence[Mapping[str, Any]], groups: Sequence[str]
) -> None:
    """The round's barriers (mean over pairs) under the Callback's names, and the averaged set."""
    import wandb

    from lwlc.tracking.publish import metric_name

    if wandb.run is None:
        raise LwlcError("BarrierMonitor(wandb=True) needs an active W&B run: call wandb.init()")
    sums: dict[str, list[float]] = {}
    for row in rows:
        for metric in METRICS:
            sums.setdefault(metric_name(row, metric, True), []).append(
                float(row[f"{metric}_barrier"])
            )
    payload: dict[str, Any] = {k: sum(v) / len(v) for k, v in sums.items()}
    payload["flower/round"] = server_round
    payload["flower/averaged"] = len(groups)
    payload["flower/averaged_groups"] = wandb.Html(", ".join(groups) or "(none)")
    wandb.log(payload)
