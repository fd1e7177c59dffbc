"""How much memory a batched evaluation needs, and the batch and chunk sizes that fit a budget.

The engine (``lwlc.core.engine``) walks a tree of shared prefixes depth first. At any moment it
holds, per stage along the current branch, the node's output and at most two endpoint outputs
kept for mixing; the stage being run also holds its internal activations. On top of that come
the interpolated tensors it caches for one call (one set per distinct (stage, coefficients) with
a coefficient strictly between 0 and 1; endpoints are shared, not copied), and the fixed cost of
the endpoint models and the data. ``plan`` turns these into a batch size and a chunk size (paths
evaluated per call) that fit a budget, or a clear error when even one sample of one path does not;
``stack_bytes`` gives the engine's batching of suffix chains what is left. The BatchNorm
calibration batch (``--bn reset``) is part of the procedure that defines the statistics, so it is
never shrunk: it must fit as it is, or the error says to lower ``--bn-batch-size``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lwlc.core.engine import Coefficients, Evaluator
from lwlc.core.errors import LwlcError, readable_bytes
from lwlc.core.interpolation import InterpolationPath, coefficients

GIB = 1 << 30
# The share of a budget planned for tensors. The rest is left to the allocator, which keeps freed
# blocks (measured: up to ~30% of the cached weights with ResNet-18), and to Python objects.
TENSOR_SHARE = 0.7


def _tensor_bytes(obj: object) -> int:
    """Bytes of every tensor in a (nested) module output."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(o) for o in obj)
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(o) for o in obj.values())
    return 0


def state_bytes(state: Mapping[str, Tensor]) -> int:
    """Bytes of a state dict's tensors."""
    return sum(_tensor_bytes(v) for v in state.values())


@torch.no_grad()
def activation_bytes_per_sample(evaluator: Evaluator, example: Tensor) -> int:
    """Peak activation bytes per sample in the engine's descent, by a probe forward of ``example``.

    Every stage output counts three times (node output and two mixing endpoints); the costliest
    stage adds its output and, at worst, all its sub-modules' outputs alive at once (or the two
    temporaries of mixing); the loss adds two copies of the logits.
    """
    x = example.to(evaluator.device)
    outputs: list[int] = []
    transients: list[int] = []
    for stage in evaluator.stages:
        inner: list[int] = []

        def record(_m: nn.Module, _i: object, out: object, inner: list[int] = inner) -> None:
            inner.append(_tensor_bytes(out))

        handles = [
            m.register_forward_hook(record) for m in stage.module.modules() if m is not stage.module
        ]
        try:
            x = stage.module(x)
        finally:
            for h in handles:
                h.remove()
        out = _tensor_bytes(x)
        outputs.append(out)
        transients.append(out + max(sum(inner), 2 * out))
    total = _tensor_bytes(example) + 3 * sum(outputs) + max(transients, default=0) + 2 * outputs[-1]
    return -(-total // len(example))


def weight_bytes(evaluator: Evaluator, models: Iterable[Coefficients]) -> int:
    """Bytes of the interpolated stage tensors the evaluator builds for ``models`` in one call."""
    index = {k: i for i, k in enumerate(evaluator.keys)}
    sizes = [_tensor_bytes(evaluator.a[k]) for k in evaluator.keys]
    slots = [tuple(index[k] for k in stage.keys) for stage in evaluator.stages]
    seen: set[tuple[int, Coefficients]] = set()
    total = 0
    for coeffs in models:
        for s, stage_slots in enumerate(slots):
            token = tuple(coeffs[i] for i in stage_slots)
            if (s, token) in seen:
                continue
            seen.add((s, token))
            total += sum(sizes[i] for i, c in zip(stage_slots, token, strict=True) if 0.0 < c < 1.0)
    return total


@dataclass(frozen=True)
class MemoryPlan:
    """Batch and chunk sizes chosen for a budget, with the estimate (bytes) they lead to.

    ``calibration_batch``: samples of one BatchNorm calibration batch (0: none), which is not
    planned but must fit."""

    batch_size: int
    chunk_size: int
    budget: int
    fixed: int
    weights: int
    activations_per_sample: int
    calibration_batch: int = 0

    @property
    def estimate(self) -> int:
        """Estimated peak bytes: fixed + cached weights + the larger batch of activations."""
        batch = max(self.batch_size, self.calibration_batch)
        return self.fixed + self.weights + batch * self.activations_per_sample

    def as_dict(self) -> dict[str, int]:
        """Plain data for summary.json (bytes)."""
        return {
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
            "bn_batch_size": self.calibration_batch,
            "budget_bytes": self.budget,
            "estimate_bytes": self.estimate,
            "fixed_bytes": self.fixed,
            "weights_bytes": self.weights,
            "activation_bytes_per_sample": self.activations_per_sample,
        }


# A flush of stacked chains holds the held-back activations, their concatenation and the
# stacked stage outputs and temporaries (as for one batch, ~4x): reserve 6x the stack limit.
STACK_FACTOR = 6


def stack_bytes(chosen: MemoryPlan, requested: int) -> int:
    """The engine's stack limit that fits what the plan leaves free (0: no stacking)."""
    free = int(TENSOR_SHARE * chosen.budget) - chosen.estimate
    return max(0, min(requested, free // STACK_FACTOR))


def plan(
    budget: int,
    batch_size: int,
    chunk_size: int,
    fixed: int,
    activations_per_sample: int,
    chunk_weights: Callable[[int], int],
    calibration_batch: int = 0,
) -> MemoryPlan:
    """The largest sizes up to the requested ones whose estimate fits ``TENSOR_SHARE * budget``.

    Paths per chunk are halved first (they only add cached weights), then the batch is shrunk;
    ``chunk_weights(k)`` is the largest weight cache of any chunk of ``k`` paths. A calibration
    batch of ``calibration_batch`` samples must fit unchanged next to the cached weights.
    """
    usable = int(TENSOR_SHARE * budget)
    chunk = chunk_size
    while True:
        weights = chunk_weights(chunk)
        room = usable - fixed - weights
        if room >= max(batch_size, calibration_batch) * activations_per_sample:
            return MemoryPlan(
                batch_size, chunk, budget, fixed, weights, activations_per_sample, calibration_batch
            )
        if chunk == 1:
            break
        chunk = max(1, chunk // 2)
    fitting = room // activations_per_sample
    if fitting >= max(1, calibration_batch):
        return MemoryPlan(
            min(batch_size, int(fitting)),
            1,
            budget,
            fixed,
            weights,
            activations_per_sample,
            calibration_batch,
        )
    size = readable_bytes
    if fitting >= 1:
        calibration_need = fixed + weights + calibration_batch * activations_per_sample
        raise LwlcError(
            f"a BatchNorm calibration batch of {calibration_batch} samples needs about "
            f"{size(calibration_need)} but the memory budget is {size(budget)} "
            f"({TENSOR_SHARE:.0%} for tensors): lower --bn-batch-size to at most {fitting} (the "
            "statistics depend on it, so lwlc does not shrink it) or raise --memory-budget"
        )
    need = fixed + weights + activations_per_sample
    raise LwlcError(
        f"the evaluation needs about {size(need)} even with batch size 1 and one path per "
        f"chunk (models and data {size(fixed)}, interpolated weights {size(weights)}, "
        f"activations {size(activations_per_sample)} per sample) but the memory budget is "
        f"{size(budget)} ({TENSOR_SHARE:.0%} for tensors): raise --memory-budget, use fewer "
        "--max-samples or alphas, or a machine with more memory"
    )


def available_bytes(device: torch.device) -> int:
    """Free memory: free GPU memory on CUDA, MemAvailable (or total RAM) on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fixed_bytes(evaluator: Evaluator, model: nn.Module, data: Iterable[Tensor]) -> int:
    """Bytes held for the whole run: both endpoint states, the model and the evaluator's copy of
    it, the data, and transients: the largest stage again (a stage is cloned before it is
    refilled) and two temporaries of the largest tensor (while it is mixed)."""
    sizes = {k: _tensor_bytes(v) for k, v in evaluator.a.items()}
    stage = max((sum(sizes[k] for k in st.keys) for st in evaluator.stages), default=0)
    return (
        state_bytes(evaluator.a)
        + state_bytes(evaluator.b)
        + 2 * state_bytes(model.state_dict())
        + sum(_tensor_bytes(t) for t in data)
        + stage
        + 2 * max(sizes.values(), default=0)
    )


def plan_sweep(
    evaluator: Evaluator,
    model: nn.Module,
    paths: Sequence[InterpolationPath],
    alphas: Sequence[float],
    data: Mapping[str, tuple[Tensor, Tensor]],
    calibration: Tensor | None,
    budget_gib: float | None,
    batch_size: int,
    chunk_size: int,
) -> MemoryPlan:
    """Batch and chunk sizes that keep a sweep's estimated peak within ``budget_gib`` (default:
    80 percent of the free memory); gives the evaluator's chain stacking what is left."""
    budget = int(budget_gib * GIB) if budget_gib else int(0.8 * available_bytes(evaluator.device))
    example = next(iter(data.values()))[0][:2]
    tensors = [t for pair in data.values() for t in pair] + (
        [calibration] if calibration is not None else []
    )
    fixed = fixed_bytes(evaluator, model, tensors)
    keys, float_keys = evaluator.keys, evaluator.float_keys

    def chunk_weights(size: int) -> int:
        return max(
            (
                weight_bytes(
                    evaluator,
                    [
                        coefficients(p, t, keys, float_keys)
                        for p in paths[i : i + size]
                        for t in alphas
                    ],
                )
                for i in range(0, len(paths), size)
            ),
            default=0,
        )

    # a batch never holds more samples than the largest split has
    largest = max(len(inputs) for inputs, _ in data.values())
    requested = min(batch_size, largest)
    chosen = plan(
        budget,
        requested,
        chunk_size,
        fixed,
        activation_bytes_per_sample(evaluator, example),
        chunk_weights,
        0 if calibration is None else min(evaluator.bn_batch_size, len(calibration)),
    )
    evaluator.stack_bytes = stack_bytes(chosen, evaluator.stack_bytes)
    if (chosen.batch_size, chosen.chunk_size) != (requested, chunk_size):
        print(
            f"memory: batch size {chosen.batch_size} (asked {batch_size}), {chosen.chunk_size} "
            f"paths per chunk (asked {chunk_size}) to fit the budget of "
            f"{readable_bytes(chosen.budget)}",
            file=sys.stderr,
        )
    return chosen
