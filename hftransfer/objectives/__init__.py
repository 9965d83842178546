"""Training objectives (one module each): the supervised loss and the domain-adaptation losses.

``hftransfer recipes`` lists them; a run picks one with ``objective: {name: dann, weight: 1.0, ...}``.
"""

from hftransfer.objectives import coral, dann, mmd, self_training, source_only  # noqa: F401  (registration)
from hftransfer.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput, StepInfo
from hftransfer.objectives.registry import (
    DEFAULT_OBJECTIVE,
    OBJECTIVES,
    get_objective,
    list_objectives,
    modality_defaults,
    normalize_objective,
    objective_entry,
    register_objective,
)


__all__ = ["DEFAULT_OBJECTIVE", "OBJECTIVES", "Objective", "ObjectiveConfig", "ObjectiveOutput", "StepInfo",
           "get_objective", "list_objectives", "modality_defaults", "normalize_objective", "objective_entry",
           "register_objective"]
