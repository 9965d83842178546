"""``mmd``: multi-kernel MMD between source and target bottleneck features (DAN, Long et al. 2015)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.objectives.adaptation import AlignmentConfig, AlignmentObjective
from hftransfer.objectives.base import TEXT_ALIGNMENT_WEIGHT, TEXT_SOURCE_WARMUP, ObjectiveOutput, gather_with_grad
from hftransfer.objectives.layers import multi_kernel_mmd
from hftransfer.objectives.registry import register_objective


@dataclass
class MmdConfig(AlignmentConfig):
    kernel_scales: list[float] = field(
        default_factory=lambda: [0.125, 0.25, 0.5, 1.0, 2.0],
        metadata={"help": "Gaussian bandwidths as multiples of the mean pairwise squared distance (2^-3..2^1)."})


@register_objective("mmd", MmdConfig,
                    combines_with="any backbone; full, lora, linear_probe (aligns the bottleneck)",
                    modality_defaults={"text": {"source_warmup": TEXT_SOURCE_WARMUP,
                                                 "weight": TEXT_ALIGNMENT_WEIGHT}})
class Mmd(AlignmentObjective):
    """Multi-kernel Gaussian MMD on a Linear-BN-ReLU bottleneck, on the global batch of all processes."""

    def compute_loss(self, model, source, targets, target, info) -> ObjectiveOutput:
        logits, f_s, f_t = self.joint_forward(model, source, target)
        mmd = multi_kernel_mmd(gather_with_grad(f_s), gather_with_grad(f_t), self.config.kernel_scales)
        cls = self.classification_loss(logits, targets)
        return ObjectiveOutput(cls + self.config.weight * mmd,
                               {"cls_loss": float(cls.detach()), "mmd": float(mmd.detach())})
