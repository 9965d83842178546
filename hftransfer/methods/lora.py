"""``lora``: low-rank adapters (LoRA, optionally DoRA) injected with PEFT into the backbone; the head trains too."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.errors import ConfigurationError
from hftransfer.methods.peft_base import PeftMethod, PeftMethodConfig
from hftransfer.methods.registry import register_method


@dataclass
class LoraMethodConfig(PeftMethodConfig):
    r: int = field(default=8, metadata={"help": "Rank of the update matrices."})
    alpha: int = field(default=16, metadata={"help": "Scaling: the update is multiplied by alpha / r."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha / sqrt(r)."})

    def __post_init__(self):
        rules = {
            "r": (isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 1,
                  "use a rank >= 1 (e.g. 8)."),
            "alpha": (isinstance(self.alpha, (int, float)) and self.alpha > 0, "use a scaling > 0 (e.g. 16)."),
            "dropout": (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
                        "use a dropout probability in [0, 1)."),
        }
        for name, (ok, fix) in rules.items():
            if not ok:
                raise ConfigurationError(f"method.{name}={getattr(self, name)!r} is invalid for lora: {fix}")


@register_method("lora", LoraMethodConfig,
                 defaults={"optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
                           "scheduler": {"warmup_ratio": 0.05}})
class Lora(PeftMethod):
    """LoRA through PEFT on timm and transformers backbones (Linear and Conv2d layers), DoRA optional."""

    supported_backbones = ("timm CNNs and ViTs, transformers text and vision models: nn.Linear and (non-grouped) "
                           "nn.Conv2d layers inside the backbone's blocks")
    param_prefix = "lora_"
    config: LoraMethodConfig

    def peft_config(self, targets: list[str]):
        from peft import LoraConfig  # heavy: loaded only when used

        cfg = self.config
        return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                          use_dora=cfg.use_dora, use_rslora=cfg.use_rslora, bias="none")
