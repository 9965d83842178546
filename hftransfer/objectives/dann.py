"""``dann``: domain-adversarial training (Ganin et al. 2016) with a gradient-reversal layer and warm start."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from hftransfer.objectives.adaptation import AlignmentConfig, AlignmentObjective
from hftransfer.objectives.base import TEXT_ALIGNMENT_WEIGHT, TEXT_SOURCE_WARMUP, ObjectiveOutput
from hftransfer.objectives.layers import DomainDiscriminator, grl_coefficient, reverse_gradient
from hftransfer.objectives.registry import register_objective


@dataclass
class DannConfig(AlignmentConfig):
    hidden_dim: int = field(default=1024, metadata={"help": "Hidden width of the domain discriminator MLP."})
    grl_alpha: float = field(default=10.0, metadata={"help": "GRL warm start: coef = 2/(1+exp(-alpha*p))-1."})
    grl_max: float = field(default=1.0, metadata={"help": "Final gradient-reversal coefficient."})
    discriminator_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the discriminator (None: the head's learning rate)."})


@register_objective("dann", DannConfig,
                    combines_with="any backbone; full, lora (linear_probe: trains the bottleneck only); one process "
                                  "or DDP, not FSDP / DeepSpeed ZeRO (its discriminator trains beside the model)",
                    modality_defaults={"text": {"source_warmup": TEXT_SOURCE_WARMUP,
                                                 "weight": TEXT_ALIGNMENT_WEIGHT}})
class Dann(AlignmentObjective):
    """Domain-adversarial: a discriminator behind gradient reversal makes source and target features alike."""

    own_modules = "a domain discriminator"

    def prepare_model(self, model) -> None:
        super().prepare_model(model)
        self.discriminator = DomainDiscriminator(self.feature_dim(model), self.config.hidden_dim, self.config.norm)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator}

    def module_lr(self, name: str) -> float | None:
        return self.config.discriminator_lr

    def compute_loss(self, model, source, targets, target, info) -> ObjectiveOutput:
        logits, f_s, f_t = self.joint_forward(model, source, target)
        coef = grl_coefficient(info.progress, self.config.grl_alpha, self.config.grl_max)
        domain_logits = self.modules["discriminator"](reverse_gradient(torch.cat([f_s, f_t]), coef)).float()
        domain = torch.cat([torch.ones(f_s.shape[0]), torch.zeros(f_t.shape[0])]).to(domain_logits.device)
        adv = F.binary_cross_entropy_with_logits(domain_logits, domain)
        cls = self.classification_loss(logits, targets)
        accuracy = float(((domain_logits > 0).float() == domain).float().mean())
        return ObjectiveOutput(cls + self.config.weight * adv,
                               {"cls_loss": float(cls.detach()), "domain_loss": float(adv.detach()),
                                "domain_accuracy": accuracy,
                                "grl_coefficient": coef})
