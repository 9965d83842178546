"""``full``: every parameter trains."""

from __future__ import annotations

from dataclasses import dataclass

from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import register_method


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning has no options of its own (freeze schedules and LRs live in the training config)."""


# Every weight of a pretrained text transformer moves: BERT-style fine-tuning wants a ~10x smaller LR than a CNN.
@register_method("full", FullConfig,
                 defaults={"optim": {"name": "adamw", "lr": 3e-4, "weight_decay": 0.01},
                           "scheduler": {"warmup_ratio": 0.05}},
                 family_defaults={"text": {"optim": {"lr": 5e-5}}})
class FullFineTuning(TransferMethod):
    """Full fine-tuning: every parameter of backbone and head trains."""

    def apply(self, model) -> None:
        self.set_trainable(model)

    def is_trained_parameter(self, name: str) -> bool:
        return True
