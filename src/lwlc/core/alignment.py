"""Permutation alignment of two networks by weight matching (Ainsworth et al., ICLR 2023).

Hidden units of a network can be permuted without changing its function: permute the output
axis of a layer and the input axis of the layers that read it. Weight matching finds, for each
such permutation, the one that makes B's weights most similar to A's (a linear assignment per
permutation, iterated until no permutation improves).

Which axes of which tensors each permutation touches (the *permutation spec*) is derived from
the model by tracing its forward pass with ``torch.fx``: every Linear/Conv output starts a
permutation; BatchNorm, activations, pooling, dropout and flatten carry it to the next layer's
input; an addition of two permuted tensors (a residual connection) makes both one permutation.
Anything else (the model's output, reshapes, unknown modules or functions) pins the
permutations reaching it to the identity, so the permuted model always computes the same
function, at worst with fewer units aligned.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from lwlc.core.errors import LwlcError

Axis = tuple[str, int]  # (state-dict key, tensor axis)

_CARRY_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
)  # fmt: skip
_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_CARRY_FUNCTIONS = {
    F.relu, torch.relu, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh, torch.sigmoid, F.dropout,
}  # fmt: skip
_POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
}  # fmt: skip
_ELEMENTWISE = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class PermutationSpec:
    """Each permutation's size and the (key, axis) pairs it permutes.

    A tensor axis may be ``size * block`` long (a Linear reading flattened conv features): unit
    ``i`` then owns the ``block`` consecutive entries ``i * block .. i * block + block - 1``.
    """

    sizes: dict[str, int]
    axes: dict[str, tuple[Axis, ...]]

    def of_key(self, key: str) -> list[tuple[int, str]]:
        """The (axis, permutation) pairs acting on ``key``."""
        return [(ax, p) for p, refs in self.axes.items() for k, ax in refs if k == key]


@dataclass(frozen=True)
class _Act:
    """A permuted activation: permutation id, the permuted axis (negative: from the end), ndim."""

    perm: int
    axis: int
    ndim: int | None

    def at(self, axis: int) -> bool:
        """Whether the permuted axis is ``axis`` (negative axes count from the end)."""
        if self.axis == axis:
            return True
        if self.ndim is None:
            return False
        return self.axis % self.ndim == axis % self.ndim


class _SpecBuilder:
    """Walks an fx graph once, creating permutations and joining those that must be equal."""

    def __init__(self, shapes: Mapping[str, torch.Size]) -> None:
        self.shapes = shapes
        self.parent: list[int] = []
        self.names: list[str] = []
        self.sizes: list[int] = []
        self.frozen: set[int] = set()
        self.refs: dict[Axis, int] = {}

    def new(self, name: str, size: int) -> int:
        self.parent.append(len(self.parent))
        self.names.append(name)
        self.sizes.append(size)
        return len(self.parent) - 1

    def find(self, p: int) -> int:
        while self.parent[p] != p:
            self.parent[p] = self.parent[self.parent[p]]
            p = self.parent[p]
        return p

    def union(self, p: int, q: int) -> None:
        p, q = self.find(p), self.find(q)
        if p == q:
            return
        if self.sizes[p] != self.sizes[q]:
            self.frozen.update((p, q))
        self.parent[max(p, q)] = min(p, q)

    def freeze(self, act: _Act | None) -> None:
        if act is not None:
            self.frozen.add(act.perm)

    def touch(self, prefix: str, names: tuple[str, ...], axis: int, perm: int) -> None:
        """Record that ``perm`` permutes ``axis`` of the module's (existing) tensors ``names``."""
        for name in names:
            key = f"{prefix}.{name}" if prefix else name
            if key not in self.shapes:
                continue
            if (key, axis) in self.refs:
                self.union(self.refs[(key, axis)], perm)
            self.refs[(key, axis)] = perm

    def module(self, path: str, module: nn.Module, act: _Act | None) -> _Act | None:
        """The activation after ``module`` applied to ``act``."""
        if isinstance(module, nn.Linear):
            if act is not None and act.at(-1):
                self.touch(path, ("weight",), 1, act.perm)
            else:
                self.freeze(act)
            out = self.new(path, module.out_features)
            self.touch(path, ("weight", "bias"), 0, out)
            return _Act(out, -1, act.ndim if act is not None else None)
        if isinstance(module, _CONVS) and module.groups == 1:
            if act is not None and act.at(1):
                self.touch(path, ("weight",), 1, act.perm)
            else:
                self.freeze(act)
            out = self.new(path, module.out_channels)
            self.touch(path, ("weight", "bias"), 0, out)
            return _Act(out, 1, len(module.kernel_size) + 2)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if act is not None and act.at(1):
                self.touch(path, ("weight", "bias", "running_mean", "running_var"), 0, act.perm)
                return act
            self.freeze(act)
            return None
        if isinstance(module, _CARRY_MODULES):
            return act
        if isinstance(module, _POOL_MODULES):
            return self.pool(act)
        if isinstance(module, nn.Flatten):
            return self.flatten(act, module.start_dim, module.end_dim)
        self.freeze(act)
        return None

    def pool(self, act: _Act | None) -> _Act | None:
        if act is None or act.at(1):
            return act
        self.freeze(act)
        return None

    def flatten(self, act: _Act | None, start: int, end: int) -> _Act | None:
        """Units stay contiguous blocks only when the permuted axis is the first one flattened."""
        if act is None:
            return None
        if act.ndim is None or act.axis < 0:
            self.freeze(act)
            return None
        start, end = start % act.ndim, end % act.ndim
        if act.axis < start:
            return _Act(act.perm, act.axis, act.ndim - (end - start))
        if act.axis == start:
            return _Act(act.perm, start, act.ndim - (end - start))
        if act.axis > end:
            return _Act(act.perm, act.axis - (end - start), act.ndim - (end - start))
        self.freeze(act)
        return None

    def elementwise(self, operands: list[object], acts: dict[fx.Node, _Act | None]) -> _Act | None:
        """add/sub/mul: permuted operands must share one permutation; constants are neutral."""
        tensors = [acts.get(o) for o in operands if isinstance(o, fx.Node)]
        permuted = [a for a in tensors if a is not None]
        if not permuted:
            return None
        first = permuted[0]
        if len(permuted) < len(tensors) or any(
            a.axis != first.axis or a.ndim != first.ndim for a in permuted
        ):
            for a in permuted:
                self.freeze(a)
            return None
        for a in permuted[1:]:
            self.union(first.perm, a.perm)
        return first


def _flatten_args(node: fx.Node) -> tuple[int, int]:
    args = list(node.args[1:]) + [None, None]
    start = node.kwargs.get("start_dim", args[0] if args[0] is not None else 0)
    end = node.kwargs.get("end_dim", args[1] if args[1] is not None else -1)
    return int(start), int(end)


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutations of ``model``'s hidden units that leave its function unchanged."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many types for untraceable Python
        raise LwlcError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else ''}); "
            "weight matching needs a forward pass that torch.fx can trace"
        ) from None
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    b = _SpecBuilder(shapes)
    acts: dict[fx.Node, _Act | None] = {}
    pinned: list[str] = []
    for node in graph.nodes:
        inputs = [a for a in node.all_input_nodes]
        first = acts.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "call_module":
            acts[node] = b.module(str(node.target), model.get_submodule(str(node.target)), first)
            for extra in inputs[1:]:
                b.freeze(acts.get(extra))
        elif node.op in ("call_function", "call_method"):
            target = node.target
            if target in _CARRY_FUNCTIONS or target in ("relu", "tanh", "sigmoid"):
                acts[node] = first
            elif target in _POOL_FUNCTIONS:
                acts[node] = b.pool(first)
            elif target in (torch.flatten, "flatten"):
                acts[node] = b.flatten(first, *_flatten_args(node))
            elif target in _ELEMENTWISE or target in ("add", "sub", "mul", "__add__", "__mul__"):
                acts[node] = b.elementwise(list(node.args), acts)
            else:
                for n in inputs:
                    b.freeze(acts.get(n))
                acts[node] = None
        elif node.op == "get_attr":
            pinned.append(str(node.target))
            acts[node] = None
        else:  # placeholder, output
            for n in inputs:
                b.freeze(acts.get(n))
            acts[node] = None
    return _collect(b, pinned)


def _collect(b: _SpecBuilder, pinned: list[str]) -> PermutationSpec:
    """Group the recorded axes by root permutation, dropping frozen ones and mis-sized axes."""
    axes: dict[int, list[Axis]] = {}
    for ref, perm in b.refs.items():
        axes.setdefault(b.find(perm), []).append(ref)
    frozen = {b.find(p) for p in b.frozen}
    for root, refs in axes.items():
        for key, ax in refs:
            size = b.shapes[key][ax]
            if size % b.sizes[root] or any(key == p or key.startswith(f"{p}.") for p in pinned):
                frozen.add(root)
    names: dict[int, str] = {}
    for root in sorted(axes):
        if root in frozen:
            continue
        name = b.names[root]
        names[root] = name if name not in names.values() else f"{name}#{root}"
    return PermutationSpec(
        sizes={names[r]: b.sizes[r] for r in names},
        axes={names[r]: tuple(axes[r]) for r in names},
    )


def _index(size: int, perm: Tensor) -> Tensor:
    """Indices along an axis of ``size`` entries that apply ``perm`` to its unit blocks."""
    block = size // len(perm)
    return (perm[:, None] * block + torch.arange(block, device=perm.device)).reshape(-1)


def _permute(tensor: Tensor, axes: list[tuple[int, Tensor]]) -> Tensor:
    for axis, perm in axes:
        tensor = tensor.index_select(axis, _index(tensor.shape[axis], perm.to(tensor.device)))
    return tensor


def apply_permutations(
    spec: PermutationSpec, state: Mapping[str, Tensor], perms: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``state`` with every permutation applied: unit ``i`` of the result is ``perms[p][i]``."""
    by_key: dict[str, list[tuple[int, Tensor]]] = {}
    for p, refs in spec.axes.items():
        for key, axis in refs:
            by_key.setdefault(key, []).append((axis, perms[p]))
    return {k: _permute(v, by_key[k]) if k in by_key else v for k, v in state.items()}


def _units(tensor: Tensor, axis: int, size: int) -> Tensor:
    """``tensor`` as one row per unit of the permuted ``axis`` (float64)."""
    return tensor.movedim(axis, 0).reshape(size, -1).double()


def weight_matching(
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    max_iter: int = 100,
    seed: int = 0,
    spec: PermutationSpec | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """B's state dict permuted to match A (same function as B), and each group's permutation.

    Coordinate ascent over permutations in a random (``seed``) order, each solved exactly as a
    linear assignment maximising the summed inner products of A's and permuted B's parameters
    (buffers such as BatchNorm statistics are permuted along, but not matched on).
    """
    from scipy.optimize import linear_sum_assignment

    if max_iter < 1:
        raise LwlcError(f"max_iter must be >= 1, got {max_iter}")
    spec = spec if spec is not None else permutation_spec(model)
    params = {k for k, _ in model.named_parameters()}
    device = next(iter(state_b.values())).device
    perms = {p: torch.arange(n, device=device) for p, n in spec.sizes.items()}
    order = list(spec.sizes)
    rng = random.Random(seed)
    for _ in range(max_iter):
        improved = False
        for p in rng.sample(order, len(order)):
            n = spec.sizes[p]
            cost = torch.zeros(n, n, dtype=torch.float64, device=device)
            for key, axis in spec.axes[p]:
                if key not in params:
                    continue
                others = [(ax, perms[q]) for ax, q in spec.of_key(key) if q != p]
                wb = _permute(state_b[key], others)
                cost += _units(state_a[key], axis, n) @ _units(wb, axis, n).T
            _, cols = linear_sum_assignment(cost.cpu().numpy(), maximize=True)
            new = torch.as_tensor(cols, device=device)
            rows = torch.arange(n, device=device)
            old_score, new_score = cost[rows, perms[p]].sum().item(), cost[rows, new].sum().item()
            if new_score > old_score + 1e-12 * max(1.0, abs(old_score)):
                improved = True
                perms[p] = new
        if not improved:
            break
    return apply_permutations(spec, state_b, perms), perms


def unaligned(
    model: nn.Module, state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``none``: B as it is."""
    return dict(state_b)


def weight_matched(
    model: nn.Module, state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``weight-matching``: B with its units permuted to match A's (:func:`weight_matching`)."""
    return weight_matching(model, state_a, state_b)[0]


Aligner = Callable[[nn.Module, Mapping[str, Tensor], Mapping[str, Tensor]], dict[str, Tensor]]
# The alignment methods (``MeasureSpec.align``, its ``Alignment`` Literal; ``lwlc merge --align``).
ALIGN_METHODS: dict[str, Aligner] = {"none": unaligned, "weight-matching": weight_matched}


def align(
    method: str, model: nn.Module, state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """B's state dict aligned to A by ``method``, one of :data:`ALIGN_METHODS`."""
    if method not in ALIGN_METHODS:
        raise LwlcError(f"unknown --align {method!r}: choose {' or '.join(ALIGN_METHODS)}")
    return ALIGN_METHODS[method](model, state_a, state_b)
