"""Seed 002's greedy block-wise split, on an evaluator that is a plain function of the factors."""

from __future__ import annotations

import pytest

from splitsearch.search.strategies import greedy_block_split

# Points of accuracy each block loses at each split factor; the evaluator adds them up.
LOSS = [
    {2: 0.1, 4: 0.2, 6: 0.4, 8: 0.45},  # block 0 takes every factor: keeps 8
    {2: 0.0, 4: 0.3, 6: 0.0, 8: 0.0},  # block 1 fails at 4; 6 and 8 would pass but are never tried
    {2: 0.9, 4: 0.0, 6: 0.0, 8: 0.0},  # block 2 fails at once: stays 1
]


def evaluate_with(calls: list[tuple[int, ...]], starts: list | None = None):
    def evaluate(factors: tuple[int, ...], start_from: tuple[int, ...] | None) -> float:
        calls.append(factors)
        if starts is not None:
            starts.append(start_from)
        return 0.90 - sum(LOSS[block][k] for block, k in enumerate(factors) if k > 1) / 100

    return evaluate


def test_each_block_keeps_the_last_factor_before_the_first_that_drops_too_much():
    calls: list[tuple[int, ...]] = []
    starts: list = []
    reported: list = []
    result = greedy_block_split(3, evaluate_with(calls, starts), threshold=0.5, on_step=reported.append)
    assert reported == list(result.steps)  # each step is reported as soon as it is decided
    assert calls == [
        (1, 1, 1),  # the baseline
        (2, 1, 1), (4, 1, 1), (6, 1, 1), (8, 1, 1),  # block 0: drops 0.1, 0.2, 0.4, 0.45 all < 0.5
        (8, 2, 1), (8, 4, 1),  # block 1 on top of block 0's 8: 0.45 + 0.0 passes, 0.45 + 0.3 stops
        (8, 2, 2),  # block 2: 0.45 + 0.9 stops at once
    ]
    assert result.factors == (8, 2, 1)
    # Each candidate starts from the network chosen so far (the paper fine-tunes it).
    assert starts == [None, (1, 1, 1), (2, 1, 1), (4, 1, 1), (6, 1, 1), (8, 1, 1), (8, 2, 1), (8, 2, 1)]
    assert [step.accepted for step in result.steps] == [True, True, True, True, True, False, False]
    assert result.baseline_accuracy == pytest.approx(0.90)
    assert result.drop_points == pytest.approx(0.45)
    assert result.steps[5].drop_points == pytest.approx(0.75)


def test_the_threshold_is_in_points_and_strict():
    # 0.5 -> 0.25 is a drop of exactly 25 points (binary fractions: no rounding anywhere).
    def evaluate(factors: tuple[int, ...], start_from: tuple[int, ...] | None) -> float:
        return 0.5 if factors == (1, 1) else 0.25

    assert greedy_block_split(2, evaluate, threshold=25.0, factors=(2,)).factors == (1, 1)
    assert greedy_block_split(2, evaluate, threshold=25.001, factors=(2,)).factors == (2, 2)


def test_a_candidate_that_cannot_be_trained_ends_its_block():
    def evaluate(factors: tuple[int, ...], start_from: tuple[int, ...] | None) -> float | None:
        return None if factors[0] == 4 else 0.8

    result = greedy_block_split(2, evaluate, factors=(2, 4, 8))
    assert result.factors == (2, 8)
    assert result.steps[1].accuracy is None and not result.steps[1].accepted


@pytest.mark.parametrize("factors, threshold", [((4, 2), 0.5), ((1, 2), 0.5), ((), 0.5), ((2, 4), -1.0)])
def test_bad_settings_are_refused(factors, threshold):
    with pytest.raises(ValueError):
        greedy_block_split(2, lambda f, start: 0.5, threshold=threshold, factors=factors)


def test_an_untrainable_baseline_is_refused():
    with pytest.raises(ValueError, match="baseline"):
        greedy_block_split(2, lambda f, start: None)
