"""Learning-rate schedules of the paper that follow the run's length, chosen by ``class_path``.

A ``RunSchedule`` gives the rate multiplier as a function of the fraction of training done and
is stepped after every optimizer step. ``lwlc fit`` sets its length to the trainer's
``estimated_stepping_batches`` (``trainer.max_epochs`` x batches per epoch, or
``trainer.max_steps``), so ``--trainer.max_epochs 1`` and ``--trainer.max_epochs 200`` draw the
same shape: the paper's ResNet-18 schedule (``WarmupCosine``) and its VGG-11 schedule
(``StepDecay``, halved every 30 of 200 epochs). Torch's own schedulers (``StepLR``, ...) count
epochs as they are told and keep those counts whatever the run's length.
"""

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lwlc.core.errors import LwlcError

# What a checkpoint keeps of a RunSchedule: LambdaLR's own counters and rates. The run's length
# and the shape come from the run that loads it, so that a resumed run follows its own config.
OWN_SETTINGS = (
    "total_steps", "warmup", "warmup_steps", "start_factor", "every", "gamma", "milestones",
)  # fmt: skip


def warmup_cosine_factor(progress: float, warmup: float, start_factor: float) -> float:
    """The rate multiplier after ``progress`` (0 to 1) of training: linear from ``start_factor``
    to 1 over the first ``warmup`` of it, then a cosine to 0 at its end."""
    if progress < warmup:
        return start_factor + (1.0 - start_factor) * progress / warmup
    rest = min(1.0, (progress - warmup) / (1.0 - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * rest))


def step_decay_factor(progress: float, every: float, gamma: float) -> float:
    """The rate multiplier after ``progress`` (0 to 1) of training: ``gamma`` once per ``every``
    of it (the tolerance keeps 30 steps of 200 at exactly 0.15)."""
    return gamma ** math.floor(progress / every + 1e-9)


class RunSchedule(LambdaLR):
    """A multiplier of the optimizer's lr that depends on the fraction of training done.

    Stepped after every optimizer step (``interval: step``); ``total_steps`` is the number of
    steps of the whole run, set by ``lwlc fit`` from the trainer when not given.

    Args:
        optimizer: The optimizer whose rate is scheduled.
        total_steps: Optimizer steps of the whole run; None: the trainer's (``lwlc fit``).
        last_epoch: The index of the last step (-1: start afresh).
    """

    def __init__(
        self, optimizer: Optimizer, total_steps: int | None = None, last_epoch: int = -1
    ) -> None:
        self.total_steps: int | None = None
        if total_steps is not None:
            self.follow(total_steps)

        def multiplier(step: int) -> float:
            if self.total_steps is None:
                if step == 0:  # the first rate does not depend on the run's length
                    return self.factor(0.0)
                raise LwlcError(
                    f"{type(self).__name__} does not know the run's length: give total_steps, "
                    "or train with lwlc fit (which sets it from the trainer)"
                )
            return self.factor(min(1.0, step / self.total_steps))

        super().__init__(optimizer, multiplier, last_epoch=last_epoch)

    def factor(self, progress: float) -> float:
        """The multiplier after ``progress`` (0 to 1) of training."""
        raise NotImplementedError

    def follow(self, total_steps: float) -> None:
        """Spread the schedule over ``total_steps`` optimizer steps (the trainer's estimate)."""
        if not (math.isfinite(total_steps) and total_steps >= 1):
            length = "no end" if math.isinf(total_steps) else f"{total_steps} optimizer steps"
            raise LwlcError(
                f"{type(self).__name__} spans the whole run, but this run has {length}: set "
                "trainer.max_epochs (or trainer.max_steps), or the schedule's total_steps"
            )
        self.total_steps = int(total_steps)

    def state_dict(self) -> dict[str, Any]:
        """LambdaLR's state less the run's length and shape (the loading run's config sets them)."""
        return {k: v for k, v in super().state_dict().items() if k not in OWN_SETTINGS}


def lightning_entry(scheduler: RunSchedule, trainer: Any) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry for ``scheduler``: spread over the trainer's optimizer
    steps (``estimated_stepping_batches``) unless its total_steps is set, stepped after each."""
    if scheduler.total_steps is None:
        scheduler.follow(trainer.estimated_stepping_batches)
    return {"scheduler": scheduler, "interval": "step"}


class WarmupCosine(RunSchedule):
    """Linear warm-up from ``lr * start_factor`` to ``lr`` over the first ``warmup`` of the run,
    then a cosine to 0 at its end.

    The paper's ResNet-18 schedule, 1e-4 -> 0.05 over 5 of 200 epochs, then cosine, is
    ``lr: 0.05`` with ``warmup: 0.025`` and ``start_factor: 0.002``. The authors' code warms up
    over 100 optimizer steps whatever the run's length: ``warmup_steps: 100``.

    Args:
        optimizer: The optimizer whose rate is scheduled.
        warmup: Fraction of the run spent warming up, in [0, 1).
        start_factor: The first step's rate as a fraction of the optimizer's lr, in (0, 1].
        warmup_steps: Optimizer steps of warm-up instead of ``warmup`` (None: use ``warmup``).
        total_steps: Optimizer steps of the whole run; None: the trainer's (``lwlc fit``).
        last_epoch: The index of the last step (-1: start afresh).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup: float = 0.025,
        start_factor: float = 0.002,
        total_steps: int | None = None,
        last_epoch: int = -1,
        warmup_steps: int | None = None,
    ) -> None:
        if warmup_steps is not None and warmup_steps < 0:
            raise LwlcError(f"WarmupCosine: warmup_steps={warmup_steps} must be >= 0")
        self.warmup_steps = warmup_steps
        if not 0.0 <= warmup < 1.0:
            raise LwlcError(
                f"WarmupCosine: warmup={warmup} must be a fraction of the run in [0, 1) "
                "(the paper's 5 of 200 epochs: 0.025)"
            )
        if not 0.0 < start_factor <= 1.0:
            raise LwlcError(f"WarmupCosine: start_factor={start_factor} must be in (0, 1]")
        self.warmup = warmup
        self.start_factor = start_factor
        super().__init__(optimizer, total_steps, last_epoch)

    def follow(self, total_steps: float) -> None:
        """As RunSchedule's; with ``warmup_steps`` the warm-up is that share of the run."""
        super().follow(total_steps)
        if self.warmup_steps is not None:
            if self.warmup_steps >= int(total_steps):
                raise LwlcError(
                    f"WarmupCosine: warmup_steps={self.warmup_steps} must be fewer than the "
                    f"run's {int(total_steps)} optimizer steps"
                )
            self.warmup = self.warmup_steps / int(total_steps)

    def factor(self, progress: float) -> float:
        return warmup_cosine_factor(progress, self.warmup, self.start_factor)


class StepDecay(RunSchedule):
    """The rate times ``gamma`` after every ``every`` of the run.

    The paper's VGG-11 schedule, halved every 30 of 200 epochs, is ``every: 0.15`` with
    ``gamma: 0.5`` (over 200 epochs: halved at epochs 30, 60, ..., 180, as ``StepLR``).

    Args:
        optimizer: The optimizer whose rate is scheduled.
        every: Fraction of the run between two decays, in (0, 1].
        gamma: Multiplier of each decay, in (0, 1].
        total_steps: Optimizer steps of the whole run; None: the trainer's (``lwlc fit``).
        last_epoch: The index of the last step (-1: start afresh).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        every: float = 0.15,
        gamma: float = 0.5,
        total_steps: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        if not 0.0 < every <= 1.0:
            raise LwlcError(
                f"StepDecay: every={every} must be a fraction of the run in (0, 1] "
                "(the paper's 30 of 200 epochs: 0.15)"
            )
        if not 0.0 < gamma <= 1.0:
            raise LwlcError(f"StepDecay: gamma={gamma} must be in (0, 1]")
        self.every = every
        self.gamma = gamma
        super().__init__(optimizer, total_steps, last_epoch)

    def factor(self, progress: float) -> float:
        return step_decay_factor(progress, self.every, self.gamma)


class MultiStepDecay(RunSchedule):
    """The rate times ``gamma`` at each of ``milestones`` (fractions of the run).

    The paper's MobileNet schedule, ``MultiStepLR`` at 50% and 75% of the epochs with gamma 0.1,
    is ``milestones: [0.5, 0.75]`` with ``gamma: 0.1``.

    Args:
        optimizer: The optimizer whose rate is scheduled.
        milestones: Fractions of the run in (0, 1] at which the rate is multiplied by ``gamma``.
        gamma: Multiplier of each decay, in (0, 1].
        total_steps: Optimizer steps of the whole run; None: the trainer's (``lwlc fit``).
        last_epoch: The index of the last step (-1: start afresh).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: list[float] | None = None,
        gamma: float = 0.1,
        total_steps: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        chosen = [0.5, 0.75] if milestones is None else list(milestones)
        if not all(0.0 < m <= 1.0 for m in chosen):
            raise LwlcError(f"MultiStepDecay: milestones={chosen} must be fractions in (0, 1]")
        if not 0.0 < gamma <= 1.0:
            raise LwlcError(f"MultiStepDecay: gamma={gamma} must be in (0, 1]")
        self.milestones = sorted(chosen)
        self.gamma = gamma
        super().__init__(optimizer, total_steps, last_epoch)

    def factor(self, progress: float) -> float:
        passed = sum(progress + 1e-9 >= m for m in self.milestones)
        return self.gamma**passed
