"""``ia3``: (IA)^3 through PEFT: learned vectors that rescale activations of the backbone's block layers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hftransfer.methods.peft_base import PeftMethod, PeftMethodConfig
from hftransfer.methods.registry import register_method


# Layers whose *input* is rescaled (PEFT's feedforward_modules): the second layer of an MLP / the projecting conv.
FEEDFORWARD_RE = r".*\.(fc2|lin2|mlp\.fc2|output\.dense|dense_4h_to_h|conv_pwl|conv3|conv2)$"


@dataclass
class IA3MethodConfig(PeftMethodConfig):
    feedforward_modules: list[str] | str | None = field(default=None, metadata={
        "help": "Targets whose input (not output) is rescaled, as in the paper's feed-forward layers: names "
                "(suffix match) or a regex. None: the second MLP layer of each block (fc2, lin2, output.dense) and "
                "the projecting conv of CNN blocks."})


@register_method("ia3", IA3MethodConfig)
class IA3(PeftMethod):
    """(IA)^3 through PEFT: per-channel scaling vectors on Linear and Conv2d layers (the fewest trained weights)."""

    supported_backbones = ("timm CNNs and ViTs, transformers text and vision models: nn.Linear and (non-grouped) "
                           "nn.Conv2d layers inside the backbone's blocks")
    param_prefix = "ia3_"
    config: IA3MethodConfig

    def peft_config(self, targets: list[str]):
        from peft import IA3Config

        wanted = self.config.feedforward_modules
        if wanted is None:
            feedforward = [t for t in targets if re.fullmatch(FEEDFORWARD_RE, t)]
        elif isinstance(wanted, str):
            feedforward = [t for t in targets if re.fullmatch(wanted, t)]
        else:
            feedforward = [t for t in targets if any(t == w or t.endswith("." + w) for w in wanted)]
        return IA3Config(target_modules=targets, feedforward_modules=feedforward)
