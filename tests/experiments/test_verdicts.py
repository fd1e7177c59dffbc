"""The reproduction's verdict rules on made-up numbers: every rule can say each of its words."""

import pytest

from lwlc import verdicts
from lwlc.verdicts import NO_BARRIER, NOT, PARTLY, REPRODUCED


@pytest.mark.parametrize(
    ("full", "single", "word"),
    [
        (1.2, 0.05, REPRODUCED),  # under a third and inside the 0.1 band
        (1.2, 0.3, PARTLY),  # under a third (0.4) but outside the band
        (0.25, 0.09, PARTLY),  # inside the band but more than a third (0.083)
        (1.8, 2.6, NOT),  # the stem alone as bad as the whole model (issue 25)
        (0.06, 0.01, NO_BARRIER),  # connected models test nothing
        (float("nan"), 0.01, NO_BARRIER),
    ],
)
def test_single_layer_rule(full: float, single: float, word: str) -> None:
    assert verdicts.single_layer(full, single) == word
    assert verdicts.through_training(full, single) == word


@pytest.mark.parametrize(
    ("sides", "word"),
    [
        ([(0.05, False), (0.1, False)], REPRODUCED),
        ([(0.05, False), (0.5, False)], PARTLY),  # back's outermost layer alone is 50%
        ([(0.05, True), (0.05, True)], NOT),  # half the full barrier passed at once
        ([(0.9, False), (0.9, False)], NOT),
    ],
)
def test_cumulative_rule(sides: list[tuple[float, bool]], word: str) -> None:
    assert verdicts.cumulative(1.0, sides) == word
    assert verdicts.cumulative(0.05, sides) == NO_BARRIER


@pytest.mark.parametrize(
    ("wins", "word"),
    [
        ([], REPRODUCED),
        (["extreme"], REPRODUCED),  # the most skewed split is allowed
        (["non-iid"], PARTLY),
        (["non-iid", "extreme"], PARTLY),
        (["iid", "non-iid", "extreme"], NOT),  # 3 of 4 against a rule allowing 1
        (["iid", "non-iid", "dirichlet"], NOT),
    ],
)
def test_federated_rule(wins: list[str], word: str) -> None:
    assert verdicts.federated(wins, ["iid", "non-iid", "dirichlet", "extreme"]) == word


@pytest.mark.parametrize(
    ("rule", "args", "word"),
    [
        (verdicts.robustness, (5, 5), REPRODUCED),
        (verdicts.robustness, (3, 5), PARTLY),
        (verdicts.robustness, (2, 5), NOT),
        (verdicts.robustness, (0, 0), NOT),
        (verdicts.subspace, (2.5,), REPRODUCED),
        (verdicts.subspace, (1.5,), PARTLY),
        (verdicts.subspace, (0.9,), NOT),
        (verdicts.deep_linear, (True, 0.5), REPRODUCED),
        (verdicts.deep_linear, (True, 0.01), PARTLY),
        (verdicts.deep_linear, (False, 0.01), NOT),
    ],
)
def test_other_rules_reach_every_word(rule, args: tuple, word: str) -> None:
    assert rule(*args) == word


def test_seeds_agree_on_the_most_common_word_and_a_tie_goes_to_the_weaker() -> None:
    assert verdicts.agree([REPRODUCED, NOT, REPRODUCED]) == (REPRODUCED, 2)
    assert verdicts.agree([REPRODUCED, NOT]) == (NOT, 1)
    assert verdicts.agree([PARTLY, REPRODUCED, NOT]) == (NOT, 1)
    assert verdicts.seeds_phrase(2, 3) == "2 of 3 seeds agree"
    assert verdicts.seeds_phrase(1, 1) == "1 seed"


def test_every_printed_rule_names_its_not() -> None:
    for name, words in verdicts.RULES.items():
        assert "not" in words, name


@pytest.mark.parametrize(
    ("fraction", "excess", "versus_full", "word"),
    [
        (0.6, 0.04, -0.5, REPRODUCED),  # averages most, holds held out, beats the full average
        (0.0, 0.0, -0.5, PARTLY),  # nothing fits: the endpoint itself
        (0.6, 0.3, -0.1, PARTLY),  # over twice the budget held out: the choice overfit
        (0.6, 0.3, 0.2, PARTLY),
        (0.0, 0.3, 0.2, NOT),
    ],
)
def test_selection_rule_yields_each_word(fraction, excess, versus_full, word) -> None:
    assert verdicts.selection(fraction, excess, 0.05, versus_full) == word
