"""The typed Progress reads and writes the wire form the envelopes and ledger items have always had."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recurse_lambda.core.progress import Progress

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def test_an_old_progress_loads_and_writes_back_the_same() -> None:
    # As written by version 0.1 (before the typed Progress): no "learned", a pin, a plan.
    old = {
        "state": {"offset": 5},
        "chunks": 3,
        "pins": {"b/k": {"etag": '"e"', "version_id": None, "size": 9}},
        "shards": {"count": 2, "parts": [[], []], "started": True},
    }
    progress = Progress.from_json(old)
    assert progress.chunks == 3 and progress.shards == old["shards"] and progress.learned is None
    assert progress.to_json() == old


@given(
    state=json_values,
    chunks=st.integers(0, 10**9),
    other=st.dictionaries(st.sampled_from(["future", "x"]), json_values, max_size=2),
)
def test_unknown_keys_survive_a_round_trip(state: object, chunks: int, other: dict[str, object]) -> None:
    wire = {**other, "state": state, "chunks": chunks, "pins": {}}
    assert Progress.from_json(wire).to_json() == wire


@pytest.mark.parametrize("bad", [None, [], {"chunks": 1}, "state"])
def test_a_progress_without_state_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="state"):
        Progress.from_json(bad)
