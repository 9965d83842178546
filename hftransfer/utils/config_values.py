"""Config values as users type them: YAML text read with YAML 1.2 booleans, and values coerced by the field's type.

YAML 1.1 (PyYAML's default) reads ``no``, ``yes``, ``on`` and ``off`` as booleans, so ``mixed_precision=no`` would
arrive as ``False`` and a string option could never take those words. Here only ``true``/``false`` are booleans;
the other words stay strings, and a boolean field accepts them (:func:`coerce_value` decides by the field's type).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

import yaml

from hftransfer.errors import ConfigurationError


TRUE_WORDS = ("true", "yes", "on")
FALSE_WORDS = ("false", "no", "off")


class _Yaml12BoolLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2's booleans (``true``/``false`` in any case, nothing else) and floats
    (``3e-4`` is a number, as in YAML 1.2 and JSON; YAML 1.1 wants ``3.0e-4`` and reads ``3e-4`` as a string)."""


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse config YAML: like ``yaml.safe_load`` but ``no``/``yes``/``on``/``off`` stay strings."""
    return yaml.load(text, Loader=_Yaml12BoolLoader)  # noqa: S506 (a SafeLoader subclass)


def coerce_value(hint: Any, value: Any, key: str) -> Any:
    """``value`` converted to the field type ``hint`` where users write it another way (``"3e-4"`` for a float,
    ``"no"`` for a bool); raises :class:`ConfigurationError` naming ``key`` for a value of the wrong kind."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return coerce_value(non_none[0], value, key) if len(non_none) == 1 else value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError as err:
            raise ConfigurationError(f"{key}={value!r} must be a number.") from err
    if hint is bool and isinstance(value, str) and value.lower() in TRUE_WORDS + FALSE_WORDS:
        return value.lower() in TRUE_WORDS
    if hint is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if hint is str and isinstance(value, bool):  # a Python caller's (or YAML 1.1 writer's) boolean for a word
        raise ConfigurationError(f"{key}={value!r} must be a string; write the word in quotes (e.g. {key}='no').")
    expected = {float: ((int, float), "a number"), int: ((int,), "an integer"), bool: ((bool,), "true or false")}
    if hint in expected:
        types_, what = expected[hint]
        if not isinstance(value, types_) or (hint is not bool and isinstance(value, bool)):
            raise ConfigurationError(f"{key}={value!r} must be {what}.")
    return value


def coerce_fields(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``data`` (options of the dataclass ``cls``) with each plain value coerced to its field's type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: coerce_value(hints[name], value, f"{prefix}{name}") if name in names else value
            for name, value in data.items()}
