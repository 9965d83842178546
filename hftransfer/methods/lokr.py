"""``lokr``: LoKr (low-rank Kronecker product, from LyCORIS) through PEFT on Linear and Conv2d layers."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.errors import ConfigurationError
from hftransfer.methods.peft_base import PeftMethod, PeftMethodConfig
from hftransfer.methods.registry import register_method


@dataclass
class LoKrMethodConfig(PeftMethodConfig):
    r: int = field(default=8, metadata={"help": "Rank of the decomposed Kronecker factor."})
    alpha: int = field(default=8, metadata={"help": "Scaling: the update is multiplied by alpha / r."})
    rank_dropout: float = field(default=0.0, metadata={"help": "Dropout on the rank dimension while training."})
    module_dropout: float = field(default=0.0, metadata={"help": "Probability of skipping a LoKr module per step."})
    decompose_both: bool = field(default=False, metadata={"help": "Also decompose the left Kronecker factor."})
    decompose_factor: int = field(default=-1, metadata={"help": "Kronecker factorisation factor (-1: automatic)."})
    use_effective_conv2d: bool = field(default=False, metadata={
        "help": "Parameter-efficient decomposition of k x k Conv2d kernels (as in LyCORIS)."})

    def __post_init__(self):
        if self.r < 1:
            raise ConfigurationError(f"lokr r must be >= 1; received r={self.r}.")


@register_method("lokr", LoKrMethodConfig,
                 defaults={"optim": {"name": "adamw", "weight_decay": 0.01, "lr": 1e-3},
                           "scheduler": {"warmup_ratio": 0.05}})
class LoKr(PeftMethod):
    """LoKr through PEFT: a Kronecker product update on Linear and Conv2d layers (mergeable)."""

    supported_backbones = ("timm CNNs and ViTs, transformers text and vision models: nn.Linear and (non-grouped) "
                           "nn.Conv2d layers inside the backbone's blocks")
    param_prefix = "lokr_"
    config: LoKrMethodConfig

    def peft_config(self, targets: list[str]):
        from peft import LoKrConfig  # heavy: loaded only when used

        cfg = self.config
        return LoKrConfig(r=cfg.r, alpha=cfg.alpha, rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout,
                          decompose_both=cfg.decompose_both, decompose_factor=cfg.decompose_factor,
                          use_effective_conv2d=cfg.use_effective_conv2d, target_modules=targets)
