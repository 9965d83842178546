"""``coral``: CORAL (Sun & Saenko 2016) between source and target bottleneck features."""

from __future__ import annotations

from dataclasses import dataclass

from hftransfer.objectives.adaptation import AlignmentConfig, AlignmentObjective
from hftransfer.objectives.base import TEXT_SOURCE_WARMUP, ObjectiveOutput, gather_with_grad
from hftransfer.objectives.layers import coral_loss
from hftransfer.objectives.registry import register_objective


@dataclass
class CoralConfig(AlignmentConfig):
    pass


@register_objective("coral", CoralConfig,
                    combines_with="any backbone; full, lora, linear_probe (aligns the bottleneck)",
                    # LayerNorm in the text bottleneck: the near-shift gain of BatchNorm, a third of its far-shift
                    # loss (bench/results/text_da.md, session 22)
                    modality_defaults={"text": {"source_warmup": TEXT_SOURCE_WARMUP, "norm": "layer"}})
class Coral(AlignmentObjective):
    """Matches means and covariances of bottleneck features, on the global batch of all processes."""

    def compute_loss(self, model, source, targets, target, info) -> ObjectiveOutput:
        logits, f_s, f_t = self.joint_forward(model, source, target)
        coral = coral_loss(gather_with_grad(f_s), gather_with_grad(f_t))
        cls = self.classification_loss(logits, targets)
        return ObjectiveOutput(cls + self.config.weight * coral,
                               {"cls_loss": float(cls.detach()), "coral": float(coral.detach())})
