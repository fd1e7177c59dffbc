"""The reproduction's verdict rules: from an experiment's numbers to "reproduced", "partly", "not".

Each rule is a pure function of the numbers one run (one seed) gave, so that every word of
``experiments/REPRODUCTION.md`` can be recomputed and tested on made-up tables; ``agree``
combines the seeds of one pair into one word and says how many seeds gave it. Every rule can
fail: each has a ``not`` for numbers that contradict the paper's claim. ``RULES`` prints each
rule in words beside its verdict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

REPRODUCED, PARTLY, NOT, NO_BARRIER = "reproduced", "partly", "not", "no barrier to test"
# From the weakest word to the strongest: a tie between seeds goes to the weaker word.
STRENGTH = (NOT, PARTLY, NO_BARRIER, REPRODUCED)
# A full barrier below this (nats) is no test of a single-layer claim: the models are connected.
MIN_BARRIER = 0.1
# The paper's absolute band: every single layer's barrier within about +-0.1 nats.
SINGLE_BAND = 0.1
# The relative rule: the full barrier is at least this many times every single layer's.
RATIO = 3.0

RULES = {
    "single_layer": f"no barrier to test when the full midpoint loss barrier is below "
    f"{MIN_BARRIER} nats; else reproduced when the largest single-layer midpoint barrier is both "
    f"at most 1/{RATIO:g} of the full one (relative rule) and within the paper's band of "
    f"{SINGLE_BAND} nats (absolute rule), partly when only one of the two holds, not when neither",
    "through_training": f"as experiment 1 with the full barrier's peak over training and the "
    f"largest single-layer midpoint barrier at any epoch: both the relative rule (1/{RATIO:g}) and "
    f"the {SINGLE_BAND}-nat band hold: reproduced; one: partly; neither: not",
    "cumulative": "reproduced when, from the front and from the back, the outermost layer alone "
    "costs at most a fifth of the full midpoint barrier and the barrier passes half the full one "
    "only at a later layer; partly when this holds on one side; not when on neither",
    "deep_linear": "reproduced when every single-layer curve is convex (second differences >= 0 "
    "up to float error) and the full path barrier exceeds 0.1; partly when one holds; not when "
    "neither",
    "robustness": "reproduced when in every layer moving along the averaging direction raises "
    "the loss more than moving as far along random directions; partly when in at least half of "
    "the layers; not otherwise",
    "subspace": "reproduced when noise in the training subspace raises the mean test loss more "
    "than twice as much as noise of the same size in its orthogonal complement; partly when "
    "more, but not twice as much; not otherwise",
    "federated": "the claim allows partial averaging to beat FedAvg (clients' own tasks) only on "
    "the most skewed split: reproduced when it wins nowhere else; partly when it wins on one "
    "other split; not when on two or more others",
    "selection": "per seed, unaligned, budget 0.05 nats: (1) the search averages some layers, "
    "(2) the chosen model's held-out test loss is within twice the budget of the member the "
    "budget counts from, (3) it is no worse on held-out test loss than the full average; "
    "all three: reproduced, one or two: partly, none: not",
}


def two_rules(held: int, of: int = 2) -> str:
    """Every one of ``of`` conditions held: reproduced; some: partly; none: not."""
    return REPRODUCED if held == of else PARTLY if held > 0 else NOT


def single_layer(full: float, single: float) -> str:
    """Experiments 1 and 8: the full midpoint barrier against the largest single layer's."""
    if not full >= MIN_BARRIER:
        return NO_BARRIER
    return two_rules((single * RATIO <= full) + (single <= SINGLE_BAND))


def through_training(peak: float, single_any_epoch: float) -> str:
    """Experiment 2: the full barrier's peak against the largest single layer at any epoch."""
    return single_layer(peak, single_any_epoch)


def cumulative(full: float, sides: Sequence[tuple[float, bool]]) -> str:
    """Experiment 3: per side (front, back), the outermost layer's barrier alone and whether
    half the full barrier is first passed at that outermost layer."""
    if not full >= MIN_BARRIER:
        return NO_BARRIER
    held = sum(first <= 0.2 * full and not onset_first for first, onset_first in sides)
    return two_rules(held, len(sides))


def deep_linear(convex: bool, full_path_barrier: float) -> str:
    """Experiment 4: convex single-layer curves and a full-path barrier."""
    return two_rules(int(convex) + int(full_path_barrier > 0.1))


def robustness(worse: int, total: int) -> str:
    """Experiment 5: in how many of ``total`` layers averaging hurts more than random."""
    if total > 0 and worse == total:
        return REPRODUCED
    return PARTLY if 2 * worse >= total > 0 else NOT


def subspace(ratio: float) -> str:
    """Experiment 6: loss increase in the training subspace over that in its complement."""
    return REPRODUCED if ratio > 2 else PARTLY if ratio > 1 else NOT


def federated(wins: Sequence[str], splits: Sequence[str]) -> str:
    """Experiment 7: the splits where partial averaging beats FedAvg; ``splits`` run from the
    least to the most skewed, and only the last may be won."""
    beyond = [s for s in wins if s != splits[-1]]
    return REPRODUCED if not beyond else PARTLY if len(beyond) == 1 else NOT


def selection(fraction: float, test_excess: float, budget: float, versus_full: float) -> str:
    """Experiment 9: the share of parameters averaged, the chosen model's held-out loss above the
    budget's reference member, the budget, and its held-out loss minus the full average's."""
    held = (fraction > 0) + (test_excess <= 2 * budget) + (versus_full <= 0)
    return two_rules(held, 3)


def agree(words: Sequence[str]) -> tuple[str, int]:
    """The word most seeds gave (a tie: the weaker word) and how many seeds gave it."""
    counts = Counter(words)
    word = max(counts, key=lambda w: (counts[w], -STRENGTH.index(w)))
    return word, counts[word]


def seeds_phrase(count: int, total: int) -> str:
    """ "1 seed", or "2 of 3 seeds agree"."""
    return "1 seed" if total == 1 else f"{count} of {total} seeds agree"
