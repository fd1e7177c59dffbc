"""BatchNorm calibration (``--bn reset``): one fixed procedure, shared by analyze, merge and the
barrier Callback.

The statistics of a model depend only on its weights, the calibration inputs and the calibration
batch size, never on how the model is evaluated afterwards. The procedure:

- the model runs in eval mode except its BatchNorm layers, which run in train mode (they
  normalise with the batch's statistics); dropout and the like stay off, so it is deterministic;
- the inputs are split, in their order, into batches of ``batch_size`` samples (the last one may
  be smaller);
- for every BatchNorm layer and channel, with ``n_k`` the samples of batch ``k``, ``mean_k`` the
  mean of the layer's input over the batch (and any spatial positions) and ``var_k`` its unbiased
  variance, as BatchNorm computes them in training::

      running_mean = sum_k n_k * mean_k / sum_k n_k
      running_var  = sum_k n_k * var_k  / sum_k n_k
      num_batches_tracked = the number of batches

It is BatchNorm's own update with momentum ``n_k / (n_1 + ... + n_k)`` for batch ``k``: the first
batch replaces the old statistics, and the average is cumulative, weighted by sample count.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from lwlc.core.errors import LwlcError

BatchNorm = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[BatchNorm]:
    """The model's BatchNorm layers that keep running statistics (the ones calibration sets)."""
    return [m for m in model.modules() if isinstance(m, BatchNorm) and m.track_running_stats]


def calibration_batches(inputs: Tensor, batch_size: int) -> Iterator[tuple[Tensor, float]]:
    """The calibration batches in order, each with the momentum that keeps the running average
    weighted by sample count (1 for the first batch)."""
    seen = 0
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        seen += len(batch)
        yield batch, len(batch) / seen


@contextlib.contextmanager
def calibrating(model: nn.Module) -> Iterator[list[BatchNorm]]:
    """The model with only its BatchNorm layers in train mode; modes and momenta restored after.

    A batch of one sample that leaves a BatchNorm layer a single value per channel (it has no
    variance) is a one-line error.
    """
    norms = batchnorm_layers(model)
    modes = {id(m): m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.train()
    try:
        yield norms
    except ValueError as err:
        if "more than 1 value per channel" not in str(err):
            raise
        raise LwlcError(
            "a BatchNorm calibration batch holds a single sample, which has no variance: choose "
            "--bn-samples and --bn-batch-size so that no batch has one sample (the last batch "
            "holds what is left of --bn-samples)"
        ) from None
    finally:
        for m in model.modules():
            m.train(modes[id(m)])
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


@torch.no_grad()
def recalibrated_state(
    model: nn.Module, state: Mapping[str, Tensor], inputs: Tensor, batch_size: int
) -> dict[str, Tensor]:
    """``state`` with its BatchNorm statistics recomputed on ``inputs`` by the procedure above."""
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    device = next((t.device for t in state.values()), torch.device("cpu"))
    with calibrating(net) as norms:
        for m in norms:
            m.reset_running_stats()
        for batch, momentum in calibration_batches(inputs, batch_size):
            for m in norms:
                m.momentum = momentum
            net(batch.to(device))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
