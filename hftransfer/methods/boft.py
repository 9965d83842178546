"""``boft``: butterfly orthogonal fine-tuning through PEFT (OFT with butterfly-factorised rotations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from hftransfer.errors import ConfigurationError
from hftransfer.methods.oft import pointwise_or_linear
from hftransfer.methods.peft_base import PeftMethod, PeftMethodConfig
from hftransfer.methods.registry import register_method
from hftransfer.utils.environment import environment_kept


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer


@dataclass
class BOFTMethodConfig(PeftMethodConfig):
    block_size: int = field(default=4, metadata={
        "help": "Size of each orthogonal block (even); layers whose input size it does not divide are skipped."})
    n_butterfly_factor: int = field(default=1, metadata={"help": "Number of butterfly factors (1: plain OFT)."})
    dropout: float = field(default=0.0, metadata={"help": "Multiplicative dropout on the BOFT blocks."})

    def __post_init__(self):
        if self.block_size < 2 or self.block_size % 2:
            raise ConfigurationError(f"boft block_size must be an even number >= 2; received "
                                     f"block_size={self.block_size}.")
        if self.n_butterfly_factor < 1:
            raise ConfigurationError(f"boft n_butterfly_factor must be >= 1; received {self.n_butterfly_factor}.")


@register_method("boft", BOFTMethodConfig,
                 defaults={"optim": {"name": "adamw", "weight_decay": 0.01, "lr": 1e-3},
                           "scheduler": {"warmup_ratio": 0.05}})
class BOFT(PeftMethod):
    """BOFT through PEFT: butterfly-factorised orthogonal transforms on Linear and Conv2d layers (mergeable)."""

    supported_backbones = ("timm CNNs and ViTs, transformers text and vision models: nn.Linear and (non-grouped) "
                           "1x1 nn.Conv2d layers whose input size the block size divides")
    param_prefix = "boft_"
    config: BOFTMethodConfig

    def accepts(self, module: nn.Module) -> bool:
        if not (super().accepts(module) and pointwise_or_linear(module)):
            return False
        size = _input_size(module)
        span = self.config.block_size * 2 ** (self.config.n_butterfly_factor - 1)
        return size % span == 0 and size >= span

    def apply(self, model: AutoTransfer) -> None:
        # PEFT's BOFT layers try to build a CUDA extension under CC=gcc CXX=gcc and, when that fails (any machine
        # without CUDA), leave both set in os.environ: later C++ builds in this process and its children (inductor's
        # kernels under model.compile) would then use a C driver whose libraries do not load.
        with environment_kept("CC", "CXX"):
            super().apply(model)

    def peft_config(self, targets: list[str]):
        from peft import BOFTConfig  # heavy: loaded only when used

        cfg = self.config
        return BOFTConfig(boft_block_size=cfg.block_size, boft_block_num=0,
                          boft_n_butterfly_factor=cfg.n_butterfly_factor, boft_dropout=cfg.dropout,
                          target_modules=targets)


def _input_size(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.in_channels * module.kernel_size[0] * module.kernel_size[1]
    return module.in_features
