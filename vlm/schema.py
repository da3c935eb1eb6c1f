"""The one strict reader of configuration: recipes, data configs and compare grids (YAML
mapped 1:1 onto dataclasses), validated by pydantic.

    >>> recipe = from_dict(Recipe, read_yaml(text), section="")

A dataclass read this way sets ``__pydantic_config__ = STRICT``: an unknown key anywhere is
an error naming it, its section and the known keys. Field types are checked and YAML-loose
scalars converted (``2.5`` is not an int; ``read_yaml`` reads ``1e-3`` as the number YAML
1.2 means, where PyYAML alone reads a string); ranges come from the field annotations
(``PositiveInt``, ``Probability``, ...) and a dataclass's own ``__post_init__`` checks run after. Every problem is reported at once, before
anything is built, as one ``RecipeError`` naming each key, its value and what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import typing
from collections.abc import Sequence
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "STRICT",
    "Integer",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "RecipeError",
    "add_override_argument",
    "apply_overrides",
    "from_dict",
    "read_yaml",
    "set_dotted",
    "to_dict",
]

STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True, coerce_numbers_to_str=True)


def _not_a_bool(value: Any) -> Any:
    # YAML's yes/true must not count as 1 where a number is asked for
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


_NUMBER = BeforeValidator(_not_a_bool)
Integer = Annotated[int, _NUMBER]
PositiveInt = Annotated[int, _NUMBER, Field(ge=1)]
NonNegativeInt = Annotated[int, _NUMBER, Field(ge=0)]
PositiveFloat = Annotated[float, _NUMBER, Field(gt=0)]
NonNegativeFloat = Annotated[float, _NUMBER, Field(ge=0)]
Probability = Annotated[float, _NUMBER, Field(ge=0, le=1)]


class RecipeError(ValueError):
    """A recipe, data config or grid is malformed: unknown key, wrong type or range, a
    missing or contradictory value."""


def from_dict(cls: type, data: Any, section: str) -> Any:
    """Dataclass ``cls`` from ``data`` (a mapping; None: all defaults); ``section`` names it
    in errors ("" for the top level)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = section or "the recipe's top level"
        raise RecipeError(
            f"section {where!r} must be a mapping of keys to values; got {type(data).__name__} "
            f"{data!r:.80}"
        )
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as err:
        problems = [_describe(cls, section, e) for e in err.errors(include_url=False)]
        raise RecipeError("; ".join(dict.fromkeys(problems))) from None


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


class _Yaml12Floats(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2's floats without a dot or an exponent sign (``1e-3``,
    ``2E5``): PyYAML (YAML 1.1) reads them as strings, so a saved setup would hold the string
    and ``2e-3`` and ``2.0e-3`` would be two setups."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str) -> Any:
    """YAML text -> Python values, as every configuration reader here reads it."""
    return yaml.load(text, Loader=_Yaml12Floats)  # a SafeLoader: no Python objects


def add_override_argument(parser: argparse.ArgumentParser, what: str, examples: str) -> None:
    """``--override/-o KEY=VALUE`` (repeatable) on a command that reads a YAML ``what``;
    ``apply_overrides`` applies the list it collects."""
    parser.add_argument(
        "--override",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"change one {what} key, e.g. {examples} (repeatable; the value is read as YAML)",
    )


def apply_overrides(data: dict[str, Any], overrides: Sequence[str] | None) -> None:
    """Apply ``--override`` items ``key.sub=value`` (the value read as YAML) to ``data``."""
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--override {item!r} is not key=value (e.g. section.key=10)")
        set_dotted(data, key.strip(), read_yaml(text))


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


_ADAPTERS: dict[type, TypeAdapter] = {}


def _adapter(cls: type) -> TypeAdapter:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def _describe(cls: type, section: str, error: dict[str, Any]) -> str:
    """One pydantic error as a sentence naming the dotted key, the value and what is allowed."""
    # union members appear in the location as type names ("bool", "str"): not keys
    loc = [p for p in error["loc"] if isinstance(p, int) or not _is_type_tag(p)]
    key = ".".join(p for p in [section, *(_loc_part(p) for p in loc)] if p)
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        parent = ".".join(p for p in [section, *(_loc_part(p) for p in loc[:-1])] if p)
        where = parent or "the recipe's top level"
        known = _known_keys(cls, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"unknown key {loc[-1]!r} in section {where!r}{hint}; known keys there: {known}. "
            "Fix the spelling or remove it."
        )
    if kind in ("missing", "missing_argument"):
        return f"{key} is required"
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        return f"{key}: {message}" if key else message
    if kind == "literal_error":
        allowed = str(ctx.get("expected", "")).replace(" or ", ", ").split(", ")
        return f"{key} must be one of [{', '.join(allowed)}]; got {value!r}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}
        bound = next(iter(ctx.values()))
        return f"{key} must be {sign.get(kind, '<')} {bound}; got {value!r}"
    simple = {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "string": "a string",
        "list": "a list",
        "tuple": "a list",
        "dict": "a mapping",
    }
    for prefix, what in simple.items():
        if kind.startswith(prefix):
            return f"{key} must be {what}; got {value!r}"
    return f"{key}: {error['msg']}; got {value!r}"


def _is_type_tag(part: Any) -> bool:
    text = str(part)
    return (
        text in ("int", "float", "bool", "str", "none")
        or "[" in text
        or text.startswith(("function-", "literal", "list", "dict", "tuple", "union", "nullable"))
    )


def _loc_part(part: Any) -> str:
    return f"[{part}]" if isinstance(part, int) else str(part)


def _known_keys(cls: type, path: list[Any]) -> list[str]:
    """Field names of the dataclass reached from ``cls`` along ``path`` (for hints)."""
    current: Any = cls
    for part in path:
        if isinstance(part, int) or not dataclasses.is_dataclass(current):
            current = _dataclass_in(current)
            if isinstance(part, int):
                continue
        hints = typing.get_type_hints(current, include_extras=False)
        current = _dataclass_in(hints.get(str(part)))
    if not dataclasses.is_dataclass(current):
        return []
    return sorted(f.name for f in dataclasses.fields(current) if f.init)


def _dataclass_in(hint: Any) -> Any:
    """The dataclass inside a hint such as ``X``, ``X | None`` or ``list[X]`` (else the hint)."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if dataclasses.is_dataclass(found):
            return found
    return hint
