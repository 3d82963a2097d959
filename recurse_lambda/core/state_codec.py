"""How a chain's state crosses a hand-off: one place that dumps, loads and checks it (DESIGN §4, §6).

The state is dumped **by field name** (``model_dump(mode="json", round_trip=True)``, which leaves computed
fields out) and validated back by field name (``by_alias=False, by_name=True``), so aliases of any kind never
decide what the next hop sees. A float that is NaN or ±infinity is written as the string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"`` (pydantic's ``ser_json_inf_nan="strings"`` spelling), which a float field
validates back to the same value: every payload stays RFC 8259 JSON.

Every dump is checked: the dumped state is validated back and compared with the original, field by field (NaN
equal to NaN, private attributes ignored: they are per-invocation scratch). A state that would come back
different, or that cannot be dumped at all, is a :class:`ConfigurationError` naming the model and the field:
a permanent error, so the chain fails at once instead of retrying, and its result never depends on where the
hops fall. :func:`check_state_model` runs the same check on the model's default instance when ``@recursive`` is
applied, and refuses ``Field(exclude=True)`` fields, which a dump always drops.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigurationError

__all__ = [
    "NON_FINITE",
    "check_state_model",
    "dump_state",
    "jsonable",
    "load_state",
    "nonfinite_path",
    "strict_dumps",
]

# How a non-finite float is spelled in every payload the library writes.
NON_FINITE = {"NaN", "Infinity", "-Infinity"}


def _spell(x: float) -> str:
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _spell(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def nonfinite_path(value: Any, path: str = "") -> str | None:
    """Where ``value`` holds a NaN or an infinity (``['best']``, ``[2]``), or None when it holds none."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path or "the value"
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = nonfinite_path(v, f"{path}[{k!r}]")
        if found is not None:
            return found
    return None


def strict_dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` for logs, notices and CLI output: non-finite floats are spelled as strings, so the text is
    RFC 8259 JSON (``allow_nan=False`` holds)."""
    return json.dumps(jsonable(value), allow_nan=False, **kwargs)


# ---------------------------------------------------------------------------------------------- the state


def _field_error(state: BaseModel, exc: Exception) -> ConfigurationError:
    """The first top-level field of ``state`` that cannot be dumped, named in a ConfigurationError."""
    model = type(state)
    for name in type(state).model_fields:
        try:
            state.model_dump(mode="json", round_trip=True, include={name})
        except Exception as field_exc:
            return ConfigurationError(
                f"the state {model.__name__} cannot be serialised: field {name!r} holds "
                f"{type(getattr(state, name, None)).__name__} ({field_exc}); keep only JSON-serialisable values "
                "in the state"
            )
    return ConfigurationError(f"the state {model.__name__} cannot be serialised: {exc}")


def _differs(a: Any, b: Any, path: str) -> str | None:
    """Where ``b`` (the state after a round trip) differs from ``a``, or None when they are the same."""
    if a is b:
        return None
    if isinstance(a, BaseModel):
        if type(a) is not type(b):
            return path
        assert isinstance(b, BaseModel)
        for name in type(a).model_fields:
            found = _differs(getattr(a, name), getattr(b, name), f"{path}.{name}" if path else name)
            if found is not None:
                return found
        extra_a, extra_b = a.__pydantic_extra__ or {}, b.__pydantic_extra__ or {}
        if extra_a.keys() != extra_b.keys():
            return path or "(extra fields)"
        for name in extra_a:
            found = _differs(extra_a[name], extra_b[name], f"{path}.{name}" if path else name)
            if found is not None:
                return found
        return None
    try:
        if type(a) is type(b) and a == b:  # the fast path: big lists of numbers compare in C
            return None
    except Exception:  # an __eq__ that raises (numpy arrays, say): compare by structure below
        pass
    if isinstance(a, float) and isinstance(b, float):
        return None if (a != a and b != b) else path
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return None if a == b and not isinstance(b, bool) else path  # an int in a float field comes back 1.0
    if type(a) is not type(b):
        return path
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return path
        for k in a:
            found = _differs(a[k], b[k], f"{path}[{k!r}]")
            if found is not None:
                return found
        return None
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _differs(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if a != a and b != b:  # Decimal('NaN') and the like
        return None
    return path


def _value_at(state: Any, path: str) -> Any:
    name = path.split(".")[0].split("[")[0]
    return getattr(state, name, None)


def load_state(model: type[BaseModel], data: Any) -> BaseModel:
    """The state a hop starts from: ``data`` (as :func:`dump_state` wrote it) validated by field name."""
    return model.model_validate(data, by_alias=False, by_name=True, strict=False)


def dump_state(state: BaseModel) -> Any:
    """The JSON form of ``state`` for an envelope or the ledger; checked to come back as the same state.

    Raises :class:`ConfigurationError`, naming the model and the field, when the state cannot be dumped or
    would not come back the same.
    """
    model = type(state)
    try:
        dumped = state.model_dump(mode="json", round_trip=True, by_alias=False)
    except Exception as exc:
        raise _field_error(state, exc) from exc
    data = jsonable(dumped)
    try:
        back = load_state(model, data)
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) or "(model)" for e in exc.errors()[:3])
        raise ConfigurationError(
            f"the state {model.__name__} does not survive a hand-off: its dump does not validate back "
            f"(field {where}: {exc.errors()[0]['msg']}); a custom serialiser, validator or strict float field "
            "may be the cause"
        ) from exc
    path = _differs(state, back, "")
    if path is not None:
        name = path.split(".")[0].split("[")[0]
        raise ConfigurationError(
            f"the state {model.__name__} does not survive a hand-off: field {path!r} is "
            f"{_short(_value_at(state, path))} but comes back as {_short(_value_at(back, path))}. "
            f"Check {name!r} for a custom serialiser or validator, a value its type does not describe "
            "(a tuple, set or datetime in an Any field, NaN in a non-float field), or a field the dump leaves out"
        )
    return data


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------- decoration time


def _models_in(annotation: Any, seen: set[type]) -> list[type[BaseModel]]:
    """The pydantic models an annotation mentions (``Inner``, ``list[Inner]``, ``Inner | None``, ...)."""
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen.add(annotation)
            found.append(annotation)
        return found
    for arg in typing.get_args(annotation):
        if isinstance(arg, type | types.GenericAlias | types.UnionType) or typing.get_origin(arg) is not None:
            found += _models_in(arg, seen)
    return found


def check_state_model(model: type[BaseModel]) -> None:
    """Refuse, with a ConfigurationError naming the field, a state model that cannot survive a hand-off.

    ``Field(exclude=True)`` fields (in the model or a model it holds) are refused: the dump drops them, so the
    next hop would see their defaults. Then, when the model can be built from its defaults, the default instance
    must round-trip (:func:`dump_state`). Private attributes are fine: they are per-invocation scratch.
    """
    seen: set[type] = {model}
    pending: list[type[BaseModel]] = [model]
    while pending:
        current = pending.pop()
        for name, info in current.model_fields.items():
            if info.exclude is True:
                raise ConfigurationError(
                    f"state field {current.__name__}.{name} has exclude=True, so it would be reset at every "
                    "hand-off: keep it in the state (drop exclude=True), or make it a PrivateAttr "
                    "(per-invocation scratch, not carried to the next hop)"
                )
            pending += _models_in(info.annotation, seen)
    try:
        default = model()
    except ValidationError:
        return  # a required field: the first hop checks the initial state instead
    dump_state(default)
