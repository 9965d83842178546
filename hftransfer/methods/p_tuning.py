"""``p_tuning``: input prompts produced by a prompt-encoder MLP (P-tuning, Liu et al. 2021); the head trains too."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import MethodConfig
from hftransfer.methods.prompts import TEXT_PROMPT_FAMILIES, BackboneDropoutOption, EncodedPrompts, PromptMethod
from hftransfer.methods.registry import register_method


@dataclass
class PTuningConfig(MethodConfig, BackboneDropoutOption):
    num_virtual_tokens: int = field(default=20, metadata={"help": "virtual tokens inserted after [CLS]"})
    encoder_hidden_size: int | None = field(default=None, metadata={
        "help": "width of the prompt encoder MLP; None: the encoder's hidden size"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prompt tokens"})

    def __post_init__(self):
        if self.num_virtual_tokens < 1:
            raise ConfigurationError(f"num_virtual_tokens must be >= 1; received {self.num_virtual_tokens}.")
        if self.encoder_hidden_size is not None and self.encoder_hidden_size < 1:
            raise ConfigurationError(f"encoder_hidden_size must be >= 1; received {self.encoder_hidden_size}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigurationError(f"dropout must be in [0, 1); received {self.dropout}.")


@register_method("p_tuning", PTuningConfig,
                 defaults={"optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0},
                           "scheduler": {"warmup_ratio": 0.06}})
class PTuning(PromptMethod):
    """P-tuning: virtual tokens after [CLS] of a frozen text encoder, reparameterised by an MLP prompt encoder."""

    modality = "text"
    supported_backbones = TEXT_PROMPT_FAMILIES
    instead = "Use vpt for vision transformers, or lora / adapter for any backbone."
    config: PTuningConfig

    def num_virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def build_hook(self, model, tokens) -> EncodedPrompts:
        cfg = self.config
        dim = tokens.hidden_size
        return EncodedPrompts(cfg.num_virtual_tokens, dim, cfg.encoder_hidden_size or dim, cfg.dropout)
