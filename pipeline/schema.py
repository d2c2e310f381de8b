"""Build typed dataclasses from plain dicts (YAML), with one clear error per bad key or value."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from pipeline.errors import PipelineError

T = TypeVar("T")


def bounded(default: Any, *, lo: float | None = None, hi: float | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field whose value must lie in [lo, hi] or among ``choices``."""
    meta = {"lo": lo, "hi": hi, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def build(cls: type[T], data: Any, where: str) -> T:
    """Validate ``data`` against dataclass ``cls``; ``where`` names it in errors (e.g. ``attack``)."""
    if not isinstance(data, Mapping):
        raise PipelineError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls))}
    for key in data:
        if key not in fields:
            raise PipelineError(f"unknown key {_join(where, key)!r}{suggest(str(key), fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        path = _join(where, name)
        if name in data:
            values[name] = _check_bounds(_coerce(data[name], hints[name], path), field, path)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise PipelineError(f"missing key {path!r}")
    return cls(**values)


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def suggest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(sorted(valid))})"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, path)
            except PipelineError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return build(cast(type, tp), value, path)
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(path, value, _type_name(tp))
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(path, value, "mapping")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(v, item, _join(path, k)) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is Any:
        return value
    raise _type_error(path, value, _type_name(tp))


def _type_error(path: str, value: Any, expected: str) -> PipelineError:
    return PipelineError(f"config key {path!r}: value {value!r} is not of type {expected}")


def _check_bounds(value: Any, field: dataclasses.Field, path: str) -> Any:
    meta = field.metadata
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is None:
            continue
        if meta.get("choices") is not None and item not in meta["choices"]:
            raise PipelineError(
                f"config key {path!r}: value {item!r} is not one of {', '.join(map(str, meta['choices']))}"
            )
        if meta.get("lo") is not None and item < meta["lo"]:
            raise PipelineError(f"config key {path!r}: value {item!r} is below the minimum {meta['lo']}")
        if meta.get("hi") is not None and item > meta["hi"]:
            raise PipelineError(f"config key {path!r}: value {item!r} is above the maximum {meta['hi']}")
    return value
