"""JSON round trip of the predictor's frozen config dataclasses (stored next to the weights)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


class JsonConfig:
    """Mixin of a frozen dataclass: `to_json` / `from_json` that reject unknown fields.

    A subclass sets `_json_name` (named in errors) and `_json_types` (field -> converter
    that restores the field's type, e.g. JSON lists back to tuples).
    """

    _json_name = "config"
    _json_types: Mapping[str, Callable[[Any], Any]] = {}

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):
        """The config from `to_json` output.

        Raises:
            ValueError: naming the config if `data` has fields the class does not.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{cls._json_name}: unknown field(s) {sorted(unknown)}")
        values = {
            key: cls._json_types[key](value) if key in cls._json_types else value
            for key, value in data.items()
        }
        return cls(**values)


def int_tuple(values: Any) -> tuple[int, ...]:
    """A JSON list of ints as a tuple of ints."""
    return tuple(int(v) for v in values)


def float_tuple(values: Any) -> tuple[float, ...]:
    """A JSON list of numbers as a tuple of floats."""
    return tuple(float(v) for v in values)
