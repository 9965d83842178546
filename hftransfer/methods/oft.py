"""``oft``: orthogonal fine-tuning through PEFT: a learned block-diagonal rotation of each adapted layer's input."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from hftransfer.errors import ConfigurationError
from hftransfer.methods.peft_base import PeftMethod, PeftMethodConfig
from hftransfer.methods.registry import register_method


@dataclass
class OFTMethodConfig(PeftMethodConfig):
    block_size: int = field(default=32, metadata={
        "help": "Size of each orthogonal block; PEFT shrinks it to a divisor of a layer's input size if needed."})
    module_dropout: float = field(default=0.0, metadata={"help": "Multiplicative dropout on the OFT blocks."})
    coft: bool = field(default=False, metadata={"help": "Constrained OFT (rotation kept within eps)."})
    eps: float = field(default=6e-5, metadata={"help": "COFT's control strength."})
    block_share: bool = field(default=False, metadata={"help": "Share one rotation between the blocks of a layer."})

    def __post_init__(self):
        if self.block_size < 2:
            raise ConfigurationError(f"oft block_size must be >= 2; received block_size={self.block_size}.")


@register_method("oft", OFTMethodConfig,
                 defaults={"optim": {"name": "adamw", "weight_decay": 0.01, "lr": 1e-3},
                           "scheduler": {"warmup_ratio": 0.05}})
class OFT(PeftMethod):
    """OFT through PEFT: block-diagonal orthogonal transforms on Linear and Conv2d layers (mergeable)."""

    supported_backbones = ("timm CNNs and ViTs, transformers text and vision models: nn.Linear and non-grouped 1x1 "
                           "nn.Conv2d layers inside the backbone's blocks (PEFT's OFT treats k x k convs as unpadded, "
                           "which breaks padded convs on small feature maps)")
    param_prefix = "oft_"
    config: OFTMethodConfig

    def accepts(self, module: nn.Module) -> bool:
        return super().accepts(module) and pointwise_or_linear(module)

    def peft_config(self, targets: list[str]):
        from peft import OFTConfig  # heavy: loaded only when used

        cfg = self.config
        return OFTConfig(r=0, oft_block_size=cfg.block_size, module_dropout=cfg.module_dropout, coft=cfg.coft,
                         eps=cfg.eps, block_share=cfg.block_share, target_modules=targets)


def pointwise_or_linear(module: nn.Module) -> bool:
    """nn.Linear, or an nn.Conv2d with a 1x1 kernel (what OFT/BOFT rotate exactly)."""
    return not isinstance(module, nn.Conv2d) or tuple(module.kernel_size) == (1, 1)
