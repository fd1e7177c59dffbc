"""An independent, naive reference for the engine: one interpolated model at a time.

Builds each interpolated state dict by the formula of science.md, loads it with
``load_state_dict``, optionally recomputes BatchNorm statistics with torch's own ``update_bn``,
and evaluates the whole data set. Slow and obviously correct: the engine must match it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn


def naive_state(a: dict, b: dict, keys: set[str], alpha: float, rest: str) -> dict:
    """theta_S(alpha; rest) written out directly."""
    out = {}
    for k in a:
        if k in keys and torch.is_floating_point(a[k]):
            out[k] = (1 - alpha) * a[k] + alpha * b[k]
        else:
            out[k] = (a if rest == "a" else b)[k].clone()
    return out


def naive_eval(
    model: nn.Module,
    state: dict,
    x: Tensor,
    y: Tensor,
    calibration: Tensor | None = None,
    batch_size: int = 64,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` with ``state`` (BN reset if calibrating)."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    if calibration is not None:
        loader = [calibration[i : i + batch_size] for i in range(0, len(calibration), batch_size)]
        update_bn(loader, net)
    net.eval()
    with torch.no_grad():
        logits = net(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def naive_curve(model, a, b, keys, alphas, rest, x, y, calibration=None, batch_size=64):
    """(losses, accuracies) along one path."""
    pts = [
        naive_eval(model, naive_state(a, b, keys, t, rest), x, y, calibration, batch_size)
        for t in alphas
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def full_batch_sgd(net: nn.Module, x: Tensor, y: Tensor, steps: int) -> dict[str, Tensor]:
    """``net`` trained by plain full-batch SGD (lr 0.1, momentum 0.9) on ``(x, y)``, independent
    of lwlc's training; its state dict, detached."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def weighted_soup(states: list[dict], modules: set[str], weights: list[float], rest: int) -> dict:
    """``sum_i w_i * theta_i`` on the tensors of ``modules``, the rest from member ``rest``: the
    hand-written soup and merge the soup and selection tests check lwlc against."""
    return {
        k: sum(w * s[k] for w, s in zip(weights, states, strict=True))
        if k.rpartition(".")[0] in modules
        else states[rest][k].clone()
        for k in states[0]
    }  # fmt: skip
