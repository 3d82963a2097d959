"""Budget policies, tested on hand-built states (no runner, no clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recurse_lambda import (
    BudgetState,
    ChunkTimings,
    ChunkTooLargeError,
    HandOffTimings,
    after_chunks,
    fixed_margin,
    predictive,
)


def state(
    remaining: float, *, budget: float = 60.0, chunks: list[float] = (0.1,), handoff: float | None = 0.15
):
    timings = ChunkTimings()
    for c in chunks:
        timings.add(c)
    hand = HandOffTimings()
    if handoff is not None:
        hand.add(handoff)
    return BudgetState(budget=budget, remaining=remaining, chunks=len(chunks), timings=timings, handoff=hand)


def test_predictive_continues_while_the_predicted_chunk_fits_before_the_reserve():
    policy = predictive(factor=2.0, handoff_factor=1.5, floor=0.1)
    # predicted = 2 × 0.1 = 0.2; reserve = 1.5 × 0.15 + 0.1 = 0.325
    assert policy(state(0.53)) is False
    assert policy(state(0.52)) is True


def test_predictive_uses_the_recent_maximum_not_the_last_chunk():
    policy = predictive(factor=2.0, handoff_factor=1.0, floor=0.0)
    s = state(1.85, chunks=[0.1, 0.9, 0.1], handoff=0.1)  # predicted 1.8 > 1.85 - reserve 0.1
    assert policy(s) is True
    assert policy(state(1.85, chunks=[0.1, 0.1, 0.1], handoff=0.1)) is False


def test_predictive_caps_the_unmeasured_handoff_default_at_five_percent_of_the_budget():
    policy = predictive(factor=1.0, handoff_factor=1.0, floor=0.0)
    s = state(0.3, budget=1.0, chunks=[0.2], handoff=None)  # default 1 s capped to 0.05 s
    assert policy(s) is False
    s = state(30.0, budget=60.0, chunks=[0.2], handoff=None)  # 1 s default applies: 30 - 1 >= 0.2
    assert policy(s) is False
    assert policy(state(1.1, budget=60.0, chunks=[0.2], handoff=None)) is True


def test_a_chunk_longer_than_the_whole_budget_is_an_error_that_says_so():
    with pytest.raises(ChunkTooLargeError, match="smaller chunks") as raised:
        predictive()(state(1.0, budget=60.0, chunks=[60.5]))
    assert (raised.value.chunk_s, raised.value.budget_s) == (60.5, 60.0)


def test_a_chunk_that_completed_never_raises_however_little_room_the_reserve_leaves():
    # 0.689 s seen, 0.630 s left after the reserve: the chunk completed in an invocation, so it fits in one.
    assert predictive()(state(0.2, budget=1.0, chunks=[0.689], handoff=0.2)) is True
    assert predictive()(state(59.0, budget=60.0, chunks=[59.9])) is True


def test_a_chunk_that_fits_once_but_not_twice_gives_one_chunk_hops():
    policy = predictive()
    assert policy(state(60.0 - 40.0, budget=60.0, chunks=[40.0])) is True  # hand off after it, no error


def test_fixed_margin_and_after_chunks():
    assert fixed_margin(10)(state(9.99)) is True
    assert fixed_margin(10)(state(10.0)) is False
    assert after_chunks(3)(state(100, chunks=[0.1, 0.1])) is False
    assert after_chunks(3)(state(100, chunks=[0.1, 0.1, 0.1])) is True


def test_policies_combine_with_or_and_and():
    either = after_chunks(2) | fixed_margin(10)
    both = after_chunks(2) & fixed_margin(10)
    assert either(state(5.0, chunks=[0.1])) is True
    assert either(state(50.0, chunks=[0.1])) is False
    assert both(state(5.0, chunks=[0.1])) is False
    assert both(state(5.0, chunks=[0.1, 0.1])) is True
    assert repr(either) == "after_chunks(2) | fixed_margin(10)"


@pytest.mark.parametrize("bad", [dict(factor=0.5), dict(handoff_factor=0.9), dict(floor=-1)])
def test_predictive_rejects_nonsense_parameters(bad):
    with pytest.raises(ValueError):
        predictive(**bad)


@given(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=300),
    st.integers(1, 40),
)
def test_chunk_timings_max_is_the_max_of_the_window(durations, window):
    timings = ChunkTimings(window=window)
    for i, d in enumerate(durations):
        timings.add(d)
        assert timings.max == max(durations[max(0, i + 1 - window) : i + 1])
    assert timings.count == len(durations)
    assert len(timings) == min(window, len(durations))


def test_chunk_timings_quantile():
    timings = ChunkTimings()
    assert timings.quantile(0.9) == 0.0
    for d in range(1, 101):
        timings.add(float(d))
    assert timings.quantile(0.5) == 51.0
    assert timings.quantile(1.0) == 100.0


def test_handoff_timings_estimate_is_the_recent_worst_or_the_default():
    h = HandOffTimings(default=1.0, window=2)
    assert (h.estimate, h.measured) == (1.0, False)
    h.add(0.3)
    h.add(0.1)
    assert h.estimate == 0.3
    h.add(0.2)  # 0.3 left the window
    assert h.estimate == 0.2


def test_a_slow_measured_hand_off_gives_short_hops_not_a_failed_chain():
    policy = predictive(factor=2.0, handoff_factor=1.5, floor=0.1)
    slow = state(0.2, budget=0.3, chunks=[0.1], handoff=0.17)  # reserve 0.27: nothing would fit beside it
    assert policy(slow) is True  # hand off after the chunk, no ChunkTooLargeError
    assert policy(state(0.1, budget=0.3, chunks=[0.16], handoff=0.17)) is True  # it completed: it fits


def test_predictive_notices_a_new_hand_off_measurement_and_a_new_budget():
    policy = predictive(factor=1.0, handoff_factor=1.0, floor=0.0)
    s = state(0.5, budget=60.0, chunks=[0.1], handoff=0.1)  # reserve 0.1: 0.5 - 0.1 >= 0.1
    assert policy(s) is False
    s.handoff.add(0.45)  # the hand-off got slower: the reserve must follow
    assert policy(s) is True
    s2 = state(0.5, budget=1.0, chunks=[0.1], handoff=None)  # another container, unmeasured: reserve 0.05
    assert policy(s2) is False


def test_caution_doubles_the_reserve_and_the_prediction_per_failed_attempt_up_to_eight_times():
    policy = predictive(factor=1.0, handoff_factor=1.0, floor=0.0)
    s = state(1.0, budget=60.0, chunks=[0.1], handoff=0.2)  # 1.0 - 0.2 >= 0.1
    assert policy(s) is False
    s.caution = 2  # 1.0 - 0.8 < 0.4
    assert policy(s) is True
    s.remaining = 1.21  # 1.21 - 0.8 >= 0.4
    assert policy(s) is False
    s.caution = 9  # capped at 8x: 1.21 - 1.6 < 0.8
    assert policy(s) is True


def test_a_learned_hand_off_replaces_the_default_until_this_runtime_measures_one():
    h = HandOffTimings(default=1.0)
    assert h.estimate_for(60.0) == 1.0 and h.known is None
    h.seed(0.3)  # carried in the chain's progress from another runtime
    assert (h.estimate, h.estimate_for(60.0), h.known, h.measured) == (0.3, 0.3, 0.3, False)
    h.add(0.2)  # measured here: the seed no longer counts
    assert (h.estimate, h.known) == (0.2, 0.2)


def test_a_hand_off_floor_raises_the_estimate_and_is_noticed_by_the_policy():
    h = HandOffTimings(default=1.0)
    version = h.version
    h.floor(0.1)
    assert h.version != version
    assert h.estimate_for(1.0) == 0.1  # the 5 % default (0.05 s) is below the ledger write just measured
    h.add(0.05)
    assert h.estimate == 0.1
    policy = predictive(factor=1.0, handoff_factor=1.0, floor=0.0)
    s = state(0.5, budget=1.0, chunks=[0.1], handoff=None)
    assert policy(s) is False  # reserve 0.05
    s.handoff.floor(0.45)  # reserve 0.45: 0.5 - 0.45 < 0.1
    assert policy(s) is True
