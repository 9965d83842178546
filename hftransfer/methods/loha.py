"""``loha``: LoHa (low-rank Hadamard product, from LyCORIS) through PEFT on Linear and Conv2d layers."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.errors import ConfigurationError
from hftransfer.methods.peft_base import PeftMethod, PeftMethodConfig
from hftransfer.methods.registry import register_method


@dataclass
class LoHaMethodConfig(PeftMethodConfig):
    r: int = field(default=8, metadata={"help": "Rank of each of the two low-rank factors."})
    alpha: int = field(default=8, metadata={"help": "Scaling: the update is multiplied by alpha / r."})
    rank_dropout: float = field(default=0.0, metadata={"help": "Dropout on the rank dimension while training."})
    module_dropout: float = field(default=0.0, metadata={"help": "Probability of skipping a LoHa module per step."})
    use_effective_conv2d: bool = field(default=False, metadata={
        "help": "Parameter-efficient decomposition of k x k Conv2d kernels (as in LyCORIS)."})

    def __post_init__(self):
        if self.r < 1:
            raise ConfigurationError(f"loha r must be >= 1; received r={self.r}.")


@register_method("loha", LoHaMethodConfig,
                 defaults={"optim": {"name": "adamw", "weight_decay": 0.01, "lr": 1e-3},
                           "scheduler": {"warmup_ratio": 0.05}})
class LoHa(PeftMethod):
    """LoHa through PEFT: a Hadamard product of two low-rank updates on Linear and Conv2d layers (mergeable)."""

    supported_backbones = ("timm CNNs and ViTs, transformers text and vision models: nn.Linear and (non-grouped) "
                           "nn.Conv2d layers inside the backbone's blocks")
    param_prefix = "hada_"
    config: LoHaMethodConfig

    def peft_config(self, targets: list[str]):
        from peft import LoHaConfig  # heavy: loaded only when used

        cfg = self.config
        return LoHaConfig(r=cfg.r, alpha=cfg.alpha, rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout,
                          use_effective_conv2d=cfg.use_effective_conv2d, target_modules=targets)
