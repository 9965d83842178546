"""``ia3``: (IA)^3 through PEFT: learned vectors that rescale activations of the backbone's block layers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hftransfer.backbones.architectures import ia3_feedforward_pattern
from hftransfer.methods.peft_base import PeftMethod, PeftMethodConfig
from hftransfer.methods.registry import register_method


@dataclass
class IA3MethodConfig(PeftMethodConfig):
    feedforward_modules: list[str] | str | None = field(default=None, metadata={
        "help": "Targets whose input (not output) is rescaled, as in the paper's feed-forward layers: names "
                "(suffix match) or a regex. None: the second MLP layer of each block and the projecting conv of CNN "
                "blocks (each family's ia3_feedforward in backbones/architectures.py)."})


# (IA)^3 trains scaling vectors only: a larger step than LoRA (3e-3 in its paper). 1e-2 on every backbone, chosen on
# SST-2 train off dev (bench/results/peft_defaults.md: +0.85 and +0.80 points over 3e-3 on two seeds) and on 1,000
# held-back CIFAR-10 train images (+0.4; CIFAR-10 test +2.2, one seed).
@register_method("ia3", IA3MethodConfig,
                 defaults={"optim": {"name": "adamw", "weight_decay": 0.01, "lr": 1e-2},
                           "scheduler": {"warmup_ratio": 0.05}})
class IA3(PeftMethod):
    """(IA)^3 through PEFT: per-channel scaling vectors on Linear and Conv2d layers (the fewest trained weights)."""

    supported_backbones = ("timm CNNs and ViTs, transformers text and vision models: nn.Linear and (non-grouped) "
                           "nn.Conv2d layers inside the backbone's blocks")
    param_prefix = "ia3_"
    config: IA3MethodConfig

    def peft_config(self, targets: list[str]):
        from peft import IA3Config  # heavy: loaded only when used

        wanted = self.config.feedforward_modules
        if wanted is None:
            # every family's ``ia3_feedforward`` in the architecture table (second MLP layer / projecting conv)
            feedforward = [t for t in targets if re.fullmatch(ia3_feedforward_pattern(), t)]
        elif isinstance(wanted, str):
            feedforward = [t for t in targets if re.fullmatch(wanted, t)]
        else:
            feedforward = [t for t in targets if any(t == w or t.endswith("." + w) for w in wanted)]
        return IA3Config(target_modules=targets, feedforward_modules=feedforward)
