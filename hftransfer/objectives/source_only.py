"""``source_only``: the plain supervised loss on the labelled (source) data; the default objective and the baseline."""

from __future__ import annotations

from dataclasses import dataclass

from hftransfer.errors import ConfigurationError
from hftransfer.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from hftransfer.objectives.registry import register_objective


@dataclass
class SourceOnlyConfig(ObjectiveConfig):
    def __post_init__(self):
        super().__post_init__()
        if self.source_warmup:
            raise ConfigurationError(f"objective.source_warmup={self.source_warmup!r} has no effect for source_only "
                                     "(it reads no target data, so the whole run is source training); remove it, "
                                     "or pick an adaptation objective (dann, mmd, coral, self_training).")


@register_objective("source_only", SourceOnlyConfig, combines_with="any backbone, any method (alias: supervised)")
class SourceOnly(Objective):
    """Supervised cross-entropy on the source only (label smoothing, mixup targets, class weights)."""

    def compute_loss(self, model, source, targets, target, info) -> ObjectiveOutput:
        logits = model(**source).logits
        return ObjectiveOutput(self.classification_loss(logits, targets))
