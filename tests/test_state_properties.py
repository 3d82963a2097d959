"""Property: a chain's result never depends on where its hops fall, or its state model is refused up front.

State models are drawn with aliases of every kind, ``populate_by_name``, excluded fields, computed fields and
non-finite floats; the work is a random sequence of updates, and the hops fall at random points.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, computed_field, create_model

from recurse_lambda import ConfigurationError, after_chunks, recursive
from recurse_lambda.local import VirtualClock
from tests.conftest import simulate

FLOATS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
)


def alias_kwargs(kind: str, name: str) -> dict[str, Any]:
    return {
        "none": {},
        "alias": {"alias": name.upper()},
        "serialization": {"serialization_alias": f"s_{name}"},
        "validation": {"validation_alias": f"v_{name}"},
        "choices": {"validation_alias": AliasChoices(f"a_{name}", f"b_{name}")},
        "both": {"serialization_alias": f"s_{name}", "validation_alias": f"v_{name}"},
    }[kind]


@st.composite
def state_models(draw: st.DrawFn) -> tuple[type[BaseModel], bool]:
    kinds = st.sampled_from(["none", "alias", "serialization", "validation", "choices", "both"])
    fields: dict[str, Any] = {
        "i": (int, Field(0, **alias_kwargs(draw(kinds), "i"))),
        "best": (float, Field(draw(FLOATS), **alias_kwargs(draw(kinds), "best"))),
        "seen": (list[float], Field(default_factory=list, **alias_kwargs(draw(kinds), "seen"))),
        "total": (float, Field(0.0, **alias_kwargs(draw(kinds), "total"))),
    }
    excluded = draw(st.booleans())
    if excluded:
        fields["scratch"] = (int, Field(0, exclude=True))
    base: type[BaseModel] = BaseModel
    if draw(st.booleans()):

        class WithComputed(BaseModel):
            @computed_field  # type: ignore[prop-decorator]
            @property
            def label(self) -> str:
                return "computed"

        base = WithComputed
    config = ConfigDict(
        populate_by_name=draw(st.booleans()), extra=draw(st.sampled_from(["ignore", "forbid"]))
    )
    model = create_model("Drawn", __base__=base, **fields)
    model.model_config.update(config)
    model.model_rebuild(force=True)
    return model, excluded


def key(x: float) -> str:
    return repr(x)  # nan, inf and -0.0 spelled out: a result must be JSON, and NaN != NaN


def run_chain(model: type[BaseModel], updates: list[float], every: int) -> tuple[str, Any]:
    clock = VirtualClock()

    @recursive(state=model, policy=after_chunks(every))
    def handler(event: Any, state: Any, run: Any):
        while state.i < len(updates):
            clock.advance(0.1)
            v = updates[state.i]
            state.best = v if not (state.best >= v) else state.best  # NaN-aware running "maximum"
            state.seen.append(v)
            state.total += 0.0 if math.isnan(v) or math.isinf(v) else v
            if hasattr(state, "scratch"):
                state.scratch += 1
            state.i += 1
            yield
        return [key(state.best), [key(x) for x in state.seen], key(state.total), state.i]

    report = simulate(handler, timeout=60, clock=clock).run({})
    return report.status, report.result if report.status == "SUCCEEDED" else report.error


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=state_models(), updates=st.lists(FLOATS, min_size=1, max_size=8), every=st.integers(1, 4))
def test_the_result_equals_the_one_hop_result_or_the_model_is_refused_at_decoration(
    drawn: tuple[type[BaseModel], bool], updates: list[float], every: int
) -> None:
    model, excluded = drawn
    try:
        recursive(state=model)
    except ConfigurationError as exc:
        assert excluded and "scratch" in str(exc)  # only an excluded field is refused
        return
    assert not excluded
    one_hop = run_chain(model, updates, every=1000)
    assert one_hop[0] == "SUCCEEDED", one_hop
    assert run_chain(model, updates, every) == one_hop
