"""Experiment 5: robustness of each layer, along the averaging direction vs random directions.

Trains one pair the paper's way (shared initialisation, different data order), then, with the
engine's single-layer paths and rest from A:

- averaging direction: layer S moves from A's to B's weights (the usual single-layer path);
- random directions: layer S moves from A's weights to a random point at the same distance
  (Gaussian direction in S's parameters, scaled to ``||b_S - a_S||``), ``SAMPLES`` draws;
- Gaussian noise of a given norm in one layer at a time vs in the whole model (isotropic over
  all parameters), norms from 0 to ``NOISE_SCALE * ||b - a||`` (a multiple of the distance
  between the two models, so that the scale means the same for any network).

Each direction ``d`` is evaluated exactly and batched by giving the engine ``B := A + d``: the
single-layer path on S at alpha is then ``A + alpha * d_S`` and the full path ``A + alpha * d``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import seaborn as sns
import torch
from lightning.pytorch import LightningDataModule
from matplotlib.figure import Figure
from torch import Tensor, nn

from lwlc import figures, recipes
from lwlc.core.engine import Evaluator
from lwlc.core.interpolation import default_alphas, make_paths
from lwlc.core.layers import Group, default_groups
from lwlc.core.sweep import SweepResult, sweep
from lwlc.formats.checkpoints import build_model, instantiate, read_checkpoint
from lwlc.formats.io import write_csv

CLAIM = (
    "Layers differ in how much noise they tolerate, and random directions do not represent the "
    "averaging direction: moving one layer of A to B's layer changes the loss differently "
    "from moving it the same distance in a random direction."
)
SAMPLES = {"smoke": 2, "quick": 5, "full": 5}
MAX_SAMPLES = {"smoke": 100, "quick": None, "full": 10000}
ALPHAS = {"smoke": 3, "quick": 11, "full": 11}
NOISE_SCALE = 4.0
COLUMNS = ("direction", "sample", "group", "alpha", "norm", "loss", "accuracy")
BARRIER_COLUMNS = ("direction", "sample", "group", "loss_barrier", "error_barrier", "end_loss")

State = dict[str, Tensor]


def load_pair(ckpt: Path) -> tuple[nn.Module, State, State, LightningDataModule]:
    """The network, both members' state dicts and the data module recorded in a pair checkpoint."""
    ck = read_checkpoint(ckpt)
    assert ck.model_config is not None and ck.data_config is not None
    model = build_model(ck.model_config)
    data = instantiate(ck.data_config, LightningDataModule, "data")
    return model, ck.members["a"], ck.members["b"], data


def param_keys(model: nn.Module, group: Group) -> list[str]:
    """The keys of ``group`` that are trainable parameters (never buffers such as BN statistics)."""
    params = dict(model.named_parameters())
    return [k for k in group.keys if k in params]


def norm(state: Mapping[str, Tensor], keys: Sequence[str]) -> float:
    """The Euclidean norm of the tensors ``keys`` taken together."""
    return float(torch.sqrt(sum((state[k].double() ** 2).sum() for k in keys)))


def shifted(a: State, direction: Mapping[str, Tensor]) -> State:
    """``a + direction`` on the direction's keys, ``a`` elsewhere: the engine's custom B."""
    return {k: a[k] + direction[k] if k in direction else a[k] for k in a}


def gaussian(a: State, keys: Sequence[str], length: float, gen: torch.Generator) -> State:
    """A Gaussian direction over ``keys`` together, scaled to Euclidean norm ``length``."""
    draw = {k: torch.randn(a[k].shape, generator=gen, dtype=torch.float64) for k in keys}
    scale = length / norm(draw, keys)
    return {k: (v * scale).to(a[k].dtype) for k, v in draw.items()}


def per_layer(
    a: State,
    layers: Mapping[str, Sequence[str]],
    lengths: Mapping[str, float],
    gen: torch.Generator,
) -> State:
    """An independent Gaussian direction in every layer, layer S scaled to ``lengths[S]``."""
    out: State = {}
    for name, keys in layers.items():
        out.update(gaussian(a, keys, lengths[name], gen))
    return out


def rows(
    result: SweepResult, direction: str, sample: int, norm_scale: float = 1.0
) -> tuple[list[dict], list[dict]]:
    """Tidy curve and barrier rows of one sweep; ``norm`` = alpha * ``norm_scale`` (noise norm)."""
    curves = [
        {**r, "direction": direction, "sample": sample, "norm": float(r["alpha"]) * norm_scale}  # type: ignore[arg-type]
        for r in result.curves
    ]
    ends = {r["group"]: r["loss"] for r in curves if r["alpha"] == 1.0}
    barriers = [
        {**r, "direction": direction, "sample": sample, "end_loss": ends[r["group"]]}
        for r in result.barriers
        if r["reference"] == "path"
    ]
    return curves, barriers


def study(
    ckpt: Path, scale: str
) -> tuple[list[dict], list[dict], dict[str, float], list[str], float]:
    """Every direction of one pair: (curves, barriers, A and B's metrics, layers, ||b - a||)."""
    model, a, b, datamodule = load_pair(ckpt)
    data = {"test": datamodule.tensors("test", MAX_SAMPLES[scale])}
    model.load_state_dict(a)
    groups = default_groups(model, data["test"][0][:2])
    layers = {g.name: param_keys(model, g) for g in groups}
    layers = {name: keys for name, keys in layers.items() if keys}
    groups = [g for g in groups if g.name in layers]
    alphas = default_alphas(ALPHAS[scale])
    single = make_paths(groups, ["single"], ["a"])
    full = make_paths(groups, ["full"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(0)
    distance = {name: norm({k: b[k] - a[k] for k in keys}, keys) for name, keys in layers.items()}
    all_params = [k for keys in layers.values() for k in keys]
    model_distance = norm({k: b[k] - a[k] for k in all_params}, all_params)
    curves: list[dict] = []
    barriers: list[dict] = []

    def measure(
        b_state: State, paths: list, direction: str, sample: int, norm_scale: float = 1.0
    ) -> dict[str, float]:
        result = sweep(Evaluator(model, a, b_state, device=device), paths, alphas, data)
        c, r = rows(result, direction, sample, norm_scale)
        curves.extend(c)
        barriers.extend(r)
        return result.endpoints["test"]

    ends = measure(b, single, "averaging", 0)
    size = NOISE_SCALE * model_distance
    for j in range(SAMPLES[scale]):
        measure(shifted(a, per_layer(a, layers, distance, gen)), single, "random", j)
        layer_noise = per_layer(a, layers, {name: size for name in layers}, gen)
        measure(shifted(a, layer_noise), single, "noise in one layer", j, size)
        measure(
            shifted(a, gaussian(a, all_params, size, gen)), full, "noise in whole model", j, size
        )
    return curves, barriers, ends, list(layers), model_distance


def run(out: Path, scale: str) -> dict[str, float | str]:
    """For each network of the scale: train a pair, then compare the directions and the noise."""
    setups = recipes.pair_setups(scale, ["shared_init"])
    result: dict[str, float | str] = {}
    for setup in setups:
        root = out / setup.network
        curves, barriers, ends, layers, distance = study(setup.fit(root / "pair"), scale)
        write_csv(root / "curves.csv", curves, COLUMNS)
        write_csv(root / "barriers.csv", barriers, BARRIER_COLUMNS)
        df = pd.DataFrame(curves)
        figure_dir = out / "figures"
        pairing = setup.description
        figures.save_figure(
            direction_figure(df, layers, pairing), figure_dir / f"{setup.network}_directions.png"
        )
        figures.save_figure(noise_figure(df, pairing), figure_dir / f"{setup.network}_noise.png")
        numbers = {
            "pairing": setup.description,
            "acc_a": ends["acc_a"],
            "acc_b": ends["acc_b"],
            "model_distance": distance,
            **summary(pd.DataFrame(barriers), df, ends["loss_a"]),
        }
        prefix = f"{setup.network}/" if len(setups) > 1 else ""
        result.update({prefix + k: v for k, v in numbers.items()})
    return result


def summary(barriers: pd.DataFrame, curves: pd.DataFrame, loss_a: float) -> dict[str, float | str]:
    """Headline numbers: averaging vs random directions per layer, and noise tolerance per layer.

    ``loss_increase`` is the loss at the end of the move minus A's loss (random: mean of draws).
    """
    by = barriers.groupby(["direction", "group"], sort=False)[["loss_barrier", "end_loss"]].mean()
    avg, rnd = by.loc["averaging"], by.loc["random"]
    worse = int((avg["end_loss"] > rnd["end_loss"]).sum())
    result: dict[str, float | str] = {
        "max_averaging_loss_barrier": float(avg["loss_barrier"].max()),
        "max_random_loss_barrier": float(rnd["loss_barrier"].max()),
        "layers_averaging_hurts_more_than_random": f"{worse}/{len(avg)}",
    }
    for name in avg.index:
        result[f"{name}/averaging_loss_increase"] = float(avg.loc[name, "end_loss"] - loss_a)
        result[f"{name}/random_loss_increase"] = float(rnd.loc[name, "end_loss"] - loss_a)
    noise = curves[curves["direction"].str.startswith("noise")]
    ends = noise[noise["alpha"] == 1.0].groupby(["direction", "group"], sort=False)["loss"].mean()
    result["noise_norm"] = float(noise["norm"].max())
    result["noise/whole_model_loss_increase"] = float(
        ends.loc["noise in whole model"].iloc[0] - loss_a
    )
    for name, loss in ends.loc["noise in one layer"].items():
        result[f"noise/{name}_loss_increase"] = float(loss - loss_a)
    return result


def direction_figure(curves: pd.DataFrame, layers: Sequence[str], pairing: str) -> Figure:
    """Loss along each layer's averaging direction vs random directions of the same length,
    one panel per layer on one y axis."""
    df = curves[curves["direction"].isin(["averaging", "random"])]
    with figures.look():
        margin = figures.legend_width(["averaging"])
        fig, panels = figures.panel_grid(len(layers), 2.8, 2.3, margin=margin)
        for (ax,), layer in zip(panels, layers, strict=True):
            sns.lineplot(
                data=df[df["group"] == layer],
                x="alpha",
                y="loss",
                hue="direction",
                hue_order=["averaging", "random"],
                errorbar="sd",
                marker="o",
                markersize=3,
                ax=ax,
                legend=ax is panels[0][0],
            )
            ax.set_title(layer, fontsize="small")
            ax.set_xlabel("alpha (0: A, 1: moved)")
            ax.set_ylabel("test loss (nats)" if ax.get_subplotspec().is_first_col() else "")
        figures.legend_from(fig, panels[0][0], "direction")
        fig.suptitle(
            f"one layer of A moved to B's layer vs to a random point at the same "
            f"distance (random: mean ± sd of the draws), test split\npair: {pairing}",
            wrap=True,
        )
    return fig


def noise_figure(curves: pd.DataFrame, pairing: str) -> Figure:
    """Loss under Gaussian noise of growing norm in one layer at a time and in the whole model."""
    df = curves[curves["direction"].str.startswith("noise")].copy()
    df["where"] = df["group"].where(df["direction"] == "noise in one layer", "whole model")
    places = list(dict.fromkeys(df["where"]))
    with figures.look():
        fig, panels = figures.panel_grid(1, 5.0, 3.4, margin=figures.legend_width(places))
        ax = panels[0][0]
        sns.lineplot(
            data=df, x="norm", y="loss", hue="where", errorbar="sd", marker="o", markersize=3, ax=ax
        )
        ax.set_xlabel(f"noise norm ({NOISE_SCALE:g} x ||b - a|| at the right end)")
        ax.set_ylabel("test loss (nats)")
        figures.legend_from(fig, ax, "noise in")
        fig.suptitle(
            f"Gaussian noise in one layer vs the whole model, test split\npair: {pairing}",
            wrap=True,
        )
    return fig
