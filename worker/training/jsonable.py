"""Dataclasses to and from JSON objects, derived from their fields so new fields need no code."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def to_json_dict(instance: Any) -> dict[str, Any]:
    """The instance's fields as a JSON-ready dict: paths become strings."""
    return {name: _plain(value) for name, value in dataclasses.asdict(instance).items()}


def from_json_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build `cls` from `to_json_dict`'s output; unknown or missing fields are refused by name."""
    init_fields = [item for item in dataclasses.fields(cls) if item.init]  # type: ignore[arg-type]
    names = {item.name for item in init_fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}")
    missing = [
        item.name
        for item in init_fields
        if item.name not in data
        and item.default is dataclasses.MISSING
        and item.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{cls.__name__} needs field {', '.join(map(repr, missing))}")
    hints = get_type_hints(cls)
    return cls(**{name: _restore(hints[name], value) for name, value in data.items()})


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _restore(hint: Any, value: Any) -> Any:
    """JSON has no paths or enums: a string in a `Path` (or `Path | None`) field becomes a Path
    again, one in an enum field its member (a value the enum lacks raises ValueError)."""
    if value is None:
        return None
    is_union = get_origin(hint) in (Union, types.UnionType)
    if hint is Path or (is_union and Path in get_args(hint)):
        return Path(value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    return value
