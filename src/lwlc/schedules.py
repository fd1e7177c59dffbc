"""Learning-rate schedules of the paper that torch lacks, configurable by ``class_path``.

The paper's other schedules are torch's own: VGG-11 halves the rate every 30 epochs
(``torch.optim.lr_scheduler.StepLR`` with ``step_size: 30, gamma: 0.5``) and MobileNet multiplies
it by 0.1 at 50% and 75% of training (``MultiStepLR`` with ``milestones: [E/2, 3E/4]``).
"""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lwlc.errors import LwlcError


def warmup_cosine_factor(
    epoch: int, warmup_epochs: int, total_epochs: int, start_factor: float
) -> float:
    """The rate multiplier at ``epoch``: linear from ``start_factor`` to 1, then cosine to 0."""
    if epoch < warmup_epochs:
        return start_factor + (1.0 - start_factor) * epoch / warmup_epochs
    progress = min(1.0, (epoch - warmup_epochs) / (total_epochs - warmup_epochs))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(LambdaLR):
    """Linear warm-up from ``lr * start_factor`` to ``lr`` over ``warmup_epochs``, then cosine to 0.

    Stepped once per epoch (Lightning's default interval). The paper's ResNet-18 schedule,
    1e-4 -> 0.05, is ``lr: 0.05`` with ``start_factor: 0.002``.

    Args:
        optimizer: The optimizer whose rate is scheduled.
        warmup_epochs: Epochs of linear warm-up.
        total_epochs: Epoch at which the rate reaches 0 (set it to trainer.max_epochs).
        start_factor: The first epoch's rate as a fraction of the optimizer's lr.
        last_epoch: The index of the last epoch (-1: start afresh).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: int = 5,
        total_epochs: int = 200,
        start_factor: float = 0.002,
        last_epoch: int = -1,
    ) -> None:
        if warmup_epochs < 0:
            raise LwlcError(f"WarmupCosine: warmup_epochs={warmup_epochs} must be >= 0")
        if total_epochs <= warmup_epochs:
            raise LwlcError(
                f"WarmupCosine: total_epochs={total_epochs} must exceed "
                f"warmup_epochs={warmup_epochs}; set total_epochs to trainer.max_epochs"
            )
        if not 0.0 < start_factor <= 1.0:
            raise LwlcError(f"WarmupCosine: start_factor={start_factor} must be in (0, 1]")
        self.warmup_epochs = warmup_epochs
        self.total_epochs = total_epochs
        self.start_factor = start_factor

        def factor(epoch: int) -> float:
            return warmup_cosine_factor(epoch, warmup_epochs, total_epochs, start_factor)

        super().__init__(optimizer, factor, last_epoch=last_epoch)
