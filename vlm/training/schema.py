"""Strict mapping of nested dicts (parsed YAML) onto dataclasses.

    >>> recipe = from_dict(Recipe, yaml.safe_load(text), section="")

Every key must be a field of the target dataclass (else ``RecipeError`` naming the key, its
section and the known keys); values are checked against the field's type hint and converted
where YAML is loose (PyYAML reads ``1e-3`` as a string: it becomes a float for a float field).
A dataclass with its own ``from_dict`` (the data side's ``DataConfig``) reads its section
itself; its errors are re-raised as ``RecipeError`` naming the section.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union


class RecipeError(ValueError):
    """A recipe is malformed: unknown key, wrong type, missing or contradictory value."""


def from_dict(cls: type, data: Any, section: str) -> Any:
    """Build dataclass ``cls`` from ``data`` (a dict); ``section`` names it in errors."""
    where = section or "the recipe's top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"section {where!r} must be a mapping of keys to values; got {type(data).__name__} "
            f"{data!r:.80}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in data if key not in fields]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(
            f"unknown key {unknown[0]!r} in section {where!r}{hint}; known keys there: "
            f"{sorted(fields)}. Fix the spelling or remove it."
        )
    hints = typing.get_type_hints(cls)
    values = {
        key: convert(value, hints.get(key, Any), _join(section, key)) for key, value in data.items()
    }
    try:
        return cls(**values)
    except RecipeError:
        raise
    except (TypeError, ValueError) as err:  # the dataclass's own checks
        raise RecipeError(f"section {where!r}: {err}") from err


def convert(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against type ``hint`` (converting YAML-loose scalars); ``key`` is the
    dotted name used in errors."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(value, option, key)
            except RecipeError as err:
                errors.append(str(err))
        raise RecipeError(
            errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {hint}"
        )
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{key} must be one of {list(args)}; got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        own = getattr(hint, "from_dict", None)
        if callable(own):  # a foreign schema with its own strict reader (vlm.data.DataConfig)
            if not isinstance(value, dict):
                raise RecipeError(f"section {key!r} must be a mapping; got {value!r:.80}")
            try:
                return own(value)
            except (TypeError, ValueError) as err:
                raise RecipeError(f"section {key!r}: {err}") from err
        return from_dict(hint, value, key)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key} must be a list; got {value!r}")
        item = args[0] if args else Any
        return [convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key} must be a mapping; got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key} must be true or false; got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{key} must be an integer; got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool):
            raise RecipeError(f"{key} must be a number; got {value!r}")
        try:
            return float(value)  # "1e-3" (a string to PyYAML) -> 0.001
        except (TypeError, ValueError):
            raise RecipeError(f"{key} must be a number; got {value!r}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RecipeError(f"{key} must be a string; got {value!r}")
        return str(value)
    return value  # a type this converter does not know: the dataclass checks it


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) -> plain dicts/lists, for writing the resolved recipe."""
    if callable(getattr(obj, "to_dict", None)) and not isinstance(obj, type):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["train"]["lr"] = value`` for ``dotted="train.lr"``; creates missing sections."""
    keys = dotted.split(".")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(
                f"--override {dotted}: {'.'.join(keys[: i + 1])} is a value ({child!r}), not a "
                "section; override it as a whole"
            )
        node = child
    node[keys[-1]] = value


def _join(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key
