"""``vera``: VeRA through PEFT: frozen random low-rank projections shared by all layers, trained scaling vectors."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from hftransfer.errors import ConfigurationError
from hftransfer.methods.peft_base import PeftMethod, PeftMethodConfig
from hftransfer.methods.registry import register_method


@dataclass
class VeraMethodConfig(PeftMethodConfig):
    r: int = field(default=256, metadata={"help": "Rank of the shared random projections."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    d_initial: float = field(default=0.1, metadata={"help": "Initial value of the trained d vector."})
    projection_prng_key: int = field(default=0, metadata={
        "help": "Seed of the shared random projections (they are rebuilt from it, never saved)."})

    def __post_init__(self):
        if self.r < 1:
            raise ConfigurationError(f"vera r must be >= 1; received r={self.r}.")


# VeRA trains scaling vectors only: a larger step than LoRA (~1e-2 in its paper).
@register_method("vera", VeraMethodConfig,
                 defaults={"optim": {"name": "adamw", "weight_decay": 0.01, "lr": 5e-3},
                           "scheduler": {"warmup_ratio": 0.05}})
class Vera(PeftMethod):
    """VeRA through PEFT: shared frozen random projections, trained per-layer scaling vectors (Linear only)."""

    supported_backbones = ("timm ViTs and transformers text and vision models: nn.Linear layers only (PEFT's VeRA "
                           "has no Conv2d layer, so CNNs are refused)")
    param_prefix = "vera_lambda_"
    layer_types = (nn.Linear,)
    config: VeraMethodConfig

    def peft_config(self, targets: list[str]):
        from peft import VeraConfig  # heavy: loaded only when used

        cfg = self.config
        # save_projection=False: the projections come back from projection_prng_key, so only trained vectors save.
        return VeraConfig(r=cfg.r, vera_dropout=cfg.dropout, d_initial=cfg.d_initial, target_modules=targets,
                          projection_prng_key=cfg.projection_prng_key, save_projection=False)
