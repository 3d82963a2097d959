"""State must round-trip across a hand-off, or be refused clearly (issue 9, items 1, 3 and 4)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    computed_field,
    field_serializer,
    field_validator,
)

from recurse_lambda import ConfigurationError, after_chunks, recursive
from recurse_lambda.local import VirtualClock
from tests.conftest import simulate


def summing(clock: VirtualClock, model: type[BaseModel], every: int, field: str = "total", n: int = 6):
    """Adds 0..n-1 into ``state.<field>``, one number per chunk, handing off every ``every`` chunks."""

    @recursive(state=model, policy=after_chunks(every))
    def handler(event: Any, state: Any, run: Any):
        while state.i < n:
            clock.advance(0.1)
            setattr(state, field, getattr(state, field) + state.i)
            state.i += 1
            yield
        return getattr(state, field)

    return handler


def run_with_hops(model: type[BaseModel], every: int, **kw: Any) -> Any:
    clock = VirtualClock()
    report = simulate(summing(clock, model, every, **kw), timeout=60, clock=clock).run({})
    assert report.status == "SUCCEEDED", report.error
    return report.result


class Aliased(BaseModel):
    i: int = 0
    total: int = Field(0, alias="Total")


class SerAlias(BaseModel):
    i: int = 0
    total: int = Field(0, serialization_alias="TOTAL")


class ValAlias(BaseModel):
    i: int = Field(0, validation_alias=AliasChoices("I", "idx"))
    total: int = Field(0, validation_alias="t")


class ByName(BaseModel):
    model_config = ConfigDict(populate_by_name=True, alias_generator=str.upper)
    i: int = 0
    total: int = 0


class Inner(BaseModel):
    total: int = Field(0, alias="T")


class Nested(BaseModel):
    i: int = 0
    inner: Inner = Field(default_factory=Inner)


class Computed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    i: int = 0
    total: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return 2 * self.total


class RoundTripSerialiser(BaseModel):
    i: int = 0
    total: int = 0
    seen: set[int] = Field(default_factory=set)

    @field_serializer("seen")
    def _sorted(self, seen: set[int]) -> list[int]:
        return sorted(seen)


@pytest.mark.parametrize("model", [Aliased, SerAlias, ValAlias, ByName, Computed, RoundTripSerialiser])
def test_aliased_and_custom_serialised_fields_round_trip_whatever_the_hops(model: type[BaseModel]) -> None:
    # The example: Field(0, alias="Total") gave 15 in one hop and less with every extra hop.
    results = {every: run_with_hops(model, every) for every in (1, 2, 3, 100)}
    assert set(results.values()) == {15}, results


def test_a_nested_models_alias_round_trips() -> None:
    clock = VirtualClock()

    @recursive(state=Nested, policy=after_chunks(1))
    def handler(event: Any, state: Nested, run: Any):
        while state.i < 6:
            clock.advance(0.1)
            state.inner.total += state.i
            state.i += 1
            yield
        return state.inner.total

    report = simulate(handler, timeout=60, clock=clock).run({})
    assert report.result == 15 and report.hops > 5


def test_an_excluded_field_is_refused_when_the_decorator_is_applied() -> None:
    class Excluded(BaseModel):
        i: int = 0
        scratch: int = Field(0, exclude=True)

    with pytest.raises(ConfigurationError, match=r"Excluded\.scratch has exclude=True"):
        recursive(state=Excluded)(lambda event, state, run: None)

    class Holder(BaseModel):
        items: list[Excluded] = []

    with pytest.raises(ConfigurationError, match=r"Excluded\.scratch"):
        recursive(state=Holder)


def test_a_serialiser_that_does_not_validate_back_is_refused_at_decoration_naming_the_field() -> None:
    class Tagged(BaseModel):
        count: int = 0

        @field_serializer("count")
        def _tag(self, count: int) -> str:
            return f"n{count}"

    with pytest.raises(ConfigurationError, match=r"Tagged.*count"):
        recursive(state=Tagged)


def test_a_field_that_changes_on_the_way_back_fails_the_chain_at_once_naming_it() -> None:
    class Doubling(BaseModel):
        i: int = 0
        total: int = 0

        @field_validator("total")
        @classmethod
        def _double(cls, v: int) -> int:
            return v * 2  # 0 survives (the decoration check passes); any other value does not

    clock = VirtualClock()
    sim = simulate(summing(clock, Doubling, every=3), timeout=60, clock=clock)
    report = sim.run({})
    assert report.status == "FAILED"
    assert "Doubling" in (report.error or "") and "'total'" in (report.error or "")
    record = sim.ledger.get(report.chain_id)  # type: ignore[union-attr]
    assert record is not None and record.attempts == 1 and report.retries == 0


def test_private_attributes_are_per_invocation_scratch() -> None:
    class Scratch(BaseModel):
        i: int = 0
        total: int = 0
        _cache: dict[int, int] = PrivateAttr(default_factory=dict)

    clock = VirtualClock()

    @recursive(state=Scratch, policy=after_chunks(2))
    def handler(event: Any, state: Scratch, run: Any):
        while state.i < 6:
            clock.advance(0.1)
            state._cache[state.i] = state.i
            state.total += len(state._cache)
            state.i += 1
            yield
        return state.total

    report = simulate(handler, timeout=60, clock=clock).run({})
    assert report.status == "SUCCEEDED" and report.result == 1 + 2 + 1 + 2 + 1 + 2  # reset at every hop


# ------------------------------------------------------------------- item 3: unserialisable state


class Holder(BaseModel):
    i: int = 0
    handle: Any = None


def test_unserialisable_state_fails_the_chain_at_once_naming_model_and_field() -> None:
    clock = VirtualClock()

    @recursive(state=Holder, policy=after_chunks(2))
    def handler(event: Any, state: Holder, run: Any):
        while state.i < 6:
            clock.advance(0.1)
            state.i += 1
            if state.i == 1:
                state.handle = object()
            yield
        return state.i

    sim = simulate(handler, timeout=60, clock=clock)
    report = sim.run({})
    assert report.status == "FAILED"
    assert "Holder" in (report.error or "") and "'handle'" in (report.error or "")
    assert report.invocations == 1 and report.retries == 0
    record = sim.ledger.get(report.chain_id)  # type: ignore[union-attr]
    assert record is not None and record.attempts == 1 and record.status == "FAILED"


def test_a_value_its_type_does_not_describe_is_refused_not_silently_changed() -> None:
    clock = VirtualClock()

    @recursive(state=Holder, policy=after_chunks(2))
    def handler(event: Any, state: Holder, run: Any):
        while state.i < 6:
            clock.advance(0.1)
            state.i += 1
            state.handle = (state.i, "x")  # a tuple in an Any field comes back as a list
            yield
        return state.i

    report = simulate(handler, timeout=60, clock=clock).run({})
    assert report.status == "FAILED" and "'handle'" in (report.error or "")
    assert report.retries == 0


# ------------------------------------------------------------------- item 4: finally/with at close


class Closes(BaseModel):
    items: list[int] = Field(default_factory=lambda: [5])
    i: int = 0


def test_finally_blocks_do_not_reach_the_next_hop() -> None:
    # The example: a finally that appends gave [5, 1] in one hop and [5, 6] in several.
    def run(every: int) -> Any:
        clock = VirtualClock()

        @recursive(state=Closes, policy=after_chunks(every))
        def handler(event: Any, state: Closes, run: Any):
            try:
                while state.i < 5:
                    clock.advance(0.1)
                    state.i += 1
                    yield
            finally:
                state.items.append(state.items[-1] + 1 if len(state.items) > 1 else 1)
            return state.items

        report = simulate(handler, timeout=60, clock=clock).run({})
        assert report.status == "SUCCEEDED", report.error
        return report.result

    assert [run(every) for every in (100, 1, 2)] == [[5, 1]] * 3


def test_nonfinite_floats_come_back_as_the_same_values() -> None:
    class Best(BaseModel):
        i: int = 0
        best: float = -math.inf
        worst: float = math.inf
        odd: float = math.nan
        seen: list[float] = Field(default_factory=list)

    clock = VirtualClock()
    hops: list[tuple[float, float, bool, list[float]]] = []

    @recursive(state=Best, policy=after_chunks(1))
    def handler(event: Any, state: Best, run: Any):
        while state.i < 3:
            hops.append((state.best, state.worst, math.isnan(state.odd), list(state.seen)))
            clock.advance(0.1)
            state.seen.append([math.nan, math.inf, -math.inf][state.i])
            state.i += 1
            yield
        hops.append((state.best, state.worst, math.isnan(state.odd), list(state.seen)))
        return {"i": state.i}

    report = simulate(handler, timeout=60, clock=clock).run({})
    assert report.status == "SUCCEEDED", report.error
    assert report.hops >= 3
    assert [h[:3] for h in hops] == [(-math.inf, math.inf, True)] * 4
    assert math.isnan(hops[3][3][0]) and hops[3][3][1:] == [math.inf, -math.inf]
