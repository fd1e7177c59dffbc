"""Experiment 4: a deep linear network, where single-layer convexity is a theorem.

f(x) = W_L ... W_1 x with squared loss: along any single layer's interpolation the output is
linear in alpha, so the loss is a convex quadratic, while along the full interpolation the
output is a polynomial of degree L and the loss one of degree 2L, which can rise above the
line between its ends. Two pairs: A and B related by a sign symmetry (B = A with W_1 and W_2
negated: the same function, yet the full path's midpoint has W_1 = W_2 = 0 and outputs
nothing), and two independently trained networks. Models come from lwlc's interpolation
(``make_paths`` over ``default_groups``, then ``interpolate``), barriers from
``lwlc.core.barriers``; the loss is evaluated here because lwlc's evaluator scores cross-entropy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lwlc import figures, recipes
from lwlc.core.barriers import CURVE_COLUMNS, path_barrier
from lwlc.core.interpolation import InterpolationPath, default_alphas, interpolate, make_paths
from lwlc.core.layers import default_groups
from lwlc.formats.io import write_csv
from lwlc.training import reinitialize

CLAIM = (
    "In a deep linear network with squared loss, interpolating a single layer gives a convex "
    "loss curve (no barrier), while interpolating all layers can give a barrier."
)
SPLIT = "train"


@dataclass(frozen=True)
class Setup:
    """Sizes of one scale: layer widths (input first), samples, training steps, alphas."""

    widths: tuple[int, ...]
    samples: int
    steps: int
    points: int


SETUPS = {
    "smoke": Setup((4, 6, 6, 3), 64, 150, 11),
    "quick": Setup((8, 16, 16, 16, 4), 512, 1500, 21),
    "full": Setup((16, 64, 64, 64, 64, 64, 8), 4096, 4000, 41),
}


def deep_linear(widths: Sequence[int]) -> nn.Sequential:
    """``W_L ... W_1 x``: bias-free linear layers named W1..WL."""
    layers = [
        (f"W{i}", nn.Linear(widths[i - 1], widths[i], bias=False)) for i in range(1, len(widths))
    ]
    return nn.Sequential(OrderedDict(layers))


def regression_data(widths: Sequence[int], samples: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Gaussian inputs and noisy targets of a random linear map (input and output widths)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, widths[0], generator=gen)
    teacher = torch.randn(widths[-1], widths[0], generator=gen) / widths[0] ** 0.5
    y = x @ teacher.T + 0.1 * torch.randn(samples, widths[-1], generator=gen)
    return x, y


def squared_loss(prediction: Tensor, target: Tensor) -> float:
    """Squared error summed over outputs, averaged over samples."""
    return float(((prediction - target) ** 2).sum(dim=1).mean())


def train(net: nn.Module, x: Tensor, y: Tensor, steps: int, seed: int) -> dict[str, Tensor]:
    """Full-batch Adam on the squared loss from the initialisation drawn under ``seed``."""
    reinitialize(net, seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        ((net(x) - y) ** 2).sum(dim=1).mean().backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def sign_flipped(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The same function with W1 and W2 negated (their product is unchanged)."""
    return {k: -v if k in ("W1.weight", "W2.weight") else v for k, v in state.items()}


def curves(
    net: nn.Module,
    a: dict[str, Tensor],
    b: dict[str, Tensor],
    paths: Sequence[InterpolationPath],
    alphas: Sequence[float],
    data: tuple[Tensor, Tensor],
) -> recipes.Rows:
    """Squared loss along every path (rows as ``lwlc.core.sweep`` writes them; no accuracy)."""
    x, y = data
    rows: recipes.Rows = []
    with torch.no_grad():
        for path in paths:
            for alpha in alphas:
                state = interpolate(a, b, path, alpha)
                loss = squared_loss(functional_call(net, state, (x,)), y)
                rows.append(
                    {
                        "plan": path.plan,
                        "group": path.group,
                        "rest_from": path.rest_from,
                        "split": SPLIT,
                        "alpha": alpha,
                        "loss": loss,
                        "accuracy": float("nan"),
                    }
                )
    return rows


def second_differences(values: Sequence[float]) -> list[float]:
    """``f[i-1] - 2 f[i] + f[i+1]``: all >= 0 on an even grid iff the sampled curve is convex."""
    return [values[i - 1] - 2 * values[i] + values[i + 1] for i in range(1, len(values) - 1)]


def convexity_tolerance(values: Sequence[float]) -> float:
    """Float error allowed in a second difference: relative to the curve's magnitude."""
    return 1e-5 * max(1.0, max(abs(v) for v in values))


def summarize(rows: recipes.Rows, alphas: Sequence[float]) -> dict[str, float | str]:
    """Full path barrier, worst single-layer barrier and each kind's smallest second difference."""
    by_path: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        by_path.setdefault((str(r["plan"]), str(r["group"]), str(r["rest_from"])), []).append(
            float(r["loss"])  # type: ignore[arg-type]
        )
    full = next(v for (plan, _, _), v in by_path.items() if plan == "full")
    singles = {key: v for key, v in by_path.items() if key[0] == "single"}
    single_barriers = [path_barrier(v, alphas) for v in singles.values()]
    convex = all(min(second_differences(v)) >= -convexity_tolerance(v) for v in singles.values())
    return {
        "loss_a": full[0],
        "loss_b": full[-1],
        "full_path_barrier": path_barrier(full, alphas),
        "full_min_second_difference": min(second_differences(full)),
        "max_single_path_barrier": recipes.largest(single_barriers),
        "single_min_second_difference": min(min(second_differences(v)) for v in singles.values()),
        "single_curves_convex": "yes" if convex else "no",
    }


def run(out: Path, scale: str) -> dict[str, float | str]:
    """Both pairs at ``scale``: curves, convexity and barriers, a figure per pair."""
    with recipes.torch_threads(1):
        return measure(out, SETUPS[scale])


def measure(out: Path, setup: Setup) -> dict[str, float | str]:
    """Train A and B (or derive B), then the curves and their summary for each pair."""
    net = deep_linear(setup.widths)
    data = regression_data(setup.widths, setup.samples)
    alphas = default_alphas(setup.points)
    paths = make_paths(default_groups(net), ["full", "single"], ["a", "b"])
    a = train(net, *data, setup.steps, seed=0)
    pairs = {
        "sign_symmetry": (sign_flipped(a), "B = A with W1 and W2 negated (same function)"),
        "independent": (train(net, *data, setup.steps, seed=1), "independently trained"),
    }
    result: dict[str, float | str] = {
        "target_energy": squared_loss(torch.zeros_like(data[1]), data[1])
    }
    for name, (b, description) in pairs.items():
        rows = curves(net, a, b, paths, alphas, data)
        write_csv(out / name / "curves.csv", rows, CURVE_COLUMNS)
        figure = figures.interpolation_curves(rows, loss_unit="squared error", pairing=description)
        figures.save_figure(figure, out / "figures" / f"{name}_curves.png")
        result[f"{name}/pair"] = description
        result.update({f"{name}/{k}": v for k, v in summarize(rows, alphas).items()})
    return result
