"""The objective registry: name -> (config class, objective class)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hftransfer.errors import ConfigurationError
from hftransfer.objectives.base import Objective, ObjectiveConfig
from hftransfer.objectives.modality_defaults import MODALITY_DEFAULTS
from hftransfer.utils.modalities import MODALITIES


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


def modality_defaults(name: str, modality: str | None) -> dict[str, Any]:
    """Objective ``name``'s options for a ``modality`` backbone (:data:`MODALITY_DEFAULTS`; None: none)."""
    return dict(MODALITY_DEFAULTS.get(objective_entry(name).name, {}).get(modality or "", {}))


def check_modality_defaults() -> None:
    """:data:`MODALITY_DEFAULTS` names registered objectives, known modalities and valid options (run at import)."""
    for name, per_modality in MODALITY_DEFAULTS.items():
        if name not in OBJECTIVES:
            raise ConfigurationError(f"MODALITY_DEFAULTS names {name!r}, which is not a registered objective; "
                                     f"registered: {list_objectives()}.")
        unknown = sorted(set(per_modality) - set(MODALITIES))
        if unknown:
            raise ConfigurationError(f"MODALITY_DEFAULTS[{name!r}] keys {unknown} must be among {list(MODALITIES)}.")
        for values in per_modality.values():
            OBJECTIVES[name].config_cls.from_dict(values, name)


def get_objective(spec: str | dict[str, Any] | None, modality: str | None = None) -> Objective:
    """The objective ``spec`` names, its options the user's over the defaults for a ``modality`` backbone."""
    spec = normalize_objective(spec)
    entry = objective_entry(spec.pop("name"))
    options = {**modality_defaults(entry.name, modality), **spec}
    return entry.objective_cls(entry.config_cls.from_dict(options, entry.name))
