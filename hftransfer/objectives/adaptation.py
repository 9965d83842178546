"""What the feature-alignment objectives (dann, mmd, coral) share: a bottleneck in the head and one joint forward."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hftransfer.errors import ConfigurationError
from hftransfer.heads import BOTTLENECK_NORMS
from hftransfer.objectives.base import Objective, ObjectiveConfig, concat_inputs, model_inputs


@dataclass
class AlignmentConfig(ObjectiveConfig):
    bottleneck_dim: int | None = field(
        default=256, metadata={"help": "Width of the Linear-Norm-ReLU bottleneck put in the head (saved with the "
                                       "model); None aligns the backbone features directly."})
    norm: str = field(default="batch", metadata={"help": "Norm of the bottleneck/discriminator: batch|layer|none."})

    def __post_init__(self):
        super().__post_init__()
        if self.norm not in BOTTLENECK_NORMS:
            raise ValueError(f"objective.norm={self.norm!r} is not supported; use one of {list(BOTTLENECK_NORMS)}.")
        if self.bottleneck_dim is not None and self.bottleneck_dim < 1:
            raise ValueError(f"objective.bottleneck_dim={self.bottleneck_dim!r} must be a positive width or null.")
        if self.weight < 0:
            raise ValueError(f"objective.weight={self.weight!r} must be >= 0.")


class AlignmentObjective(Objective):
    """Base of objectives that align source and target features under one forward of both batches."""

    needs_target = True

    def check_model(self, model) -> None:
        if not model.method.trains_backbone and not self.config.bottleneck_dim:
            raise ConfigurationError(
                f"objective {self.name!r} with method {model.method.name!r} (frozen backbone) and "
                "objective.bottleneck_dim=null has nothing to align: the features cannot change. Set "
                "objective.bottleneck_dim (e.g. 256) or use a method that trains the backbone (full, lora).")

    def prepare_model(self, model) -> None:
        dim, norm = self.config.bottleneck_dim, self.config.norm
        current = model.head.config
        if dim and (current.get("bottleneck_dim") != dim or current.get("bottleneck_norm") != norm):
            model.reset_head(model.id2label, current.get("dropout", 0.0), bottleneck_dim=dim, bottleneck_norm=norm)

    def feature_dim(self, model) -> int:
        return self.config.bottleneck_dim or model.num_features

    def joint_forward(self, model, source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]):
        """Source and target through the model in one forward (shared BatchNorm statistics, one DDP call)."""
        inputs = model_inputs(target)
        out = model(**concat_inputs(source, inputs), return_features=True)
        n = next(iter(source.values())).shape[0]
        return out.logits[:n], out.features[:n], out.features[n:]
