"""The objective registry: name -> (config class, objective class)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hftransfer.errors import ConfigurationError
from hftransfer.objectives.base import Objective, ObjectiveConfig
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
    modality_defaults: dict[str, dict[str, Any]]  # modality -> options over the config's defaults (user's win)

    def modality_defaults_line(self) -> str:
        """``"text: source_warmup=0.5, weight=0.3"`` (one clause per modality, YAML values; empty when none)."""
        return "; ".join(f"{modality}: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in options.items())
                         for modality, options in sorted(self.modality_defaults.items()))


OBJECTIVES: dict[str, ObjectiveEntry] = {}


def register_objective(name: str, config_cls: type[ObjectiveConfig], combines_with: str = "any backbone, any method",
                       modality_defaults: dict[str, dict[str, Any]] | None = None):
    """Class decorator: ``@register_objective("dann", DannConfig, modality_defaults={"text": {"weight": 0.3}})``.

    ``modality_defaults``: options that differ for a text or an image backbone, applied over the config's defaults
    once the model's modality is known; the user's ``objective:`` values always win. Checked here.
    """
    per_modality = {k: dict(v) for k, v in (modality_defaults or {}).items()}
    unknown = sorted(set(per_modality) - set(MODALITIES))
    if unknown:
        raise ConfigurationError(f"Objective {name!r}: modality_defaults keys {unknown} must be among "
                                 f"{list(MODALITIES)}.")
    for modality, values in per_modality.items():
        try:  # unknown options and bad values fail at registration
            config_cls.from_dict(values, name)
        except (ConfigurationError, ValueError) as err:
            raise ConfigurationError(f"Objective {name!r}: its registration's modality_defaults[{modality!r}] = "
                                     f"{values!r} is invalid: {err}") from err

    def wrap(objective_cls: type[Objective]) -> type[Objective]:
        if name != name.lower() or not name.isidentifier():
            raise ValueError(f"Objective name {name!r} must be a lowercase identifier.")
        if name in OBJECTIVES:
            owner = OBJECTIVES[name].objective_cls.__module__
            raise ValueError(f"Objective {name!r} is already registered by {owner}.")
        objective_cls.name = name
        doc = (objective_cls.__doc__ or "").strip().splitlines()
        OBJECTIVES[name] = ObjectiveEntry(name, config_cls, objective_cls, doc[0] if doc else "", combines_with,
                                          per_modality)
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
    """Objective ``name``'s registered options for a ``modality`` backbone (none for None)."""
    return dict(objective_entry(name).modality_defaults.get(modality or "", {}))


def get_objective(spec: str | dict[str, Any] | None, modality: str | None = None) -> Objective:
    """The objective ``spec`` names, its options the user's over the defaults for a ``modality`` backbone."""
    spec = normalize_objective(spec)
    entry = objective_entry(spec.pop("name"))
    options = {**modality_defaults(entry.name, modality), **spec}
    return entry.objective_cls(entry.config_cls.from_dict(options, entry.name))
