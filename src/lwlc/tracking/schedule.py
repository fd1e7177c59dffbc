"""When the barrier Callback evaluates, and when it redraws its figures: counts of completed
epochs, optimizer steps and evaluations, never wall-clock time (a loaded machine must not make
the Callback draw more often than the measurement it shows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lwlc.core.errors import LwlcError


def _check_count(name: str, value: int | None, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        none = " or None" if optional else ""
        raise LwlcError(f"LayerwiseBarrierCallback {name}={value!r} must be an integer >= 1{none}")


@dataclass(frozen=True)
class Schedule:
    """Evaluate after every ``every_n_epochs``-th completed epoch (0, the initialisation,
    included), every ``every_n_steps`` optimizer steps, after each of ``at_epochs`` and, with
    ``at_fit_end``, when training ends; redraw figures every ``media_every`` evaluations (the
    last one always)."""

    every_n_epochs: int | None = 1
    every_n_steps: int | None = None
    at_epochs: Sequence[int] = field(default_factory=list)
    at_fit_end: bool = True
    media_every: int = 5

    def __post_init__(self) -> None:
        _check_count("every_n_epochs", self.every_n_epochs)
        _check_count("every_n_steps", self.every_n_steps)
        _check_count("media_every", self.media_every, optional=False)
        bad = [e for e in self.at_epochs if not isinstance(e, int) or isinstance(e, bool) or e < 0]
        if bad:
            raise LwlcError(
                f"LayerwiseBarrierCallback at_epochs holds {bad[0]!r}; give counts of "
                "completed epochs >= 0 (0 = before training)"
            )
        object.__setattr__(self, "at_epochs", sorted(set(self.at_epochs)))
        if not (self.every_n_epochs or self.every_n_steps or self.at_epochs or self.at_fit_end):
            raise LwlcError(
                "LayerwiseBarrierCallback has nothing scheduled: set every_n_epochs, "
                "every_n_steps, at_epochs or at_fit_end"
            )

    def should_evaluate(self, step: int | None = None, epoch: int | None = None) -> bool:
        """Whether to evaluate after optimizer step ``step`` or after ``epoch`` completed epochs
        (one of the two is given, as Lightning's ``WeightAveraging.should_update``)."""
        if epoch is not None:
            every = self.every_n_epochs
            return epoch in self.at_epochs or bool(every and epoch % every == 0)
        return bool(step is not None and self.every_n_steps and step % self.every_n_steps == 0)

    def should_draw(self, evaluations: int) -> bool:
        """Whether to redraw the figures after the ``evaluations``-th evaluation (1, 2, ...)."""
        return evaluations % self.media_every == 0
