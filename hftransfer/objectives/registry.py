"""The objective registry: name -> (config class, objective class)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hftransfer.errors import ConfigurationError
from hftransfer.objectives.base import Objective, ObjectiveConfig


DEFAULT_OBJECTIVE = "source_only"
ALIASES = {"supervised": "source_only"}


@dataclass(frozen=True)
class ObjectiveEntry:
    name: str
    config_cls: type[ObjectiveConfig]
    objective_cls: type[Objective]
    description: str
    combines_with: str  # which methods / modalities it makes sense with (shown by `hftransfer recipes`)


OBJECTIVES: dict[str, ObjectiveEntry] = {}


def register_objective(name: str, config_cls: type[ObjectiveConfig], combines_with: str = "any backbone, any method"):
    """Class decorator: ``@register_objective("dann", DannConfig)``."""

    def wrap(objective_cls: type[Objective]) -> type[Objective]:
        if name != name.lower() or not name.isidentifier():
            raise ValueError(f"Objective name {name!r} must be a lowercase identifier.")
        if name in OBJECTIVES:
            owner = OBJECTIVES[name].objective_cls.__module__
            raise ValueError(f"Objective {name!r} is already registered by {owner}.")
        objective_cls.name = name
        doc = (objective_cls.__doc__ or "").strip().splitlines()
        OBJECTIVES[name] = ObjectiveEntry(name, config_cls, objective_cls, doc[0] if doc else "", combines_with)
        return objective_cls

    return wrap


def list_objectives() -> list[str]:
    return sorted(OBJECTIVES)


def objective_entry(name: str) -> ObjectiveEntry:
    name = ALIASES.get(name, name)
    if name not in OBJECTIVES:
        raise ConfigurationError(f"objective.name={name!r} is not a registered objective; choose one of "
                                 f"{list_objectives()} (list them with `hftransfer recipes`).")
    return OBJECTIVES[name]


def normalize_objective(spec: str | dict[str, Any] | None) -> dict[str, Any]:
    """``"dann"`` / ``{"name": "dann", ...}`` / ``None`` -> a checked ``{"name": ..., **options}`` mapping."""
    if spec is None:
        spec = {}
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise ConfigurationError(f"objective must be a name or a mapping like {{name: dann, weight: 1.0}}; "
                                 f"received {spec!r}.")
    spec = dict(spec)
    entry = objective_entry(spec.pop("name", None) or DEFAULT_OBJECTIVE)
    entry.config_cls.from_dict(spec, entry.name)  # unknown options and bad values fail here, before any work
    return {"name": entry.name, **spec}


def get_objective(spec: str | dict[str, Any] | None) -> Objective:
    spec = normalize_objective(spec)
    entry = objective_entry(spec.pop("name"))
    return entry.objective_cls(entry.config_cls.from_dict(spec, entry.name))
