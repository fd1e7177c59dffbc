"""Experiment 6: noise in the training subspace vs its orthogonal complement (null space).

Two small MLPs (16 -> 16 -> 16 -> 16 -> 3, ReLU) start from one initialisation and each trains
on its own half of a synthetic 3-class problem (scikit-learn's ``make_classification``: 600
samples, 16 features, a third held out for testing), as the authors did: plain SGD, batch 4,
learning rate 0.1. The two nets are two clients of lwlc's federated simulation that never
average. The weights of both nets after every epoch (and the shared initialisation) span the
*training subspace*; its orthogonal complement is the *null space*. Each net is then perturbed
by a random unit direction scaled by sigma (drawn uniformly from ``SIGMA``), drawn within the
training subspace, within the null space, or along the averaging direction, and its test loss
measured; then the same within each layer alone.

The averaging direction is measured both ways (the ``direction`` column of ``noise.csv``):
``away`` (the default, as the authors' notebook): ``theta_self - theta_other`` normalised over the
whole model, then masked to the layer (so within one layer it is shorter than a unit vector);
``towards``: ``theta_other - theta_self`` normalised within the perturbed scope itself.

Random unit directions are isotropic within their subspace (Gaussian coordinates in an
orthonormal basis); the authors drew non-negative coordinates in the basis of ``scipy.linalg.orth``
instead, which favours one direction. Losses are evaluated exactly with the engine: a direction
``d`` is the engine's B := A + d, and the model at coefficient sigma is A + sigma * d.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from torch import Tensor

from lwlc import figures
from lwlc.core.engine import Evaluator
from lwlc.core.errors import LwlcError
from lwlc.core.layers import default_groups
from lwlc.data.base import TensorDataModule
from lwlc.formats.io import write_csv
from lwlc.models import MLP
from lwlc.training.federated import FederatedDataModule, FederatedModule

CLAIM = (
    "Networks are far more sensitive to noise inside the subspace spanned by their training "
    "trajectories than to noise of the same size in its orthogonal complement."
)
EPOCHS = {"smoke": 3, "quick": 50, "full": 50}
DRAWS = {"smoke": 5, "quick": 100, "full": 100}
LAYER_DRAWS = {"smoke": 3, "quick": 50, "full": 100}
SIGMA = (0.001, 10.0)
LAYER_SIGMA = (0.001, 5.0)
SPACES = ("training subspace", "null space", "averaging direction")
DIRECTIONS = ("away", "towards")
DIRECTION = "away"
COLUMNS = ("scope", "space", "direction", "network", "sigma", "loss", "accuracy")
SEED = 10


class SyntheticDataModule(TensorDataModule):
    """The authors' synthetic task: ``make_classification`` with 3 classes and 16 features."""

    name = "make_classification"
    num_classes = 3
    input_shape = (16,)
    mean = (0.0,)
    std = (1.0,)

    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x, y = make_classification(
            n_samples=600,
            n_features=16,
            n_informative=3,
            n_redundant=0,
            n_clusters_per_class=2,
            n_classes=3,
            random_state=SEED,
        )
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.33, random_state=42)
        f, i = torch.float32, torch.long
        return (
            torch.as_tensor(x_train, dtype=f),
            torch.as_tensor(y_train, dtype=i),
            torch.as_tensor(x_test, dtype=f),
            torch.as_tensor(y_test, dtype=i),
        )

    def normalise(self, images: Tensor) -> Tensor:
        """The features are used as generated."""
        return images


class Snapshots(pl.Callback):
    """Every client's parameters at the start and after every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, Tensor]] = []

    def _take(self, module: FederatedModule) -> None:
        for client in module.clients:
            self.states.append({k: v.detach().clone() for k, v in client.named_parameters()})

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._take(module)  # type: ignore[arg-type]

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._take(module)  # type: ignore[arg-type]


def flat(state: dict[str, Tensor], keys: Sequence[str]) -> Tensor:
    """The tensors ``keys`` of a state dict as one float64 vector."""
    return torch.cat([state[k].double().flatten() for k in keys])


def unflat(vector: Tensor, like: dict[str, Tensor], keys: Sequence[str]) -> dict[str, Tensor]:
    """``like`` with the tensors ``keys`` replaced by consecutive pieces of ``vector``."""
    out = dict(like)
    start = 0
    for k in keys:
        n = like[k].numel()
        out[k] = vector[start : start + n].view_as(like[k]).to(like[k].dtype)
        start += n
    return out


def orthonormal_basis(columns: Tensor) -> Tensor:
    """An orthonormal basis of the span of ``columns`` (numerical rank as ``scipy.linalg.orth``)."""
    u, s, _ = torch.linalg.svd(columns, full_matrices=False)
    tol = s.max() * max(columns.shape) * torch.finfo(columns.dtype).eps
    return u[:, s > tol]


def in_span(basis: Tensor, gen: torch.Generator) -> Tensor:
    """A random unit vector of the span of ``basis`` (isotropic within it)."""
    v = basis @ torch.randn(basis.shape[1], generator=gen, dtype=basis.dtype)
    return v / v.norm()


def in_complement(basis: Tensor, gen: torch.Generator) -> Tensor | None:
    """A random unit vector orthogonal to ``basis`` (None when the span is everything)."""
    if basis.shape[1] >= basis.shape[0]:
        return None
    g = torch.randn(basis.shape[0], generator=gen, dtype=basis.dtype)
    g -= basis @ (basis.T @ g)
    return g / g.norm()


def train(
    scale: str,
) -> tuple[MLP, list[dict[str, Tensor]], list[dict[str, Tensor]], SyntheticDataModule]:
    """Two nets from one initialisation, each on its own half; final states and all snapshots."""
    data = SyntheticDataModule(batch_size=4, val_size=0.0)
    clients = FederatedDataModule(
        data, num_clients=2, split="iid", split_seed=SEED, order_seed=SEED
    )
    template = MLP(in_features=16, num_classes=3, width=16, depth=3)
    module = FederatedModule(
        template,
        num_clients=2,
        average="none",
        init_seed=SEED,
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
    )
    snapshots = Snapshots()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = pl.Trainer(
        max_epochs=EPOCHS[scale],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[snapshots],
        deterministic=True,
    )
    trainer.fit(module, clients)
    finals = [{k: v.detach().clone() for k, v in c.state_dict().items()} for c in module.clients]
    return template, finals, snapshots.states, data


def noisy(
    model: MLP,
    a: dict[str, Tensor],
    keys: Sequence[str],
    direction: Tensor,
    sigmas: Sequence[float],
    test: tuple[Tensor, Tensor],
) -> list[tuple[float, float]]:
    """(loss, accuracy) on ``test`` of ``a + sigma * direction`` (over ``keys``) for each sigma."""
    b = unflat(flat(a, keys) + direction, a, keys)
    evaluator = Evaluator(model, a, b)
    n = len(evaluator.keys)
    return [(m.loss, m.accuracy) for m in evaluator.evaluate([(s,) * n for s in sigmas], *test)]


def averaging_direction(
    finals: Sequence[dict[str, Tensor]],
    net: int,
    keys: Sequence[str],
    all_keys: Sequence[str],
    direction: str = DIRECTION,
) -> Tensor:
    """Net ``net``'s averaging direction over ``keys`` (a float64 vector), ``away`` or ``towards``.

    ``away`` is the authors': ``theta_net - theta_other`` divided by its norm over the whole
    model (``all_keys``), then restricted to ``keys``; ``towards`` is ``theta_other - theta_net``
    divided by its norm over ``keys`` alone.
    """
    if direction not in DIRECTIONS:
        raise LwlcError(f"unknown direction {direction!r}; choose from {', '.join(DIRECTIONS)}")
    self_, other = finals[net], finals[1 - net]
    if direction == "towards":
        to_other = flat(other, keys) - flat(self_, keys)
        return to_other / to_other.norm()
    whole = (flat(self_, all_keys) - flat(other, all_keys)).norm()
    return (flat(self_, keys) - flat(other, keys)) / whole


def perturb(
    model: MLP,
    finals: Sequence[dict[str, Tensor]],
    net: int,
    keys: Sequence[str],
    all_keys: Sequence[str],
    basis: Tensor,
    sigmas: Sequence[float],
    test: tuple[Tensor, Tensor],
    gen: torch.Generator,
) -> list[dict[str, object]]:
    """Rows (space, direction, sigma, loss, accuracy) of net ``net`` perturbed within ``keys``."""
    a = finals[net]
    zero = torch.zeros(sum(a[k].numel() for k in keys), dtype=torch.float64)
    found = [("clean", "", 0.0, noisy(model, a, keys, zero, [0.0], test)[0])]
    for way in DIRECTIONS:
        along = averaging_direction(finals, net, keys, all_keys, way)
        measured = noisy(model, a, keys, along, sigmas, test)
        found += [("averaging direction", way, s, m) for s, m in zip(sigmas, measured, strict=True)]
    for space, draw in (("training subspace", in_span), ("null space", in_complement)):
        for sigma in sigmas:
            direction = draw(basis, gen)
            if direction is not None:
                found.append((space, "", sigma, noisy(model, a, keys, direction, [sigma], test)[0]))
    return [
        {
            "space": space,
            "direction": way,
            "network": net + 1,
            "sigma": sigma,
            "loss": m[0],
            "accuracy": m[1],
        }
        for space, way, sigma, m in found
    ]


def run(out: Path, scale: str, direction: str = DIRECTION) -> dict[str, float | str]:
    """Train both nets, split weight space by their trajectories, and compare noise losses.

    ``direction`` (``away`` or ``towards``) is the averaging direction the figures show and
    ``mean_loss_averaging_direction`` reports; both directions are measured and reported.
    """
    if direction not in DIRECTIONS:
        raise LwlcError(f"unknown direction {direction!r}; choose from {', '.join(DIRECTIONS)}")
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    model, finals, snapshots, data = train(scale)
    test = data.tensors("test")
    keys = [k for k, _ in model.named_parameters()]
    gen = torch.Generator().manual_seed(SEED)
    scopes = {"all layers": keys} | {
        g.name: [k for k in g.keys if k in keys] for g in default_groups(model, test[0][:2])
    }
    rows: list[dict[str, object]] = []
    dims: dict[str, str] = {}
    for scope, scope_keys in scopes.items():
        basis = orthonormal_basis(torch.stack([flat(s, scope_keys) for s in snapshots], dim=1))
        dims[scope] = f"{basis.shape[1]} of {basis.shape[0]}"
        whole = scope == "all layers"
        draws, (low, high) = (DRAWS[scale], SIGMA) if whole else (LAYER_DRAWS[scale], LAYER_SIGMA)
        for net in (0, 1):
            sigmas = [
                low + (high - low) * float(torch.rand((), generator=gen)) for _ in range(draws)
            ]
            found = perturb(model, finals, net, scope_keys, keys, basis, sigmas, test, gen)
            rows += [{"scope": scope, **r} for r in found]

    write_csv(out / "noise.csv", rows, COLUMNS)
    df = pd.DataFrame(rows)
    shown = df[df["direction"].isin(["", direction])]
    figure_dir = out / "figures"
    figures.save_figure(
        noise_figure(shown[shown["scope"] == "all layers"], "all layers", direction),
        figure_dir / "subspace_noise.png",
    )
    figures.save_figure(
        layer_figure(shown[shown["scope"] != "all layers"], direction),
        figure_dir / "subspace_noise_per_layer.png",
    )
    return summary(df, dims, direction)


WAYS = {
    "away": "away from the other net (whole-model unit vector, masked per layer)",
    "towards": "towards the other net (unit vector per scope)",
}
NETS = "two networks: shared initialisation, each on its own half of the data"


def summary(
    df: pd.DataFrame, dims: dict[str, str], direction: str = DIRECTION
) -> dict[str, float | str]:
    """Mean test loss over all draws for each space (and averaging direction), model and layers.

    ``mean_loss_averaging_direction`` is the ``direction`` one; ``..._away`` and ``..._towards``
    report both.
    """
    clean = df[df["space"] == "clean"]
    result: dict[str, float | str] = {
        "pairing": NETS.removeprefix("two networks: "),
        "averaging_direction": direction,
        "clean_loss": float(clean[clean["scope"] == "all layers"]["loss"].mean()),
        "clean_accuracy": float(clean[clean["scope"] == "all layers"]["accuracy"].mean()),
        "training_subspace_dim": dims["all layers"],
    }
    noisy_rows = df[df["space"] != "clean"]
    means = noisy_rows.groupby(["scope", "space", "direction"], sort=False)["loss"].mean()
    for scope in dict.fromkeys(df["scope"]):
        prefix = "" if scope == "all layers" else f"{scope}/"
        for space in SPACES:
            name = f"{prefix}mean_loss_{space.replace(' ', '_')}"
            ways = DIRECTIONS if space == "averaging direction" else ("",)
            for way in ways:
                suffix = f"_{way}" if way else ""
                result[name + suffix] = float(means.get((scope, space, way), math.nan))
            if space == "averaging direction":
                result[name] = result[f"{name}_{direction}"]
        if prefix:
            result[f"{prefix}training_subspace_dim"] = dims[scope]
    sub, null = result["mean_loss_training_subspace"], result["mean_loss_null_space"]
    result["subspace_over_null_loss_increase"] = (sub - result["clean_loss"]) / (
        null - result["clean_loss"]
    )  # type: ignore[operator]
    return result


def _scatter(df: pd.DataFrame, ax: object, legend: bool) -> None:
    noisy = df[df["space"] != "clean"]
    sns.scatterplot(
        data=noisy,
        x="sigma",
        y="loss",
        hue="space",
        hue_order=SPACES,
        style="network",
        s=10,
        alpha=0.6,
        ax=ax,
        legend=legend,
    )
    for loss in df[df["space"] == "clean"]["loss"]:
        ax.axhline(loss, color="0.2", lw=0.8, ls="--")  # type: ignore[attr-defined]
    ax.set_yscale("log")  # type: ignore[attr-defined]
    # labelled at 1, 2, 3, 5 of each decade in plain numbers (2, 3, 5 rather than 2x10^0)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))  # type: ignore[attr-defined]
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # type: ignore[attr-defined]
    ax.yaxis.set_minor_formatter(NullFormatter())  # type: ignore[attr-defined]


def noise_figure(df: pd.DataFrame, title: str, direction: str = DIRECTION) -> Figure:
    """Test loss vs noise scale for each space (dashed: the clean nets)."""
    with figures.look():
        fig, panels = figures.panel_grid(1, 5.5, 3.6, margin=figures.legend_width(SPACES))
        _scatter(df, panels[0][0], legend=True)
        figures.legend_from(fig, panels[0][0])
        fig.suptitle(
            f"random unit noise x sigma ({title}), test split; averaging direction: "
            f"{WAYS[direction]}\n{NETS}",
            wrap=True,
        )
    return fig


def layer_figure(df: pd.DataFrame, direction: str = DIRECTION) -> Figure:
    """The same, with noise within one layer at a time (one y axis for every layer)."""
    layers = list(dict.fromkeys(df["scope"]))
    with figures.look():
        fig, panels = figures.panel_grid(len(layers), 3.2, 3.0, margin=figures.legend_width(SPACES))
        for (ax,), layer in zip(panels, layers, strict=True):
            _scatter(df[df["scope"] == layer], ax, legend=ax is panels[0][0])
            ax.set_title(layer, fontsize="small")
            first = ax.get_subplotspec().is_first_col()
            ax.set_ylabel("test loss" if first else "")
            ax.tick_params(axis="y", which="both", labelleft=first)  # the log scale reset it
        figures.legend_from(fig, panels[0][0])
        fig.suptitle(
            f"noise within one layer, test split; averaging direction: {WAYS[direction]}\n{NETS}",
            wrap=True,
        )
    return fig
