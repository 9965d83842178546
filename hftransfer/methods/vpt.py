"""``vpt``: visual prompt tuning (Jia et al., ECCV 2022) on vision transformers, shallow or deep; the head trains."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import MethodConfig
from hftransfer.methods.prompts import (
    PROMPT_INITS,
    VISION_PROMPT_FAMILIES,
    DeepPrompts,
    InputPrompts,
    PromptMethod,
    describe_backbone,
    init_prompts,
)
from hftransfer.methods.registry import register_method


@dataclass
class VptConfig(MethodConfig):
    num_tokens: int = field(default=10, metadata={"help": "prompt tokens (per block when deep)"})
    deep: bool = field(default=False, metadata={
        "help": "false: prompts once, before the first block; true: fresh prompts before every block"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prompt tokens (training only)"})
    init: str = field(default="xavier", metadata={"help": "'xavier' (uniform, as in the paper) or 'normal'"})

    def __post_init__(self):
        if self.num_tokens < 1:
            raise ConfigurationError(f"num_tokens must be >= 1; received {self.num_tokens}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigurationError(f"dropout must be in [0, 1); received {self.dropout}.")
        if self.init not in PROMPT_INITS:
            raise ConfigurationError(f"init={self.init!r} is not supported; choose one of {PROMPT_INITS}.")


@register_method("vpt", VptConfig,
                 defaults={"optim": {"name": "sgd", "lr": 0.25, "momentum": 0.9, "weight_decay": 1e-4},
                           "scheduler": {"warmup_ratio": 0.1}},
                 example_model="google/vit-base-patch16-224")
class Vpt(PromptMethod):
    """Visual prompt tuning: prompt tokens after the class/register tokens of a frozen ViT kept in eval mode."""

    modality = "image"
    supported_backbones = VISION_PROMPT_FAMILIES
    instead = ("Use prompt_tuning / prefix_tuning for text encoders, or lora / adapter (residual adapters for CNNs) "
               "for any backbone.")
    config: VptConfig

    @property
    def keeps_backbone_eval(self) -> bool:
        return True

    def num_virtual_tokens(self) -> int:
        return self.config.num_tokens

    def check_backbone(self, model) -> None:
        if model.backbone.modality == "image" and model.backbone.token_interface() is None:
            raise ConfigurationError(
                f"method 'vpt' inserts prompt tokens into the token sequence of {VISION_PROMPT_FAMILIES}; "
                f"{model.backbone.spec.name!r} ({describe_backbone(model.backbone)}) has no token sequence (a CNN or "
                "an unlisted architecture). Use lora or adapter (residual adapters for CNNs), or linear_probe."
            )
        super().check_backbone(model)

    def build_hook(self, model, tokens):
        cfg = self.config
        if cfg.deep:
            return DeepPrompts(len(tokens.blocks()), cfg.num_tokens, tokens.hidden_size, cfg.init, cfg.dropout)
        return InputPrompts(init_prompts(torch.empty(cfg.num_tokens, tokens.hidden_size), cfg.init), cfg.dropout)
