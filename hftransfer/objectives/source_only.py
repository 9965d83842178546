"""``source_only``: the plain supervised loss on the labelled (source) data; the default objective and the baseline."""

from __future__ import annotations

from dataclasses import dataclass

from hftransfer.objectives.base import Objective, ObjectiveConfig, ObjectiveOutput
from hftransfer.objectives.registry import register_objective


@dataclass
class SourceOnlyConfig(ObjectiveConfig):
    pass


@register_objective("source_only", SourceOnlyConfig, combines_with="any backbone, any method (alias: supervised)")
class SourceOnly(Objective):
    """Supervised cross-entropy on the source only (label smoothing, mixup targets, class weights)."""

    def compute_loss(self, model, source, targets, target, info) -> ObjectiveOutput:
        logits = model(**source).logits
        return ObjectiveOutput(self.classification_loss(logits, targets))
